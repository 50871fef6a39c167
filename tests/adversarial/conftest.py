"""Fixtures of the adversarial suite: tests/integration/conftest.py's own.

That file is loaded here under another module name and its every
attribute (fixtures, autouse ones included, and helpers) copied into this
conftest, so the suite runs on the same stack with the same fixtures
(tests/run.sh runs it after the contract tests). tests/integration is put
on sys.path too: `from conftest import ...` in these tests finds the
helpers here, and `own_process` and `test_verify` import from there.

By hand, on a stack that is up (as for the integration tests):
    set -a; . $STACK_DIR/stack.env; . $STACK_DIR/counter.env; set +a
    python3 -m pytest -v tests/adversarial
"""

import importlib.util
import os
import sys

_INTEGRATION = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "integration"))
sys.path.insert(0, _INTEGRATION)
_spec = importlib.util.spec_from_file_location(
    "integration_conftest", os.path.join(_INTEGRATION, "conftest.py")
)
_integration = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_integration)
globals().update({k: v for k, v in vars(_integration).items() if not k.startswith("__")})

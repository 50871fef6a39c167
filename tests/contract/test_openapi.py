"""Contract test: docs/openapi.yaml against the running counter-api.

Schemathesis generates requests for every operation in the spec, valid
ones and invalid ones (its coverage phase: boundary values of every
constraint, missing and malformed parameters; then its fuzzing phase:
random inputs), sends them to API_URL, and every answer must:
- have a status the spec lists for that operation, its content type, a
  body that validates against the schema of that status, and its
  documented headers (Allow on 405);
- not be a 5xx, except a 503 (whose body the spec pins to the documented
  codes: redis_unavailable, kafka_unavailable, indeterminate, ...).

The stack is the one the integration tests use (tests/run.sh starts it and
exports $STACK_DIR/stack.env): API_URL must be set and the api must answer,
else every test fails. Writes go to whatever names the spec allows: in
tests/config.test.yaml nearly all of them are undeclared, so plain
counters (a name that happens to match a pattern gets its kind, and its
refusals are documented too).

By hand (after deploy/stack.sh up, with the venv install-deps.sh made):
    set -a; . $STACK_DIR/stack.env; set +a
    var/venv/bin/python -m pytest -v tests/contract

Knobs: CONTRACT_MAX_EXAMPLES (fuzzing examples per operation, default 100),
CONTRACT_SEED (default fixed, so a failure reproduces; "random" for a new
one each run).
"""

import os
import random
import urllib.error
import urllib.request

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import (
    allow_header_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SPEC = os.path.join(REPO, "docs", "openapi.yaml")

MAX_EXAMPLES = int(os.environ.get("CONTRACT_MAX_EXAMPLES", "100"))
_seed = os.environ.get("CONTRACT_SEED", "20261126")
SEED = random.randrange(2**32) if _seed == "random" else int(_seed)
# One request may wait for Kafka (kafka.delivery_timeout_ms) and Redis.
REQUEST_TIMEOUT_S = 15


def _api_url():
    url = os.environ.get("API_URL", "").rstrip("/")
    if not url:
        pytest.fail(
            "the contract test needs the stack's environment; missing: API_URL. "
            "Export $STACK_DIR/stack.env (set -a; . stack.env) after deploy/stack.sh up.",
            pytrace=False,
        )
    return url


# Endpoints the spec describes ahead of the server (marked NOT YET SERVED
# there), found 404 at the start of the run; see unsupported_method_if_served.
NOT_YET_SERVED = set()
AHEAD_OF_SERVER = ("/readyz",)


def _status(url):
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


@pytest.fixture(scope="session")
def base_url():
    """API_URL, once the api has answered /healthz there."""
    url = _api_url()
    try:
        assert _status(url + "/healthz") == 200
        for path in AHEAD_OF_SERVER:
            if _status(url + path) == 404:
                NOT_YET_SERVED.add(path)
    except OSError as e:
        pytest.fail(f"counter-api does not answer at {url}: {e}", pytrace=False)
    return url


# Loaded at collection, so each operation is a test of its own; the base
# URL is given per call, from the fixture above.
schema = schemathesis.openapi.from_path(
    SPEC,
    config=SchemathesisConfig.from_dict(
        {
            "seed": SEED,
            "generation": {
                # valid and invalid inputs: both must get documented answers
                "mode": "all",
                "max-examples": MAX_EXAMPLES,
                # no .hypothesis/ folder in the checkout; runs reproduce by seed
                "database": "none",
            },
            "phases": {
                "examples": {"enabled": False},  # the spec has none
                "coverage": {
                    "enabled": True,
                    # Methods the paths do not serve must get 405 + Allow.
                    # Not QUERY: a method the server does not know is 501
                    # not_implemented for every path (test_framing.py).
                    "unexpected-methods": [
                        "get", "put", "post", "delete", "options", "patch", "trace"
                    ],
                },
                "fuzzing": {"enabled": True},
                "stateful": {"enabled": False},  # the spec has no links
            },
        }
    ),
)


def no_undocumented_server_error(ctx, response, case):
    """5xx only as 503: overload, shutdown or a dependency; the schema of
    the 503 response then pins the code to the documented ones."""
    if response.status_code >= 500 and response.status_code != 503:
        raise AssertionError(
            f"{case.method} {case.formatted_path} -> {response.status_code}: "
            f"{response.text[:300]!r}"
        )
    return None


def error_is_json_envelope(ctx, response, case):
    """Every error is the JSON envelope, even where no operation's schema
    applies (a method the path does not serve): never evhttp's HTML."""
    if response.status_code < 400 or response.request.method == "HEAD":
        return None
    where = f"{response.request.method} {case.formatted_path} -> {response.status_code}"
    ctype = response.headers.get("content-type", [""])[0]
    assert ctype.startswith("application/json"), f"{where}: Content-Type {ctype!r}"
    body = response.json()
    assert isinstance(body, dict) and body.get("success") is False, f"{where}: {body!r}"
    err = body.get("error")
    assert isinstance(err, dict), f"{where}: {body!r}"
    assert isinstance(err.get("code"), str) and err["code"], f"{where}: {body!r}"
    assert isinstance(err.get("message"), str) and err["message"], f"{where}: {body!r}"
    return None


def unsupported_method_if_served(ctx, response, case):
    """unsupported_method, except on an endpoint not served yet: there
    every method is 404 not_found."""
    if response.status_code == 404 and case.path in NOT_YET_SERVED:
        return None
    return unsupported_method(ctx, response, case)


CHECKS = [
    no_undocumented_server_error,
    error_is_json_envelope,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    # methods a path does not serve: 405 with Allow, and OPTIONS' Allow
    # lists exactly the documented methods
    unsupported_method_if_served,
    allow_header_conformance,
]


@schema.parametrize()
@settings(
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_operation_conforms(case, base_url):
    case.call_and_validate(base_url=base_url, checks=CHECKS, timeout=REQUEST_TIMEOUT_S)

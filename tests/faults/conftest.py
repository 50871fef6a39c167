"""Fixtures of the fault-injection suite (tests/faults).

The suite runs against a stack that is already up, like the integration
tests, and learns where it is from the same environment ($STACK_DIR/stack.env
and counter.env; tests/run.sh and tests/faults/run.sh set it). Helpers are
in faultlib.py, the load client in loadclient.py, the invariants in
checker.py.

Every test here breaks a real process of the stack. `healthy_stack` puts
the stack back the way it found it even when the test fails: it stops any
extra process the test started, resumes anything left SIGSTOPped, restarts
what the test ran with other settings, starts whatever was running before
and is not now, and waits until the api answers healthy with Redis and
Kafka.
"""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from faultlib import (  # noqa: E402
    PARTS,
    WATCHED_LOGS,
    Extras,
    Restore,
    Scenario,
    resume_process,
    api_healthy,
    it,
)


@pytest.fixture(scope="session")
def stack():
    missing = it._missing_env()
    if missing:
        pytest.fail(
            "fault tests need the stack's environment; missing: " + ", ".join(missing)
            + ". Export $STACK_DIR/stack.env and counter.env after deploy/stack.sh up.",
            pytrace=False,
        )
    return it.Stack(dict(os.environ))


@pytest.fixture(scope="session")
def api(stack):
    return it.Api(stack)


@pytest.fixture(scope="session")
def redis(stack):
    return it.Redis(stack)


@pytest.fixture(scope="session")
def pg(stack):
    return it.Postgres(stack)


@pytest.fixture(scope="session")
def kafka(stack):
    return it.Kafka(stack)


@pytest.fixture(scope="session")
def stackctl(stack):
    return it.StackControl(stack)


@pytest.fixture(scope="session")
def loadgen_bin(stack):
    path = os.environ.get("LOADGEN") or os.path.join(stack.env.get("BIN_DIR", ""), "loadgen")
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        pytest.fail(f"loadgen not found at {path}: build it or set LOADGEN", pytrace=False)
    return path


@pytest.fixture
def extras():
    e = Extras()
    yield e
    e.stop_all()


@pytest.fixture
def healthy_stack(stack, stackctl, api, extras):
    """Yields a Restore; afterwards the stack is as before the test (parts
    registered with restart_after are restarted with the stack's own
    settings) and healthy."""
    restore = Restore(stackctl.status())
    yield restore
    before = restore.before
    extras.stop_all()
    for part in PARTS:
        resume_process(stack.pid(part))
    for part in restore.restart:
        stackctl.stop(part)
    after = stackctl.status()
    for part in PARTS:
        if before.get(part) and not after.get(part):
            stackctl.start(part)
    it.wait_until(lambda: api_healthy(api), 90, 0.2,
                  "api healthy (redis and kafka) after the fault test")


@pytest.fixture(autouse=True)
def _no_sanitizer_reports(stack):
    """A sanitizer report in a service log while the test ran fails it.
    (SIGKILL leaves none; a crash or a leak on a clean stop does.)"""
    offsets = {svc: it._log_size(stack.log_path(svc)) for svc in WATCHED_LOGS}
    yield
    reports = it.sanitizer_reports(stack, offsets)
    assert not reports, "sanitizer report in a service log:\n" + "\n\n".join(reports)


@pytest.fixture
def run_dir(request, tmp_path):
    """Where the load client writes its request log: $FAULTS_LOG_DIR/<test>
    when set (kept after the run), else pytest's tmp_path."""
    base = os.environ.get("FAULTS_LOG_DIR")
    if not base:
        return str(tmp_path)
    d = os.path.join(base, request.node.name)
    os.makedirs(d, exist_ok=True)
    return d


@pytest.fixture
def scenario(request, stack, api, redis, pg, kafka, run_dir):
    return Scenario(request.node.name, stack, api, redis, pg, kafka, run_dir)

"""Fixtures of the replicated suite (tests/replicated): the fault suite's
(stack, api, stores, the scenario with its load client and checker), on a
stack of three Kafka nodes and a PostgreSQL primary with a streaming
standby (KAFKA_NODES=3 PG_STANDBY=1, started by tests/replicated/run.sh).

`replicated_stack` puts the stack back after each test, failed or not:
every Kafka node running with every replica in sync, a PostgreSQL primary
with its standby streaming (a former primary rebuilt as the standby),
asynchronous replication, the counter processes running, the api healthy.
"""

import importlib.util
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from replib import Cluster, PgPair, healthy, it, resume  # noqa: E402

_FAULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "faults")
_spec = importlib.util.spec_from_file_location("faults_conftest",
                                               os.path.join(_FAULTS, "conftest.py"))
_faults = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_faults)

# The fault suite's fixtures, shared as they are.
stack = _faults.stack
api = _faults.api
redis = _faults.redis
pg = _faults.pg
kafka = _faults.kafka
stackctl = _faults.stackctl
loadgen_bin = _faults.loadgen_bin
extras = _faults.extras
run_dir = _faults.run_dir
scenario = _faults.scenario

APPS = ("counter-api", "counter-persister", "counter-applier")
WATCHED_LOGS = ("counter-api", "counter-persister", "counter-applier", "counter-api-fallback")


@pytest.fixture(scope="session")
def cluster(stack):
    return Cluster(stack)


@pytest.fixture(scope="session")
def pgpair(stack):
    if stack.env.get("PG_STANDBY") != "1":
        pytest.fail("the replicated suite needs a stack with PG_STANDBY=1", pytrace=False)
    return PgPair(stack)


@pytest.fixture(autouse=True)
def _no_sanitizer_reports(stack):
    """A sanitizer report in a service log while the test ran fails it."""
    offsets = {svc: it._log_size(stack.log_path(svc)) for svc in WATCHED_LOGS}
    yield
    reports = it.sanitizer_reports(stack, offsets)
    assert not reports, "sanitizer report in a service log:\n" + "\n\n".join(reports)


class Watch:
    """What a test leaves for the fixture: pids it SIGSTOPped (resumed
    afterwards whatever happened); and where counter-api's log stood when
    it began."""

    def __init__(self, stack):
        self.pids = []
        self.api_log = stack.log_path("counter-api")
        self.api_log_at = it._log_size(self.api_log)

    def add(self, pid):
        self.pids.append(pid)
        return pid

    def producer_fatal(self):
        """(fatal, replaced): counter-api's log lines since the test began
        that say its Kafka producer failed (librdkafka 2.0.2's idempotent
        producer out of sequence with a broker after a leader change), and
        those that say it put a new one in its place."""
        lines = it.log_text_since(self.api_log, self.api_log_at).splitlines()
        return ([x for x in lines if "kafka producer fatal error" in x],
                [x for x in lines if "kafka producer replaced" in x])


@pytest.fixture
def replicated_stack(stack, stackctl, api, extras, cluster, pgpair):
    watch = Watch(stack)
    yield watch
    extras.stop_all()
    for pid in watch.pids:
        resume(pid)
    fatal, replaced = watch.producer_fatal()
    if len(replaced) < len(fatal):
        stackctl.stop("counter-api")  # a new producer, for the next test
    status = stackctl.status()
    missing = [f"kafka-{i}" for i in range(1, cluster.nodes + 1)
               if not status.get(f"kafka-{i}")]
    if len(missing) == cluster.nodes:
        stackctl.start("kafka")
    for name in missing if len(missing) < cluster.nodes else ():
        stackctl.start(name)
    primary, standby = pgpair.primary(), pgpair.standby()
    if not status.get(primary):
        if status.get(standby):
            stackctl("promote-standby")
        else:
            stackctl.start(primary)
        primary, standby = pgpair.primary(), pgpair.standby()
    stackctl("pg-sync", "off")
    if not stackctl.status().get(standby):
        stackctl.start(standby)  # a former primary is rebuilt as the standby
    for app in APPS:
        if not stackctl.status().get(app):
            stackctl.start(app)
    it.wait_until(lambda: healthy(api), 90, 0.2, "api healthy after the test")
    cluster.wait_isr_full(120)
    pgpair.wait_streaming(60)

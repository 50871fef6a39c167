"""Helpers of the fault-injection suite shared by its conftest and tests
(under a name of its own: `conftest` would be ambiguous beside the
integration suite's).

It reuses the integration suite's helpers (Stack, Api, Redis, Postgres,
Kafka, StackControl, wait_until, ...), loaded from
tests/integration/conftest.py by path as the module `it`.
"""

import datetime
import importlib.util
import os
import sys
import signal
import sys
import time

from checker import Checker
from loadclient import LoadClient, fault_counters

_HERE = os.path.dirname(os.path.abspath(__file__))
_IT_CONFTEST = os.path.join(_HERE, "..", "integration", "conftest.py")
# what that conftest imports beside it (resp.py)
sys.path.insert(0, os.path.dirname(_IT_CONFTEST))

# its own imports (resp.py) are beside it
sys.path.insert(0, os.path.dirname(_IT_CONFTEST))
_spec = importlib.util.spec_from_file_location("integration_helpers", _IT_CONFTEST)
it = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(it)

PARTS = ("redis", "postgres", "kafka", "counter-api", "counter-persister", "counter-applier")
WATCHED_LOGS = ("counter-api", "counter-persister", "counter-applier", "counter-persister-b")


class Extras:
    """Processes a test started outside stack.sh (a second persister), so
    that the fixture can stop them whatever happens."""

    def __init__(self):
        self.procs = []

    def add(self, proc):
        self.procs.append(proc)
        return proc

    def stop_all(self):
        for p in self.procs:
            if p.poll() is None:
                try:
                    os.kill(p.pid, signal.SIGCONT)
                except ProcessLookupError:
                    pass
                p.terminate()
                try:
                    p.wait(timeout=15)
                except Exception:
                    p.kill()
                    p.wait(timeout=10)
        self.procs = []


def api_healthy(api):
    try:
        r = api.healthz(timeout=2)
    except OSError:
        return False
    return (r.status == 200 and r.json.get("status") == "ok"
            and r.json.get("redis") is True and r.json.get("kafka") is True)


def resume_process(pid):
    try:
        os.kill(pid, signal.SIGCONT)
    except (ProcessLookupError, TypeError):
        pass


class Restore:
    """What healthy_stack puts back after the test."""

    def __init__(self, before):
        self.before = before
        self.restart = []  # parts to restart with the stack's own settings

    def restart_after(self, part):
        self.restart.append(part)


class Scenario:
    """One fault test's load and its end check: fresh counters, the Kafka
    offsets before the load, a LoadClient, then Checker.check()."""

    def __init__(self, name, stack, api, redis, pg, kafka, run_dir):
        self.name = name
        self.stack = stack
        self.api = api
        self.checker = Checker(stack, api, redis, pg, kafka)
        self.run_dir = run_dir
        self.client = None
        self.counters = None
        self.t0 = time.monotonic()

    def start(self, tag, **client_kw):
        # The daily windows and dedup days must not change under the test.
        it.avoid_local_midnight(datetime.timezone.utc, margin_s=240)
        self.counters = fault_counters(tag, self.stack.kafka_partitions)
        self.checker.begin()
        self.client = LoadClient(self.stack, self.counters, **client_kw).start()
        return self.client

    def finish(self, scenario_checks=None, quiesce_timeout=150, extra_counters=()):
        """Stops the load, waits for its last ops, checks I1-I6.
        scenario_checks: a function called once the load has stopped that
        returns the scenario's own violations (strings), reported together
        with the invariants'. extra_counters: counters loaded by someone
        else (loadgen) whose ops were added to the client."""
        self.client.stop()
        self.client.join()
        t_load = time.monotonic() - self.t0
        log = self.client.dump(os.path.join(self.run_dir, "requests.jsonl"))
        extra = list(scenario_checks()) if scenario_checks else []
        t1 = time.monotonic()
        try:
            return self.checker.check(self.client, list(self.counters) + list(extra_counters),
                                      log_path=log, quiesce_timeout=quiesce_timeout,
                                      extra=extra)
        finally:
            print(f"{self.name}: load {t_load:.1f}s, quiescence and checks "
                  f"{time.monotonic() - t1:.1f}s")

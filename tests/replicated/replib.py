"""Helpers of the replicated suite (tests/replicated): the Kafka cluster's
leaders, in-sync replicas and active controller; the PostgreSQL primary and
its standby; a second counter-api that can only read from PostgreSQL; and
events written straight into Kafka for the applier.

The load client, the checker and the stack helpers are the fault suite's
(tests/faults: loadclient.py, checker.py, faultlib.py).
"""

import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
import uuid

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(_HERE, "..", "faults"))

from faultlib import api_healthy, it  # noqa: E402
from loadclient import PLAIN, Attempt, Counter, Op, Read  # noqa: E402

# tests/config.test.yaml
KAFKA_DELIVERY_TIMEOUT_S = 2.0


def stack_settings(stack):
    """stack.env as `deploy/stack.sh` last wrote it (promote-standby
    rewrites it): {KEY: value}."""
    out = {}
    with open(os.path.join(stack.stack_dir, "stack.env")) as f:
        for line in f:
            key, sep, value = line.rstrip("\n").partition("=")
            if sep:
                out[key] = shlex.split(value)[0] if value else ""
    return out


# ---------------------------------------------------------------- kafka ---


class Cluster:
    """The stack's Kafka nodes kafka-1 ... kafka-N (node id i = kafka-i)."""

    def __init__(self, stack):
        self.stack = stack
        self.nodes = int(stack.env.get("KAFKA_NODES", "1"))
        assert self.nodes >= 3, f"the replicated suite needs KAFKA_NODES >= 3, not {self.nodes}"

    @staticmethod
    def name(node_id):
        return f"kafka-{node_id}"

    def metadata(self, timeout=20):
        out = it.run(["kcat", "-b", self.stack.kafka_bootstrap, "-L", "-J", "-m", "10"],
                     timeout=timeout)
        return json.loads(out)

    def partitions(self):
        """{(topic, partition): (leader, [replicas], [isrs])} of every topic,
        internal ones included."""
        out = {}
        for t in self.metadata()["topics"]:
            for p in t["partitions"]:
                out[(t["topic"], p["partition"])] = (
                    p["leader"], [r["id"] for r in p["replicas"]], [r["id"] for r in p["isrs"]])
        return out

    def leader(self, partition, topic=None):
        return self.partitions()[(topic or self.stack.kafka_topic, partition)][0]

    def isr_full(self):
        """Every partition of every topic has a leader and all its replicas
        in sync, and every node is a live broker."""
        md = self.metadata()
        if len(md["brokers"]) != self.nodes:
            return False
        for t in md["topics"]:
            for p in t["partitions"]:
                if p["leader"] < 0 or len(p["isrs"]) != len(p["replicas"]):
                    return False
        return True

    def wait_isr_full(self, timeout=120):
        """Seconds until isr_full()."""
        t0 = time.monotonic()
        it.wait_until(lambda: self._try(self.isr_full), timeout, 0.5,
                      "every partition's replicas back in sync")
        return time.monotonic() - t0

    @staticmethod
    def _try(fn):
        try:
            return fn()
        except (AssertionError, ValueError, KeyError):
            return False

    def active_controller(self):
        """The node id leading the KRaft quorum (the active controller)."""
        out = it.run([it.STACK_SH, "kafka-tool", "quorum", "describe", "--status"],
                     timeout=90, env=self.stack.env)
        for line in out.splitlines():
            if line.startswith("LeaderId:"):
                return int(line.split()[1])
        raise AssertionError(f"no LeaderId in the quorum's status: {out[-500:]}")

    def busiest_partition(self, kafka, seconds=2.0):
        """The partition of the event topic that grew most over `seconds`."""
        a = kafka.end_offsets()
        time.sleep(seconds)
        b = kafka.end_offsets()
        return max(b, key=lambda p: b[p] - a.get(p, 0))


# ------------------------------------------------------------- postgres ---


class PgPair:
    """The nodes postgres and postgres-standby; which one is the primary
    changes with each promotion."""

    def __init__(self, stack):
        self.stack = stack

    def primary(self):
        return stack_settings(self.stack)["PG_PRIMARY"]

    def standby(self):
        return "postgres-standby" if self.primary() == "postgres" else "postgres"

    def port(self, node):
        s = stack_settings(self.stack)
        return int(s["PG_PORT"] if node == "postgres" else s["PG_STANDBY_PORT"])

    def query(self, node, sql, timeout=15):
        dsn = f"postgresql://counter:counter@127.0.0.1:{self.port(node)}/counter"
        out = it.run(["psql", dsn, "-X", "-q", "-tA", "-F", "\t", "-v", "ON_ERROR_STOP=1",
                      "-c", sql], timeout=timeout,
                     env={**os.environ, "PGCONNECT_TIMEOUT": "5"})
        return [line.split("\t") for line in out.splitlines()]

    def walsenders(self):
        """Pids of the primary's WAL senders (one per standby)."""
        return [int(r[0]) for r in self.query(self.primary(),
                                              "SELECT pid FROM pg_stat_replication") if r[0]]

    def wal_gap_bytes(self):
        """WAL the primary has written that the standby has not replayed."""
        primary, standby = self.primary(), self.standby()
        replayed = self.query(standby, "SELECT pg_last_wal_replay_lsn()")[0][0]
        return int(self.query(primary, "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), "
                                       f"'{replayed}')")[0][0])

    def stored_offsets(self, node):
        rows = self.query(node, "SELECT partition, next_offset FROM consumer_offsets "
                                "WHERE group_id = 'counter-persister' "
                                f"AND topic = '{self.stack.kafka_topic}'")
        return {int(p): int(o) for p, o in rows}

    def wait_streaming(self, timeout=60):
        """Until the standby has replayed everything the primary wrote."""
        it.wait_until(lambda: self.wal_gap_bytes() == 0 and self.walsenders(), timeout, 0.2,
                      "the standby streaming and caught up")


def persister_metric(stack, name):
    port = int(stack.env["PERSISTER_METRICS_URL"].rsplit(":", 1)[1].split("/")[0])
    return it.metrics_at(port).get(name, 0.0)


# --------------------------------------------------- an api that reads PG ---


class FallbackApi:
    """A second counter-api whose Redis is unreachable: every read it
    answers comes from PostgreSQL (stale: true), through the stack's
    multi-host settings and postgres.read_session_attrs. A thread reads the
    given counters from it all along, as the load client's reader does."""

    def __init__(self, stack, extras, port):
        self.port = port
        self.reads = []
        self._stop = threading.Event()
        self._thread = None
        self.log = os.path.join(stack.stack_dir, "log", "counter-api-fallback.log")
        env = {**stack.env, "COUNTER_REDIS_ADDR": "127.0.0.1:1",
               "COUNTER_SERVER_PORT": str(port)}
        with open(self.log, "ab") as out:
            self.proc = extras.add(subprocess.Popen(
                [os.path.join(stack.env["BIN_DIR"], "counter-api")], env=env,
                stdout=out, stderr=subprocess.STDOUT, cwd=stack.stack_dir))
        self.api = it.Api(_At(stack, port))
        it.wait_until(lambda: self._healthz(), 30, 0.2, "the fallback counter-api answering")

    def _healthz(self):
        assert self.proc.poll() is None, f"the fallback counter-api exited; see {self.log}"
        try:
            return self.api.healthz(timeout=2).status == 200
        except OSError:
            return False

    def start_reading(self, names, t_start, interval_s=0.05):
        """Reads names in turn until stop(); times since t_start (the load
        client's clock)."""
        def run():
            while not self._stop.is_set():
                for name in names:
                    t0 = time.monotonic() - t_start
                    try:
                        r = self.api.get(name, timeout=5)
                        status, data, err = r.status, r.json or {}, None
                    except OSError as e:
                        status, data, err = 0, {}, f"{type(e).__name__}: {e}"
                    self.reads.append(Read(t0, time.monotonic() - t_start, name, status,
                                           data.get("value"), data.get("source"),
                                           data.get("stale"), data.get("period"), err))
                time.sleep(interval_s)
        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def stop(self):
        self._stop.set()
        if self._thread:
            self._thread.join(15)

    def check(self, tag, t_from, t_to):
        """Violations: a read within [t_from, t_to] not answered 200 from
        PostgreSQL with stale: true, and any stale read going back (I6)."""
        out = []
        during = [r for r in self.reads if t_from <= r.t0 and r.t1 <= t_to]
        if len(during) < 10:
            out.append(f"{tag}: only {len(during)} fallback reads in the window; nothing tested")
        bad = [r for r in during if not (r.status == 200 and r.source == "postgres"
                                         and r.stale is True)]
        if bad:
            r = bad[0]
            out.append(f"{tag} (G5): {len(bad)} of {len(during)} fallback reads were not answered "
                       f"from PostgreSQL (stale), e.g. t={r.t0:.2f}s status {r.status} "
                       f"{r.source} {r.error or ''}")
        last = {}
        for r in self.reads:
            if r.status != 200 or r.value is None:
                continue
            prev = last.get(r.counter)
            if prev is not None and r.period == prev.period and r.value < prev.value:
                out.append(f"{tag} (I6): a fallback read of {r.counter} went back from "
                           f"{prev.value} at t={prev.t0:.2f}s to {r.value} at t={r.t0:.2f}s")
                break
            last[r.counter] = r
        lat = sorted(r.t1 - r.t0 for r in during if r.status == 200)
        if lat:
            print(f"{tag}: {len(during)} fallback reads, p50 {lat[len(lat) // 2] * 1000:.0f} ms, "
                  f"max {lat[-1] * 1000:.0f} ms")
        return out


class _At:
    """The stack's address, at another api port (for it.Api)."""

    def __init__(self, stack, port):
        self.api_host, self.api_port = stack.api_host, port
        self.env = stack.env


# -------------------------------------------------- events into Kafka ---


class ExternalWriter:
    """Writes events straight into Kafka's input topic (no origin header,
    as another service would) for one plain counter, a small batch every
    interval;
    the applier applies them to Redis and records them for the persister.
    Each batch becomes ops of the load client (acked when kcat delivered
    it, indeterminate when it did not say), so that the checker counts
    them with the rest."""

    def __init__(self, stack, tag):
        self.stack = stack
        self.counter = Counter(f"fault.ext.{tag}.{uuid.uuid4().hex[:10]}", PLAIN)
        self.ops = []
        self._stop = threading.Event()
        self._thread = None

    def start(self, t_start, batch=10, interval_s=0.5):
        def run():
            while not self._stop.is_set():
                self._batch(t_start, batch)
                self._stop.wait(interval_s)
        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        return self

    def _batch(self, t_start, n):
        ids = [f"ext-{uuid.uuid4()}" for _ in range(n)]
        now_ms = int(time.time() * 1000)
        lines = "".join(
            f"{self.counter.name}\t" + json.dumps(
                {"v": 1, "id": i, "counter": self.counter.name, "delta": 1, "ts": now_ms},
                separators=(",", ":")) + "\n" for i in ids)
        t0 = time.monotonic() - t_start
        try:
            p = subprocess.run(["kcat", "-P", "-b", self.stack.kafka_bootstrap,
                                "-t", self.stack.kafka_input_topic, "-K", "\t",
                                "-X", "partitioner=murmur2_random", "-X", "acks=all",
                                "-X", "message.timeout.ms=30000"],
                               input=lines, capture_output=True, text=True, timeout=60)
            # (a node down makes kcat log refused connections; only a
            # failed delivery makes the batch uncertain)
            ok = p.returncode == 0 and "delivery failed" not in p.stderr.lower()
        except subprocess.TimeoutExpired:
            ok = False
        t1 = time.monotonic() - t_start
        outcome = "acked" if ok else "indeterminate"
        for i in ids:
            self.ops.append(Op(key=i, counter=self.counter.name, kind=PLAIN, keyed=True,
                               attempts=[Attempt(t0, t1, outcome, 200 if ok else 0,
                                                 event_id=i)]))

    def stop(self):
        self._stop.set()
        if self._thread:
            self._thread.join(90)


def freeze(pid):
    it.freeze(pid)


def resume(pid):
    try:
        os.kill(pid, signal.SIGCONT)
    except ProcessLookupError:
        pass


def answers(pairs):
    """{'status code': n} of (op, attempt) pairs."""
    out = {}
    for _, a in pairs:
        k = f"{a.status} {a.code or ''}".strip() if a.status else a.outcome
        out[k] = out.get(k, 0) + 1
    return out


def window(client, t_from, t_to):
    """Attempts sent within [t_from, t_to] and answered by t_to."""
    return [(op, a) for op, a in client.attempts() if t_from <= a.t0 and a.t1 <= t_to]


def healthy(api):
    return api_healthy(api)

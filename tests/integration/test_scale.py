"""Several counter-api instances and consumer groups that rebalance (issue 8).

Beside the stack's own processes the tests start more from $BIN_DIR, on the
same Redis, PostgreSQL and Kafka (own_process.py): two more counter-apis,
more counter-persisters in the stack persister's group, more
counter-appliers in the applier's group. The groups use the cooperative-
sticky assignor, so a member that joins or leaves moves only some
partitions; the persister starts each newly assigned partition at the
offset stored in PostgreSQL and drops its in-memory batch on revocation.

- three apis take concurrent increments and decrements of the same
  counters (loadgen); Redis, every api's GET and PostgreSQL end equal to
  the acknowledged sum, a unique counter counts each user once;
- persisters: a second member joins under load, is SIGKILLed, a third
  joins and leaves on SIGTERM; the logs show the partitions moving, and
  PostgreSQL ends exact, with the stored offsets at the topic's end. Most
  writes carry no Idempotency-Key: PostgreSQL counts a keyed event once
  per id, which would hide a stretch of the log folded twice (a member
  that starts a partition anywhere but at the stored offset);
- appliers: the same with external events produced by kcat.

A member that leaves on SIGTERM must leave the group (consumer close), so
that its partitions move at once rather than after the session timeout
(10 s, ingest/consumer.c); the tests time that hand-over.

Ports of the extra processes: free ones, or from the range SCALE_PORTS
("first-last") when set, for a machine where other stacks run.
"""

import http.client
import itertools
import json
import os
import random
import signal
import socket
import subprocess
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

from conftest import (
    PERSISTER_GROUP,
    counter_name,
    loadgen_args,
    log_text_since,
    metrics_at,
    parse_loadgen,
    partitions_owned,
    pg_unique_users,
    sql_literal,
    wait_persisted,
    wait_until,
)
from own_process import Endpoint, OwnApi, OwnProcess, free_port
from test_applier import event, pg_totals, produce_events, wait_pg

# librdkafka's session timeout for the groups (ingest/consumer.c): a member
# that dies without leaving keeps its partitions this long. A clean leave
# must hand them over well within it.
SESSION_TIMEOUT_S = 10
HANDOVER_MAX_S = 7

_ports = None


def _bindable(port):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def own_port():
    """A free port: the kernel's pick, or the next one of SCALE_PORTS that
    nothing holds right now (the range lies among the ephemeral ports, so
    a client's socket may hold one for a while)."""
    global _ports
    spec = os.environ.get("SCALE_PORTS")
    if not spec:
        return free_port()
    first, last = (int(x) for x in spec.split("-"))
    if _ports is None:
        _ports = itertools.cycle(range(first, last + 1))
    for _ in range(last - first + 1):
        port = next(_ports)
        if _bindable(port):
            return port
    raise AssertionError(f"no free port in SCALE_PORTS={spec}")


class Api(OwnApi):
    """counter-api on own_port()."""

    def __init__(self, stack, tmp_path):
        port = own_port()
        super().__init__(stack, tmp_path, {"COUNTER_SERVER_PORT": str(port)})
        self.port = port
        self.endpoint = Endpoint("127.0.0.1", port)


class Member(OwnProcess):
    """A counter-persister or counter-applier of the stack's group, with a
    metrics port of its own."""

    def __init__(self, stack, tmp_path, binary):
        self.metrics_port = own_port()
        key = {"counter-persister": "COUNTER_PERSISTER_METRICS_PORT",
               "counter-applier": "COUNTER_APPLIER_METRICS_PORT"}[binary]
        super().__init__(stack, tmp_path, binary, {key: str(self.metrics_port)})

    def start(self):
        super().start()

        def up():
            assert self.proc.poll() is None, (
                f"{self.binary} exited with {self.proc.returncode}:\n" + self.log()[-3000:])
            try:
                return self.metrics() is not None
            except OSError:
                return False

        wait_until(up, 60, 0.1, f"{self.binary}'s metrics port {self.metrics_port}")
        return self

    def partitions(self):
        return partitions_owned(self.log())

    def metrics(self):
        return metrics_at(self.metrics_port)

    def kill(self):
        self.proc.kill()
        self.proc.wait(10)
        self._log.close()


# ------------------------------------------------------------- helpers ---

class StackLog:
    """The stack's log of one service, from now on."""

    def __init__(self, stack, name):
        self.path = stack.log_path(name)
        self.start = os.path.getsize(self.path)

    def text(self):
        return log_text_since(self.path, self.start)


def stack_member_partitions(before, log):
    """What the stack's member holds: `before` (all of them when the test
    started, as the only member) changed by the lines of its log since."""
    return partitions_owned(log.text(), before)


def redis_values(redis, names):
    return {n: redis.value(n) for n in names}


def stored_offsets(pg, stack):
    rows = pg.query("SELECT partition, next_offset FROM consumer_offsets "
                    f"WHERE group_id = {sql_literal(PERSISTER_GROUP)} "
                    f"AND topic = {sql_literal(stack.kafka_topic)}")
    return {int(p): int(o) for p, o in rows}


def assert_offsets_at_end(pg, kafka, stack):
    """After the persister drained: every stored offset is exactly the
    partition's end (none past it, which a counted-twice batch could not
    show but a broken offset update could)."""
    wait_persisted(pg, kafka)
    ends = kafka.end_offsets()
    stored = stored_offsets(pg, stack)
    assert {p: stored.get(p) for p, e in ends.items() if e > 0} == \
        {p: e for p, e in ends.items() if e > 0}, (stored, ends)


# 503 codes that promise nothing was applied (G2)
DEFINITE_503 = ("redis_unavailable", "kafka_unavailable")


def error_code(body):
    try:
        return json.loads(body)["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return None


class Load:
    """Client threads writing increments and decrements of random size to
    `names` through `endpoints` (one per thread, round robin). One write in
    `keyed_every` carries an Idempotency-Key and is retried with it until it
    has a definite answer; the others have none, as most clients send them,
    because PostgreSQL counts a keyed event once per id, which would hide a
    persister that folds a stretch of the log twice. The apis stay up, so
    every unkeyed write must get a definite answer. Runs until stop() or
    max_writes per thread."""

    def __init__(self, endpoints, names, threads=4, max_writes=5000, seed=8, keyed_every=10):
        self.endpoints = endpoints
        self.names = names
        self.acked = {n: 0 for n in names}
        self.writes = 0
        self.retries = 0
        self.failures = []
        self.keys = []  # (endpoint, name, op, body, key) of acked keyed writes
        self.keyed_every = keyed_every
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i, max_writes, seed + i),
                                          daemon=True) for i in range(threads)]
        self.run_id = uuid.uuid4().hex[:8]

    def start(self):
        for t in self._threads:
            t.start()
        return self

    def stop(self, timeout=60):
        self._stop.set()
        for t in self._threads:
            t.join(timeout)
            assert not t.is_alive(), "a load thread did not finish"
        assert not self.failures, self.failures[:5]

    def wait_writes(self, n, timeout=60):
        wait_until(lambda: self.writes >= n, timeout, 0.05, f"{n} acknowledged writes")

    def _run(self, idx, max_writes, seed):
        rnd = random.Random(seed)
        ep = self.endpoints[idx % len(self.endpoints)]
        conn = None
        for i in range(max_writes):
            if self._stop.is_set():
                break
            name = self.names[rnd.randrange(len(self.names))]
            op = rnd.choice(("increment", "decrement"))
            value = rnd.randint(1, 5)
            body = json.dumps({"value": value})
            key = f"scale-{self.run_id}-{idx}-{i}" if i % self.keyed_every == 0 else None
            headers = {"Content-Type": "application/json"}
            if key:
                headers["Idempotency-Key"] = key
            for attempt in range(200):
                try:
                    if conn is None:
                        conn = http.client.HTTPConnection(ep.api_host, ep.api_port, timeout=10)
                    conn.request("POST", f"/api/v1/counter/{name}/{op}", body=body,
                                 headers=headers)
                    r = conn.getresponse()
                    data = r.read()
                    status = r.status
                except (OSError, http.client.HTTPException):
                    if conn is not None:
                        conn.close()
                    conn = None
                    status, data = None, b""
                if status in (200, 202):
                    with self._lock:
                        self.acked[name] += value if op == "increment" else -value
                        self.writes += 1
                        if key:
                            self.keys.append((ep, name, op, body, key))
                    break
                if key is None and (status is None or status == 503):
                    if status == 503 and error_code(data) in DEFINITE_503:
                        break  # nothing applied anywhere: not acknowledged
                    # without a key an unanswered write cannot be settled
                    self.failures.append((name, op, status, data[:200]))
                    return
                if status is not None and status not in (409, 503):
                    self.failures.append((name, op, status, data[:200]))
                    return
                with self._lock:
                    self.retries += 1
                time.sleep(0.05 if status == 409 else 0.02)
            else:
                self.failures.append((name, op, "no definite answer", key))
                return
        if conn is not None:
            conn.close()


def wait_handover(what, held_by, partitions, since, timeout=SESSION_TIMEOUT_S + 20):
    """Waits until held_by() includes `partitions`; returns the seconds
    since `since` (a monotonic time)."""
    wait_until(lambda: partitions <= held_by(), timeout, 0.05,
               f"{what} holds partitions {sorted(partitions)}")
    return time.monotonic() - since


# --------------------------------------------------------------- tests ---


def test_three_apis_concurrent_writes_sum_exactly(stack, api, redis, pg, kafka, tmp_path,
                                                  loadgen_bin):
    apis = [Endpoint(stack.api_host, stack.api_port)]
    own = [Api(stack, tmp_path), Api(stack, tmp_path)]
    try:
        for a in own:
            a.start()
            apis.append(a.endpoint)
        gauges = [counter_name("it_free_scale_"), counter_name("it_free_scale_")]
        uniq = counter_name("it_unique_scale_")
        runs = []  # (counter, delta per acked write, command)
        for ep in apis:
            url = f"http://{ep.api_host}:{ep.api_port}/api/v1/counter"
            for g in gauges:
                runs.append((g, 3, loadgen_args(loadgen_bin, f"{url}/{g}/increment", 2, 600,
                                                body='{"value":3}', timeout_s=150)))
                runs.append((g, -2, loadgen_args(loadgen_bin, f"{url}/{g}/decrement", 2, 600,
                                                 body='{"value":2}', timeout_s=150)))
            # every api sees users u0..u999 twice: 1000 users in all
            runs.append((uniq, None, loadgen_args(
                loadgen_bin, f"{url}/{uniq}/increment", 2, 1000, timeout_s=150,
                extra=["--body-template", '{"user_id":"u{req}"}'])))
        t0 = time.monotonic()
        procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _, _, cmd in runs]
        outs = [p.communicate(timeout=200) for p in procs]
        elapsed = time.monotonic() - t0

        expected = {g: 0 for g in gauges}
        writes = 0
        for (counter, delta, _), p, (out, err) in zip(runs, procs, outs):
            assert p.returncode == 0, (p.returncode, err[-500:])
            s = parse_loadgen(out)
            # every write answered, and acknowledged: the sum is exact
            assert s["errors"] == 0 and set(s["status"]) == {"200"}, s
            writes += s["status"]["200"]
            if delta is not None:
                expected[counter] += delta * s["status"]["200"]
        expected[uniq] = 1000
        print(f"\n{writes} writes through 3 apis in {elapsed:.1f}s")
        assert writes == 3 * (2 * 2 * 2 * 600 + 2 * 1000)

        assert redis_values(redis, expected) == expected
        for ep in apis:
            for n, v in expected.items():
                conn = http.client.HTTPConnection(ep.api_host, ep.api_port, timeout=10)
                conn.request("GET", f"/api/v1/counter/{n}")
                got = json.loads(conn.getresponse().read())
                conn.close()
                assert (got["value"], got["source"]) == (v, "redis"), (ep.api_port, got)
        wait_persisted(pg, kafka)
        assert pg_totals(pg, expected) == expected
        users = pg_unique_users(pg, uniq)
        assert sorted(u for day in users.values() for u in day) == \
            sorted(f"u{i}" for i in range(1000))
    finally:
        for a in own:
            a.assert_clean_exit()


def test_persisters_rebalance_under_load_count_exactly(stack, api, redis, pg, kafka, tmp_path):
    all_parts = set(range(stack.kafka_partitions))
    a_log = StackLog(stack, "counter-persister")
    names = [counter_name("it_free_scale_p") for _ in range(16)]
    second = Api(stack, tmp_path)
    members = []
    load = None
    try:
        second.start()
        held_by_a = lambda: stack_member_partitions(all_parts, a_log)  # noqa: E731

        load = Load([Endpoint(stack.api_host, stack.api_port), second.endpoint],
                    names, threads=4, max_writes=25000).start()
        load.wait_writes(300)

        # B joins under load: cooperative rebalancing moves some partitions
        # to it while the stack's member keeps the others (and drops its
        # batch, then reads the kept ones again from the stored offsets)
        b = Member(stack, tmp_path, "counter-persister").start()
        members.append(b)
        wait_until(lambda: b.partitions() and held_by_a() and
                   held_by_a() | b.partitions() == all_parts and
                   not held_by_a() & b.partitions(), 60, 0.1,
                   "the partitions split between two persisters")
        moved_to_b = b.partitions()
        wait_until(lambda: b.metrics().get("counter_persister_batches_total", 0) > 0, 30, 0.1,
                   "the second persister committed batches")

        # B crashes mid-stream: its partitions wait for its session to end
        b.kill()
        killed_at = time.monotonic()
        assert b.sanitizer_report() is None, b.sanitizer_report()
        c = Member(stack, tmp_path, "counter-persister").start()
        members.append(c)
        wait_until(lambda: moved_to_b <= held_by_a() | c.partitions() and c.partitions()
                   and not held_by_a() & c.partitions(), SESSION_TIMEOUT_S + 40, 0.1,
                   "the killed member's partitions taken over")
        print(f"\nkilled member's partitions {sorted(moved_to_b)} owned again after "
              f"{time.monotonic() - killed_at:.1f}s")
        load.wait_writes(load.writes + 300)
        wait_until(lambda: c.metrics().get("counter_persister_batches_total", 0) > 0, 30, 0.1,
                   "the third persister committed batches")

        # C leaves on SIGTERM: its partitions move at once, not after
        # the session timeout
        moved_to_c = c.partitions()
        term_at = time.monotonic()
        c.signal(signal.SIGTERM)
        took = wait_handover("the stack's persister", held_by_a, moved_to_c, term_at)
        assert c.wait(30) == 0, c.log()[-3000:]
        print(f"clean leave: partitions {sorted(moved_to_c)} moved in {took:.1f}s")
        assert took < HANDOVER_MAX_S, \
            f"partitions of a member stopped by SIGTERM moved after {took:.1f}s"
        load.wait_writes(load.writes + 300)
        load.stop()
        print(f"{load.writes} writes, {len(load.keys)} of them keyed, {load.retries} retried")

        # keyed writes sent again: replayed, counted nowhere again
        sample = random.Random(3).sample(load.keys, 20)
        for ep, name, op, body, key in sample:
            conn = http.client.HTTPConnection(ep.api_host, ep.api_port, timeout=10)
            conn.request("POST", f"/api/v1/counter/{name}/{op}", body=body,
                         headers={"Content-Type": "application/json", "Idempotency-Key": key})
            r = conn.getresponse()
            r.read()
            conn.close()
            assert r.status == 200 and r.getheader("Idempotent-Replayed") == "true", \
                (key, r.status, dict(r.getheaders()))

        assert redis_values(redis, names) == load.acked
        assert_offsets_at_end(pg, kafka, stack)
        assert pg_totals(pg, names) == load.acked
        assert held_by_a() == all_parts
    finally:
        if load is not None:
            load._stop.set()
        for m in members:
            m.stop()
            assert m.sanitizer_report() is None, m.sanitizer_report()
        second.assert_clean_exit()


def test_appliers_rebalance_external_events_count_exactly(stack, api, redis, pg, kafka,
                                                         tmp_path):
    all_parts = set(range(stack.kafka_partitions))
    a_log = StackLog(stack, "counter-applier")
    held_by_a = lambda: stack_member_partitions(all_parts, a_log)  # noqa: E731
    rnd = random.Random(11)
    names = [counter_name("it_free_scale_a") for _ in range(16)]
    expected = {n: 0 for n in names}

    def produce(n):
        evs = [event(rnd.choice(names), rnd.randint(-3, 6), id=f"scale-{uuid.uuid4()}")
               for _ in range(n)]
        for ev in evs:
            expected[ev["counter"]] += ev["delta"]
        produce_events(stack, evs)

    def applied(m):
        return m.metrics().get('counter_applier_events_total{outcome="applied"}', 0)

    members = []
    try:
        b = Member(stack, tmp_path, "counter-applier").start()
        members.append(b)
        wait_until(lambda: b.partitions() and held_by_a() and
                   held_by_a() | b.partitions() == all_parts and
                   not held_by_a() & b.partitions(), 60, 0.1,
                   "the partitions split between two appliers")
        moved_to_b = b.partitions()

        # B crashes while it applies a burst
        with ThreadPoolExecutor(1) as ex:
            burst = ex.submit(produce, 6000)
            wait_until(lambda: applied(b) > 0, 60, 0.02, "the second applier applying")
            b.kill()
            burst.result(120)
        assert b.sanitizer_report() is None, b.sanitizer_report()
        c = Member(stack, tmp_path, "counter-applier").start()
        members.append(c)
        produce(2000)
        wait_until(lambda: moved_to_b <= held_by_a() | c.partitions() and c.partitions()
                   and not held_by_a() & c.partitions(), SESSION_TIMEOUT_S + 40, 0.1,
                   "the killed applier's partitions taken over")
        wait_until(lambda: applied(c) > 0, 60, 0.1, "the third applier applying")

        # C leaves on SIGTERM while events keep coming
        moved_to_c = c.partitions()
        with ThreadPoolExecutor(1) as ex:
            more = ex.submit(produce, 2000)
            term_at = time.monotonic()
            c.signal(signal.SIGTERM)
            took = wait_handover("the stack's applier", held_by_a, moved_to_c, term_at)
            more.result(120)
        assert c.wait(30) == 0, c.log()[-3000:]
        print(f"\nclean leave: partitions {sorted(moved_to_c)} moved in {took:.1f}s")
        assert took < HANDOVER_MAX_S, \
            f"partitions of an applier stopped by SIGTERM moved after {took:.1f}s"

        def redis_done():
            return redis_values(redis, names) == expected
        try:
            wait_until(redis_done, 90, 0.25, "Redis equal to the produced sums")
        except AssertionError:
            got = redis_values(redis, names)
            raise AssertionError({n: (got[n], v) for n, v in expected.items() if got[n] != v})
        wait_pg(pg, kafka, expected)
        assert held_by_a() == all_parts
    finally:
        for m in members:
            m.stop()
            assert m.sanitizer_report() is None, m.sanitizer_report()

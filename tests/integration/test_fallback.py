"""Degraded modes: Redis down or slow, Redis and PostgreSQL down, Kafka
stalled (SIGSTOP) or down.

Each test stops parts of the stack with deploy/stack.sh (or SIGSTOPs the
broker) and starts them again in a finally block; the fixture below also
restarts anything that was running before the test and is not afterwards,
so a failure here never leaves a broken stack to the next test file.
"""

import datetime
import os
import re
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import freeze, input_kafka, wait_pg_total, wait_until

RFC3339_MS_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
PARTS = ("redis", "postgres", "kafka", "counter-api", "counter-persister")

# Start order matters: the services before the apps that use them.
START_ORDER = PARTS


@pytest.fixture(autouse=True)
def restore_stack(stackctl, api):
    before = stackctl.status()
    yield
    after = stackctl.status()
    for part in START_ORDER:
        if before.get(part) and not after.get(part):
            stackctl.start(part)
    wait_until(lambda: _healthy(api), 30, 0.2, "api healthy with redis after the test")


def _healthy(api):
    try:
        r = api.healthz(timeout=2)
    except OSError:
        return False
    return r.status == 200 and r.json.get("status") == "ok" and r.json.get("redis") is True


def _seed(api, pg, name, value):
    r = api.incr(name, value)
    assert r.status == 200, r.json
    wait_pg_total(pg, name, value)
    return r.json["event_id"]


def _assert_stale_counter(c, name, value, last_updated_ms):
    assert set(c) == {"name", "value", "kind", "last_updated", "source", "stale", "as_of"}, c
    assert c["name"] == name
    assert c["value"] == value
    assert c["source"] == "postgres"
    assert c["stale"] is True
    if last_updated_ms is None:
        assert c["last_updated"] is None
    else:
        assert RFC3339_MS_RE.match(c["last_updated"]), c
    assert c["as_of"] is not None and RFC3339_MS_RE.match(c["as_of"]), c


def _rfc3339(ms):
    dt = datetime.datetime.fromtimestamp(ms / 1000, datetime.timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def _write_works(api, name):
    try:
        r = api.write(name, "increment", {"value": 1}, timeout=5)
    except OSError:
        return None
    return r if r.status == 200 else None


# -------------------------------------------------------------- redis down ---


def test_redis_down_reads_from_postgres_writes_go_through_kafka(api, redis, pg, stack, stackctl, name):
    """Redis down: reads come from PostgreSQL (stale), writes are accepted
    into Kafka only (202, applied: false) and the applier applies them, in
    log order, once Redis is back; a set, which needs the current value,
    is refused with nothing left anywhere."""
    never = f"{name}-never"
    _seed(api, pg, name, 7)
    r = api.decr(name, 2)
    assert r.status == 200
    wait_pg_total(pg, name, 5)
    last_event_ms = pg.total_row(name)[1]
    # the api's 202s go where other producers' events go: the input topic
    kafka = input_kafka(stack)
    since = kafka.end_offsets()
    before_stored = redis.stored(name)

    accepted = []
    stackctl.stop("redis")
    try:
        # The api notices the closed connection and reads from PostgreSQL.
        r = wait_until(
            lambda: (lambda x: x if x.json.get("source") == "postgres" else None)(api.get(name)),
            10, 0.1, "GET served from postgres",
        )
        assert r.status == 200
        _assert_stale_counter(r.json, name, 5, last_event_ms)
        # The persisted last event time, to the millisecond.
        assert r.json["last_updated"] == _rfc3339(last_event_ms)

        r = api.get(never)
        assert r.status == 200
        _assert_stale_counter(r.json, never, 0, None)

        r = api.get_many(f"{never},{name},{never}")
        assert r.status == 200
        got = r.json["counters"]
        assert [c["name"] for c in got] == [never, name, never]
        assert [c["value"] for c in got] == [0, 5, 0]
        for c in got:
            assert c["source"] == "postgres" and c["stale"] is True

        h = api.healthz()
        assert h.status == 200 and h.json.get("redis") is False, h.json
        # still ready: PostgreSQL answers reads, Kafka takes writes
        r = api.request("GET", "/readyz")
        assert r.status == 200 and r.json["ready"] is True, r.json
        assert r.json["redis"]["ok"] is False and r.json["redis"]["state"] != "ready", r.json
        assert r.json["postgres"]["ok"] is True and r.json["kafka"]["ok"] is True, r.json

        for _ in range(5):
            for r in (api.incr(name, 3), api.decr(name), api.write(name, "increment"),
                      api.incr(never, 1, user_id="u1")):
                assert r.status == 202, (r.status, r.json)
                assert set(r.json) == {"success", "applied", "event_id"}, r.json
                assert r.json["success"] is True and r.json["applied"] is False, r.json
                accepted.append(r.json["event_id"])
        gauge = f"it_free_{name}"
        r = api.write(gauge, "set", {"value": 100})
        assert r.status == 503 and r.json["error"]["code"] == "redis_unavailable", r.json

        # Nothing is applied yet: still PostgreSQL's value.
        r = api.get(name)
        assert r.json["value"] == 5 and r.json["source"] == "postgres"
        # In the input topic, in order, without "origin": the applier's to apply.
        logged = kafka.messages(since, key=name)
        assert [m["event"]["delta"] for m in logged] == [3, -1, 1] * 5
        assert all("origin" not in m["headers_dict"] for m in logged), logged
        assert [m["event"]["id"] for m in logged] + [
            m["event"]["id"] for m in kafka.messages(since, key=never)
        ] == [i for k, i in enumerate(accepted) if k % 4 != 3] + accepted[3::4]
    finally:
        stackctl.start("redis")

    t0 = time.monotonic()
    # (a write that probes would itself be accepted through Kafka)
    wait_until(lambda: _healthy(api), 15, 0.1, "api back on redis")
    recovery_s = time.monotonic() - t0
    assert recovery_s < 10, f"redis came back only after {recovery_s:.1f}s"
    marker = api.incr(name, 1)
    assert marker.status == 200, marker.json
    assert before_stored["v"] == "5"
    # 5 + 5 x (3 - 1 + 1), then the marker's +1; never: five times +1
    wait_until(lambda: api.value(name) == 21, 30, 0.1, "accepted writes applied")
    assert redis.stored(name)["v"] == "21"
    wait_until(lambda: api.value(never) == 5, 30, 0.1, "accepted writes applied")
    r = api.get(name)
    assert r.json["source"] == "redis" and r.json["stale"] is False
    wait_pg_total(pg, name, 21)
    wait_pg_total(pg, never, 5)
    assert redis.stored(gauge) == {} and pg.total(gauge) is None


def test_fallback_read_never_goes_back(api, redis, pg, stackctl, name):
    """I6: PostgreSQL lags Redis (here: the persister is stopped); a client
    that read 8 from Redis must not read 5 from PostgreSQL afterwards. A
    gauge may go down, so it gets PostgreSQL's value as it is."""
    gauge = f"it_free_{name}"
    _seed(api, pg, name, 5)
    assert api.write(gauge, "set", {"value": 5}).status == 200
    wait_pg_total(pg, gauge, 5)
    stackctl.stop("counter-persister")
    try:
        assert api.incr(name, 3).status == 200
        assert api.incr(gauge, 3).status == 200
        assert api.value(name) == 8 and api.value(gauge) == 8  # from Redis
        stackctl.stop("redis")
        try:
            r = wait_until(
                lambda: (lambda x: x if x.json.get("source") == "postgres" else None)(api.get(name)),
                10, 0.1, "GET served from postgres",
            )
            assert r.json["value"] == 8 and r.json["stale"] is True, r.json
            assert pg.total(name) == 5
            r = api.get_many(f"{gauge},{name}")
            assert [c["value"] for c in r.json["counters"]] == [5, 8], r.json
        finally:
            stackctl.start("redis")
    finally:
        stackctl.start("counter-persister")
    wait_pg_total(pg, name, 8)
    wait_pg_total(pg, gauge, 8)


# -------------------------------------------------------------- redis slow ---


def test_redis_slow_reads_fall_back_and_late_write_is_whole(api, redis, pg, kafka, name):
    """A Redis that stalls: reads fall back after redis.timeout_ms; a write
    gets 503 indeterminate after redis.write_timeout_ms and, once Redis runs
    it, is published too, so every store ends with it (G3)."""
    _seed(api, pg, name, 5)
    since = kafka.end_offsets()
    # Pauses every client but this one for 3 s; the api's write timeout is 1 s.
    assert redis.cli("CLIENT", "PAUSE", "3000", "ALL") == "OK"
    t0 = time.monotonic()
    r = api.get(name)
    read_s = time.monotonic() - t0
    assert r.status == 200, r.json
    assert r.json["source"] == "postgres" and r.json["stale"] is True, r.json
    assert r.json["value"] == 5
    assert read_s < 1.5, f"fallback read took {read_s:.2f}s"

    t0 = time.monotonic()
    w = api.incr(name, 3)
    write_s = time.monotonic() - t0
    assert w.status == 503, w.json
    assert w.json["error"]["code"] == "indeterminate", w.json
    assert write_s < 2.5, f"indeterminate answer took {write_s:.2f}s"

    # After the pause the write runs, and is published: wholly applied.
    wait_until(lambda: api.get(name).json.get("source") == "redis", 10, 0.1, "redis back")
    wait_until(lambda: api.value(name) == 8, 10, 0.1, "late write applied in redis")
    msgs = wait_until(lambda: kafka.messages(since, key=name), 10, 0.2, "late write in kafka")
    assert [m["event"]["delta"] for m in msgs] == [3]
    assert msgs[0]["headers_dict"]["origin"] == "api"
    wait_pg_total(pg, name, 8)
    assert redis.value(name) == 8


def test_redis_write_pause_only_blocks_writes(api, redis, pg, name):
    _seed(api, pg, name, 2)
    assert redis.cli("CLIENT", "PAUSE", "2500", "WRITE") == "OK"
    try:
        r = api.get(name)
        assert r.status == 200 and r.json["source"] == "redis" and r.json["value"] == 2
        w = api.decr(name, 1)
        assert w.status == 503 and w.json["error"]["code"] == "indeterminate", w.json
    finally:
        redis.cli("CLIENT", "UNPAUSE")
    wait_until(lambda: api.value(name) == 1, 10, 0.1, "late decrement applied")
    wait_pg_total(pg, name, 1)


# ------------------------------------------------- redis and postgres down ---


def test_redis_and_postgres_down_read_is_503_unavailable(api, pg, stackctl, name):
    _seed(api, pg, name, 4)
    stackctl.stop("redis")
    try:
        stackctl.stop("postgres")
        try:
            wait_until(lambda: api.healthz().json.get("redis") is False, 10, 0.1, "redis seen down")
            t0 = time.monotonic()
            r = api.get(name)
            took = time.monotonic() - t0
            assert r.status == 503, (r.status, r.json)
            assert r.json["success"] is False
            assert r.json["error"]["code"] == "unavailable", r.json
            assert took < 5, f"took {took:.1f}s"
            r = api.get_many(f"{name},{name}-b")
            assert r.status == 503 and r.json["error"]["code"] == "unavailable", r.json
            # nothing can answer reads: not ready
            r = api.request("GET", "/readyz")
            assert r.status == 503 and r.json["ready"] is False, r.json
            assert r.json["redis"]["ok"] is False and r.json["postgres"]["ok"] is False, r.json
            assert r.json["kafka"]["ok"] is True, r.json
            # Kafka still takes writes: the applier applies it later.
            w = api.incr(name, 1)
            assert w.status == 202 and w.json["applied"] is False, w.json
        finally:
            stackctl.start("postgres")
    finally:
        stackctl.start("redis")
    wait_until(lambda: _healthy(api), 15, 0.1, "api healthy")
    assert api.incr(name, 1).status == 200
    wait_until(lambda: api.value(name) == 6, 15, 0.1, "the accepted write applied")
    # The persister reconnects to PostgreSQL by itself.
    wait_pg_total(pg, name, 6)


# ------------------------------------------------------------- kafka stall ---


@pytest.mark.parametrize("extra_stall_s", [1.0, 2.5])
def test_kafka_stalled_indeterminate_write_is_whole(api, redis, pg, kafka, stack, name, extra_stall_s):
    """A broker that stalls (SIGSTOP) with the event already sent to it, for
    longer than kafka.delivery_timeout_ms plus librdkafka's once-a-second
    timeout scan: the answer is 503 indeterminate and librdkafka's verdict
    "possibly persisted". When the broker resumes it does persist the
    event, so the write must be kept in Redis too: applied wholly or not at
    all (G3), Redis == PostgreSQL."""
    _seed(api, pg, name, 10)
    since = kafka.end_offsets()
    pid = stack.pid("kafka")
    assert pid, "no kafka pid file"
    freeze(pid)
    try:
        w = api.incr(name, 5, timeout=30)
        # Past the delivery timeout and librdkafka's own verdict on it.
        time.sleep(extra_stall_s)
    finally:
        os.kill(pid, signal.SIGCONT)
    assert w.status == 503, (w.status, w.json)
    assert w.json["error"]["code"] in ("indeterminate", "kafka_unavailable"), w.json
    wait_until(lambda: _write_works(api, name), 60, 0.5, "writes work after the stall")
    msgs = kafka.messages(since, key=name)
    deltas = [m["event"]["delta"] for m in msgs]
    assert deltas in ([1], [5, 1]), deltas
    expected = 10 + sum(deltas)
    if w.json["error"]["code"] == "kafka_unavailable":
        assert deltas == [1], "kafka_unavailable promises the write is not recorded"
    wait_pg_total(pg, name, expected)
    assert redis.value(name) == expected, (
        f"after a 503 indeterminate write, Kafka and PostgreSQL hold {expected} "
        f"(events {deltas}) but Redis holds {redis.value(name)}: the write was "
        "applied in part (G3, I4)"
    )
    assert api.value(name) == expected


# -------------------------------------------------------------- kafka down ---


def test_kafka_down_writes_503_and_leave_no_trace(api, redis, pg, kafka, stackctl, name):
    fresh = f"{name}-fresh"
    _seed(api, pg, name, 10)
    since = kafka.end_offsets()
    before_stored = redis.stored(name)

    stackctl.stop("kafka")
    try:
        results = []
        for target, op in ((name, "increment"), (name, "decrement"), (fresh, "increment")):
            t0 = time.monotonic()
            r = api.write(target, op, {"value": 2}, timeout=30)
            results.append((target, op, r.status, r.json, time.monotonic() - t0))
        for target, op, status, body, took in results:
            assert status == 503, (target, op, status, body)
            assert body["error"]["code"] in ("kafka_unavailable", "indeterminate"), body
            assert took < 10, f"{op} took {took:.1f}s to fail"
        codes = [body["error"]["code"] for _, _, _, body, _ in results]
        # An "indeterminate" answer may come before the api's producer has
        # its verdict ("not persisted"); by then the writes are undone.
        def undone():
            now = (redis.value(name), redis.value(fresh))
            assert now[0] == 10 and now[1] in (None, 0), (now, results)
            return True

        wait_until(undone, 5, 0.1, "refused writes undone in redis")
        # Reads are unaffected, and the value is what it was.
        r = api.get(name)
        assert r.json["source"] == "redis" and r.json["value"] == 10, r.json
        during_stored, fresh_stored = redis.stored(name), redis.stored(fresh)
        fresh_get = api.get(fresh).json

        # While a refused write waits for Kafka, readers must not see it.
        with ThreadPoolExecutor(1) as ex:
            pending = ex.submit(api.incr, name, 1000)
            seen = set()
            while not pending.done():
                seen.add(api.get(name).json["value"])
                time.sleep(0.05)
            w = pending.result()
        assert w.status == 503, w.json
        codes.append(w.json["error"]["code"])
        # The api's own verdict, which may come after the answer, is "not
        # persisted": the value must settle back before Kafka returns.
        wait_until(lambda: api.value(name) == 10, 5, 0.1, "refused write undone")
    finally:
        stackctl.start("kafka")

    wait_until(lambda: _write_works(api, name), 60, 0.5, "writes work after kafka restart")
    msgs = kafka.messages(since, key=name)
    assert [m["event"]["delta"] for m in msgs] == [1], [m["payload"] for m in msgs]
    assert kafka.messages(since, key=fresh) == []
    wait_pg_total(pg, name, 11)
    assert api.value(name) == 11 and redis.value(name) == 11
    assert pg.total(fresh) is None
    # G2, strictly: a refused write leaves nothing in Redis, not even a
    # moved last_updated or an empty value for a counter never written, and
    # is never visible to readers in the meantime.
    traces = []
    if during_stored != before_stored:
        traces.append(f"{name}: stored {before_stored} -> {during_stored}")
    if fresh_stored != {} or fresh_get["last_updated"] is not None:
        traces.append(f"{fresh} (never written): stored {{}} -> {fresh_stored}, GET -> {fresh_get}")
    if seen != {10}:
        traces.append(f"{name}: readers saw values {sorted(seen)} while a refused write waited for Kafka")
    assert not traces, "writes refused with 503 left traces: " + "; ".join(traces)
    # With the broker down for seconds nothing can have reached it, and the
    # api's producer knows that (librdkafka: "not persisted"): the client
    # deserves the definite answer, 503 kafka_unavailable (G2), not
    # "indeterminate", which obliges it to retry or reconcile.
    assert set(codes) == {"kafka_unavailable"}, (
        f"with Kafka stopped, writes were answered {codes}; expected "
        "kafka_unavailable (nothing applied) every time"
    )

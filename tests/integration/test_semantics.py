"""Counter kinds and policies (issue 3), as a user of the api sees them.

- unique: exact dedup per (counter, local day, user) under concurrency, in
  Redis and in PostgreSQL; the errors of unique writes; the HLL mode.
- gauge: bounds that no interleaving crosses (reject: 409, clamp: the
  bound), the set operation, and PostgreSQL following Redis.
- daily windows keyed by the counter's local date, in Asia/Shanghai and
  across the last DST change of America/New_York; late events correct
  their own day only; reads of a daily counter from PostgreSQL.
- event time limits (422 too_late / in_future) and the definitions list.

Counter names are fresh (uuid suffix) under the patterns of
tests/config.test.yaml; event times are explicit wherever the day matters,
so that a run near a midnight does not change what is expected.
"""

import datetime
import os
import re
import socket
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from zoneinfo import ZoneInfo

import pytest

from conftest import (
    SANITIZER_MARKERS,
    api_history,
    api_set,
    avoid_local_midnight,
    counter_name,
    loadgen_args,
    local_midnight,
    metric_value,
    parse_loadgen,
    pg_daily,
    pg_unique_users,
    redis_keys,
    redis_window,
    rfc3339,
    sql_literal,
    wait_pg_total,
    wait_persisted,
    wait_until,
)

UTC = datetime.timezone.utc
SHANGHAI = ZoneInfo("Asia/Shanghai")
NEW_YORK = ZoneInfo("America/New_York")
WRITES = "counter_api_writes_total"
LOAD_TIMEOUT_S = 150


def _now():
    return datetime.datetime.now(UTC).replace(microsecond=0)


def _url(stack, name, op="increment"):
    return f"{stack.api_url}/api/v1/counter/{name}/{op}"


def _loadgen(loadgen_bin, url, conns, per_conn, body=None, template=None, timeout_s=LOAD_TIMEOUT_S - 10):
    extra = ("--method", "POST", "--body-template", template) if template else ()
    return loadgen_args(loadgen_bin, url, conns, per_conn, body=body, timeout_s=timeout_s, extra=extra)


def _run_loadgen(args):
    p = subprocess.run(args, capture_output=True, text=True, timeout=LOAD_TIMEOUT_S)
    assert p.returncode == 0, f"loadgen exit {p.returncode}: {p.stdout} {p.stderr[-2000:]}"
    return parse_loadgen(p.stdout)


def _parallel(fn, items, workers=100):
    with ThreadPoolExecutor(max_workers=workers) as ex:
        return list(ex.map(fn, items))


def _kafka_deltas(kafka, since, name):
    return [m["event"]["delta"] for m in kafka.messages(since, key=name)]


def _lateness_s():
    """lateness_s of the config the stack runs with (48 h when unset)."""
    path = os.environ.get("COUNTER_CONFIG")
    if path and os.path.isfile(path):
        with open(path) as f:
            m = re.search(r"^lateness_s:\s*(\d+)", f.read(), re.M)
        if m:
            return int(m.group(1))
    return 48 * 3600


def _assert_no_trace(api, redis, kafka, since, name):
    """G2: a refused write leaves nothing anywhere."""
    assert redis_keys(redis, name) == []
    assert kafka.messages(since, key=name) == []
    r = api.get(name)
    assert r.status == 200 and r.json["value"] == 0, r.json


# ================================================================ unique ===


def test_unique_one_user_thousand_concurrent_writes_count_once(api, redis, pg, kafka, stack):
    name = counter_name("it_unique_")
    ts = _now() - datetime.timedelta(minutes=1)
    day = ts.astimezone(UTC).date().isoformat()  # it_unique_* counts per UTC day
    dup_before = metric_value(stack, WRITES, outcome="duplicate")
    body = {"user_id": "u1", "timestamp": rfc3339(ts)}

    answers = _parallel(lambda _: api.incr(name, **body), range(1000))

    assert [a.status for a in answers] == [200] * 1000, {a.status for a in answers}
    counted = [a.json for a in answers if a.json.get("counted", True)]
    assert len(counted) == 1, f"{len(counted)} writes of one user counted"
    assert counted[0]["current_value"] == 1
    assert all(a.json["current_value"] == 1 for a in answers), {a.json["current_value"] for a in answers}
    assert all(a.json.get("counted") is False for a in answers if a.json is not counted[0])
    assert len({a.json["event_id"] for a in answers}) == 1000
    assert metric_value(stack, WRITES, outcome="duplicate") - dup_before == 999

    assert redis.value(name) == 1
    assert redis.cli("SMEMBERS", redis.key(name) + f":u:{day}") == "u1"
    assert api.value(name) == 1

    wait_pg_total(pg, name, 1)
    wait_persisted(pg, kafka)
    assert pg.total(name) == 1
    assert pg_daily(pg, name) == {day: 1}
    assert pg_unique_users(pg, name) == {day: ["u1"]}


def test_unique_ten_thousand_users_ten_writes_each_exact(api, redis, pg, kafka, stack, loadgen_bin):
    """10 loadgen processes run side by side, each writing all 10000 users
    once (user u{conn}-{req}): every user's 10 writes race each other."""
    name = counter_name("it_unique_")
    ts = _now() - datetime.timedelta(minutes=1)
    day = ts.astimezone(UTC).date().isoformat()
    template = '{"user_id":"u{conn}-{req}","timestamp":"%s"}' % rfc3339(ts)
    dup_before = metric_value(stack, WRITES, outcome="duplicate")

    t0 = time.monotonic()
    procs = [
        subprocess.Popen(
            _loadgen(loadgen_bin, _url(stack, name), 10, 1000, template=template),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for _ in range(10)
    ]
    summaries = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=LOAD_TIMEOUT_S)
            assert p.returncode == 0, f"loadgen exit {p.returncode}: {out} {err[-2000:]}"
            summaries.append(parse_loadgen(out))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    print(f"\n100000 unique writes in {time.monotonic() - t0:.1f}s")
    assert [s["status"] for s in summaries] == [{"200": 10000}] * 10, summaries
    assert all(s["errors"] == 0 for s in summaries), summaries

    assert redis.value(name) == 10000
    assert int(redis.cli("SCARD", redis.key(name) + f":u:{day}")) == 10000
    assert api.value(name) == 10000
    assert metric_value(stack, WRITES, outcome="duplicate") - dup_before == 90000

    t0 = time.monotonic()
    wait_pg_total(pg, name, 10000, timeout=120)
    wait_persisted(pg, kafka, timeout=120)
    print(f"PostgreSQL caught up {time.monotonic() - t0:.1f}s after the load")
    assert pg.total(name) == 10000
    assert pg_daily(pg, name) == {day: 10000}
    rows = pg.query(
        "SELECT count(*), count(DISTINCT user_id) FROM counter_unique_users "
        f"WHERE name = {sql_literal(name)}"
    )
    assert rows == [["10000", "10000"]]


def test_unique_write_errors_leave_no_trace(api, redis, kafka):
    name = counter_name("it_unique_")
    since = kafka.end_offsets()

    r = api.incr(name)
    assert r.status == 400, r.json
    assert r.json["error"]["code"] == "invalid_field" and r.json["error"]["field"] == "user_id", r.json
    r = api.incr(name, metadata={"k": "v"})
    assert r.status == 400 and r.json["error"]["field"] == "user_id", r.json

    r = api.decr(name, user_id="u1")
    assert r.status == 400 and r.json["error"]["code"] == "invalid_operation", r.json

    for value in (2, 0, -1):
        r = api.incr(name, value, user_id="u1")
        assert r.status == 400, (value, r.json)
        assert r.json["error"]["field"] == "value", (value, r.json)

    r = api_set(api, name, 5)
    assert r.status == 400 and r.json["error"]["code"] == "invalid_operation", r.json

    _assert_no_trace(api, redis, kafka, since, name)

    # value 1 is accepted, as is no value
    r = api.incr(name, 1, user_id="u1")
    assert r.status == 200 and r.json["current_value"] == 1 and "counted" not in r.json, r.json
    r = api.incr(name, user_id="u1")
    assert r.status == 200 and r.json["current_value"] == 1 and r.json["counted"] is False, r.json
    r = api.incr(name, user_id="u2")
    assert r.status == 200 and r.json["current_value"] == 2, r.json


def test_hll_counter_is_approximate_and_close(api, redis, pg, kafka, stack, loadgen_bin):
    """~2000 distinct users, written twice: reads say approximate, Redis's
    and PostgreSQL's estimates are each within 5% of the truth, and the
    second pass (the same users) changes nothing."""
    name = counter_name("it_hll_")
    truth = 2000
    ts = _now() - datetime.timedelta(minutes=1)
    day = ts.astimezone(UTC).date().isoformat()  # it_hll_* resets daily in UTC
    # Fixed user ids: the estimate is then the same on every run.
    template = '{"user_id":"hll-user-{conn}-{req}","timestamp":"%s"}' % rfc3339(ts)

    r = api.incr(name, user_id="hll-user-0-0", timestamp=rfc3339(ts))
    assert r.status == 200 and r.json["approximate"] is True and r.json["current_value"] == 1, r.json
    s = _run_loadgen(_loadgen(loadgen_bin, _url(stack, name), 20, truth // 20, template=template))
    assert s["status"] == {"200": truth}, s
    hkey = redis.key(name) + f":h:{day}"
    est = redis_window(redis, name, day)
    assert int(redis.cli("PFCOUNT", hkey)) == est
    print(f"\nHLL of {truth} users: redis {est}")
    assert abs(est - truth) <= 0.05 * truth, est

    # the same users again: nothing changes
    s = _run_loadgen(_loadgen(loadgen_bin, _url(stack, name), 20, truth // 20, template=template))
    assert s["status"] == {"200": truth}, s
    assert redis_window(redis, name, day) == est
    r = api.incr(name, user_id="hll-user-3-7", timestamp=rfc3339(ts))
    assert r.status == 200 and r.json["counted"] is False and r.json["approximate"] is True, r.json

    if day == _now().date().isoformat():
        g = api.get(name).json
        assert g["approximate"] is True and g["value"] == est and g["period"] == day, g

    wait_persisted(pg, kafka)
    rows = pg.query(f"SELECT day, estimate FROM counter_hll WHERE name = {sql_literal(name)}")
    assert len(rows) == 1 and rows[0][0] == day, rows
    pg_est = int(rows[0][1])
    print(f"HLL of {truth} users: postgresql {pg_est}")
    assert abs(pg_est - truth) <= 0.05 * truth, pg_est
    assert pg_daily(pg, name) == {day: pg_est}
    assert pg.total(name) == pg_est
    start = local_midnight(datetime.date.fromisoformat(day), UTC)
    h = api_history(api, name, interval="day", **{"from": rfc3339(start), "to": rfc3339(start + datetime.timedelta(days=1))})
    assert h.status == 200, h.json
    assert h.json["approximate"] is True, h.json
    assert h.json["points"] == [{"start": rfc3339(start), "value": pg_est}], h.json


def test_hll_within_two_percent_on_100k_users(api, redis, pg, kafka, stack, loadgen_bin):
    """The issue's bar for dedup: hll: 100k distinct users, within 2%."""
    name = counter_name("it_hll_")
    truth = 100000
    ts = _now() - datetime.timedelta(minutes=1)
    day = ts.astimezone(UTC).date().isoformat()
    template = '{"user_id":"big-user-{conn}-{req}","timestamp":"%s"}' % rfc3339(ts)
    s = _run_loadgen(_loadgen(loadgen_bin, _url(stack, name), 100, truth // 100, template=template))
    assert s["status"] == {"200": truth}, s
    est = redis_window(redis, name, day)
    wait_persisted(pg, kafka, timeout=120)
    rows = pg.query(f"SELECT estimate FROM counter_hll WHERE name = {sql_literal(name)}")
    pg_est = int(rows[0][0]) if rows else None
    print(f"\nHLL of {truth} users: redis {est}, postgresql {pg_est}")
    assert est is not None and abs(est - truth) <= 0.02 * truth, est
    assert pg_est is not None and abs(pg_est - truth) <= 0.02 * truth, pg_est
    assert pg_daily(pg, name) == {day: pg_est}


# ================================================================= gauge ===


def _race_with_reader(api, name, loadgen_cmd):
    """Runs the load while a reader polls GET; returns (summary, values read)."""
    seen = []
    stop = threading.Event()

    def reader():
        while not stop.is_set():
            try:
                r = api.get(name)
                seen.append(r.json["value"] if r.status == 200 else (r.status, r.json))
            except Exception as e:  # noqa: BLE001 - reported below
                seen.append(repr(e))

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    try:
        summary = _run_loadgen(loadgen_cmd)
    finally:
        stop.set()
        t.join(30)
    bad = [v for v in seen if not isinstance(v, int)]
    assert not bad, f"reads that failed during the load: {bad[:5]}"
    return summary, seen


@pytest.mark.parametrize("op,expected_end", [("decrement", 0), ("increment", 100)])
def test_gauge_bounds_hold_under_a_race(api, redis, pg, kafka, stack, loadgen_bin, op, expected_end):
    """it_gauge_* has min 0, max 100, on_bound reject: at 50, 1000
    concurrent steps of 1 towards a bound: 50 applied, 950 refused (409),
    and no read ever sees the gauge past the bound."""
    name = counter_name("it_gauge_")
    since = kafka.end_offsets()
    r = api_set(api, name, 50)
    assert r.status == 200 and r.json["current_value"] == 50, r.json
    refused_before = metric_value(stack, WRITES, outcome="bound_refused")

    summary, seen = _race_with_reader(
        api, name, _loadgen(loadgen_bin, _url(stack, name, op), 100, 10, body='{"value":1}')
    )
    assert summary["status"] == {"200": 50, "409": 950}, summary
    assert metric_value(stack, WRITES, outcome="bound_refused") - refused_before == 950
    assert len(seen) >= 5, f"the reader read only {len(seen)} times"
    assert all(0 <= v <= 100 for v in seen), f"read outside [0, 100]: {min(seen)}..{max(seen)}"
    assert redis.value(name) == expected_end
    assert api.value(name) == expected_end

    step = -1 if op == "decrement" else 1
    deltas = _kafka_deltas(kafka, since, name)
    assert sorted(deltas) == sorted([50] + [step] * 50), f"{len(deltas)} events: {sorted(set(deltas))}"
    wait_persisted(pg, kafka)
    assert pg.total(name) == expected_end


def test_gauge_refused_write_answers_409_with_current_value(api, redis, kafka):
    name = counter_name("it_gauge_")
    assert api_set(api, name, 40).status == 200
    since = kafka.end_offsets()
    for op, value, word in (("decrement", 41, "minimum"), ("increment", 61, "maximum")):
        r = api.write(name, op, {"value": value})
        assert r.status == 409, r.json
        assert r.json["success"] is False and r.json["current_value"] == 40, r.json
        assert r.json["error"]["code"] == "out_of_bounds" and r.json["error"]["field"] == "value", r.json
        assert word in r.json["error"]["message"], r.json
    for target in (-1, 101):
        r = api_set(api, name, target)
        assert r.status == 409 and r.json["current_value"] == 40, r.json
    assert kafka.messages(since, key=name) == []
    assert redis.value(name) == 40 and api.value(name) == 40
    # up to the bounds exactly is allowed
    assert api.decr(name, 40).json["current_value"] == 0
    assert api.incr(name, 100).json["current_value"] == 100


def test_clamp_gauge_clamps_and_postgres_follows(api, redis, pg, kafka, stack):
    """it_clamp_*: min 0, max 100, on_bound clamp. The log carries the
    applied deltas, so PostgreSQL ends where Redis is."""
    name = counter_name("it_clamp_")
    since = kafka.end_offsets()
    clamped_before = metric_value(stack, WRITES, outcome="clamped")
    steps = [
        ("increment", 30, 30, False),
        ("decrement", 50, 0, True),
        ("increment", 500, 100, True),
        ("decrement", 7, 93, False),
    ]
    for op, value, expect, clamped in steps:
        r = api.write(name, op, {"value": value})
        assert r.status == 200, (op, value, r.json)
        assert r.json["current_value"] == expect, (op, value, r.json)
        assert r.json.get("clamped", False) is clamped, (op, value, r.json)
    assert metric_value(stack, WRITES, outcome="clamped") - clamped_before == 2
    assert redis.value(name) == 93 and api.value(name) == 93
    assert _kafka_deltas(kafka, since, name) == [30, -30, 100, -7]
    wait_pg_total(pg, name, 93)


def test_clamp_gauge_under_a_race(api, redis, pg, kafka, stack, loadgen_bin):
    name = counter_name("it_clamp_")
    assert api_set(api, name, 50).status == 200
    clamped_before = metric_value(stack, WRITES, outcome="clamped")
    summary, seen = _race_with_reader(
        api, name, _loadgen(loadgen_bin, _url(stack, name, "decrement"), 100, 10, body='{"value":1}')
    )
    assert summary["status"] == {"200": 1000}, summary
    assert all(0 <= v <= 100 for v in seen), f"read outside [0, 100]: {min(seen)}..{max(seen)}"
    assert metric_value(stack, WRITES, outcome="clamped") - clamped_before == 950
    assert redis.value(name) == 0 and api.value(name) == 0
    wait_persisted(pg, kafka)
    assert pg.total(name) == 0


def test_clamp_gauge_set_out_of_range_says_clamped(api, redis, pg):
    """A set past a bound of a clamp gauge lands on the bound, and says so
    ("clamped": true), as every other clamped write does."""
    name = counter_name("it_clamp_")
    assert api_set(api, name, 50).json["current_value"] == 50
    r = api_set(api, name, 500)
    assert r.status == 200 and r.json["current_value"] == 100, r.json
    assert r.json.get("clamped") is True, f"set 500 on a gauge with max 100: {r.json}"
    r = api_set(api, name, -5)
    assert r.status == 200 and r.json["current_value"] == 0, r.json
    assert r.json.get("clamped") is True, f"set -5 on a gauge with min 0: {r.json}"
    wait_pg_total(pg, name, 0)


def test_set_reconciles_a_gauge_and_is_logged(api, redis, pg, kafka):
    name = counter_name("it_free_")  # a gauge without bounds
    since = kafka.end_offsets()
    for target in (-5, 10, 10, 0, 42):
        r = api_set(api, name, target)
        assert r.status == 200 and r.json["current_value"] == target, (target, r.json)
        assert "clamped" not in r.json, r.json
    r = api.incr(name, 3)
    assert r.json["current_value"] == 45
    assert redis.value(name) == 45 and api.value(name) == 45
    assert _kafka_deltas(kafka, since, name) == [-5, 15, 0, -10, 42, 3]
    wait_pg_total(pg, name, 45)


INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)


def test_set_across_the_whole_int64_range(api, redis, pg, stackctl):
    """A set from INT64_MAX to INT64_MIN moves the gauge by more than a
    signed 64-bit delta holds. The api must answer it: either apply it
    (and PostgreSQL, fed the applied delta, must follow) or refuse it with
    a 4xx and nothing applied. It must not crash or poison the log."""
    name = counter_name("it_free_")
    try:
        r = api_set(api, name, INT64_MAX)
        assert r.status == 200 and r.json["current_value"] == INT64_MAX, r.json
        try:
            r = api_set(api, name, INT64_MIN)
        except OSError as e:
            pytest.fail(
                f"no answer to set {INT64_MIN} after set {INT64_MAX}: {e!r}; "
                f"counter-api running: {stackctl.running('counter-api')}"
            )
        if r.status == 200:
            assert r.json["current_value"] == INT64_MIN, r.json
            assert redis.value(name) == INT64_MIN
            wait_pg_total(pg, name, INT64_MIN)
        else:
            assert 400 <= r.status < 500, r.json
            assert redis.value(name) == INT64_MAX
            wait_pg_total(pg, name, INT64_MAX)
        r = api_set(api, name, 0)
        assert r.status == 200 and r.json["current_value"] == 0, r.json
        wait_pg_total(pg, name, 0)
    finally:
        if not stackctl.running("counter-api"):
            stackctl.start("counter-api")


@pytest.mark.parametrize("prefix", ["it_day_sh_", "it_unique_", "it_dau_", "it_hist_"])
def test_set_on_a_non_gauge_is_refused(api, redis, kafka, prefix):
    name = counter_name(prefix)
    since = kafka.end_offsets()
    r = api_set(api, name, 5, user_id="u1")
    assert r.status == 400, r.json
    assert r.json["success"] is False and r.json["error"]["code"] == "invalid_operation", r.json
    _assert_no_trace(api, redis, kafka, since, name)


# =============================================================== windows ===


def test_daily_windows_either_side_of_shanghai_midnight(api, redis, pg):
    """it_day_sh_*: counter, reset daily, Asia/Shanghai."""
    avoid_local_midnight(SHANGHAI)
    name = counter_name("it_day_sh_")
    today = _now().astimezone(SHANGHAI).date()
    yesterday = today - datetime.timedelta(days=1)
    midnight = local_midnight(today, SHANGHAI)

    r = api.incr(name, 3, timestamp=rfc3339(midnight - datetime.timedelta(seconds=1)))
    assert r.status == 200 and r.json["period"] == yesterday.isoformat() and r.json["current_value"] == 3, r.json
    # the live value after midnight starts from 0
    g = api.get(name).json
    assert g["value"] == 0 and g["period"] == today.isoformat() and g["kind"] == "counter", g

    r = api.incr(name, 5, timestamp=rfc3339(midnight))
    assert r.status == 200 and r.json["period"] == today.isoformat() and r.json["current_value"] == 5, r.json
    r = api.incr(name, 7)  # now
    assert r.status == 200 and r.json["period"] == today.isoformat() and r.json["current_value"] == 12, r.json

    assert redis_window(redis, name, yesterday) == 3
    assert redis_window(redis, name, today) == 12
    assert redis.value(name) is None, "a daily counter has no all-time value"
    ttl = int(redis.cli("TTL", redis.key(name) + f":d:{today}"))
    assert ttl > 0, f"today's window has no expiry (TTL {ttl})"
    g = api.get(name).json
    assert g["value"] == 12 and g["period"] == today.isoformat(), g
    many = api.get_many(name).json["counters"]
    assert [(c["value"], c["period"]) for c in many] == [(12, today.isoformat())], many

    wait_pg_total(pg, name, 15)
    assert pg_daily(pg, name) == {yesterday.isoformat(): 3, today.isoformat(): 12}

    # a late write for yesterday corrects yesterday only
    r = api.incr(name, 10, timestamp=rfc3339(midnight - datetime.timedelta(hours=3)))
    assert r.status == 200 and r.json["period"] == yesterday.isoformat() and r.json["current_value"] == 13, r.json
    assert redis_window(redis, name, yesterday) == 13
    assert redis_window(redis, name, today) == 12
    assert api.get(name).json["value"] == 12
    wait_pg_total(pg, name, 25)
    assert pg_daily(pg, name) == {yesterday.isoformat(): 13, today.isoformat(): 12}


def test_unique_daily_counts_a_user_once_per_local_day(api, redis, pg):
    """it_dau_*: unique, reset daily, Asia/Shanghai."""
    avoid_local_midnight(SHANGHAI)
    name = counter_name("it_dau_")
    today = _now().astimezone(SHANGHAI).date()
    yesterday = today - datetime.timedelta(days=1)
    midnight = local_midnight(today, SHANGHAI)
    before = rfc3339(midnight - datetime.timedelta(seconds=1))
    after = rfc3339(midnight)

    writes = [
        ("u1", before, yesterday, 1, True),
        ("u1", after, today, 1, True),
        ("u1", None, today, 1, False),
        ("u2", before, yesterday, 2, True),
        ("u1", before, yesterday, 2, False),
        ("u3", None, today, 2, True),
    ]
    for user, ts, day, value, counted in writes:
        fields = {"user_id": user}
        if ts:
            fields["timestamp"] = ts
        r = api.incr(name, **fields)
        assert r.status == 200, r.json
        assert (r.json["period"], r.json["current_value"]) == (day.isoformat(), value), (user, ts, r.json)
        assert r.json.get("counted", True) is counted, (user, ts, r.json)

    g = api.get(name).json
    assert (g["value"], g["period"], g["kind"]) == (2, today.isoformat(), "unique"), g
    assert "approximate" not in g, g
    assert redis_window(redis, name, yesterday) == 2 and redis_window(redis, name, today) == 2
    assert sorted(redis.cli("SMEMBERS", redis.key(name) + f":u:{yesterday}").split()) == ["u1", "u2"]
    assert sorted(redis.cli("SMEMBERS", redis.key(name) + f":u:{today}").split()) == ["u1", "u3"]

    wait_pg_total(pg, name, 4)
    assert pg_daily(pg, name) == {yesterday.isoformat(): 2, today.isoformat(): 2}
    assert pg_unique_users(pg, name) == {yesterday.isoformat(): ["u1", "u2"], today.isoformat(): ["u1", "u3"]}


def _dst_changes(tz, now, count):
    """The local days of tz's last `count` days that are not 24 hours long
    (most recent first), each with the whole next day in the past too:
    [(day, start, end)] with start and end in UTC."""
    found = []
    today = now.astimezone(tz).date()
    for back in range(2, 370):
        day = today - datetime.timedelta(days=back)
        start = local_midnight(day, tz).astimezone(UTC)
        end = local_midnight(day + datetime.timedelta(days=1), tz).astimezone(UTC)
        if end - start != datetime.timedelta(hours=24):
            found.append((day, start, end))
            if len(found) == count:
                return found
    pytest.fail(f"fewer than {count} DST changes of {tz} in the past year")


@pytest.mark.parametrize("which", [0, 1], ids=["last_change", "change_before"])
def test_daily_windows_across_a_dst_change(api, redis, pg, which):
    """it_day_ny_*: counter, reset daily, America/New_York. Writes on the
    last DST-change day (and the one before it: one is 23 hours long, the
    other 25) and either side of its midnights land in their local days;
    history by day starts each point at a local midnight."""
    name = counter_name("it_day_ny_")
    day, start, end = _dst_changes(NEW_YORK, _now(), 2)[which]
    hours = (end - start) / datetime.timedelta(hours=1)
    assert hours in (23, 25), hours
    # the UTC instant of the change: the first hour whose offset differs
    change = next(
        start + datetime.timedelta(hours=h)
        for h in range(1, 25)
        if (start + datetime.timedelta(hours=h)).astimezone(NEW_YORK).utcoffset()
        != start.astimezone(NEW_YORK).utcoffset()
    )
    prev_day, next_day = day - datetime.timedelta(days=1), day + datetime.timedelta(days=1)
    s = datetime.timedelta(seconds=1)
    m = datetime.timedelta(minutes=1)
    events = [  # (instant, value, local day it belongs to)
        (start - s, 1, prev_day),
        (start, 2, day),
        (start + 30 * m, 4, day),
        (change - 30 * m, 8, day),
        (change + 30 * m, 16, day),
        (end - 30 * m, 32, day),
        (end - s, 64, day),
        (end, 128, next_day),
    ]
    for instant, value, local_day in events:
        ts = rfc3339(instant.astimezone(NEW_YORK))
        r = api.incr(name, value, timestamp=ts)
        assert r.status == 200, (ts, r.json)
        assert r.json["period"] == local_day.isoformat(), (ts, r.json)
    expected = {prev_day.isoformat(): 1, day.isoformat(): 126, next_day.isoformat(): 128}

    assert {d: redis_window(redis, name, d) for d in expected} == expected
    wait_pg_total(pg, name, 255)
    assert pg_daily(pg, name) == expected

    # history by day, from the local midnight before the change day to
    # the one after the day after it
    first = local_midnight(prev_day, NEW_YORK)
    last = local_midnight(next_day + datetime.timedelta(days=1), NEW_YORK)
    h = api_history(api, name, interval="day", **{"from": rfc3339(first), "to": rfc3339(last)})
    assert h.status == 200, h.json
    assert h.json["timezone"] == "America/New_York" and h.json["interval"] == "day", h.json
    want = [
        {"start": rfc3339(local_midnight(d, NEW_YORK)), "value": expected[d.isoformat()]}
        for d in (prev_day, day, next_day)
    ]
    assert h.json["points"] == want
    offsets = {p["start"][-6:] for p in h.json["points"]}
    assert len(offsets) == 2, f"the offset must change across the DST day: {offsets}"
    starts = [datetime.datetime.fromisoformat(p["start"]) for p in h.json["points"]]
    assert starts[2] - starts[1] == datetime.timedelta(hours=hours)


def test_daily_counter_read_from_postgres_when_redis_is_down(api, pg, stackctl):
    """With Redis down, GET of a daily counter is today's counter_daily row
    (period today), not the all-time total."""
    avoid_local_midnight(SHANGHAI, margin_s=180)
    name = counter_name("it_day_sh_")
    today = _now().astimezone(SHANGHAI).date()
    midnight = local_midnight(today, SHANGHAI)
    assert api.incr(name, 3, timestamp=rfc3339(midnight - datetime.timedelta(hours=1))).status == 200
    assert api.incr(name, 7).status == 200
    wait_pg_total(pg, name, 10)
    was_running = stackctl.running("redis")
    stackctl.stop("redis")
    try:
        def fallback():
            r = api.get(name)
            return r if r.status == 200 and r.json.get("source") == "postgres" else None

        g = wait_until(fallback, 30, 0.2, "a GET served from postgresql").json
        assert g["stale"] is True, g
        assert g["value"] == 7, f"GET with redis down: {g} (today's value is 7, the total 10)"
        assert g["period"] == today.isoformat() and g["kind"] == "counter", g
    finally:
        if was_running:
            stackctl.start("redis")

    def healthy():
        try:
            r = api.healthz(timeout=2)
        except OSError:
            return False
        return r.status == 200 and r.json.get("redis") is True

    wait_until(healthy, 30, 0.2, "api healthy with redis again")


# ============================================================ event time ===


def test_event_time_limits_422_and_nothing_applied(api, redis, kafka):
    name = counter_name("it_day_sh_")
    now = _now()
    lateness = _lateness_s()
    since = kafka.end_offsets()

    r = api.incr(name, 1, timestamp=rfc3339(now - datetime.timedelta(seconds=lateness + 3600)))
    assert r.status == 422, r.json
    assert r.json["error"]["code"] == "too_late" and r.json["error"]["field"] == "timestamp", r.json
    r = api.incr(name, 1, timestamp=rfc3339(now + datetime.timedelta(minutes=10)))
    assert r.status == 422, r.json
    assert r.json["error"]["code"] == "in_future" and r.json["error"]["field"] == "timestamp", r.json
    r = api.decr(name, 1, timestamp=rfc3339(now + datetime.timedelta(days=400)))
    assert r.status == 422 and r.json["error"]["code"] == "in_future", r.json
    uname = counter_name("it_dau_")
    r = api.incr(uname, user_id="u1", timestamp=rfc3339(now + datetime.timedelta(hours=1)))
    assert r.status == 422 and r.json["error"]["code"] == "in_future", r.json
    _assert_no_trace(api, redis, kafka, since, name)
    _assert_no_trace(api, redis, kafka, since, uname)

    # inside the limits: accepted, into the event's own day
    old = (now - datetime.timedelta(seconds=lateness - 86400)).astimezone(SHANGHAI)
    r = api.incr(name, 2, timestamp=rfc3339(old))
    assert r.status == 200 and r.json["period"] == old.date().isoformat(), r.json
    assert redis_window(redis, name, old.date()) == 2
    soon = (now + datetime.timedelta(minutes=2)).astimezone(SHANGHAI)
    r = api.incr(name, 4, timestamp=rfc3339(soon))
    assert r.status == 200 and r.json["period"] == soon.date().isoformat(), r.json


# =========================================================== definitions ===


def test_definitions_list_the_config(api):
    r = api.request("GET", "/api/v1/counters/definitions")
    assert r.status == 200, r.json
    defs = {d["pattern"]: d for d in r.json["definitions"]}
    expected = {
        "online_players": {"kind": "gauge", "reset": "none", "timezone": "UTC", "min": 0, "on_bound": "reject"},
        "daily_active_users": {"kind": "unique", "reset": "daily", "timezone": "UTC", "dedup": "exact"},
        "games_played": {"kind": "counter", "reset": "daily", "timezone": "UTC"},
        "daily_*": {"kind": "counter", "reset": "daily", "timezone": "UTC"},
        "it_gauge_*": {"kind": "gauge", "reset": "none", "timezone": "UTC", "min": 0, "max": 100, "on_bound": "reject"},
        "it_clamp_*": {"kind": "gauge", "reset": "none", "timezone": "UTC", "min": 0, "max": 100, "on_bound": "clamp"},
        "it_free_*": {"kind": "gauge", "reset": "none", "timezone": "UTC", "on_bound": "reject"},
        "it_unique_*": {"kind": "unique", "reset": "none", "timezone": "UTC", "dedup": "exact"},
        "it_dau_*": {"kind": "unique", "reset": "daily", "timezone": "Asia/Shanghai", "dedup": "exact"},
        "it_hll_*": {"kind": "unique", "reset": "daily", "timezone": "UTC", "dedup": "hll"},
        "it_day_sh_*": {"kind": "counter", "reset": "daily", "timezone": "Asia/Shanghai"},
        "it_day_ny_*": {"kind": "counter", "reset": "daily", "timezone": "America/New_York"},
        "it_gauge_ny_*": {"kind": "gauge", "reset": "daily", "timezone": "America/New_York", "on_bound": "reject"},
        "it_hist_*": {"kind": "counter", "reset": "none", "timezone": "Asia/Kolkata", "retention_days": 30},
    }
    for pattern, want in expected.items():
        assert pattern in defs, f"{pattern} missing from {sorted(defs)}"
        got = defs[pattern]
        retention = want.pop("retention_days", None)
        assert {k: got.get(k) for k in want} == want, got
        # only the fields of the kind
        assert ("min" in got or "max" in got or "on_bound" in got) == (want["kind"] == "gauge"), got
        assert ("dedup" in got) == (want["kind"] == "unique"), got
        assert isinstance(got["retention_days"], int) and got["retention_days"] > 0, got
        if retention is not None:
            assert got["retention_days"] == retention, got
    dflt = r.json["default"]
    assert dflt["kind"] == "counter" and dflt["reset"] == "none", dflt

    # and the definitions are what the writes obey: a name under a pattern
    # gets that pattern's kind, the longest prefix winning
    assert api.get(counter_name("it_gauge_ny_")).json["kind"] == "gauge"
    assert "period" in api.get(counter_name("it_gauge_ny_")).json
    assert "period" not in api.get(counter_name("it_gauge_")).json
    assert api.get(counter_name("it_hll_")).json["kind"] == "unique"
    assert api.get(counter_name("zz_undeclared_")).json["kind"] == "counter"


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("binary", ["counter-api", "counter-persister"])
def test_unknown_timezone_stops_the_process_with_a_clear_line(binary, tmp_path, loadgen_bin):
    """Definitions are validated at start. (Runs the binary on its own,
    with a config of its own and a port nobody uses; the stack is not
    touched.)"""
    bin_dir = os.environ.get("BIN_DIR") or os.path.dirname(loadgen_bin)
    path = os.path.join(bin_dir, binary)
    assert os.access(path, os.X_OK), f"{path} is not built"
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(
        "timezone: UTC\n"
        "counters:\n"
        '  "ok_*": {kind: counter, reset: daily, timezone: Asia/Shanghai}\n'
        '  "mars_*": {kind: counter, reset: daily, timezone: Mars/Olympus_Mons}\n'
    )
    env = {**os.environ, "COUNTER_CONFIG": str(cfg), "COUNTER_SERVER_PORT": str(_free_port())}
    try:
        p = subprocess.run([path], env=env, capture_output=True, text=True, timeout=30, cwd=tmp_path)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{binary} kept running with an unknown time zone in its config")
    assert p.returncode != 0, p.stderr
    first = p.stderr.strip().splitlines()[0] if p.stderr.strip() else ""
    assert "Mars/Olympus_Mons" in first and "mars_*" in first, p.stderr[-2000:]
    found = [m for m in SANITIZER_MARKERS if m in p.stderr]
    assert not found, f"{binary} refusing its config reports {found}:\n{p.stderr[-3000:]}"

"""The persister at the edges (issue 15): no single event stops it.

Each scenario is a short sequence of ordinary writes (through the api, or
straight into Kafka with kcat as an outside producer would) whose effect
PostgreSQL once could not hold: sums past the bigint range (a daily
counter's all-time total, a minute bucket, a non-reset counter's day, the
applier's records folded in one batch), more HLL groups in one batch than
the batch kept room for, event times PostgreSQL cannot store, strings it
refuses, and a table constraint that refuses one counter outright. Each
ends with "a write to another counter still reaches PostgreSQL within
10 s" and `counterctl verify` clean.

The column ranges these rest on are in docs/data-model.md: sums that can
pass int64 are `numeric`, read back as exact integers (the history api
prints them as JSON integers of any size); a live value stays within int64
because Redis refuses to leave it.
"""

import datetime
import json
import os
import subprocess
import tempfile
import time
import uuid

from conftest import (
    CATCH_UP_S,
    api_history,
    api_set,
    avoid_local_midnight,
    counter_name,
    log_text_since,
    metrics_at,
    pg_daily,
    redis_window,
    rfc3339,
    sql_literal,
    unique_name,
    wait_pg_total,
    wait_until,
)
from test_applier import dlq_kafka, event, now_ms, produce, produce_events
from test_verify import Verify, counterctl

UTC = datetime.timezone.utc
MAX = 2**63 - 1
MIN = -(2**63)
P53 = 2**53
MINUTE = datetime.timedelta(minutes=1)
DAY = datetime.timedelta(days=1)
FLOWS_WITHIN_S = 10


# ------------------------------------------------------------- helpers ---


def persister_metric(name):
    port = os.environ.get("COUNTER_PERSISTER_METRICS_PORT")
    assert port, "COUNTER_PERSISTER_METRICS_PORT is not set: the stack's counter.env has it"
    return metrics_at(int(port)).get(name, 0.0)


def still_flows(api, pg):
    """A write to another counter reaches PostgreSQL within 10 s."""
    other = unique_name("it.edge.other")
    r = api.incr(other, 7)
    assert r.status == 200, (r.status, r.json)
    wait_pg_total(pg, other, 7, timeout=FLOWS_WITHIN_S)


def verify_clean():
    v = Verify(counterctl("verify", "--wait-s", "60"))
    v.check_contract()
    assert v.rc == 0, str(v)


def the_end(api, pg):
    still_flows(api, pg)
    verify_clean()


def pg_value(pg, sql):
    rows = pg.query(sql)
    return int(rows[0][0]) if rows else None


def wait_pg(pg, sql, expected, timeout=CATCH_UP_S):
    seen = []

    def check():
        seen.append(pg_value(pg, sql))
        return seen[-1] == expected

    try:
        wait_until(check, timeout, 0.2)
    except AssertionError:
        raise AssertionError(f"{sql}: {seen[-1]!r}, expected {expected}") from None


def bucket(pg, name, when):
    return pg_value(
        pg,
        "SELECT value FROM counter_buckets WHERE name = "
        f"{sql_literal(name)} AND bucket_start = {sql_literal(rfc3339(when))}",
    )


def history(api, name, start, end, interval):
    r = api_history(api, name, interval=interval, **{"from": rfc3339(start), "to": rfc3339(end)})
    assert r.status == 200, (r.status, r.json)
    return r.json["points"]


def history_at(api, name, start, interval="minute", span=MINUTE):
    """The value of the one period starting at `start` (UTC)."""
    points = history(api, name, start, start + span, interval)
    assert len(points) == 1, points
    return points[0]["value"]


def minute_of(dt):
    return dt.replace(second=0, microsecond=0)


def ok(r):
    assert r.status == 200, (r.status, r.json)
    return r.json


def produce_bytes(stack, lines):
    """Produces raw lines (bytes: key TAB payload) with kcat, byte for byte."""
    with tempfile.NamedTemporaryFile("wb", prefix="edges-", delete=False) as f:
        path = f.name
        for line in lines:
            assert b"\n" not in line
            f.write(line + b"\n")
    try:
        p = subprocess.run(
            ["kcat", "-P", "-b", stack.kafka_bootstrap, "-t", stack.kafka_input_topic, "-K", "\t",
             "-X", "partitioner=murmur2_random", "-l", path],
            capture_output=True, timeout=120)
        assert p.returncode == 0, p.stderr[-2000:]
    finally:
        os.unlink(path)


def dlq_messages(stack, since):
    """The dead letters after offsets `since`, each kcat's -J envelope with
    "headers_dict"; payloads that are not UTF-8 come back with U+FFFD."""
    msgs = []
    for partition, start in since.items():
        p = subprocess.run(
            ["kcat", "-C", "-q", "-b", stack.kafka_bootstrap, "-t", stack.kafka_topic + ".dlq",
             "-p", str(partition), "-o", str(start), "-e", "-J"],
            capture_output=True, timeout=120)
        assert p.returncode == 0, p.stderr[-2000:]
        for line in p.stdout.decode("utf-8", "replace").split("\n"):
            if line.strip():
                m = json.loads(line)
                h = m.get("headers") or []
                m["headers_dict"] = dict(zip(h[0::2], h[1::2]))
                msgs.append(m)
    return msgs


def dead_letters(stack, since, keys, count, timeout=60):
    """The dead letters of `keys` after offsets `since`, once `count` are there."""
    found = []

    def enough():
        found[:] = [m for m in dlq_messages(stack, since) if m["key"] in keys]
        return len(found) >= count

    wait_until(enough, timeout, 0.5, f"{count} dead letters of {sorted(keys)}")
    return found


# ------------------------------------------------ sums past the bigint ---


def test_a_daily_counters_total_beyond_int64(api, pg):
    """The issue's reproduction: MAX today and MAX yesterday on a daily
    counter. Each window holds MAX; the all-time total is 2 * MAX."""
    avoid_local_midnight(UTC)
    name = counter_name("daily_edge_")
    now = datetime.datetime.now(UTC)
    assert ok(api.incr(name, MAX))["current_value"] == MAX
    assert ok(api.incr(name, MAX, timestamp=rfc3339(now - DAY)))["current_value"] == MAX

    wait_pg_total(pg, name, 2 * MAX)
    today, yesterday = now.date(), (now - DAY).date()
    assert pg_daily(pg, name) == {today.isoformat(): MAX, yesterday.isoformat(): MAX}
    midnight = datetime.datetime.combine(yesterday, datetime.time(0), tzinfo=UTC)
    days = history(api, name, midnight, midnight + 2 * DAY, "day")
    assert [p["value"] for p in days] == [MAX, MAX], days
    assert api.get(name).json["value"] == MAX
    the_end(api, pg)


def test_a_minute_bucket_of_two_max(api, pg):
    """Decrement by MAX now, then increment by MAX twice in one earlier
    minute: Redis goes -MAX, 0, MAX; that minute's bucket is 2 * MAX."""
    name = unique_name("it.edge.bucket")
    now = datetime.datetime.now(UTC)
    earlier = minute_of(now - 10 * MINUTE) + datetime.timedelta(seconds=30)
    assert ok(api.decr(name, MAX))["current_value"] == -MAX
    assert ok(api.incr(name, MAX, timestamp=rfc3339(earlier)))["current_value"] == 0
    assert ok(api.incr(name, MAX, timestamp=rfc3339(earlier)))["current_value"] == MAX

    wait_pg_total(pg, name, MAX)
    assert bucket(pg, name, minute_of(earlier)) == 2 * MAX
    assert history_at(api, name, minute_of(earlier)) == 2 * MAX
    hour = earlier.replace(minute=0, second=0, microsecond=0)
    # the hour holds the -MAX too when "now" is in it
    assert history_at(api, name, hour, "hour", datetime.timedelta(hours=1)) in (2 * MAX, MAX)
    the_end(api, pg)


def test_a_non_reset_counters_day_beyond_int64(api, pg):
    """-MAX yesterday, +MAX twice today: the counter's day row for today
    (its net change that day) is 2 * MAX, and so is the day's history."""
    avoid_local_midnight(UTC)
    name = unique_name("it.edge.day")
    now = datetime.datetime.now(UTC)
    assert ok(api.decr(name, MAX, timestamp=rfc3339(now - DAY)))["current_value"] == -MAX
    assert ok(api.incr(name, MAX))["current_value"] == 0
    assert ok(api.incr(name, MAX))["current_value"] == MAX

    wait_pg_total(pg, name, MAX)
    assert pg_daily(pg, name) == {now.date().isoformat(): 2 * MAX, (now - DAY).date().isoformat(): -MAX}
    midnight = datetime.datetime.combine(now.date(), datetime.time(0), tzinfo=UTC)
    assert history_at(api, name, midnight, "day", DAY) == 2 * MAX
    the_end(api, pg)


def test_the_appliers_records_beyond_int64_in_one_batch(api, pg, stack):
    """The same through Kafka: the applier's three records are folded in
    one batch of records, whose minute sum passes int64."""
    name = unique_name("it.edge.records")
    t = now_ms()
    earlier = (t // 60000 - 10) * 60000 + 30000
    produce_events(stack, [event(name, -MAX, ts=t), event(name, MAX, ts=earlier), event(name, MAX, ts=earlier)])

    wait_pg_total(pg, name, MAX)
    when = datetime.datetime.fromtimestamp(earlier // 60000 * 60, UTC)
    assert bucket(pg, name, when) == 2 * MAX
    assert history_at(api, name, when) == 2 * MAX
    the_end(api, pg)


def test_more_hll_groups_in_one_batch_than_it_had_room_for(api, pg, stack):
    """200 approximate unique counters, one user each, straight into
    Kafka: the applier's records arrive together, 200 HLL groups."""
    names = [counter_name("it_hll_") for _ in range(200)]
    produce_events(stack, [event(n, 1, user_id="u1") for n in names])
    for n in names:
        wait_pg_total(pg, n, 1)
    the_end(api, pg)


# ------------------------------------- what no store can hold, refused ---


def test_external_event_times_postgresql_cannot_store_go_to_the_dlq(api, pg, stack, redis):
    """ts after 9999-12-30T23:59:59.999Z (year 10000, 9e18 ms): the applier
    dead-letters them and applies nothing. The last instant accepted
    counts, and the history maintenance takes its month. (The first, 1 ms,
    is left to the unit tests: a bucket of 1970 outlives the retention
    only until the persister's next retention run, which a replay makes
    at once.)"""
    name = unique_name("it.edge.ts")
    good = unique_name("it.edge.ts-good")
    dlq_since = dlq_kafka(stack).end_offsets()
    bad = {
        "year 10000": 253402300800000,
        "9e18": 9 * 10**18,
        "max": MAX,
        "9999-12-31T00:00:00Z": 253402214400000,
    }
    evs = [event(name, 5, id=f"ts-{k.replace(' ', '-')}-{uuid.uuid4().hex[:8]}", ts=v) for k, v in bad.items()]
    edges = [event(good, 2, ts=253402214399999)]
    produce_events(stack, evs + edges)

    dead = dead_letters(stack, dlq_since, {name}, len(bad))
    assert len(dead) == len(bad), [(m["headers_dict"], m["payload"][:80]) for m in dead]
    assert all("ts" in m["headers_dict"]["error"] for m in dead), [m["headers_dict"] for m in dead]
    wait_pg_total(pg, good, 2)
    assert pg_daily(pg, good) == {"9999-12-30": 2}
    assert api.get(name).json["value"] == 0
    assert redis.value(name) is None
    assert pg.total(name) is None
    p = counterctl("partitions")
    assert p.returncode == 0, p.stdout + p.stderr
    the_end(api, pg)


def test_strings_postgresql_refuses_never_reach_it(api, pg, stack):
    """NUL, lone surrogates and ill-formed UTF-8 in user_id: refused by the
    api (400 naming the field) and dead-lettered by the applier. Metadata
    is not stored in PostgreSQL: a NUL in it is carried, and counts."""
    uniq = counter_name("it_unique_")
    plain = unique_name("it.edge.meta")
    r = api.incr(uniq, user_id="a\u0000b")
    assert r.status == 400 and r.json["error"]["field"] == "user_id", (r.status, r.json)
    r = api.incr(uniq, user_id="\ud800x")  # a lone surrogate: not JSON to us
    assert r.status == 400 and r.json["error"]["code"] == "invalid_json", (r.status, r.json)
    r = api.request("POST", f"/api/v1/counter/{uniq}/increment", b'{"user_id": "a\xffb"}')
    assert r.status == 400, (r.status, r.json)

    dlq_since = dlq_kafka(stack).end_offsets()
    tag = uuid.uuid4().hex[:8]
    lines = [
        f'{uniq}\t{{"v":1,"id":"nul-{tag}","counter":"{uniq}","delta":1,"user_id":"a\\u0000b","ts":{now_ms()}}}'.encode(),
        f'{uniq}\t{{"v":1,"id":"sur-{tag}","counter":"{uniq}","delta":1,"user_id":"\\ud800x","ts":{now_ms()}}}'.encode(),
        uniq.encode() + b'\t{"v":1,"id":"utf-' + tag.encode() + b'","counter":"' + uniq.encode()
        + b'","delta":1,"user_id":"a\xff\xfeb","ts":' + str(now_ms()).encode() + b"}",
        f'{plain}\t{{"v":1,"id":"meta-{tag}","counter":"{plain}","delta":4,"ts":{now_ms()},'
        f'"metadata":{{"note":"a\\u0000b"}}}}'.encode(),
    ]
    produce_bytes(stack, lines)
    dead = dead_letters(stack, dlq_since, {uniq}, 3)
    assert len(dead) == 3, [m["headers_dict"] for m in dead]
    wait_pg_total(pg, plain, 4)
    assert pg.total(uniq) is None
    ok(api.incr(uniq, user_id="u-ok"))
    wait_pg_total(pg, uniq, 1)
    the_end(api, pg)


# ---------------------------------------- the safety net: quarantine ---


def test_an_event_postgresql_refuses_is_quarantined_and_the_rest_flows(api, pg, stack, redis):
    """A CHECK constraint refuses two counters (one written through the
    api, one straight into Kafka). Their events go to the dead-letter topic
    with PostgreSQL's reason, counted and logged once each; every other
    counter reaches PostgreSQL within 10 s; once the constraint is gone,
    the refused counters' later writes flow too."""
    bad_api = unique_name("it.edge.refused-api")
    bad_ext = unique_name("it.edge.refused-ext")
    goods = [unique_name("it.edge.fine") for _ in range(20)]
    constraint = f"it_edge_refuse_{uuid.uuid4().hex[:8]}"
    log_path = stack.log_path("counter-persister")
    log_at = os.path.getsize(log_path)
    quarantined = persister_metric("counter_persister_quarantined_total")
    dlq_since = dlq_kafka(stack).end_offsets()
    pg.query(
        f"ALTER TABLE counter_totals ADD CONSTRAINT {constraint} CHECK "
        f"(name NOT IN ({sql_literal(bad_api)}, {sql_literal(bad_ext)})) NOT VALID"
    )
    try:
        for i, g in enumerate(goods):
            ok(api.incr(g, i + 1))
            if i == 5:
                ok(api.incr(bad_api, 5))
                produce_events(stack, [event(bad_ext, 6)])
        started = time.monotonic()
        for i, g in enumerate(goods):
            wait_pg_total(pg, g, i + 1, timeout=max(0.5, FLOWS_WITHIN_S - (time.monotonic() - started)))
        still_flows(api, pg)

        dead = dead_letters(stack, dlq_since, {bad_api, bad_ext}, 2)
        assert sorted(m["key"] for m in dead) == sorted([bad_api, bad_ext]), dead
        for m in dead:
            assert constraint in m["headers_dict"]["error"], m["headers_dict"]
            assert "23514" in m["headers_dict"]["error"], m["headers_dict"]
        wait_until(lambda: persister_metric("counter_persister_quarantined_total") >= quarantined + 2, 10)
        assert persister_metric("counter_persister_quarantined_total") == quarantined + 2
        lines = [l for l in log_text_since(log_path, log_at).splitlines() if "quarantined" in l]
        assert len(lines) == 2, lines
        assert pg.total(bad_api) is None and pg.total(bad_ext) is None
    finally:
        pg.query(f"ALTER TABLE counter_totals DROP CONSTRAINT IF EXISTS {constraint}")

    ok(api.incr(bad_api, 1))
    produce_events(stack, [event(bad_ext, 2)])
    wait_pg_total(pg, bad_api, 1, timeout=FLOWS_WITHIN_S)
    wait_pg_total(pg, bad_ext, 2, timeout=30)
    # What was quarantined is missing from PostgreSQL, and verify says so.
    v = Verify(counterctl("verify", "--wait-s", "60"))
    v.check_contract()
    assert v.about({bad_api, bad_ext}) == {(bad_api, None): ("6", "1"), (bad_ext, None): ("8", "2")}, str(v)
    # Listed for replays, which skip them too (rebuild-postgres stays equal).
    rows = pg.query("SELECT reason FROM quarantined_events WHERE reason LIKE "
                    f"{sql_literal('%' + constraint + '%')}")
    assert len(rows) == 2 and all("23514" in r[0] for r in rows), rows
    # The operator settles them: here, Redis takes PostgreSQL's values.
    redis.cli("SET", redis.key(bad_api), 1)
    redis.cli("SET", redis.key(bad_ext), 2)
    the_end(api, pg)


# --------------------------------------------- int64 edges, every kind ---


def _history_sum(api, name, since):
    end = datetime.datetime.now(UTC) + 2 * MINUTE
    return sum(p["value"] for p in history(api, name, minute_of(since), minute_of(end), "minute"))


def test_int64_edges_of_a_counter(api, pg):
    name = unique_name("it.edge.kind-counter")
    start = datetime.datetime.now(UTC)
    steps = [  # (op, value, expected value or HTTP status)
        ("incr", P53 - 1, P53 - 1), ("incr", 1, P53), ("incr", 1, P53 + 1), ("check", None, P53 + 1),
        ("incr", MAX - P53 - 2, MAX - 1), ("incr", 1, MAX), ("incr", 1, 422), ("check", None, MAX),
        ("decr", MAX, 0), ("decr", P53 + 1, -(P53 + 1)), ("check", None, -(P53 + 1)),
        ("decr", MAX - P53 - 1, -MAX), ("decr", 1, MIN), ("decr", 1, 422), ("check", None, MIN),
    ]
    for op, value, want in steps:
        if op == "check":
            wait_pg_total(pg, name, want)
            assert api.get(name).json["value"] == want
            continue
        r = api.incr(name, value) if op == "incr" else api.decr(name, value)
        if want == 422:
            assert r.status == 422 and r.json["error"]["code"] == "value_out_of_range", (r.status, r.json)
        else:
            assert ok(r)["current_value"] == want, (op, value, r.json)
    for too_big in (2**63, 2**64):
        r = api.incr(name, too_big)
        assert r.status == 400 and r.json["error"]["field"] == "value", (r.status, r.json)
    assert _history_sum(api, name, start) == MIN
    the_end(api, pg)


def test_int64_edges_of_a_gauge(api, pg):
    name = counter_name("it_free_")
    start = datetime.datetime.now(UTC)
    # each set's difference from the one before stays within int64
    for v in (P53 - 1, P53, P53 + 1, MAX - 1, MAX, 0, -(P53 - 1), -P53, -(P53 + 1), MIN + 1, MIN):
        assert ok(api_set(api, name, v))["current_value"] == v
        wait_pg_total(pg, name, v)
    r = api.decr(name, 1)
    assert r.status == 422 and r.json["error"]["code"] == "value_out_of_range", (r.status, r.json)
    assert ok(api.incr(name, MAX))["current_value"] == -1
    assert ok(api.incr(name, MAX))["current_value"] == MAX - 1
    assert ok(api.incr(name, 1))["current_value"] == MAX
    r = api.incr(name, 1)
    assert r.status == 422, (r.status, r.json)
    wait_pg_total(pg, name, MAX)
    assert _history_sum(api, name, start) == MAX
    the_end(api, pg)


def test_int64_edges_of_a_unique_counter(api, pg, stack):
    """A unique counter counts users, +1 each: values near the edges are
    refused up front, by the api and by the applier."""
    name = counter_name("it_unique_")
    start = datetime.datetime.now(UTC)
    for v in (P53 + 1, MAX, 2**63):
        r = api.incr(name, v, user_id="u1")
        assert r.status == 400 and r.json["error"]["field"] == "value", (v, r.status, r.json)
    dlq_since = dlq_kafka(stack).end_offsets()
    produce_events(stack, [event(name, d, user_id="u2") for d in (P53 + 1, MAX, MIN)])
    dead = dead_letters(stack, dlq_since, {name}, 3)
    assert all("delta" in m["headers_dict"]["error"] for m in dead), [m["headers_dict"] for m in dead]
    ok(api.incr(name, user_id="u1"))
    produce_events(stack, [event(name, 1, user_id="u3")])
    wait_pg_total(pg, name, 2)
    assert _history_sum(api, name, start) == 2
    the_end(api, pg)


def test_int64_edges_of_a_daily_counter(api, pg, redis):
    avoid_local_midnight(UTC)
    name = counter_name("daily_edge_")
    now = datetime.datetime.now(UTC)
    today, yesterday = now.date(), (now - DAY).date()
    late = rfc3339(now - DAY)
    assert ok(api.incr(name, MAX))["current_value"] == MAX
    wait_pg(pg, f"SELECT value FROM counter_daily WHERE name = {sql_literal(name)} AND day = '{today}'", MAX)
    assert ok(api.decr(name, MAX))["current_value"] == 0
    assert ok(api.decr(name, MAX))["current_value"] == -MAX
    assert ok(api.decr(name, 1))["current_value"] == MIN
    r = api.decr(name, 1)
    assert r.status == 422, (r.status, r.json)
    assert ok(api.incr(name, P53 + 1, timestamp=late))["current_value"] == P53 + 1
    assert ok(api.incr(name, MAX - P53 - 1, timestamp=late))["current_value"] == MAX
    r = api.incr(name, 1, timestamp=late)
    assert r.status == 422, (r.status, r.json)

    wait_pg_total(pg, name, -1)
    assert pg_daily(pg, name) == {today.isoformat(): MIN, yesterday.isoformat(): MAX}
    assert redis_window(redis, name, today) == MIN and redis_window(redis, name, yesterday) == MAX
    midnight = datetime.datetime.combine(yesterday, datetime.time(0), tzinfo=UTC)
    assert [p["value"] for p in history(api, name, midnight, midnight + 2 * DAY, "day")] == [MAX, MIN]
    assert api.get(name).json["value"] == MIN
    the_end(api, pg)


def test_a_users_first_sighting_is_the_first_in_the_log(api, pg):
    """A keyed write (counted through the id check) and an unkeyed one of the
    same user and day, in one batch: the user counts from the first in the
    log, whatever path each takes, so that a replay of the log, cut into
    other batches, gives the same row (G4). They used to count from the
    unkeyed one whenever both shared a batch."""
    name = counter_name("it_unique_first")
    t_first = (datetime.datetime.now(datetime.timezone.utc)
               - datetime.timedelta(seconds=90)).replace(microsecond=0)
    if t_first.date() != datetime.datetime.now(datetime.timezone.utc).date():
        t_first = datetime.datetime.now(datetime.timezone.utc).replace(
            hour=0, minute=0, second=1, microsecond=0)
    keyed = api.write(name, "increment", {"user_id": "u1", "timestamp": rfc3339(t_first)},
                      headers={"Idempotency-Key": "k-" + uuid.uuid4().hex})
    plain = api.incr(name, user_id="u1")
    assert keyed.status == 200 and plain.status == 200
    assert plain.json.get("counted") is False
    wait_pg_total(pg, name, 1)
    rows = pg.query(f"SELECT first_seen_ms FROM counter_unique_users WHERE name = '{name}'")
    assert rows == [[str(int(t_first.timestamp() * 1000))]], rows

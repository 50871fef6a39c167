"""Adversarial sequences of ordinary writes (issue 15): overflow paths
through every store, bound games while Kafka stalls, a key reused in every
way a client can, and a replay across midnight.

Each ends as every adversarial test must: a write to another counter still
reaches PostgreSQL within 10 s, and `counterctl verify` exits 0.
"""

import datetime
import os
import signal
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

from conftest import counter_name, freeze, rfc3339, unique_name, wait_pg_total, wait_until
from test_http_edges import pipeline_still_flows

MAX = 2**63 - 1
MIN = -(2**63)


def _key():
    return "k-" + uuid.uuid4().hex


def _keyed(api, name, key, body, op="increment"):
    return api.write(name, op, body, headers={"Idempotency-Key": key})


# ------------------------------------------------------------- overflow ---


def test_overflow_paths_through_every_store(api, pg):
    """Sums no aggregate of bigint could hold: a daily counter at MAX today
    and yesterday; a minute bucket of 2*MAX on a counter that goes -MAX,
    +MAX, +MAX; then each edge of the range once more, refused."""
    daily = counter_name("daily_adv_of")
    yesterday = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=1)
    assert api.incr(daily, MAX).status == 200
    assert api.write(daily, "increment",
                     {"value": MAX, "timestamp": rfc3339(yesterday)}).status == 200
    r = api.incr(daily, 1)
    assert r.status == 422 and r.json["error"]["code"] == "value_out_of_range", r.json

    plain = counter_name("adv_of")
    earlier = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=3)
    assert api.decr(plain, MAX).status == 200
    for _ in range(2):
        assert api.write(plain, "increment",
                         {"value": MAX, "timestamp": rfc3339(earlier)}).status == 200
    assert api.value(plain) == MAX
    r = api.incr(plain, 1)
    assert r.status == 422, r.json
    wait_pg_total(pg, plain, MAX)
    wait_pg_total(pg, daily, 2 * MAX)  # the daily counter's all-time total
    pipeline_still_flows(api, pg)


# ---------------------------------------------------------- bound games ---


def test_bound_games_while_kafka_stalls(api, pg, redis, stack):
    """A gauge with min 0, the broker frozen: increments wait for Kafka,
    so no decrement may rest on them; reads never show it below 0. Then
    the broker resumes, the increments are confirmed, and exactly as many
    decrements as there were increments fit."""
    name = counter_name("it_gauge_adv")  # min 0, max 100
    pid = stack.pid("kafka")
    freeze(pid)
    try:
        with ThreadPoolExecutor(20) as ex:
            ups = list(ex.map(lambda _: api.incr(name, 1, timeout=30), range(10)))
            downs = list(ex.map(lambda _: api.decr(name, 1, timeout=30), range(20)))
        assert all(r.status == 503 for r in ups), [r.status for r in ups]
        assert all(r.status == 409 for r in downs), [(r.status, r.json) for r in downs]
        assert redis.value(name) == 10
    finally:
        os.kill(pid, signal.SIGCONT)
    wait_until(lambda: redis.cli("EXISTS", "{c:%s}:p" % name) == "0", 60, 0.2,
               "the increments confirmed once the broker is back")
    with ThreadPoolExecutor(20) as ex:
        downs = list(ex.map(lambda _: api.decr(name, 1), range(20)))
    assert sorted(r.status for r in downs) == [200] * 10 + [409] * 10
    assert api.value(name) == 0
    wait_pg_total(pg, name, 0)
    pipeline_still_flows(api, pg)


def test_a_gauge_set_at_the_edges(api, pg):
    """set at and past the int64 edges, and the moves around them."""
    name = counter_name("it_free_adv")
    # each step's difference (what its event carries) fits in int64
    for target in (MAX, 0, MIN, -1, 2**53 + 1, -(2**53) - 1, 0, MIN):
        r = api.write(name, "set", {"value": target})
        assert r.status == 200 and r.json["current_value"] == target, r.json
    for target in (MAX, 0):  # from MIN: 2^64 - 1 and 2^63, refused
        r = api.write(name, "set", {"value": target})
        assert r.status == 422 and r.json["error"]["code"] == "value_out_of_range", r.json
    for bad in (MAX + 1, MIN - 1):
        r = api.write(name, "set", {"value": bad})
        assert r.status == 400 and r.json["error"]["field"] == "value", r.json
    assert api.value(name) == MIN
    wait_pg_total(pg, name, MIN)
    pipeline_still_flows(api, pg)


# ------------------------------------------------------------ key reuse ---


def test_a_key_reused_every_way(api, pg, redis):
    """One key: on another counter (keys are per counter: a new write), with
    another body (422), with another operation (422), repeated at once (one
    effect), and again after its time is up (a new write, counted again)."""
    a, b = counter_name("adv_key"), counter_name("adv_key")
    key = _key()
    first = _keyed(api, a, key, {"value": 2})
    assert first.status == 200
    assert _keyed(api, b, key, {"value": 2}).status == 200
    for body, op in (({"value": 3}, "increment"), ({"value": 2}, "decrement")):
        r = _keyed(api, a, key, body, op)
        assert r.status == 422 and r.json["error"]["code"] == "idempotency_key_reused", r.json
    with ThreadPoolExecutor(16) as ex:
        again = list(ex.map(lambda _: _keyed(api, a, key, {"value": 2}), range(32)))
    assert {r.status for r in again} <= {200, 409}, [r.status for r in again]
    assert all(r.json == first.json for r in again if r.status == 200)
    assert api.value(a) == 2 and api.value(b) == 2
    # its time is up (Redis expires the guard): a new write everywhere
    assert redis.cli("DEL", f"{{c:{a}}}:id:{key}") == "1"
    time.sleep(0.01)
    r = _keyed(api, a, key, {"value": 2})
    assert r.status == 200 and r.headers.get("Idempotent-Replayed") is None
    assert api.value(a) == 4
    wait_pg_total(pg, a, 4)
    wait_pg_total(pg, b, 2)
    pipeline_still_flows(api, pg)


def test_a_replay_across_midnight_answers_the_first_day(api, pg, redis):
    """A daily counter's write just before midnight, retried after it: the
    replay answers the first attempt's period, not the retry's day, and
    applies nothing. The first attempt is made a day old in its record, as
    if midnight had passed since."""
    name = counter_name("daily_adv_mid")
    key = _key()
    first = _keyed(api, name, key, {"value": 1})
    assert first.status == 200
    today = first.json["period"]
    guard = f"{{c:{name}}}:id:{key}"
    # the record becomes done once the api's finish reaches Redis, which
    # goes with the other finishes of its loop turn, after the answer
    wait_until(lambda: redis.cli("GET", guard).startswith("AD|"), 10, 0.02,
               "the first attempt's record done")
    fields = redis.cli("GET", guard).split("|")
    # AD|lease|token|fingerprint|outcome|value|applied|event ms|gen|seen
    yesterday_ms = int(fields[7]) - 86400 * 1000
    fields[7] = str(yesterday_ms)
    assert redis.cli("SET", guard, "|".join(fields), "KEEPTTL") == "OK"
    again = _keyed(api, name, key, {"value": 1})
    assert again.status == 200 and again.headers.get("Idempotent-Replayed") == "true"
    day = datetime.datetime.fromtimestamp(yesterday_ms / 1000, datetime.timezone.utc).date()
    assert again.json["period"] == day.isoformat() != today, again.json
    assert api.value(name) == 1
    wait_pg_total(pg, name, 1)
    pipeline_still_flows(api, pg)

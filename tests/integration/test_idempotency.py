"""Idempotency-Key on writes (G3): the key is the event id; a repeat gets
the first answer with Idempotent-Replayed: true and changes nothing; the
same key on a different request is refused; a retry after a crash that
left the first attempt pending finishes it, and PostgreSQL counts the
event once however often it was logged. Also the Redis restart that loses
its data: the api keeps off Redis until the applier has restored it."""
import json
import os
import shutil
import subprocess
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

from conftest import unique_name, wait_pg_total, wait_until


def _key():
    return f"k-{uuid.uuid4().hex}"


def _write(api, name, key, body=None, op="increment"):
    return api.write(name, op, body if body is not None else {"value": 1},
                     headers={"Idempotency-Key": key})


def _guard(redis, name, key):
    return redis.cli("GET", f"{{c:{name}}}:id:{key}").strip()


def test_repeat_replays_the_first_answer_and_applies_once(api, redis, pg, kafka):
    name = unique_name("it.idem")
    key = _key()
    since = kafka.end_offsets()
    first = _write(api, name, key, {"value": 5})
    assert first.status == 200, first.json
    assert first.json["event_id"] == key
    assert first.headers.get("Idempotent-Replayed") is None
    assert api.incr(name, 2).status == 200  # a later, different write
    for _ in range(3):
        again = _write(api, name, key, {"value": 5})
        assert again.status == 200, again.json
        assert again.headers.get("Idempotent-Replayed") == "true"
        # the first answer, not the value now
        assert again.json == first.json
    assert api.value(name) == 7
    msgs = kafka.messages(since, key=name)
    keyed = [m for m in msgs if m["event"]["id"] == key]
    assert len(keyed) == 1, msgs
    h = keyed[0]["headers_dict"]
    # counted once per (counter, key, generation: when the key was first used)
    assert h["origin"] == "api" and h["epoch"] == redis.epoch(), h
    assert abs(int(h["dedup"]) - int(time.time() * 1000)) < 60000, h
    # done once the api's finish reaches Redis (with its loop turn's other
    # finishes, after the answer)
    wait_until(lambda: _guard(redis, name, key).startswith("AD|"), 10, 0.02, "the record done")
    wait_pg_total(pg, name, 7)


def test_same_key_different_request_is_refused(api, redis, pg):
    name = unique_name("it.idem")
    key = _key()
    assert _write(api, name, key, {"value": 5}).status == 200
    for body, op in (({"value": 6}, "increment"), ({"value": 5}, "decrement"),
                     ({"value": 5, "metadata": {"a": 1}}, "increment")):
        r = _write(api, name, key, body, op)
        assert r.status == 422, r.json
        assert r.json["error"]["code"] == "idempotency_key_reused"
        assert r.json["error"]["field"] == "Idempotency-Key"
    assert api.value(name) == 5
    # keys belong to a counter: the same key elsewhere is a new request
    other = unique_name("it.idem")
    assert _write(api, other, key, {"value": 6}).status == 200
    assert api.value(other) == 6
    wait_pg_total(pg, name, 5)


def test_invalid_key_is_400_and_applies_nothing(api, redis):
    name = unique_name("it.idem")
    for bad in ("has space", "x" * 129, "tab\there"):
        r = _write(api, name, bad)
        assert r.status == 400, (bad, r.json)
        assert r.json["error"]["code"] == "invalid_header"
        assert r.json["error"]["field"] == "Idempotency-Key"
    assert redis.stored(name) == {}


def test_concurrent_repeats_apply_once(api, redis, pg):
    name = unique_name("it.idem")
    key = _key()

    def one(_):
        return _write(api, name, key, {"value": 3})

    with ThreadPoolExecutor(32) as pool:
        results = list(pool.map(one, range(200)))
    codes = {r.status for r in results}
    assert codes <= {200, 409}, codes
    ok = [r for r in results if r.status == 200]
    assert ok, "no request succeeded"
    assert len({json.dumps(r.json, sort_keys=True) for r in ok}) == 1
    assert sum(1 for r in ok if r.headers.get("Idempotent-Replayed") is None) == 1
    for r in results:
        if r.status == 409:
            assert r.json["error"]["code"] == "request_in_progress"
            assert r.headers.get("Retry-After") == "1"
    assert api.value(name) == 3
    wait_pg_total(pg, name, 3)


def test_pending_first_attempt_is_finished_by_a_retry(api, redis, pg, kafka):
    """What a crash between Redis and Kafka leaves: the value changed, the
    record pending. Within the lease a retry hears 409; after it, the retry
    publishes the event again and replays; PostgreSQL counts it once."""
    name = unique_name("it.idem")
    key = _key()
    first = _write(api, name, key, {"value": 4})
    assert first.status == 200
    wait_pg_total(pg, name, 4)
    record = _guard(redis, name, key)
    assert record.startswith("AD|"), record
    fields = record.split("|")

    # pending, lease in the future: the first attempt may still settle
    fields[0], fields[1] = "AP", str(int(time.time() * 1000) + 60000)
    assert redis.cli("SET", f"{{c:{name}}}:id:{key}", "|".join(fields), "KEEPTTL").strip() == "OK"
    r = _write(api, name, key, {"value": 4})
    assert r.status == 409 and r.json["error"]["code"] == "request_in_progress", r.json

    # pending, lease run out: the first attempt is gone
    since = kafka.end_offsets()
    fields[1] = "1"
    assert redis.cli("SET", f"{{c:{name}}}:id:{key}", "|".join(fields), "KEEPTTL").strip() == "OK"
    r = _write(api, name, key, {"value": 4})
    assert r.status == 200, r.json
    assert r.headers.get("Idempotent-Replayed") == "true"
    assert r.json == first.json
    wait_until(lambda: _guard(redis, name, key).startswith("AD|"), 10, 0.02, "the record done")
    again = [m for m in kafka.messages(since, key=name) if m["event"]["id"] == key]
    assert len(again) == 1 and again[0]["event"]["delta"] == 4, again
    # logged twice, counted once
    assert api.value(name) == 4
    assert api.incr(name, 1).status == 200
    wait_pg_total(pg, name, 5)


def test_unique_counter_replay(api, pg):
    name = unique_name("it_unique_idem")
    key = _key()
    first = _write(api, name, key, {"user_id": "u1"})
    assert first.status == 200 and "counted" not in first.json
    dup = _write(api, name, _key(), {"user_id": "u1"})
    assert dup.status == 200 and dup.json["counted"] is False
    again = _write(api, name, key, {"user_id": "u1"})
    assert again.json == first.json
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert api.value(name) == 1
    wait_pg_total(pg, name, 1)


def test_keyed_write_while_redis_is_down(api, redis, pg, stackctl):
    """Accepted into Kafka (202) twice under one key while Redis is down;
    applied once by the applier; a retry once Redis is back replays."""
    name = unique_name("it.idem")
    key = _key()
    assert api.incr(name, 10).status == 200
    stackctl.stop("redis")
    try:
        wait_until(lambda: api.healthz().json.get("redis") is False, 10, 0.1, "redis seen down")
        for _ in range(2):
            r = _write(api, name, key, {"value": 5})
            assert r.status == 202 and r.json == {"success": True, "applied": False,
                                                  "event_id": key}, r.json
    finally:
        stackctl.start("redis")
    wait_until(lambda: api.get(name).json.get("source") == "redis", 30, 0.1, "redis back")
    wait_until(lambda: api.value(name) == 15, 30, 0.1, "applied by the applier")
    r = _write(api, name, key, {"value": 5})
    assert r.status == 200 and r.headers.get("Idempotent-Replayed") == "true", r.json
    assert r.json["current_value"] == 15
    assert api.value(name) == 15
    wait_pg_total(pg, name, 15)


def test_redis_restarted_empty_is_restored_before_use(api, redis, pg, kafka, stack, stackctl):
    """Redis comes back without its data: the api does not read the empty
    values; it reads PostgreSQL and sends writes through Kafka until the
    applier has restored Redis from PostgreSQL and the log (a new epoch)."""
    name = unique_name("it.idem")
    uniq = unique_name("it_unique_restore")
    key = _key()
    assert _write(api, name, key, {"value": 9}).status == 200
    for u in ("a", "b"):
        assert api.incr(uniq, user_id=u).status == 200
    wait_pg_total(pg, name, 9)
    epoch = redis.epoch()
    assert epoch

    stackctl.kill("redis")
    data = os.path.join(stack.stack_dir, "redis", "appendonlydir")
    shutil.rmtree(data, ignore_errors=True)
    r = api.incr(name, 1)
    assert r.status == 202, r.json
    stackctl.start("redis")
    wait_until(lambda: redis.epoch() not in ("", epoch),
               60, 0.1, "redis restored with a new epoch")
    wait_until(lambda: api.get(name).json.get("source") == "redis", 30, 0.1, "api back on redis")
    wait_until(lambda: api.value(name) == 10, 30, 0.1, "the accepted write applied")
    # the dedup set and the idempotency guard were restored too
    assert api.incr(uniq, user_id="a").json.get("counted") is False
    assert api.value(uniq) == 2
    r = _write(api, name, key, {"value": 9})
    assert r.status == 200 and r.headers.get("Idempotent-Replayed") == "true", r.json
    assert api.value(name) == 10
    wait_pg_total(pg, name, 10)
    wait_pg_total(pg, uniq, 2)


def test_a_key_used_again_after_its_time_is_a_new_write_everywhere(api, redis, pg, kafka):
    """idempotency_ttl_s after its first use a key names a new write: Redis
    forgets it (its guard expires) and applies the repeat; PostgreSQL must
    count it too, not take it for the old one (issue 15, item 1). The
    expiry is simulated by deleting the guard, as Redis does at its TTL."""
    name = unique_name("it.idem")
    key = _key()
    since = kafka.end_offsets()
    assert _write(api, name, key, {"value": 5}).status == 200
    wait_pg_total(pg, name, 5)
    assert redis.cli("DEL", f"{{c:{name}}}:id:{key}") == "1"
    time.sleep(0.01)  # a later generation, to the millisecond
    again = _write(api, name, key, {"value": 5})
    assert again.status == 200 and again.headers.get("Idempotent-Replayed") is None
    assert api.value(name) == 10
    wait_pg_total(pg, name, 10)
    gens = [m["headers_dict"]["dedup"] for m in kafka.messages(since, key=name)]
    assert len(gens) == 2 and gens[0] != gens[1], gens
    rows = pg.query(f"SELECT gen FROM applied_event_ids WHERE name = '{name}' ORDER BY gen")
    assert [r[0] for r in rows] == sorted(gens, key=int), rows


def test_a_restore_remembers_a_key_only_for_the_rest_of_its_time(api, redis, pg, kafka, stack):
    """After a restore, a key whose time is not up replays; one whose time
    is up (its generation more than idempotency_ttl_s ago) is not made a
    guard again, so using it again is a new write, as it is in PostgreSQL."""
    fresh, old = unique_name("it.idem"), unique_name("it.idem")
    k_fresh, k_old = _key(), _key()
    assert _write(api, fresh, k_fresh, {"value": 3}).status == 200
    assert _write(api, old, k_old, {"value": 4}).status == 200
    wait_pg_total(pg, fresh, 3)
    wait_pg_total(pg, old, 4)
    # as if the second key's first use were two days ago
    two_days_ago = int(time.time() * 1000) - 2 * 86400 * 1000
    pg.query(f"UPDATE applied_event_ids SET gen = {two_days_ago} "
             f"WHERE name = '{old}' RETURNING 1")
    epoch = redis.epoch()
    binary = os.path.join(os.environ["BIN_DIR"], "counterctl")
    p = subprocess.run([binary, "rebuild-redis"], capture_output=True, text=True,
                       timeout=300, env=os.environ.copy())
    assert p.returncode == 0, p.stdout + p.stderr
    assert redis.epoch() not in ("", epoch)
    assert _guard(redis, fresh, k_fresh) != ""
    assert _guard(redis, old, k_old) == ""
    r = _write(api, fresh, k_fresh, {"value": 3})
    assert r.status == 200 and r.headers.get("Idempotent-Replayed") == "true", r.json
    r = _write(api, old, k_old, {"value": 4})
    assert r.status == 200 and r.headers.get("Idempotent-Replayed") is None, r.json
    assert api.value(fresh) == 3 and api.value(old) == 8
    wait_pg_total(pg, fresh, 3)
    wait_pg_total(pg, old, 8)

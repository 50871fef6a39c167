"""counterctl rebuild-postgres and rebuild-redis: the stores are functions
of the log (G4), so replaying it reproduces PostgreSQL row for row, and
Redis can be restored from PostgreSQL plus the log after its offsets."""
import json
import os
import re
import subprocess
import time
import uuid

from conftest import counter_name, run, wait_persisted, wait_pg_total, wait_until


def _counterctl(stack, *args, timeout=300):
    binary = os.path.join(os.environ["BIN_DIR"], "counterctl")
    p = subprocess.run([binary, *args], capture_output=True, text=True,
                       timeout=timeout, env=os.environ.copy())
    return p.returncode, p.stdout, p.stderr


def _produce(stack, lines, key):
    run(["kcat", "-P", "-b", stack.kafka_bootstrap, "-t", stack.kafka_input_topic,
         "-k", key, "-X", "partitioner=murmur2_random"],
        input="".join(json.dumps(e) + "\n" for e in lines))


def _seed(api, stack):
    """Writes of every kind, through the api and straight into Kafka."""
    plain = counter_name("it_rb")
    daily = counter_name("it_day_sh_rb")
    uniq = counter_name("it_unique_rb")
    gauge = counter_name("it_gauge_rb")
    for v in (5, 7, 11):
        assert api.incr(plain, v).status == 200
    assert api.decr(plain, 2).status == 200
    for _ in range(3):
        assert api.incr(daily).status == 200
    for u in ("u1", "u2", "u1", "u3"):
        assert api.incr(uniq, user_id=u).status == 200
    assert api.request("POST", f"/api/v1/counter/{gauge}/set",
                       body={"value": 40}).status == 200
    assert api.decr(gauge, 15).status == 200
    now_ms = int(time.time() * 1000)
    ext = [{"v": 1, "id": f"rb-{uuid.uuid4().hex}", "counter": plain,
            "delta": 100, "ts": now_ms} for _ in range(3)]
    _produce(stack, ext + ext[:1], plain)  # one id sent twice counts once
    wait_until(lambda: api.value(plain) == 321, 10, 0.1, "external events applied")
    return {plain: 321, daily: 3, uniq: 3, gauge: 25}


def _settle(pg, kafka, expected):
    """The applier's records are published after the raw events: wait for
    the totals, then for the persister to reach the end of the topic."""
    for name, value in expected.items():
        wait_pg_total(pg, name, value)
    wait_persisted(pg, kafka)


def test_rebuild_postgres_reproduces_the_live_tables(api, pg, kafka, stack):
    expected = _seed(api, stack)
    _settle(pg, kafka, expected)
    for name, value in expected.items():
        assert api.value(name) == value

    rc, out, err = _counterctl(stack, "rebuild-postgres")
    assert rc == 0, out + err
    assert "equal the live ones" in out

    # A corrupted live row is found, with the table and the counter named.
    plain = next(iter(expected))
    pg.query(f"UPDATE counter_totals SET value = value + 1 WHERE name = '{plain}'")
    try:
        rc, out, err = _counterctl(stack, "rebuild-postgres")
        assert rc == 1, out + err
        assert "counter_totals: 2 rows differ" in out
        assert plain in out
    finally:
        pg.query(f"UPDATE counter_totals SET value = value - 1 WHERE name = '{plain}'")
    rc, out, err = _counterctl(stack, "rebuild-postgres")
    assert rc == 0, out + err


def test_rebuild_redis_after_redis_lost_everything(api, redis, pg, kafka, stack, stackctl):
    expected = _seed(api, stack)
    _settle(pg, kafka, expected)
    keys = [k for name in expected for k in redis.cli("--scan", "--pattern", f"{{c:{name}}}*").split()]
    before = {k: redis.cli("--no-raw", "TYPE", k).strip() for k in keys}
    snapshot = {}
    for k, t in before.items():
        if "string" in t and re.search(r"(\}|:d:\d{4}-\d\d-\d\d)$", k):
            snapshot[k] = redis.cli("GET", k).strip()  # a value key
        elif "set" in t and ":u:" in k:
            snapshot[k] = sorted(redis.cli("SMEMBERS", k).split())

    stackctl.stop("counter-api")
    stackctl.stop("counter-applier")
    try:
        redis.cli("FLUSHALL")
        assert redis.cli("DBSIZE").strip() == "0"
        rc, out, err = _counterctl(stack, "rebuild-redis")
        assert rc == 0, out + err
        assert "rebuild-redis: restored" in out
        for k, v in snapshot.items():
            if isinstance(v, list):
                assert sorted(redis.cli("SMEMBERS", k).split()) == v, k
            else:
                assert redis.cli("GET", k).strip() == v, k
    finally:
        stackctl.start("counter-api")
        stackctl.start("counter-applier")
    for name, value in expected.items():
        assert api.value(name) == value, name
    # and the unique counter still dedups the users it had
    uniq = [n for n in expected if n.startswith("it_unique_rb")][0]
    assert api.incr(uniq, user_id="u2").json.get("counted") is False
    rc, out, err = _counterctl(stack, "verify")
    assert rc == 0, out + err


def test_redis_of_the_older_hash_layout_is_restored_before_use(api, redis, pg, kafka, stackctl):
    """A Redis written by a version before layout 2 (each counter one hash,
    fields v and t; the epoch key counter:epoch) is not read: the applier
    finds no epoch markers of layout 3 (counter:epoch:3:{...}), restores the
    counters as two strings each from PostgreSQL and the log, and removes
    counter:epoch and counter:epoch:2; the api then reads and writes the
    new keys."""
    plain = counter_name("it_rb_up")
    daily = counter_name("it_day_sh_rb_up")
    assert api.incr(plain, 8).status == 200
    assert api.incr(daily, 3).status == 200
    wait_pg_total(pg, plain, 8)
    wait_pg_total(pg, daily, 3)
    day = api.get(daily).json["period"]
    window = redis.key(daily) + f":d:{day}"
    stamp = redis.stored(plain)["t"]

    stackctl.stop("counter-api")
    stackctl.stop("counter-applier")
    try:
        # what the older version left: hashes (with a wrong value, to see
        # that nothing reads it) and its epoch, but no markers of layout 3
        for k in (redis.key(plain), redis.key(plain) + ":t", window, window + ":t"):
            redis.cli("DEL", k)
        redis.cli("HSET", redis.key(plain), "v", "1000", "t", stamp)
        redis.cli("HSET", window, "v", "1000", "t", stamp)
        markers = redis.cli("--scan", "--pattern", "counter:epoch:3:*").split()
        for i in range(0, len(markers), 500):
            redis.cli("DEL", *markers[i:i + 500])
        redis.cli("SET", "counter:epoch:2", "1-0000000000000000")
        redis.cli("SET", "counter:epoch", "1-0000000000000000")
    finally:
        stackctl.start("counter-applier")
        stackctl.start("counter-api")
    wait_until(lambda: redis.epoch() != "", 60, 0.1, "the applier's restore (its markers)")
    assert redis.cli("EXISTS", "counter:epoch") == "0"
    assert redis.cli("EXISTS", "counter:epoch:2") == "0"
    for k in (redis.key(plain), window):
        assert redis.cli("TYPE", k) == "string", k
    assert redis.stored(plain) == {"v": "8", "t": stamp}
    assert redis.cli("GET", window) == "3"
    assert int(redis.cli("TTL", window)) > 0 and int(redis.cli("TTL", window + ":t")) > 0
    wait_until(lambda: api.get(plain).json.get("source") == "redis", 30, 0.1, "api on redis")
    assert api.value(plain) == 8 and api.value(daily) == 3
    r = api.incr(plain, 2)
    assert r.status == 200 and r.json["current_value"] == 10, r.json
    assert redis.value(plain) == 10
    wait_pg_total(pg, plain, 10)

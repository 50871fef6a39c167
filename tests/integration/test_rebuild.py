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
    run(["kcat", "-P", "-b", stack.kafka_bootstrap, "-t", stack.kafka_topic,
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

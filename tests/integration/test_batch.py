"""POST /api/v1/counters/batch (issue 17): up to 1000 writes in one
request, each with the guarantees of a single write, answered in order.

Checked end to end on the stack: each item's status and body are what the
single endpoint answers (one item's refusal leaves the others applied);
Redis, the log and PostgreSQL hold exactly the items that were applied;
a body that is not an array of 1..1000 writes is refused whole with
nothing applied; an Idempotency-Key makes a retried batch replay item by
item; values at the int64 edges are exact; while Redis is down the items
go through the log (202) and the applier applies them.
"""

import json
import socket
import uuid
from datetime import datetime, timedelta, timezone

from conftest import rfc3339, unique_name, wait_pg_total, wait_until

BATCH = "/api/v1/counters/batch"
I64_MAX = 2**63 - 1
I64_MIN = -(2**63)


def post_batch(api, items, headers=None, timeout=30):
    return api.request("POST", BATCH, items, headers=headers, timeout=timeout)


def statuses(r):
    assert r.status == 200, (r.status, r.json)
    return [x["status"] for x in r.json["results"]]


def ids_in_log(kafka, since, name):
    return [m["event"]["id"] for m in kafka.messages(since, key=name)]


def test_items_are_answered_in_order_and_each_stands_alone(api, redis, pg, kafka):
    plain, gauge, uniq = (unique_name("it.batch"), unique_name("it_gauge_batch"),
                          unique_name("it_unique_batch"))
    old = rfc3339(datetime.now(timezone.utc) - timedelta(days=400))  # lateness_s: 366 d
    since = kafka.end_offsets()
    r = post_batch(api, [
        {"name": plain, "op": "increment", "value": 5},
        {"name": plain, "op": "decrement", "value": 2},
        {"name": gauge, "op": "set", "value": 40},
        {"name": gauge, "op": "increment", "value": 70},  # past max 100
        {"name": uniq, "op": "increment", "user_id": "u1"},
        {"name": uniq, "op": "increment", "user_id": "u1"},
        {"name": "bad name", "op": "increment"},
        {"name": plain, "op": "multiply"},
        {"name": plain, "op": "set", "value": 1},  # not a gauge
        {"name": plain, "op": "increment", "value": 0},
        {"name": plain, "op": "increment", "vaule": 3},
        {"name": plain, "op": "increment", "timestamp": old},
        [1, 2],
        {"name": uniq, "op": "increment"},  # no user_id
    ])
    assert statuses(r) == [200, 200, 200, 409, 200, 200, 400, 400, 400, 400, 400, 422, 400, 400]
    assert r.json["success"] is False
    res = r.json["results"]
    assert [res[0]["current_value"], res[1]["current_value"]] == [5, 3]
    assert res[2]["current_value"] == 40
    assert res[3]["error"]["code"] == "out_of_bounds" and res[3]["current_value"] == 40
    assert res[4]["current_value"] == 1 and "counted" not in res[4]
    assert res[5]["current_value"] == 1 and res[5]["counted"] is False
    expect = [(6, "invalid_name", "name"), (7, "invalid_field", "op"),
              (8, "invalid_operation", None), (9, "invalid_field", "value"),
              (10, "unknown_field", None), (11, "too_late", "timestamp"),
              (12, "invalid_json", None), (13, "invalid_field", "user_id")]
    for i, code, field in expect:
        assert res[i]["success"] is False and res[i]["error"]["code"] == code, (i, res[i])
        assert res[i]["error"].get("field") == field, (i, res[i])

    assert (redis.value(plain), redis.value(gauge)) == (3, 40)
    assert api.value(uniq) == 1
    # the log holds the applied items, under the ids they were answered with
    assert sorted(ids_in_log(kafka, since, plain)) == sorted([res[0]["event_id"], res[1]["event_id"]])
    assert ids_in_log(kafka, since, gauge) == [res[2]["event_id"]]
    assert len(ids_in_log(kafka, since, uniq)) == 2  # attempts; PostgreSQL dedups
    wait_pg_total(pg, plain, 3)
    wait_pg_total(pg, gauge, 40)
    wait_pg_total(pg, uniq, 1)


def test_all_good_items_make_success_true(api):
    a, b = unique_name("it.batch.ok"), unique_name("it.batch.ok")
    r = post_batch(api, [{"name": a, "op": "increment"}, {"name": b, "op": "increment", "value": 7}])
    assert statuses(r) == [200, 200] and r.json["success"] is True
    assert "Idempotent-Replayed" not in r.headers
    assert (api.value(a), api.value(b)) == (1, 7)


def test_a_body_that_is_not_a_list_of_writes_is_refused_whole(api, redis, kafka):
    name = unique_name("it.batch.whole")
    since = kafka.end_offsets()
    one = {"name": name, "op": "increment"}
    cases = [
        ("not json", "invalid_json"),
        (json.dumps(one), "invalid_json"),  # an object, not a list
        ("[]", "invalid_json"),
        (json.dumps([one] * 1001), "invalid_json"),
        ('[{"name":"%s","op":"increment","value":1,"value":2}]' % name, "invalid_json"),
        ('[{"name":"%s","op":"increment","value":18446744073709551616}]' % name,
         "invalid_json"),
    ]
    for body, code in cases:
        r = post_batch(api, body)
        assert r.status == 400 and r.json["error"]["code"] == code, (body[:60], r.status, r.json)
    r = post_batch(api, [one], headers={"Idempotency-Key": "k" * 124})
    assert r.status == 400 and r.json["error"]["field"] == "Idempotency-Key", r.json
    r = api.request("GET", BATCH)
    assert r.status == 405 and r.headers["Allow"] == "POST", (r.status, r.headers)
    assert redis.value(name) is None
    assert ids_in_log(kafka, since, name) == []


def test_a_batch_over_its_limit_is_refused_before_it_is_read(api, stack, redis):
    """Content-Length past server.max_batch_body_bytes: 413 at once, the
    body never sent. A body of 100 KiB, past the single writes' 16 KiB,
    is a batch's to take."""
    with socket.create_connection((stack.api_host, stack.api_port), timeout=10) as s:
        s.sendall(b"POST " + BATCH.encode() + b" HTTP/1.1\r\nHost: x\r\n"
                  b"Content-Length: 1048577\r\n\r\n")
        data = b""
        while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413"), head
    assert json.loads(body)["error"]["code"] == "body_too_large"

    name = unique_name("it.batch.big")
    pad = "x" * 100
    items = [{"name": name, "op": "increment", "metadata": {"pad": pad}}] * 900
    r = post_batch(api, items)
    assert len(json.dumps(items)) > 100 * 1024
    assert statuses(r) == [200] * 900
    assert redis.value(name) == 900


def test_a_keyed_batch_replays_item_by_item(api, pg, kafka):
    a, b = unique_name("it.batch.key"), unique_name("it.batch.key")
    key = f"b-{uuid.uuid4().hex}"
    items = [{"name": a, "op": "increment", "value": 1},
             {"name": b, "op": "increment", "value": 2},
             {"name": a, "op": "increment", "value": 3}]
    since = kafka.end_offsets()
    first = post_batch(api, items, headers={"Idempotency-Key": key})
    assert statuses(first) == [200, 200, 200]
    assert [x["event_id"] for x in first.json["results"]] == [f"{key}#{i}" for i in range(3)]
    again = post_batch(api, items, headers={"Idempotency-Key": key})
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert again.json == first.json
    other = post_batch(api, items[:2] + [{"name": a, "op": "increment", "value": 4}],
                       headers={"Idempotency-Key": key})
    assert statuses(other) == [422, 422, 422]
    assert {x["error"]["code"] for x in other.json["results"]} == {"idempotency_key_reused"}
    assert (api.value(a), api.value(b)) == (4, 2)
    assert sorted(ids_in_log(kafka, since, a)) == [f"{key}#0", f"{key}#2"]
    wait_pg_total(pg, a, 4)
    wait_pg_total(pg, b, 2)


def test_values_at_the_int64_edges_are_exact(api, redis):
    """Items of one batch to one counter are judged together, as concurrent
    writes are: each must keep the counter in range whether or not the
    others still pending succeed. So the sequence goes in several."""
    g = unique_name("it_free_batch")
    big = 2**53 + 1

    def batch(*items):
        r = post_batch(api, [dict(name=g, op=op, value=v) for op, v in items])
        return statuses(r), r.json["results"]

    st, res = batch(("set", I64_MAX), ("increment", 1))
    assert st == [200, 422] and res[0]["current_value"] == I64_MAX
    assert res[1]["error"]["code"] == "value_out_of_range"
    st, res = batch(("set", -1))
    assert st == [200] and res[0]["current_value"] == -1
    # the event carries the difference of a set: 2^64 - 1 does not fit
    st, res = batch(("set", I64_MIN), ("decrement", 1), ("set", I64_MAX))
    assert st == [200, 422, 422] and res[0]["current_value"] == I64_MIN
    st, res = batch(("increment", I64_MAX), ("set", big))
    assert st == [200, 200] and [x["current_value"] for x in res] == [-1, big]
    st, res = batch(("increment", 2), ("set", I64_MAX + 1), ("decrement", 2**53))
    assert st == [200, 400, 200]
    assert res[0]["current_value"] == big + 2 and res[2]["current_value"] == 3
    assert redis.value(g) == 3


def test_while_redis_is_down_items_go_through_the_log(api, redis, pg, stackctl):
    name, gauge = unique_name("it.batch.down"), unique_name("it_free_batch_down")
    assert api.incr(name, 10).status == 200
    stackctl.stop("redis")
    try:
        wait_until(lambda: api.healthz().json.get("redis") is False, 10, 0.1, "redis seen down")
        r = post_batch(api, [{"name": name, "op": "increment", "value": 5},
                             {"name": gauge, "op": "set", "value": 3},
                             {"name": name, "op": "decrement", "value": 1}])
        assert statuses(r) == [202, 503, 202]
        assert r.json["results"][0]["applied"] is False
        assert r.json["results"][1]["error"]["code"] == "redis_unavailable"
    finally:
        stackctl.start("redis")
    wait_until(lambda: api.get(name).json.get("source") == "redis", 30, 0.1, "redis back")
    wait_until(lambda: api.value(name) == 14, 30, 0.1, "applied by the applier")
    wait_pg_total(pg, name, 14)
    assert api.get(gauge).json["value"] == 0

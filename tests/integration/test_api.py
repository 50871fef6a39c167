"""counter-api's HTTP contract, end to end through Redis, Kafka and the
persister's PostgreSQL totals.

Rejected writes are checked for "no trace" (G2) in every store: the GET
value and its Redis keys are unchanged, and a marker write sent afterwards
on the same counter is the only new Kafka event after the test's own (one
counter's events share a partition, so a leaked event would come before the
marker), and PostgreSQL converges to exactly the marker's effect.
"""

import datetime
import http.client
import json
import re
import time
import uuid

import pytest

from conftest import wait_pg_total

INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
RFC3339_MS_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")


# --------------------------------------------------------------- helpers ---


def assert_error(r, status, code, field=None):
    assert r.status == status, (r.status, r.json, r.body[:200])
    assert r.headers.get("Content-Type", "").startswith("application/json"), dict(r.headers)
    body = r.json
    assert isinstance(body, dict) and body.get("success") is False, body
    assert set(body) == {"success", "error"}, body
    err = body["error"]
    assert err["code"] == code, body
    assert isinstance(err.get("message"), str) and err["message"], body
    assert set(err) <= {"code", "message", "field"}, body
    if field is not None:
        assert err.get("field") == field, body


def assert_write_ok(r, expected_value=None):
    assert r.status == 200, (r.status, r.json)
    assert r.headers.get("Content-Type", "").startswith("application/json")
    assert set(r.json) == {"success", "current_value", "event_id"}, r.json
    assert r.json["success"] is True
    assert isinstance(r.json["current_value"], int)
    assert UUID_RE.match(r.json["event_id"]), r.json
    if expected_value is not None:
        assert r.json["current_value"] == expected_value, r.json
    return r.json["event_id"]


def ms_from_rfc3339(s):
    dt = datetime.datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%fZ")
    dt = dt.replace(tzinfo=datetime.timezone.utc)
    return round(dt.timestamp() * 1000)


def snapshot(api, redis, name):
    r = api.get(name)
    assert r.status == 200, (r.status, r.json)
    return {
        "value": r.json["value"],
        "last_updated": r.json["last_updated"],
        "stored": redis.stored(name),
    }


def assert_no_trace(api, redis, pg, kafka, name, before, since, acked_ids, marker="increment"):
    """The state is `before`, and no event beyond `acked_ids` exists."""
    assert snapshot(api, redis, name) == before
    r = api.write(name, marker)
    marker_id = assert_write_ok(r)
    msgs = kafka.messages(since, key=name)
    ids = [m["event"]["id"] for m in msgs]
    assert ids == list(acked_ids) + [marker_id], (
        "Kafka holds events for this counter other than the acknowledged "
        f"ones: {[m['payload'] for m in msgs]}"
    )
    step = 1 if marker == "increment" else -1
    wait_pg_total(pg, name, before["value"] + step)


@pytest.fixture
def seeded(api, redis, kafka, name):
    """A counter at 5 by one acknowledged write: (since, [event id], state)."""
    since = kafka.end_offsets()
    eid = assert_write_ok(api.incr(name, 5), 5)
    return since, [eid], snapshot(api, redis, name)


# ------------------------------------------------------------------ health ---


def test_healthz(api):
    r = api.healthz()
    assert r.status == 200
    assert r.headers.get("Content-Type", "").startswith("application/json")
    assert r.json == {"status": "ok", "redis": True, "kafka": True}


def test_healthz_head(api):
    r = api.request("HEAD", "/healthz")
    assert r.status == 200
    assert r.body == b""


# ------------------------------------------------------------------ writes ---


def test_increment_and_decrement_defaults(api, redis, name):
    assert_write_ok(api.write(name, "increment"), 1)
    assert_write_ok(api.write(name, "increment", b""), 2)
    assert_write_ok(api.write(name, "increment", " \r\n\t "), 3)
    assert_write_ok(api.write(name, "decrement"), 2)
    assert_write_ok(api.write(name, "increment", {}), 3)
    assert_write_ok(api.incr(name, 10), 13)
    assert_write_ok(api.decr(name, 20), -7)
    assert_write_ok(api.incr(name, 1, user_id=None, metadata=None), -6)
    assert api.value(name) == -6
    assert redis.value(name) == -6


def test_event_ids_are_unique(api, name):
    ids = [assert_write_ok(api.write(name, "increment")) for _ in range(20)]
    assert len(set(ids)) == 20


def test_event_lands_in_kafka_with_schema(api, kafka, redis, name):
    since = kafka.end_offsets()
    metadata = {"level": 7, "tags": ["a", "b"], "nested": {"ok": True, "x": None}}
    t0 = int(time.time() * 1000)
    inc = api.incr(name, 3, user_id="user-\u00fc-1", metadata=metadata)
    dec = api.write(name, "decrement")
    t1 = int(time.time() * 1000)
    inc_id = assert_write_ok(inc, 3)
    dec_id = assert_write_ok(dec, 2)

    msgs = kafka.messages(since, key=name)
    assert [m["event"]["id"] for m in msgs] == [inc_id, dec_id], [m["payload"] for m in msgs]
    assert msgs[0]["partition"] == msgs[1]["partition"], "one counter, one partition"
    assert msgs[0]["offset"] < msgs[1]["offset"]
    for m in msgs:
        assert m["key"] == name
        # origin: api (applied by the api), epoch: the data set it was
        # applied to (the applier applies it again on a newer one)
        assert m["headers_dict"].keys() == {"origin", "epoch"}, m["headers"]
        assert m["headers_dict"]["origin"] == "api"
        assert m["headers_dict"]["epoch"] == redis.epoch(), m["headers"]
        assert m["event"] is not None, m["payload"]

    ev = msgs[0]["event"]
    assert set(ev) == {"v", "id", "counter", "delta", "user_id", "ts", "metadata"}, ev
    assert ev["v"] == 1
    assert ev["counter"] == name
    assert ev["delta"] == 3 and isinstance(ev["delta"], int)
    assert ev["user_id"] == "user-\u00fc-1"
    assert ev["metadata"] == metadata
    assert isinstance(ev["ts"], int) and t0 - 5 <= ev["ts"] <= t1 + 5, (t0, ev["ts"], t1)

    ev = msgs[1]["event"]
    assert set(ev) == {"v", "id", "counter", "delta", "ts"}, ev
    assert ev["v"] == 1 and ev["counter"] == name and ev["delta"] == -1
    assert isinstance(ev["ts"], int) and t0 - 5 <= ev["ts"] <= t1 + 5


def test_event_payload_per_write_is_exactly_one(api, kafka, name):
    since = kafka.end_offsets()
    ids = [assert_write_ok(api.incr(name, i + 1)) for i in range(5)]
    msgs = kafka.messages(since, key=name)
    assert [m["event"]["id"] for m in msgs] == ids
    assert [m["event"]["delta"] for m in msgs] == [1, 2, 3, 4, 5]


# ------------------------------------------------------------------- reads ---


def test_get_never_written(api, redis, name):
    r = api.get(name)
    assert r.status == 200
    assert r.headers.get("Content-Type", "").startswith("application/json")
    assert r.json == {
        "name": name,
        "value": 0,
        "last_updated": None,
        "kind": "counter",
        "source": "redis",
        "stale": False,
    }
    assert redis.stored(name) == {}


def test_get_after_writes(api, redis, name):
    t0 = int(time.time() * 1000)
    assert_write_ok(api.incr(name, 41), 41)
    assert_write_ok(api.incr(name, 1), 42)
    t1 = int(time.time() * 1000)
    r = api.get(name)
    assert r.status == 200
    assert set(r.json) == {"name", "value", "kind", "last_updated", "source", "stale"}, r.json
    assert r.json["name"] == name
    assert r.json["value"] == 42
    assert r.json["source"] == "redis" and r.json["stale"] is False
    lu = r.json["last_updated"]
    assert RFC3339_MS_RE.match(lu), lu
    h = redis.stored(name)
    assert h["v"] == "42"
    assert ms_from_rfc3339(lu) == int(h["t"]), (lu, h)
    assert t0 - 5 <= int(h["t"]) <= t1 + 5


def test_head_counter(api, name):
    assert_write_ok(api.incr(name, 2))
    r = api.request("HEAD", f"/api/v1/counter/{name}")
    assert r.status == 200
    assert r.body == b""
    assert r.headers.get("Content-Type", "").startswith("application/json")


def test_head_counters(api, name):
    r = api.request("HEAD", f"/api/v1/counters?names={name},{name}x")
    assert r.status == 200
    assert r.body == b""


def test_persister_total_matches_api(api, redis, pg, name):
    values = [5, -2, 10, -1, 7]
    for v in values:
        r = api.incr(name, v) if v > 0 else api.decr(name, -v)
        assert_write_ok(r)
    assert api.value(name) == sum(values)
    wait_pg_total(pg, name, sum(values))
    value, last_event_ms = pg.total_row(name)
    assert value == api.value(name) == redis.value(name)
    assert last_event_ms == int(redis.stored(name)["t"])


def test_persister_offsets_cover_the_event(api, pg, kafka, stack, name):
    since = kafka.end_offsets()
    eid = assert_write_ok(api.incr(name, 1))
    wait_pg_total(pg, name, 1)
    (msg,) = kafka.messages(since, key=name)
    assert msg["event"]["id"] == eid
    rows = pg.query(
        "SELECT next_offset FROM consumer_offsets WHERE group_id = 'counter-persister' "
        f"AND topic = '{stack.kafka_topic}' AND partition = {msg['partition']}"
    )
    assert rows, "the persister stores its offsets in consumer_offsets"
    assert int(rows[0][0]) > msg["offset"]


# ------------------------------------------------------------- batch reads ---


def test_batch_get_order_and_duplicates(api, name):
    a, b, never = f"{name}-a", f"{name}-b", f"{name}-never"
    assert_write_ok(api.incr(a, 1))
    assert_write_ok(api.incr(b, 2))
    order = [b, a, never, b, a, a]
    r = api.get_many(",".join(order))
    assert r.status == 200, r.json
    assert set(r.json) == {"counters"}
    got = r.json["counters"]
    assert [c["name"] for c in got] == order
    assert [c["value"] for c in got] == [2, 1, 0, 2, 1, 1]
    for c in got:
        single = api.get(c["name"]).json
        assert c == single
    assert got[2]["last_updated"] is None


def test_batch_get_single_and_hundred(api, name):
    r = api.get_many(name)
    assert r.status == 200
    assert r.json == {"counters": [api.get(name).json]}
    names = [f"{name}-{i}" for i in range(100)]
    assert_write_ok(api.incr(names[37], 37))
    r = api.get_many(",".join(names))
    assert r.status == 200, r.json
    assert [c["name"] for c in r.json["counters"]] == names
    assert [c["value"] for c in r.json["counters"]] == [37 if i == 37 else 0 for i in range(100)]


@pytest.mark.parametrize(
    "query",
    [
        "",
        "names=",
        "other=a",
        "names=a,,b",
        "names=a,",
        "names=,a",
        "names=a:b",
        "names=%7Bx%7D",
        "names=" + "x" * 129,
        "names=" + ",".join(f"n{i}" for i in range(101)),
    ],
    ids=["no-query", "empty", "no-names", "empty-item", "trailing-comma", "leading-comma",
         "colon", "braces", "129-chars", "101-names"],
)
def test_batch_get_invalid_query(api, query):
    path = "/api/v1/counters" + (f"?{query}" if query else "")
    assert_error(api.request("GET", path), 400, "invalid_query", "names")


# --------------------------------------------------------- routing errors ---


@pytest.mark.parametrize(
    "method,path_tpl,allow",
    [
        ("GET", "/api/v1/counter/{n}/increment", {"POST"}),
        ("PUT", "/api/v1/counter/{n}/increment", {"POST"}),
        ("DELETE", "/api/v1/counter/{n}/decrement", {"POST"}),
        ("PATCH", "/api/v1/counter/{n}/decrement", {"POST"}),
        ("POST", "/api/v1/counter/{n}", {"GET", "HEAD"}),
        ("PUT", "/api/v1/counter/{n}", {"GET", "HEAD"}),
        ("DELETE", "/api/v1/counter/{n}", {"GET", "HEAD"}),
        ("POST", "/api/v1/counters?names={n}", {"GET", "HEAD"}),
        ("OPTIONS", "/api/v1/counters?names={n}", {"GET", "HEAD"}),
        ("POST", "/healthz", {"GET", "HEAD"}),
    ],
)
def test_method_not_allowed(api, redis, name, method, path_tpl, allow):
    body = b'{"value":1}' if method in ("POST", "PUT", "PATCH") else None
    r = api.request(method, path_tpl.format(n=name), body)
    assert_error(r, 405, "method_not_allowed")
    got = {m.strip() for m in r.headers.get("Allow", "").split(",") if m.strip()}
    assert got == allow, r.headers.get("Allow")
    assert redis.stored(name) == {}
    assert api.value(name) == 0


def test_head_on_write_path_is_405(api, name):
    r = api.request("HEAD", f"/api/v1/counter/{name}/increment")
    assert r.status == 405
    assert r.headers.get("Allow") == "POST"
    assert api.value(name) == 0


@pytest.mark.parametrize(
    "method,path_tpl",
    [
        ("GET", "/index.html"),  # "/" is the dashboard (test_dashboard.py)
        ("GET", "/api/v1/nope"),
        ("GET", "/api/v1/counter/"),
        ("GET", "/api/v1/counter/{n}/"),
        ("GET", "/api/v2/counter/{n}"),
        ("GET", "/api/v1/counters/{n}"),
        ("GET", "/healthz/"),
        ("POST", "/api/v1/counter/{n}/incr"),
        ("POST", "/api/v1/counter/{n}/increment/more"),
        ("POST", "/api/v1/counter//increment"),
        ("POST", "/api/v1/counter/{n}/Increment"),
    ],
)
def test_unknown_route_is_404(api, redis, name, method, path_tpl):
    body = b"{}" if method == "POST" else None
    assert_error(api.request(method, path_tpl.format(n=name), body), 404, "not_found")
    assert redis.stored(name) == {}


def test_routing_errors_leave_no_trace(api, redis, pg, kafka, seeded, name):
    since, acked, before = seeded
    body = b'{"value":1}'
    for method, path in (
        ("GET", f"/api/v1/counter/{name}/increment"),
        ("PUT", f"/api/v1/counter/{name}/increment"),
        ("PATCH", f"/api/v1/counter/{name}/decrement"),
        ("DELETE", f"/api/v1/counter/{name}/decrement"),
        ("POST", f"/api/v1/counter/{name}"),
        ("PUT", f"/api/v1/counter/{name}"),
    ):
        assert api.request(method, path, body).status == 405, (method, path)
    for path in (f"/api/v1/counter/{name}/incr", f"/api/v1/counter/{name}/increment/x",
                 f"/api/v1/counter/{name}/", f"/api/v1/counters/{name}/increment"):
        assert api.request("POST", path, body).status == 404, path
    assert_no_trace(api, redis, pg, kafka, name, before, since, acked)


# ------------------------------------------------------------------- names ---


def _bad_names(uid):
    return {
        "pct-7B": "%7B" + uid,
        "pct-7B7D": f"%7Bc:{uid}%7D",
        "raw-colon": f"{uid}:b",
        "pct-colon": f"{uid}%3Ab",
        "raw-braces": "{" + uid + "}",
        "space": f"{uid}%20b",
        "slash": f"{uid}%2Fb",
        "nul": f"{uid}%00",
        "bad-escape": f"{uid}%zz",
        "short-escape": f"{uid}%2",
        "lone-pct": f"{uid}%",
        "non-ascii": f"{uid}%C3%BC",
        "129-chars": (uid + "x" * 129)[:129],
        "129-chars-encoded": "".join(f"%{ord(c):02X}" for c in (uid + "y" * 129)[:129]),
    }


@pytest.mark.parametrize("case", list(_bad_names("u")))
def test_invalid_names(api, redis, kafka, case):
    uid = uuid.uuid4().hex[:12]
    bad = _bad_names(uid)[case]
    since = kafka.end_offsets()
    assert_error(api.request("GET", f"/api/v1/counter/{bad}"), 400, "invalid_name")
    for op in ("increment", "decrement"):
        assert_error(api.request("POST", f"/api/v1/counter/{bad}/{op}", b'{"value":1}'),
                     400, "invalid_name")
    assert_error(api.request("POST", f"/api/v1/counter/{bad}/increment"), 400, "invalid_name")
    assert redis.cli("--scan", "--pattern", f"*{uid}*") == ""
    # A marker on a valid name is acknowledged only once in Kafka, after
    # anything the rejected writes could have queued before it.
    marker = f"m{uid}"
    assert_write_ok(api.write(marker, "increment"))
    msgs = [m for m in kafka.messages(since) if m.get("key") and uid in m["key"]]
    assert [m["key"] for m in msgs] == [marker], [m["payload"] for m in msgs]


def test_name_of_128_chars(api, redis, pg, name):
    long_name = (name + "-" + "z" * 128)[:128]
    assert len(long_name) == 128
    assert api.get(long_name).json["value"] == 0
    assert_write_ok(api.incr(long_name, 3), 3)
    assert api.get(long_name).json["name"] == long_name
    assert redis.value(long_name) == 3
    wait_pg_total(pg, long_name, 3)


def test_percent_encoded_name_is_the_same_counter(api, redis, kafka, name):
    since = kafka.end_offsets()
    encoded = "".join(f"%{ord(c):02x}" if i % 2 else c for i, c in enumerate(name))
    assert encoded != name
    eid = assert_write_ok(api.write(encoded, "increment", {"value": 4}), 4)
    assert_write_ok(api.incr(name, 1), 5)
    r = api.request("GET", f"/api/v1/counter/{encoded}")
    assert r.json["name"] == name and r.json["value"] == 5
    assert redis.value(name) == 5
    (first, _) = kafka.messages(since, key=name)
    assert first["event"]["id"] == eid and first["event"]["counter"] == name
    # 128 characters, each percent-encoded: the limit is on the decoded name.
    full = "".join(f"%{ord(c):02X}" for c in (name + "q" * 128)[:128])
    assert api.request("GET", f"/api/v1/counter/{full}").status == 200


# --------------------------------------------------------- rejected bodies ---

REJECTED_BODIES = [
    ("not-json", b"{", "invalid_json", None),
    ("garbage", b"value=1", "invalid_json", None),
    ("trailing-garbage", b'{"value":1}x', "invalid_json", None),
    ("two-objects", b'{"value":1}{"value":2}', "invalid_json", None),
    ("array", b"[1]", "invalid_json", None),
    ("string", b'"x"', "invalid_json", None),
    ("null", b"null", "invalid_json", None),
    ("number", b"5", "invalid_json", None),
    ("bad-utf8", b'{"user_id":"\xff"}', None, None),  # invalid_json or invalid_field
    ("value-zero", b'{"value":0}', "invalid_field", "value"),
    ("value-negative", b'{"value":-3}', "invalid_field", "value"),
    ("value-float", b'{"value":1.5}', "invalid_field", "value"),
    ("value-float-int", b'{"value":2.0}', "invalid_field", "value"),
    ("value-exp", b'{"value":1e3}', "invalid_field", "value"),
    ("value-string", b'{"value":"1"}', "invalid_field", "value"),
    ("value-bool", b'{"value":true}', "invalid_field", "value"),
    ("value-null", b'{"value":null}', "invalid_field", "value"),
    ("value-object", b'{"value":{}}', "invalid_field", "value"),
    ("value-2^63", b'{"value":9223372036854775808}', "invalid_field", "value"),
    ("value-2^64", b'{"value":18446744073709551616}', "invalid_field", "value"),
    ("value-huge", b'{"value":1' + b"0" * 40 + b"}", "invalid_field", "value"),
    ("value-min-1", b'{"value":-9223372036854775809}', "invalid_field", "value"),
    ("user-empty", b'{"user_id":""}', "invalid_field", "user_id"),
    ("user-number", b'{"user_id":7}', "invalid_field", "user_id"),
    ("user-control", b'{"user_id":"a\\u0001b"}', "invalid_field", "user_id"),
    ("user-257", b'{"user_id":"' + b"u" * 257 + b'"}', "invalid_field", "user_id"),
    ("user-object", b'{"user_id":{}}', "invalid_field", "user_id"),
    ("metadata-array", b'{"metadata":[1]}', "invalid_field", "metadata"),
    ("metadata-string", b'{"metadata":"x"}', "invalid_field", "metadata"),
    ("metadata-number", b'{"metadata":1}', "invalid_field", "metadata"),
    ("unknown", b'{"valu":1}', "unknown_field", None),
    ("unknown-extra", b'{"value":1,"extra":true}', "unknown_field", None),
    ("unknown-only", b'{"id":"x"}', "unknown_field", None),
]


@pytest.mark.parametrize("op", ["increment", "decrement"])
@pytest.mark.parametrize(
    "case,body,code,field", REJECTED_BODIES, ids=[c[0] for c in REJECTED_BODIES]
)
def test_rejected_write_leaves_no_trace(api, redis, pg, kafka, seeded, name, op, case, body, code, field):
    since, acked, before = seeded
    r = api.write(name, op, body)
    if code is None:
        assert r.status == 400, r.json
        assert r.json["error"]["code"] in ("invalid_json", "invalid_field"), r.json
    else:
        assert_error(r, 400, code, field)
    assert_no_trace(api, redis, pg, kafka, name, before, since, acked)


def test_user_id_of_256_bytes_and_utf8(api, kafka, name):
    since = kafka.end_offsets()
    uid256 = "\u00e9" * 128  # 256 bytes of UTF-8
    assert_write_ok(api.incr(name, 1, user_id=uid256))
    assert_write_ok(api.incr(name, 1, user_id="\U0001F600"))
    msgs = kafka.messages(since, key=name)
    assert [m["event"]["user_id"] for m in msgs] == [uid256, "\U0001F600"]


# ------------------------------------------------------------------- sizes ---


def test_body_over_limit_is_413(api, redis, pg, kafka, stack, seeded, name):
    since, acked, before = seeded
    limit = stack.max_body_bytes
    body = b'{"value":1}' + b" " * (limit + 1 - 11)
    assert len(body) == limit + 1
    assert_error(api.write(name, "increment", body), 413, "body_too_large")
    assert_no_trace(api, redis, pg, kafka, name, before, since, acked)


def test_body_at_limit_is_accepted(api, stack, name):
    limit = stack.max_body_bytes
    body = b'{"value":2}' + b" " * (limit - 11)
    assert len(body) == limit
    assert_write_ok(api.write(name, "increment", body), 2)


@pytest.mark.parametrize("size", [70_000, 1 << 20])
def test_body_far_over_limit_is_json_413(api, redis, pg, kafka, seeded, name, size):
    since, acked, before = seeded
    body = b'{"value":1}' + b" " * (size - 11)
    try:
        r = api.write(name, "increment", body, timeout=30)
    except (ConnectionError, OSError) as e:
        pytest.fail(f"no answer to a {size}-byte body: {e!r}")
    assert_error(r, 413, "body_too_large")
    assert_no_trace(api, redis, pg, kafka, name, before, since, acked)


def _chunked_write(stack, name, chunks):
    conn = http.client.HTTPConnection(stack.api_host, stack.api_port, timeout=15)
    try:
        conn.request("POST", f"/api/v1/counter/{name}/increment", body=iter(chunks),
                     headers={"Content-Type": "application/json"}, encode_chunked=True)
        r = conn.getresponse()
        return r.status, json.loads(r.read())
    finally:
        conn.close()


def test_chunked_body_is_411(api, stack, name):
    """Request bodies come with a Content-Length (api/framing.c): a chunked
    one is refused with 411 length_required, small or large."""
    status, body = _chunked_write(stack, name, [b'{"val', b'ue":', b"4}"])
    assert status == 411 and body["error"]["code"] == "length_required", body
    pad = b" " * 4096
    status, body = _chunked_write(stack, name, [b'{"value":1}'] + [pad] * 5)
    assert status == 411 and body["error"]["code"] == "length_required", body
    assert api.value(name) == 0


def test_body_beyond_server_cap_is_refused(api, redis, pg, kafka, stack, seeded, name):
    """A body far past the limit: the JSON 413 is sent once the headers are
    in and the connection closes; a client that is still sending may see
    it reset instead (after a few MiB, api/listener.c stops reading), but
    it must be a refusal, and nothing may change."""
    since, acked, before = seeded
    body = b'{"value":1}' + b" " * (4 << 20)
    conn = http.client.HTTPConnection(stack.api_host, stack.api_port, timeout=30)
    status = None
    try:
        conn.request("POST", f"/api/v1/counter/{name}/increment", body=body,
                     headers={"Content-Type": "application/json"})
        status = conn.getresponse().status
    except (ConnectionError, OSError):
        pass  # the api may close the connection before reading it all
    finally:
        conn.close()
    assert status in (None, 413), status
    assert api.healthz().status == 200
    assert_no_trace(api, redis, pg, kafka, name, before, since, acked)


# -------------------------------------------------------------- overflow ---
# The seed writes check the stored value by GET rather than by the write's
# current_value: that one is checked on its own in
# test_current_value_is_exact_beyond_2_53, so that a wrong answer there
# does not hide the overflow behaviour.


def test_increment_overflow_is_422(api, redis, pg, kafka, name):
    since = kafka.end_offsets()
    eid = assert_write_ok(api.incr(name, INT64_MAX))
    before = snapshot(api, redis, name)
    assert before["value"] == INT64_MAX
    assert_error(api.incr(name, INT64_MAX), 422, "value_out_of_range")
    assert_error(api.incr(name, 1), 422, "value_out_of_range")
    assert_error(api.write(name, "increment"), 422, "value_out_of_range")
    assert_no_trace(api, redis, pg, kafka, name, before, since, [eid], marker="decrement")


def test_decrement_underflow_is_422(api, redis, pg, kafka, name):
    since = kafka.end_offsets()
    e1 = assert_write_ok(api.decr(name, INT64_MAX))
    assert api.value(name) == -INT64_MAX
    e2 = assert_write_ok(api.decr(name, 1))
    before = snapshot(api, redis, name)
    assert before["value"] == INT64_MIN
    assert_error(api.decr(name, 1), 422, "value_out_of_range")
    assert_error(api.decr(name, INT64_MAX), 422, "value_out_of_range")
    assert_no_trace(api, redis, pg, kafka, name, before, since, [e1, e2], marker="increment")


def test_overflow_then_normal_writes(api, pg, name):
    assert_write_ok(api.incr(name, INT64_MAX - 1))
    assert_write_ok(api.incr(name, 1))
    assert api.value(name) == INT64_MAX
    assert_error(api.incr(name, 1), 422, "value_out_of_range")
    assert_write_ok(api.decr(name, INT64_MAX), 0)
    assert_write_ok(api.decr(name, 5), -5)
    wait_pg_total(pg, name, -5)


@pytest.mark.parametrize(
    "deltas",
    [
        [2**53 + 1],
        [2**53, 1],
        [INT64_MAX],
        [INT64_MAX - 1, 1],
        [-INT64_MAX],
        [-INT64_MAX, -1],
        [-(2**53) - 3],
    ],
    ids=["2^53+1", "2^53-then-1", "int64-max", "int64-max-in-two", "minus-int64-max",
         "int64-min", "minus-2^53-3"],
)
def test_current_value_is_exact_beyond_2_53(api, name, deltas):
    """The write's current_value is the counter's value, to the last digit."""
    answers = []
    for d in deltas:
        r = api.incr(name, d) if d > 0 else api.decr(name, -d)
        assert_write_ok(r)
        answers.append(r.json["current_value"])
    assert api.value(name) == sum(deltas)
    assert answers[-1] == sum(deltas), (
        f"write answered current_value {answers[-1]} but the counter holds {sum(deltas)}"
    )


# --------------------------------------------------------- keep-alive use ---


def test_keep_alive_connection_serves_many_requests(stack, name):
    conn = http.client.HTTPConnection(stack.api_host, stack.api_port, timeout=10)
    try:
        for i in range(1, 21):
            conn.request("POST", f"/api/v1/counter/{name}/increment", body=b"")
            r = conn.getresponse()
            data = r.read()
            assert r.status == 200, data
            assert not r.will_close
            assert b'"current_value":%d' % i in data
        conn.request("GET", f"/api/v1/counter/{name}/nope")
        r = conn.getresponse()
        r.read()
        assert r.status == 404
        conn.request("GET", f"/api/v1/counter/{name}")
        r = conn.getresponse()
        assert b'"value":20' in r.read()
    finally:
        conn.close()

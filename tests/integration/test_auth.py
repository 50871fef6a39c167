"""Bearer tokens (issue 5): a counter-api of the test's own, with tokens from
a tokens file (COUNTER_AUTH_TOKENS_FILE) or from `auth.tokens` in its config
file, beside the stack's api (which has none: auth off).

Checked as a client sees it: 401 `unauthorized` with WWW-Authenticate for a
missing, malformed or unknown token (the same answer for each, so it tells
nothing about which tokens exist); 403 `forbidden` for a read token on a
write; nothing applied in Redis or Kafka on either; /healthz open, /metrics
behind a read token; no token text in the api's log; startup refused with
one line for a bad tokens file.
"""

import os
import subprocess

import pytest

from conftest import Api, unique_name
from own_process import OwnApi, OwnProcess

READ_TOKEN = "it-read-7c1a9e0b2f4d4c8e9a1b3c5d7e9f0a2b"
WRITE_TOKEN = "it-write-Q2xhdWRlIGRpZCB0aGlzLg+/=="


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def tokens_file(tmp_path):
    path = tmp_path / "tokens"
    path.write_text(
        "# tokens of the integration tests\n"
        f"read  {READ_TOKEN}   # dashboards\n"
        "\n"
        f"write {WRITE_TOKEN}\n"
    )
    path.chmod(0o600)
    return str(path)


@pytest.fixture
def auth_api(stack, tmp_path, tokens_file):
    a = OwnApi(stack, tmp_path, {"COUNTER_AUTH_TOKENS_FILE": tokens_file}).start()
    yield a
    a.assert_clean_exit()
    log = a.log()
    assert "auth on" in log
    for token in (READ_TOKEN, WRITE_TOKEN):
        assert token not in log and token[10:30] not in log, "a token is in the api's log"


def assert_unauthorized(r):
    assert r.status == 401, (r.status, r.json)
    assert r.json["success"] is False
    assert r.json["error"]["code"] == "unauthorized", r.json
    assert r.headers["WWW-Authenticate"].startswith("Bearer"), r.headers
    for token in (READ_TOKEN, WRITE_TOKEN):
        assert token.encode() not in r.body


def assert_untouched(redis, kafka, since, name):
    assert redis.value(name) is None, f"{name} is in Redis"
    assert kafka.messages(since, key=name) == [], f"{name} is in Kafka"


def test_missing_malformed_or_unknown_token_gets_the_same_401(auth_api, redis, kafka):
    api = Api(auth_api.endpoint)
    name = unique_name("it.auth.401")
    since = kafka.end_offsets()
    headers = [
        {},
        {"Authorization": ""},
        {"Authorization": "Bearer"},
        {"Authorization": f"Basic {WRITE_TOKEN}"},
        {"Authorization": WRITE_TOKEN},
        bearer("it-write-unknown-token-000000000000"),
        bearer(WRITE_TOKEN[:-1]),  # a prefix of a real token
        bearer(WRITE_TOKEN + "A"),  # a real token and more
        bearer(WRITE_TOKEN.upper()),
        {"Authorization": f"Bearer {WRITE_TOKEN} {WRITE_TOKEN}"},
    ]
    bodies = set()
    for h in headers:
        for r in (api.write(name, "increment", headers=h), api.get(name, headers=h)):
            assert_unauthorized(r)
            bodies.add(r.body)
    # one answer for every case: it tells nothing about which tokens exist
    assert len(bodies) == 1, bodies
    assert_untouched(redis, kafka, since, name)


def test_two_authorization_headers_are_refused(auth_api, redis, kafka):
    """http.client would merge nothing: send the request by hand."""
    import socket

    name = unique_name("it.auth.two")
    since = kafka.end_offsets()
    with socket.create_connection(("127.0.0.1", auth_api.port), timeout=10) as s:
        s.sendall(
            f"POST /api/v1/counter/{name}/increment HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: Bearer {READ_TOKEN}\r\nAuthorization: Bearer {WRITE_TOKEN}\r\n"
            "Content-Length: 0\r\nConnection: close\r\n\r\n".encode()
        )
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 401"), data[:200]
    assert b'"code":"unauthorized"' in data
    assert_untouched(redis, kafka, since, name)


def test_read_token_reads_but_may_not_write(auth_api, redis, kafka):
    api = Api(auth_api.endpoint)
    name = unique_name("it.auth.ro")
    since = kafka.end_offsets()

    for op, body in (("increment", None), ("decrement", None), ("set", {"value": 5})):
        r = api.write(name, op, body, headers=bearer(READ_TOKEN))
        assert r.status == 403, (op, r.status, r.json)
        assert r.json["error"]["code"] == "forbidden", r.json
        assert READ_TOKEN.encode() not in r.body
    assert_untouched(redis, kafka, since, name)

    r = api.get(name, headers=bearer(READ_TOKEN))
    assert r.status == 200, r.json
    assert r.json["value"] == 0
    assert api.get_many(name, headers=bearer(READ_TOKEN)).status == 200
    r = api.request("GET", "/api/v1/counters/definitions", headers=bearer(READ_TOKEN))
    assert r.status == 200, r.json


def test_write_token_writes_and_reads(auth_api, redis, kafka):
    api = Api(auth_api.endpoint)
    name = unique_name("it.auth.rw")
    since = kafka.end_offsets()
    r = api.write(name, "increment", {"value": 3}, headers=bearer(WRITE_TOKEN))
    assert r.status == 200, r.json
    event_id = r.json["event_id"]
    # the scheme name is case-insensitive (RFC 7235)
    r = api.write(name, "increment", None, headers={"Authorization": f"bearer {WRITE_TOKEN}"})
    assert r.status == 200, r.json
    r = api.get(name, headers=bearer(WRITE_TOKEN))
    assert r.status == 200 and r.json["value"] == 4, r.json
    assert redis.value(name) == 4
    assert event_id in {m["event"]["id"] for m in kafka.messages(since, key=name)}


def test_healthz_is_open_and_metrics_need_a_read_token(auth_api):
    api = Api(auth_api.endpoint)
    r = api.healthz()
    assert r.status == 200 and r.json["status"] == "ok", r.json

    assert_unauthorized(api.request("GET", "/metrics"))
    assert_unauthorized(api.request("GET", "/metrics", headers=bearer("no-such-token-0000000000")))
    assert auth_api.metric('counter_api_refused_total{reason="unauthorized"}', bearer(READ_TOKEN)) >= 2
    assert auth_api.metric('counter_api_http_requests_total{route="healthz",status="200"}',
                           bearer(WRITE_TOKEN)) > 0


def test_tokens_from_the_config_file(stack, tmp_path, redis):
    """`auth.tokens` in the YAML config: the stack's test config plus an
    auth section."""
    with open(os.environ["COUNTER_CONFIG"]) as f:
        base = f.read()
    cfg = tmp_path / "config.yaml"
    cfg.write_text(
        base + "\nauth:\n  tokens:\n"
        f'    - {{token: "{READ_TOKEN}", access: read}}\n'
        f'    - {{token: "{WRITE_TOKEN}", access: write}}\n'
    )
    a = OwnApi(stack, tmp_path, {"COUNTER_CONFIG": str(cfg)}).start()
    try:
        api = Api(a.endpoint)
        name = unique_name("it.auth.yaml")
        assert_unauthorized(api.incr(name))
        assert api.write(name, "increment", headers=bearer(READ_TOKEN)).status == 403
        assert api.write(name, "increment", headers=bearer(WRITE_TOKEN)).status == 200
        assert redis.value(name) == 1
    finally:
        a.assert_clean_exit()


@pytest.mark.parametrize(
    "text, expect",
    [
        (f"admin {WRITE_TOKEN}\n", "line 1: expected"),
        (f"read {READ_TOKEN}\nwrite short\n", "line 2: a token is 16 to 256"),
        ("# nothing but a comment\n", "holds no token"),
    ],
)
def test_a_bad_tokens_file_stops_the_api_at_start(stack, tmp_path, text, expect):
    path = tmp_path / "bad-tokens"
    path.write_text(text)
    path.chmod(0o600)
    a = OwnApi(stack, tmp_path, {"COUNTER_AUTH_TOKENS_FILE": str(path)})
    OwnProcess.start(a)  # no wait for health: it must not come up
    try:
        rc = a.proc.wait(30)
    except subprocess.TimeoutExpired:
        a.stop()
        raise AssertionError("counter-api started with a bad tokens file")
    a.stop()
    out = a.log()
    assert rc == 2, (rc, out)
    assert expect in out and str(path) in out, out
    assert WRITE_TOKEN not in out and READ_TOKEN not in out

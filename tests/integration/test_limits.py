"""Limits and shutdown (issue 5): body and header size, idle timeout, open
connections, requests in flight, and SIGTERM of counter-api,
counter-persister and counter-applier.

Each api test starts its own counter-api (own_process.OwnApi) with the limit
under test set through its COUNTER_SERVER_* variable, against the stack's
Redis, PostgreSQL and Kafka, so the stack's api keeps its defaults. What a
client sees is checked (status, JSON error, headers, a closed or waiting
connection), and that a refused write left nothing in Redis or Kafka.
"""

import http.client
import json
import os
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import Api, counter_name, freeze, unique_name, wait_pg_total, wait_until
from own_process import OwnApi, OwnProcess

# ------------------------------------------------------------- helpers ---


def connect(port, timeout=10):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def read_response(sock, timeout=10):
    """(status, headers dict in lower case, body bytes) of one response on a
    raw socket; None if the server closed the connection first."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return None
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return status, headers, body


def closed_by_peer(sock, timeout):
    """True when the server closes the connection within timeout (whatever
    it sends first), False when it is still open then."""
    sock.settimeout(timeout)
    try:
        while True:
            if not sock.recv(65536):
                return True
    except socket.timeout:
        return False
    except ConnectionResetError:
        return True


def get(port, path="/healthz"):
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()



def assert_untouched(redis, kafka, since, name):
    """No trace of counter `name`: no Redis key, no Kafka message."""
    assert redis.value(name) is None, f"{name} is in Redis"
    assert kafka.messages(since, key=name) == [], f"{name} is in Kafka"


# ----------------------------------------------------------- body size ---


def test_body_over_max_body_bytes_gets_json_413(own_api, redis, kafka):
    a = own_api(COUNTER_SERVER_MAX_BODY_BYTES="256")
    api = Api(a.endpoint)
    name = unique_name("it.limits.body")
    since = kafka.end_offsets()

    pad = "x" * 300
    r = api.write(name, "increment", {"value": 1, "metadata": {"pad": pad}})
    assert r.status == 413, r
    assert r.headers["Content-Type"] == "application/json"
    assert r.json["success"] is False
    assert r.json["error"]["code"] == "body_too_large", r.json

    # Right under the limit it is accepted: the limit is the configured one.
    ok = api.write(name + "-ok", "increment", {"value": 1, "metadata": {"pad": "x" * 150}})
    assert ok.status == 200, ok.json
    assert_untouched(redis, kafka, since, name)


def test_body_over_the_hard_cap_is_refused_before_it_is_read(own_api, redis, kafka):
    """A Content-Length over max_body_bytes is answered with the JSON 413
    from the Content-Length alone, before the body is read, and the
    connection closed (api/framing.c)."""
    a = own_api(COUNTER_SERVER_MAX_BODY_BYTES="256")
    name = unique_name("it.limits.huge")
    since = kafka.end_offsets()
    s = connect(a.port)
    try:
        s.sendall(
            f"POST /api/v1/counter/{name}/increment HTTP/1.1\r\nHost: x\r\n"
            f"Content-Type: application/json\r\nContent-Length: {8 << 20}\r\n\r\n"
            '{"value": 1, "metadata": {"pad": "'.encode()
        )
        resp = read_response(s)
        assert resp is not None and resp[0] == 413, resp
        assert resp[1]["content-type"] == "application/json"
        assert json.loads(resp[2])["error"]["code"] == "body_too_large"
        assert closed_by_peer(s, 5)
    finally:
        s.close()
    assert_untouched(redis, kafka, since, name)


# -------------------------------------------------------- header size ---


def test_headers_over_max_header_bytes_get_431_and_close(own_api, redis, kafka):
    """An over-long header block is 431 headers_too_large, a JSON error,
    and the connection closed, before the request reaches a handler
    (api/framing.c; libevent 2.1 answered 400 with an HTML page)."""
    a = own_api(COUNTER_SERVER_MAX_HEADER_BYTES="2048")
    name = unique_name("it.limits.hdr")
    since = kafka.end_offsets()

    def post(extra_header_bytes):
        s = connect(a.port)
        try:
            s.sendall(
                f"POST /api/v1/counter/{name}/increment HTTP/1.1\r\nHost: x\r\n"
                f"X-Pad: {'p' * extra_header_bytes}\r\nContent-Length: 0\r\n\r\n".encode()
            )
            resp = read_response(s)
            closed = closed_by_peer(s, 5) if resp and resp[0] == 431 else None
            return resp, closed
        finally:
            s.close()

    (status, headers, body), closed = post(4000)
    assert status == 431, (status, body[:200])
    assert headers["content-type"] == "application/json"
    assert json.loads(body)["error"]["code"] == "headers_too_large"
    assert closed, "the connection stays open after an oversized header"
    # One long header line without its end is cut off as well.
    s = connect(a.port)
    try:
        s.sendall(b"GET /healthz HTTP/1.1\r\nX-Pad: " + b"p" * 5000)
        resp = read_response(s)
        assert resp is not None and resp[0] == 431, resp
        assert closed_by_peer(s, 5)
    finally:
        s.close()
    assert_untouched(redis, kafka, since, name)

    # Within the limit the same request is served.
    (status, headers, body), _ = post(1500)
    assert status == 200, body
    assert redis.value(name) == 1


# ---------------------------------------------------------- timeouts ---


def test_idle_and_slow_clients_are_closed_after_timeout_s(own_api):
    a = own_api(COUNTER_SERVER_TIMEOUT_S="1")

    # A client that sends half a request and then nothing.
    slow = connect(a.port)
    # A client that connects and says nothing.
    silent = connect(a.port)
    # A kept-alive connection, idle after its answer.
    idle = connect(a.port)
    try:
        t0 = time.monotonic()
        slow.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        idle.sendall(get(a.port))
        resp = read_response(idle)
        assert resp is not None and resp[0] == 200, resp
        for s, what in ((slow, "half a request"), (silent, "no request"), (idle, "kept alive")):
            assert closed_by_peer(s, 8), f"a client that sent {what} is still connected after 8 s"
        elapsed = time.monotonic() - t0
        assert elapsed >= 0.9, f"closed after {elapsed:.2f}s, before the 1 s timeout"
    finally:
        for s in (slow, silent, idle):
            s.close()
    assert wait_until(lambda: a.metric("counter_api_connections") <= 1, 10, 0.1)


# -------------------------------------------------------- connections ---


def test_max_connections_makes_new_connections_wait(own_api):
    a = own_api(COUNTER_SERVER_MAX_CONNECTIONS="3")
    held = []
    waiting = None
    try:
        for _ in range(3):
            s = connect(a.port)
            s.sendall(get(a.port))
            assert read_response(s)[0] == 200
            held.append(s)
        # A fourth connection is queued by the kernel but not served.
        waiting = connect(a.port)
        waiting.sendall(get(a.port))
        waiting.settimeout(1.5)
        with pytest.raises(socket.timeout):
            waiting.recv(1)
        # The held connections still work, and count three.
        held[0].sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        status, _, body = read_response(held[0])
        assert status == 200
        assert "counter_api_connections 3\n" in body.decode(), body.decode()
        # One closes: the waiting one is served at once.
        held.pop().close()
        resp = read_response(waiting, timeout=5)
        assert resp is not None and resp[0] == 200, resp
    finally:
        for s in held:
            s.close()
        if waiting:
            waiting.close()
    # Everything closed: it accepts again up to the limit.
    wait_until(lambda: a.metric("counter_api_connections") <= 1, 10, 0.1)
    conns = [connect(a.port) for _ in range(3)]
    try:
        for s in conns:
            s.sendall(get(a.port))
        for s in conns:
            assert read_response(s)[0] == 200
    finally:
        for s in conns:
            s.close()


# ---------------------------------------------------------- in flight ---


def test_inflight_limit_answers_503_overloaded_and_applies_nothing(own_api, stack, redis, kafka):
    """With max_inflight 1 and Redis paused (SIGSTOP), one write waits inside
    the api; every other request is refused at once with 503 overloaded and
    Retry-After, before any store is touched; /healthz and /metrics still
    answer. Once Redis is back the same writes go through."""
    a = own_api(COUNTER_SERVER_MAX_INFLIGHT="1", COUNTER_REDIS_WRITE_TIMEOUT_MS="5000")
    api = Api(a.endpoint)
    held, refused = unique_name("it.limits.held"), unique_name("it.limits.refused")
    since = kafka.end_offsets()
    redis_pid = stack.pid("redis")
    assert redis_pid, "no redis pid"
    result = {}

    def held_write():
        result["held"] = api.incr(held, timeout=30)

    freeze(redis_pid)
    try:
        t = threading.Thread(target=held_write)
        t.start()
        wait_until(lambda: a.metric("counter_api_inflight") == 1, 5, 0.02, "a write in flight")
        t0 = time.monotonic()
        for r in (api.incr(refused, timeout=5), api.get(refused, timeout=5),
                  api.write(refused, "decrement", timeout=5)):
            assert r.status == 503, r
            assert r.json["success"] is False
            assert r.json["error"]["code"] == "overloaded", r.json
            assert r.headers["Retry-After"] == "1"
        assert time.monotonic() - t0 < 3, "overloaded answers were not immediate"
        assert api.healthz().status == 200
        assert a.metric("counter_api_inflight") == 1
    finally:
        os.kill(redis_pid, signal.SIGCONT)
    t.join(30)
    assert "held" in result
    # The held write settles one way or the other; the refused ones left
    # nothing behind.
    assert result["held"].status in (200, 503), result["held"]
    assert_untouched(redis, kafka, since, refused)
    assert a.metric('counter_api_refused_total{reason="overloaded"}') == 3
    wait_until(lambda: a.metric("counter_api_inflight") == 0, 10, 0.05)
    r = api.incr(refused)
    assert r.status == 200, r.json
    assert redis.value(refused) == 1


# ----------------------------------------------------------- SIGTERM ---


def test_sigterm_during_a_burst_loses_no_acknowledged_write(own_api, stack, tmp_path, redis, kafka):
    """SIGTERM while 16 clients write: the api stops accepting, finishes the
    requests it holds (their answers arrive), flushes Kafka and exits 0
    within stack.sh's 10 s. Every 200 is in Redis and in Kafka, and nothing
    else is: the Redis value equals the 200s and the Kafka messages.

    A client may still see its connection reset: a request sent on a
    kept-alive connection just as the api closes it at exit, or a connection
    still in the kernel's accept queue when the listening socket closes.
    Such a request was never read, so the equality below also proves that
    it was not applied (a write applied but not answered would break it)."""
    a = OwnApi(stack, tmp_path).start()
    api = Api(a.endpoint)
    name = unique_name("it.limits.term")
    since = kafka.end_offsets()
    acked, refused, cut, errors = [], [], [], []
    lock = threading.Lock()
    stop_at = time.monotonic() + 30

    def client(keep_alive):
        conn = None
        while time.monotonic() < stop_at:
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", a.port, timeout=20)
                hdrs = {} if keep_alive else {"Connection": "close"}
                conn.request("POST", f"/api/v1/counter/{name}/increment", headers=hdrs)
                r = conn.getresponse()
                body = json.loads(r.read())
                with lock:
                    if r.status == 200:
                        acked.append(body["event_id"])
                    else:
                        refused.append((r.status, body["error"]["code"]))
                if not keep_alive or r.getheader("Connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except ConnectionRefusedError:
                return  # the listener is closed: the api is stopping
            except (ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected) as e:
                with lock:
                    cut.append(repr(e))
                return
            except (OSError, http.client.HTTPException) as e:
                with lock:
                    errors.append(repr(e))
                return

    with ThreadPoolExecutor(16) as ex:
        futures = [ex.submit(client, i % 2 == 0) for i in range(16)]
        wait_until(lambda: len(acked) >= 200, 30, 0.01, "200 writes acknowledged")
        a.signal(signal.SIGTERM)
        t0 = time.monotonic()
        rc = a.wait(15)
        took = time.monotonic() - t0
        for f in futures:
            f.result(40)
    a.assert_clean_exit()
    assert rc == 0
    assert took < 10, f"exit took {took:.1f}s, stack.sh would SIGKILL at 10 s"
    assert not errors, f"requests failed otherwise than by a closed connection: {errors[:5]}"
    assert all(r == (503, "shutting_down") for r in refused), refused[:5]

    ids = {m["event"]["id"] for m in kafka.messages(since, key=name)}
    missing = set(acked) - ids
    assert not missing, f"{len(missing)} acknowledged writes are not in Kafka"
    assert len(ids) == len(acked), "Kafka has writes that were never acknowledged"
    assert redis.value(name) == len(acked)
    assert "stopped" in a.log()


# ------------------------------------- persister and applier SIGTERM ---


def test_persister_exits_0_on_sigterm_after_committing(stack, stackctl, tmp_path, api, pg):
    """The stack's persister is stopped and one of the test's own takes its
    place (same group); after it has folded a write, SIGTERM: it commits and
    exits 0, and the restarted stack persister does not count it again."""
    name = unique_name("it.limits.pers")
    stackctl.stop("counter-persister")
    own = OwnProcess(stack, tmp_path, "counter-persister")
    try:
        own.start()
        r = api.incr(name, 5)
        assert r.status == 200, r.json
        wait_pg_total(pg, name, 5)
        r = api.incr(name, 2)
        assert r.status == 200, r.json
        time.sleep(0.02)
        own.signal(signal.SIGTERM)
        assert own.wait(10) == 0, own.log()[-3000:]
        own.assert_clean_exit()
        assert "stopping: committing the last batch" in own.log()
    finally:
        own.stop()
        stackctl.start("counter-persister")
    wait_pg_total(pg, name, 7)
    r = api.incr(name, 1)
    assert r.status == 200
    wait_pg_total(pg, name, 8)


def test_applier_exits_0_on_sigterm_after_committing(stack, stackctl, tmp_path, api, redis):
    """Likewise for the applier: an external event applied by the test's own
    applier, SIGTERM, exit 0; the stack's applier, restarted, does not apply
    it again (its offset was committed) but applies the next one."""
    from test_applier import event, produce

    first, second = unique_name("it.limits.appl"), unique_name("it.limits.appl2")
    stackctl.stop("counter-applier")
    own = OwnProcess(stack, tmp_path, "counter-applier")
    try:
        own.start()
        produce(stack, [(first, event(first, 3))])
        wait_until(lambda: redis.value(first) == 3, 90, 0.1, "event applied by own applier")
        own.signal(signal.SIGTERM)
        assert own.wait(10) == 0, own.log()[-3000:]
        own.assert_clean_exit()
        assert "stopping: publishing the last records and committing" in own.log()
    finally:
        own.stop()
        stackctl.start("counter-applier")
    produce(stack, [(second, event(second, 1))])
    wait_until(lambda: redis.value(second) == 1, 90, 0.1, "next event applied")
    assert redis.value(first) == 3

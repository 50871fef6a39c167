"""The HTTP surface as raw bytes (issue 19, issue 15 items 6 and 7): every
status the api sends carries the JSON error body, whoever decides it, and
the connection is closed or kept as HTTP/1.1 says.

The requests are written by hand over a socket, where a client library
would refuse or repair them: over-long request lines, header floods,
malformed request lines and headers, bad Content-Length, chunked bodies,
truncated bodies, bodies longer than their Content-Length, a request in
one-byte writes, pipelined requests. One test per status that the framing
in front of evhttp (api/framing.c) answers: 400, 401, 403, 411, 413, 414,
417, 431, 501, 505; each checks the body, its Content-Type and whether the
connection closes, and that a refused write left nothing in Redis or Kafka.
The stack's counter-api runs with the default limits (8 KiB of request
line and headers, 16 KiB of body); tests that need other settings start a
counter-api of their own (own_process.OwnApi).
"""

import http.client
import json
import socket
import struct
import threading
import time

import pytest

from conftest import Api, counter_name, unique_name, wait_pg_total, wait_until

MAX_HEADER_BYTES = 8192
MAX_BODY_BYTES = 16384
EVENT_MAX_BYTES = 65536
READ_TOKEN = "surface-read-7c1a9e0b2f4d4c8e9a1b"
WRITE_TOKEN = "surface-write-Q2xhdWRlIGRpZCB0aGlz"

# ------------------------------------------------------------- helpers ---


def connect(port, timeout=10):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


class Reader:
    """HTTP/1.1 responses off one socket, in order."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def _more(self, timeout):
        self.sock.settimeout(timeout)
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError
        self.buf += chunk

    def response(self, timeout=10, head=False):
        """(status, headers in lower case, body bytes); None when the
        server closed the connection before a response began."""
        try:
            while b"\r\n\r\n" not in self.buf:
                self._more(timeout)
        except EOFError:
            assert self.buf == b"", f"connection closed inside a response: {self.buf[:200]!r}"
            return None
        head_bytes, _, self.buf = self.buf.partition(b"\r\n\r\n")
        lines = head_bytes.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            assert k.strip().lower() not in headers, f"header {k} twice: {lines}"
            headers[k.strip().lower()] = v.strip()
        if head:
            length = 0
        elif "content-length" in headers:
            length = int(headers["content-length"])
        else:  # HTTP/1.0 without keep-alive: the body runs to the close
            assert lines[0].startswith("HTTP/1.0 "), f"no Content-Length: {lines}"
            try:
                while True:
                    self._more(timeout)
            except EOFError:
                pass
            length = len(self.buf)
        while len(self.buf) < length:
            self._more(timeout)
        body, self.buf = self.buf[:length], self.buf[length:]
        return status, headers, body

    def closed(self, timeout=5):
        """True when the server closes the connection within timeout,
        having sent nothing more."""
        try:
            self._more(timeout)
        except EOFError:
            return self.buf == b""
        except socket.timeout:
            return False
        except ConnectionResetError:
            return True
        raise AssertionError(f"unexpected bytes after the response: {self.buf[:200]!r}")


def exchange(port, data, timeout=10):
    """Sends data on a new connection; (reader, first response)."""
    s = connect(port, timeout)
    s.sendall(data)
    r = Reader(s)
    return r, r.response(timeout)


def assert_json_error(resp, status, code, field=None):
    assert resp is not None, "no response"
    st, headers, body = resp
    assert st == status, (st, body[:300])
    assert headers.get("content-type", "").startswith("application/json"), headers
    doc = json.loads(body)
    assert doc["success"] is False and set(doc) == {"success", "error"}, doc
    err = doc["error"]
    assert err["code"] == code, doc
    assert isinstance(err["message"], str) and err["message"], doc
    assert set(err) <= {"code", "message", "field"}, doc
    if field is not None:
        assert err.get("field") == field, doc
    return doc


def assert_refused_and_closed(reader, resp, status, code, field=None):
    """A framing refusal: the JSON error, Connection: close, and the
    connection then closed by the server."""
    doc = assert_json_error(resp, status, code, field)
    assert resp[1].get("connection", "").lower() == "close", resp[1]
    assert reader.closed(), "the connection stays open after a refusal"
    reader.sock.close()
    return doc


def post_head(name, length, op="increment", extra=""):
    return (
        f"POST /api/v1/counter/{name}/{op} HTTP/1.1\r\nHost: t\r\n"
        f"Content-Type: application/json\r\nContent-Length: {length}\r\n{extra}\r\n"
    ).encode()


def get(path="/healthz", extra=""):
    return f"GET {path} HTTP/1.1\r\nHost: t\r\n{extra}\r\n".encode()


def assert_untouched(redis, kafka, since, name):
    assert redis.value(name) is None, f"{name} is in Redis"
    assert kafka.messages(since, key=name) == [], f"{name} is in Kafka"


@pytest.fixture
def port(stack):
    return stack.api_port



@pytest.fixture
def auth_api(own_api, tmp_path):
    path = tmp_path / "tokens"
    path.write_text(f"read {READ_TOKEN}\nwrite {WRITE_TOKEN}\n")
    path.chmod(0o600)
    return own_api(COUNTER_AUTH_TOKENS_FILE=str(path))


# ------------------------------------------------------------- 414, 431 ---


def test_414_request_line_too_long(port, redis, kafka):
    name = unique_name("it.surface.414")
    since = kafka.end_offsets()
    path = f"/api/v1/counter/{name}/increment?" + "p" * 10_000
    reader, resp = exchange(port, f"POST {path} HTTP/1.1\r\nContent-Length: 0\r\n\r\n".encode())
    assert_refused_and_closed(reader, resp, 414, "uri_too_long")
    assert_untouched(redis, kafka, since, name)


@pytest.mark.parametrize("start,status,code", [
    (b"GET /", 414, "uri_too_long"),
    (b"GET /healthz HTTP/1.1\r\nX-Pad: ", 431, "headers_too_large"),
], ids=["request-line", "header"])
def test_refused_before_the_line_ends(port, start, status, code):
    """Known as soon as the limit is passed: the rest never has to come."""
    s = connect(port)
    s.sendall(start + b"p" * MAX_HEADER_BYTES)
    reader = Reader(s)
    assert_refused_and_closed(reader, reader.response(), status, code)


def test_431_header_flood(port, redis, kafka):
    name = unique_name("it.surface.431")
    since = kafka.end_offsets()
    flood = "".join(f"X-Pad-{i}: {'v' * 90}\r\n" for i in range(100))
    reader, resp = exchange(port, post_head(name, 0, extra=flood))
    assert_refused_and_closed(reader, resp, 431, "headers_too_large")
    assert_untouched(redis, kafka, since, name)


def test_headers_at_the_limit_are_served(port, api, name):
    """Request line, headers, their line ends and the empty line: 8192
    bytes pass, 8193 do not."""
    def request(total):
        head = post_head(name, 0)
        pad = total - len(head) - len("X-Pad: \r\n")
        return head[:-2] + f"X-Pad: {'p' * pad}\r\n\r\n".encode()

    reader, resp = exchange(port, request(MAX_HEADER_BYTES))
    assert resp[0] == 200, resp
    reader.sock.close()
    reader, resp = exchange(port, request(MAX_HEADER_BYTES + 1))
    assert_refused_and_closed(reader, resp, 431, "headers_too_large")
    assert api.value(name) == 1


# ------------------------------------------------------------------ 400 ---

BAD_REQUESTS = [
    ("no-version", b"GET /healthz\r\n\r\n", None),
    ("two-spaces", b"GET  /healthz HTTP/1.1\r\n\r\n", None),
    ("trailing-space", b"GET /healthz HTTP/1.1 \r\n\r\n", None),
    ("lowercase-version", b"GET /healthz http/1.1\r\n\r\n", None),
    ("control-in-target", b"GET /health\x01z HTTP/1.1\r\n\r\n", None),
    ("raw-utf8-target", b"GET /api/v1/counter/\xc3\xa9 HTTP/1.1\r\n\r\n", None),
    ("nul-in-target", b"GET /he\x00althz HTTP/1.1\r\n\r\n", None),
    ("bad-authority", b"GET //h:99999/x HTTP/1.1\r\n\r\n", None),
    ("no-colon", b"GET /healthz HTTP/1.1\r\nNo colon here\r\n\r\n", None),
    ("space-before-colon", b"GET /healthz HTTP/1.1\r\nHost : t\r\n\r\n", None),
    ("folded-header", b"GET /healthz HTTP/1.1\r\nX-A: b\r\n c\r\n\r\n", None),
    ("bare-cr-in-header", b"GET /healthz HTTP/1.1\r\nX-A: b\rc\r\n\r\n", None),
    ("nul-in-header", b"GET /healthz HTTP/1.1\r\nX-A: b\x00c\r\n\r\n", None),
    ("cl-letters", b"POST /x HTTP/1.1\r\nContent-Length: abc\r\n\r\n", "Content-Length"),
    ("cl-negative", b"POST /x HTTP/1.1\r\nContent-Length: -1\r\n\r\n", "Content-Length"),
    ("cl-plus", b"POST /x HTTP/1.1\r\nContent-Length: +2\r\n\r\n{}", "Content-Length"),
    ("cl-list", b"POST /x HTTP/1.1\r\nContent-Length: 2, 2\r\n\r\n{}", "Content-Length"),
    ("cl-twice", b"POST /x HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n{}",
     "Content-Length"),
    ("cl-empty", b"POST /x HTTP/1.1\r\nContent-Length:\r\n\r\n", "Content-Length"),
    ("cl-and-te", b"POST /x HTTP/1.1\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n",
     "Transfer-Encoding"),
]


@pytest.mark.parametrize("case,data,field", BAD_REQUESTS, ids=[c[0] for c in BAD_REQUESTS])
def test_400_bad_request(port, case, data, field):
    reader, resp = exchange(port, data)
    assert_refused_and_closed(reader, resp, 400, "bad_request", field)


def test_400_bad_content_length_on_a_write_applies_nothing(port, redis, kafka):
    name = unique_name("it.surface.badcl")
    since = kafka.end_offsets()
    head = post_head(name, "1_0").replace(b"1_0", b"1 0")
    reader, resp = exchange(port, head + b'{"value":9}')
    assert_refused_and_closed(reader, resp, 400, "bad_request", "Content-Length")
    assert_untouched(redis, kafka, since, name)


def test_body_longer_than_its_content_length(port, api, name):
    """The bytes past Content-Length are the next request: here not one,
    so it is answered 400 after the write, which counts once."""
    body = b'{"value":1}'
    reader, first = exchange(port, post_head(name, len(body)) + body + b'{"value":1000}\r\n\r\n')
    assert first[0] == 200, first
    assert "connection" not in first[1], first[1]
    assert_refused_and_closed(reader, reader.response(), 400, "bad_request")
    assert api.value(name) == 1


# ------------------------------------------------------------------ 411 ---


def test_411_chunked_body(stack, api, redis, kafka):
    """Request bodies are taken with a Content-Length only (RFC 9112 6.3
    allows refusing the others with 411); nothing is applied."""
    name = unique_name("it.surface.411")
    since = kafka.end_offsets()
    conn = http.client.HTTPConnection(stack.api_host, stack.api_port, timeout=15)
    try:
        conn.request("POST", f"/api/v1/counter/{name}/increment",
                     body=iter([b'{"val', b'ue":', b"4}"]),
                     headers={"Content-Type": "application/json"}, encode_chunked=True)
        r = conn.getresponse()
        body = r.read()
        assert r.status == 411, body
        assert r.getheader("Content-Type") == "application/json"
        assert json.loads(body)["error"]["code"] == "length_required"
        assert r.will_close
    finally:
        conn.close()
    reader, resp = exchange(stack.api_port, post_head(name, 0).replace(
        b"Content-Length: 0", b"Transfer-Encoding: chunked") + b"3\r\n{}\n\r\n0\r\n\r\n")
    assert_refused_and_closed(reader, resp, 411, "length_required", "Transfer-Encoding")
    assert_untouched(redis, kafka, since, name)
    assert api.healthz().status == 200


# ------------------------------------------------------------------ 413 ---


def test_413_as_soon_as_content_length_is_seen(port, redis, kafka):
    """Before a byte of the body has come: the headers alone get 413."""
    name = unique_name("it.surface.413")
    since = kafka.end_offsets()
    reader, resp = exchange(port, post_head(name, MAX_BODY_BYTES + 1))
    assert_refused_and_closed(reader, resp, 413, "body_too_large")
    reader, resp = exchange(port, post_head(name, 8 << 30))
    assert_refused_and_closed(reader, resp, 413, "body_too_large")
    assert_untouched(redis, kafka, since, name)


@pytest.mark.parametrize("size", [MAX_BODY_BYTES + 1, 1 << 20])
def test_413_reaches_a_client_that_sends_the_whole_body_first(stack, redis, kafka, size):
    """http.client sends all of the body before it reads: the api answers
    at once and then reads and drops what still comes (it lingers), so
    the answer is not lost to a reset."""
    name = unique_name("it.surface.413w")
    since = kafka.end_offsets()
    conn = http.client.HTTPConnection(stack.api_host, stack.api_port, timeout=30)
    try:
        conn.request("POST", f"/api/v1/counter/{name}/increment",
                     body=b'{"value":1}' + b" " * (size - 11),
                     headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        body = r.read()
    finally:
        conn.close()
    assert r.status == 413, body
    assert json.loads(body)["error"]["code"] == "body_too_large"
    assert_untouched(redis, kafka, since, name)


def test_body_at_the_limit_is_served_on_a_kept_connection(port, api, name):
    body = b'{"value":3}' + b" " * (MAX_BODY_BYTES - 11)
    s = connect(port)
    reader = Reader(s)
    for _ in range(2):
        s.sendall(post_head(name, len(body)) + body)
        resp = reader.response()
        assert resp[0] == 200, resp
    s.close()
    assert api.value(name) == 6


# ------------------------------------------------------------ 401, 403 ---


def test_401_before_the_body_is_read(auth_api, redis, kafka):
    """With auth on, a write without a valid token is refused as soon as
    its headers are in: the body is never read, so the connection closes."""
    name = unique_name("it.surface.401")
    since = kafka.end_offsets()
    for extra in ("", "Authorization: Bearer not-a-token-0000000000\r\n",
                  f"Authorization: Bearer {WRITE_TOKEN}\r\nAuthorization: Bearer {WRITE_TOKEN}\r\n"):
        reader, resp = exchange(auth_api.port, post_head(name, 11, extra=extra))
        doc = assert_refused_and_closed(reader, resp, 401, "unauthorized")
        assert resp[1]["www-authenticate"].startswith("Bearer"), resp[1]
        assert WRITE_TOKEN not in json.dumps(doc)
    # the same answer a request without a body gets
    r = Api(auth_api.endpoint).write(name, "increment")
    assert r.status == 401 and json.loads(r.body) == doc, r.body
    assert_untouched(redis, kafka, since, name)
    assert auth_api.metric('counter_api_refused_total{reason="unauthorized"}',
                           {"Authorization": f"Bearer {READ_TOKEN}"}) == 4


def test_403_before_the_body_is_read(auth_api, redis, kafka):
    name = unique_name("it.surface.403")
    since = kafka.end_offsets()
    reader, resp = exchange(auth_api.port, post_head(
        name, MAX_BODY_BYTES, extra=f"Authorization: Bearer {READ_TOKEN}\r\n"))
    assert_refused_and_closed(reader, resp, 403, "forbidden")
    assert_untouched(redis, kafka, since, name)
    # a write token passes, and its body is read
    body = b'{"value":2}'
    reader, resp = exchange(auth_api.port, post_head(
        name, len(body), extra=f"Authorization: Bearer {WRITE_TOKEN}\r\n") + body)
    assert resp[0] == 200, resp
    assert redis.value(name) == 2


# ------------------------------------------------------------------ 417 ---


def test_417_unknown_expectation(port, redis, kafka):
    name = unique_name("it.surface.417")
    since = kafka.end_offsets()
    reader, resp = exchange(port, post_head(name, 2, extra="Expect: 200-ok\r\n") + b"{}")
    assert_refused_and_closed(reader, resp, 417, "expectation_failed", "Expect")
    assert_untouched(redis, kafka, since, name)


def test_100_continue_still_works(port, api, name):
    s = connect(port)
    reader = Reader(s)
    s.sendall(post_head(name, 11, extra="Expect: 100-continue\r\n"))
    s.settimeout(5)
    assert s.recv(64).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
    s.sendall(b'{"value":7}')
    assert reader.response()[0] == 200
    s.close()
    assert api.value(name) == 7


# ------------------------------------------------------------- 501, 505 ---


@pytest.mark.parametrize("method", ["QUERY", "PROPFIND", "get", "CONNECT"])
def test_501_unknown_method(port, method):
    target = "h.example:443" if method == "CONNECT" else "/healthz"
    reader, resp = exchange(port, f"{method} {target} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    assert_refused_and_closed(reader, resp, 501, "not_implemented")


@pytest.mark.parametrize("line", [b"GET /healthz HTTP/2.0", b"PRI * HTTP/2.0", b"GET / HTTP/0.9"])
def test_505_not_http_1(port, line):
    reader, resp = exchange(port, line + b"\r\n\r\n")
    assert_refused_and_closed(reader, resp, 505, "http_version_not_supported")


# ------------------------------------------- what stays as it was ---


def test_one_byte_writes(port, api, name):
    """A request in one-byte writes is the same request; the connection
    is kept."""
    body = b'{"value":5}'
    s = connect(port)
    reader = Reader(s)
    for b in post_head(name, len(body)) + body:
        s.sendall(bytes([b]))
        time.sleep(0.002)
    resp = reader.response()
    assert resp[0] == 200, resp
    s.sendall(get(f"/api/v1/counter/{name}"))
    st, _, data = reader.response()
    assert st == 200 and json.loads(data)["value"] == 5
    s.close()


def test_pipelined_requests_answered_in_order(port, api, name):
    body = b'{"value":2}'
    s = connect(port)
    reader = Reader(s)
    s.sendall((post_head(name, len(body)) + body) * 3 + get(f"/api/v1/counter/{name}")
              + get("/no/such/path") + get("/healthz"))
    values = [json.loads(reader.response()[2])["current_value"] for _ in range(3)]
    assert values == [2, 4, 6]
    assert json.loads(reader.response()[2])["value"] == 6
    assert_json_error(reader.response(), 404, "not_found")
    assert reader.response()[0] == 200
    assert not reader.closed(0.5), "a kept-alive connection was closed"
    s.close()


def test_a_pipelined_flood_is_answered_whole(port, api, name):
    """5000 requests sent at once by a client that does not read for a
    second: the api stops reading past its bound (max_header_bytes +
    max_body_bytes waiting) and goes on once it has answered; every request
    is answered, in order, and every write counted once."""
    body = b'{"value":1}'
    data = (get() + post_head(name, len(body)) + body) * 2500
    s = connect(port, timeout=30)
    sender = threading.Thread(target=s.sendall, args=(data,))
    sender.start()
    time.sleep(1)
    reader = Reader(s)
    for i in range(2500):
        assert reader.response(timeout=30)[0] == 200
        st, _, doc = reader.response(timeout=30)
        assert st == 200 and json.loads(doc)["current_value"] == i + 1
    sender.join(30)
    s.close()
    assert api.value(name) == 2500


def test_pipelined_refusal_comes_after_the_answers_before_it(port, api, name):
    s = connect(port)
    reader = Reader(s)
    s.sendall(post_head(name, 0) * 2 + b"GET /healthz HTTP/1.1\r\nA: b\r\n c\r\n\r\n"
              + post_head(name, 0))
    assert [reader.response()[0] for _ in range(2)] == [200, 200]
    assert_refused_and_closed(reader, reader.response(), 400, "bad_request")
    assert api.value(name) == 2


def test_errors_of_handlers_keep_the_connection(port, name):
    """A 4xx decided after the request was read whole leaves the
    connection usable (HTTP/1.1 keep-alive)."""
    s = connect(port)
    reader = Reader(s)
    for data, status, code in (
        (post_head(name, 9) + b'{"value":', 400, "invalid_json"),
        (post_head(name, 27) + b'{"value":1,"value":1000000}', 400, "invalid_json"),
        (get(f"/api/v1/counter/{name}/nope"), 404, "not_found"),
        (post_head(name, 0).replace(b"POST", b"PUT"), 405, "method_not_allowed"),
        (post_head("bad{name", 0), 400, "invalid_name"),
    ):
        s.sendall(data)
        assert_json_error(reader.response(), status, code)
    s.sendall(get())
    assert reader.response()[0] == 200
    s.close()


def test_head_answers_have_no_body(port):
    """HEAD gets GET's headers, its length and no body: the next answer on
    the connection starts where it should (libevent 2.1 wrote the body)."""
    s = connect(port)
    reader = Reader(s)
    s.sendall(b"HEAD /healthz HTTP/1.1\r\n\r\n" + get() + b"HEAD /nope HTTP/1.1\r\n\r\n" + get())
    st, headers, body = reader.response(head=True)
    assert st == 200 and int(headers["content-length"]) > 0 and body == b""
    assert reader.response()[0] == 200
    st, headers, body = reader.response(head=True)
    assert st == 404 and body == b""
    assert reader.response()[0] == 200
    s.close()


def test_body_of_head_and_trace_is_dropped(port, api, name):
    """evhttp 2.1 reads no body of a HEAD or TRACE and took it for the next
    request; framing drops it, so the requests after it are read right."""
    s = connect(port)
    reader = Reader(s)
    s.sendall(b"HEAD /healthz HTTP/1.1\r\nContent-Length: 7\r\n\r\nGET /x "
              + f"TRACE /api/v1/counter/{name}/increment HTTP/1.1\r\n".encode()
              + b"Content-Length: 11\r\n\r\n" + b'{"value":1}' + post_head(name, 0))
    st, _, body = reader.response(head=True)
    assert st == 200 and body == b""
    doc = assert_json_error(reader.response(), 405, "method_not_allowed")
    assert reader.response()[0] == 200
    assert not reader.closed(0.5), doc
    s.close()
    assert api.value(name) == 1


def test_http_1_0_closes_unless_kept_alive(port):
    reader, resp = exchange(port, b"GET /healthz HTTP/1.0\r\n\r\n")
    assert resp[0] == 200 and json.loads(resp[2])["status"] == "ok"
    assert reader.closed()
    reader, resp = exchange(port, b"GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    assert resp[0] == 200 and not reader.closed(0.5)
    reader.sock.close()
    # a refusal answers in the client's version
    reader, resp = exchange(port, b"GET /healthz HTTP/1.0\r\nX-A: b\r\n c\r\n\r\n")
    assert_refused_and_closed(reader, resp, 400, "bad_request")


def test_truncated_body_is_not_applied(own_api, redis, kafka):
    """A body cut short by the client's close, or by the idle timeout, is
    never a request: the connection closes without an answer."""
    a = own_api(COUNTER_SERVER_TIMEOUT_S="1")
    name = unique_name("it.surface.trunc")
    since = kafka.end_offsets()
    s = connect(a.port)
    s.sendall(post_head(name, 50) + b'{"value":1')
    s.shutdown(socket.SHUT_WR)
    assert Reader(s).response() is None
    s.close()
    s = connect(a.port)
    s.sendall(post_head(name, 50) + b'{"value":1')
    assert Reader(s).response(timeout=8) is None  # closed after the 1 s timeout
    s.close()
    # an RST in the middle of the body
    s = connect(a.port)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.sendall(post_head(name, 50) + b'{"value":1')
    s.close()
    assert Api(a.endpoint).healthz().status == 200
    assert_untouched(redis, kafka, since, name)


# ----------------------------------------------- bodies, issue 15 item 7 ---


def test_duplicate_keys_are_refused_naming_the_key(api, redis, kafka, name):
    since = kafka.end_offsets()
    r = api.write(name, "increment", b'{"value": 1, "value": 1000}')
    assert r.status == 400 and r.json["error"]["code"] == "invalid_json", r.json
    assert r.json["error"]["field"] == "value" and '"value"' in r.json["error"]["message"]
    r = api.write(name, "increment", b'{"metadata": {"a": {"k": 1, "\\u006b": 2}}}')
    assert r.status == 400 and r.json["error"]["field"] == "metadata", r.json
    assert '"k"' in r.json["error"]["message"], r.json
    assert_untouched(redis, kafka, since, name)


@pytest.mark.parametrize("text,expect", [
    ("9223372036854775807", 9223372036854775807),
    ("-9223372036854775808", -9223372036854775808),
    ("-9223372036854775809", None),
    ("9223372036854775808", None),
    ("9007199254740993", 9007199254740993),
    ("-9007199254740993", -9007199254740993),
])
def test_set_value_at_the_int64_edges(api, redis, kafka, text, expect):
    """A gauge set to -2^63 - 1 was applied as -2^63; now every value is
    exact or refused naming the field."""
    name = counter_name("it_free_")
    since = kafka.end_offsets()
    r = api.write(name, "set", f'{{"value": {text}}}'.encode())
    if expect is None:
        assert r.status == 400, r.json
        assert r.json["error"]["code"] == "invalid_field" and r.json["error"]["field"] == "value"
        assert_untouched(redis, kafka, since, name)
    else:
        assert r.status == 200, r.json
        assert r.json["current_value"] == expect
        assert redis.value(name) == expect


def test_metadata_with_slashes_does_not_grow(api, pg, kafka, name):
    """json-c wrote '/' as "\\/": a body under the limit could make an
    event twice its size. The event carries the metadata as it came."""
    since = kafka.end_offsets()
    meta = {"url": "/" * 15_000}
    r = api.incr(name, 1, metadata=meta)
    assert r.status == 200, r.json
    (m,) = kafka.messages(since, key=name)
    assert "\\/" not in m["payload"] and m["event"]["metadata"] == meta
    assert len(m["payload"]) < 15_200
    wait_pg_total(pg, name, 1)


def _event_bytes(name, meta, delta=1):
    """The size of the event the api writes for an increment by delta."""
    return len(
        '{"v":1,"id":"' + "0" * 36 + '","counter":' + json.dumps(name)
        + f',"delta":{delta},"ts":' + "1" * 13 + ',"metadata":'
        + json.dumps(meta, separators=(",", ":"), ensure_ascii=False) + "}"
    )


def test_event_size_limit_at_the_limit_and_one_byte_over(own_api, redis, kafka, pg):
    """With max_body_bytes above the 64 KiB the log's consumers take, a
    write whose event would pass it is refused up front (413, field
    metadata); one exactly at it is logged and counted."""
    a = own_api(COUNTER_SERVER_MAX_BODY_BYTES="131072")
    own = Api(a.endpoint)
    name = unique_name("it.surface.evsize")
    since = kafka.end_offsets()

    def meta_for(total):
        pad = total - _event_bytes(name, {"pad": ""})
        return {"pad": "x" * pad}

    r = own.incr(name, 1, metadata=meta_for(EVENT_MAX_BYTES + 1))
    assert r.status == 413, r.json
    assert r.json["error"]["code"] == "body_too_large" and r.json["error"]["field"] == "metadata"
    assert_untouched(redis, kafka, since, name)
    r = own.incr(name, 1, metadata=meta_for(EVENT_MAX_BYTES))
    assert r.status == 200, r.json
    (m,) = kafka.messages(since, key=name)
    assert len(m["payload"].encode()) == EVENT_MAX_BYTES
    wait_pg_total(pg, name, 1)


# ------------------------------------------------------------ memory ---


def test_slow_bodies_complete_and_a_large_one_is_refused_at_once(own_api):
    """200 connections each send a body's headers and all but its last
    byte; meanwhile a Content-Length past the limit is refused at once and
    the api stays responsive; every write completes once its last byte
    comes."""
    a = own_api(COUNTER_SERVER_MAX_BODY_BYTES="4096")
    name = unique_name("it.surface.slow")
    body = b'{"value":1}' + b" " * (4096 - 11)
    socks = []
    try:
        for _ in range(200):
            s = connect(a.port)
            s.sendall(post_head(name, len(body)) + body[:-1])
            socks.append(s)
        big = connect(a.port)
        big.sendall(post_head(name, 64 << 20))
        reader = Reader(big)
        assert_refused_and_closed(reader, reader.response(), 413, "body_too_large")
        assert Api(a.endpoint).healthz(timeout=5).status == 200
        for s in socks:
            s.sendall(body[-1:])
        for s in socks:
            assert Reader(s).response()[0] == 200
    finally:
        for s in socks:
            s.close()
    assert wait_until(lambda: Api(a.endpoint).value(name) == 200, 10)

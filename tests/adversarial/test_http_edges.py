"""Adversarial sequences at the HTTP edge (issue 15 items 6 and 7, issue
19): ordinary requests, sent in numbers or in an order meant to hurt.

- slow, near-complete bodies on a few hundred connections, and bodies
  announced larger than the limit (refused before they are read);
- floods of the endpoints that need no token (/readyz, /healthz) on 1200
  connections while Redis is frozen: the fallback reads from PostgreSQL
  still answer;
- bodies with repeated keys, and values at and around +-2^53 and +-2^63;
- metadata that json-c's escaping would grow past the event size the
  persister takes.

Each ends as every adversarial test must: a write to another counter
still reaches PostgreSQL within 10 s, and `counterctl verify` exits 0.
"""

import os
import selectors
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from conftest import Api, counter_name, freeze, unique_name, wait_pg_total, wait_until
from test_verify import counterctl

INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)


def pipeline_still_flows(api, pg):
    """A write to a counter of its own reaches PostgreSQL within 10 s, and
    Redis and PostgreSQL agree on every counter."""
    other = unique_name("adv.after")
    r = api.incr(other, 1)
    assert r.status == 200, r.json
    wait_pg_total(pg, other, 1, timeout=10)
    v = counterctl("verify", "--wait-s", "60")
    assert v.returncode == 0, f"counterctl verify exit {v.returncode}:\n{v.stdout}\n{v.stderr}"


def connect(port, timeout=10):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def head(name, length):
    return (f"POST /api/v1/counter/{name}/increment HTTP/1.1\r\nHost: a\r\n"
            f"Content-Length: {length}\r\n\r\n").encode()


def status_of(sock, timeout):
    """The status of the first answer on sock within timeout, else None."""
    sock.settimeout(timeout)
    data = b""
    try:
        while b"\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                return None
            data += chunk
    except (socket.timeout, ConnectionResetError):
        return None
    return int(data.split()[1])


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(f.read().split("VmRSS:")[1].split()[0])



# ---------------------------------------------------------- slow bodies ---


def test_slow_bodies_on_many_connections(api, pg, stack):
    """300 connections each hold a body one byte short of the limit; 300
    more announce 1 MiB (evhttp's old cap was 4 x the limit, at least
    1 MiB: each would have been read and held). The large ones are refused
    at once, before a byte of their body; the api's memory grows by the
    bodies it may hold; reads answer meanwhile; the slow writes all land
    once their last byte comes."""
    limit = stack.max_body_bytes
    name = unique_name("adv.slow")
    body = b'{"value":1}' + b" " * (limit - 11)
    pid = stack.pid("counter-api")
    before = rss_kib(pid)
    slow, large = [], []
    try:
        for _ in range(300):
            s = connect(stack.api_port)
            s.sendall(head(name, limit) + body[:-1])
            slow.append(s)
        for _ in range(300):
            s = connect(stack.api_port)
            s.sendall(head(unique_name("adv.large"), 1 << 20))
            large.append(s)
        refused = [status_of(s, 5) for s in large]
        assert refused == [413] * len(large), (
            f"{refused.count(None)} of {len(large)} 1 MiB bodies were not refused "
            "before they were sent")
        t0 = time.monotonic()
        assert api.healthz(timeout=5).status == 200
        assert api.get(name, timeout=5).status == 200
        assert time.monotonic() - t0 < 2, "reads were slow while slow bodies were held"
        grown = rss_kib(pid) - before
        # 300 bodies of 16 KiB: a few MiB (ASan's own bookkeeping aside);
        # 300 held MiB-bodies would be 300 MiB
        assert grown < 100 * 1024, f"the api grew by {grown} KiB"
        for s in slow:
            s.sendall(body[-1:])
        statuses = [status_of(s, 15) for s in slow]
        assert statuses == [200] * len(slow), statuses
    finally:
        for s in slow + large:
            s.close()
    assert api.value(name) == 300
    wait_pg_total(pg, name, 300)
    pipeline_still_flows(api, pg)


# ---------------------------------------- unauthenticated endpoint floods ---


def flood(port, paths, stop, counts):
    """One keep-alive connection per path, each sending its request again
    as soon as the answer is in, until stop is set; counts[(path,
    status)] answers. One thread, selectors."""
    sel = selectors.DefaultSelector()
    for path in paths:
        s = connect(port)
        s.setblocking(False)
        req = f"GET {path} HTTP/1.1\r\nHost: a\r\n\r\n".encode()
        s.send(req)
        sel.register(s, selectors.EVENT_READ, [path, req, b""])
    try:
        while not stop.is_set():
            for key, _ in sel.select(0.1):
                path, req, buf = key.data
                chunk = key.fileobj.recv(65536)
                assert chunk, f"{path}: the api closed a kept-alive connection"
                buf += chunk
                while b"\r\n\r\n" in buf:
                    head, _, rest = buf.partition(b"\r\n\r\n")
                    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                    if len(rest) < length:
                        break
                    status = int(head.split()[1])
                    counts[(path, status)] = counts.get((path, status), 0) + 1
                    buf = rest[length:]
                    key.fileobj.send(req)
                key.data[2] = buf
    finally:
        for key in list(sel.get_map().values()):
            key.fileobj.close()
        sel.close()


def test_readyz_and_healthz_floods_while_redis_is_frozen(api, pg, stack, name):
    """Redis frozen: reads fall back to PostgreSQL through the api's one
    fallback reader (its queue takes 1024 queries). 1100 kept-alive
    connections ask /readyz over and over and 100 more /healthz (no token,
    not limited by max_inflight) for 4 s. /readyz asked PostgreSQL once per
    request: the queue filled, and fallback reads (and /readyz itself) got
    503. It answers from a state refreshed at most once a second now:
    every fallback read answers within a second, every /readyz says
    ready."""
    assert api.incr(name, 7).status == 200
    wait_pg_total(pg, name, 7)
    pid = stack.pid("redis")
    stop = threading.Event()
    counts = {}
    reads = []
    freeze(pid)
    try:
        wait_until(lambda: api.get(name).json.get("source") == "postgres", 10, 0.1,
                   "reads from postgres")
        with ThreadPoolExecutor(1) as ex:
            flooding = ex.submit(flood, stack.api_port,
                                 ["/readyz"] * 1100 + ["/healthz"] * 100, stop, counts)
            t_end = time.monotonic() + 4
            while time.monotonic() < t_end and not flooding.done():
                t0 = time.monotonic()
                r = api.get(name, timeout=10)
                reads.append((time.monotonic() - t0, r.status, r.json))
                time.sleep(0.05)
            stop.set()
            flooding.result(30)
    finally:
        stop.set()
        os.kill(pid, signal.SIGCONT)
    assert set(counts) == {("/readyz", 200), ("/healthz", 200)}, counts
    assert counts[("/readyz", 200)] > 1100 and counts[("/healthz", 200)] > 100, counts
    for _, status, body in reads:
        assert status == 200 and body["source"] == "postgres" and body["value"] == 7, body
    slowest = max(t for t, _, _ in reads)
    assert slowest < 1.0, f"a fallback read took {slowest:.2f}s during the flood"
    wait_until(lambda: api.healthz().json.get("redis") is True, 30, 0.1, "redis back")
    pipeline_still_flows(api, pg)


# ----------------------------------------------------------------- bodies ---


def test_duplicate_key_bodies(api, redis, pg, name):
    """Each body below would be applied as one of its values by json-c (the
    last) and checked as another by a proxy that keeps the first; each is
    refused, and only the plain writes count, in Redis and PostgreSQL."""
    bodies = [
        b'{"value": 1, "value": 1000}',
        b'{"value": 1000, "value": 1}',
        b'{"value": 1, "\\u0076alue": 1000}',
        b'{"value": 1, "metadata": {"a": 1, "a": 2}}',
        b'{"metadata": {"x": [{"k": 1}, {"k": 1, "k": 2}]}}',
        b'{"user_id": "a", "user_id": "b"}',
    ]
    for b in bodies * 3:
        r = api.write(name, "increment", b)
        assert r.status == 400 and r.json["error"]["code"] == "invalid_json", (b, r.json)
        assert api.incr(name, 2).status == 200
    assert redis.value(name) == 2 * 3 * len(bodies)
    wait_pg_total(pg, name, 2 * 3 * len(bodies))
    pipeline_still_flows(api, pg)


def test_int64_edge_values(api, redis, pg):
    """Values at and around +-2^53 and +-2^63, as increments, decrements
    and sets, each on a counter of its own: every value is exact in the
    answer, in Redis and in PostgreSQL, or the write is refused naming
    `value` and changes nothing."""
    cases = []  # (name, expected value in Redis and PostgreSQL)

    def write(name, op, text, ok):
        r = api.write(name, op, f'{{"value": {text}}}'.encode())
        if ok:
            assert r.status == 200, (op, text, r.json)
        else:
            assert r.status in (400, 422), (op, text, r.json)
            assert r.json["error"]["field"] == "value", r.json
        return r

    for text, ok in ((INT64_MAX, True), (INT64_MAX + 1, False), (2**64, False),
                     (-(2**63) - 1, False), (2**53 + 1, True), (2**53, True)):
        n = unique_name("adv.int.inc")
        write(n, "increment", text, ok)
        cases.append((n, text if ok else None))
    for text, ok in ((INT64_MAX, True), (INT64_MAX + 1, False), (2**53 + 1, True)):
        n = unique_name("adv.int.dec")
        write(n, "decrement", text, ok)
        cases.append((n, -text if ok else None))
    for text, ok in ((INT64_MIN, True), (INT64_MIN - 1, False), (INT64_MAX, True),
                     (INT64_MAX + 1, False), (-(2**53) - 1, True), (2**53 + 1, True),
                     (-(2**64), False)):
        n = counter_name("it_free_")
        r = write(n, "set", text, ok)
        if ok:
            assert r.json["current_value"] == text, r.json
        cases.append((n, text if ok else None))
    # at the edge of the range, then one past it: refused, nothing changes
    n = unique_name("adv.int.edge")
    write(n, "decrement", INT64_MAX, True)
    write(n, "decrement", 1, True)
    r = api.write(n, "decrement", b'{"value": 1}')
    assert r.status == 422 and r.json["error"]["code"] == "value_out_of_range", r.json
    cases.append((n, INT64_MIN))

    for n, expect in cases:
        assert redis.value(n) == expect, (n, redis.value(n), expect)
        if expect is not None:
            assert api.value(n) == expect
            wait_pg_total(pg, n, expect)
        else:
            assert pg.total(n) is None
    pipeline_still_flows(api, pg)


def test_metadata_that_escaping_would_grow(own_api, api, redis, kafka, pg):
    """With max_body_bytes at 64 KiB, metadata of 60000 '/' was written
    into the event as "\\/": 120 KB, which the persister sends to the
    dead-letter topic after the write was acknowledged. It is logged as it
    came now, and counted; metadata that would make an event over 64 KiB
    is refused up front (413, field metadata), before anything is applied."""
    a = own_api(COUNTER_SERVER_MAX_BODY_BYTES="65536")
    own = Api(a.endpoint)
    name, big = unique_name("adv.slash"), unique_name("adv.slash.big")
    since = kafka.end_offsets()
    r = own.incr(name, 1, metadata={"p": "/" * 60000})
    assert r.status == 200, r.json
    wait_pg_total(pg, name, 1, timeout=30)
    r = own.incr(big, 1, metadata={"p": "x" * 65400})
    assert r.status == 413, r.json
    assert r.json["error"]["field"] == "metadata", r.json
    assert redis.value(big) is None and kafka.messages(since, key=big) == []
    pipeline_still_flows(api, pg)

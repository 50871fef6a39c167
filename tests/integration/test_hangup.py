"""Clients that hang up: a write sent and the socket closed at once (FIN or
RST, before or while the api works on it), or closed before the request is
complete. The api must stay up, and every write it let into Redis must
also be in Kafka and so in PostgreSQL (G1/G3): Redis == the sum of the
counter's Kafka events == PostgreSQL, exactly.
"""

import os
import random
import signal
import socket
import struct
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from conftest import CATCH_UP_S, freeze, pid_alive, wait_until

BODY = b'{"value":1}'

COMPLETE_MODES = ("close", "rst", "shutdown-wr", "delayed-close", "delayed-rst",
                  "pipelined-close", "read-one-byte")
INCOMPLETE_MODES = ("mid-body", "headers-only", "mid-headers", "mid-request-line",
                    "mid-body-rst", "chunked-unfinished")


def _head(name, length=len(BODY), extra=""):
    return (
        f"POST /api/v1/counter/{name}/increment HTTP/1.1\r\n"
        f"Host: it\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\n{extra}\r\n"
    ).encode()


def _rst(s):
    # Linger 0: close() sends RST instead of FIN.
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def hang_up(stack, name, mode, rng):
    """One write over a raw socket, abandoned as `mode` says."""
    req = _head(name) + BODY
    s = socket.create_connection((stack.api_host, stack.api_port), timeout=5)
    try:
        if mode == "close":
            s.sendall(req)
        elif mode == "rst":
            _rst(s)
            s.sendall(req)
        elif mode == "shutdown-wr":
            s.sendall(req)
            s.shutdown(socket.SHUT_WR)
        elif mode == "delayed-close":
            s.sendall(req)
            time.sleep(rng.uniform(0, 0.02))
        elif mode == "delayed-rst":
            _rst(s)
            s.sendall(req)
            time.sleep(rng.uniform(0, 0.02))
        elif mode == "pipelined-close":
            s.sendall(req * 3)
        elif mode == "read-one-byte":
            s.sendall(req)
            s.recv(1)
        elif mode == "mid-body":
            s.sendall(_head(name) + BODY[: rng.randint(0, len(BODY) - 1)])
        elif mode == "mid-body-rst":
            _rst(s)
            s.sendall(_head(name, length=100) + BODY)
        elif mode == "headers-only":
            s.sendall(_head(name))
        elif mode == "mid-headers":
            h = _head(name)
            s.sendall(h[: rng.randint(len(h) // 2, len(h) - 1)])
        elif mode == "mid-request-line":
            s.sendall(f"POST /api/v1/counter/{name}/incr".encode())
        elif mode == "chunked-unfinished":
            s.sendall(
                f"POST /api/v1/counter/{name}/increment HTTP/1.1\r\nHost: it\r\n"
                "Transfer-Encoding: chunked\r\n\r\n5\r\n{\"val".encode()
            )
        else:
            raise ValueError(mode)
    except OSError:
        pass  # the api may reset us first; that is part of the game
    finally:
        s.close()


def _kafka_sum(kafka, since, name):
    msgs = kafka.messages(since, key=name)
    ids = [m["event"]["id"] for m in msgs]
    assert len(ids) == len(set(ids)), "an event id appears twice in Kafka"
    for m in msgs:
        assert m["headers_dict"]["origin"] == "api" and m["event"]["delta"] == 1, m
    return sum(m["event"]["delta"] for m in msgs), len(msgs)


def _settled(api, redis, pg, kafka, since, name):
    """(redis, kafka sum, pg, api) once they agree and stop moving."""
    state = {}

    def check():
        r = redis.value(name) or 0
        k, _ = _kafka_sum(kafka, since, name)
        p = pg.total(name) or 0
        a = api.value(name)
        state["last"] = (r, k, p, a)
        return r == k == p == a

    try:
        wait_until(check, CATCH_UP_S, 0.5)
    except AssertionError:
        r, k, p, a = state["last"]
        raise AssertionError(
            f"{name}: Redis {r}, Kafka events {k}, PostgreSQL {p}, GET {a} "
            f"did not converge within {CATCH_UP_S}s"
        ) from None
    return state["last"]


def test_hangups_leave_api_up_and_stores_consistent(api, redis, pg, kafka, stack, name):
    complete, incomplete = f"{name}-c", f"{name}-i"
    api_pid = stack.pid("counter-api")
    assert pid_alive(api_pid), "counter-api is not running"
    since = kafka.end_offsets()

    per_mode = 150
    jobs = [(complete, m) for m in COMPLETE_MODES for _ in range(per_mode)]
    jobs += [(incomplete, m) for m in INCOMPLETE_MODES for _ in range(per_mode)]
    random.Random(7).shuffle(jobs)
    local = threading.local()

    def run(job):
        if not hasattr(local, "rng"):
            local.rng = random.Random(threading.get_ident())
        hang_up(stack, job[0], job[1], local.rng)

    t0 = time.monotonic()
    with ThreadPoolExecutor(max_workers=16) as ex:
        list(ex.map(run, jobs))
    took = time.monotonic() - t0

    # Still up, same process, and answering.
    assert pid_alive(api_pid), "counter-api died while clients hung up"
    assert stack.pid("counter-api") == api_pid
    h = api.healthz()
    assert h.status == 200 and h.json["status"] == "ok", h.json

    r, k, p, a = _settled(api, redis, pg, kafka, since, complete)
    # Most of the complete requests must have been served; a reset can beat
    # the request to the api, so not all of them.
    assert r > 0, f"none of {per_mode * len(COMPLETE_MODES)} complete writes was applied"

    # Incomplete requests never reach the handler: no trace anywhere.
    assert redis.stored(incomplete) == {}, redis.stored(incomplete)
    assert kafka.messages(since, key=incomplete) == []
    assert pg.total(incomplete) is None

    # A normal client is served right after, and the count goes on from r.
    w = api.incr(complete, 1)
    assert w.status == 200 and w.json["current_value"] == r + 1, w.json
    print(f"{len(jobs)} hang-ups in {took:.1f}s; {r} of "
          f"{per_mode * len(COMPLETE_MODES)} complete writes applied")


def test_hangup_while_redis_is_slow(api, redis, pg, kafka, stack, name):
    """Clients leave while their writes wait on a stalled Redis (the api
    answers 503 indeterminate to nobody, then finishes the write when Redis
    runs it): still whole, in every store."""
    since = kafka.end_offsets()
    api_pid = stack.pid("counter-api")
    assert redis.cli("CLIENT", "PAUSE", "1500", "WRITE") == "OK"
    rng = random.Random(11)
    for i in range(40):
        hang_up(stack, name, ("close", "delayed-close", "shutdown-wr")[i % 3], rng)
    time.sleep(1.6)
    r, k, p, a = _settled(api, redis, pg, kafka, since, name)
    assert r == 40, f"only {r} of 40 complete writes applied"
    assert pid_alive(api_pid)


def test_hangup_while_kafka_is_slow(api, redis, pg, kafka, stack, name):
    """Clients leave while their writes, already in Redis, wait for Kafka's
    acknowledgement (broker stopped for less than the delivery timeout):
    the answers go to nobody, and every write is whole."""
    since = kafka.end_offsets()
    api_pid = stack.pid("counter-api")
    kafka_pid = stack.pid("kafka")
    assert kafka_pid
    rng = random.Random(13)
    freeze(kafka_pid)
    try:
        for i in range(40):
            # Nothing that waits for an answer: the stall must stay well
            # under kafka.delivery_timeout_ms (2 s).
            hang_up(stack, name, ("close", "delayed-close", "shutdown-wr")[i % 3], rng)
        time.sleep(0.5)
    finally:
        os.kill(kafka_pid, signal.SIGCONT)
    r, k, p, a = _settled(api, redis, pg, kafka, since, name)
    assert pid_alive(api_pid)
    assert r == 40, f"only {r} of 40 complete writes applied"


def test_hangup_after_answer_on_keep_alive(api, redis, pg, kafka, stack, name):
    """Keep-alive clients that read one answer, send the next write and
    leave: every write is whole."""
    since = kafka.end_offsets()
    req = _head(name) + BODY

    def client(_):
        s = socket.create_connection((stack.api_host, stack.api_port), timeout=5)
        try:
            s.sendall(req)
            s.recv(4096)
            s.sendall(req)
        except OSError:
            pass
        finally:
            s.close()

    with ThreadPoolExecutor(max_workers=8) as ex:
        list(ex.map(client, range(100)))
    r, k, p, a = _settled(api, redis, pg, kafka, since, name)
    assert 100 <= r <= 200, r

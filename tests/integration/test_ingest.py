"""counter-ingest, the bulk loader (issue 4): JSON lines from files or stdin
are validated, produced to the topic with delivery confirmation, counted on
stdout, and reflected in the exit status.

What a user sees is checked: the counts line, the exit status, the
"line N: reason" reports on stderr, the events in Kafka (read from the
offsets taken just before the run, matched by id, with no "origin" header
since the api has not applied them) and the persister's total in
PostgreSQL. The Kafka-down test stops the broker and starts it again in a
finally block, and waits until writes work before the next test.
"""

import json
import os
import re
import signal
import subprocess
import time
import uuid

import pytest

from conftest import input_kafka, pid_alive, unique_name, wait_pg_total, wait_until

SANITIZER_MARKERS = ("AddressSanitizer", "LeakSanitizer", "runtime error:", "ThreadSanitizer")

# The happy paths get a generous delivery timeout so that a broker slowed
# by the rest of the suite cannot fail them; they never wait for it.
RELAXED_ENV = {"COUNTER_KAFKA_DELIVERY_TIMEOUT_MS": "10000"}


@pytest.fixture
def kafka(stack):
    """counter-ingest writes into the input topic: read there."""
    return input_kafka(stack)


@pytest.fixture(scope="module")
def ingest_bin():
    bin_dir = os.environ.get("BIN_DIR")
    assert bin_dir, "BIN_DIR is not set: source the stack's stack.env"
    path = os.path.join(bin_dir, "counter-ingest")
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        pytest.fail(f"counter-ingest not found at {path}: build it", pytrace=False)
    return path


class Run:
    def __init__(self, proc, took):
        self.rc = proc.returncode
        self.stdout = proc.stdout
        self.stderr = proc.stderr
        self.took = took
        lines = [l for l in proc.stdout.splitlines() if l.startswith("{")]
        self.counts = json.loads(lines[-1]) if lines else None

    def __repr__(self):
        return f"rc={self.rc} counts={self.counts} stderr tail:\n{self.stderr[-3000:]}"


def ingest(ingest_bin, *args, input="", env=None, timeout=60):
    t0 = time.monotonic()
    proc = subprocess.run(
        [ingest_bin, *args],
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **RELAXED_ENV, **(env or {})},
    )
    r = Run(proc, time.monotonic() - t0)
    assert not any(m in r.stderr for m in SANITIZER_MARKERS), r
    return r


def make_events(counter, n):
    """n valid events of counter: deltas of both signs and 64-bit size,
    some with user_id and metadata."""
    now = int(time.time() * 1000)
    events = []
    for i in range(n):
        ev = {"v": 1, "id": f"ing-{uuid.uuid4()}", "counter": counter,
              "delta": (i % 7) + 1, "ts": now - i}
        if i % 10 == 9:
            ev["delta"] = -3
        if i == 1:
            ev["delta"] = 1 << 40
        if i % 3 == 0:
            ev["user_id"] = f"user-{i}"
        if i % 5 == 0:
            ev["metadata"] = {"source": "backfill", "n": i, "path": "a/b", "ok": True}
        events.append(ev)
    return events


def lines_of(events):
    return "".join(json.dumps(ev) + "\n" for ev in events)


def counts(read, invalid, delivered, failed):
    return {"read": read, "invalid": invalid, "delivered": delivered, "failed": failed}


def produced(kafka, since, counter):
    """The messages of key counter after `since` that a producer of new
    events wrote: those without an origin header (counter-applier adds
    its record of each, with "origin: applier")."""
    return [m for m in kafka.messages(since, key=counter) if "origin" not in m["headers_dict"]]


def assert_in_kafka(kafka, since, counter, events):
    """Exactly these events, in this order, under key counter on one
    partition, each as written and without an origin header; nothing else
    under that key but the applier's records of them."""
    msgs = kafka.messages(since, key=counter)
    own = [m for m in msgs if "origin" not in m["headers_dict"]]
    assert [m["event"]["id"] if m["event"] else m["payload"] for m in own] == [
        e["id"] for e in events], [m["payload"][:200] for m in own]
    assert len({m["partition"] for m in msgs}) <= 1, "one counter, one partition"
    for m, ev in zip(own, events):
        assert m["event"] == ev, (m["payload"], ev)
    ids = {e["id"] for e in events}
    others = [m for m in msgs if "origin" in m["headers_dict"]]
    assert all(m["headers_dict"]["origin"] == "applier" and m["event"]["id"] in ids
               for m in others), [(m["headers_dict"], m["payload"][:200]) for m in others]


def test_file_is_delivered_to_kafka_persisted_and_applied(ingest_bin, api, kafka, pg, tmp_path, name):
    events = make_events(name, 300)
    path = tmp_path / "events.jsonl"
    # An empty line, a blank one and CRLF endings are not events.
    text = lines_of(events[:100]) + "\n   \n" + lines_of(events[100:200]).replace("\n", "\r\n")
    path.write_text(text + lines_of(events[200:]))
    since = kafka.end_offsets()

    r = ingest(ingest_bin, str(path))

    assert r.rc == 0, r
    assert r.counts == counts(300, 0, 300, 0), r
    assert "line " not in r.stderr, r
    assert_in_kafka(kafka, since, name, events)
    total = sum(e["delta"] for e in events)
    wait_pg_total(pg, name, total)
    # Without an origin header the applier applies them to Redis.
    def applied():
        body = api.get(name).json
        return body.get("source") == "redis" and body.get("value") == total

    wait_until(applied, 30, 0.2, f"GET {name} from redis equals {total}")


def test_stdin_and_dash_among_files(ingest_bin, kafka, tmp_path, name):
    events = make_events(name, 30)
    since = kafka.end_offsets()

    r = ingest(ingest_bin, input=lines_of(events[:10]))
    assert r.rc == 0, r
    assert r.counts == counts(10, 0, 10, 0), r

    first, last = tmp_path / "first.jsonl", tmp_path / "last.jsonl"
    first.write_text(lines_of(events[10:15]))
    last.write_text(lines_of(events[25:]))
    r = ingest(ingest_bin, str(first), "-", str(last), input=lines_of(events[15:25]))
    assert r.rc == 0, r
    assert r.counts == counts(20, 0, 20, 0), r

    assert_in_kafka(kafka, since, name, events)


def test_invalid_lines_reported_by_number_and_valid_ones_delivered(ingest_bin, kafka, tmp_path, name):
    now = int(time.time() * 1000)
    good = make_events(name, 3)

    def ev(**over):
        e = {"v": 1, "id": f"bad-{uuid.uuid4()}", "counter": name, "delta": 1, "ts": now}
        e.update(over)
        return json.dumps(e)

    lines = [
        json.dumps(good[0]),                                   # 1
        '{"v":1,"id":"x","counter":',                          # 2 bad JSON
        json.dumps(good[1]),                                   # 3
        ev(delta="5"),                                         # 4 wrong type
        ev(v=2),                                               # 5 unknown v
        ev(counter="bad name!"),                               # 6 bad name
        ev(metadata={"pad": "x" * 70000}),                     # 7 oversize
        "",                                                    # 8 skipped
        ev(ts="1764153000123"),                                # 9 wrong type
        "[1,2,3]",                                             # 10 not an object
        json.dumps(good[2]),                                   # 11
        ev(counter="a{b}"),                                    # 12 bad name
        ev(delta=1 << 63),                                     # 13 out of range
        ev(metadata=[1]),                                      # 14 wrong type
    ]
    invalid = {2: "JSON", 4: "delta", 5: "v", 6: "counter", 7: "larger than 65536",
               9: "ts", 10: "object", 12: "counter", 13: "delta", 14: "metadata"}
    path = tmp_path / "mixed.jsonl"
    path.write_text("\n".join(lines) + "\n")
    since = kafka.end_offsets()

    r = ingest(ingest_bin, str(path))

    assert r.rc == 1, r
    assert r.counts == counts(13, len(invalid), 3, 0), r
    for n, word in invalid.items():
        m = re.search(rf"mixed\.jsonl: line {n}: ([^\"]*)", r.stderr)
        assert m, f"line {n} not reported:\n{r.stderr}"
        assert word in m.group(1), (n, m.group(1))
    for n in (1, 3, 8, 11):
        assert not re.search(rf"line {n}:", r.stderr), (n, r.stderr)
    assert_in_kafka(kafka, since, name, good)
    leaked = [m["payload"][:200] for m in kafka.messages(since) if '"bad-' in (m["payload"] or "")]
    assert leaked == []


def test_dry_run_validates_and_produces_nothing(ingest_bin, kafka, tmp_path, name):
    events = make_events(name, 20)
    path = tmp_path / "events.jsonl"
    path.write_text(lines_of(events))
    since = kafka.end_offsets()

    r = ingest(ingest_bin, "--dry-run", str(path))
    assert r.rc == 0, r
    assert r.counts == counts(20, 0, 0, 0), r

    r = ingest(ingest_bin, "--dry-run", input=lines_of(events[:2]) + "{nope}\n")
    assert r.rc == 1, r
    assert r.counts == counts(3, 1, 0, 0), r
    assert "stdin: line 3: " in r.stderr, r

    # The marker is the first message of the counter after the dry runs:
    # one counter's events share a partition, so anything produced by them
    # would come before it.
    r = ingest(ingest_bin, input=lines_of(events[:1]))
    assert r.rc == 0, r
    assert_in_kafka(kafka, since, name, events[:1])


def test_usage_and_config_errors_exit_2_and_produce_nothing(ingest_bin, kafka, tmp_path, name):
    events = make_events(name, 5)
    path = tmp_path / "events.jsonl"
    path.write_text(lines_of(events))
    since = kafka.end_offsets()

    r = ingest(ingest_bin, "--help")
    assert r.rc == 0 and "usage: counter-ingest" in r.stdout, r

    r = ingest(ingest_bin, "--bogus", str(path))
    assert r.rc == 2 and r.stdout == "", r
    assert "--bogus" in r.stderr, r

    # A missing file after a good one: nothing at all is produced.
    r = ingest(ingest_bin, str(path), str(tmp_path / "missing.jsonl"))
    assert r.rc == 2 and r.stdout == "", r
    assert "missing.jsonl" in r.stderr, r

    r = ingest(ingest_bin, str(path), env={"COUNTER_KAFKA_DELIVERY_TIMEOUT_MS": "soon"})
    assert r.rc == 2 and r.stdout == "", r
    assert "kafka.delivery_timeout_ms" in r.stderr, r

    r = ingest(ingest_bin, input=lines_of(events[:1]))
    assert r.rc == 0, r
    assert_in_kafka(kafka, since, name, events[:1])


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_stops_reading_delivers_what_was_read(ingest_bin, kafka, name, sig):
    events = make_events(name, 10)
    since = kafka.end_offsets()
    proc = subprocess.Popen(
        [ingest_bin],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **RELAXED_ENV},
    )
    try:
        proc.stdin.write(lines_of(events))
        proc.stdin.flush()
        # stdin stays open: the process is blocked reading when signalled.
        wait_until(lambda: len(produced(kafka, since, name)) == 10, 30, 0.2,
                   "the lines written so far reach kafka")
        t0 = time.monotonic()
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=30)
        took = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 1, (proc.returncode, out, err[-2000:])
    assert json.loads(out) == counts(10, 0, 10, 0), out
    assert took < 5, f"took {took:.1f}s to stop"
    assert not any(m in err for m in SANITIZER_MARKERS), err
    assert_in_kafka(kafka, since, name, events)


# Last in the file: it stops the broker.
def test_kafka_down_every_event_failed_within_bounded_time(ingest_bin, api, kafka, pg, stackctl, stack,
                                                          tmp_path, name):
    events = make_events(name, 50)
    path = tmp_path / "events.jsonl"
    path.write_text(lines_of(events))
    since = kafka.end_offsets()
    after = unique_name("it.ingest_after_kafka")
    # The broker's restart must not take the consumers with it (librdkafka
    # 2.0.2 aborts on a coordinator request whose connection drops).
    consumers = {n: stack.pid(n) for n in ("counter-applier", "counter-persister")}

    stackctl.stop("kafka")
    try:
        r = ingest(ingest_bin, str(path), env={"COUNTER_KAFKA_DELIVERY_TIMEOUT_MS": "2000"})
    finally:
        stackctl.start("kafka")

    assert r.rc == 1, r
    assert r.counts == counts(50, 0, 0, 50), r
    # delivery timeout 2 s, librdkafka's once-a-second timeout scan, and
    # the flush grace (3 s) bound it; the rest is an ASan build starting.
    assert r.took < 12, f"took {r.took:.1f}s"
    for n in (1, 25, 50):
        assert f"events.jsonl: line {n}: not delivered" in r.stderr, r

    # Once the broker is back, writes work again; none of the failed events
    # turns up ("not persisted" means not in the log).
    recovery = make_events(after, 1)
    wait_until(lambda: ingest(ingest_bin, input=lines_of(recovery)).rc == 0, 60, 0.5,
               "counter-ingest delivers after kafka restart")
    wait_until(lambda: _api_write_works(api, after), 60, 0.5, "api writes work after kafka restart")
    assert kafka.messages(since, key=name) == []
    # The applier applies again too (its group rejoins after the broker's
    # return): the recovery event reaches Redis, so nothing of this test is
    # still being applied when the next one looks at Redis.
    floor = sum(e["delta"] for e in recovery) + 1

    def applied():
        value = api.get(after).json.get("value")
        return value is not None and value >= floor and value == pg.total(after)

    wait_until(applied, 60, 0.5, "the applier applies the recovery event")
    for n, pid in consumers.items():
        assert stack.pid(n) == pid and pid_alive(pid), f"{n} did not outlive the broker's restart"


def _api_write_works(api, name):
    try:
        r = api.write(name, "increment", {"value": 1}, timeout=5)
    except OSError:
        return False
    return 200 <= r.status < 300

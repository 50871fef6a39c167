"""A load client that remembers the outcome of every request.

Worker threads POST increments to a few counters at a bounded total rate,
each logical write ("op") carrying a fresh Idempotency-Key (a uuid), which
the api uses as the event id (or, for a share of them, no key: see
keyed_share). Every attempt of every op is kept with its outcome:

  acked          2xx: 200 (applied) or 202 {"applied": false} (accepted
                 into Kafka only, while Redis is down)
  failed         a definite "no": 4xx, or 503 with a code other than
                 "indeterminate" (redis_unavailable, kafka_unavailable,
                 overloaded, ...)
  indeterminate  no definite answer: a timeout, a connection reset or
                 closed mid-request, 503 "indeterminate", any other 5xx
  in_progress    409 request_in_progress: an earlier attempt with this key
                 is still settling; retried after ~200 ms
  not_sent       the connection was refused: the request never left

An op's final outcome: acked if any attempt was acked; else indeterminate
if any attempt may have reached the api (indeterminate, in_progress);
else failed. So "indeterminate" is an upper bound of what may count.

Retry policy (per test): with retry_indeterminate, an op is retried with
the SAME key until it gets a definite answer or its deadline passes;
refused connections are retried likewise (nothing was sent).

keyed_share: the share of ops sent with an Idempotency-Key (the rest get an
event id from the api and are never retried once sent). The api marks
keyed events so that the persister counts each id once; unkeyed ones rely
on the persister's offsets alone, which is what the persister faults test.

A reader thread polls GET on the counters and records every answer
(time, value, source, stale, latency) for the monotonic-read check.

The client stops by itself: at max_ops ops or duration_s seconds, or when
stop() is called.
"""

import http.client
import json
import random
import threading
import time
import uuid
from dataclasses import dataclass, field, asdict

# Kinds of the counters the suite loads (all only ever incremented, so all
# are monotonic within a day).
PLAIN, DAILY, UNIQUE = "counter", "daily", "unique"


@dataclass
class Counter:
    name: str
    kind: str  # PLAIN, DAILY or UNIQUE
    weight: int = 1


def murmur2_partition(key, partitions):
    """The partition Kafka's Java client (and librdkafka's murmur2_random,
    which the api uses) picks for a key."""
    data = key.encode()
    m, r = 0x5BD1E995, 24
    length = len(data)
    h = (0x9747B28C ^ length) & 0xFFFFFFFF
    for i in range(length // 4):
        k = int.from_bytes(data[4 * i : 4 * i + 4], "little")
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> r
        k = (k * m) & 0xFFFFFFFF
        h = (h * m) & 0xFFFFFFFF
        h ^= k
    rest = length & ~3
    extra = length % 4
    if extra == 3:
        h ^= data[rest + 2] << 16
    if extra >= 2:
        h ^= data[rest + 1] << 8
    if extra >= 1:
        h ^= data[rest]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return (h & 0x7FFFFFFF) % partitions


def fault_counters(tag, partitions):
    """Fresh counters for one test: a plain counter on every partition (so
    every persister member and partition has work), a daily counter
    (config pattern daily_*) and an exact unique counter (it_unique_*)."""
    run = uuid.uuid4().hex[:10]
    plain = {}
    i = 0
    while len(plain) < partitions:
        name = f"fault.{tag}.{run}.{i}"
        plain.setdefault(murmur2_partition(name, partitions), name)
        i += 1
    out = [Counter(plain[p], PLAIN, 2) for p in sorted(plain)]
    out.append(Counter(f"daily_fault_{tag}_{run}", DAILY, 2))
    out.append(Counter(f"it_unique_fault_{tag}_{run}", UNIQUE, 2))
    return out


@dataclass
class RetryPolicy:
    retry_indeterminate: bool = False
    retry_not_sent: bool = True
    deadline_s: float = 30.0  # per op, from its first attempt
    in_progress_wait_s: float = 0.2


@dataclass
class Attempt:
    t0: float  # seconds since the client started
    t1: float
    outcome: str
    status: int = 0  # 0: no HTTP answer
    code: str = None
    event_id: str = None
    applied: bool = None
    period: str = None
    value: int = None
    error: str = None


@dataclass
class Op:
    key: str  # the Idempotency-Key, if keyed; else only a name in the log
    counter: str
    kind: str
    user_id: str = None
    keyed: bool = True
    attempts: list = field(default_factory=list)

    @property
    def final(self):
        outs = [a.outcome for a in self.attempts]
        if "acked" in outs:
            return "acked"
        if "indeterminate" in outs or "in_progress" in outs:
            return "indeterminate"
        return "failed"

    @property
    def acked_attempt(self):
        for a in self.attempts:
            if a.outcome == "acked":
                return a
        return None

    @property
    def retried(self):
        """Sent more than once (what a second attempt may double count)."""
        return sum(a.outcome != "not_sent" for a in self.attempts) > 1


@dataclass
class Read:
    t0: float
    t1: float
    counter: str
    status: int
    value: int = None
    source: str = None
    stale: bool = None
    period: str = None
    error: str = None


def classify(status, data):
    """(outcome, code) of one HTTP answer."""
    code = None
    if isinstance(data, dict) and isinstance(data.get("error"), dict):
        code = data["error"].get("code")
    if 200 <= status < 300:
        return "acked", code
    if status == 409 and code == "request_in_progress":
        return "in_progress", code
    if 400 <= status < 500:
        return "failed", code
    if status == 503 and code not in (None, "indeterminate"):
        return "failed", code
    return "indeterminate", code


class _Http:
    """One keep-alive connection that reconnects after any error."""

    def __init__(self, host, port, timeout):
        self.host, self.port, self.timeout = host, port, timeout
        self.conn = None

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def request(self, method, path, body=None, headers=None):
        """(status, parsed JSON or None, error). status 0 with error
        "not_sent:..." when the connection could not be made, 0 with
        another error when the request may have gone out."""
        if self.conn is None:
            self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            try:
                self.conn.connect()
            except OSError as e:
                self.close()
                return 0, None, f"not_sent:{type(e).__name__}: {e}"
        hdrs = dict(headers or {})
        if body is not None:
            hdrs["Content-Type"] = "application/json"
        try:
            self.conn.request(method, path, body=body, headers=hdrs)
            resp = self.conn.getresponse()
            raw = resp.read()
            if resp.will_close:
                self.close()
        except (OSError, http.client.HTTPException) as e:
            self.close()
            return 0, None, f"{type(e).__name__}: {e}"
        try:
            data = json.loads(raw) if raw.strip() else None
        except ValueError:
            data = {"_raw": raw[:200].decode("utf-8", "replace")}
        return resp.status, data, None


class LoadClient:
    def __init__(self, stack, counters, *, rate=300, workers=6, duration_s=60,
                 max_ops=100000, retry=None, timeout_s=6.0, users=300,
                 read_interval_s=0.05, reader=True, keyed_share=1.0):
        self.stack = stack
        self.counters = counters
        self.rate = rate
        self.workers = workers
        self.duration_s = duration_s
        self.max_ops = max_ops
        self.retry = retry or RetryPolicy()
        self.timeout_s = timeout_s
        self.users = [f"u{i}" for i in range(users)]
        self.read_interval_s = read_interval_s
        self.with_reader = reader
        self.keyed_share = keyed_share
        self.ops = []
        self.external_ops = []  # writes of other clients (loadgen) to check too
        self.reads = []
        self.marks = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = []
        self._n_ops = 0
        self._t_start = None
        self._t_end = None
        self._pick = [c for c in counters for _ in range(c.weight)]

    # ------------------------------------------------------------ control

    def now(self):
        return time.monotonic() - self._t_start

    def mark(self, what):
        """Notes a moment of the test (a kill, a restart) on the timeline."""
        t = self.now()
        self.marks.append((t, what))
        return t

    def start(self):
        self._t_start = time.monotonic()
        for i in range(self.workers):
            t = threading.Thread(target=self._worker, args=(i,), daemon=True)
            t.start()
            self._threads.append(t)
        if self.with_reader:
            t = threading.Thread(target=self._reader, daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self):
        self._stop.set()

    def running(self):
        return any(t.is_alive() for t in self._threads)

    def join(self, timeout=None):
        """Waits until every worker finished its op in hand (each op ends by
        its own deadline, so this is bounded)."""
        limit = timeout or (self.retry.deadline_s + self.timeout_s + 30)
        end = time.monotonic() + limit
        for t in self._threads:
            t.join(max(0.0, end - time.monotonic()))
        stuck = [t.name for t in self._threads if t.is_alive()]
        self._t_end = self.now()
        assert not stuck, f"load client threads did not finish within {limit:.0f}s: {stuck}"

    def run_for(self, seconds):
        """Sleeps while the load runs (stops early if it ends)."""
        end = time.monotonic() + seconds
        while time.monotonic() < end and self.running():
            time.sleep(min(0.1, max(0.0, end - time.monotonic())))

    @property
    def t_end(self):
        """When the load stopped (seconds since the start)."""
        return self._t_end if self._t_end is not None else self.now()

    def _done(self):
        return self._stop.is_set() or self.now() >= self.duration_s

    # ------------------------------------------------------------ writers

    def _next_op(self, rng):
        with self._lock:
            if self._n_ops >= self.max_ops:
                return None
            self._n_ops += 1
        c = rng.choice(self._pick)
        op = Op(key=str(uuid.uuid4()), counter=c.name, kind=c.kind,
                keyed=rng.random() < self.keyed_share)
        if c.kind == UNIQUE:
            op.user_id = rng.choice(self.users)
        with self._lock:
            self.ops.append(op)
        return op

    def _worker(self, index):
        rng = random.Random(index * 7919 + int(time.time()))
        conn = _Http(self.stack.api_host, self.stack.api_port, self.timeout_s)
        interval = self.workers / float(self.rate)
        next_at = time.monotonic() + rng.random() * interval
        try:
            while not self._done():
                now = time.monotonic()
                if next_at > now:
                    time.sleep(next_at - now)
                next_at = max(next_at + interval, time.monotonic() - interval)
                op = self._next_op(rng)
                if op is None:
                    return
                self._run_op(conn, op)
        finally:
            conn.close()

    def _run_op(self, conn, op):
        body = {"value": 1}
        if op.user_id is not None:
            body = {"user_id": op.user_id}
        payload = json.dumps(body)
        path = f"/api/v1/counter/{op.counter}/increment"
        headers = {"Idempotency-Key": op.key} if op.keyed else {}
        deadline = time.monotonic() + self.retry.deadline_s
        backoff = 0.05
        while True:
            t0 = self.now()
            status, data, err = conn.request("POST", path, payload, headers)
            t1 = self.now()
            if status == 0:
                outcome = "not_sent" if err.startswith("not_sent:") else "indeterminate"
                a = Attempt(t0, t1, outcome, 0, error=err)
            else:
                outcome, code = classify(status, data)
                a = Attempt(t0, t1, outcome, status, code)
                if isinstance(data, dict):
                    a.event_id = data.get("event_id")
                    a.period = data.get("period")
                    a.value = data.get("current_value")
                    if "applied" in data:
                        a.applied = data["applied"]
                    elif status == 200:
                        a.applied = True
                    if outcome != "acked" and not a.code:
                        a.error = json.dumps(data)[:200]
            op.attempts.append(a)
            if outcome == "acked":
                return
            # A refusal (503 shutting_down, overloaded, kafka_unavailable)
            # says the retry did nothing; a keyed write whose earlier
            # attempt had no answer is still unsettled: go on with its key.
            unsettled = op.keyed and self.retry.retry_indeterminate and any(
                x.outcome == "indeterminate" for x in op.attempts)
            if outcome == "failed" and not (unsettled and status == 503):
                return
            if time.monotonic() >= deadline:
                return
            if outcome == "failed":
                time.sleep(backoff)
                backoff = min(0.5, backoff * 2)
                continue
            if outcome == "in_progress":
                time.sleep(self.retry.in_progress_wait_s)
                continue
            if outcome == "not_sent" and self.retry.retry_not_sent:
                time.sleep(backoff)
                backoff = min(0.5, backoff * 2)
                continue
            if outcome == "indeterminate" and self.retry.retry_indeterminate and op.keyed:
                time.sleep(backoff)
                backoff = min(0.5, backoff * 2)
                continue
            return

    # ------------------------------------------------------------- reader

    def _reader(self):
        conn = _Http(self.stack.api_host, self.stack.api_port, 3.0)
        names = [c.name for c in self.counters]
        try:
            while not self._done():
                for name in names:
                    t0 = self.now()
                    status, data, err = conn.request("GET", f"/api/v1/counter/{name}")
                    r = Read(t0, self.now(), name, status, error=err)
                    if status == 200 and isinstance(data, dict):
                        r.value = data.get("value")
                        r.source = data.get("source")
                        r.stale = data.get("stale")
                        r.period = data.get("period")
                    elif data is not None:
                        r.error = json.dumps(data)[:200]
                    self.reads.append(r)
                time.sleep(self.read_interval_s)
        finally:
            conn.close()

    # ------------------------------------------------------------ results

    def all_ops(self):
        return self.ops + self.external_ops

    def attempts(self):
        for op in self.ops:
            for a in op.attempts:
                yield op, a

    def summary(self):
        finals = {}
        for op in self.ops:
            finals[op.final] = finals.get(op.final, 0) + 1
        answers = {}
        for _, a in self.attempts():
            k = f"{a.status}" + (f" {a.code}" if a.code else "") if a.status else a.outcome
            answers[k] = answers.get(k, 0) + 1
        elapsed = self._t_end or (self.now() if self._t_start else 0)
        return {
            "ops": len(self.ops),
            "final": finals,
            "answers": answers,
            "retried_ops": sum(op.retried for op in self.ops),
            "reads": len(self.reads),
            "elapsed_s": round(elapsed, 1),
            "ops_per_s": round(len(self.ops) / elapsed, 1) if elapsed else 0,
        }

    def dump(self, path):
        """The whole log, JSON lines: marks, ops (with attempts), reads."""
        with open(path, "w") as f:
            for t, what in self.marks:
                f.write(json.dumps({"mark": what, "t": round(t, 3)}) + "\n")
            for op in self.ops:
                d = asdict(op)
                d["final"] = op.final
                f.write(json.dumps(d) + "\n")
            for r in self.reads:
                f.write(json.dumps({"read": asdict(r)}) + "\n")
        return path

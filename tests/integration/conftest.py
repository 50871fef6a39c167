"""Fixtures and helpers for the integration tests.

The tests run against a stack that is already up (deploy/stack.sh up); they
learn where it is from the environment, which the harness fills from
$STACK_DIR/stack.env and $STACK_DIR/counter.env. A missing variable is an
error, never a skip: a suite that silently skips everything looks green.

By hand:
    set -a; . /tmp/it-stack/stack.env; . /tmp/it-stack/counter.env; set +a
    LOADGEN=build/bin/loadgen python3 -m pytest -v tests/integration

Every test uses fresh counter names (uuid suffix), and Kafka checks read only
from the offsets captured just before the test's own writes, so tests are
independent of each other and of whatever is already in the stores.
"""

import copy
import datetime
import http.client
import json
import os
import re
import shlex
import signal
import subprocess
import time
import urllib.parse
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from resp import Resp, RespError

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
STACK_SH = os.path.join(REPO, "deploy", "stack.sh")

REQUIRED_ENV = (
    "API_URL",
    "REDIS_HOST",
    "REDIS_PORT",
    "PG_DSN",
    "KAFKA_BOOTSTRAP",
    "KAFKA_TOPIC",
    "KAFKA_INPUT_TOPIC",
    "KAFKA_PARTITIONS",
    "PG_PORT",
    "STACK_DIR",
)

# Time for the persister to fold an event into PostgreSQL. It batches for
# 50 ms, but an ASan build on 2 busy cores after a restart needs far more.
CATCH_UP_S = 60


# ------------------------------------------------------------------ env ---


class Stack:
    """Where the stack under test lives, from the environment."""

    def __init__(self, env):
        self.env = env
        self.api_url = env["API_URL"].rstrip("/")
        parsed = urllib.parse.urlsplit(self.api_url)
        if parsed.scheme != "http" or not parsed.hostname:
            raise ValueError(f"API_URL must be http://host:port, not {self.api_url!r}")
        self.api_host = parsed.hostname
        self.api_port = parsed.port or 80
        self.redis_host = env["REDIS_HOST"]
        self.redis_port = int(env["REDIS_PORT"])
        self.pg_dsn = env["PG_DSN"]
        self.kafka_bootstrap = env["KAFKA_BOOTSTRAP"]
        self.kafka_topic = env["KAFKA_TOPIC"]
        # where producers write events to apply (kafka.input_topic)
        self.kafka_input_topic = env["KAFKA_INPUT_TOPIC"]
        self.kafka_partitions = int(env["KAFKA_PARTITIONS"])
        self.stack_dir = env["STACK_DIR"]
        self.max_body_bytes = int(env.get("COUNTER_SERVER_MAX_BODY_BYTES", "16384"))

    def pid(self, name):
        """The pid recorded for NAME by stack.sh, or None."""
        path = os.path.join(self.stack_dir, "run", f"{name}.pid")
        try:
            with open(path) as f:
                return int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def log_path(self, name):
        return os.path.join(self.stack_dir, "log", f"{name}.log")


def _missing_env():
    return [k for k in REQUIRED_ENV if not os.environ.get(k)]


@pytest.fixture(scope="session")
def stack():
    missing = _missing_env()
    if missing:
        pytest.fail(
            "integration tests need the stack's environment; missing: "
            + ", ".join(missing)
            + ". Export $STACK_DIR/stack.env and counter.env (set -a; . stack.env;"
            " . counter.env) after deploy/stack.sh up.",
            pytrace=False,
        )
    return Stack(dict(os.environ))


@pytest.fixture(autouse=True)
def _require_stack(stack):
    """Every test, even one that asks for no fixture, errors without a stack."""
    return stack


def unique_name(prefix="it"):
    return f"{prefix}-{uuid.uuid4().hex[:16]}"


@pytest.fixture
def name(request):
    """A counter name no other test (or earlier run) has used."""
    base = request.node.name.split("[")[0].replace("test_", "")[:40]
    base = "".join(c if c.isalnum() or c in "_.-" else "_" for c in base)
    return unique_name(f"it.{base}")


# ------------------------------------------------------------------ http ---


class Response(tuple):
    """(status, headers, json) with names; body holds the raw bytes."""

    def __new__(cls, status, headers, data, body):
        self = super().__new__(cls, (status, headers, data))
        self.body = body
        return self

    status = property(lambda self: self[0])
    headers = property(lambda self: self[1])
    json = property(lambda self: self[2])


def http_request(stack, method, path, body=None, headers=None, timeout=15):
    """One request on a fresh connection: (status, headers, parsed JSON).

    body: a dict/list (sent as JSON), str or bytes (sent as is), or None.
    headers are case-insensitive (http.client's message object). The JSON
    is None for an empty body; a body that is not JSON fails the test.
    """
    hdrs = {"Connection": "close"}
    if isinstance(body, (dict, list)):
        body = json.dumps(body)
    if isinstance(body, str):
        body = body.encode()
    if body is not None:
        hdrs["Content-Type"] = "application/json"
    hdrs.update(headers or {})
    conn = http.client.HTTPConnection(stack.api_host, stack.api_port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=hdrs)
        resp = conn.getresponse()
        raw = resp.read()
        status, msg = resp.status, resp.msg
    finally:
        conn.close()
    data = None
    if raw.strip():
        try:
            data = json.loads(raw)
        except ValueError:
            raise AssertionError(
                f"{method} {path} -> {status}: body is not JSON: {raw[:300]!r}"
            ) from None
    return Response(status, msg, data, raw)


class Api:
    """The counter api's endpoints, over http_request."""

    def __init__(self, stack):
        self.stack = stack

    def request(self, method, path, body=None, headers=None, timeout=15):
        return http_request(self.stack, method, path, body, headers, timeout)

    def write(self, name, op="increment", body=None, **kw):
        return self.request("POST", f"/api/v1/counter/{name}/{op}", body, **kw)

    def incr(self, name, value=None, timeout=15, **fields):
        """fields: more body fields (user_id=..., metadata=...)."""
        body = dict(fields)
        if value is not None:
            body["value"] = value
        return self.write(name, "increment", body if body else None, timeout=timeout)

    def decr(self, name, value=None, timeout=15, **fields):
        body = dict(fields)
        if value is not None:
            body["value"] = value
        return self.write(name, "decrement", body if body else None, timeout=timeout)

    def get(self, name, **kw):
        return self.request("GET", f"/api/v1/counter/{name}", **kw)

    def get_many(self, names_param, **kw):
        q = urllib.parse.urlencode({"names": names_param}, safe=",")
        return self.request("GET", f"/api/v1/counters?{q}", **kw)

    def value(self, name):
        r = self.get(name)
        assert r.status == 200, (r.status, r.json)
        return r.json["value"]

    def healthz(self, timeout=5):
        return self.request("GET", "/healthz", timeout=timeout)


@pytest.fixture(scope="session")
def api(stack):
    return Api(stack)


@pytest.fixture
def own_api(stack, tmp_path):
    """own_api(**COUNTER_* settings) -> a started counter-api of the test's
    own (own_process.OwnApi) beside the stack's, with those settings; each
    is stopped (SIGTERM) at the end of the test, which must exit 0 with no
    sanitizer report."""
    from own_process import OwnApi  # it imports this module

    started = []

    def start(**env):
        a = OwnApi(stack, tmp_path, env)
        started.append(a)
        return a.start()

    yield start
    for a in started:
        a.assert_clean_exit()


# ----------------------------------------------------------------- redis ---


def run(cmd, timeout=60, check=True, env=None, input=None):
    """Runs cmd (a list); returns stdout. Fails the test with stderr."""
    try:
        p = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            input=input,
        )
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"timed out after {timeout}s: {shlex.join(cmd)}") from e
    if check and p.returncode != 0:
        raise AssertionError(
            f"exit {p.returncode}: {shlex.join(cmd)}\n"
            f"stdout: {p.stdout[-2000:]}\nstderr: {p.stderr[-2000:]}"
        )
    return p.stdout


# Slot 0's epoch marker (redis/apply.h: one per slot, "counter:epoch:3:"
# and the tag that hashes to the slot): holds the data set's epoch once
# Redis is whole, "restoring:<token>" while a restore runs.
EPOCH_MARKER_0 = "counter:epoch:3:{3560}"


class Redis:
    def __init__(self, stack):
        self.stack = stack
        self._conn = None

    def epoch(self):
        """The data set's epoch ('' when Redis is not whole)."""
        e = self.cli("GET", EPOCH_MARKER_0)
        return "" if e.startswith("restoring:") else e

    def cli(self, *args, timeout=10, check=True):
        """One command over RESP (tests/integration/resp.py), its answer as
        `redis-cli --raw` prints it, without the final newline: integers and
        strings as text, nil as "", arrays one element a line. An error
        reply, or no Redis to answer, raises AssertionError (with check=False
        an error reply is returned as its text). Also "--scan --pattern P"
        (every key matching, by SCAN) and a leading "--no-raw" (ignored)."""
        if args and args[0] == "--no-raw":
            args = args[1:]
        if args[:2] == ("--scan", "--pattern"):
            keys, cursor = [], "0"
            while True:
                cursor, batch = self._call(("SCAN", cursor, "MATCH", args[2], "COUNT", 1000),
                                           timeout, True)
                keys += batch
                if cursor == "0":
                    return "\n".join(keys)
        return self._raw(self._call(tuple(args), timeout, check))

    def _call(self, args, timeout, check):
        for attempt in (0, 1):
            try:
                if self._conn is None:
                    self._conn = Resp(self.stack.redis_host, self.stack.redis_port, timeout)
                self._conn.sock.settimeout(timeout)
                reply = self._conn.pipeline([args])[0]
                break
            except OSError as e:  # restarted or stopped by a test
                if self._conn is not None:
                    self._conn.close()
                self._conn = None
                if attempt == 1:
                    raise AssertionError(f"redis {' '.join(map(str, args))}: {e}") from e
        if isinstance(reply, RespError):
            if check:
                raise AssertionError(f"redis {' '.join(map(str, args))}: {reply}")
            return str(reply)
        return reply

    @classmethod
    def _raw(cls, reply):
        if reply is None:
            return ""
        if isinstance(reply, list):
            return "\n".join(cls._raw(x) for x in reply)
        return str(reply)

    def key(self, name):
        return "{c:" + name + "}"

    def stored(self, name):
        """The counter's value key {c:name} and its stamp {c:name}:t as
        {"v": ..., "t": ...}, each only when present ({} for neither)."""
        out = self.cli("MGET", self.key(name), self.key(name) + ":t")
        items = out.split("\n")
        assert len(items) == 2, items
        return {f: x for f, x in zip(("v", "t"), items) if x != ""}

    def value(self, name):
        """GET {c:name} as an int, None when absent."""
        out = self.cli("GET", self.key(name))
        return int(out) if out != "" else None

    def ping(self):
        try:
            return self.cli("PING", timeout=3, check=False) == "PONG"
        except AssertionError:
            return False


@pytest.fixture(scope="session")
def redis(stack):
    return Redis(stack)


# ------------------------------------------------------------ postgresql ---


class Postgres:
    def __init__(self, stack):
        self.stack = stack

    def query(self, sql, timeout=30):
        """Rows of psql -tA output, each a list of strings (NULL -> '')."""
        out = run(
            [
                "psql",
                self.stack.pg_dsn,
                "-X",
                "-q",
                "-tA",
                "-F",
                "\t",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
            ],
            timeout=timeout,
            env={**os.environ, "PGCONNECT_TIMEOUT": "5"},
        )
        return [line.split("\t") for line in out.splitlines() if line != ""]

    def total(self, name):
        """counter_totals.value for name, None without a row."""
        assert all(c.isalnum() or c in "_.-" for c in name), name
        rows = self.query(f"SELECT value FROM counter_totals WHERE name = '{name}'")
        return int(rows[0][0]) if rows else None

    def total_row(self, name):
        assert all(c.isalnum() or c in "_.-" for c in name), name
        rows = self.query(
            "SELECT value, last_event_ms FROM counter_totals " f"WHERE name = '{name}'"
        )
        return (int(rows[0][0]), int(rows[0][1])) if rows else None


@pytest.fixture(scope="session")
def pg(stack):
    return Postgres(stack)


# ----------------------------------------------------------------- kafka ---


class Kafka:
    def __init__(self, stack):
        self.stack = stack

    def end_offsets(self):
        """{partition: next offset} of the topic right now."""
        args = ["kcat", "-Q", "-b", self.stack.kafka_bootstrap]
        for p in range(self.stack.kafka_partitions):
            args += ["-t", f"{self.stack.kafka_topic}:{p}:-1"]
        out = run(args, timeout=30)
        offsets = {}
        for line in out.splitlines():
            # counter-events [0] offset 123
            parts = line.split()
            if len(parts) == 4 and parts[2] == "offset":
                offsets[int(parts[1].strip("[]"))] = int(parts[3])
        assert len(offsets) == self.stack.kafka_partitions, out
        return offsets

    def _consume_partition(self, partition, start):
        out = run(
            [
                "kcat",
                "-C",
                "-q",
                "-b",
                self.stack.kafka_bootstrap,
                "-t",
                self.stack.kafka_topic,
                "-p",
                str(partition),
                "-o",
                str(start),
                "-e",
                "-J",
            ],
            timeout=120,
        )
        # "\n" only: kcat leaves U+2028 and friends raw inside a payload,
        # and str.splitlines() would cut a message there
        return [json.loads(line) for line in out.split("\n") if line.strip()]

    def messages(self, since, key=None):
        """Messages appended after the offsets `since` (see end_offsets),
        optionally only those with this key. Each is kcat's -J envelope
        plus "headers_dict" and "event" (the decoded payload)."""
        with ThreadPoolExecutor(max_workers=len(since)) as ex:
            chunks = list(ex.map(lambda kv: self._consume_partition(*kv), since.items()))
        msgs = []
        for chunk in chunks:
            for m in chunk:
                if key is not None and m.get("key") != key:
                    continue
                h = m.get("headers") or []
                m["headers_dict"] = dict(zip(h[0::2], h[1::2]))
                try:
                    m["event"] = json.loads(m["payload"])
                except (TypeError, ValueError):
                    m["event"] = None
                msgs.append(m)
        return msgs


@pytest.fixture(scope="session")
def kafka(stack):
    return Kafka(stack)


def input_kafka(stack):
    """A Kafka reader of the input topic (kafka.input_topic), where
    producers write the events the applier applies."""
    s = copy.copy(stack)
    s.kafka_topic = stack.kafka_input_topic
    return Kafka(s)


# --------------------------------------------------------- stack control ---


class StackControl:
    """deploy/stack.sh start|stop|kill|status NAME with the stack's env."""

    def __init__(self, stack):
        self.stack = stack

    def __call__(self, cmd, name=None, timeout=180):
        args = [STACK_SH, cmd] + ([name] if name else [])
        return run(args, timeout=timeout, env=self.stack.env)

    def start(self, name):
        return self("start", name)

    def stop(self, name):
        return self("stop", name)

    def kill(self, name):
        return self("kill", name)

    def status(self):
        """{name: pid or None} from stack.sh status."""
        out = self("status")
        result = {}
        for line in out.splitlines():
            parts = line.split()
            if len(parts) >= 2:
                result[parts[0]] = int(parts[3]) if parts[1] == "running" else None
        return result

    def running(self, name):
        return self.status().get(name) is not None


@pytest.fixture(scope="session")
def stackctl(stack):
    return StackControl(stack)


# ------------------------------------------------------------- waiting ---


def wait_until(fn, timeout=30, interval=0.1, message=None):
    """Calls fn until it returns something truthy; returns that. After
    timeout seconds fails with the last value (or exception) seen."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            last = fn()
            if last:
                return last
        except AssertionError as e:
            last = e
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"{message or 'condition'} not met within {timeout}s; last: {last!r}"
            )
        time.sleep(interval)


def wait_pg_total(pg, name, expected, timeout=CATCH_UP_S):
    """Waits until the persister has folded `name` to exactly `expected`."""
    seen = []

    def check():
        v = pg.total(name)
        seen.append(v)
        return v == expected

    try:
        wait_until(check, timeout, 0.2)
    except AssertionError:
        raise AssertionError(
            f"PostgreSQL total of {name} is {seen[-1]!r}, expected {expected} "
            f"after {timeout}s (values seen: {sorted(set(map(str, seen)))})"
        ) from None


def pid_alive(pid):
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is dead for our purposes.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def freeze(pid, timeout=5):
    """SIGSTOP PID and wait until every thread of it has stopped.

    kill() returns once the signal is queued; the kernel stops the other
    threads of a process only when the thread that takes the signal runs,
    so on a busy machine a JVM's network threads can go on answering for a
    while after it. A test that needs the process silent waits for that."""
    os.kill(pid, signal.SIGSTOP)
    deadline = time.monotonic() + timeout
    while True:
        running = []
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/stat") as f:
                    state = f.read().rsplit(") ", 1)[1][0]
            except (OSError, IndexError):
                continue  # the thread exited
            if state not in "TtXZ":
                running.append(tid)
        if not running:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"pid {pid}: threads {running[:5]} still running {timeout}s after SIGSTOP")
        time.sleep(0.005)


# ------------------------------------------------------------- loadgen ---


@pytest.fixture(scope="session")
def loadgen_bin(stack):
    path = os.environ.get("LOADGEN") or os.path.join(REPO, "build", "bin", "loadgen")
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        pytest.fail(
            f"loadgen not found at {path}: build it (cmake --build build) or set LOADGEN",
            pytrace=False,
        )
    return path


def loadgen_args(loadgen_bin, url, connections, per_conn, body=None, log=None, timeout_s=120, extra=()):
    args = [
        loadgen_bin,
        "--url",
        url,
        "--connections",
        str(connections),
        "--requests-per-conn",
        str(per_conn),
        "--timeout-s",
        str(timeout_s),
    ]
    if body is not None:
        args += ["--method", "POST", "--body", body]
    if log:
        args += ["--log", log]
    return args + list(extra)


def parse_loadgen(stdout):
    lines = [l for l in stdout.splitlines() if l.startswith("{")]
    assert lines, f"loadgen printed no summary: {stdout!r}"
    return json.loads(lines[-1])


def read_loadgen_log(path):
    """[(conn, req, status, event_id or None)] from a loadgen --log file."""
    rows = []
    with open(path) as f:
        for line in f:
            c, r, s, eid = line.rstrip("\n").split("\t")
            rows.append((int(c), int(r), int(s), None if eid == "-" else eid))
    return rows


# ------------------------------------------------------- sanitizer logs ---

SANITIZER_MARKERS = ("AddressSanitizer", "LeakSanitizer", "runtime error:", "ThreadSanitizer")
WATCHED_LOGS = ("counter-api", "counter-persister")


def _log_size(path):
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def log_text_since(path, offset):
    """What a log file holds past byte offset ("" if it cannot be read)."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


ASSIGNED = re.compile(r'msg="assigned partition (\d+)')
REVOKED = re.compile(r'msg="revoked partition (\d+)')


def partitions_owned(log, held=()):
    """The partitions a consumer (persister, applier) holds after the
    assignment lines of its log text, starting from the partitions in held."""
    held = set(held)
    for line in log.splitlines():
        m = ASSIGNED.search(line)
        if m:
            held.add(int(m.group(1)))
        m = REVOKED.search(line)
        if m:
            held.discard(int(m.group(1)))
    return held


def sanitizer_reports(stack, offsets):
    """Sanitizer lines written to the services' logs after `offsets`."""
    found = []
    for svc, start in offsets.items():
        path = stack.log_path(svc)
        try:
            with open(path, "rb") as f:
                if _log_size(path) < start:
                    start = 0  # the log was rotated or truncated
                f.seek(start)
                text = f.read().decode("utf-8", "replace")
        except OSError:
            continue
        lines = text.splitlines()
        for i, line in enumerate(lines):
            if any(m in line for m in SANITIZER_MARKERS):
                found.append(f"{svc}.log: " + "\n".join(lines[i : i + 15]))
                break
    return found


@pytest.fixture(autouse=True)
def _no_sanitizer_reports(stack):
    """The services run as sanitizer builds under test: any report they
    write while a test runs fails that test, with the report."""
    offsets = {svc: _log_size(stack.log_path(svc)) for svc in WATCHED_LOGS}
    yield
    reports = sanitizer_reports(stack, offsets)
    assert not reports, "sanitizer report in a service log:\n" + "\n\n".join(reports)


# ------------------------------------------- counter kinds and policies ---
# Helpers of test_semantics.py and test_history.py (issue 3): names under
# the config's patterns, event times, the per-day Redis keys and tables,
# the Prometheus text of /metrics, and waiting for the persister to have
# folded every message of the topic.

PERSISTER_GROUP = os.environ.get("COUNTER_PERSISTER_GROUP_ID", "counter-persister")


def counter_name(prefix):
    """A fresh name under a pattern of tests/config.test.yaml, such as
    counter_name("it_gauge_") (the patterns are prefixes)."""
    return f"{prefix}{uuid.uuid4().hex[:16]}"


def rfc3339(dt):
    """An aware datetime as RFC 3339 with its own offset (no fraction
    unless it has one): 2026-11-01T00:30:00-04:00."""
    assert dt.tzinfo is not None, dt
    return dt.isoformat(timespec="milliseconds" if dt.microsecond else "seconds")


def sql_literal(s):
    return "'" + str(s).replace("'", "''") + "'"


def api_set(api, name, value, **fields):
    """POST /api/v1/counter/NAME/set {"value": value, ...}."""
    return api.write(name, "set", {"value": value, **fields})


def api_history(api, name, **params):
    """GET /api/v1/counter/NAME/history?PARAMS (None values are left out)."""
    q = urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
    return api.request("GET", f"/api/v1/counter/{name}/history" + (f"?{q}" if q else ""))


def metrics_text(stack, timeout=10):
    """The raw Prometheus text of GET /metrics (not JSON)."""
    return metrics_text_at(stack.api_host, stack.api_port, timeout)


def metrics_text_at(host, port, timeout=10):
    """The raw Prometheus text of GET /metrics at host:port."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", "/metrics", headers={"Connection": "close"})
        resp = conn.getresponse()
        raw = resp.read().decode()
        assert resp.status == 200, (resp.status, raw[:300])
    finally:
        conn.close()
    return raw


def metrics_at(port):
    """{series: value} of a metrics endpoint on 127.0.0.1."""
    out = {}
    for line in metrics_text_at("127.0.0.1", port, timeout=5).splitlines():
        if line and not line.startswith("#"):
            series, _, value = line.rpartition(" ")
            out[series] = float(value)
    return out


def metric_value(stack, metric, **labels):
    """The value of one sample of /metrics, 0 when the series is absent."""
    want = metric
    if labels:
        want += "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"
    for line in metrics_text(stack).splitlines():
        if line.startswith("#") or not line.strip():
            continue
        series, _, value = line.rpartition(" ")
        if series == want:
            return float(value)
    return 0.0


def redis_window(redis, name, day):
    """GET {c:NAME}:d:DAY of a daily counter as an int, None when absent.
    day: a date or 'YYYY-MM-DD'."""
    out = redis.cli("GET", redis.key(name) + f":d:{day}")
    return int(out) if out != "" else None


def redis_keys(redis, name):
    """Every key of the counter (its hash tag), sorted."""
    out = redis.cli("KEYS", redis.key(name) + "*")
    return sorted(k for k in out.split("\n") if k)


def pg_daily(pg, name):
    """{'YYYY-MM-DD': value} of counter_daily for name."""
    rows = pg.query(f"SELECT day, value FROM counter_daily WHERE name = {sql_literal(name)}")
    return {d: int(v) for d, v in rows}


def pg_unique_users(pg, name):
    """{'YYYY-MM-DD': [user ids]} of counter_unique_users for name."""
    rows = pg.query(
        "SELECT day, user_id FROM counter_unique_users "
        f"WHERE name = {sql_literal(name)} ORDER BY day, user_id"
    )
    out = {}
    for d, u in rows:
        out.setdefault(d, []).append(u)
    return out


def wait_persisted(pg, kafka, timeout=CATCH_UP_S):
    """Waits until the persister's stored offsets reach the end of every
    partition as it is now: every message written so far is folded into
    PostgreSQL (or was refused by it for good)."""
    ends = kafka.end_offsets()

    def check():
        rows = pg.query(
            "SELECT partition, next_offset FROM consumer_offsets "
            f"WHERE group_id = {sql_literal(PERSISTER_GROUP)} "
            f"AND topic = {sql_literal(kafka.stack.kafka_topic)}"
        )
        stored = {int(p): int(o) for p, o in rows}
        behind = {p: (stored.get(p), e) for p, e in ends.items() if e > 0 and stored.get(p, 0) < e}
        return True if not behind else (False, behind)

    last = []

    def ok():
        r = check()
        last.append(r)
        return r is True

    try:
        wait_until(ok, timeout, 0.2)
    except AssertionError:
        raise AssertionError(
            f"the persister did not reach the topic's end {ends} within {timeout}s; "
            f"behind (stored, end): {last[-1][1] if last and last[-1] is not True else '?'}"
        ) from None


def local_midnight(day, tz):
    """The aware datetime of DAY's local midnight in tz (a ZoneInfo)."""
    return datetime.datetime.combine(day, datetime.time(0), tzinfo=tz)


def avoid_local_midnight(tz, margin_s=90):
    """Sleeps past the next local midnight of tz when it is under margin_s
    away, so that a test that needs "today" keeps the same day throughout."""
    now = datetime.datetime.now(datetime.timezone.utc)
    local = now.astimezone(tz)
    nxt = local_midnight(local.date() + datetime.timedelta(days=1), tz)
    left = (nxt.astimezone(datetime.timezone.utc) - now).total_seconds()
    if left < margin_s:
        time.sleep(max(0.0, left) + 2)

"""Concurrency and exactly-once under load, driven by tests/tools/loadgen.

1. 1000 keep-alive connections x 100 increments on one fresh counter: every
   request answered 200, and the counter is exactly 100000 in Redis, via GET
   and, once the persister caught up, in PostgreSQL.
2. The persister SIGKILLed twice (and restarted) while a load runs: after
   catch-up PostgreSQL == Redis == the number of 200 answers, exactly.
"""

import subprocess
import tempfile
import time

from conftest import (
    loadgen_args,
    parse_loadgen,
    pid_alive,
    read_loadgen_log,
    wait_pg_total,
    wait_until,
)

# Generous: an AddressSanitizer api on 2 cores sustains several thousand
# writes per second, so the 100000 writes need ~15-30 s.
LOAD_TIMEOUT_S = 150
CATCH_UP_AFTER_CRASH_S = 150


def _url(stack, name):
    return f"{stack.api_url}/api/v1/counter/{name}/increment"


def _check_log(path, connections, per_conn, summary):
    rows = read_loadgen_log(path)
    assert len(rows) == connections * per_conn, f"{len(rows)} log lines"
    assert {(c, r) for c, r, _, _ in rows} == {
        (c, r) for c in range(connections) for r in range(per_conn)
    }, "the log must name every (connection, request) once"
    ok = [eid for _, _, s, eid in rows if s == 200]
    assert all(ok), "a 200 answer without an event_id"
    assert len(set(ok)) == len(ok), "two acknowledged writes share an event_id"
    assert len(ok) == summary["status"].get("200", 0)
    return rows


def test_thousand_connections_exact_count(api, redis, pg, stack, loadgen_bin, name, tmp_path):
    conns, per_conn = 1000, 100
    total = conns * per_conn
    log = str(tmp_path / "load.log")
    t0 = time.monotonic()
    p = subprocess.run(
        loadgen_args(loadgen_bin, _url(stack, name), conns, per_conn,
                     body='{"value":1}', log=log, timeout_s=LOAD_TIMEOUT_S - 10),
        capture_output=True, text=True, timeout=LOAD_TIMEOUT_S,
    )
    took = time.monotonic() - t0
    assert p.returncode == 0, f"loadgen exit {p.returncode}: {p.stdout} {p.stderr[-2000:]}"
    summary = parse_loadgen(p.stdout)
    print(f"\nloadgen {conns}x{per_conn} in {took:.1f}s: {p.stdout.strip()}")
    assert summary["sent"] == total, summary
    assert summary["errors"] == 0, summary
    assert summary["status"] == {"200": total}, summary
    _check_log(log, conns, per_conn, summary)

    assert redis.value(name) == total
    r = api.get(name)
    assert r.json["value"] == total and r.json["source"] == "redis", r.json
    wait_pg_total(pg, name, total, timeout=90)


def test_persister_crash_mid_stream_exactly_once(api, redis, pg, stack, stackctl, loadgen_bin, name, tmp_path):
    conns, per_conn = 200, 300
    total = conns * per_conn
    log = str(tmp_path / "load.log")
    out = tempfile.TemporaryFile(mode="w+")
    load = subprocess.Popen(
        loadgen_args(loadgen_bin, _url(stack, name), conns, per_conn,
                     body='{"value":1}', log=log, timeout_s=LOAD_TIMEOUT_S - 10),
        stdout=out, stderr=subprocess.STDOUT, text=True,
    )
    kills = []
    try:
        for fraction in (0.15, 0.5):
            # Kill at a point of the stream, not of the clock: the machine
            # may be fast or slow.
            wait_until(
                lambda: (redis.value(name) or 0) >= fraction * total or load.poll() is not None,
                LOAD_TIMEOUT_S, 0.05, f"{fraction:.0%} of the load applied",
            )
            pid = stack.pid("counter-persister")
            running = load.poll() is None
            pg_at_kill = pg.total(name)
            stackctl.kill("counter-persister")
            assert not pid_alive(pid), "counter-persister survived SIGKILL"
            kills.append((fraction, running, redis.value(name), pg_at_kill))
            time.sleep(0.5)  # let the stream run on without a persister
            stackctl.start("counter-persister")
            assert pid_alive(stack.pid("counter-persister"))
        rc = load.wait(timeout=LOAD_TIMEOUT_S)
    finally:
        if load.poll() is None:
            load.kill()
            load.wait()
    out.seek(0)
    text = out.read()
    out.close()
    assert rc == 0, f"loadgen exit {rc}: {text[-2000:]}"
    summary = parse_loadgen(text)
    print(f"\nloadgen {conns}x{per_conn}: {summary}; kills (fraction, load running, "
          f"redis, pg): {kills}")
    assert kills[0][1], "the load finished before the first kill: nothing was tested"
    _check_log(log, conns, per_conn, summary)

    acked = summary["status"].get("200", 0)
    # Every request was answered and every answer was an ack: a persister
    # crash must not disturb the write path at all.
    assert summary["errors"] == 0 and acked == total, summary
    assert redis.value(name) == acked
    assert api.value(name) == acked
    # The restarted persister gets its partitions only once the group
    # coordinator gave up on the killed members (librdkafka's default
    # session.timeout.ms is 45 s), so catch-up takes that long at least.
    t0 = time.monotonic()
    wait_pg_total(pg, name, acked, timeout=CATCH_UP_AFTER_CRASH_S)
    print(f"PostgreSQL caught up {time.monotonic() - t0:.1f}s after the load ended")
    # Stays put: nothing is folded in twice by a late redo.
    time.sleep(1.0)
    assert pg.total(name) == acked == redis.value(name)


def test_mixed_increments_and_decrements(api, redis, pg, stack, loadgen_bin, name):
    """Two concurrent loads on one counter, one adding and one taking away."""
    procs = []
    for path_op, body in (("increment", '{"value":3}'), ("decrement", '{"value":2}')):
        url = f"{stack.api_url}/api/v1/counter/{name}/{path_op}"
        procs.append(subprocess.Popen(
            loadgen_args(loadgen_bin, url, 100, 50, body=body, timeout_s=100),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        ))
    summaries = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=120)
        assert p.returncode == 0, stderr
        summaries.append(parse_loadgen(stdout))
    assert [s["status"] for s in summaries] == [{"200": 5000}, {"200": 5000}], summaries
    expected = 5000 * 3 - 5000 * 2
    assert redis.value(name) == expected
    assert api.value(name) == expected
    wait_pg_total(pg, name, expected)

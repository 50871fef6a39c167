"""h. Overload: far more concurrent connections than the api serves at
once, with about twice the work it can do in the time.

First a short closed-loop run at CAP_CONNS connections measures what the api
sustains here (requests/s). Then tests/tools/loadgen opens OVER_CONNS
connections, each sending its writes back to back, sized so that the
total is twice what the api can serve in OVER_SECONDS, while the checked
load client keeps writing at its usual rate. The api under test runs with
server.max_inflight below that concurrency, so it has to shed: 503
"overloaded" answers are fine (and must leave no trace: the checked
client's count them as failed, so I2 holds them to it); a crash, an
unbounded RSS or a wrong count is not (I1-I4).
"""

import math
import os
import subprocess
import uuid

from faultlib import api_healthy, it
from loadclient import PLAIN, Attempt, Counter, Op

CAP_CONNS = 200
OVER_CONNS = 2500
MAX_INFLIGHT = 1000  # server.max_inflight of the api under test
OVER_SECONDS = 10
# Peak RSS of counter-api under the overload (an ASan build: its shadow
# memory and quarantine are most of it).
RSS_LIMIT_KB = 256 * 1024


def _status_kb(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def _reset_peak_rss(pid):
    """Resets VmHWM to the current RSS (Linux: clear_refs 5), so that the
    peak measured is this test's."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _loadgen(loadgen_bin, stack, counter, conns, per_conn, log, timeout_s):
    url = f"{stack.api_url}/api/v1/counter/{counter.name}/increment"
    args = it.loadgen_args(loadgen_bin, url, conns, per_conn, body='{"value":1}', log=log,
                           timeout_s=timeout_s, extra=["--req-timeout-s", "30"])
    p = subprocess.run(args, capture_output=True, text=True, timeout=timeout_s + 30)
    assert p.returncode in (0, 1), f"loadgen exit {p.returncode}: {p.stderr[-2000:]}"
    return it.parse_loadgen(p.stdout), p.returncode


def _ops_from_loadgen(counter, log, all_503_overloaded=False):
    """The loadgen log as the client's ops. loadgen does not keep the error
    code of a 503: unless the api's metrics account for every one of them
    as "overloaded" (nothing applied), a 503 counts as possibly applied (an
    upper bound for I2; I1 holds for the 200s whatever the 503s were)."""
    ops = []
    for c, r, status, eid in it.read_loadgen_log(log):
        if 200 <= status < 300:
            outcome = "acked"
        elif 400 <= status < 500 or (status == 503 and all_503_overloaded):
            outcome = "failed"
        else:
            outcome = "indeterminate"
        op = Op(key=f"loadgen-{c}-{r}", counter=counter.name, kind=counter.kind)
        op.attempts.append(Attempt(0.0, 0.0, outcome, status, event_id=eid))
        ops.append(op)
    return ops


def test_h_overload_sheds_load_without_crash(scenario, stack, api, loadgen_bin, run_dir,
                                            healthy_stack):
    # A fresh api (put back as it was after the test) with an in-flight
    # limit below the overload's concurrency, so that it must shed load;
    # and a small ASan quarantine: ASan keeps up to 256 MB of freed memory,
    # which would swamp what the api itself holds.
    healthy_stack.restart_after("counter-api")
    asan = os.environ.get("ASAN_OPTIONS", "")
    env = {**stack.env, "ASAN_OPTIONS": f"{asan}:quarantine_size_mb=16".lstrip(":"),
           "COUNTER_SERVER_MAX_INFLIGHT": str(MAX_INFLIGHT)}
    it.run([it.STACK_SH, "restart", "counter-api"], timeout=120, env=env)
    pid = stack.pid("counter-api")
    assert pid and it.pid_alive(pid), "counter-api is not running"
    run = uuid.uuid4().hex[:10]
    cap_counter = Counter(f"fault.h.{run}.capacity", PLAIN)
    over_counter = Counter(f"fault.h.{run}.overload", PLAIN)

    client = scenario.start("h", rate=100, workers=4, duration_s=240, timeout_s=30)
    cap, _ = _loadgen(loadgen_bin, stack, cap_counter, CAP_CONNS, 40,
                      os.path.join(run_dir, "capacity.log"), 120)
    capacity = max(cap["rps"], 100.0)
    per_conn = max(2, math.ceil(2 * capacity * OVER_SECONDS / OVER_CONNS))
    client.mark(f"capacity {capacity:.0f} req/s at {CAP_CONNS} connections")
    reset = _reset_peak_rss(pid)
    hwm_before = _status_kb(pid, "VmHWM")
    shed_before = it.metric_value(stack, "counter_api_refused_total", reason="overloaded")
    client.mark(f"overload: {OVER_CONNS} connections x {per_conn}")
    over, over_rc = _loadgen(loadgen_bin, stack, over_counter, OVER_CONNS, per_conn,
                             os.path.join(run_dir, "overload.log"), 150)
    client.mark("overload done")
    alive = it.pid_alive(pid) and stack.pid("counter-api") == pid
    hwm_after = _status_kb(pid, "VmHWM") if alive else None
    shed = (it.metric_value(stack, "counter_api_refused_total", reason="overloaded")
            - shed_before) if alive else None
    client.run_for(3.0)
    mine = sum(1 for _, a in client.attempts() if a.code == "overloaded")
    mine += sum(1 for r in client.reads if r.status == 503 and "overloaded" in (r.error or ""))
    # Every 503 loadgen got was "overloaded" when the api's count of them
    # leaves none for anything else.
    over_503 = over["status"].get("503", 0)
    all_overloaded = shed is not None and shed - mine == over_503
    print(f"h: capacity {cap}\nh: overload {OVER_CONNS}x{per_conn}: {over}\n"
          f"h: refused as overloaded: {shed} (the checked client's: {mine}; loadgen's 503s: "
          f"{over_503}, all overloaded: {all_overloaded})\n"
          f"h: counter-api VmHWM {hwm_before} kB -> {hwm_after} kB (peak reset: {reset})")

    def overload_checks():
        out = []
        if not alive:
            out.append(f"h: counter-api (pid {pid}) died under the overload")
            return out
        if not api_healthy(api):
            out.append("h: counter-api not healthy after the overload")
        if hwm_after > RSS_LIMIT_KB:
            out.append(f"h: counter-api peak RSS {hwm_after} kB > {RSS_LIMIT_KB} kB "
                       f"(before {hwm_before} kB)")
        sent = OVER_CONNS * per_conn
        st = over["status"]
        answered = sum(st.values())
        if over_rc != 0 or over["sent"] != sent:
            out.append(f"h: loadgen did not finish its {sent} requests in time: {over}")
        if over["errors"] > sent * 0.01:
            out.append(f"h: {over['errors']} of {sent} requests got no answer under overload "
                       f"(shed load answers 503 overloaded, it does not drop connections)")
        if st.get("200", 0) < answered * 0.2:
            out.append(f"h: under overload only {st.get('200', 0)} of {answered} answers were "
                       f"200: the api should go on serving what it can")
        odd = {k: v for k, v in st.items() if k not in ("200", "503")}
        if odd:
            out.append(f"h: unexpected statuses under overload: {odd}")
        return out

    def add_loadgen_ops():
        # The loadgen counters join the check as ops of the client.
        client.external_ops += _ops_from_loadgen(cap_counter, os.path.join(run_dir, "capacity.log"))
        client.external_ops += _ops_from_loadgen(over_counter, os.path.join(run_dir, "overload.log"),
                                                 all_overloaded)
        return overload_checks()

    scenario.finish(add_loadgen_ops, extra_counters=[cap_counter, over_counter])

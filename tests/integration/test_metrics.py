"""The persister's and the applier's own metrics ports (Prometheus text),
and the abnormal-fluctuation watch. The test config makes its windows 1 s
with 4 windows of warm-up."""
import json
import os
import re
import signal
import time
import urllib.request
import uuid

from conftest import freeze, run, unique_name, wait_pg_total, wait_until
from test_applier import event, produce_events

SAMPLE_RE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (-?[0-9.e+Inf]+)$")


def _url(var):
    url = os.environ.get(var)
    assert url, f"{var} is not set: the stack's stack.env has it"
    return url


def scrape(url):
    """{(name, labels): value} of a Prometheus text page; every line must
    parse (a malformed one fails the test)."""
    with urllib.request.urlopen(url, timeout=5) as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain")
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            assert line == "" or line.startswith(("# HELP ", "# TYPE ")), line
            continue
        m = SAMPLE_RE.match(line)
        assert m, f"not a sample line: {line!r}"
        out[(m.group(1), m.group(2) or "")] = float(m.group(3))
    return out


def test_persister_metrics_follow_the_work(api, pg):
    url = _url("PERSISTER_METRICS_URL")
    before = scrape(url)
    name = unique_name("it.metrics")
    for _ in range(5):
        assert api.incr(name, 2).status == 200
    wait_pg_total(pg, name, 10)
    after = wait_until(
        lambda: (lambda m: m if m[("counter_persister_events_total", "")]
                 >= before[("counter_persister_events_total", "")] + 5 else None)(scrape(url)),
        10, 0.2, "persister counted the events")
    assert after[("counter_persister_batches_total", "")] > before[("counter_persister_batches_total", "")]
    assert after[("counter_persister_commit_seconds_count", "")] > before[("counter_persister_commit_seconds_count", "")]
    assert after[("counter_persister_batch_events_bucket", '{le="+Inf"}')] == \
        after[("counter_persister_batch_events_count", "")]
    lags = {k: v for k, v in after.items() if k[0] == "counter_persister_consumer_lag"}
    assert lags, "no consumer lag per partition"
    assert all(v >= 0 for v in lags.values())


def test_applier_metrics_count_external_events(api, stack):
    url = _url("APPLIER_METRICS_URL")
    key = ("counter_applier_events_total", '{outcome="applied"}')
    before = scrape(url)
    name = unique_name("it.metrics")
    now_ms = int(time.time() * 1000)
    events = [{"v": 1, "id": f"m-{uuid.uuid4().hex}", "counter": name, "delta": 1, "ts": now_ms}
              for _ in range(3)]
    run(["kcat", "-P", "-b", stack.kafka_bootstrap, "-t", stack.kafka_input_topic, "-k", name,
         "-X", "partitioner=murmur2_random"],
        input="".join(json.dumps(e) + "\n" for e in events))
    wait_until(lambda: api.value(name) == 3, 30, 0.1, "applied")
    after = wait_until(
        lambda: (lambda m: m if m[key] >= before[key] + 3 else None)(scrape(url)),
        10, 0.2, "applier counted them")
    assert after[("counter_applier_redis_up", "")] == 1
    assert after[("counter_applier_apply_seconds_count", "")] >= before[("counter_applier_apply_seconds_count", "")] + 3
    assert any(k[0] == "counter_applier_consumer_lag" for k in after)


def test_abnormal_fluctuation_raises_a_metric_and_a_log_line(api, stack):
    url = _url("PERSISTER_METRICS_URL")
    name = unique_name("it.fluct")
    label = ("counter_abnormal", f'{{counter="{name}"}}')
    alarms = scrape(url)[("counter_fluctuation_alarms_total", "")]
    # a steady trickle: 3 per 1 s window, for 6 windows
    t_end = time.monotonic() + 6.5
    while time.monotonic() < t_end:
        for _ in range(3):
            assert api.incr(name).status == 200
        time.sleep(1)
    assert label not in scrape(url), "a steady rate must not alarm"
    # then a burst far outside the band (floor 20, mean ~3)
    burst = json.dumps({"value": 500})
    assert api.write(name, "increment", burst).status == 200
    m = wait_until(lambda: (lambda x: x if label in x else None)(scrape(url)),
                   10, 0.2, "abnormal flagged")
    assert m[label] == 1
    assert m[("counter_fluctuation_alarms_total", "")] >= alarms + 1
    log = open(stack.log_path("counter-persister")).read()
    assert f"abnormal fluctuation: counter {name} " in log
    # quiet again: the flag clears once a window is back within the band
    wait_until(lambda: label not in scrape(url), 15, 0.5, "back within the band")


def test_api_metrics_by_route_and_status(api, stack):
    url = stack.api_url + "/metrics"
    before = scrape(url)
    name = unique_name("it.metrics")
    assert api.incr(name).status == 200
    assert api.get(name).status == 200
    assert api.request("GET", "/no/such/path").status == 404
    assert api.write(name, "increment", {"value": "x"}).status == 400
    r = api.request("GET", "/readyz")
    assert r.status == 200 and r.json["ready"] is True, r.json
    # a correction of yesterday's window, and one older than lateness_s
    daily = unique_name("daily_metrics")
    yesterday = time.strftime("%Y-%m-%dT12:00:00Z", time.gmtime(time.time() - 86400))
    assert api.incr(daily, timestamp=yesterday).status == 200
    assert api.incr(daily, timestamp="2001-01-01T00:00:00Z").status == 422
    after = scrape(url)

    def grew(key, by=1):
        return after.get(key, 0) >= before.get(key, 0) + by

    req = "counter_api_http_requests_total"
    assert grew((req, '{route="counter_increment",status="200"}'))
    assert grew((req, '{route="counter_increment",status="400"}'))
    assert grew((req, '{route="counter_get",status="200"}'))
    assert grew((req, '{route="unrouted",status="404"}'))
    assert grew((req, '{route="readyz",status="200"}'))
    dur = "counter_api_http_request_duration_seconds"
    assert grew((dur + "_count", '{route="counter_increment"}'), 2)
    assert after[(dur + "_bucket", '{route="counter_increment",le="+Inf"}')] == \
        after[(dur + "_count", '{route="counter_increment"}')]
    assert grew(("counter_api_redis_seconds_count", ""), 2)
    assert grew(("counter_api_kafka_produce_seconds_count", ""))
    assert ("counter_api_kafka_queue_events", "") in after
    assert grew(("counter_api_writes_total", '{outcome="late"}'))
    assert grew(("counter_api_writes_total", '{outcome="too_late"}'))
    # error answers by their code, every known code there from 0
    assert grew(("counter_api_errors_total", '{code="not_found"}'))
    assert grew(("counter_api_errors_total", '{code="too_late"}'))
    for code in ("kafka_unavailable", "redis_unavailable", "indeterminate"):
        assert ("counter_api_errors_total", f'{{code="{code}"}}') in after, code
    assert after[("counter_api_redis_up", "")] == 1
    assert after[("counter_api_kafka_up", "")] == 1


def _group(metrics, family, consumer):
    """{partition: value} of a group watch family for one consumer."""
    out = {}
    for (name, labels), v in metrics.items():
        if name == family and f'consumer="{consumer}"' in labels:
            out[re.search(r'partition="(\d+)"', labels).group(1)] = v
    return out


def _an_event_in_each_input_partition(stack):
    """One external event into every partition of the input topic (kcat,
    as an outside producer), so that the applier has read each."""
    name = unique_name("it.watch")
    for p in range(stack.kafka_partitions):
        produce_events(stack, [event(name, 1)], partition=p)


def test_applier_shows_a_frozen_persister_s_lag_and_last_progress(api, stack):
    """The persister's own port goes silent when its loop stops; the
    applier reads the persister group's committed offsets where the
    persister keeps them (PostgreSQL) and shows the lag growing and the
    progress time standing still. Its own group's rows come from its
    confirmed commits (or its position before one)."""
    url = _url("APPLIER_METRICS_URL")
    lag, progress = "counter_kafka_group_lag", "counter_kafka_group_progress_timestamp_seconds"
    _an_event_in_each_input_partition(stack)
    m = wait_until(lambda: (lambda x: x if len(_group(x, lag, "persister")) == stack.kafka_partitions
                            and all(v == 0 for v in _group(x, lag, "persister").values())
                            and len(_group(x, lag, "applier")) == stack.kafka_partitions
                            and all(v == 0 for v in _group(x, lag, "applier").values())
                            else None)(scrape(url)),
                   30, 0.2, "every partition watched, nothing waiting")
    for v in _group(m, progress, "persister").values():
        assert abs(v - time.time()) < 30
    pid = stack.pid("counter-persister")
    freeze(pid)
    try:
        names = [unique_name("it.stall") for _ in range(8)]
        for n in names:
            assert api.incr(n).status == 200
        frozen_at = time.time()
        m = wait_until(lambda: (lambda x: x if sum(_group(x, lag, "persister").values()) >= 8
                                else None)(scrape(url)), 15, 0.2, "the persister's lag shown")
        time.sleep(2.5)  # two more answers of the watch: the time stands still
        m2 = scrape(url)
        waiting = [p for p, v in _group(m2, lag, "persister").items() if v > 0]
        for p in waiting:
            assert _group(m2, progress, "persister")[p] <= frozen_at + 1, p
            assert _group(m2, progress, "persister")[p] == _group(m, progress, "persister")[p], p
    finally:
        os.kill(pid, signal.SIGCONT)
    wait_until(lambda: all(v == 0 for v in _group(scrape(url), lag, "persister").values()),
               60, 0.5, "the persister caught up")
    assert all(v >= frozen_at for v in _group(scrape(url), progress, "persister").values())

"""The alert rules end to end: a real Prometheus (Debian's package) with
deploy/prometheus/rules.yml scrapes this stack every second and evaluates
every second, on a port of its own, from a config made from
deploy/prometheus/prometheus.yml (its jobs, the stack's targets).

One test, in phases, bounded in time (about two minutes):
  1. every target is up, every rule evaluates without error, every query
     of the Grafana dashboard runs;
  2. a short load on the healthy stack: no alert even pending;
  3. the persister frozen (SIGSTOP) under writes, then Redis stopped:
     CounterRedisDown fires, then CounterPersisterStalled (60 s without a
     commit while events wait);
  4. both restored: those alerts, and the persister's CounterProcessDown,
     resolve, and nothing else fires.
"""
import json
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml  # python3-yaml (deploy/install-deps.sh)

from conftest import freeze, unique_name, wait_until

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"
RULES = ROOT / "deploy" / "prometheus" / "rules.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "counter.json"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def host_port(url):
    u = urllib.parse.urlsplit(url)
    return f"{u.hostname}:{u.port}"


class Prometheus:
    def __init__(self, url):
        self.url = url

    def get(self, path, **params):
        q = ("?" + urllib.parse.urlencode(params)) if params else ""
        with urllib.request.urlopen(self.url + path + q, timeout=10) as r:
            body = json.loads(r.read())
        assert body["status"] == "success", body
        return body["data"]

    def alerts(self):
        """{alertname: [alerts]} pending or firing now."""
        out = {}
        for a in self.get("/api/v1/alerts")["alerts"]:
            out.setdefault(a["labels"]["alertname"], []).append(a)
        return out

    def firing(self, alertname):
        return [a for a in self.alerts().get(alertname, []) if a["state"] == "firing"]


@pytest.fixture
def prometheus(stack, tmp_path):
    """Prometheus on a free port, scraping this stack's three services."""
    cfg = yaml.safe_load(CONFIG.read_text())
    targets = {
        "counter-api": host_port(stack.api_url),
        "counter-persister": host_port(os.environ["PERSISTER_METRICS_URL"]),
        "counter-applier": host_port(os.environ["APPLIER_METRICS_URL"]),
    }
    cfg["global"] = {"scrape_interval": "1s", "scrape_timeout": "900ms",
                     "evaluation_interval": "1s"}
    cfg["rule_files"] = [str(RULES)]
    for job in cfg["scrape_configs"]:
        job["static_configs"] = [{"targets": [targets[job["job_name"]]]}]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(cfg))
    port = free_port()
    log = open(tmp_path / "prometheus.log", "w")
    proc = subprocess.Popen(
        ["prometheus", f"--config.file={tmp_path / 'prometheus.yml'}",
         f"--storage.tsdb.path={tmp_path / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=log, stderr=subprocess.STDOUT)
    prom = Prometheus(f"http://127.0.0.1:{port}")

    def ready():
        assert proc.poll() is None, (tmp_path / "prometheus.log").read_text()[-2000:]
        try:
            with urllib.request.urlopen(prom.url + "/-/ready", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    try:
        wait_until(ready, 30, 0.2, "prometheus ready")
        yield prom
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


class Load:
    """Writes (and reads) a few counters, steadily and lightly, on a
    thread, until stopped; counts the answers by status."""

    def __init__(self, api, per_second=20, counters=5):
        self.api, self.pause = api, 1.0 / per_second
        self.names = [unique_name("it.prom") for _ in range(counters)]
        self.statuses = {}
        self.stop_flag = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        i = 0
        while not self.stop_flag.is_set():
            name = self.names[i % len(self.names)]
            try:
                r = self.api.incr(name, timeout=5) if i % 4 else self.api.get(name, timeout=5)
                self.statuses[r.status] = self.statuses.get(r.status, 0) + 1
            except OSError:
                self.statuses["error"] = self.statuses.get("error", 0) + 1
            i += 1
            self.stop_flag.wait(self.pause)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop_flag.set()
        self.thread.join(timeout=30)


def test_alerts_fire_on_faults_and_stay_quiet_on_a_healthy_stack(api, stack, stackctl, prometheus):
    # 1. everything scraped, every rule and dashboard query sound
    def all_up():
        active = prometheus.get("/api/v1/targets")["activeTargets"]
        return len(active) == 3 and all(t["health"] == "up" for t in active)
    wait_until(all_up, 30, 0.5, "the three services scraped")
    time.sleep(3)  # a few evaluations
    for group in prometheus.get("/api/v1/rules")["groups"]:
        for rule in group["rules"]:
            assert rule["health"] == "ok", rule
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"].replace("$__rate_interval", "1m")
            prometheus.get("/api/v1/query", query=expr)

    # 2. a healthy stack under a short load: nothing even pending
    with Load(api) as load:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            assert prometheus.alerts() == {}, prometheus.alerts()
            time.sleep(0.5)
    assert set(load.statuses) == {200}, load.statuses

    # 3. the persister frozen, then Redis stopped, writes going on: the
    # 200s before Redis stops wait in counter-events (the 202s after it go
    # to the input topic, for the applier)
    persister = stack.pid("counter-persister")
    with Load(api) as load:
        freeze(persister)
        t0 = time.monotonic()
        try:
            wait_until(lambda: load.statuses.get(200, 0) > 20, 30, 0.1, "writes while frozen")
            stackctl.stop("redis")
            wait_until(lambda: prometheus.firing("CounterRedisDown"), 60, 0.5,
                       "CounterRedisDown firing")
            stalled = wait_until(lambda: prometheus.firing("CounterPersisterStalled"), 100, 0.5,
                                 "CounterPersisterStalled firing")
            assert time.monotonic() - t0 >= 55, "stalled before 60 s without a commit"
            assert {a["labels"]["group"] for a in stalled} == {"counter-persister"}
            assert all(a["annotations"]["runbook_url"] == "docs/operations.md#counterpersisterstalled"
                       for a in stalled)
        finally:
            # 4. both restored
            os.kill(persister, signal.SIGCONT)
            stackctl.start("redis")
            # the next tests find Redis in use again (restored if it came
            # back empty), whatever happened here
            probe = unique_name("it.prom_probe")
            wait_until(lambda: api.incr(probe).status == 200, 120, 0.5, "writes applied again")
    assert load.statuses.get(202, 0) > 0, load.statuses

    def resolved():
        now = prometheus.alerts()
        return not ({"CounterRedisDown", "CounterPersisterStalled", "CounterProcessDown"} & set(now))
    wait_until(resolved, 90, 1, "the alerts resolved")
    # Nothing else fires. Rate alerts over the outage may still be pending;
    # the fluctuation watch judges rates when the persister folds, so the
    # backlog it folds after the freeze is a burst it may flag.
    firing = {n for n, alerts in prometheus.alerts().items()
              if any(a["state"] == "firing" for a in alerts)}
    assert firing <= {"CounterAbnormalFluctuation"}, prometheus.alerts()

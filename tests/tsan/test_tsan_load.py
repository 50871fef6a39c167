"""Concurrent load on the ThreadSanitizer build of counter-api and
counter-persister (tests/run.sh starts them): librdkafka's threads call
back into our code while the loop serves HTTP. tests/run.sh fails the suite
if any ThreadSanitizer report reaches the services' logs; this file checks
that the services still count exactly under that build."""
import json
import os
import subprocess
import time
import urllib.request
import uuid


def _get_value(name):
    url = f"{os.environ['API_URL']}/api/v1/counter/{name}"
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.load(r)["value"]


def _pg_total(name):
    out = subprocess.run(
        ["psql", os.environ["PG_DSN"], "-Atc",
         f"SELECT coalesce(sum(value), 0) FROM counter_totals WHERE name = '{name}'"],
        check=True, capture_output=True, text=True).stdout.strip()
    return int(out)


def test_concurrent_increments_are_exact_under_tsan():
    name = f"tsan_{uuid.uuid4().hex[:12]}"
    conns, per_conn = 50, 40
    out = subprocess.run(
        [os.environ["LOADGEN"], "--url",
         f"{os.environ['API_URL']}/api/v1/counter/{name}/increment",
         "--method", "POST", "--connections", str(conns),
         "--requests-per-conn", str(per_conn), "--timeout-s", "120"],
        check=True, capture_output=True, text=True).stdout
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["status"].get("200") == conns * per_conn, summary
    assert _get_value(name) == conns * per_conn

    deadline = time.time() + 60
    while _pg_total(name) != conns * per_conn and time.time() < deadline:
        time.sleep(0.5)
    assert _pg_total(name) == conns * per_conn

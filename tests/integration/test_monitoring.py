"""What Prometheus and Grafana read, checked against the running services:
every metric of the three services passes `promtool check metrics`
(Debian's prometheus package, deploy/install-deps.sh), and every query
of the Grafana dashboard (deploy/grafana/counter.json) names metrics that
the services export, read from their live /metrics. The alert rules
themselves are tested by promtool (tests/prometheus/rules_test.yml) and,
against this stack with a real Prometheus, by test_prometheus.py."""
import json
import os
import re
import subprocess
import urllib.request
from pathlib import Path

import yaml  # python3-yaml (deploy/install-deps.sh)

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "counter.json"
RULES = ROOT / "deploy" / "prometheus" / "rules.yml"

# PromQL words that are not metric names: aggregations' and binary
# operators' keywords (functions are told by the "(" after them).
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool",
            "offset", "and", "or", "unless", "inf", "nan"}


def metrics_urls(stack):
    urls = {"counter-api": stack.api_url + "/metrics"}
    for job, var in (("counter-persister", "PERSISTER_METRICS_URL"),
                     ("counter-applier", "APPLIER_METRICS_URL")):
        assert os.environ.get(var), f"{var} is not set: the stack's stack.env has it"
        urls[job] = os.environ[var]
    return urls


def exposition(url):
    with urllib.request.urlopen(url, timeout=10) as r:
        assert r.status == 200
        return r.read().decode()


def families(text):
    """The metric names a page declares, with a histogram's series names."""
    names = set()
    for m in re.finditer(r"^# TYPE (\S+) (\S+)$", text, re.M):
        name, kind = m.groups()
        names.add(name)
        if kind in ("histogram", "summary"):
            names |= {name + "_bucket", name + "_sum", name + "_count"}
    return names


def metric_names(expr):
    """The metric names a PromQL expression selects."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)   # strings
    e = re.sub(r"\{[^}]*\}", " ", e)                 # label matchers
    e = re.sub(r"\[[^\]]*\]", " ", e)                # ranges
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    e = re.sub(r"\$\w+", " ", e)                     # Grafana's variables
    names = set()
    for m in re.finditer(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?", e):
        word, call = m.group(1), m.group(2)
        if call or word.lower() in KEYWORDS:
            continue
        names.add(word)
    return names


def test_metric_names_of_a_query():
    q = ('histogram_quantile(0.99, sum by (le, route) (rate(x_bucket{a="b",c=~"5.."}'
         '[$__rate_interval]))) / ignoring(code) sum(y) > bool 1e3 or max(time() - z offset 5m)')
    assert metric_names(q) == {"x_bucket", "y", "z"}


def test_promtool_check_metrics_passes_on_every_service(api, stack, name):
    # something written and read, so that the per-route families have samples
    assert api.incr(name).status == 200
    assert api.get(name).status == 200
    for job, url in metrics_urls(stack).items():
        text = exposition(url)
        r = subprocess.run(["promtool", "check", "metrics"], input=text, text=True,
                           capture_output=True, timeout=60)
        assert r.returncode == 0, f"{job}: {r.stdout}{r.stderr}"
        # one declaration per family
        declared = re.findall(r"^# TYPE (\S+) ", text, re.M)
        assert len(declared) == len(set(declared)), job


def test_every_dashboard_query_names_exported_metrics(stack):
    dash = json.loads(DASHBOARD.read_text())
    exported = set()
    for url in metrics_urls(stack).values():
        exported |= families(exposition(url))
    queries = [(p["title"], t["expr"]) for p in dash["panels"] for t in p.get("targets", [])]
    assert len(queries) >= 20
    for title, expr in queries:
        names = metric_names(expr)
        assert names, f"{title}: {expr} names no metric"
        missing = names - exported
        assert not missing, f"{title}: {expr} names {sorted(missing)}, which no service exports"


def test_every_rule_names_exported_metrics(stack):
    """A rule over a metric nobody exports would never fire."""
    groups = yaml.safe_load(RULES.read_text())["groups"]
    rules = [r for g in groups for r in g["rules"]]
    recorded = {r["record"] for r in rules if "record" in r}
    exported = {"up"}  # Prometheus's own, per target
    for url in metrics_urls(stack).values():
        exported |= families(exposition(url))
    for r in rules:
        names = metric_names(r["expr"]) - recorded
        missing = names - exported
        assert not missing, f"{r.get('alert') or r['record']}: {sorted(missing)} not exported"

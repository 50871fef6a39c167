"""Contract test: a history read without `from` or `to` (docs/openapi.yaml,
getHistory). schemathesis already sends such requests; here each default
is asked for by name and the answer held to what the file promises beyond
the schema: the documented span (60 minutes, 24 hours, 30 days), a range
ending with the period that holds now, and `from`/`to` naming it.

Runs on the stack of test_openapi.py (API_URL).
"""

import datetime
import json
import os
import urllib.parse
import urllib.request

import jsonschema_rs
import pytest

from test_framing import SPEC, resolve

SPANS = {"minute": 60, "hour": 24, "day": 30}
PERIOD = {"minute": datetime.timedelta(minutes=1), "hour": datetime.timedelta(hours=1),
          "day": datetime.timedelta(hours=25)}


def history(query):
    base = os.environ.get("API_URL", "").rstrip("/")
    if not base:
        pytest.fail("the contract test needs the stack's environment; missing: API_URL",
                    pytrace=False)
    url = f"{base}/api/v1/counter/contract-history/history"
    if query:
        url += "?" + urllib.parse.urlencode(query)
    with urllib.request.urlopen(url, timeout=15) as r:
        return r.status, r.headers["Content-Type"], json.loads(r.read())


def schema_200():
    op = resolve(SPEC["paths"]["/api/v1/counter/{name}/history"]["get"])
    return op["responses"]["200"]["content"]["application/json"]["schema"]


def when(ts):
    return datetime.datetime.fromisoformat(ts.replace("Z", "+00:00"))


@pytest.mark.parametrize("interval", [None, "minute", "hour", "day"])
def test_no_range_reads_the_documented_span(interval):
    query = {"interval": interval} if interval else {}
    status, ctype, body = history(query)
    now = datetime.datetime.now(datetime.timezone.utc)
    assert status == 200 and ctype.startswith("application/json")
    jsonschema_rs.validator_for(schema_200()).validate(body)
    iv = interval or "hour"
    assert body["interval"] == iv
    assert len(body["points"]) == SPANS[iv], body
    assert body["points"][0]["start"] == body["from"]
    # the range ends with the period that holds now
    assert when(body["to"]) > now - datetime.timedelta(seconds=5)
    assert when(body["to"]) - now <= PERIOD[iv]


def test_one_end_given():
    status, _, body = history({"interval": "minute", "to": "2026-01-02T00:00:00Z"})
    assert status == 200
    jsonschema_rs.validator_for(schema_200()).validate(body)
    assert (when(body["from"]), when(body["to"])) == (
        when("2026-01-01T23:00:00Z"), when("2026-01-02T00:00:00Z"))
    since = (datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=3)
             ).replace(microsecond=0)
    status, _, body = history({"interval": "day", "from": since.isoformat()})
    assert status == 200
    jsonschema_rs.validator_for(schema_200()).validate(body)
    assert when(body["from"]) == since
    assert len(body["points"]) == 4, body

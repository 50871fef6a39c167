"""The dashboard (issue 7): the page counter-api serves at "/" with its
files under /ui/, the list of counters it shows
(GET /api/v1/counters/names), and the page itself in headless Chromium
(tests/dashboard/check.mjs: a written value appears in its row, the chart
draws the history's points).

The browser check needs node, Debian's chromium and playwright-core, all
from deploy/install-deps.sh; a missing one fails the test, never skips it.
"""

import http.client
import os
import shutil
import subprocess
import urllib.parse

import pytest

from conftest import CATCH_UP_S, REPO, unique_name, wait_until
from own_process import OwnApi

CHECK = os.path.join(REPO, "tests", "dashboard", "check.mjs")
READ_TOKEN = "it-dash-read-5b0c2e7d9a1f4e3b8c6d"
WRITE_TOKEN = "it-dash-write-Zm9yIHRoZSBkYXNoYm9hcmQ="


def raw_get(host, port, path, method="GET", headers=None):
    """(status, headers, body bytes): the page is not JSON, so not
    conftest.http_request."""
    conn = http.client.HTTPConnection(host, port, timeout=15)
    try:
        conn.request(method, path, headers={"Connection": "close", **(headers or {})})
        r = conn.getresponse()
        return r.status, r.msg, r.read()
    finally:
        conn.close()


def names(api, headers=None, **query):
    q = urllib.parse.urlencode(query)
    return api.request("GET", "/api/v1/counters/names" + (f"?{q}" if q else ""), headers=headers)


def listed(api, name, **query):
    r = names(api, **query)
    assert r.status == 200, (r.status, r.json)
    return name in r.json["names"]


def run_browser_check(api_url, extra_env=None):
    node = shutil.which("node")
    assert node, "node is not installed (deploy/install-deps.sh installs it)"
    assert os.access("/usr/bin/chromium", os.X_OK) or os.environ.get("CHROMIUM"), (
        "chromium is not installed (deploy/install-deps.sh installs Debian's)"
    )
    env = {**os.environ, "API_URL": api_url, **(extra_env or {})}
    p = subprocess.run(
        [node, CHECK], capture_output=True, text=True, timeout=90, env=env, cwd=REPO
    )
    assert p.returncode == 0, (
        f"check.mjs exited {p.returncode}\nstdout: {p.stdout[-2000:]}\nstderr: {p.stderr[-3000:]}"
    )
    assert "dashboard check: ok" in p.stdout, p.stdout


# ------------------------------------------------------------- the page ---


def test_the_page_and_its_files_are_served(stack):
    host, port = stack.api_host, stack.api_port
    status, headers, body = raw_get(host, port, "/")
    assert status == 200, (status, body[:300])
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    assert headers["Cache-Control"] == "no-cache"
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    page = body.decode()
    assert page.lstrip().lower().startswith("<!doctype html>")
    # the page loads only its own files
    for ref in ('src="/ui/dashboard.js"', 'href="/ui/dashboard.css"'):
        assert ref in page, ref
    assert "http://" not in page and "https://" not in page

    for path, ctype, marker in (
        ("/ui/dashboard.js", "text/javascript; charset=utf-8", b"/api/v1/counters/names"),
        ("/ui/dashboard.css", "text/css; charset=utf-8", b"#chart"),
    ):
        status, headers, body = raw_get(host, port, path)
        assert status == 200, (path, status)
        assert headers["Content-Type"] == ctype, (path, headers["Content-Type"])
        assert marker in body, path
        assert int(headers["Content-Length"]) == len(body)

    status, headers, body = raw_get(host, port, "/", method="HEAD")
    assert status == 200 and body == b""
    assert headers["Content-Type"] == "text/html; charset=utf-8"


def test_unknown_files_and_methods_are_refused(api):
    for path in ("/ui/missing.js", "/ui/../index.html", "/ui/index.html/x"):
        r = api.request("GET", path)
        assert r.status == 404, (path, r.status)
        assert r.json["error"]["code"] == "not_found"
    for path in ("/index.html", "/ui"):
        assert api.request("GET", path).status == 404, path
    for path in ("/", "/ui/dashboard.js", "/api/v1/counters/names"):
        r = api.request("POST", path)
        assert r.status == 405, (path, r.status)
        assert r.headers["Allow"] == "GET, HEAD"


# ------------------------------------------------------------ the names ---


def test_names_lists_a_fresh_counter_sorted_and_filtered(api):
    base = unique_name("it.dash")
    written = [f"{base}-b", f"{base}-a", f"{base}-c"]
    for n in written:
        r = api.incr(n)
        assert r.status == 200, (r.status, r.json)
    # the list comes from PostgreSQL: the persister folds the writes in
    wait_until(
        lambda: all(listed(api, n, prefix=base) for n in written),
        CATCH_UP_S,
        0.2,
        "the written counters listed",
    )
    r = names(api, prefix=base)
    assert r.json == {"names": sorted(written), "truncated": False}

    r = names(api, prefix=base, limit=2)
    assert r.json == {"names": sorted(written)[:2], "truncated": True}
    r = names(api, prefix=base, after=sorted(written)[1])
    assert r.json == {"names": sorted(written)[2:], "truncated": False}

    # the whole list is sorted, and holds the config's exact names
    # (tests/config.test.yaml), written or not
    r = names(api)
    assert r.status == 200
    got = r.json["names"]
    assert got == sorted(got) and len(got) == len(set(got))
    assert 1 <= len(got) <= 1000
    r = names(api, prefix="online_players")
    assert "online_players" in r.json["names"]


@pytest.mark.parametrize(
    "query, field",
    [
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=ten", "limit"),
        ("limit=-1", "limit"),
        ("limit=5&limit=6", "limit"),
        ("prefix=a:b", "prefix"),
        ("prefix=%7Bc", "prefix"),
        ("prefix=a&prefix=b", "prefix"),
        ("prefix=a%00b", "prefix"),
        ("after=", "after"),
        ("after=" + "x" * 129, "after"),
    ],
)
def test_names_refuses_a_bad_query(api, query, field):
    r = api.request("GET", f"/api/v1/counters/names?{query}")
    assert r.status == 400, (query, r.status, r.json)
    assert r.json["error"]["code"] == "invalid_query", r.json
    assert r.json["error"]["field"] == field, r.json


# ----------------------------------------------------------- the browser ---


def test_the_page_in_chromium_shows_a_written_value_and_its_chart(stack):
    run_browser_check(stack.api_url)


def test_with_auth_the_page_is_open_and_asks_for_a_read_token(stack, tmp_path):
    tokens = tmp_path / "tokens"
    tokens.write_text(f"read {READ_TOKEN}\nwrite {WRITE_TOKEN}\n")
    tokens.chmod(0o600)
    own = OwnApi(stack, tmp_path, {"COUNTER_AUTH_TOKENS_FILE": str(tokens)}).start()
    try:
        status, headers, _ = raw_get("127.0.0.1", own.port, "/")
        assert status == 200 and headers["Content-Type"].startswith("text/html")
        assert raw_get("127.0.0.1", own.port, "/ui/dashboard.js")[0] == 200
        status, headers, _ = raw_get("127.0.0.1", own.port, "/api/v1/counters/names")
        assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer")
        status, _, body = raw_get(
            "127.0.0.1",
            own.port,
            "/api/v1/counters/names?limit=1",
            headers={"Authorization": f"Bearer {READ_TOKEN}"},
        )
        assert status == 200, body
        run_browser_check(
            own.endpoint.api_url, {"READ_TOKEN": READ_TOKEN, "WRITE_TOKEN": WRITE_TOKEN}
        )
    finally:
        own.assert_clean_exit()

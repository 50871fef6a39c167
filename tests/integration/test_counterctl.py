"""counterctl as the operator's tool (issue 7): counters list/get read the
stores (Redis, else PostgreSQL, saying which), counters set/reset write
through the api's endpoints with an Idempotency-Key, history reads the
api's history; every command has --help; the exit codes are 0 ok, 1 a
difference or the api refused, 2 usage or configuration, 3 a dependency
unreachable.

Values are checked against what the api answers and what PostgreSQL
holds. A fake api on a local socket (FakeApi) scripts the answers a real
one gives only under faults: no answer, 503 indeterminate, a chunked body.
"""

import datetime
import json
import os
import re
import socket
import subprocess
import threading
from zoneinfo import ZoneInfo

import pytest

from conftest import (
    STACK_SH,
    api_history,
    api_set,
    avoid_local_midnight,
    counter_name,
    pg_daily,
    redis_window,
    rfc3339,
    run,
    sql_literal,
    unique_name,
    wait_pg_total,
    wait_persisted,
    wait_until,
)

UTC = datetime.timezone.utc
SHANGHAI = ZoneInfo("Asia/Shanghai")
RFC3339_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
KEY = re.compile(r"^counterctl-[0-9a-f]{32}$")


def ctl(*args, env=None, timeout=120):
    """Runs counterctl ARGS with the stack's environment (plus env; a
    None value removes the variable)."""
    binary = os.path.join(os.environ["BIN_DIR"], "counterctl")
    full = {**os.environ}
    for k, v in (env or {}).items():
        if v is None:
            full.pop(k, None)
        else:
            full[k] = v
    return subprocess.run(
        [binary, *map(str, args)], capture_output=True, text=True, timeout=timeout, env=full
    )


def ok(p):
    assert p.returncode == 0, f"exit {p.returncode}\nstdout: {p.stdout}\nstderr: {p.stderr}"
    return p


def one_json(p):
    """stdout holds exactly one JSON document."""
    return json.loads(p.stdout)


def pg_one(pg, sql):
    rows = pg.query(sql)
    return rows[0] if rows else None


# ------------------------------------------------------------------ help ---

COMMANDS = [
    [],
    ["counters"],
    ["counters", "list"],
    ["counters", "get"],
    ["counters", "set"],
    ["counters", "reset"],
    ["history"],
    ["migrate"],
    ["create-topic"],
    ["verify"],
    ["rebuild-postgres"],
    ["rebuild-redis"],
]


@pytest.mark.parametrize("cmd", COMMANDS, ids=lambda c: "-".join(c) or "main")
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_of_every_command(cmd, flag):
    # No configuration at all: help must not need one.
    p = ctl(*cmd, flag, env={"COUNTER_CONFIG": "/nonexistent/config.yaml"})
    assert p.returncode == 0, (p.returncode, p.stdout, p.stderr)
    assert p.stdout.startswith("usage: counterctl"), p.stdout
    assert p.stderr == ""
    words = " ".join(cmd[-1:]) or "COMMAND"
    assert words in p.stdout.splitlines()[0]


def test_help_documents_exit_codes_and_reset_rules():
    main = ok(ctl("--help")).stdout
    for line in ("0  ok", "1  a check found a difference", "2  usage or configuration error",
                 "3  a dependency unreachable"):
        assert line in main, main
    for cmd in ("counters list", "counters get", "counters set", "counters reset", "history",
                "migrate", "create-topic", "verify", "rebuild-postgres", "rebuild-redis"):
        assert f"  {cmd}" in main, cmd
    reset = " ".join(ok(ctl("counters", "reset", "--help")).stdout.split())
    assert "a unique counter is refused: it counts distinct users" in reset, reset
    assert "a logged event" in reset and '"counterctl": "reset"' in reset, reset
    assert "Idempotency-Key" in reset
    set_ = " ".join(ok(ctl("counters", "set", "--help")).stdout.split())
    assert "Gauges only" in set_ and "Exit status: 0 set; 1 the api refused" in set_, set_


BAD_USAGE = [
    [],
    ["bogus"],
    ["--bogus"],
    ["counters"],
    ["counters", "bogus"],
    ["counters", "list", "--bogus"],
    ["counters", "list", "extra"],
    ["counters", "list", "--prefix"],
    ["counters", "list", "--prefix", "bad prefix"],
    ["counters", "list", "--json=yes"],
    ["counters", "get"],
    ["counters", "get", "a", "b"],
    ["counters", "get", "bad{name}"],
    ["counters", "set", "g"],
    ["counters", "set", "g", "1.5"],
    ["counters", "set", "g", "99999999999999999999"],
    ["counters", "set", "g", "1", "--idempotency-key", "has space"],
    ["counters", "set", "g", "1", "--json", "--json"],
    ["counters", "reset"],
    ["counters", "reset", "a", "--force"],
    ["history", "n"],
    ["history", "n", "--from", "-1h"],
    ["history", "n", "--from", "yesterday", "--to", "now"],
    ["history", "n", "--from", "2026-11-26T00:00:00", "--to", "now"],
    ["history", "n", "--from", "-1h", "--to", "now", "--interval", "week"],
    ["history", "--from", "-1h", "--to", "now"],
    ["migrate"],
    ["migrate", "sideways"],
    ["migrate", "up", "3"],
    ["migrate", "down", "0"],
    ["create-topic", "extra"],
    ["verify", "--wait-s", "x"],
    ["verify", "--wait-s", "5000"],
    ["verify", "--bogus"],
    ["rebuild-postgres", "--bogus"],
    ["rebuild-redis", "extra"],
]


@pytest.mark.parametrize("args", BAD_USAGE, ids=lambda a: " ".join(a) or "nothing")
def test_bad_usage_exits_2_with_usage_on_stderr(args):
    p = ctl(*args, timeout=20)
    assert p.returncode == 2, (p.returncode, p.stdout, p.stderr)
    assert p.stdout == ""
    assert "usage: counterctl" in p.stderr, p.stderr
    assert p.stderr.startswith("counterctl: "), p.stderr


@pytest.mark.parametrize(
    "args, env, expect",
    [
        (["counters", "set", "g", "1", "--api", "https://127.0.0.1:1"], {}, "https is not supported"),
        (["counters", "reset", "g"], {"COUNTER_API_URL": "http://h:99999"}, "port must be"),
        (["history", "g", "--from", "-1h", "--to", "now"], {"COUNTER_API_URL": "ftp://x"},
         "expected http://"),
        (["counters", "get", "g"], {"COUNTER_SERVER_PORT": "80a"}, "server.port"),
        (["counters", "list"], {"COUNTER_CONFIG": "/nonexistent/config.yaml"}, "nonexistent"),
    ],
)
def test_configuration_errors_exit_2(args, env, expect):
    p = ctl(*args, env=env, timeout=20)
    assert p.returncode == 2, (p.returncode, p.stdout, p.stderr)
    assert expect in p.stderr, p.stderr
    assert p.stdout == ""


# ------------------------------------------------------------- list, get ---

# tests/config.test.yaml: what list/get must report for each prefix.
DEFS = {
    "it_gauge_": ("gauge", "none", "UTC"),
    "it_day_sh_": ("counter", "daily", "Asia/Shanghai"),
    "it_dau_": ("unique", "daily", "Asia/Shanghai"),
    "it.": ("counter", "none", "UTC"),  # undeclared: a plain counter
}


def expected_value_in_pg(pg, name, period):
    if period:
        row = pg_one(pg, "SELECT value FROM counter_daily WHERE name = "
                     f"{sql_literal(name)} AND day = {sql_literal(period)}")
    else:
        row = pg_one(pg, f"SELECT value FROM counter_totals WHERE name = {sql_literal(name)}")
    return int(row[0]) if row else 0


def test_list_and_get_agree_with_api_and_postgres(api, pg, kafka):
    avoid_local_midnight(SHANGHAI)
    names = {
        "it_gauge_": counter_name("it_gauge_"),
        "it_day_sh_": counter_name("it_day_sh_"),
        "it_dau_": counter_name("it_dau_"),
        "it.": unique_name("it.ctl"),
    }
    writes = [
        api_set(api, names["it_gauge_"], 37),
        api.incr(names["it_day_sh_"], 4),
        api.incr(names["it_day_sh_"], 5),
        # yesterday's window must not leak into today's value
        api.incr(names["it_day_sh_"], 100,
                 timestamp=rfc3339(datetime.datetime.now(SHANGHAI) - datetime.timedelta(days=1))),
        api.incr(names["it_dau_"], user_id="u1"),
        api.incr(names["it_dau_"], user_id="u2"),
        api.incr(names["it_dau_"], user_id="u1"),
        api.incr(names["it."], 12),
        api.decr(names["it."], 2),
    ]
    assert all(r.status == 200 for r in writes), [(r.status, r.json) for r in writes]
    wait_persisted(pg, kafka)

    listed = one_json(ok(ctl("counters", "list", "--json")))
    assert listed["source"] == "redis" and listed["stale"] is False, listed
    assert "as_of" not in listed
    assert sorted(listed["names_from"]) == ["postgres", "redis"]
    assert listed["count"] == len(listed["counters"])
    all_names = [c["name"] for c in listed["counters"]]
    assert all_names == sorted(all_names) and len(set(all_names)) == len(all_names)
    by_name = {c["name"]: c for c in listed["counters"]}

    today_sh = datetime.datetime.now(SHANGHAI).date().isoformat()
    expected_values = {names["it_gauge_"]: 37, names["it_day_sh_"]: 9,
                       names["it_dau_"]: 2, names["it."]: 10}
    for prefix, name in names.items():
        kind, reset, tz = DEFS[prefix]
        from_api = api.get(name).json
        c = by_name[name]
        assert c["value"] == expected_values[name] == from_api["value"], (c, from_api)
        assert (c["kind"], c["reset"], c["timezone"]) == (kind, reset, tz), c
        assert c["last_updated"] == from_api["last_updated"], (c, from_api)
        assert RFC3339_MS.match(c["last_updated"]), c
        assert c.get("period") == from_api.get("period"), (c, from_api)
        if reset == "daily":
            assert c["period"] == today_sh
        assert expected_value_in_pg(pg, name, c.get("period")) == c["value"], name

        got = one_json(ok(ctl("counters", "get", name, "--json")))
        assert got == {**c, "source": "redis", "stale": False}, (got, c)

    # The human table: one row per counter, the value in its column.
    table = ok(ctl("counters", "list")).stdout.splitlines()
    assert table[0].split() == ["NAME", "KIND", "RESET", "TIMEZONE", "PERIOD", "VALUE",
                                "LAST_UPDATED"]
    assert table[-1].endswith("values from redis"), table[-1]
    rows = {line.split()[0]: line.split() for line in table[1:-1]}
    for prefix, name in names.items():
        kind, reset, tz = DEFS[prefix]
        period = today_sh if reset == "daily" else "-"
        assert rows[name][1:6] == [kind, reset, tz, period, str(expected_values[name])], rows[name]

    text = ok(ctl("counters", "get", names["it_day_sh_"])).stdout
    fields = dict(line.split(None, 1) for line in text.splitlines())
    assert fields["value"] == "9" and fields["period"] == today_sh
    assert fields["kind"] == "counter" and fields["reset"] == "daily"
    assert fields["timezone"] == "Asia/Shanghai" and fields["source"] == "redis"
    assert fields["last_updated"] == by_name[names["it_day_sh_"]]["last_updated"]


def test_get_of_a_counter_never_written_is_0():
    name = unique_name("it.ctl-never")
    got = one_json(ok(ctl("counters", "get", name, "--json")))
    assert got == {"name": name, "value": 0, "kind": "counter", "reset": "none",
                   "timezone": "UTC", "last_updated": None, "source": "redis", "stale": False}
    text = ok(ctl("counters", "get", name)).stdout
    assert "last_updated  never" in text and "value         0" in text


def test_list_prefix_selects_exactly(api, pg):
    prefix = unique_name("it.ctl-p") + "."
    mine = [prefix + s for s in ("b", "a", "c_")]
    other = prefix[:-1] + "x"  # shares all but the final dot
    for i, n in enumerate(mine + [other]):
        assert api.incr(n, i + 1).status == 200
    listed = one_json(ok(ctl("counters", "list", "--prefix", prefix, "--json")))
    assert [c["name"] for c in listed["counters"]] == sorted(mine), listed
    assert [c["value"] for c in listed["counters"]] == [2, 1, 3]
    # "_" is no wildcard, neither in Redis' MATCH nor in PostgreSQL
    wait_pg_total(pg, prefix + "c_", 3)
    listed = one_json(ok(ctl("counters", "list", "--prefix", prefix + "c_", "--json")))
    assert [c["name"] for c in listed["counters"]] == [prefix + "c_"]
    empty = ok(ctl("counters", "list", "--prefix", prefix + "zzz"))
    assert empty.stdout.splitlines()[-1] == "0 counters; values from redis"


def test_list_shows_counters_the_persister_has_not_reached(api, pg, stackctl):
    """A counter written while the persister is stopped is only in Redis:
    list finds it there (SCAN) all the same."""
    name = unique_name("it.ctl-unpersisted")
    stackctl.stop("counter-persister")
    try:
        assert api.incr(name, 6).status == 200
        assert pg.total(name) is None
        listed = one_json(ok(ctl("counters", "list", "--prefix", name, "--json")))
        assert [(c["name"], c["value"]) for c in listed["counters"]] == [(name, 6)], listed
    finally:
        stackctl.start("counter-persister")
    wait_pg_total(pg, name, 6)


def test_list_and_get_fall_back_to_postgres_when_redis_is_unreachable(api, pg, kafka):
    name = unique_name("it.ctl-fallback")
    daily = counter_name("it_day_sh_")
    avoid_local_midnight(SHANGHAI)
    assert api.incr(name, 8).status == 200
    assert api.incr(daily, 3).status == 200
    wait_persisted(pg, kafka)
    env = {"COUNTER_REDIS_ADDR": "127.0.0.1:1"}
    total_row = pg.total_row(name)

    got = one_json(ok(ctl("counters", "get", name, "--json", env=env)))
    assert got["value"] == 8 == total_row[0]
    assert (got["source"], got["stale"]) == ("postgres", True), got
    assert RFC3339_MS.match(got["as_of"]), got
    assert got["last_updated"] == api.get(name).json["last_updated"]

    got = one_json(ok(ctl("counters", "get", daily, "--json", env=env)))
    today_sh = datetime.datetime.now(SHANGHAI).date().isoformat()
    assert (got["value"], got["period"]) == (pg_daily(pg, daily)[today_sh], today_sh) == (3, today_sh)

    p = ok(ctl("counters", "get", name, env=env))
    assert "source        postgresql (stale: redis is unavailable; as of " in p.stdout
    assert "redis unavailable: could not connect to redis at 127.0.0.1:1" in p.stderr

    listed = one_json(ok(ctl("counters", "list", "--prefix", name, "--json", env=env)))
    assert listed["source"] == "postgres" and listed["stale"] is True
    assert listed["names_from"] == ["postgres"]
    assert [(c["name"], c["value"]) for c in listed["counters"]] == [(name, 8)]
    text = ok(ctl("counters", "list", "--prefix", name, env=env)).stdout
    assert text.splitlines()[-1].startswith("1 counter; values from postgresql (stale")

    # PostgreSQL down too: nothing can answer.
    env["COUNTER_POSTGRES_PORT"] = "1"
    for args in (["counters", "get", name], ["counters", "list"]):
        p = ctl(*args, env=env, timeout=60)
        assert p.returncode == 3, (p.returncode, p.stdout, p.stderr)
        assert p.stdout == "" and "neither redis nor postgresql" in p.stderr, p.stderr
        p = ctl(*args, "--json", env=env, timeout=60)
        assert p.returncode == 3
        doc = one_json(p)
        assert doc["ok"] is False and doc["error"]["code"] == "unreachable", doc


# ------------------------------------------------------------- set, reset ---


def events_of(kafka, since, name):
    return [m["event"] for m in kafka.messages(since, key=name)]


def test_set_a_gauge_through_the_api(api, redis, pg, kafka):
    name = counter_name("it_gauge_")
    since = kafka.end_offsets()

    # human mode, the api found from the configuration (COUNTER_SERVER_PORT)
    p = ok(ctl("counters", "set", name, 42, env={"COUNTER_API_URL": None}))
    assert p.stdout == f"{name} set to 42: now 42\n", p.stdout
    assert api.value(name) == 42 and redis.value(name) == 42

    # --json, the api from COUNTER_API_URL
    doc = one_json(ok(ctl("counters", "set", name, 7, "--json",
                          env={"COUNTER_API_URL": api.stack.api_url})))
    assert doc["ok"] is True and doc["status"] == 200 and doc["replayed"] is False, doc
    assert (doc["name"], doc["operation"], doc["value"]) == (name, "set", 7)
    assert KEY.match(doc["idempotency_key"]), doc
    assert doc["answer"]["current_value"] == 7 == api.value(name)
    assert doc["answer"]["event_id"] == doc["idempotency_key"]
    wait_pg_total(pg, name, 7)

    # A retry with the same key changes nothing and replays the answer.
    again = one_json(ok(ctl("counters", "set", name, 7, "--json", "--idempotency-key",
                            doc["idempotency_key"], "--api", api.stack.api_url)))
    assert again["replayed"] is True and again["answer"] == doc["answer"], again
    # The same key for another value is refused by the api.
    p = ctl("counters", "set", name, 8, "--idempotency-key", doc["idempotency_key"])
    assert p.returncode == 1 and "idempotency_key_reused" in p.stderr, p.stderr

    # Every set is an event in the log like any write: two events, the
    # second under the printed key, carrying the difference it applied.
    wait_persisted(pg, kafka)
    evs = events_of(kafka, since, name)
    assert [e["delta"] for e in evs] == [42, -35], evs
    assert evs[1]["id"] == doc["idempotency_key"]
    assert KEY.match(evs[0]["id"]), evs[0]
    assert pg.total(name) == 7 == redis.value(name)


def test_set_refused_by_the_api_exits_1_with_its_message(api, pg):
    name = unique_name("it.ctl-notgauge")
    assert api.incr(name, 3).status == 200
    p = ctl("counters", "set", name, 10)
    assert p.returncode == 1, (p.returncode, p.stdout, p.stderr)
    msg = f"set applies to gauges only; {name} is of kind counter"
    assert msg in p.stderr and "400 invalid_operation" in p.stderr, p.stderr
    assert p.stdout == ""

    p = ctl("counters", "set", name, 10, "--json")
    assert p.returncode == 1
    doc = one_json(p)
    assert doc["ok"] is False and doc["status"] == 400, doc
    assert doc["error"] == {"code": "invalid_operation", "message": msg}, doc
    assert api.value(name) == 3

    bounded = counter_name("it_gauge_")  # max 100
    p = ctl("counters", "set", bounded, 101)
    assert p.returncode == 1 and "409 out_of_bounds" in p.stderr, p.stderr
    assert api.get(bounded).json["last_updated"] is None


def test_reset_a_counter_is_a_logged_correction(api, redis, pg, kafka):
    name = unique_name("it.ctl-reset")
    since = kafka.end_offsets()
    assert api.incr(name, 5).status == 200
    assert api.incr(name, 7).status == 200

    p = ok(ctl("counters", "reset", name))
    assert p.stdout == f"{name} reset: was 12, now 0\n", p.stdout
    assert api.value(name) == 0 == redis.value(name)
    wait_pg_total(pg, name, 0)
    evs = events_of(kafka, since, name)
    assert [e["delta"] for e in evs] == [5, 7, -12], evs
    assert evs[-1]["metadata"] == {"counterctl": "reset", "previous_value": 12}
    assert KEY.match(evs[-1]["id"])

    # Nothing to correct: nothing is written.
    doc = one_json(ok(ctl("counters", "reset", name, "--json")))
    assert doc == {"name": name, "kind": "counter", "previous_value": 0, "ok": True,
                   "operation": "none", "delta": 0}, doc
    # A negative counter is brought up.
    assert api.decr(name, 4).status == 200
    doc = one_json(ok(ctl("counters", "reset", name, "--json")))
    assert (doc["operation"], doc["previous_value"], doc["delta"]) == ("increment", -4, 4), doc
    assert doc["answer"]["current_value"] == 0 == api.value(name)
    wait_pg_total(pg, name, 0)
    assert len(events_of(kafka, since, name)) == 5


def test_reset_a_daily_counter_corrects_todays_window(api, redis, pg, kafka):
    avoid_local_midnight(SHANGHAI)
    name = counter_name("it_day_sh_")
    now = datetime.datetime.now(SHANGHAI)
    today, yesterday = now.date().isoformat(), (now.date() - datetime.timedelta(days=1)).isoformat()
    assert api.incr(name, 3).status == 200
    assert api.incr(name, 2, timestamp=rfc3339(now - datetime.timedelta(days=1))).status == 200

    doc = one_json(ok(ctl("counters", "reset", name, "--json")))
    assert doc["ok"] is True and doc["status"] == 200, doc
    assert (doc["kind"], doc["operation"], doc["previous_value"], doc["delta"], doc["period"]) == (
        "counter", "decrement", 3, -3, today), doc
    assert doc["answer"]["current_value"] == 0 and doc["answer"]["period"] == today
    assert redis_window(redis, name, today) == 0
    assert redis_window(redis, name, yesterday) == 2  # closed days untouched
    wait_persisted(pg, kafka)
    assert pg_daily(pg, name) == {today: 0, yesterday: 2}
    assert pg.total(name) == 2


def test_reset_a_gauge_sets_it_to_0(api, pg, kafka):
    name = counter_name("it_free_")
    since = kafka.end_offsets()
    assert api_set(api, name, -30).status == 200
    doc = one_json(ok(ctl("counters", "reset", name, "--json")))
    assert (doc["operation"], doc["previous_value"], doc["delta"]) == ("set", -30, 30), doc
    assert api.value(name) == 0
    wait_pg_total(pg, name, 0)
    evs = events_of(kafka, since, name)
    assert [e["delta"] for e in evs] == [-30, 30]
    assert evs[-1]["metadata"] == {"counterctl": "reset", "previous_value": -30}


def test_reset_of_a_unique_counter_is_refused(api, kafka):
    name = counter_name("it_unique_")
    for u in ("u1", "u2"):
        assert api.incr(name, user_id=u).status == 200
    since = kafka.end_offsets()
    p = ctl("counters", "reset", name)
    assert p.returncode == 1, (p.returncode, p.stdout, p.stderr)
    assert "unique counter: it counts distinct users" in p.stderr and "refused" in p.stderr
    p = ctl("counters", "reset", name, "--json")
    assert p.returncode == 1
    assert one_json(p)["error"]["code"] == "unique_counter"
    assert api.value(name) == 2
    assert kafka.messages(since, key=name) == []


def test_set_and_reset_with_redis_down(api, pg, kafka, stackctl):
    """With Redis down the api reads from PostgreSQL: a reset, which needs
    the exact current value, is refused (3) and so is a set (the api's 503
    redis_unavailable); nothing reaches the log."""
    gauge = counter_name("it_free_")
    plain = unique_name("it.ctl-redisdown")
    assert api_set(api, gauge, 5).status == 200
    assert api.incr(plain, 5).status == 200
    wait_persisted(pg, kafka)
    since = kafka.end_offsets()
    stackctl.stop("redis")
    try:
        wait_until(lambda: api.healthz().json.get("redis") is False, 10, 0.1, "redis seen down")
        p = ctl("counters", "reset", plain)
        assert p.returncode == 3, (p.returncode, p.stdout, p.stderr)
        assert "redis is unavailable" in p.stderr and "not reset" in p.stderr, p.stderr
        p = ctl("counters", "set", gauge, 1, "--json")
        assert p.returncode == 3, (p.returncode, p.stdout, p.stderr)
        doc = one_json(p)
        assert doc["status"] == 503 and doc["error"]["code"] == "redis_unavailable", doc
        assert doc["attempts"] == 1
        # get still answers, from PostgreSQL
        got = one_json(ok(ctl("counters", "get", plain, "--json")))
        assert (got["value"], got["source"]) == (5, "postgres")
    finally:
        stackctl.start("redis")
    wait_until(lambda: api.get(plain).json.get("source") == "redis", 30, 0.2, "api back on redis")
    assert kafka.messages(since, key=plain) == [] and kafka.messages(since, key=gauge) == []
    assert api.value(plain) == 5 and api.value(gauge) == 5


# --------------------------------------------------------------- history ---


def test_history_through_the_api(api, pg, kafka):
    name = counter_name("it_hist_")  # Asia/Kolkata: half-hour offset
    now = datetime.datetime.now(UTC).replace(second=0, microsecond=0)
    for minutes_ago, v in ((125, 4), (65, 6), (64, 1), (5, 2)):
        r = api.incr(name, v, timestamp=rfc3339(now - datetime.timedelta(minutes=minutes_ago)))
        assert r.status == 200, r.json
    wait_persisted(pg, kafka)
    frm = rfc3339(now - datetime.timedelta(hours=4))
    to = rfc3339(now + datetime.timedelta(minutes=1))

    for interval in ("minute", "hour", "day"):
        expected = api_history(api, name, **{"from": frm, "to": to, "interval": interval})
        assert expected.status == 200, expected.json
        got = one_json(ok(ctl("history", name, "--from", frm, "--to", to, "--interval", interval,
                              "--json")))
        assert got == expected.json, (got, expected.json)
        assert sum(p["value"] for p in got["points"]) == 13

        lines = ok(ctl("history", name, "--from", frm, "--to", to, "--interval", interval,
                       "--api", api.stack.api_url)).stdout.splitlines()
        assert lines[0].split() == ["START", "VALUE"]
        table = [tuple(line.split()) for line in lines[1:-1]]
        assert table == [(p["start"], str(p["value"])) for p in got["points"]]
        assert lines[-1] == (f"{len(got['points'])} point{'s' if len(got['points']) != 1 else ''}"
                             f" by {interval} in {got['timezone']}; sum 13"), lines[-1]

    # The api's default interval (hour), and times relative to now; an
    # offset with '+' survives the query string.
    kolkata = datetime.datetime.now(ZoneInfo("Asia/Kolkata")) - datetime.timedelta(hours=4)
    got = one_json(ok(ctl("history", name, "--from", rfc3339(kolkata.replace(microsecond=0)),
                          "--to", "now", "--json")))
    assert got["interval"] == "hour" and got["timezone"] == "Asia/Kolkata"
    assert sum(p["value"] for p in got["points"]) == 13
    got = one_json(ok(ctl("history", name, "--from", "-30m", "--to", "now", "--interval",
                          "minute", "--json")))
    assert sum(p["value"] for p in got["points"]) == 2


def test_history_refused_by_the_api_exits_1(api):
    p = ctl("history", "it.x", "--from", "2020-01-01T00:00:00Z", "--to", "2026-01-01T00:00:00Z",
            "--interval", "minute")
    assert p.returncode == 1, (p.returncode, p.stdout, p.stderr)
    assert "more than 10000 minute points" in p.stderr and "400 invalid_query" in p.stderr
    p = ctl("history", "it.x", "--from", "now", "--to", "-1h", "--json")
    assert p.returncode == 1
    doc = one_json(p)
    assert doc["status"] == 400 and doc["error"]["code"] == "invalid_query", doc


# --------------------------------------------------- the api unreachable ---


@pytest.mark.parametrize(
    "args",
    [
        ["counters", "set", "g", "1"],
        ["counters", "reset", "g"],
        ["history", "g", "--from", "-1h", "--to", "now"],
    ],
    ids=["set", "reset", "history"],
)
@pytest.mark.parametrize("how", ["--api", "env"])
def test_api_unreachable_exits_3(args, how):
    env, extra = {}, []
    if how == "--api":
        extra = ["--api", "http://127.0.0.1:1"]
    else:
        env = {"COUNTER_API_URL": "http://127.0.0.1:1/"}
    p = ctl(*args, *extra, env=env, timeout=60)
    assert p.returncode == 3, (p.returncode, p.stdout, p.stderr)
    assert "could not connect to 127.0.0.1:1: Connection refused" in p.stderr, p.stderr
    assert p.stdout == ""
    p = ctl(*args, *extra, "--json", env=env, timeout=60)
    assert p.returncode == 3
    doc = one_json(p)
    assert doc["ok"] is False and doc["error"]["code"] == "api_unreachable", doc


def test_existing_commands_exit_3_when_a_store_is_unreachable():
    p = ctl("migrate", "status", env={"COUNTER_POSTGRES_PORT": "1"}, timeout=60)
    assert p.returncode == 3 and "could not connect to postgresql" in p.stderr, p.stderr
    p = ctl("rebuild-redis", env={"COUNTER_REDIS_ADDR": "127.0.0.1:1"}, timeout=60)
    assert p.returncode == 3 and "could not connect to redis" in p.stderr, p.stderr
    p = ctl("rebuild-postgres", env={"COUNTER_POSTGRES_PORT": "1"}, timeout=60)
    assert p.returncode == 3 and "could not connect to postgresql" in p.stderr, p.stderr
    ok(ctl("migrate", "status"))


def test_create_topic_takes_its_replication_from_the_config(stack):
    # more replicas than the stack's one broker: refused, naming both
    p = ctl("create-topic", env={"COUNTER_KAFKA_REPLICATION_FACTOR": "3",
                                 "COUNTER_KAFKA_MIN_INSYNC_REPLICAS": "2"})
    assert p.returncode == 1, (p.returncode, p.stdout, p.stderr)
    assert "kafka.replication_factor is 3 but the cluster at" in p.stderr, p.stderr
    assert "has 1 broker; refusing to create topics" in p.stderr, p.stderr
    # a min ISR no write could meet: a configuration error
    p = ctl("create-topic", env={"COUNTER_KAFKA_REPLICATION_FACTOR": "1",
                                 "COUNTER_KAFKA_MIN_INSYNC_REPLICAS": "2"})
    assert p.returncode == 2, (p.returncode, p.stdout, p.stderr)
    assert "kafka.min_insync_replicas (2) is above kafka.replication_factor (1)" in p.stderr
    # a new topic gets both, as a topic config for min.insync.replicas
    topic = unique_name("it.topic")
    p = ok(ctl("create-topic", env={"COUNTER_KAFKA_TOPIC": topic,
                                    "COUNTER_KAFKA_REPLICATION_FACTOR": "1",
                                    "COUNTER_KAFKA_MIN_INSYNC_REPLICAS": "1"}))
    assert (f"created topic {topic} with {stack.kafka_partitions} partitions, replication "
            "factor 1, min.insync.replicas 1") in p.stdout, p.stdout
    assert f"topic {topic}.dlq ready ({stack.kafka_partitions} partitions, 1 replicas)" in p.stdout
    out = run([STACK_SH, "kafka-tool", "topics", "--describe", "--topic", topic], env=stack.env)
    assert "min.insync.replicas=1" in out, out


# ------------------------------------------------------------- fake api ---


class FakeApi:
    """A socket that answers each connection with the next scripted answer
    (raw bytes, or None: read the request, then close without a word) and
    records every request it read."""

    def __init__(self, answers):
        self.answers = list(answers)
        self.requests = []
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _read_request(self, conn):
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return data
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        m = re.search(rb"(?im)^content-length:\s*(\d+)", head)
        want = int(m.group(1)) if m else 0
        while len(body) < want:
            chunk = conn.recv(65536)
            if not chunk:
                break
            body += chunk
        return head + b"\r\n\r\n" + body

    def _serve(self):
        for answer in self.answers:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                self.requests.append(self._read_request(conn))
                if answer is not None:
                    conn.sendall(answer)

    def close(self):
        self.sock.close()

    def header(self, i, name):
        m = re.search(rb"(?im)^" + name.encode() + rb":\s*(.*?)\r$", self.requests[i])
        return m.group(1).decode() if m else None

    def body(self, i):
        return self.requests[i].partition(b"\r\n\r\n")[2]


def answer(status, doc, headers=(), chunked=False):
    body = json.dumps(doc).encode()
    head = [f"HTTP/1.1 {status} X", "Content-Type: application/json", *headers]
    if chunked:
        head.append("Transfer-Encoding: chunked")
        pieces = [body[i:i + 7] for i in range(0, len(body), 7)]
        body = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
    else:
        head.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def test_unsure_write_is_sent_again_with_the_same_key():
    """No answer, then 503 indeterminate, then 409 request_in_progress,
    then 200: four requests, one key, one body; exit 0."""
    done = {"success": True, "current_value": 9, "event_id": "k"}
    fake = FakeApi([
        None,
        answer(503, {"success": False, "error": {"code": "indeterminate", "message": "m"}}),
        answer(409, {"success": False, "error": {"code": "request_in_progress", "message": "m"}},
               ["Retry-After: 1"]),
        answer(200, done, ["Idempotent-Replayed: true"]),
    ])
    try:
        p = ctl("counters", "set", "g", 9, "--api", fake.url + "/base/", "--json", timeout=60)
    finally:
        fake.close()
    assert p.returncode == 0, (p.returncode, p.stdout, p.stderr)
    doc = one_json(p)
    assert doc["attempts"] == 4 and doc["replayed"] is True and doc["answer"] == done, doc
    assert len(fake.requests) == 4
    keys = {fake.header(i, "Idempotency-Key") for i in range(4)}
    assert keys == {doc["idempotency_key"]}, keys
    assert {fake.body(i) for i in range(4)} == {b'{"value":9}'}
    assert all(r.startswith(b"POST /base/api/v1/counter/g/set HTTP/1.1\r\n") for r in fake.requests)


def test_write_that_stays_unsure_exits_3_and_prints_its_key():
    fake = FakeApi([None] * 4)
    try:
        p = ctl("counters", "set", "g", 1, "--api", fake.url, "--idempotency-key", "op-7",
                timeout=60)
    finally:
        fake.close()
    assert p.returncode == 3, (p.returncode, p.stdout, p.stderr)
    assert len(fake.requests) == 4
    assert {fake.header(i, "Idempotency-Key") for i in range(4)} == {"op-7"}
    assert "closed the connection without an answer" in p.stderr, p.stderr
    assert "--idempotency-key op-7" in p.stderr, p.stderr


def test_refusal_and_dependency_errors_are_not_retried():
    fake = FakeApi([
        answer(503, {"success": False, "error": {"code": "kafka_unavailable", "message": "down"}}),
        answer(422, {"success": False, "error": {"code": "too_late", "message": "old"}}),
    ])
    try:
        p1 = ctl("counters", "set", "g", 1, "--api", fake.url)
        p2 = ctl("counters", "set", "g", 1, "--api", fake.url)
    finally:
        fake.close()
    assert p1.returncode == 3 and "down (503 kafka_unavailable)" in p1.stderr, p1.stderr
    assert p2.returncode == 1 and "old (422 too_late)" in p2.stderr, p2.stderr
    assert len(fake.requests) == 2


def test_chunked_answer_and_bearer_token():
    doc = {"name": "g", "kind": "counter", "interval": "hour", "timezone": "UTC",
           "points": [{"start": "2026-11-26T00:00:00+00:00", "value": 5},
                      {"start": "2026-11-26T01:00:00+00:00", "value": 12345}]}
    fake = FakeApi([answer(200, doc, chunked=True)])
    try:
        p = ctl("history", "g", "--from", "2026-11-26T00:00:00+05:30", "--to",
                "2026-11-26T02:00:00Z", "--api", fake.url,
                env={"COUNTER_API_TOKEN": "tok_0123456789abcdef"})
    finally:
        fake.close()
    assert p.returncode == 0, (p.returncode, p.stdout, p.stderr)
    assert p.stdout.splitlines() == [
        "START                      VALUE",
        "2026-11-26T00:00:00+00:00      5",
        "2026-11-26T01:00:00+00:00  12345",
        "2 points by hour in UTC; sum 12350",
    ]
    assert fake.requests[0].startswith(
        b"GET /api/v1/counter/g/history?from=2026-11-26T00:00:00%2B05:30"
        b"&to=2026-11-26T02:00:00Z HTTP/1.1\r\n"), fake.requests[0]
    assert fake.header(0, "Authorization") == "Bearer tok_0123456789abcdef"


def test_an_answer_that_is_not_json_exits_3():
    fake = FakeApi([b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 5\r\n\r\noops!"])
    try:
        p = ctl("history", "g", "--from", "-1h", "--to", "now", "--api", fake.url)
    finally:
        fake.close()
    assert p.returncode == 3 and "answered 502 without JSON: oops!" in p.stderr, p.stderr


def test_a_damaged_redis_value_is_named_and_the_rest_still_read(api, redis):
    prefix = unique_name("it.ctl-damaged") + "."
    good, bad = prefix + "good", prefix + "bad"
    assert api.incr(good, 4).status == 200
    redis.cli("SET", redis.key(bad), "not-a-number")
    try:
        p = ok(ctl("counters", "list", "--prefix", prefix, "--json"))
        doc = one_json(p)
        assert doc["source"] == "redis"
        assert [(c["name"], c["value"]) for c in doc["counters"]] == [(bad, None), (good, 4)]
        assert f"holds no integer value for {bad}" in p.stderr, p.stderr
        p = ok(ctl("counters", "get", bad))
        assert "value         invalid" in p.stdout and "source        redis" in p.stdout
    finally:
        redis.cli("DEL", redis.key(bad))

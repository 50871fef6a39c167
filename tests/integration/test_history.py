"""History queries (issue 3): GET /api/v1/counter/{name}/history.

Points come from PostgreSQL's minute buckets: minutes in UTC, hours and
days in the counter's time zone (it_hist_* is Asia/Kolkata, +05:30, so
its hours start at :30 UTC and its days at 18:30 UTC). Every period from
`from` (truncated to the interval) up to `to` appears, empty ones as 0.
All writes here carry event times days in the past, so the buckets they
land in are known in advance; each test waits for the persister first.
"""

import datetime
import random
from zoneinfo import ZoneInfo

import pytest

from conftest import (
    api_history,
    counter_name,
    local_midnight,
    rfc3339,
    wait_pg_total,
)

UTC = datetime.timezone.utc
KOLKATA = ZoneInfo("Asia/Kolkata")
SHANGHAI = ZoneInfo("Asia/Shanghai")
NEW_YORK = ZoneInfo("America/New_York")
MIN = datetime.timedelta(minutes=1)
HOUR = datetime.timedelta(hours=1)
DAY = datetime.timedelta(days=1)


def _utc_hour(days_ago):
    now = datetime.datetime.now(UTC)
    return (now - days_ago * DAY).replace(minute=0, second=0, microsecond=0)


def _write_all(api, pg, name, events):
    """events: [(aware datetime, value)]; waits until PostgreSQL has them."""
    for when, value in events:
        r = api.incr(name, value, timestamp=rfc3339(when))
        assert r.status == 200, (when, r.json)
    wait_pg_total(pg, name, sum(v for _, v in events))


def _history(api, name, start, end, interval=None):
    r = api_history(api, name, interval=interval, **{"from": rfc3339(start), "to": rfc3339(end)})
    assert r.status == 200, r.json
    return r.json


def _points(h):
    return [(p["start"], p["value"]) for p in h["points"]]


def _expected(events, starts, tz):
    """[(start as RFC 3339 in tz, sum of the events in [start, next))] for
    consecutive UTC instants `starts` (the last one only closes the range)."""
    out = []
    for a, b in zip(starts, starts[1:]):
        out.append((rfc3339(a.astimezone(tz)), sum(v for t, v in events if a <= t < b)))
    return out


# ============================================================== minutes ===


def test_minute_points_are_utc_minutes_zero_filled(api, pg):
    name = counter_name("it_hist_")
    b = _utc_hour(3)
    events = [
        (b + 10 * MIN, 1),
        (b + 10 * MIN + datetime.timedelta(seconds=30), 2),
        (b + 11 * MIN - datetime.timedelta(milliseconds=1), 4),
        (b + 12 * MIN, 8),
        (b + 15 * MIN - datetime.timedelta(seconds=1), 16),
        (b + 20 * MIN, 32),  # outside every range asked below
    ]
    _write_all(api, pg, name, events)

    # `from` in the middle of a minute: the first point is that minute
    h = _history(api, name, b + 9 * MIN + datetime.timedelta(seconds=30), b + 15 * MIN, "minute")
    assert h["name"] == name and h["interval"] == "minute" and h["kind"] == "counter", h
    assert "approximate" not in h, h
    want = [(rfc3339(b + k * MIN), v) for k, v in zip(range(9, 15), [0, 7, 0, 8, 0, 16])]
    assert _points(h) == want

    # `to` is exclusive; a `to` inside a minute includes that minute
    assert _points(_history(api, name, b + 9 * MIN, b + 14 * MIN, "minute")) == want[:-1]
    h = _history(api, name, b + 9 * MIN, b + 14 * MIN + datetime.timedelta(seconds=1), "minute")
    assert _points(h) == want

    # the same range given in another offset is the same minutes
    r = api_history(api, name, interval="minute", **{
        "from": rfc3339((b + 9 * MIN).astimezone(NEW_YORK)),
        "to": rfc3339((b + 15 * MIN).astimezone(KOLKATA)),
    })
    assert r.status == 200 and [p["value"] for p in r.json["points"]] == [0, 7, 0, 8, 0, 16], r.json


# ================================================================ hours ===


def test_hour_points_follow_a_half_hour_offset(api, pg):
    """Asia/Kolkata hours start at :30 UTC."""
    name = counter_name("it_hist_")
    b = _utc_hour(3)  # hh:00 UTC = hh+5:30 IST, in the middle of an IST hour
    events = [
        (b + 15 * MIN, 1),  # IST xx:45
        (b + 30 * MIN - datetime.timedelta(seconds=1), 2),  # IST xx:59:59
        (b + 30 * MIN, 4),  # IST (xx+1):00:00
        (b + 160 * MIN, 8),
    ]
    _write_all(api, pg, name, events)

    h = _history(api, name, b - HOUR, b + 4 * HOUR, "hour")
    assert h["interval"] == "hour" and h["timezone"] == "Asia/Kolkata", h
    starts = [b - 90 * MIN + k * HOUR for k in range(7)]  # last one closes
    assert _points(h) == _expected(events, starts, KOLKATA)
    assert [v for _, v in _points(h)] == [0, 3, 4, 0, 8, 0]
    assert all(s.endswith(":00:00+05:30") for s, _ in _points(h)), _points(h)

    # no interval: hours
    r = api_history(api, name, **{"from": rfc3339(b - HOUR), "to": rfc3339(b + 4 * HOUR)})
    assert r.status == 200 and r.json["interval"] == "hour" and r.json["points"] == h["points"], r.json


# ================================================================= days ===


def test_day_points_start_at_local_midnight(api, pg):
    name = counter_name("it_hist_")
    d = (datetime.datetime.now(UTC) - 6 * DAY).astimezone(KOLKATA).date()
    m = local_midnight(d + DAY, KOLKATA)  # 18:30 UTC of day d
    events = [
        (m - datetime.timedelta(seconds=1), 1),  # day d
        (m, 2),  # day d+1
        (m + DAY - datetime.timedelta(seconds=1), 4),  # day d+1
        (m + DAY, 8),  # day d+2
    ]
    _write_all(api, pg, name, events)

    start = local_midnight(d - DAY, KOLKATA) + 5 * HOUR  # truncated to that day
    h = _history(api, name, start.astimezone(UTC), local_midnight(d + 3 * DAY, KOLKATA), "day")
    assert h["interval"] == "day" and h["timezone"] == "Asia/Kolkata", h
    want = [(rfc3339(local_midnight(d + k * DAY, KOLKATA)), v) for k, v in zip(range(-1, 3), [0, 1, 6, 8])]
    assert _points(h) == want
    assert want[0][0].endswith("T00:00:00+05:30")


def test_history_sums_equal_what_was_written(api, pg):
    """Random writes over ~2.5 days: every interval's points are the sums
    of the events in them, and together they add up to the total."""
    name = counter_name("it_hist_")
    rnd = random.Random(20261126)
    b = _utc_hour(5)
    events = [(b + datetime.timedelta(seconds=rnd.randrange(60 * 3600)), rnd.randrange(1, 10)) for _ in range(60)]
    # a burst in one minute, to check minute sums
    events += [(b + 125 * MIN + datetime.timedelta(seconds=s), 1) for s in range(0, 60, 7)]
    _write_all(api, pg, name, events)
    total = sum(v for _, v in events)

    days = [local_midnight(b.astimezone(KOLKATA).date() + k * DAY, KOLKATA) for k in range(5)]
    h = _history(api, name, days[0], days[-1], "day")
    assert _points(h) == _expected(events, [x.astimezone(UTC) for x in days], KOLKATA)
    assert sum(v for _, v in _points(h)) == total

    first_hour = b - 30 * MIN  # the IST hour holding b
    hours = [first_hour + k * HOUR for k in range(63)]
    h = _history(api, name, b, hours[-1], "hour")
    assert _points(h) == _expected(events, hours, KOLKATA)
    assert sum(v for _, v in _points(h)) == total

    minutes = [b + k * MIN for k in range(0, 181)]
    h = _history(api, name, b, minutes[-1], "minute")
    assert _points(h) == _expected(events, minutes, UTC)
    assert sum(v for _, v in _points(h)) == sum(v for t, v in events if t < minutes[-1])


def test_history_of_a_counter_without_events_is_all_zeros(api):
    name = counter_name("it_hist_")
    b = _utc_hour(2)
    h = _history(api, name, b, b + 5 * MIN, "minute")
    assert _points(h) == [(rfc3339(b + k * MIN), 0) for k in range(5)]
    h = _history(api, name, b, b + 2 * DAY, "day")
    assert len(h["points"]) in (2, 3) and all(p["value"] == 0 for p in h["points"]), h


# ======================================================= default ranges ===


def _parse(ts):
    return datetime.datetime.fromisoformat(ts.replace("Z", "+00:00"))


# interval -> (points, the zone's period start of an aware datetime)
DEFAULTS = {
    "minute": (60, lambda t: t.astimezone(UTC).replace(second=0, microsecond=0)),
    "hour": (24, lambda t: t.astimezone(KOLKATA).replace(minute=0, second=0, microsecond=0)),
    "day": (30, lambda t: t.astimezone(KOLKATA).replace(hour=0, minute=0, second=0, microsecond=0)),
}


@pytest.mark.parametrize("interval", [None, "minute", "hour", "day"])
def test_history_without_a_range_reads_the_last_periods(api, pg, interval):
    """No from, no to: the last hour of minutes, day of hours (the default
    interval) or 30 days of days, ending with the period that holds now,
    and the answer says which range it read."""
    name = counter_name("it_hist_")
    assert api.incr(name, 7).status == 200
    wait_pg_total(pg, name, 7)
    before = datetime.datetime.now(UTC)
    r = api_history(api, name, interval=interval)
    after = datetime.datetime.now(UTC)
    assert r.status == 200, r.json
    h = r.json
    n, start_of = DEFAULTS[interval or "hour"]
    assert h["interval"] == (interval or "hour")
    assert len(h["points"]) == n, h
    frm, to = _parse(h["from"]), _parse(h["to"])
    assert h["points"][0]["start"] == h["from"]
    # the last point is the period that holds now (unless one just began)
    assert _parse(h["points"][-1]["start"]) in (start_of(before), start_of(after)), h
    assert to > after - datetime.timedelta(seconds=1) and frm < before
    # the write just made is in it, in the last point
    assert sum(p["value"] for p in h["points"]) == 7, h
    assert h["points"][-1]["value"] == 7 or start_of(before) != start_of(after), h
    # and asking for that range explicitly gives the same answer
    again = _history(api, name, frm, to, interval)
    assert again == h


def test_history_with_one_end_fills_in_the_other(api):
    name = counter_name("it_hist_")
    to = _utc_hour(3)
    h = api_history(api, name, interval="minute", to=rfc3339(to)).json
    assert (_parse(h["from"]), _parse(h["to"])) == (to - 60 * MIN, to), h
    assert len(h["points"]) == 60
    frm = _utc_hour(0) - 2 * HOUR
    r = api_history(api, name, interval="hour", **{"from": rfc3339(frm)})
    assert r.status == 200, r.json
    assert _parse(r.json["from"]) == frm
    assert _parse(r.json["to"]) > datetime.datetime.now(UTC) - datetime.timedelta(seconds=1)
    assert len(r.json["points"]) in (3, 4), r.json


def test_unique_day_points_are_distinct_users_per_day(api, pg):
    """it_dau_*: unique, daily, Asia/Shanghai."""
    name = counter_name("it_dau_")
    d = (datetime.datetime.now(UTC) - 4 * DAY).astimezone(SHANGHAI).date()
    m0, m1, m2 = (local_midnight(d + k * DAY, SHANGHAI) for k in range(3))
    writes = [
        ("a", m0), ("b", m0 + HOUR), ("a", m0 + 2 * HOUR), ("c", m1 - datetime.timedelta(seconds=1)),
        ("b", m0 + 20 * HOUR), ("a", m1 - MIN),
        # the next day: a again, and d
        ("a", m1), ("d", m1 + 5 * HOUR), ("d", m1 + 6 * HOUR), ("a", m2 - datetime.timedelta(seconds=1)),
    ]
    for user, when in writes:
        r = api.incr(name, user_id=user, timestamp=rfc3339(when))
        assert r.status == 200, r.json
    wait_pg_total(pg, name, 5)

    h = _history(api, name, m0 - DAY, m2 + DAY, "day")
    assert h["kind"] == "unique" and h["timezone"] == "Asia/Shanghai", h
    assert "approximate" not in h, h
    assert _points(h) == [
        (rfc3339(m0 - DAY), 0),
        (rfc3339(m0), 3),
        (rfc3339(m1), 2),
        (rfc3339(m2), 0),
    ]
    # hours count the users first seen in them
    h = _history(api, name, m0, m0 + 3 * HOUR, "hour")
    assert [p["value"] for p in h["points"]] == [1, 1, 0], h


def _dst_changes(tz, count):
    """The local days of tz's last `count` DST changes (most recent first)
    whose next day is wholly past: (day, start, end) in UTC."""
    found = []
    today = datetime.datetime.now(UTC).astimezone(tz).date()
    for back in range(2, 370):
        day = today - back * DAY
        start = local_midnight(day, tz).astimezone(UTC)
        end = local_midnight(day + DAY, tz).astimezone(UTC)
        if end - start != 24 * HOUR:
            found.append((day, start, end))
            if len(found) == count:
                return found
    pytest.fail(f"fewer than {count} DST changes of {tz} in the past year")


@pytest.mark.parametrize("which", [0, 1], ids=["last_change", "change_before"])
def test_hour_points_across_a_dst_change(api, pg, which):
    """The last two DST-change days of America/New_York (one of 23 hours,
    one of 25): by hour, every real hour is a point of its own, with the
    offset it has, and holds the events of that hour."""
    name = counter_name("it_day_ny_")
    day, start, end = _dst_changes(NEW_YORK, 2)[which]
    n = int((end - start) / HOUR)
    events = [(start + k * HOUR + 10 * MIN, k + 1) for k in range(n)]
    _write_all(api, pg, name, events)

    h = _history(api, name, start, end, "hour")
    starts = [start + k * HOUR for k in range(n + 1)]
    want = _expected(events, starts, NEW_YORK)
    assert _points(h) == want, (
        f"{day} has {n} hours; got {len(h['points'])} points:\n"
        + "\n".join(f"  {p['start']} {p['value']}" for p in h["points"])
    )


# ================================================================= 400s ===


BAD_QUERIES = [
    ("from after the default to", {"from": "2100-01-01T00:00:00Z"}, "from"),
    ("from a date only", {"from": "2026-01-01", "to": "2026-01-02T00:00:00Z"}, "from"),
    ("from without offset", {"from": "2026-01-01T00:00:00", "to": "2026-01-02T00:00:00Z"}, "from"),
    ("from not a time", {"from": "yesterday", "to": "2026-01-02T00:00:00Z"}, "from"),
    ("to not a time", {"from": "2026-01-01T00:00:00Z", "to": "2026-13-02T00:00:00Z"}, "to"),
    ("interval week", {"from": "2026-01-01T00:00:00Z", "to": "2026-01-02T00:00:00Z", "interval": "week"}, "interval"),
    ("interval empty", {"from": "2026-01-01T00:00:00Z", "to": "2026-01-02T00:00:00Z", "interval": ""}, "interval"),
    ("to == from", {"from": "2026-01-01T00:00:00Z", "to": "2026-01-01T05:30:00+05:30"}, "to"),
    ("to < from", {"from": "2026-01-02T00:00:00Z", "to": "2026-01-01T00:00:00Z"}, "to"),
    ("minutes over 8 days", {"from": "2026-01-01T00:00:00Z", "to": "2026-01-09T00:00:00Z", "interval": "minute"}, None),
    ("hours over 2 years", {"from": "2024-01-01T00:00:00Z", "to": "2026-01-01T00:00:00Z", "interval": "hour"}, None),
    ("days over 30 years", {"from": "1990-01-01T00:00:00Z", "to": "2026-01-01T00:00:00Z", "interval": "day"}, None),
]


@pytest.mark.parametrize("query,field", [q[1:] for q in BAD_QUERIES], ids=[q[0] for q in BAD_QUERIES])
def test_bad_history_queries_are_400(api, query, field):
    name = counter_name("it_hist_")
    r = api_history(api, name, **query)
    assert r.status == 400, r.json
    err = r.json["error"]
    assert r.json["success"] is False and err["code"] == "invalid_query", r.json
    if field is None:  # too many points: any of the range's fields
        assert err.get("field") in ("from", "to", "interval"), r.json
    else:
        assert err.get("field") == field, r.json


def test_repeated_history_parameters_are_400(api):
    name = counter_name("it_hist_")
    q = "from=2026-01-01T00:00:00Z&from=2026-01-01T01:00:00Z&to=2026-01-02T00:00:00Z"
    r = api.request("GET", f"/api/v1/counter/{name}/history?{q}")
    assert r.status == 400 and r.json["error"]["field"] == "from", r.json


def test_point_limit_is_ten_thousand(api):
    """10000 points are served; 10001 are refused."""
    name = counter_name("it_hist_")
    b = _utc_hour(20)
    r = api_history(api, name, interval="minute", **{"from": rfc3339(b), "to": rfc3339(b + 10001 * MIN)})
    assert r.status == 400 and r.json["error"]["code"] == "invalid_query", r.json
    r = api_history(api, name, interval="minute", **{"from": rfc3339(b), "to": rfc3339(b + 10000 * MIN)})
    assert r.status == 200, f"a range of exactly 10000 minute points: {r.json}"
    assert len(r.json["points"]) == 10000

"""counterctl verify (issue 4): compares Redis with PostgreSQL for every
counter, prints one line per difference, "counter NAME[ day DATE]:
redis=X postgres=Y", then "verify: N counters checked, M differ", and
exits 0 (none), 1 (some), 2 (could not check) or 3 (a store or Kafka
unreachable, or the persister not caught up: counterctl's exit codes).

verify waits for the persister itself, so the tests do not. Other tests
may write to the same stack meanwhile: the assertions are about the lines
that name this test's counters, and about the exit status agreeing with
the lines printed.
"""

import datetime
import os
import re
import subprocess
from zoneinfo import ZoneInfo

import pytest

from conftest import avoid_local_midnight, counter_name, rfc3339, unique_name

SHANGHAI = ZoneInfo("Asia/Shanghai")
LINE = re.compile(r"^counter (\S+?)(?: day (\d{4}-\d\d-\d\d))?: redis=(\S+) postgres=(-?\d+)$")
SUMMARY = re.compile(r"^verify: (\d+) counters checked, (\d+) differ$")


class Verify:
    """One run of counterctl verify: exit status, differences, summary."""

    def __init__(self, proc):
        self.rc = proc.returncode
        self.stdout, self.stderr = proc.stdout, proc.stderr
        self.diffs = {}  # (name, day or None) -> (redis, postgres) as strings
        self.summary = None
        for line in proc.stdout.splitlines():
            m = LINE.match(line)
            if m:
                self.diffs[(m[1], m[2])] = (m[3], m[4])
                continue
            m = SUMMARY.match(line)
            assert m and self.summary is None, f"unexpected line {line!r}\n{self}"
            self.summary = (int(m[1]), int(m[2]))

    def __str__(self):
        return f"exit {self.rc}\nstdout:\n{self.stdout}\nstderr:\n{self.stderr}"

    def about(self, names):
        return {k: v for k, v in self.diffs.items() if k[0] in names}

    def check_contract(self):
        """Exit status, lines and summary agree with each other."""
        assert self.summary is not None, f"no summary line\n{self}"
        differ = len({name for name, _ in self.diffs})
        assert self.summary[1] == differ, str(self)
        assert self.rc == (1 if self.diffs else 0), str(self)


def counterctl(*args, env=None, timeout=120):
    binary = os.path.join(os.environ["BIN_DIR"], "counterctl")
    return subprocess.run(
        [binary, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def verify(**kw):
    v = Verify(counterctl("verify", "--wait-s", "60", **kw))
    v.check_contract()
    return v


def assert_clean(v, names):
    mine = v.about(names)
    assert not mine, f"differences in this test's counters: {mine}\n{v}"
    assert v.summary[0] >= len(names), str(v)


def test_verify_finds_corrupted_values_and_windows(api, redis):
    avoid_local_midnight(SHANGHAI)
    total = unique_name("it.verify")  # default definition: a plain counter
    gauge = counter_name("it_free_")
    daily = counter_name("it_day_sh_")
    dau = counter_name("it_dau_")  # leaves :u: dedup sets beside its windows
    names = {total, gauge, daily, dau}

    now = datetime.datetime.now(SHANGHAI)
    today = now.date().isoformat()
    yesterday = (now.date() - datetime.timedelta(days=1)).isoformat()
    writes = [
        api.incr(total, 5),
        api.incr(total, 7),
        api.incr(gauge, 10),
        api.decr(gauge, 4),
        api.incr(daily, 3),
        api.incr(daily, 4),
        api.incr(daily, 2, timestamp=rfc3339(now - datetime.timedelta(days=1))),
        api.incr(dau, user_id="u1"),
        api.incr(dau, user_id="u2"),
        api.incr(dau, user_id="u1"),
    ]
    assert all(r.status == 200 for r in writes), [(r.status, r.json) for r in writes]
    assert redis.value(total) == 12
    window = redis.key(daily) + f":d:{today}"
    old_window = redis.key(daily) + f":d:{yesterday}"
    assert redis.cli("GET", window) == "7"
    assert redis.cli("GET", old_window) == "2"
    # A key under the hash tag that is no value must be ignored.
    redis.cli("SET", redis.key(total) + ":x:junk", "12345")

    # Right after the writes: verify waits for the persister, then agrees.
    assert_clean(verify(), names)

    # A corrupted total is named with both values.
    redis.cli("SET", redis.key(total), 999)
    v = verify()
    assert v.rc == 1, str(v)
    assert v.about(names) == {(total, None): ("999", "12")}, str(v)

    # So is a corrupted daily window, with its day, and a live window that
    # Redis lost (moved aside under a name verify ignores, keeping its TTL).
    redis.cli("SET", window, 999)
    redis.cli("RENAME", old_window, old_window + ":moved")
    v = verify()
    assert v.rc == 1, str(v)
    assert v.about(names) == {
        (total, None): ("999", "12"),
        (daily, today): ("999", "7"),
        (daily, yesterday): ("0", "2"),
    }, str(v)

    # Restored: no differences again.
    redis.cli("SET", redis.key(total), 12)
    redis.cli("SET", window, 7)
    redis.cli("RENAME", old_window + ":moved", old_window)
    redis.cli("DEL", redis.key(total) + ":x:junk")
    assert_clean(verify(), names)


def test_verify_persister_behind_exits_3():
    # A group with no stored offsets has not caught up with a topic that
    # holds messages (the previous test wrote some).
    p = counterctl(
        "verify",
        "--wait-s",
        "1",
        env={"COUNTER_PERSISTER_GROUP_ID": unique_name("it.nogroup")},
    )
    assert p.returncode == 3, (p.returncode, p.stdout, p.stderr)
    assert "has not caught up" in p.stderr, p.stderr
    assert len(p.stderr.strip().splitlines()) == 1, p.stderr


@pytest.mark.parametrize(
    "env, expect",
    [
        ({"COUNTER_REDIS_ADDR": "127.0.0.1:1"}, "could not connect to redis"),
        ({"COUNTER_POSTGRES_PORT": "1"}, "could not connect to postgresql"),
    ],
)
def test_verify_store_unreachable_exits_3(env, expect):
    p = counterctl("verify", env=env, timeout=60)
    assert p.returncode == 3, (p.returncode, p.stdout, p.stderr)
    assert expect in p.stderr, p.stderr
    assert len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert p.stdout == "", p.stdout

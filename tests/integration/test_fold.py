"""redis/fold.lua, the applier's batch of one counter's events, called
directly on the stack's Redis: it decides every event as redis/write.lua
decides a confirmed write (issue 20: the same int64 arithmetic, escrow and
epoch check), remembers event ids in a bounded window, and says after a
crash what an event already applied led to.

The main case is differential: two counters get the same random history of
api writes (pending, undone, finished: escrow states) and external events;
one applies the events one by one through write.lua as the applier did
before batches, the other in runs through fold.lua. Their values, stamps,
worst cases, dedup sets and pending hashes must be equal after every run,
and every event's outcome the same.

Every counter is new (uuid), so the stack's own data is untouched."""

import random
import time
import uuid

import pytest

import scripts

MAX = 9223372036854775807
MIN = -9223372036854775808
APPLIED, DUP, BOUND, FENCE, DUP_ID, KEY_SEEN, NO_EPOCH, RANGE = range(8)
DAY = "2026-12-07"


r, sha = scripts.fixtures(("write", "undo", "finish", "fold"))


MADE = []


@pytest.fixture(autouse=True)
def forget_counters(r):
    """Each test's keys go afterwards (no pending entry left for the
    resolver to settle and count)."""
    yield
    while MADE:
        name = MADE.pop()
        keys = r.call("KEYS", "{c:%s}*" % name)  # test-sized key space
        if keys:
            r.call("DEL", *keys)


class Counter:
    """One counter's keys, with the api's writes and both ways of applying
    external events."""

    def __init__(self, r, sha, kind):
        self.r, self.sha, self.kind = r, sha, kind
        self.name = f"it_fold_{uuid.uuid4().hex[:12]}"
        MADE.append(self.name)
        self.key = "{c:%s}" % self.name
        self.dkey = self.key + ":u:" + DAY if kind["dedup"] else self.key + ":none"
        self.marker = scripts.epoch_marker(scripts.key_slot(self.key))

    def bounds(self):
        k = self.kind
        return (k.get("min", ""), k.get("max", ""), k.get("bound", "reject"))

    def api_write(self, arg, pend, user="", made=None):
        """The api's write, pending until finished or undone."""
        k = self.key
        mn, mx, bound = self.bounds()
        keys = [k, k + ":t", k + ":p", self.dkey, k + ":o:0", k + ":id:" + pend,
                self.marker, k + ":lo", k + ":hi"]
        argv = ["add", str(arg), "1000", self.kind["dedup"], user, mn, mx, bound,
                "0", "0", "", "0", "", pend, f"{made}|0", ""]
        return self.r.call("EVALSHA", self.sha["write"], 9, *keys, *argv)

    def undo(self, pend):
        k = self.key
        return self.r.call("EVALSHA", self.sha["undo"], 6, k, k + ":t", k + ":p",
                           k + ":id:" + pend, k + ":lo", k + ":hi", pend, "")

    def finish(self, pend):
        k = self.key
        return self.r.call("EVALSHA", self.sha["finish"], 5, k, k + ":p", k + ":lo",
                           k + ":hi", k + ":id:" + pend, pend, "")

    def one(self, off, ev):
        """An external event through write.lua, as the applier did before
        batches: fence, guard, confirmed."""
        k = self.key
        mn, mx, bound = self.bounds()
        keys = [k, k + ":t", k + ":p", self.dkey, k + ":o:0", k + ":id:" + ev["id"],
                self.marker, k + ":lo", k + ":hi"]
        argv = ["add", str(ev["delta"]), str(ev["ts"]), self.kind["dedup"],
                ev.get("user", ""), mn, mx, bound, "0", "0", str(off), "600", "", "",
                "", ""]
        return self.r.call("EVALSHA", self.sha["write"], 9, *keys, *argv)

    def fold(self, events, now_s=None, committed="", window=600):
        """External events [(offset, event)] through fold.lua in one call."""
        k = self.key
        mn, mx, bound = self.bounds()
        keys = [k, k + ":t", k + ":p", self.dkey, k + ":i:0", self.marker,
                k + ":lo", k + ":hi", k + ":i:0:x", k + ":w", k + ":id:"]
        argv = [self.kind["dedup"], mn, mx, bound, "0", "0",
                str(now_s if now_s is not None else int(time.time())), str(window),
                str(committed), "3600", str(len(events))]
        for off, ev in events:
            argv += [str(off), ev["id"], str(fingerprint(ev["id"])), str(ev["delta"]),
                     str(ev["ts"]), ev.get("user", "")]
        return self.r.call("EVALSHA", self.sha["fold"], 11, *keys, *argv)

    def state(self):
        """What a reader, a bound or an undo depends on, with the name
        taken out."""
        k = self.key
        g = lambda s: self.r.call("GET", k + s)  # noqa: E731
        pend = self.r.call("HGETALL", k + ":p") or []
        pend = sorted(str(x).replace(self.name, "N") for x in pend)
        members = sorted(self.r.call("SMEMBERS", self.dkey) or []) if self.kind["dedup"] else []
        return {"value": g(""), "stamp": g(":t"), "lo": g(":lo"), "hi": g(":hi"),
                "pending": pend, "users": members}


def fingerprint(event_id):
    """applier/fold.c's: MurmurHash64A of the id's bytes, seed 0, >> 1."""
    m, rr, mask = 0xc6a4a7935bd1e995, 47, (1 << 64) - 1
    data = event_id.encode()
    h = (len(data) * m) & mask
    n8 = len(data) // 8 * 8
    for i in range(0, n8, 8):
        k = int.from_bytes(data[i:i + 8], "little")
        k = (k * m) & mask
        k ^= k >> rr
        k = (k * m) & mask
        h ^= k
        h = (h * m) & mask
    rest = data[n8:]
    if rest:
        h ^= int.from_bytes(rest, "little")
        h = (h * m) & mask
    h ^= h >> rr
    h = (h * m) & mask
    h ^= h >> rr
    return h >> 1


def expected_code(reply, unique):
    """write.lua's reply for a confirmed event as fold.lua's code."""
    outcome = reply[0]
    if outcome == APPLIED:
        return "a1" if unique else "a" + str(int(reply[1]) - int(reply[2]))
    return {DUP: "u", BOUND: "r", RANGE: "o"}[outcome]


KINDS = {
    "plain": {"dedup": ""},
    "gauge": {"dedup": "", "min": "0", "max": "100"},
    "clamp": {"dedup": "", "min": "-50", "max": "50", "bound": "clamp"},
    "edge": {"dedup": "", "min": str(MIN + 10), "max": str(MAX - 10)},
    "unique": {"dedup": "exact"},
}


def delta(rng, kind):
    if kind == "edge":
        return rng.choice([1, -1, 7, -7, MAX, MIN, MAX // 2, MIN // 2, 3 * 10**15])
    if kind == "plain":
        return rng.choice([1, 2, -1, 5, -3, MAX // 3, MIN // 3, 10**16])
    return rng.choice([1, 3, -2, 10, -10, 40, -40])


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_fold_decides_every_event_as_write_lua(r, sha, kind):
    rng = random.Random(f"fold-{kind}")
    old, new = Counter(r, sha, KINDS[kind]), Counter(r, sha, KINDS[kind])
    unique = kind == "unique"
    users = [f"u{i}" for i in range(12)]
    pending = []
    off = 0
    for step in range(60):
        # api writes, the same on both, left pending, undone or finished
        for _ in range(rng.randint(0, 3)):
            pend = f"p{step}-{uuid.uuid4().hex[:6]}"
            d, u = (1, rng.choice(users)) if unique else (delta(rng, kind), "")
            # made now: the stack's resolver takes only entries minutes old
            made = int(time.time() * 1000)
            a, b = old.api_write(d, pend, u, made), new.api_write(d, pend, u, made)
            assert a[0] == b[0], (a, b)
            if a[0] in (APPLIED, DUP):
                pending.append(pend)
        while pending and rng.random() < 0.4:
            pend = pending.pop(rng.randrange(len(pending)))
            if rng.random() < 0.5:
                assert old.undo(pend) == new.undo(pend)
            else:
                assert old.finish(pend) == new.finish(pend)
        # a run of external events
        run = []
        for _ in range(rng.randint(1, 12)):
            off += rng.randint(1, 3)
            ev = {"id": f"e-{uuid.uuid4().hex}", "ts": 1000 + off,
                  "delta": 1 if unique else delta(rng, kind)}
            if unique:
                ev["user"] = rng.choice(users)
            run.append((off, ev))
        want = [expected_code(old.one(o, ev), unique) for o, ev in run]
        got = new.fold(run)
        assert got[0] == "ok" and got[1:] == want, (step, got, want)
        assert old.state() == new.state(), step


def now_slice():
    """The start of the current slice of a 600 s window."""
    return int(time.time()) // 600 * 600


def test_a_duplicate_id_inside_the_window_counts_once(r, sha):
    c = Counter(r, sha, KINDS["plain"])
    ev = {"id": "dup-" + uuid.uuid4().hex, "ts": 5, "delta": 4}
    t = now_slice()
    assert c.fold([(1, ev), (2, ev)], now_s=t) == ["ok", "a4", "d"]
    # in the next slice: the one before is looked at too
    assert c.fold([(3, ev)], now_s=t + 600) == ["ok", "d"]
    assert r.call("GET", c.key) == "4"


def test_a_duplicate_after_the_window_counts_again(r, sha):
    """Documented (docs/events.md): an id is remembered one to two windows;
    past that a re-sent event is a new one."""
    c = Counter(r, sha, KINDS["plain"])
    ev = {"id": "late-" + uuid.uuid4().hex, "ts": 5, "delta": 4}
    t = now_slice()
    assert c.fold([(1, ev)], now_s=t) == ["ok", "a4"]
    assert c.fold([(2, ev)], now_s=t + 1200) == ["ok", "a4"]
    assert r.call("GET", c.key) == "8"


def test_offsets_seen_again_say_what_they_led_to(r, sha):
    """After a crash the same offsets come again: the fence refuses them and
    the outcome log says what to publish; entries go once the committed
    offset passed them."""
    c = Counter(r, sha, KINDS["gauge"])
    e = [{"id": f"x{i}-{uuid.uuid4().hex}", "ts": 5, "delta": d}
         for i, d in enumerate([60, 60, -5, 10])]
    first = c.fold([(10, e[0]), (11, e[1]), (12, e[0]), (13, e[2]), (14, e[3])],
                   now_s=now_slice())
    assert first == ["ok", "a60", "r", "d", "a-5", "a10"]
    again = c.fold([(10, e[0]), (11, e[1]), (12, e[0]), (13, e[2]), (14, e[3])],
                   now_s=now_slice())
    assert again == ["ok", "A", "Ar", "Ad", "A", "A"]
    # committed past 12: the refusal and the duplicate are forgotten
    assert r.call("LLEN", c.key + ":i:0:x") == 1
    fresh = {"id": "y-" + uuid.uuid4().hex, "ts": 5, "delta": 1}
    assert c.fold([(15, fresh)], now_s=now_slice(), committed=16) == ["ok", "a1"]
    assert r.call("EXISTS", c.key + ":i:0:x") == 0


def test_the_window_is_compact_and_goes_with_time(r, sha):
    """5,000 ids of one counter: each found again, kept in intsets of
    about 8 bytes an id, and every window key expires two slices on."""
    c = Counter(r, sha, KINDS["plain"])
    ids = [{"id": f"w-{i}-{uuid.uuid4().hex}", "ts": 5, "delta": 1} for i in range(5000)]
    off = 0
    for i in range(0, len(ids), 250):
        got = c.fold([(off + j, ev) for j, ev in enumerate(ids[i:i + 250])], now_s=now_slice())
        off += 250
        assert got[1:] == ["a1"] * 250
    got = c.fold([(off + j, ev) for j, ev in enumerate(ids[:250])], now_s=now_slice())
    assert got[1:] == ["d"] * 250
    keys = r.call("KEYS", c.key + ":w:*")
    buckets = [k for k in keys if k.count(":") == 4]
    assert len(buckets) >= 16
    total = 0
    for k in buckets:
        assert r.call("OBJECT", "ENCODING", k) == "intset", k
        total += r.call("MEMORY", "USAGE", k)
        assert 0 < r.call("TTL", k) <= 2 * 600 + 60, k
    assert total / 5000 <= 16, total / 5000


def test_no_event_lands_without_an_epoch(r, sha):
    c = Counter(r, sha, KINDS["plain"])
    saved = r.call("GET", c.marker)
    r.call("DEL", c.marker)
    try:
        got = c.fold([(1, {"id": "n-" + uuid.uuid4().hex, "ts": 5, "delta": 1})])
    finally:
        if saved is not None:
            r.call("SET", c.marker, saved)
    assert got[0] == "epoch"
    assert r.call("EXISTS", c.key) == 0

"""The Redis scripts (redis/*.lua), called directly on the stack's Redis the
way the api, the applier and the resolver call them: exact int64
arithmetic, bounds and the int64 range judged with the writes still pending
(escrow), undo and finish of a pending write, membership marks of unique
counters, and the epoch check. Each case is an interleaving that the
services produce only under faults (a delivery that fails after a later
write was allowed), made here deterministically.

Every counter is new (uuid), so the stack's own data is untouched."""

import uuid

import pytest

import scripts

MAX = "9223372036854775807"
MIN = "-9223372036854775808"

APPLIED, DUP, BOUND, FENCE, DUP_ID, KEY_SEEN, NO_EPOCH, RANGE, SAME_EPOCH = range(9)


r, sha = scripts.fixtures(("write", "writes", "undo", "finish"))


MADE = []


@pytest.fixture(autouse=True)
def forget_counters(r):
    """Each test's keys go afterwards, so that no pending entry it left is
    settled by the resolver later and counted in PostgreSQL."""
    yield
    while MADE:
        c = MADE.pop()
        keys = r.call("KEYS", "{c:%s}*" % c.name)  # test-sized key space
        if keys:
            r.call("DEL", *keys)


class Counter:
    """One counter's keys and the three scripts on them."""

    def __init__(self, r, sha, kind=""):
        self.r, self.sha = r, sha
        MADE.append(self)
        self.name = f"it_scripts_{kind}{uuid.uuid4().hex[:10]}"
        self.key = "{c:%s}" % self.name
        self.marker = scripts.epoch_marker(scripts.key_slot(self.key))

    def write(self, op, arg, pend="", mn="", mx="", bound="reject", user="",
              dedup="", epoch="", key="", token=""):
        k = self.key
        keys = [k, k + ":t", k + ":p", k + ":u:2026-12-07" if dedup else k + ":none",
                k + ":o:0", k + ":id:" + (key or pend or "none"), self.marker,
                k + ":lo", k + ":hi"]
        head = f"AP|99999999999999|{token}|0123456789abcdef" if key else ""
        argv = [op, arg, "1000", dedup, user, mn, mx, bound, "0", "0", "",
                "3600" if key else "0", head, pend, "1000|" + ("5" if key else "0"),
                epoch]
        return self.r.call("EVALSHA", self.sha["write"], 9, *keys, *argv)

    def undo(self, pend, token=""):
        k = self.key
        return self.r.call("EVALSHA", self.sha["undo"], 6, k, k + ":t", k + ":p",
                           k + ":id:" + pend, k + ":lo", k + ":hi", pend, token)

    def finish(self, pend, token=""):
        k = self.key
        return self.r.call("EVALSHA", self.sha["finish"], 5, k, k + ":p", k + ":lo",
                           k + ":hi", k + ":id:" + pend, pend, token)

    def lo_hi(self):
        return self.r.call("MGET", self.key + ":lo", self.key + ":hi")

    def value(self):
        return self.r.call("GET", self.key)

    def pending(self):
        return dict(zip(*[iter(self.r.call("HGETALL", self.key + ":p"))] * 2))


def test_the_stack_has_an_epoch(r):
    c = Counter(r, {})
    assert r.call("GET", c.marker), "the restore sets every slot's marker"


@pytest.mark.parametrize("start,arg,outcome,value", [
    (MAX, "1", RANGE, MAX),
    (MAX, "-1", APPLIED, "9223372036854775806"),
    (MIN, "-1", RANGE, MIN),
    (MIN, "1", APPLIED, "-9223372036854775807"),
    ("9007199254740992", "1", APPLIED, "9007199254740993"),   # 2^53 + 1: exact
    ("-9007199254740992", "-1", APPLIED, "-9007199254740993"),
    ("1", MAX, RANGE, "1"),
    ("-1", MIN, RANGE, "-1"),
    ("0", MIN, APPLIED, MIN),
])
def test_int64_range_is_exact(r, sha, start, arg, outcome, value):
    c = Counter(r, sha)
    assert c.write("set", start)[0] == APPLIED
    res = c.write("add", arg)
    assert res[0] == outcome, res
    assert c.value() == value


@pytest.mark.parametrize("start,arg,outcome,value", [
    # the reported crossing: Lua doubles made 2^53+3 - (2^53+4) look like 0
    ("9007199254740995", "-9007199254740996", BOUND, "9007199254740995"),
    ("9007199254740995", "-9007199254740995", APPLIED, "0"),
    ("9223372036854775806", "-9223372036854775807", BOUND, "9223372036854775806"),
    ("9223372036854775806", "-9223372036854775806", APPLIED, "0"),
])
def test_gauge_bound_is_exact_past_2_to_53(r, sha, start, arg, outcome, value):
    c = Counter(r, sha, "gauge")
    assert c.write("set", start, mn="0")[0] == APPLIED
    res = c.write("add", arg, mn="0")
    assert res[0] == outcome, res
    assert c.value() == value


def test_set_whose_difference_leaves_int64_is_refused(r, sha):
    c = Counter(r, sha)
    assert c.write("set", MIN)[0] == APPLIED
    res = c.write("set", MAX)  # the event would carry MAX - MIN
    assert res[0] == RANGE, res
    assert c.value() == MIN


def test_a_pending_increase_makes_no_room_below(r, sha):
    """min 0: +1 pending, then -1 must wait for the +1 to be confirmed; had
    it been allowed, the +1's undo would leave -1 (issue 15, 4a)."""
    c = Counter(r, sha, "gauge")
    assert c.write("add", "1", pend="p1", mn="0")[0] == APPLIED
    assert c.write("add", "-1", pend="p2", mn="0")[0] == BOUND
    assert c.undo("p1") == 1
    assert c.value() is None  # the counter the +1 made is gone with it
    assert c.pending() == {}

    assert c.write("add", "1", pend="p3", mn="0")[0] == APPLIED
    assert c.finish("p3") == 1
    assert c.pending() == {} and c.lo_hi() == [None, None], "confirmed: no escrow left"
    assert c.write("add", "-1", pend="p4", mn="0")[0] == APPLIED
    assert c.value() == "0"


def test_a_pending_decrease_makes_no_room_above(r, sha):
    c = Counter(r, sha, "gauge")
    assert c.write("set", "100", mx="100")[0] == APPLIED
    assert c.write("add", "-1", pend="p1", mx="100")[0] == APPLIED
    assert c.write("add", "1", pend="p2", mx="100")[0] == BOUND
    assert c.undo("p1") == 1
    assert c.value() == "100"


def test_clamp_goes_only_as_far_as_the_worst_case_allows(r, sha):
    c = Counter(r, sha, "gauge")
    assert c.write("set", "5", mn="0", mx="10", bound="clamp")[0] == APPLIED
    assert c.write("add", "3", pend="p1", mn="0", mx="10", bound="clamp")[0] == APPLIED
    # value 8, worst case low 5: a -20 may take it down by 5 only
    res = c.write("add", "-20", pend="p2", mn="0", mx="10", bound="clamp")
    assert res[0] == APPLIED and res[1] == "3", res
    assert c.undo("p1") == 1
    assert c.value() == "0"


def test_undo_can_never_leave_int64(r, sha):
    """MAX confirmed, -MAX pending, then +MAX: allowed, the undo of the
    -MAX would have to reach 2*MAX; so it is refused."""
    c = Counter(r, sha)
    assert c.write("set", MAX)[0] == APPLIED
    assert c.write("add", "-" + MAX, pend="p1")[0] == APPLIED
    assert c.write("add", MAX, pend="p2")[0] == RANGE
    assert c.undo("p1") == 1
    assert c.value() == MAX


def test_a_duplicate_user_rests_on_the_pending_add(r, sha):
    """u1 counted by a pending write; a second write of u1 is answered
    counted:false and its event reaches the log; then the first write's
    delivery fails: u1 stays counted (PostgreSQL counts u1 from the second
    event) (issue 15, 4b)."""
    c = Counter(r, sha, "unique")
    assert c.write("add", "1", pend="w1", user="u1", dedup="exact")[0] == APPLIED
    assert c.write("add", "1", pend="w2", user="u1", dedup="exact")[0] == DUP
    assert c.finish("w2") == 1
    assert c.undo("w1") == 1
    assert c.value() == "1"
    assert r.call("SMEMBERS", c.key + ":u:2026-12-07") == ["u1"]
    assert c.pending() == {}


def test_a_user_goes_when_no_write_rests_on_them(r, sha):
    c = Counter(r, sha, "unique")
    assert c.write("add", "1", pend="w1", user="u1", dedup="exact")[0] == APPLIED
    assert c.write("add", "1", pend="w2", user="u1", dedup="exact")[0] == DUP
    assert c.undo("w1") == 1
    assert c.value() == "1", "w2 still rests on u1"
    assert c.undo("w2") == 1
    assert c.value() is None
    assert r.call("SMEMBERS", c.key + ":u:2026-12-07") == []


def test_a_confirmed_user_is_not_marked(r, sha):
    c = Counter(r, sha, "unique")
    assert c.write("add", "1", pend="w1", user="u1", dedup="exact")[0] == APPLIED
    assert c.finish("w1") == 1
    assert c.write("add", "1", pend="w2", user="u1", dedup="exact")[0] == DUP
    assert c.pending() == {}, "a duplicate of a confirmed user leaves nothing"
    assert c.undo("w2") == 0
    assert c.value() == "1"


def test_undo_without_entry_takes_nothing(r, sha):
    """After a restore the data set does not have the write (its entry is
    gone with it): an undo must not subtract what was never there
    (issue 15, 4c)."""
    c = Counter(r, sha)
    assert c.write("add", "5", pend="p1")[0] == APPLIED
    r.call("DEL", c.key, c.key + ":p")  # the restore's data set
    assert c.write("add", "7")[0] == APPLIED
    assert c.undo("p1") == 0
    assert c.value() == "7"


def test_undo_of_a_key_another_attempt_holds(r, sha):
    c = Counter(r, sha)
    assert c.write("add", "5", pend="k1", key="k1", token="aaaa")[0] == APPLIED
    assert c.undo("k1", token="bbbb") == -1
    assert c.value() == "5"
    assert c.finish("k1", token="aaaa") == 1
    assert r.call("GET", c.key + ":id:k1").startswith("AD|")
    assert c.undo("k1", token="aaaa") == -1, "done: not ours to take back"


def test_a_claimed_entry_is_the_resolvers(r, sha):
    c = Counter(r, sha)
    assert c.write("add", "5", pend="p1")[0] == APPLIED
    entry = c.pending()["e:p1"]
    claim = r.call("SCRIPT", "LOAD", scripts.text("claim"))
    assert r.call("EVALSHA", claim, 1, c.key + ":p", "p1", entry, "Cx@1|") == 1
    assert r.call("EVALSHA", claim, 1, c.key + ":p", "p1", entry, "Cy@1|") == 0
    assert c.undo("p1") == -2
    assert c.finish("p1") == 1
    assert c.value() == "5" and c.pending() == {}


def test_no_write_lands_without_an_epoch(r, sha):
    c = Counter(r, sha)
    while scripts.key_slot(c.key) == 0:  # slot 0's marker is the applier's probe
        c = Counter(r, sha)
    epoch = r.call("GET", c.marker)
    try:
        r.call("DEL", c.marker)
        assert c.write("add", "1")[0] == NO_EPOCH
        r.call("SET", c.marker, "restoring:abc")
        assert c.write("add", "1")[0] == NO_EPOCH
        assert c.write("add", "2", epoch="=restoring:abc")[0] == APPLIED
        assert c.write("add", "2", epoch="=restoring:xyz")[0] == NO_EPOCH
    finally:
        r.call("SET", c.marker, epoch)
    assert c.value() == "2"
    assert c.write("add", "1", epoch=epoch)[0] == SAME_EPOCH
    assert c.write("add", "1", epoch="an-older-one")[0] == APPLIED
    assert c.value() == "3"


def test_int64_library_against_python(r):
    """redis/int64.lua's add, compare and range check on edge values and
    random ones of every length, against Python's integers."""
    import random

    rnd = random.Random(20261207)
    edges = [0, 1, -1, 9, 10, -10, 2**53 - 1, 2**53, 2**53 + 1, -(2**53), -(2**53) - 1,
             10**15 - 1, 10**15, -(10**15), 2**63 - 1, -(2**63), 2**63 - 2, -(2**63) + 1,
             10**18, -(10**18)]
    values = edges + [rnd.randrange(-(2**63), 2**63) for _ in range(60)]
    values += [rnd.randrange(-(10**k), 10**k) for k in range(1, 19) for _ in range(3)]
    pairs = [(a, b) for a in values[:40] for b in values[:40]]
    pairs += [(rnd.choice(values), rnd.choice(values)) for _ in range(1500)]
    driver = scripts.text("write").split("local key, tkey")[0] + """
local out = {}
for i = 1, #ARGV, 2 do
  local a, b = ARGV[i], ARGV[i + 1]
  local s = i64_add(a, b)
  out[#out + 1] = s .. ' ' .. i64_cmp(a, b) .. ' ' .. (i64_fits(s) and 1 or 0)
end
return out
"""
    args = [str(x) for p in pairs for x in p]
    got = r.call("EVAL", driver, 0, *args)
    for (a, b), line in zip(pairs, got):
        s, c, f = line.split()
        assert int(s) == a + b and s == str(a + b), (a, b, line)
        assert int(c) == (a > b) - (a < b), (a, b, line)
        assert int(f) == (-(2**63) <= a + b < 2**63), (a, b, line)


def test_a_counter_is_read_at_what_no_failure_takes_back(r, sha):
    """lo: the value without the pending increases; what a counter that only
    grows is read and answered at (I6: an undo never shows as going back)."""
    c = Counter(r, sha)
    assert c.write("add", "5")[0] == APPLIED          # from the log: confirmed
    res = c.write("add", "3", pend="p1")
    assert res[0] == APPLIED and res[1] == "8"
    assert res[6] == "8", "answered: its own write counts once confirmed"
    assert c.lo_hi() == ["5", "8"]
    res = c.write("add", "2", pend="p2")
    assert res[6] == "7", "another's pending +3 is not in what it answers"
    assert c.lo_hi() == ["5", "10"]
    assert c.undo("p1") == 1
    assert c.value() == "7" and c.lo_hi() == ["5", "7"]
    assert c.finish("p2") == 1
    assert c.value() == "7" and c.lo_hi() == [None, None]


def test_a_unique_counter_counts_a_user_in_lo_once_confirmed(r, sha):
    c = Counter(r, sha, "unique")
    assert c.write("add", "1", pend="w1", user="u1", dedup="exact")[6] == "1"
    assert c.lo_hi() == ["0", "1"]
    assert c.write("add", "1", pend="w2", user="u1", dedup="exact")[6] == "1"
    assert c.finish("w2") == 1            # the user is confirmed: in lo
    assert c.lo_hi() == [None, None]
    assert c.undo("w1") == 1              # takes nothing: u1 stays
    assert c.value() == "1" and c.lo_hi() == [None, None]


def test_one_finish_settles_many_writes_of_a_counter_each_once(r, sha):
    """The api finishes the writes of one loop turn together: one call per
    value key. Each entry is settled once, an id named twice included, and
    an id already gone (or never there) moves nothing."""
    c = Counter(r, sha, "gauge")
    for pend, d in (("a", "4"), ("b", "-1"), ("c", "2"), ("d", "7")):
        assert c.write("add", d, pend=pend)[0] == APPLIED
    assert c.value() == "12" and c.lo_hi() == ["-1", "13"]
    k = c.key
    ids = ["a", "b", "a", "c", "gone"]
    n = r.call("EVALSHA", sha["finish"], 4 + len(ids), k, k + ":p", k + ":lo", k + ":hi",
               *[k + ":id:" + i for i in ids], *[x for i in ids for x in (i, "")])
    assert n == 3, "a, b and c once each"
    assert set(c.pending()) == {"e:d"}
    # a, b, c confirmed: lo gains +4 +2 and hi loses -1; d's +7 is still pending
    assert c.value() == "12" and c.lo_hi() == ["5", "12"]
    assert c.finish("d") == 1
    assert c.lo_hi() == [None, None] and c.pending() == {}


def test_one_finish_confirms_a_user_once_for_two_writes(r, sha):
    c = Counter(r, sha, "unique")
    assert c.write("add", "1", pend="w1", user="u1", dedup="exact")[0] == APPLIED
    assert c.write("add", "1", pend="w2", user="u1", dedup="exact")[0] == DUP
    k = c.key
    n = r.call("EVALSHA", sha["finish"], 6, k, k + ":p", k + ":lo", k + ":hi",
               k + ":id:w1", k + ":id:w2", "w1", "", "w2", "")
    assert n == 2
    assert c.value() == "1" and c.lo_hi() == [None, None] and c.pending() == {}


def test_writes_of_a_turn_in_one_call_each_answered_in_its_place(r, sha):
    """The api's writes of one loop turn: write.lua on each, in order; one
    that fails (here a value key that holds no integer) answers its error in
    its place and the writes after it still run."""
    a, bad, c = Counter(r, sha), Counter(r, sha), Counter(r, sha)
    r.call("SET", bad.key, "not a number")
    keys, argv = [], []
    for ctr, pend in ((a, "w1"), (bad, "w2"), (c, "w3"), (a, "w4")):
        k = ctr.key
        keys += [k, k + ":t", k + ":p", k + ":none", k + ":o:0", k + ":id:" + pend,
                 ctr.marker, k + ":lo", k + ":hi"]
        argv += ["add", "2", "1000", "", "", "", "", "reject", "0", "0", "", "0", "", pend,
                 "1000|0", ""]
    out = r.call("EVALSHA", sha["writes"], len(keys), *keys, *argv)
    assert len(out) == 4
    assert out[0][:2] == [APPLIED, "2"] and out[2][:2] == [APPLIED, "2"]
    assert out[3][:3] == [APPLIED, "4", "2"], "in order: the second write to a sees the first"
    assert isinstance(out[1], Exception) or "ERR" in str(out[1]), out[1]
    assert a.value() == "4" and c.value() == "2" and bad.value() == "not a number"
    assert set(a.pending()) == {"e:w1", "e:w4"} and bad.pending() == {}


def test_a_value_key_of_another_type_fails_the_write_before_any_change(r, sha):
    """MGET reads a key of another type as absent; the write must still fail
    before it writes the escrow, the stamp or a pending entry."""
    c = Counter(r, sha)
    r.call("HSET", c.key, "f", "v")
    with pytest.raises(Exception, match="WRONGTYPE"):
        c.write("add", "1", pend="p1")
    assert r.call("TYPE", c.key) == "hash"
    assert c.lo_hi() == [None, None] and c.pending() == {}
    assert r.call("EXISTS", c.key + ":t") == 0

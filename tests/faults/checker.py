"""The invariants every fault test checks at the end (DESIGN.md, "Invariants
the fault tests check"), over a LoadClient's log, the stores and the Kafka
log written since the test began.

  I1 no loss        every acked write is counted in PostgreSQL and Redis
                    (all deltas are +1, so totals >= acked), and its event
                    is in the Kafka log
  I2 no phantom     totals <= acked + indeterminate; no reader saw more
                    than the final value
  I3 no double      PostgreSQL's total == the number of DISTINCT event ids
     count          the persister counts in the log for that counter
                    (duplicates in the log are allowed, double counting is
                    not); once any write was retried, event id ==
                    Idempotency-Key, or a retry could count twice
  I4 convergence    API GET == Redis == PostgreSQL, GET served by Redis
  I5 dedup          a unique counter counts the distinct users with an
                    acked write that day; PostgreSQL's user rows == Redis's
                    dedup set
  I6 monotonic      a reader never saw a counter go back within a day:
     reads          among answers served by Redis (fresh), and among those
                    served by PostgreSQL (stale: true, from PostgreSQL's
                    persisted state). A stale answer may be below an
                    earlier fresh one: it says it is stale.

Quiescence first: the checker waits (bounded) until the load's events are
all folded into PostgreSQL (the persister's stored offsets reach the end of
every partition), nothing has moved for a moment, and Redis and PostgreSQL
agree, or until nothing has moved for a long while (then the invariants
report what is wrong).

Every failure message names its invariant, the counter and the numbers;
all violations are reported together.
"""

import datetime
import subprocess
import time
from collections import defaultdict

from loadclient import DAILY, UNIQUE

PERSISTER_GROUP = "counter-persister"
COUNTED_ORIGINS = ("api", "applier")


def sql_list(names):
    for n in names:
        assert all(c.isalnum() or c in "_.-" for c in n), n
    return ",".join(f"'{n}'" for n in names)


class Stores:
    """Reads the same counters from Redis, PostgreSQL, the api and Kafka."""

    def __init__(self, stack, api, redis, pg, kafka):
        self.stack, self.api, self.redis, self.pg, self.kafka = stack, api, redis, pg, kafka

    def redis_values(self, counters, day):
        """{name: int or None}: the value key each kind reads from."""
        cmds = []
        for c in counters:
            key = self.redis.key(c.name) + (f":d:{day}" if c.kind == DAILY else "")
            cmds.append(f"GET {key}")
        out = it_run(
            ["redis-cli", "-h", self.stack.redis_host, "-p", str(self.stack.redis_port), "--raw"],
            input="\n".join(cmds) + "\n",
        )
        lines = out.split("\n")[: len(counters)]
        assert len(lines) == len(counters), f"redis-cli answered {out!r}"
        return {c.name: (int(v) if v.strip() else None) for c, v in zip(counters, lines)}

    def redis_pending(self, counters, day):
        """How many of the counters' value keys still have a pending hash
        (a write applied, its event not yet known to be in the log: the
        api settles it, or the applier's resolver after
        applier.resolve_after_ms)."""
        cmds = []
        for c in counters:
            key = self.redis.key(c.name) + (f":d:{day}" if c.kind == DAILY else "")
            cmds.append(f"EXISTS {key}:p")
        out = it_run(
            ["redis-cli", "-h", self.stack.redis_host, "-p", str(self.stack.redis_port), "--raw"],
            input="\n".join(cmds) + "\n",
        )
        return sum(int(v) for v in out.split("\n")[: len(counters)] if v.strip())

    def redis_members(self, counter, day):
        out = self.redis.cli("SMEMBERS", self.redis.key(counter.name) + f":u:{day}")
        return {u for u in out.split("\n") if u}

    def pg_values(self, counters, day):
        """{name: int or None}: counter_totals, or counter_daily's row of
        `day` for daily counters."""
        plain = [c.name for c in counters if c.kind != DAILY]
        daily = [c.name for c in counters if c.kind == DAILY]
        vals = {c.name: None for c in counters}
        if plain:
            for n, v in self.pg.query(
                    f"SELECT name, value FROM counter_totals WHERE name IN ({sql_list(plain)})"):
                vals[n] = int(v)
        if daily:
            for n, v in self.pg.query(
                    f"SELECT name, value FROM counter_daily WHERE day = '{day}' "
                    f"AND name IN ({sql_list(daily)})"):
                vals[n] = int(v)
        return vals

    def pg_users(self, counter, day):
        rows = self.pg.query(
            f"SELECT user_id FROM counter_unique_users WHERE name IN ({sql_list([counter.name])}) "
            f"AND day = '{day}'")
        return {r[0] for r in rows}

    def stored_offsets(self, group=PERSISTER_GROUP):
        rows = self.pg.query(
            "SELECT partition, next_offset FROM consumer_offsets "
            f"WHERE group_id = '{group}' AND topic = '{self.stack.kafka_topic}'")
        return {int(p): int(o) for p, o in rows}

    def api_get(self, name):
        r = self.api.get(name, timeout=10)
        return r.status, r.json


def it_run(cmd, input=None, timeout=30):
    p = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, f"{cmd[0]} exit {p.returncode}: {p.stderr[-500:]}"
    return p.stdout


def today_utc():
    return datetime.datetime.now(datetime.timezone.utc).date().isoformat()


class Checker:
    def __init__(self, stack, api, redis, pg, kafka):
        self.stores = Stores(stack, api, redis, pg, kafka)
        self.kafka = kafka
        self.since = None
        self.quiesce_info = None

    def begin(self):
        """Captures the topic's end offsets; call before the load starts."""
        self.since = self.kafka.end_offsets()
        return self.since

    # ---------------------------------------------------------- quiescence

    def quiesce(self, counters, day, timeout=150, settle_s=2.0, stuck_s=60.0):
        """Waits until every message is persisted, no write is pending in
        Redis, nothing moved for settle_s and Redis == PostgreSQL for every
        counter; or nothing moved for stuck_s (longer than the resolver's
        applier.resolve_after_ms, 35 s in tests/config.test.yaml); or
        timeout. Returns a description of how it ended."""
        t0 = time.monotonic()
        last, last_change = None, t0
        while True:
            now = time.monotonic()
            try:
                ends = self.kafka.end_offsets()
                stored = self.stores.stored_offsets()
                rv = self.stores.redis_values(counters, day)
                pv = self.stores.pg_values(counters, day)
                pending = self.stores.redis_pending(counters, day)
            except AssertionError as e:  # a store still coming back
                state = ("error", str(e)[:200])
                caught, agree, pending = False, False, -1
            else:
                caught = all(stored.get(p, 0) >= e for p, e in ends.items() if e > 0)
                agree = all(rv[n] == pv[n] for n in rv) and pending == 0
                state = (tuple(sorted(ends.items())), tuple(sorted(stored.items())),
                         tuple(sorted(rv.items())), tuple(sorted(pv.items())), pending)
            if state != last:
                last, last_change = state, now
            still = now - last_change
            took = round(now - t0, 1)
            if caught and agree and still >= settle_s:
                self.quiesce_info = f"quiescent after {took}s"
                return self.quiesce_info
            if still >= stuck_s:
                self.quiesce_info = (f"nothing moved for {stuck_s:.0f}s after {took}s "
                                     f"(persister caught up: {caught}, redis == pg and "
                                     f"nothing pending: {agree}, pending: {pending})")
                return self.quiesce_info
            if now - t0 >= timeout:
                self.quiesce_info = (f"not quiescent after {timeout}s (persister caught up: "
                                     f"{caught}, redis == pg and nothing pending: {agree}); "
                                     f"last state {state}")
                return self.quiesce_info
            time.sleep(0.3)

    # -------------------------------------------------------------- checks

    def check(self, client, counters, *, log_path=None, quiesce_timeout=150, extra=()):
        """Quiesces, then checks I1-I6; fails with every violation found.
        extra: more violation strings found by the scenario itself."""
        assert self.since is not None, "Checker.begin() was not called before the load"
        acked_periods = {a.period for op in client.all_ops() for a in op.attempts
                         if a.outcome == "acked" and a.period}
        day = today_utc()
        violations = list(extra)
        if len(acked_periods) > 1 or (acked_periods and acked_periods != {day}):
            violations.append(f"setup: writes fell on days {sorted(acked_periods)}, "
                              f"checking {day}; the test ran across midnight")
        self.quiesce(counters, day, timeout=quiesce_timeout)

        st = self.stores
        rv = st.redis_values(counters, day)
        pv = st.pg_values(counters, day)
        msgs = self.kafka.messages(self.since)
        by_counter = defaultdict(list)
        for m in msgs:
            by_counter[m.get("key")].append(m)
        ops_by = defaultdict(list)
        for op in client.all_ops():
            ops_by[op.counter].append(op)
        keys = {op.key for op in client.all_ops() if op.keyed}
        keys |= {a.event_id for op in client.all_ops() for a in op.attempts if a.event_id}
        any_retry = any(op.retried for op in client.all_ops())

        rows = []
        for c in counters:
            ops = ops_by[c.name]
            acked = [op for op in ops if op.final == "acked"]
            indet = [op for op in ops if op.final == "indeterminate"]
            failed = [op for op in ops if op.final == "failed"]
            n_ack, n_ind = len(acked), len(indet)
            r, p = rv[c.name], pv[c.name]
            r0, p0 = r or 0, p or 0
            status, got = st.api_get(c.name)
            g = got.get("value") if status == 200 and isinstance(got, dict) else None
            src = (got or {}).get("source"), (got or {}).get("stale")

            log = by_counter[c.name]
            counted = [m for m in log if m["headers_dict"].get("origin") in COUNTED_ORIGINS
                       and m.get("event")]
            log_ids = {m["event"].get("id") for m in log if m.get("event")}
            deltas = defaultdict(set)
            for m in counted:
                deltas[m["event"].get("id")].add(m["event"].get("delta"))
            conflicting = {i: d for i, d in deltas.items() if len({x for x in d if x}) > 1}
            distinct_ids = {i for i, d in deltas.items() if any(d)}
            dup_msgs = len(counted) - len(deltas)
            rows.append(f"  {c.name} ({c.kind}): acked {n_ack}, indeterminate {n_ind}, "
                        f"failed {len(failed)}; redis {r}, postgres {p}, GET {g} {src}; "
                        f"log: {len(log)} messages, {len(counted)} counted, "
                        f"{len(distinct_ids)} distinct ids")

            # I1: nothing acked is lost; every acked event is in the log.
            missing_ids = [op.acked_attempt.event_id for op in acked
                           if op.acked_attempt.event_id and op.acked_attempt.event_id not in log_ids]
            if missing_ids:
                violations.append(
                    f"I1 (no loss) {c.name}: {len(missing_ids)} acked event ids are not in the "
                    f"Kafka log, e.g. {missing_ids[:3]}")
            if c.kind == UNIQUE:
                acked_users = {op.user_id for op in acked}
                maybe_users = acked_users | {op.user_id for op in indet}
                pg_users = st.pg_users(c, day)
                rd_users = st.redis_members(c, day)
                for where, users, val in (("PostgreSQL", pg_users, p0), ("Redis", rd_users, r0)):
                    lost = acked_users - users
                    if lost or val < len(acked_users):
                        violations.append(
                            f"I1 (no loss) {c.name}: {where} counts {val} with {len(users)} users "
                            f"but {len(acked_users)} users have an acked write; "
                            f"missing {sorted(lost)[:5]}")
                    extra_u = users - maybe_users
                    if extra_u or val > len(maybe_users):
                        violations.append(
                            f"I2 (no phantom) {c.name}: {where} counts {val} ({len(users)} users) "
                            f"but only {len(maybe_users)} users have an acked or indeterminate "
                            f"write; unexpected {sorted(extra_u)[:5]}")
                # I3 on users: each user counts once per day.
                log_users = {m["event"].get("user_id") for m in counted}
                if p0 != len(log_users):
                    how = "counted twice" if p0 > len(log_users) else "events not counted"
                    violations.append(
                        f"I3 (no double count) {c.name}: PostgreSQL counts {p0} but the log's "
                        f"counted events name {len(log_users)} distinct users: {how}")
                # I5: exact dedup, and the same users in both stores.
                if pg_users != rd_users:
                    violations.append(
                        f"I5 (dedup) {c.name}: PostgreSQL has {len(pg_users)} users, the Redis "
                        f"dedup set {len(rd_users)}; only in PostgreSQL "
                        f"{sorted(pg_users - rd_users)[:5]}, only in Redis "
                        f"{sorted(rd_users - pg_users)[:5]}")
                if not indet and not (p0 == r0 == len(acked_users)):
                    violations.append(
                        f"I5 (dedup) {c.name}: {len(acked_users)} distinct users with an acked "
                        f"write (none indeterminate), but PostgreSQL {p} and Redis {r}")
            else:
                for where, val in (("PostgreSQL", p0), ("Redis", r0)):
                    if val < n_ack:
                        violations.append(
                            f"I1 (no loss) {c.name}: {where} total {val} < {n_ack} acked writes")
                    if val > n_ack + n_ind:
                        violations.append(
                            f"I2 (no phantom) {c.name}: {where} total {val} > {n_ack} acked + "
                            f"{n_ind} indeterminate writes")
                # I3: PostgreSQL == distinct counted event ids (all +1).
                if p0 != len(distinct_ids):
                    how = "counted twice" if p0 > len(distinct_ids) else "events not counted"
                    violations.append(
                        f"I3 (no double count) {c.name}: PostgreSQL total {p0} != "
                        f"{len(distinct_ids)} distinct event ids counted in the log "
                        f"({len(counted)} counted messages, {dup_msgs} repeated ids): {how}")
            if conflicting:
                violations.append(
                    f"I3 (no double count) {c.name}: event ids logged with different deltas, "
                    f"e.g. {list(conflicting.items())[:3]}")
            if any_retry:
                wrong = [(op.key, op.acked_attempt.event_id) for op in acked
                         if op.keyed and op.acked_attempt.event_id not in (None, op.key)]
                if wrong:
                    violations.append(
                        f"I3 (no double count) {c.name}: writes were retried with their "
                        f"Idempotency-Key, but {len(wrong)} of {n_ack} acked writes got an event "
                        f"id other than their key (e.g. key {wrong[0][0]} -> {wrong[0][1]}), so "
                        f"a retry of a write that was applied counts again")
                foreign = sorted(i for i in deltas if i not in keys)
                if foreign and not wrong:
                    violations.append(
                        f"I3 (no double count) {c.name}: {len(foreign)} counted event ids in the "
                        f"log are no Idempotency-Key the client sent, e.g. {foreign[:3]}")

            # I4: convergence, and the api reads from Redis again.
            if not (g == r and r == p):
                violations.append(
                    f"I4 (convergence) {c.name}: API GET {g} ({src[0]}, stale {src[1]}), "
                    f"Redis {r}, PostgreSQL {p}")
            elif src != ("redis", False):
                violations.append(
                    f"I4 (convergence) {c.name}: GET answered from {src[0]} (stale {src[1]}) "
                    "with the stack healthy again")

            # I6 (and I2 for readers).
            final = p0
            reads = [x for x in client.reads if x.counter == c.name and x.status == 200
                     and x.value is not None]
            for stale in (False, True):
                prev = None
                for x in reads:
                    if bool(x.stale) != stale:
                        continue
                    if prev is not None and x.period == prev.period and x.value < prev.value:
                        kind = "stale (postgres)" if stale else "fresh (redis)"
                        violations.append(
                            f"I6 (monotonic reads) {c.name}: {kind} read went back from "
                            f"{prev.value} at t={prev.t0:.2f}s ({prev.source}) to {x.value} at "
                            f"t={x.t0:.2f}s ({x.source})")
                        break
                    prev = x
            above = [x for x in reads if x.value > max(final, r0)]
            if above:
                x = above[0]
                violations.append(
                    f"I2 (no phantom) {c.name}: a reader saw {x.value} at t={x.t0:.2f}s "
                    f"({x.source}), above the final value {final} ({len(above)} such reads)")

        self.report = "\n".join(
            [f"{self.quiesce_info}; client {client.summary()}"] + rows
            + [f"  marks: {[(round(t, 2), w) for t, w in client.marks]}"]
            + ([f"  request log: {log_path}"] if log_path else []))
        print(self.report)
        assert not violations, (
            f"{len(violations)} invariant violations:\n" + "\n".join(violations)
            + "\n" + self.report)
        return self.report

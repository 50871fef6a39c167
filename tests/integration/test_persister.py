"""The persister's offset fence (G2: each event counted once in PostgreSQL).

A persister commits a batch's sums together with the move of its
partitions' stored offsets, and the move only happens where the stored
offset is still the one the batch started from. When another member of
the group has committed the same events meanwhile (after a rebalance the
first did not see in time), the move touches no row and the whole batch
is rolled back.

The fault suite's scenario c reaches this through a frozen persister and
a real rebalance, where timing decides which of two safe paths is taken.
Here the interleaving is forced: the test holds the partition's offset
row locked, so the persister's commit waits on it with the batch in hand;
meanwhile the test commits what another member would (the event's sum and
the offset past it), and only then lets the persister go on.
"""

import os
import subprocess

from conftest import log_text_since, metrics_at, sql_literal, wait_pg_total, wait_until

GROUP = "counter-persister"


def _fenced_total():
    port = os.environ.get("COUNTER_PERSISTER_METRICS_PORT")
    assert port, "COUNTER_PERSISTER_METRICS_PORT is not set: the stack's counter.env has it"
    return metrics_at(int(port))["counter_persister_fenced_batches_total"]


class HeldTransaction:
    """A psql session fed statement by statement, so that a transaction
    stays open (and its row locks held) between steps of the test."""

    def __init__(self, stack, app_name):
        self.app_name = app_name
        self.proc = subprocess.Popen(
            ["psql", stack.pg_dsn, "-X", "-q", "-v", "ON_ERROR_STOP=1"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PGAPPNAME": app_name, "PGCONNECT_TIMEOUT": "5"},
        )

    def send(self, sql):
        self.proc.stdin.write(sql + "\n")
        self.proc.stdin.flush()

    def finish(self, timeout=30):
        out, err = self.proc.communicate(timeout=timeout)  # closes stdin: psql ends
        assert self.proc.returncode == 0, f"psql failed: {err}{out}"

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def test_offset_fence_drops_a_batch_another_member_committed(api, redis, pg, kafka, stack, name):
    topic = stack.kafka_topic
    since = kafka.end_offsets()
    assert api.incr(name, 10).status == 200
    wait_pg_total(pg, name, 10)
    (seed,) = kafka.messages(since, key=name)
    part = seed["partition"]
    row = (f"group_id = {sql_literal(GROUP)} AND topic = {sql_literal(topic)} "
           f"AND partition = {part}")
    # The seed's commit stored the offset past it (the row exists).
    wait_until(lambda: int(pg.query(f"SELECT next_offset FROM consumer_offsets WHERE {row}")[0][0])
               > seed["offset"], 30, 0.1, "the seed's offset stored")
    fenced_before = _fenced_total()
    log_path = stack.log_path("counter-persister")
    log_from = os.path.getsize(log_path)

    tx = HeldTransaction(stack, "fence-test")
    try:
        tx.send(f"BEGIN; SELECT next_offset FROM consumer_offsets WHERE {row} FOR UPDATE;")

        def holding():
            rows = pg.query("SELECT state FROM pg_stat_activity WHERE application_name = 'fence-test'")
            return rows and rows[0][0] == "idle in transaction"

        wait_until(holding, 15, 0.05, "the test's transaction holds the offset row")
        since = kafka.end_offsets()
        w = api.incr(name, 5)
        assert w.status == 200, w.json
        (msg,) = kafka.messages(since, key=name)
        assert msg["partition"] == part, "one counter, one partition"
        assert since[part] == msg["offset"], (
            "another event reached the partition first; the fence move below "
            f"assumes this write is the next one: {since} {msg['offset']}")

        # The persister has the event and waits for the row to move its offset.
        def persister_waits():
            rows = pg.query(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND query LIKE 'UPDATE consumer_offsets%'")
            return int(rows[0][0]) >= 1

        wait_until(persister_waits, 30, 0.05, "the persister's commit waiting on the offset row")
        # What another member that took the partition over would commit:
        # this event's sums (total, its UTC day, its minute: the config's
        # time zone is UTC) and the offset past it. Whole, so that the
        # live tables stay what a replay of the log gives (test_rebuild).
        n, ts = sql_literal(name), int(msg["event"]["ts"])
        tx.send(f"INSERT INTO counter_totals (name, value, last_event_ms) VALUES ({n}, 5, {ts}) "
                "ON CONFLICT (name) DO UPDATE SET value = counter_totals.value + 5, "
                "last_event_ms = GREATEST(counter_totals.last_event_ms, EXCLUDED.last_event_ms);")
        tx.send("INSERT INTO counter_daily (name, day, value, last_event_ms) "
                f"VALUES ({n}, (to_timestamp({ts} / 1000.0) AT TIME ZONE 'UTC')::date, 5, {ts}) "
                "ON CONFLICT (name, day) DO UPDATE SET value = counter_daily.value + 5, "
                "last_event_ms = GREATEST(counter_daily.last_event_ms, EXCLUDED.last_event_ms);")
        tx.send("INSERT INTO counter_buckets (name, bucket_start, value) "
                f"VALUES ({n}, to_timestamp(({ts} / 60000) * 60), 5) "
                "ON CONFLICT (name, bucket_start) DO UPDATE SET value = counter_buckets.value + 5;")
        tx.send(f"UPDATE consumer_offsets SET next_offset = {msg['offset'] + 1} WHERE {row};")
        tx.send("COMMIT;")
        tx.finish()
    finally:
        tx.kill()

    wait_until(lambda: _fenced_total() == fenced_before + 1, 30, 0.1, "the persister's batch fenced")
    # Counted once (by "the other member"): without the fence the persister
    # would add its batch too and PostgreSQL would hold 20.
    assert pg.total(name) == 15
    # The persister went back to the stored offsets and goes on from there.
    assert api.incr(name, 1).status == 200
    wait_pg_total(pg, name, 16)
    assert pg.total(name) == 16 and redis.value(name) == 16 and api.value(name) == 16
    (day_total,) = pg.query(f"SELECT sum(value) FROM counter_daily WHERE name = {sql_literal(name)}")[0]
    (minutes_total,) = pg.query(f"SELECT sum(value) FROM counter_buckets WHERE name = {sql_literal(name)}")[0]
    assert (int(day_total), int(minutes_total)) == (16, 16)
    assert _fenced_total() == fenced_before + 1
    assert f"partition {part} offsets moved past {msg['offset']} under us" in log_text_since(log_path, log_from)

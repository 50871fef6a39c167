"""The history tables partitioned by month (issue 8): sql/0004, counterctl
partitions, and what the rest of the service sees of them.

The stack's `up` ran the migration and one maintenance, so the tables are
partitioned with this month and the next three. The api's writes and
history reads are checked on the live tables; rows of other months are
written there straight into PostgreSQL (the api takes events at most
lateness_s old) and deleted afterwards, because rebuild-postgres compares
the live tables with a replay of the log, which never held them.

Retention and the DEFAULT partition are checked in a schema of their own
(migrated by counterctl itself, which finds it through PGOPTIONS'
search_path): a retention drops every month older than its cutoff, which
on the live tables would take other tests' history (test_history writes
events months old) away from under rebuild-postgres; and no persister
deletes rows there while a test looks.
"""

import datetime
import json
import os
import subprocess
import uuid

import pytest

from conftest import api_history, counter_name, sql_literal, wait_persisted

SQL_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "sql")

TABLES = {
    # table: (partition key, the persister's ON CONFLICT key)
    "counter_daily": ("day", ["name", "day"]),
    "counter_buckets": ("bucket_start", ["name", "bucket_start"]),
    "counter_unique_users": ("day", ["name", "day", "user_id"]),
    "counter_hll": ("day", ["name", "day"]),
}


@pytest.fixture
def scratch(pg):
    """A schema of its own, migrated by counterctl: (Scratch, env for
    counterctl to work in it)."""
    schema = f"it_part_{uuid.uuid4().hex[:12]}"
    pg.query(f"CREATE SCHEMA {schema}")
    env = {"PGOPTIONS": f"-c search_path={schema}"}
    try:
        p = ok(ctl("migrate", "up", env=env))
        assert "applied 0004_" in p.stdout, p.stdout
        yield Scratch(pg, schema), env
    finally:
        pg.query(f"DROP SCHEMA {schema} CASCADE")


class Scratch:
    """pg.query with the search path set to the scratch schema."""

    def __init__(self, pg, schema):
        self.pg, self.schema = pg, schema

    def query(self, sql):
        return self.pg.query(f"SET search_path TO {self.schema}; {sql}")


def ctl(*args, env=None, timeout=120):
    binary = os.path.join(os.environ["BIN_DIR"], "counterctl")
    return subprocess.run([binary, *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def ok(p):
    assert p.returncode == 0, (p.returncode, p.stdout, p.stderr)
    return p


def maintain(*args, env=None):
    """counterctl partitions ARGS --json: the document."""
    p = ok(ctl("partitions", *args, "--json", env=env))
    lines = p.stdout.splitlines()
    assert len(lines) == 1, p.stdout
    return json.loads(lines[0])


def utc_today():
    return datetime.datetime.now(datetime.timezone.utc).date()


def month_start(d, add=0):
    """The first day of d's month, `add` months later (earlier if < 0)."""
    n = d.year * 12 + d.month - 1 + add
    return datetime.date(n // 12, n % 12 + 1, 1)


def part(table, month):
    return f"{table}_p{month:%Y%m}"


def partitions(pg, table):
    """{partition name: bound} of table, DEFAULT included."""
    rows = pg.query(
        "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i "
        f"JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = '{table}'::regclass")
    return dict(rows)


def where_rows(pg, table, name):
    """[(partition, key as text)] of the rows of counter `name`."""
    key = TABLES[table][0]
    return pg.query(f"SELECT tableoid::regclass::text, {key}::text FROM {table} "
                    f"WHERE name = {sql_literal(name)} ORDER BY {key}")


def insert_rows(pg, name, days):
    """One row per table and day (a date) for counter `name`: the bucket at
    10:00 UTC of the day, value 7."""
    for d in days:
        pg.query(
            f"INSERT INTO counter_daily (name, day, value, last_event_ms) "
            f"VALUES ({sql_literal(name)}, '{d}', 7, 0);"
            f"INSERT INTO counter_buckets VALUES ({sql_literal(name)}, '{d} 10:00+00', 7);"
            f"INSERT INTO counter_unique_users VALUES ({sql_literal(name)}, '{d}', 'u1', 0);"
            f"INSERT INTO counter_hll VALUES ({sql_literal(name)}, '{d}', '\\x00'::bytea, 1)")


def delete_rows(pg, name, before=None):
    """Deletes the rows of counter `name` (only those keyed before the date
    `before`, when given: the ones written here, not the api's)."""
    for t, (key, _) in TABLES.items():
        cond = f" AND {key} < '{before}'" if before else ""
        pg.query(f"DELETE FROM {t} WHERE name = {sql_literal(name)}{cond}")


def drop_empty_partition(pg, table, month):
    """Makes sure `month` has no partition: the test needs one to be
    created. Only an empty one (left by an earlier run) is dropped."""
    p = part(table, month)
    if p in partitions(pg, table):
        assert pg.query(f"SELECT count(*) FROM {p}") == [["0"]], p
        pg.query(f"DROP TABLE {p}")


def table_rows(pg):
    """Every row of the four tables, as text, for before/after checks."""
    out = {}
    for t in TABLES:
        out[t] = pg.query(f"SELECT md5(string_agg(x::text, ',' ORDER BY x::text)), count(*) "
                          f"FROM (SELECT * FROM {t}) x")[0]
    return out


# ------------------------------------------------------------- layout ---


def test_history_tables_are_range_partitioned_by_time_with_a_default(pg):
    this = month_start(utc_today())
    for table, (key, conflict_key) in TABLES.items():
        rows = pg.query(
            "SELECT p.partstrat, a.attname, p.partdefid <> 0 FROM pg_partitioned_table p "
            "JOIN pg_attribute a ON a.attrelid = p.partrelid AND a.attnum = p.partattrs[0] "
            f"WHERE p.partrelid = '{table}'::regclass")
        assert rows == [["r", key, "t"]], (table, rows)
        parts = partitions(pg, table)
        assert parts[f"{table}_default"] == "DEFAULT"
        # this month and the three ahead exist (stack.sh up ran the maintenance)
        for k in range(4):
            assert part(table, month_start(this, k)) in parts, (table, k, sorted(parts))
        # the bounds are whole months; buckets' at UTC midnight
        lo, hi = month_start(this), month_start(this, 1)
        bound = parts[part(table, lo)]
        if key == "day":
            assert bound == f"FOR VALUES FROM ('{lo}') TO ('{hi}')", bound
        else:
            assert pg.query(f"SELECT '{lo} 00:00+00'::timestamptz::text, "
                            f"'{hi} 00:00+00'::timestamptz::text")[0] == \
                [b.strip("'") for b in bound[len("FOR VALUES FROM ("):-1].split(") TO (")]
        # the unique key the persister's ON CONFLICT names, with the partition key in it
        pk = pg.query(
            "SELECT a.attname FROM pg_index i JOIN LATERAL unnest(i.indkey) WITH ORDINALITY "
            "k(attnum, n) ON true JOIN pg_attribute a ON a.attrelid = i.indrelid "
            f"AND a.attnum = k.attnum WHERE i.indrelid = '{table}'::regclass AND i.indisprimary "
            "ORDER BY k.n")
        assert [r[0] for r in pk] == conflict_key, (table, pk)
    # applied_event_ids stays one plain table: its key (name, id) is the dedup
    assert pg.query("SELECT relkind FROM pg_class WHERE oid = 'applied_event_ids'::regclass") == [["r"]]


def test_api_writes_land_in_the_partition_of_their_month(api, pg, kafka):
    plain = counter_name("it.part.")
    daily = counter_name("it_day_sh_part")
    uniq = counter_name("it_unique_part")
    hll = counter_name("it_hll_part")
    assert api.incr(plain, 5).status == 200
    assert api.incr(daily, 3).status == 200
    assert api.incr(uniq, user_id="u1").status == 200
    assert api.incr(hll, user_id="u1").status == 200
    wait_persisted(pg, kafka)
    seen = set()
    for name in (plain, daily, uniq, hll):
        for table, (key, _) in TABLES.items():
            # the month of each row's own key (buckets: the UTC month)
            month = "(bucket_start AT TIME ZONE 'UTC')" if key == "bucket_start" else "day"
            rows = pg.query(
                f"SELECT tableoid::regclass::text, '{table}_p' || to_char({month}, 'YYYYMM') "
                f"FROM {table} WHERE name = {sql_literal(name)}")
            for got, want in rows:
                assert got == want, (name, table, got, want)
                seen.add(table)
    assert seen == set(TABLES), seen
    assert api.value(plain) == 5


# ------------------------------------------------------ the DEFAULT rows ---


def test_rows_in_default_move_into_a_new_partition_and_dry_run_changes_nothing(scratch):
    db, env = scratch
    name = counter_name("it.part.default.")
    month = month_start(utc_today(), -5)
    days = [month + datetime.timedelta(days=2), month + datetime.timedelta(days=20)]
    insert_rows(db, name, days)
    for t in TABLES:
        assert [r[0] for r in where_rows(db, t, name)] == [f"{t}_default"] * 2, t
    before = table_rows(db)

    dry = maintain("--dry-run", env=env)
    assert dry["ok"] is True and dry["dry_run"] is True
    assert dry["created"] == 4 and dry["rows_moved"] == 8, dry
    for entry in dry["tables"]:
        t = entry["table"]
        assert entry["actions"] == [{"action": "create", "partition": part(t, month),
                                     "from": str(month), "to": str(month_start(month, 1)),
                                     "rows": 2}], (t, entry)
        assert entry["default_rows"] == 0, entry  # after the run it describes
    # ... and nothing changed
    assert table_rows(db) == before
    for t in TABLES:
        assert part(t, month) not in partitions(db, t)
        assert [r[0] for r in where_rows(db, t, name)] == [f"{t}_default"] * 2

    p = ok(ctl("partitions", env=env))
    for t in TABLES:
        line = f"{t}: create {part(t, month)} [{month}, {month_start(month, 1)}), 2 rows moved from DEFAULT"
        assert line in p.stdout, p.stdout
        assert f"{t}: 5 monthly partitions, 0 rows in DEFAULT; keeps everything" in p.stdout, p.stdout
        assert [r[0] for r in where_rows(db, t, name)] == [part(t, month)] * 2, t
        assert db.query(f"SELECT count(*) FROM {t}_default") == [["0"]]
        # the new partition is a full one: its primary key and defaults
        assert db.query(f"SELECT count(*) FROM pg_index WHERE indrelid = '{part(t, month)}'::regclass "
                        "AND indisprimary") == [["1"]]
    assert "partitions: 4 created, 0 dropped; 8 rows moved out of DEFAULT, 0 rows dropped" in p.stdout
    # every row is still there, unchanged
    assert table_rows(db) == before
    # a write keyed in that month goes to its partition now, defaults filled
    db.query(f"INSERT INTO counter_daily (name, day, value, last_event_ms) "
             f"VALUES ('x', '{month + datetime.timedelta(days=9)}', 1, 0)")
    assert db.query("SELECT tableoid::regclass::text, updated_at IS NOT NULL FROM counter_daily "
                    "WHERE name = 'x'") == [[part("counter_daily", month), "t"]]
    # a second run has nothing left to do
    again = maintain(env=env)
    assert again["created"] == 0 and again["rows_moved"] == 0, again


def test_history_spanning_two_partitions(api, pg):
    """Buckets on both sides of a month boundary, in two partitions, add
    up in hours and days whose range crosses it."""
    name = counter_name("it.part.hist.")
    boundary = month_start(utc_today())
    prev = month_start(boundary, -1)

    def at(day, hh_mm):
        return f"{day}T{hh_mm}:00Z"

    last_day = boundary - datetime.timedelta(days=1)
    try:
        pg.query(
            "INSERT INTO counter_buckets VALUES "
            f"({sql_literal(name)}, '{last_day} 23:10+00', 4), "
            f"({sql_literal(name)}, '{last_day} 23:59+00', 6), "
            f"({sql_literal(name)}, '{boundary} 00:00+00', 10), "
            f"({sql_literal(name)}, '{boundary} 00:30+00', 20), "
            f"({sql_literal(name)}, '{boundary} 01:05+00', 40)")
        # the previous month's rows may wait in DEFAULT: the maintenance
        # gives them their own partition
        ok(ctl("partitions"))
        where = {r[1][:10]: r[0] for r in where_rows(pg, "counter_buckets", name)}
        assert where == {str(last_day): part("counter_buckets", prev),
                         str(boundary): part("counter_buckets", boundary)}, where

        r = api_history(api, name, **{"from": at(last_day, "22:00"), "to": at(boundary, "02:00"),
                                      "interval": "hour"})
        assert r.status == 200, r.body
        points = [(p["start"], p["value"]) for p in r.json["points"]]
        assert points == [
            (f"{last_day}T22:00:00+00:00", 0), (f"{last_day}T23:00:00+00:00", 10),
            (f"{boundary}T00:00:00+00:00", 30), (f"{boundary}T01:00:00+00:00", 40),
        ], points
        r = api_history(api, name, **{"from": at(last_day, "00:00"),
                                      "to": at(boundary + datetime.timedelta(days=1), "00:00"),
                                      "interval": "day"})
        assert r.status == 200, r.body
        assert [p["value"] for p in r.json["points"]] == [10, 70], r.json
        # minutes across the boundary: each bucket where it was written
        r = api_history(api, name, **{"from": at(last_day, "23:59"), "to": at(boundary, "00:01"),
                                      "interval": "minute"})
        assert [p["value"] for p in r.json["points"]] == [6, 10], r.json
    finally:
        delete_rows(pg, name)


# ------------------------------------------------------------ retention ---


def test_retention_drops_whole_old_months_and_keeps_the_rest(scratch):
    db, env = scratch
    old = month_start(utc_today(), -4)    # ends >= 89 days ago: past 60 days
    older = month_start(utc_today(), -6)  # rows left in DEFAULT: purged
    kept = month_start(utc_today(), -1)   # ends this month: kept
    name = counter_name("it.part.ret.")
    old_days = [old + datetime.timedelta(days=1), old + datetime.timedelta(days=9)]
    insert_rows(db, name, old_days + [kept + datetime.timedelta(days=3)])
    ok(ctl("partitions", env=env))  # the old and kept months get their partitions
    insert_rows(db, name, [older + datetime.timedelta(days=4)])  # into DEFAULT
    for t in TABLES:
        assert [r[0] for r in where_rows(db, t, name)] == \
            [f"{t}_default", part(t, old), part(t, old), part(t, kept)], t
    before = table_rows(db)
    cutoff = str(utc_today() - datetime.timedelta(days=60))

    dry = maintain("--retain-days", "60", "--dry-run", env=env)
    assert table_rows(db) == before
    assert dry["dropped"] == 4 and dry["rows_dropped"] == 4 * 3, dry
    for entry in dry["tables"]:
        t = entry["table"]
        assert entry["retain_days"] == 60 and entry["cutoff"] == cutoff, entry
        assert entry["actions"] == [
            {"action": "drop", "partition": part(t, old), "from": str(old),
             "to": str(month_start(old, 1)), "rows": 2},
            {"action": "purge", "partition": f"{t}_default", "from": None,
             "to": str(month_start(datetime.date.fromisoformat(cutoff))), "rows": 1},
        ], (t, entry)
    for t in TABLES:
        assert part(t, old) in partitions(db, t)

    p = ok(ctl("partitions", "--retain-days", "60", env=env))
    for t in TABLES:
        assert f"{t}: drop {part(t, old)} [{old}, {month_start(old, 1)}) with 2 rows" in p.stdout, p.stdout
        assert f"{t}: purge 1 row before " in p.stdout, p.stdout
        parts = partitions(db, t)
        assert part(t, old) not in parts and part(t, kept) in parts, (t, sorted(parts))
        # the old rows went with their month; the kept month's stayed
        assert [r[0] for r in where_rows(db, t, name)] == [part(t, kept)], t
    assert f"keeps 60 days (from {cutoff})" in p.stdout
    # the configuration's retention (0 = keep): nothing more goes
    again = maintain(env=env)
    assert again["dropped"] == 0 and again["rows_dropped"] == 0, again
    # retention.* per table, from the configuration (here the environment)
    doc = maintain("--dry-run", env={**env, "COUNTER_RETENTION_BUCKETS_DAYS": "20",
                                     "COUNTER_RETENTION_UNIQUE_DAYS": "0"})
    by_table = {e["table"]: e for e in doc["tables"]}
    assert by_table["counter_buckets"]["retain_days"] == 20
    # the kept month goes after 20 days only once it ended 20 days ago
    gone = month_start(utc_today()) <= utc_today() - datetime.timedelta(days=20)
    assert [a["partition"] for a in by_table["counter_buckets"]["actions"]] == \
        ([part("counter_buckets", kept)] if gone else []), by_table["counter_buckets"]
    for t in ("counter_daily", "counter_unique_users", "counter_hll"):
        assert by_table[t]["retain_days"] == 0 and by_table[t]["cutoff"] is None, by_table[t]
        assert by_table[t]["actions"] == [], by_table[t]


def test_a_table_held_by_another_transaction_fails_the_run_after_its_lock_wait(scratch, stack):
    """The maintenance waits 10 s at most for a table (the persister holds
    them only for a batch), then fails with exit 1; the tables before it
    are done, and the next run does the rest."""
    db, env = scratch
    for t in TABLES:
        db.query(f"DROP TABLE {part(t, month_start(utc_today(), 3))}")
    holder = subprocess.Popen(
        ["psql", stack.pg_dsn, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-c",
         f"BEGIN; LOCK TABLE {db.schema}.counter_buckets IN ACCESS SHARE MODE; "
         "SELECT pg_sleep(25); COMMIT"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PGAPPNAME": db.schema})
    try:
        wait_locked = datetime.datetime.now() + datetime.timedelta(seconds=10)
        while db.query(f"SELECT count(*) FROM pg_locks WHERE relation = "
                       f"'{db.schema}.counter_buckets'::regclass AND granted") == [["0"]]:
            assert datetime.datetime.now() < wait_locked, "the holder took no lock"
        started = datetime.datetime.now()
        p = ctl("partitions", "--json", env=env, timeout=60)
        waited = (datetime.datetime.now() - started).total_seconds()
        assert p.returncode == 1, (p.returncode, p.stdout, p.stderr)
        assert 9 <= waited < 25, waited
        doc = json.loads(p.stdout)
        assert doc["ok"] is False and doc["error"]["code"] == "maintenance_failed", doc
        assert "counter_buckets" in doc["error"]["message"], doc
        assert "lock timeout" in doc["error"]["message"], doc
        assert [t["table"] for t in doc["tables"]] == ["counter_daily"], doc
        assert "lock timeout" in p.stderr
        assert part("counter_daily", month_start(utc_today(), 3)) in partitions(db, "counter_daily")
        assert part("counter_buckets", month_start(utc_today(), 3)) not in \
            partitions(db, "counter_buckets")
    finally:
        # the server would keep the lock until pg_sleep ends: end its backend
        db.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                 f"WHERE application_name = '{db.schema}'")
        holder.wait(timeout=30)
    again = maintain(env=env)
    assert [t["table"] for t in again["tables"] if t["actions"]] == \
        ["counter_buckets", "counter_unique_users", "counter_hll"], again


# -------------------------------------------------------------- usage ---


@pytest.mark.parametrize("args", [
    ["--ahead", "x"], ["--ahead", "121"], ["--retain-days", "-1"],
    ["--retain-days", "36501"], ["--bogus"], ["extra"], ["--dry-run", "--dry-run"],
])
def test_bad_usage_exits_2(args):
    p = ctl("partitions", *args, timeout=30)
    assert p.returncode == 2, (p.returncode, p.stdout, p.stderr)
    assert p.stdout == ""
    assert p.stderr.startswith("counterctl: ") and "usage: counterctl partitions" in p.stderr


def test_help_and_unreachable_postgres():
    p = ok(ctl("partitions", "--help", env={"COUNTER_CONFIG": "/nonexistent.yaml"}))
    assert p.stdout.startswith("usage: counterctl partitions")
    assert "  partitions [--ahead N]" in ok(ctl("--help")).stdout
    p = ctl("partitions", env={"COUNTER_POSTGRES_PORT": "1"}, timeout=60)
    assert p.returncode == 3 and "could not connect to postgresql" in p.stderr, p.stderr
    p = ctl("partitions", "--json", env={"COUNTER_POSTGRES_PORT": "1"}, timeout=60)
    assert p.returncode == 3
    doc = json.loads(p.stdout)
    assert doc["ok"] is False and doc["error"]["code"] == "postgres_unreachable", doc


# ---------------------------------------------------------- migration ---


def bigint_values(columns):
    """The columns as they were before 0006 made the sums numeric."""
    return [[t, c, "bigint" if c == "value" and ty == "numeric" else ty, *rest]
            for t, c, ty, *rest in columns]


BIG_SUM_TABLES = ("counter_totals", "counter_daily", "counter_buckets")
INT64 = "BETWEEN -9223372036854775808 AND 9223372036854775807"


def set_aside_big_sums(pg):
    """Moves the rows whose sums lie past int64 into tables of their own."""
    for t in BIG_SUM_TABLES:
        pg.query(f"DROP TABLE IF EXISTS aside_{t}; "
                 f"CREATE TABLE aside_{t} AS SELECT * FROM {t} WHERE value NOT {INT64}; "
                 f"DELETE FROM {t} WHERE value NOT {INT64}")


def put_back_big_sums(pg):
    for t in BIG_SUM_TABLES:
        if pg.query(f"SELECT to_regclass('aside_{t}') IS NOT NULL") == [["t"]]:
            pg.query(f"INSERT INTO {t} SELECT * FROM aside_{t}; DROP TABLE aside_{t}")


def test_migration_down_restores_plain_tables_and_up_partitions_them_again(pg, api, kafka):
    # rows in several months and in DEFAULT, all of which must survive
    name = counter_name("it.part.mig.")
    far = month_start(utc_today(), -7)
    for t in TABLES:
        drop_empty_partition(pg, t, far)
    assert api.incr(name, 3).status == 200
    wait_persisted(pg, kafka)
    insert_rows(pg, name, [far + datetime.timedelta(days=5)])
    columns_sql = ("SELECT table_name, column_name, data_type, is_nullable, column_default "
                   "FROM information_schema.columns WHERE table_schema = current_schema() "
                   "AND table_name IN ('counter_daily', 'counter_buckets', "
                   "'counter_unique_users', 'counter_hll') ORDER BY 1, ordinal_position")
    try:
        # 0006's way down refuses sums past int64, which other tests may
        # have made on this stack: they wait aside until the way up
        set_aside_big_sums(pg)
        columns = pg.query(columns_sql)
        before = table_rows(pg)
        assert before["counter_buckets"][1] != "0"

        # the later ones (0008 applier record offsets, 0007 key
        # generations, 0006 numeric sums, 0005) go first, then 0004
        later = len([f for f in os.listdir(SQL_DIR) if f.endswith(".up.sql") and f[:4] > "0004"])
        p = ok(ctl("migrate", "down", str(later + 1)))
        assert "reverted 0007_" in p.stdout and "reverted 0006_" in p.stdout, p.stdout
        assert "reverted 0004_" in p.stdout, p.stdout
        for t, (_, conflict_key) in TABLES.items():
            assert pg.query(f"SELECT relkind FROM pg_class WHERE oid = '{t}'::regclass") == [["r"]]
            assert pg.query(f"SELECT count(*) FROM pg_inherits WHERE inhparent = '{t}'::regclass") == [["0"]]
            pk = pg.query(f"SELECT pg_get_constraintdef(oid) FROM pg_constraint "
                          f"WHERE conrelid = '{t}'::regclass AND contype = 'p'")
            assert pk == [[f"PRIMARY KEY ({', '.join(conflict_key)})"]], pk
        assert pg.query("SELECT count(*) FROM pg_class WHERE relname ~ "
                        "'^counter_(daily|buckets|unique_users|hll)_(p[0-9]{6}|default|000[34])$'") == [["0"]]
        assert pg.query("SELECT count(*) FROM pg_proc WHERE proname LIKE 'counter_partition%'") == [["0"]]
        assert pg.query(columns_sql) == bigint_values(columns)
        assert table_rows(pg) == before
        # the service still writes into the plain tables
        assert api.incr(name, 2).status == 200
        wait_persisted(pg, kafka)
        before = table_rows(pg)

        p = ok(ctl("migrate", "up"))
        assert "applied 0004_" in p.stdout and "applied 0007_" in p.stdout, p.stdout
        assert pg.query(columns_sql) == columns
        assert table_rows(pg) == before
        for t in TABLES:
            assert [r[0] for r in where_rows(pg, t, name)][0] == part(t, far), t
            assert pg.query(f"SELECT count(*) FROM {t}_default") == [["0"]]
        assert api.incr(name, 1).status == 200
        wait_persisted(pg, kafka)
        assert pg.total(name) == 6
    finally:
        delete_rows(pg, name, before=month_start(utc_today(), -1))
        # its own partition, empty now, goes too (on whichever layout)
        for t in TABLES:
            pg.query(f"DROP TABLE IF EXISTS {part(t, far)}")
        ok(ctl("migrate", "up"))
        ok(ctl("partitions"))
        put_back_big_sums(pg)

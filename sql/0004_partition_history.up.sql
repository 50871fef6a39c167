-- History tables partitioned by time (issue 8).
--
-- counter_daily, counter_unique_users and counter_hll by their local day,
-- counter_buckets by its UTC minute: RANGE partitions of one calendar month
-- each (UTC months for counter_buckets), named <table>_pYYYYMM, plus a
-- DEFAULT partition <table>_default. Retention then drops a whole month
-- (DROP TABLE: no dead rows, no vacuum) instead of deleting row by row.
--
-- Why a month: a history query spans minutes to weeks, so it touches one
-- or two partitions; a year is a dozen tables; and the retentions are
-- counted in days, which a month rounds at most 31 days up.
--
-- The DEFAULT partition takes any row whose month has no partition yet
-- (maintenance has not run, or a late or odd event time), so a write never
-- fails for want of a partition. `counterctl partitions` (which calls
-- counter_partitions_maintain below) creates the months ahead, moves rows
-- that landed in DEFAULT into their own month, and drops the months older
-- than the retention.
--
-- Every unique key the persister's ON CONFLICT names already holds the
-- partition key ((name, day), (name, bucket_start), (name, day, user_id)),
-- so its statements are unchanged. applied_event_ids is not partitioned:
-- its key (name, id) is what detects a repeated event id, and a partition
-- key would have to join that key, which would let one id count twice.
--
-- The old tables' rows are copied into the new ones, in this migration's
-- transaction; the old tables are then dropped.

-- The functions keep the search path of the migration (SET search_path
-- FROM CURRENT), so that those of a schema other than public (counterctl
-- rebuild-postgres migrates counter_rebuild) call each other, whatever the
-- caller's path.

-- The partitioned table p_table (in its own schema) and its key column,
-- the key's type (date or timestamptz) and its DEFAULT partition.
CREATE FUNCTION counter_partition_info(p_table regclass,
    OUT schema_name text, OUT table_name text, OUT key_column text,
    OUT key_type regtype, OUT default_name text, OUT columns text)
LANGUAGE plpgsql STABLE SET search_path FROM CURRENT AS $fn$
BEGIN
    SELECT n.nspname, c.relname, a.attname, a.atttypid::regtype, d.relname
      INTO schema_name, table_name, key_column, key_type, default_name
      FROM pg_partitioned_table pt
      JOIN pg_class c ON c.oid = pt.partrelid
      JOIN pg_namespace n ON n.oid = c.relnamespace
      JOIN pg_attribute a ON a.attrelid = pt.partrelid
                         AND a.attnum = pt.partattrs[0]
      LEFT JOIN pg_class d ON d.oid = pt.partdefid
     WHERE pt.partrelid = p_table AND pt.partstrat = 'r'
       AND pt.partnatts = 1;
    IF NOT FOUND THEN
        RAISE EXCEPTION '% is not partitioned by range of one column',
            p_table;
    END IF;
    IF key_type NOT IN ('date'::regtype, 'timestamptz'::regtype) THEN
        RAISE EXCEPTION '% is partitioned by %, a %, not by a date or '
            'timestamptz', p_table, key_column, key_type;
    END IF;
    IF default_name IS NULL THEN
        RAISE EXCEPTION '% has no DEFAULT partition', p_table;
    END IF;
    SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum)
      INTO columns
      FROM pg_attribute
     WHERE attrelid = p_table AND attnum > 0 AND NOT attisdropped;
END
$fn$;

-- A partition bound as the key's SQL literal: the month start m as a date,
-- or as that UTC midnight for a timestamptz key.
CREATE FUNCTION counter_partition_literal(p_type regtype, m date)
RETURNS text LANGUAGE sql IMMUTABLE AS $fn$
    SELECT CASE WHEN p_type = 'date'::regtype
                THEN quote_literal(m::text) || '::date'
                ELSE quote_literal(m::text || ' 00:00:00+00') || '::timestamptz'
           END
$fn$;

-- The key expression whose UTC date is compared with month starts.
CREATE FUNCTION counter_partition_key_date(p_type regtype, p_column text)
RETURNS text LANGUAGE sql IMMUTABLE AS $fn$
    SELECT CASE WHEN p_type = 'date'::regtype THEN quote_ident(p_column)
                ELSE '(' || quote_ident(p_column) || ' AT TIME ZONE ''UTC'')'
           END
$fn$;

-- Creates the partition of month p_month (its first day) of p_table and
-- moves into it the rows of that month held by the DEFAULT partition; with
-- p_dry_run only counts them. Returns the rows moved (or to move).
--
-- PostgreSQL refuses to create a partition while DEFAULT holds rows of its
-- range, so the partition is built apart (LIKE the parent), the rows are
-- moved into it (DELETE ... RETURNING feeding the INSERT: no row is ever in
-- neither or both), and it is attached; all in the caller's transaction.
CREATE FUNCTION counter_partition_add(p_table regclass, p_month date,
    p_dry_run boolean) RETURNS bigint
LANGUAGE plpgsql SET search_path FROM CURRENT AS $fn$
DECLARE
    t record;
    lo text;
    hi text;
    part text;
    moved bigint;
BEGIN
    SELECT * INTO t FROM counter_partition_info(p_table);
    IF p_month <> date_trunc('month', p_month)::date THEN
        RAISE EXCEPTION 'partition month % is not the first of a month',
            p_month;
    END IF;
    lo := counter_partition_literal(t.key_type, p_month);
    hi := counter_partition_literal(t.key_type,
                                    (p_month + interval '1 month')::date);
    part := format('%I.%I', t.schema_name,
                   t.table_name || '_p' || to_char(p_month, 'YYYYMM'));
    IF p_dry_run THEN
        EXECUTE format('SELECT count(*) FROM %I.%I WHERE %I >= %s AND %I < %s',
                       t.schema_name, t.default_name, t.key_column, lo,
                       t.key_column, hi)
           INTO moved;
        RETURN moved;
    END IF;
    EXECUTE format('CREATE TABLE %s (LIKE %s INCLUDING ALL)', part, p_table);
    EXECUTE format('WITH m AS (DELETE FROM %I.%I WHERE %I >= %s AND %I < %s '
                   'RETURNING %s) INSERT INTO %s (%s) SELECT %s FROM m',
                   t.schema_name, t.default_name, t.key_column, lo,
                   t.key_column, hi, t.columns, part, t.columns, t.columns);
    GET DIAGNOSTICS moved = ROW_COUNT;
    EXECUTE format('ALTER TABLE %s ATTACH PARTITION %s FOR VALUES FROM (%s) '
                   'TO (%s)', p_table, part, lo, hi);
    RETURN moved;
END
$fn$;

-- The maintenance of one partitioned history table, in the caller's
-- transaction (which should hold no other locks: this one takes the table
-- in ACCESS EXCLUSIVE mode unless p_dry_run). "Today" is the UTC date.
--
--   drop    each partition (but DEFAULT) whose range ends on or before the
--           cutoff, today - p_retain_days (p_retain_days 0: keep forever);
--           row_count = its rows
--   purge   rows of DEFAULT in the months wholly before the cutoff, deleted
--           (the rows a dropped month would have held)
--   create  each month from this one to p_ahead months ahead, and each
--           other month DEFAULT holds rows of (not past the cutoff), that no
--           partition covers; row_count = rows moved out of DEFAULT into it
--   status  last row: partition_name = the DEFAULT partition, row_count =
--           the rows it holds afterwards, range_from = the cutoff (NULL:
--           keep forever)
--
-- Ranges are [range_from, range_to) as text. With p_dry_run nothing is
-- changed and the rows say what would be done.
CREATE FUNCTION counter_partitions_maintain(p_table regclass,
    p_ahead integer, p_retain_days integer, p_dry_run boolean)
RETURNS TABLE (action text, partition_name text, range_from text,
               range_to text, row_count bigint)
LANGUAGE plpgsql SET search_path FROM CURRENT AS $fn$
DECLARE
    t record;
    p record;
    today date := (now() AT TIME ZONE 'UTC')::date;
    cutoff date;       -- rows before it are past the retention
    purge_before date; -- the first month start on or before the cutoff
    keydate text;
    m date;
    n bigint;
    pending bigint := 0; -- DEFAULT rows moved or deleted (dry run: not)
BEGIN
    IF p_ahead < 0 OR p_retain_days < 0 THEN
        RAISE EXCEPTION 'p_ahead and p_retain_days must not be negative';
    END IF;
    SELECT * INTO t FROM counter_partition_info(p_table);
    keydate := counter_partition_key_date(t.key_type, t.key_column);
    IF NOT p_dry_run THEN
        EXECUTE format('LOCK TABLE %s IN ACCESS EXCLUSIVE MODE', p_table);
    END IF;
    IF p_retain_days > 0 THEN
        cutoff := today - p_retain_days;
        purge_before := date_trunc('month', cutoff)::date;
    END IF;

    -- The partitions and their bounds as UTC dates (timestamps for a
    -- timestamptz key; MINVALUE/MAXVALUE as -infinity/infinity).
    CREATE TEMP TABLE IF NOT EXISTS counter_partition_bounds (
        name text, lo timestamp, hi timestamp) ON COMMIT DROP;
    TRUNCATE counter_partition_bounds;
    INSERT INTO counter_partition_bounds
    SELECT c.relname,
           CASE WHEN b[1] ~ '^''' THEN CASE WHEN t.key_type = 'date'::regtype
                THEN btrim(b[1], '''')::date::timestamp
                ELSE btrim(b[1], '''')::timestamptz AT TIME ZONE 'UTC' END
                ELSE '-infinity'::timestamp END,
           CASE WHEN b[2] ~ '^''' THEN CASE WHEN t.key_type = 'date'::regtype
                THEN btrim(b[2], '''')::date::timestamp
                ELSE btrim(b[2], '''')::timestamptz AT TIME ZONE 'UTC' END
                ELSE 'infinity'::timestamp END
      FROM pg_inherits i
      JOIN pg_class c ON c.oid = i.inhrelid
      CROSS JOIN LATERAL regexp_match(pg_get_expr(c.relpartbound, c.oid),
                                      '^FOR VALUES FROM \((.*)\) TO \((.*)\)$') b
     WHERE i.inhparent = p_table AND b IS NOT NULL; -- not DEFAULT

    IF cutoff IS NOT NULL THEN
        FOR p IN SELECT * FROM counter_partition_bounds
                  WHERE hi <= cutoff::timestamp ORDER BY lo LOOP
            EXECUTE format('SELECT count(*) FROM %I.%I', t.schema_name, p.name)
               INTO n;
            IF NOT p_dry_run THEN
                EXECUTE format('DROP TABLE %I.%I', t.schema_name, p.name);
            END IF;
            action := 'drop';
            partition_name := p.name;
            range_from := p.lo::date::text;
            range_to := p.hi::date::text;
            row_count := n;
            RETURN NEXT;
        END LOOP;

        EXECUTE format('SELECT count(*) FROM %I.%I WHERE %s < %L::date',
                       t.schema_name, t.default_name, keydate, purge_before)
           INTO n;
        IF n > 0 THEN
            IF NOT p_dry_run THEN
                EXECUTE format('DELETE FROM %I.%I WHERE %s < %L::date',
                               t.schema_name, t.default_name, keydate,
                               purge_before);
            END IF;
            pending := pending + n;
            action := 'purge';
            partition_name := t.default_name;
            range_from := NULL;
            range_to := purge_before::text;
            row_count := n;
            RETURN NEXT;
        END IF;
    END IF;

    FOR m IN
        EXECUTE format(
            'SELECT DISTINCT date_trunc(''month'', %s)::date FROM %I.%I '
            'WHERE %L::date IS NULL OR %s >= %L::date '
            'UNION SELECT (date_trunc(''month'', %L::date) '
            '              + make_interval(months => g))::date '
            '  FROM generate_series(0, %s) g ORDER BY 1',
            keydate, t.schema_name, t.default_name, purge_before, keydate,
            purge_before, today, p_ahead)
    LOOP
        CONTINUE WHEN EXISTS (
            SELECT 1 FROM counter_partition_bounds
             WHERE lo < (m + interval '1 month') AND hi > m::timestamp
               AND (cutoff IS NULL OR hi > cutoff::timestamp));
        n := counter_partition_add(p_table, m, p_dry_run);
        pending := pending + n;
        action := 'create';
        partition_name := t.table_name || '_p' || to_char(m, 'YYYYMM');
        range_from := m::text;
        range_to := (m + interval '1 month')::date::text;
        row_count := n;
        RETURN NEXT;
    END LOOP;

    EXECUTE format('SELECT count(*) FROM %I.%I', t.schema_name, t.default_name)
       INTO n;
    action := 'status';
    partition_name := t.default_name;
    range_from := cutoff::text;
    range_to := NULL;
    row_count := CASE WHEN p_dry_run THEN n - pending ELSE n END;
    RETURN NEXT;
END
$fn$;

-- The tables, converted one by one: rename the old, create the new with
-- its DEFAULT partition and a partition for each month the old one holds
-- (so that the copy leaves DEFAULT empty), copy, drop the old.
ALTER TABLE counter_daily RENAME TO counter_daily_0003;
ALTER INDEX counter_daily_pkey RENAME TO counter_daily_0003_pkey;
CREATE TABLE counter_daily (
    name          text        NOT NULL,
    day           date        NOT NULL,
    value         bigint      NOT NULL,
    last_event_ms bigint      NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (name, day)
) PARTITION BY RANGE (day);
CREATE TABLE counter_daily_default PARTITION OF counter_daily DEFAULT;
SELECT counter_partition_add('counter_daily', m, false)
  FROM (SELECT DISTINCT date_trunc('month', day)::date AS m
          FROM counter_daily_0003 ORDER BY 1) s;
INSERT INTO counter_daily (name, day, value, last_event_ms, updated_at)
SELECT name, day, value, last_event_ms, updated_at FROM counter_daily_0003;
DROP TABLE counter_daily_0003;

ALTER TABLE counter_buckets RENAME TO counter_buckets_0003;
ALTER INDEX counter_buckets_pkey RENAME TO counter_buckets_0003_pkey;
CREATE TABLE counter_buckets (
    name         text        NOT NULL,
    bucket_start timestamptz NOT NULL,
    value        bigint      NOT NULL,
    PRIMARY KEY (name, bucket_start)
) PARTITION BY RANGE (bucket_start);
CREATE TABLE counter_buckets_default PARTITION OF counter_buckets DEFAULT;
SELECT counter_partition_add('counter_buckets', m, false)
  FROM (SELECT DISTINCT date_trunc('month', bucket_start AT TIME ZONE 'UTC')::date
               AS m FROM counter_buckets_0003 ORDER BY 1) s;
INSERT INTO counter_buckets (name, bucket_start, value)
SELECT name, bucket_start, value FROM counter_buckets_0003;
DROP TABLE counter_buckets_0003;

ALTER TABLE counter_unique_users RENAME TO counter_unique_users_0003;
ALTER INDEX counter_unique_users_pkey RENAME TO counter_unique_users_0003_pkey;
CREATE TABLE counter_unique_users (
    name          text   NOT NULL,
    day           date   NOT NULL,
    user_id       text   NOT NULL,
    first_seen_ms bigint NOT NULL,
    PRIMARY KEY (name, day, user_id)
) PARTITION BY RANGE (day);
CREATE TABLE counter_unique_users_default PARTITION OF counter_unique_users
    DEFAULT;
SELECT counter_partition_add('counter_unique_users', m, false)
  FROM (SELECT DISTINCT date_trunc('month', day)::date AS m
          FROM counter_unique_users_0003 ORDER BY 1) s;
INSERT INTO counter_unique_users (name, day, user_id, first_seen_ms)
SELECT name, day, user_id, first_seen_ms FROM counter_unique_users_0003;
DROP TABLE counter_unique_users_0003;

ALTER TABLE counter_hll RENAME TO counter_hll_0003;
ALTER INDEX counter_hll_pkey RENAME TO counter_hll_0003_pkey;
CREATE TABLE counter_hll (
    name      text   NOT NULL,
    day       date   NOT NULL,
    registers bytea  NOT NULL,
    estimate  bigint NOT NULL,
    PRIMARY KEY (name, day)
) PARTITION BY RANGE (day);
CREATE TABLE counter_hll_default PARTITION OF counter_hll DEFAULT;
SELECT counter_partition_add('counter_hll', m, false)
  FROM (SELECT DISTINCT date_trunc('month', day)::date AS m
          FROM counter_hll_0003 ORDER BY 1) s;
INSERT INTO counter_hll (name, day, registers, estimate)
SELECT name, day, registers, estimate FROM counter_hll_0003;
DROP TABLE counter_hll_0003;

-- This month and the next three, so that writes find their partition even
-- before the first `counterctl partitions` run.
SELECT counter_partitions_maintain(t, 3, 0, false)
  FROM unnest(ARRAY['counter_daily', 'counter_buckets', 'counter_unique_users',
                    'counter_hll']::regclass[]) t;

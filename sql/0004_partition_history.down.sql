-- Back to plain tables (the layout of 0002): each partitioned table is
-- renamed, a plain one created as before, every row (of every partition
-- and DEFAULT) copied, and the partitioned table dropped with its
-- partitions; then the maintenance functions.
ALTER TABLE counter_daily RENAME TO counter_daily_0004;
ALTER INDEX counter_daily_pkey RENAME TO counter_daily_0004_pkey;
CREATE TABLE counter_daily (
    name          text        NOT NULL,
    day           date        NOT NULL,
    value         bigint      NOT NULL,
    last_event_ms bigint      NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (name, day)
);
INSERT INTO counter_daily (name, day, value, last_event_ms, updated_at)
SELECT name, day, value, last_event_ms, updated_at FROM counter_daily_0004;
DROP TABLE counter_daily_0004;

ALTER TABLE counter_buckets RENAME TO counter_buckets_0004;
ALTER INDEX counter_buckets_pkey RENAME TO counter_buckets_0004_pkey;
CREATE TABLE counter_buckets (
    name         text        NOT NULL,
    bucket_start timestamptz NOT NULL,
    value        bigint      NOT NULL,
    PRIMARY KEY (name, bucket_start)
);
INSERT INTO counter_buckets (name, bucket_start, value)
SELECT name, bucket_start, value FROM counter_buckets_0004;
DROP TABLE counter_buckets_0004;

ALTER TABLE counter_unique_users RENAME TO counter_unique_users_0004;
ALTER INDEX counter_unique_users_pkey RENAME TO counter_unique_users_0004_pkey;
CREATE TABLE counter_unique_users (
    name          text   NOT NULL,
    day           date   NOT NULL,
    user_id       text   NOT NULL,
    first_seen_ms bigint NOT NULL,
    PRIMARY KEY (name, day, user_id)
);
INSERT INTO counter_unique_users (name, day, user_id, first_seen_ms)
SELECT name, day, user_id, first_seen_ms FROM counter_unique_users_0004;
DROP TABLE counter_unique_users_0004;

ALTER TABLE counter_hll RENAME TO counter_hll_0004;
ALTER INDEX counter_hll_pkey RENAME TO counter_hll_0004_pkey;
CREATE TABLE counter_hll (
    name      text   NOT NULL,
    day       date   NOT NULL,
    registers bytea  NOT NULL,
    estimate  bigint NOT NULL,
    PRIMARY KEY (name, day)
);
INSERT INTO counter_hll (name, day, registers, estimate)
SELECT name, day, registers, estimate FROM counter_hll_0004;
DROP TABLE counter_hll_0004;

DROP FUNCTION counter_partitions_maintain(regclass, integer, integer, boolean);
DROP FUNCTION counter_partition_add(regclass, date, boolean);
DROP FUNCTION counter_partition_key_date(regtype, text);
DROP FUNCTION counter_partition_literal(regtype, date);
DROP FUNCTION counter_partition_info(regclass);

-- Per local day values of every counter (in the counter's time zone):
-- the live window of daily counters, and the archive of closed days.
CREATE TABLE counter_daily (
    name          text        NOT NULL,
    day           date        NOT NULL,
    value         bigint      NOT NULL,
    last_event_ms bigint      NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (name, day)
);

-- History: the sum of applied deltas per minute (UTC minute start); hours
-- and days are computed from these. Dropped after the counter's retention.
CREATE TABLE counter_buckets (
    name         text        NOT NULL,
    bucket_start timestamptz NOT NULL,
    value        bigint      NOT NULL,
    PRIMARY KEY (name, bucket_start)
);

-- Exact unique counting: one row per counter, local day and user. A user
-- counts on the day's first row; later events of that user that day find
-- the row and count nothing. Dropped after the counter's retention.
CREATE TABLE counter_unique_users (
    name          text   NOT NULL,
    day           date   NOT NULL,
    user_id       text   NOT NULL,
    first_seen_ms bigint NOT NULL,
    PRIMARY KEY (name, day, user_id)
);

-- Approximate unique counting (dedup: hll): HyperLogLog registers per
-- counter and local day (4096 one-byte registers), and their estimate.
CREATE TABLE counter_hll (
    name      text   NOT NULL,
    day       date   NOT NULL,
    registers bytea  NOT NULL,
    estimate  bigint NOT NULL,
    PRIMARY KEY (name, day)
);

-- Exact sums (issue 15). A sum of int64 deltas can pass the int64 range
-- where Redis holds no single value that does: a daily counter's
-- all-time total (the sum of its windows), a non-reset counter's day (its
-- net change that day, up to twice the range), a minute bucket (late
-- events land in earlier minutes while the live value stays in range, so
-- any number of them). bigint refused such a sum ("bigint out of range").
-- These columns are numeric: any integer, exact. Changing the type
-- rewrites the tables (and every partition), in this migration's
-- transaction.
--
-- The ranges of every column are in docs/data-model.md.
ALTER TABLE counter_totals ALTER COLUMN value TYPE numeric;
ALTER TABLE counter_daily ALTER COLUMN value TYPE numeric;
ALTER TABLE counter_buckets ALTER COLUMN value TYPE numeric;

-- Back to bigint sums: fails (and changes nothing) while any sum lies
-- outside the int64 range; such rows must be settled by hand first.
ALTER TABLE counter_buckets ALTER COLUMN value TYPE bigint;
ALTER TABLE counter_daily ALTER COLUMN value TYPE bigint;
ALTER TABLE counter_totals ALTER COLUMN value TYPE bigint;

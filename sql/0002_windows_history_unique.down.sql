DROP TABLE counter_hll;
DROP TABLE counter_unique_users;
DROP TABLE counter_buckets;
DROP TABLE counter_daily;

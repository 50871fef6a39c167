DROP TABLE consumer_offsets;
DROP TABLE counter_totals;

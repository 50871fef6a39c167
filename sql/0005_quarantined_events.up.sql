-- Messages the persister quarantined (issue 15): PostgreSQL refused what
-- they would add (a constraint, a value out of a column's range, a
-- limit), so they went to the dead-letter topic with the reason and only
-- their offset advanced, in the transaction of the batch that passed
-- them. A replay (counterctl rebuild-postgres) skips the same messages,
-- so the tables stay a function of the log and this list. Kept as long
-- as the log may be replayed: rows are few.
CREATE TABLE quarantined_events (
    group_id       text        NOT NULL,
    topic          text        NOT NULL,
    partition      integer     NOT NULL,
    "offset"       bigint      NOT NULL,
    reason         text        NOT NULL,
    quarantined_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (group_id, topic, partition, "offset")
);

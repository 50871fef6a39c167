-- Running totals per counter, folded in by counter-persister.
CREATE TABLE counter_totals (
    name          text        PRIMARY KEY,
    value         bigint      NOT NULL,
    last_event_ms bigint      NOT NULL,  -- newest event time counted
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- Where each consumer group stands in each partition. Written in the same
-- transaction as the rows it accounts for, which is what makes the
-- persister exactly-once: Kafka's own committed offsets are informational.
CREATE TABLE consumer_offsets (
    group_id    text        NOT NULL,
    topic       text        NOT NULL,
    partition   integer     NOT NULL,
    next_offset bigint      NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (group_id, topic, partition)
);

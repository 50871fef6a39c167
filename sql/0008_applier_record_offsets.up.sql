-- The applier's records of external events (issue 20) name the event they
-- record (header "source": topic, partition, offset). One row per counter
-- and source partition holds the last source offset PostgreSQL counted: a
-- record counts only past it. The applier publishes a counter's records of
-- one partition in offset order, and again in that order after a crash,
-- so a copy always comes after its first and is recognised without a row
-- per event. Rows grow with counters, not with events; applied_event_ids
-- keeps only keyed writes (generation > 0) and records without a source.
CREATE TABLE applier_record_offsets (
    name        text        NOT NULL,
    topic       text        NOT NULL,
    partition   integer     NOT NULL,
    last_offset bigint      NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (name, topic, partition)
);

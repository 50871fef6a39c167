-- Ids of the applier's records of external events that PostgreSQL has
-- counted. The applier may publish a record twice (it crashed between
-- applying an event to Redis and hearing that its record was delivered);
-- the second finds its id here and counts nothing. Kept for the applier's
-- guard time (applier.guard_ttl_s), then dropped by the persister.
-- Ids are per counter, as the applier's guard is.
CREATE TABLE applied_event_ids (
    name    text        NOT NULL,
    id      text        NOT NULL,
    seen_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (name, id)
);

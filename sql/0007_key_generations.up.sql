-- An Idempotency-Key names one write from its first use (its generation,
-- ms since the epoch, set by the api in Redis and carried by the event's
-- "dedup" header) for idempotency_ttl_s. The same key used later is a new
-- write, in Redis and so here: an event counts once per (counter, id,
-- generation). The applier's records of external events have generation
-- 0 (their ids are the producers', deduplicated within applier.guard_ttl_s).
ALTER TABLE applied_event_ids ADD COLUMN gen bigint NOT NULL DEFAULT 0;
ALTER TABLE applied_event_ids DROP CONSTRAINT applied_event_ids_pkey;
ALTER TABLE applied_event_ids ADD PRIMARY KEY (name, id, gen);

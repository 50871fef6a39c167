-- Back to one row per (counter, id): the newest generation of each stays.
DELETE FROM applied_event_ids a USING applied_event_ids b
 WHERE a.name = b.name AND a.id = b.id AND a.gen < b.gen;
ALTER TABLE applied_event_ids DROP CONSTRAINT applied_event_ids_pkey;
ALTER TABLE applied_event_ids ADD PRIMARY KEY (name, id);
ALTER TABLE applied_event_ids DROP COLUMN gen;

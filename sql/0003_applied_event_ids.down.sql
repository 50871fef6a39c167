DROP TABLE applied_event_ids;

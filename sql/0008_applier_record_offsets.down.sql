DROP TABLE applier_record_offsets;

/*
 * rebuild.h - rebuilding a store from the log (G4 in DESIGN.md):
 * rebuild-postgres replays the topic into fresh tables beside the live
 * ones and compares them row for row; rebuild-redis restores Redis from
 * PostgreSQL plus the events after PostgreSQL's stored offsets.
 */
#ifndef COUNTER_CTL_REBUILD_H
#define COUNTER_CTL_REBUILD_H

#include "common/config.h"

/*
 * Replays the topic from the beginning into the schema counter_rebuild
 * (created afresh with the migrations in sql_dir), up to the live
 * persister's offsets, then compares every table with the live one.
 * Returns 0 if equal, 1 if not, 3 if PostgreSQL could not be reached, 2
 * on other errors. keep: leave the schema.
 */
int ctl_rebuild_postgres(const ctr_config *cfg, const char *sql_dir, int keep);

/*
 * Writes the values PostgreSQL holds into Redis (totals, the daily
 * windows and exact dedup sets still within the lateness), then applies
 * the events after PostgreSQL's stored offsets, and sets the applier's
 * fences so it does not apply again what the log already records. Run it
 * with the api and the applier stopped. Returns 0, 3 if Redis or
 * PostgreSQL could not be reached, or 2 on other errors.
 */
int ctl_rebuild_redis(const ctr_config *cfg);

#endif

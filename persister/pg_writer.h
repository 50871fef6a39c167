/*
 * pg_writer.h - the persister's PostgreSQL side: one transaction per batch that
 * adds the batch's totals and advances the stored offsets, fenced so that a
 * stale batch (from a member that lost its partitions while paused) rolls
 * back instead of counting twice. Blocking libpq; persister thread only.
 */
#ifndef COUNTER_PERSISTER_PG_WRITER_H
#define COUNTER_PERSISTER_PG_WRITER_H

#include "common/config.h"
#include "persister/batch.h"

#include <stddef.h>
#include <stdint.h>

typedef struct ps_sink ps_sink;

enum ps_sink_result {
    PS_SINK_OK = 0,
    PS_SINK_FENCED = 1, /* stored offsets moved: another member did it */
    /* PostgreSQL refused the batch's data (SQLSTATE class 21 cardinality,
     * 22 data exception, 23 integrity constraint, 54 program limit): the
     * same batch would be refused again; ps_sink_refusal says why */
    PS_SINK_REFUSED = 2,
    PS_SINK_ERROR = -1, /* connection or server error: retry later */
};

/* Creates the sink (not yet connected). NULL when out of memory. */
ps_sink *ps_sink_new(const ctr_config *cfg) __attribute__((warn_unused_result));
void ps_sink_free(ps_sink *s);

/* The same, writing to the tables of `schema` (a plain identifier), for
 * replays that rebuild PostgreSQL beside the live tables. */
ps_sink *ps_sink_new_in_schema(const ctr_config *cfg, const char *schema)
    __attribute__((warn_unused_result));

/*
 * Reads the stored next offsets of the given partitions into next[i]
 * (-1 where none is stored). Connects if needed. Returns 0 or -1.
 */
int ps_sink_load_offsets(ps_sink *s, const char *topic,
                         const int32_t *partitions, size_t n, int64_t *next)
    __attribute__((warn_unused_result));

/*
 * Commits batch b in one transaction. expected[i] is the stored offset the
 * caller believes partition ps_batch_partition_at(b, i) has (-1: no row).
 * Connects if needed.
 */
enum ps_sink_result ps_sink_commit(ps_sink *s, const char *topic,
                                   const ps_batch *b, const int64_t *expected)
    __attribute__((warn_unused_result));

/*
 * Why the last commit was PS_SINK_REFUSED: "SQLSTATE: message" as
 * PostgreSQL gave it, on one line. Valid until the next commit; read it on
 * the thread that called ps_sink_commit, or after ps_committer_wait.
 */
const char *ps_sink_refusal(const ps_sink *s);

/* Whether SQLSTATE `state` (five characters) is one of PS_SINK_REFUSED's
 * classes. */
int ps_sink_refused_state(const char *state);

/*
 * Drops history buckets, unique rows and HLL registers older than each
 * counter's retention_days (daily values, the archive, are kept). Returns
 * the rows deleted, or -1.
 */
long ps_sink_apply_retention(ps_sink *s, int64_t now_ms);

#endif

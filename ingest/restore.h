/*
 * restore.h - rebuilding Redis from PostgreSQL and the log (G4), shared by
 * `counterctl rebuild-redis` and the applier, which runs it by itself when
 * it finds a Redis without the epoch key (restarted without its data).
 * Also the synchronous helpers both need: the epoch check, a Kafka reader
 * outside any group, and the persister's stored offsets (Redis
 * connections: ingest/rclient.h).
 */
#ifndef COUNTER_INGEST_RESTORE_H
#define COUNTER_INGEST_RESTORE_H

#include "common/config.h"
#include "ingest/rclient.h"

#include <hiredis/hiredis.h>
#include <libpq-fe.h>
#include <librdkafka/rdkafka.h>
#include <stddef.h>
#include <stdint.h>

/* Present once a Redis data set is whole: set by the restore, checked by
 * the api (api/redis_store.c) and the applier before they use Redis. The
 * ":2" is the layout of the counter keys (2: value and stamp as two
 * strings; 1, the plain "counter:epoch": one hash): a Redis written in an
 * older layout has no such key and is restored, not misread. */
#define CTR_EPOCH_KEY "counter:epoch:2"
/* The layout-1 epoch, removed by a restore so that an older version run
 * again restores too instead of reading strings as hashes. */
#define CTR_EPOCH_KEY_V1 "counter:epoch"
/* Held while one applier restores, so that two do not. */
#define CTR_RESTORE_LOCK_KEY "counter:restore-lock"

enum { CTR_MAX_PARTITIONS = 1024 };

/* 1 if the epoch key exists, 0 if not, -1 on error. */
int ctr_redis_epoch_present(ctr_rclient *c);

/* A consumer in group `group` that never commits, for reading partitions
 * by assignment. NULL with the reason in errbuf. */
rd_kafka_t *ctr_reader_new(const ctr_config *cfg, const char *group,
                           char *errbuf, size_t errlen)
    __attribute__((warn_unused_result));

/* Unassigns, closes and destroys a reader; rk may be NULL. */
void ctr_reader_free(rd_kafka_t *rk);

/* The topic's partition count (at most CTR_MAX_PARTITIONS), or -1. */
int ctr_topic_partitions(rd_kafka_t *rk, const char *topic);

/* The persister's next offsets per partition (0 where none) from the
 * consumer_offsets table of `schema`. 0, or -1 with errbuf. */
int ctr_persister_offsets(PGconn *conn, const ctr_config *cfg,
                          const char *schema, int nparts, int64_t *next,
                          char *errbuf, size_t errlen);

typedef struct ctr_restore_stats {
    long values;   /* totals, windows and dedup members from PostgreSQL */
    long guards;   /* event ids PostgreSQL counted, remembered again */
    long replayed; /* logged events after PostgreSQL's offsets */
} ctr_restore_stats;

/*
 * Restores Redis: removes every counter key ({c:...}), then writes the
 * values PostgreSQL holds (totals, the daily windows
 * and exact dedup sets still within the lateness; read in one snapshot
 * with the persister's offsets), the guards of the event ids it counted
 * once per id, then the logged events after its offsets (the api's and
 * the applier's records), and finally sets the epoch key. Nothing may
 * write to Redis meanwhile: the api does not while the epoch key is
 * missing, the applier is the caller (or stopped, for counterctl).
 * HyperLogLog registers are not restored. 0, or -1 with errbuf.
 */
int ctr_redis_restore(const ctr_config *cfg, ctr_rclient *c,
                      ctr_restore_stats *st, char *errbuf, size_t errlen)
    __attribute__((warn_unused_result));

#endif

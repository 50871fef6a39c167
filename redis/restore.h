/*
 * restore.h - rebuilding Redis from PostgreSQL and the log (G4), shared by
 * `counterctl rebuild-redis` and the applier, which runs it by itself when
 * it finds a Redis without the epoch key (restarted without its data).
 * Also the synchronous helpers both need: the epoch check, a Kafka reader
 * outside any group, and the persister's stored offsets (Redis
 * connections: redis/rclient.h).
 */
#ifndef COUNTER_REDIS_RESTORE_H
#define COUNTER_REDIS_RESTORE_H

#include "common/config.h"
#include "redis/apply.h"
#include "ingest/event.h"
#include "redis/rclient.h"

#include <hiredis/hiredis.h>
#include <libpq-fe.h>
#include <librdkafka/rdkafka.h>
#include <stddef.h>
#include <stdint.h>

/* The epoch keys of older layouts, removed by a restore so that an older
 * version run again restores too instead of misreading the keys:
 * "counter:epoch" (layout 1, a hash per counter), "counter:epoch:2"
 * (layout 2, no pending entries). Layout 3's markers: redis/apply.h. */
#define CTR_EPOCH_KEY_V1 "counter:epoch"
#define CTR_EPOCH_KEY_V2 "counter:epoch:2"
/* Held by the one restore that runs (redis/lock.lua: owner's token,
 * renewed while it works). */
#define CTR_RESTORE_LOCK_KEY "counter:restore-lock"
/* INCR'd by each restore: its generation, in its markers and its epoch
 * ("<gen>-<ms>-<random>"), so that an older restore never overwrites a
 * newer one's markers (redis/mark.lua). */
#define CTR_RESTORE_GEN_KEY "counter:restore-gen"
/* What a restore leaves owed, "<epoch>|<until ms>|<offset of partition
 * 0>,<of 1>,...": the api events logged from those offsets on that were
 * applied to the lost data set (their epoch header is not <epoch>) are to
 * be applied again, until librdkafka has given up on the last of them
 * (<until>). applier/tail.c pays it; a newer restore replaces it. */
#define CTR_TAIL_KEY "counter:restore-tail"

enum { CTR_MAX_PARTITIONS = 1024 };

/*
 * Whether the data set is whole: the epoch marker of one slot of each
 * master holds the same epoch (a master that lost its data lost all its
 * markers; a restore under way marks every slot "restoring:"). 1 whole
 * (the epoch copied to epoch), 0 not, -1 on error.
 */
int ctr_redis_epoch_get(ctr_rclient *c, char *epoch, size_t len)
    __attribute__((warn_unused_result));

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
 * Restores Redis. Takes the restore lock (another restore holding it: 1),
 * marks every slot "restoring:<token>" (writers keep off: their scripts
 * check the marker), removes every counter key ({c:...}), writes the
 * values PostgreSQL holds (totals, the daily windows and exact dedup sets
 * still within the lateness; read in one snapshot with the persister's
 * offsets), the guards of the event ids it counted once per id, then
 * applies the logged events after its offsets (the api's and the
 * applier's records) up to the end of the log as it was, and finally
 * sets every slot's marker to a new epoch, which the caller gets in
 * epoch (CTR_EPOCH_MAX bytes). Every write is fenced by the slot's marker
 * and the lock is renewed as it goes, so a restore that stalls past its
 * lock and is replaced stops at its next step and writes nothing into
 * the other's data set. An api event logged after that end but applied
 * to the data set that was lost is the applier's to apply again (its
 * epoch header names the old data set). HyperLogLog registers are not
 * restored. 0, or -1 with errbuf.
 */
#define CTR_EPOCH_MAX 64
int ctr_redis_restore(const ctr_config *cfg, ctr_rclient *c,
                      ctr_restore_stats *st, char *epoch, char *errbuf,
                      size_t errlen) __attribute__((warn_unused_result));

/*
 * Applies logged event ev (an api event or an applier record) to Redis
 * again with the write script sha: bounds off (the log holds what was
 * applied), its id guarded, epoch_want as in ctr_apply_spec. 0 done
 * (applied, or recognised as applied before), 1 skipped for the epoch
 * (none, or the one it names), -1 with errbuf.
 */
int ctr_restore_reapply(const ctr_config *cfg, ctr_rclient *c, const char *sha,
                        const ctr_event *ev, const char *epoch_want,
                        int64_t now, ctr_apply_result *res, char *errbuf,
                        size_t errlen) __attribute__((warn_unused_result));

#endif

/*
 * persister.h - counter-persister's state and the modules that share it
 * (private to the program): partitions.c follows the partitions it owns
 * (their stored offsets, the positions it consumes from, rebalances, the
 * resync after a fenced commit); flush.c commits a batch on the
 * committer's thread and takes its verdict (the offset fence, narrowing
 * down a batch PostgreSQL refused, quarantine, dead letters); main.c
 * reads the messages, folds them into the batch and serves the metrics.
 *
 * Single thread: rebalance callbacks run inside rd_kafka_consumer_poll on
 * it, so the batch and the offset table need no locks.
 */
#ifndef COUNTER_PERSISTER_PERSISTER_H
#define COUNTER_PERSISTER_PERSISTER_H

#include "common/config.h"
#include "common/metrics.h"
#include "ingest/producer.h"
#include "persister/batch.h"
#include "persister/committer.h"
#include "persister/fluctuation.h"
#include "persister/fold.h"
#include "persister/pg_writer.h"

#include <librdkafka/rdkafka.h>
#include <stddef.h>
#include <stdint.h>

enum {
    MAX_PARTS = 1024,
    BACKOFF_MAX_MS = 5000,
    RETENTION_FIRST_MS = 60 * 1000,
    RETENTION_EVERY_MS = 3600 * 1000,
    IDLE_WORK_EVERY_MS = 5,
    MAX_QUARANTINE = 16, /* messages found at fault, not yet passed */
};

/* A message PostgreSQL refused alone (see narrow), kept until the batch
 * that passes it is committed: it is skipped whenever it is read again. */
typedef struct quarantine_mark {
    int32_t partition;
    int64_t offset;
    int sent; /* dead-lettered, counted and logged already */
    char reason[600];
} quarantine_mark;

typedef struct persister {
    const ctr_config *cfg;
    rd_kafka_t *rk;
    ps_sink *sink;
    ps_batch *batch;
    int64_t batch_started_ms;
    /* the batch being committed on the committer's thread, while the next
     * one fills; NULL when none is */
    ps_committer *committer;
    ps_batch *in_flight, *spare;
    uint64_t resyncs; /* times the positions went back to the stored ones */
    /* stored next offset per assigned partition; -1: no row yet */
    size_t n_assigned;
    int32_t assigned[MAX_PARTS];
    int64_t committed[MAX_PARTS];
    uint64_t events_total, invalid_total, batches_total;
    uint64_t fenced_total, commit_errors_total;
    uint64_t reread_total; /* events read again after postgresql lost commits */
    ctr_histogram batch_events, commit_seconds;
    ctr_metrics_server *metrics;
    ps_fluct *fluct;        /* NULL if it could not be had */
    ctr_producer *producer; /* dead letters */
    int dlq_failed;
    /*
     * Narrowing down a batch PostgreSQL refused (see narrow): batches hold
     * at most `limit` messages (persister.batch_size when not narrowing);
     * the message found at fault is quarantined when it is read again.
     */
    size_t limit;
    size_t n_quarantine;
    quarantine_mark quarantine[MAX_QUARANTINE];
    uint64_t quarantined_total;
} persister;

/* partitions.c */
/* The stored next offset of an assigned partition (-1: no row yet), or
 * NULL if not assigned. */
int64_t *ps_committed_slot(persister *p, int32_t partition);
/* Loads the stored offsets of every assigned partition, retrying until it
 * works or a stop is asked for; 0 or -1 (stopping). */
int ps_load_offsets(persister *p);
/* The assigned partitions with their stored offsets as positions. */
rd_kafka_topic_partition_list_t *ps_positions(persister *p);
/* The consumer's rebalance callback (opaque: the persister). */
void ps_on_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                     rd_kafka_topic_partition_list_t *parts, void *opaque);
/* After a fenced commit: the batch forgotten, positions back to the
 * stored offsets (behind this member's own commits after a failover to a
 * standby that lacked them: logged and counted in reread_total). */
void ps_resync(persister *p);

/* flush.c */
/* The quarantine mark of the message at (partition, offset), or NULL. */
quarantine_mark *ps_quarantine_find(persister *p, int32_t partition,
                                    int64_t offset);
/* Takes the verdict of the batch in flight (waiting for it if final). */
void ps_finish_commit(persister *p, int may_retry, int final,
                      int64_t final_deadline_ms);
/* Hands the batch to the committer (final: and waits for it). */
void ps_flush_batch(persister *p, int final, int64_t final_deadline_ms);
/* ps_on_rebalance, once no commit is under way. */
void ps_on_rebalance_after_commit(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                                  rd_kafka_topic_partition_list_t *parts,
                                  void *opaque);
/* Feeds a committed batch to the fluctuation watch. */
void ps_watch_rates(persister *p, const ps_batch *b);
/* Copies msg to the dead-letter topic with the reason. */
void ps_dead_letter(persister *p, const rd_kafka_message_t *msg,
                    const char *reason);
/* A quarantined message read again: only its offset advances (the first
 * time it is dead-lettered, counted and logged). */
enum ps_fold_result ps_quarantine(persister *p, const rd_kafka_message_t *msg,
                                  quarantine_mark *m);

#endif

/*
 * applier.h - counter-applier's state, shared by its loop (main.c: the
 * consumer, Redis's connection, commits, metrics) and the application of
 * a consumed batch (batch.c). Single thread.
 */
#ifndef COUNTER_APPLIER_APPLIER_H
#define COUNTER_APPLIER_APPLIER_H

#include "applier/group_watch.h"
#include "applier/legacy.h"
#include "applier/resolver.h"
#include "applier/tail.h"
#include "common/config.h"
#include "common/metrics.h"
#include "ingest/producer.h"
#include "redis/apply.h"
#include "redis/rclient.h"
#include "redis/restore.h"

#include <librdkafka/rdkafka.h>
#include <stdint.h>

enum {
    COMMIT_EVERY_MS = 200,
    COMMIT_EVERY_MSGS = 100000,
    /* messages taken from the consumer at once: under a backlog of many
     * counters, more of each counter's events share one call */
    BATCH_MAX = 20000,
    RECORD_TIMEOUT_MS = 300000,
    REDIS_CHECK_EVERY_MS = 500,
    WAIT_REPLICAS_MS = 1000,
    BACKOFF_MAX_MS = 2000,
};

typedef struct applier {
    const ctr_config *cfg;
    rd_kafka_t *rk;
    ctr_producer *producer;
    ctr_rclient *redis;
    char sha[41], finish_sha[41], fold_sha[41];
    char epoch[CTR_EPOCH_MAX]; /* the data set's, last seen */
    int undelivered; /* records whose delivery failed since the last commit */
    size_t uncommitted;
    int64_t last_commit_ms;
    int64_t last_redis_check_ms;
    uint64_t applied, duplicates, refused, invalid, skipped;
    uint64_t restores;
    int wait_short_logged;
    ctr_histogram apply_seconds; /* a batch's Redis calls, retries included */
    ctr_histogram batch_events;  /* messages per batch */
    ctr_legacy *legacy;          /* bare events of kafka.topic, from before */
    int revoked; /* a rebalance took partitions while a batch filled */
    rd_kafka_topic_partition_list_t *revoked_parts;
    ctr_resolver *resolver;  /* pending writes nobody else settles */
    ctr_tail *tail;          /* what a restore left owed */
    ctr_group_watch *groups; /* the consumer groups' committed lag */
    ctr_metrics_server *metrics;
} applier;

/* main.c */

/* Drops the Redis connection; the next use reconnects (and restores a
 * data set that lost its epoch). */
void applier_redis_drop(applier *a);

/* Connects, loads the scripts and makes sure the data set is whole
 * (restoring it when it lost its epoch); 0, or -1 (logged once per
 * outage). */
int applier_redis_ready(applier *a);

/* Answers Prometheus and keeps the group watch current: from every loop
 * that waits. */
void applier_serve_metrics(applier *a);

/* Waits ms (cut short by a stop) while answering Prometheus every 50 ms:
 * a scrape times out in about a second, and Redis's retries back off to
 * two. */
void applier_wait_ms(applier *a, int ms);

/* 0 for the input topic, 1 for kafka.topic (its bare events, from before
 * the input topic). */
int applier_topic_index(const applier *a, const char *topic);

/* batch.c */

/* Applies a consumed batch of n messages to Redis, publishes their
 * records and stores their offsets (unless a stop came first). */
void applier_apply_batch(applier *a, rd_kafka_message_t **msgs, int n);

#endif

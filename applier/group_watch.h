/*
 * group_watch.h - the consumer groups of the topic (the persister's and
 * the applier's own) as Kafka sees them: for each partition this applier
 * owns, the offset the group last committed against the log's end (what
 * `kafka-consumer-groups.sh --describe` shows), and when the group last
 * made progress there.
 *
 * Why here and not in the persister's own metrics: a persister that stops
 * committing is stuck in its loop (a commit retried without end, a lock,
 * a frozen process), and its metrics port, served from that loop, stops
 * answering with it. The persister mirrors each PostgreSQL commit into
 * Kafka, so its progress can be read from outside. Each applier watches
 * the partitions assigned to it (of the input topic; for the persister,
 * the same numbers of kafka.topic, whose ends it asks the broker for), so
 * the appliers together cover the topics.
 *
 * Asynchronous: requests go out at most once a second per group and their
 * results come back on a queue of the watch's own, taken by
 * ctr_group_watch_step without waiting. Applier thread only.
 */
#ifndef COUNTER_APPLIER_GROUP_WATCH_H
#define COUNTER_APPLIER_GROUP_WATCH_H

#include "common/config.h"
#include "common/strbuf.h"

#include <librdkafka/rdkafka.h>

typedef struct ctr_group_watch ctr_group_watch;

/* Watches cfg's persister and applier groups through rk (the applier's
 * consumer, whose cached watermarks give the log's end). NULL when out of
 * memory. Freed before rk is destroyed. */
ctr_group_watch *ctr_group_watch_new(const ctr_config *cfg, rd_kafka_t *rk)
    __attribute__((warn_unused_result));
void ctr_group_watch_free(ctr_group_watch *w);

/* Takes the answers that arrived and sends the requests that are due;
 * never blocks. Call it from every loop that waits. */
void ctr_group_watch_step(ctr_group_watch *w);

/* The applier group's offset committed on partition p of the input topic
 * as the last answer said, or -1 (not known, never committed, or not a
 * partition of this applier's). */
int64_t ctr_group_watch_applier_committed(const ctr_group_watch *w, int p);

/* counter_kafka_group_lag and counter_kafka_group_progress_timestamp_seconds
 * {consumer, group, partition}, for the partitions of the last answers. */
void ctr_group_watch_render(const ctr_group_watch *w, ctr_strbuf *b);

#endif

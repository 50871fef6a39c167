/*
 * group_watch.h - the consumer groups of the topics (the persister's and
 * the applier's own), for each partition this applier owns: the offset the
 * group last committed against the log's end (what
 * `kafka-consumer-groups.sh --describe` shows), and when the group last
 * made progress there.
 *
 * Why here and not in the persister's own metrics: a persister that stops
 * committing is stuck in its loop (a commit retried without end, a lock,
 * a frozen process), and its metrics port, served from that loop, stops
 * answering with it. Each applier watches the partitions assigned to it
 * (of the input topic; for the persister, the same numbers of kafka.topic,
 * a counter's events and records keyed alike), so the appliers together
 * cover the topics.
 *
 * Nothing here asks Kafka's group coordinator: librdkafka 2.0.2 aborts
 * the process (an assertion in its admin requests' bookkeeping) when the
 * coordinator's connection drops while such a request is in flight, which
 * a broker restart does. So:
 * - the persister's committed offsets are read where the persister keeps
 *   them, PostgreSQL's consumer_offsets (written in the same transaction
 *   as the rows), by a thread of the watch's own with its own connection,
 *   once a second; the log's ends are asked of the partitions' leaders;
 * - the applier's own are those its commits were confirmed at (the
 *   consumer's offset commit callback, ctr_group_watch_committed), or,
 *   before its first commit since the partition came here, its position.
 *
 * The applier's part runs on the applier thread (ctr_group_watch_step);
 * the persister's on the watch's thread, its results under a lock.
 */
#ifndef COUNTER_APPLIER_GROUP_WATCH_H
#define COUNTER_APPLIER_GROUP_WATCH_H

#include "common/config.h"
#include "common/strbuf.h"

#include <librdkafka/rdkafka.h>

typedef struct ctr_group_watch ctr_group_watch;

/* Watches cfg's persister and applier groups for the partitions rk (the
 * applier's consumer, whose cached watermarks give the input topic's end)
 * owns. NULL when out of memory or the thread could not start. Freed
 * before rk is destroyed. */
ctr_group_watch *ctr_group_watch_new(const ctr_config *cfg, rd_kafka_t *rk)
    __attribute__((warn_unused_result));
void ctr_group_watch_free(ctr_group_watch *w);

/* The applier's offset commit callback's result: the offsets the broker
 * took. Applier thread. */
void ctr_group_watch_committed(ctr_group_watch *w, rd_kafka_resp_err_t err,
                               const rd_kafka_topic_partition_list_t *offsets);

/* Partitions came to this applier or left it: what it knew of their
 * commits is forgotten. Applier thread. */
void ctr_group_watch_moved(ctr_group_watch *w,
                           const rd_kafka_topic_partition_list_t *parts);

/* Updates the applier group's lag (at most once a second); never blocks.
 * Call it from every loop that waits. */
void ctr_group_watch_step(ctr_group_watch *w);

/* The applier group's offset on partition p of the input topic as this
 * applier's confirmed commits say, or -1 (none confirmed since p came
 * here, or not a partition of this applier's). */
int64_t ctr_group_watch_applier_committed(const ctr_group_watch *w, int p);

/* counter_kafka_group_lag and counter_kafka_group_progress_timestamp_seconds
 * {consumer, group, partition}, for the partitions known. */
void ctr_group_watch_render(ctr_group_watch *w, ctr_strbuf *b);

#endif

/*
 * consumer.h - the Kafka consumer both consumer groups (persister,
 * applier) start from: no auto commit and no automatic offset store (each
 * decides itself when a message is done), earliest offsets for a new group
 * (it must not skip history), committed reads only, a 10 s session,
 * cooperative-sticky assignment (a rebalance moves only the partitions that
 * change owner), and kafka.consumer.* settings passed through last.
 */
#ifndef COUNTER_INGEST_CONSUMER_H
#define COUNTER_INGEST_CONSUMER_H

#include "common/config.h"

#include "common/strbuf.h"

#include <librdkafka/rdkafka.h>
#include <stddef.h>

/* A rebalance callback, or an offset commit callback (the offsets the
 * broker took, or the error). */
typedef void (*ctr_consumer_cb)(rd_kafka_t *, rd_kafka_resp_err_t,
                                rd_kafka_topic_partition_list_t *, void *);

/*
 * Creates a consumer of group_id, not subscribed yet (see
 * ctr_consumer_subscribe), whose rebalance callback and commit callback
 * (may be NULL; both run inside rd_kafka_consumer_poll, on the caller's
 * thread) get opaque. Returns NULL with a reason in errbuf.
 */
rd_kafka_t *ctr_consumer_new(const ctr_config *cfg, const char *group_id,
                             ctr_consumer_cb rebalance_cb,
                             ctr_consumer_cb commit_cb, void *opaque,
                             char *errbuf, size_t errlen)
    __attribute__((warn_unused_result));

/* Subscribes rk to topics[0..n) (replacing what it was subscribed to).
 * 0, or -1 with a reason in errbuf. */
int ctr_consumer_subscribe(rd_kafka_t *rk, const char *const *topics, int n,
                           char *errbuf, size_t errlen)
    __attribute__((warn_unused_result));

/*
 * For the rebalance callback: takes on `parts` (newly assigned) or gives
 * them up (revoked), incrementally under the COOPERATIVE protocol, as the
 * whole assignment under EAGER (when kafka.consumer.* picks range or
 * roundrobin). Under EAGER, assign gets the whole new assignment and
 * unassign drops everything, which `parts` then is.
 */
void ctr_consumer_assign(rd_kafka_t *rk,
                         rd_kafka_topic_partition_list_t *parts);
void ctr_consumer_unassign(rd_kafka_t *rk,
                           rd_kafka_topic_partition_list_t *parts);

/*
 * The message's "origin" header ("api": applied by the api; "applier":
 * the applier's record of an external event) into out, or "" when it has
 * none (an external event not applied yet). Returns 1 if it has one.
 */
int ctr_message_origin(const rd_kafka_message_t *msg, char *out, size_t len);

/* The same for header `name`. */
int ctr_message_header(const rd_kafka_message_t *msg, const char *name,
                       char *out, size_t len);

/* Writes gauge `metric`{partition="N"}: per assigned partition of topic,
 * its cached high watermark minus the consumer's position. */
void ctr_consumer_render_lag(ctr_strbuf *b, rd_kafka_t *rk, const char *topic,
                             const char *metric);

#endif

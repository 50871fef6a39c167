/*
 * legacy.h - the bare events of kafka.topic, from a deployment that had no
 * input topic yet: external producers and the api's 202 writes went to
 * kafka.topic, mixed with the api's applied events. After an upgrade the
 * applier reads them there too, until they are drained, and then reads
 * kafka.input_topic only.
 *
 * How it knows (docs/events.md, "Moving to the input topic"):
 * - at start: the applier group has committed offsets on kafka.topic (an
 *   older applier read it) and not all of them carry the commit metadata
 *   "drained": read it. No committed offset there at all (a new
 *   deployment) or every one marked: do not.
 * - while reading: once no bare event came from kafka.topic for
 *   applier.legacy_quiet_s (counted from the start, from the last bare
 *   event and from the last assignment of a partition of it) and every
 *   partition of it assigned here is read to its end, this applier commits
 *   them with the metadata "drained". When every partition of kafka.topic
 *   is so marked, each applier stops reading it. A bare event arriving
 *   meanwhile moves its partition's offset again (without the mark), and
 *   the quiet time starts over.
 *
 * Applier thread only; the calls that ask the broker block up to a few
 * seconds. Committed offsets (with their metadata, of partitions not
 * assigned here too) can only come from the group coordinator; they are
 * asked through the consumer's own group (rd_kafka_committed, not an
 * admin request: librdkafka 2.0.2 aborted when a broker restart dropped
 * an admin request in flight) at start (retried for up to 30 s: a broker
 * just started may not have the group's coordinator yet, and not knowing
 * means reading kafka.topic for applier.legacy_quiet_s) and, while
 * kafka.topic is still read, every few seconds once it was quiet.
 */
#ifndef COUNTER_APPLIER_LEGACY_H
#define COUNTER_APPLIER_LEGACY_H

#include "common/config.h"

#include <librdkafka/rdkafka.h>

typedef struct ctr_legacy ctr_legacy;

/* Decides at start, through rk (the applier's consumer, not subscribed
 * yet), whether kafka.topic is still to be read. NULL when out of
 * memory. */
ctr_legacy *ctr_legacy_new(const ctr_config *cfg, rd_kafka_t *rk)
    __attribute__((warn_unused_result));
void ctr_legacy_free(ctr_legacy *l);

/* 1 while kafka.topic is read too. */
int ctr_legacy_reading(const ctr_legacy *l);

/* A bare event of kafka.topic was applied, or a partition of it came to
 * this applier: the quiet time starts over. */
void ctr_legacy_activity(ctr_legacy *l);

/*
 * Looks (at most every few seconds) whether the partitions assigned here
 * are drained, and marks them; `commit` (with arg) is called first, to
 * deliver the records and commit what was applied. Returns 1 once every
 * partition of kafka.topic is marked: the caller subscribes to the input
 * topic alone, and ctr_legacy_reading is 0 from then on.
 */
int ctr_legacy_step(ctr_legacy *l, void (*commit)(void *arg), void *arg);

#endif

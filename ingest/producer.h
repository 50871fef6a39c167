/*
 * producer.h - the Kafka producer for counter events: idempotent, acks=all,
 * key = counter name, murmur2 partitioning (the Java client's default, so
 * external producers in any language put a counter on the same partition).
 *
 * Delivery reports are served on the owner's libevent loop (librdkafka
 * signals a pipe when its queue becomes non-empty), so the callback runs on
 * the loop's thread and needs no locks.
 */
#ifndef COUNTER_INGEST_PRODUCER_H
#define COUNTER_INGEST_PRODUCER_H

#include "common/config.h"

#include <event2/event.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct ctr_producer ctr_producer;

enum ctr_delivery {
    CTR_DELIVERED = 0,
    /* definitely not in the log: safe to undo and report "not applied" */
    CTR_DELIVERY_FAILED = -1,
    /* timed out in flight: the broker may or may not have it */
    CTR_DELIVERY_UNKNOWN = -2,
};

/* Called exactly once per message that ctr_producer_send() accepted. */
typedef void (*ctr_producer_cb)(enum ctr_delivery result, void *arg);

/*
 * Creates the producer. With base non-NULL, delivery reports are served
 * from that loop; with base NULL the caller drives ctr_producer_poll().
 * Returns NULL with a reason in errbuf. Main thread.
 */
ctr_producer *ctr_producer_new(const ctr_config *cfg, struct event_base *base,
                               ctr_producer_cb cb, char *errbuf, size_t errlen)
    __attribute__((warn_unused_result));

/* The headers of one of our events (docs/events.md). */
#define CTR_HEADER_ORIGIN "origin"
/* Asks the persister to count the event once per (counter, event id,
 * generation): the event id is a client's Idempotency-Key, first used at
 * the generation (ms), and a retry may log it twice. */
#define CTR_HEADER_DEDUP "dedup"
/* The data set (epoch marker) an api event was applied to in Redis. */
#define CTR_HEADER_EPOCH "epoch"
/* On an applier's record: "<topic>:<partition>:<offset>", the event it
 * records, by which the persister counts it once (persister/pg_writer.c). */
#define CTR_HEADER_SOURCE "source"

typedef struct ctr_event_headers {
    /* "api": already applied to Redis by the api; "applier": the
     * applier's record of an external event it applied; NULL: none, the
     * applier is to apply it */
    const char *origin;
    int64_t dedup_gen; /* > 0: "dedup: <gen>" */
    const char *epoch; /* non-empty: "epoch: <epoch>" */
    /* non-NULL: "source: <topic>:<partition>:<offset>" */
    const char *source_topic;
    int32_t source_partition;
    int64_t source_offset;
} ctr_event_headers;

/*
 * Queues one event (the payload is copied) with headers h (NULL: none).
 * An event with an origin goes to kafka.topic; one without (not applied
 * yet: the applier is to apply it) to kafka.input_topic.
 * Returns 0, after which cb fires exactly once with arg, or a negative
 * value (queue full, producer failed) and cb never fires.
 */
int ctr_producer_send(ctr_producer *p, const char *key, size_t keylen,
                      const char *payload, size_t len,
                      const ctr_event_headers *h, void *arg)
    __attribute__((warn_unused_result));

/*
 * Copies a message that failed validation to the dead-letter topic
 * "<topic>.dlq", with headers error (the reason), source_partition and
 * source_offset. cb fires with arg as for ctr_producer_send.
 */
int ctr_producer_send_dlq(ctr_producer *p, const void *key, size_t keylen,
                          const void *payload, size_t len, const char *reason,
                          int32_t partition, int64_t offset, void *arg)
    __attribute__((warn_unused_result));

/* Serves delivery reports, waiting up to timeout_ms. */
void ctr_producer_poll(ctr_producer *p, int timeout_ms);

/* Waits up to timeout_ms for every queued message; returns how many are
 * still undelivered. Their callbacks have fired with a failure or will
 * fire when the producer is freed. */
int ctr_producer_flush(ctr_producer *p, int timeout_ms);

/* Messages queued or in flight. */
int ctr_producer_outq_len(ctr_producer *p);

/* 1 when the last statistics (every 500 ms, only with an event loop) found
 * no broker connection up, or librdkafka raised a fatal error that the
 * next poll has not yet answered with a new producer (an idempotent
 * producer out of sequence with a broker takes no more messages; the
 * messages of the old one are reported as when the producer is freed):
 * writes would only fail. */
int ctr_producer_brokers_down(const ctr_producer *p);

/* librdkafka's handle, for tests that inject its errors
 * (rd_kafka_test_fatal_error). Owned by p; a fatal error replaces it. */
struct rd_kafka_s *ctr_producer_kafka(ctr_producer *p);

/* Flushes briefly, then destroys; outstanding callbacks fire (as failed)
 * before it returns. p may be NULL. */
void ctr_producer_free(ctr_producer *p);

#endif

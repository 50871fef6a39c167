/*
 * batch.h - one batch of consumed events, aggregated for PostgreSQL: a sum
 * per counter (one upsert may touch a key only once, SQLSTATE 21000) and
 * the offset range consumed per partition. Pure data; no I/O.
 */
#ifndef COUNTER_PERSISTER_BATCH_H
#define COUNTER_PERSISTER_BATCH_H

#include "ingest/event.h"

#include <stddef.h>
#include <stdint.h>

typedef struct ps_batch ps_batch;

typedef struct ps_total {
    char name[CTR_NAME_MAX + 1];
    int64_t delta;         /* sum of the batch's deltas */
    int64_t last_event_ms; /* newest event time */
    int used;
} ps_total;

typedef struct ps_partition_range {
    int32_t partition;
    int64_t first_offset;
    int64_t last_offset;
} ps_partition_range;

/* Creates an empty batch for up to max_events events. NULL if out of
 * memory. */
ps_batch *ps_batch_new(size_t max_events) __attribute__((warn_unused_result));
void ps_batch_free(ps_batch *b);
void ps_batch_reset(ps_batch *b);

/* Messages consumed (valid or not) since the last reset. */
size_t ps_batch_messages(const ps_batch *b);

/*
 * Records the message at (partition, offset); ev is NULL for a message that
 * failed validation (its offset still advances). Returns 0, or -1 when the
 * sum would overflow int64 (the caller flushes and adds again).
 */
int ps_batch_add(ps_batch *b, int32_t partition, int64_t offset,
                 const ctr_event *ev) __attribute__((warn_unused_result));

/* Iteration over the per-counter totals (slots with used == 0 skipped). */
size_t ps_batch_total_slots(const ps_batch *b);
const ps_total *ps_batch_total_at(const ps_batch *b, size_t i);
size_t ps_batch_counters(const ps_batch *b);

/* The partitions touched, in first-seen order. */
size_t ps_batch_partitions(const ps_batch *b);
const ps_partition_range *ps_batch_partition_at(const ps_batch *b, size_t i);

#endif

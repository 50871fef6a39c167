/*
 * batch.h - one batch of consumed events, shaped for PostgreSQL:
 * - sums per counter (totals), per counter and local day (daily), and per
 *   counter and UTC minute (history buckets), each key once, since one
 *   upsert may touch a key only once (SQLSTATE 21000);
 * - the (counter, day, user) rows of exact unique counters, which
 *   PostgreSQL dedups itself;
 * - HyperLogLog registers per (counter, day) of approximate ones;
 * - the offset range consumed per partition.
 * Pure data; no I/O.
 */
#ifndef COUNTER_PERSISTER_BATCH_H
#define COUNTER_PERSISTER_BATCH_H

#include "common/counterdef.h"
#include "common/hll.h"
#include "ingest/event.h"

#include <stddef.h>
#include <stdint.h>

typedef struct ps_batch ps_batch;

enum ps_table { PS_TOTAL, PS_DAILY, PS_BUCKET };

/*
 * A sum of a batch's int64 deltas. A batch holds fewer than 2^63 events,
 * so 128 bits never overflow: every sum is exact and no event is ever
 * turned away for the sum it would make (PostgreSQL's columns for these
 * sums are numeric; see docs/data-model.md).
 */
typedef __int128 ps_sum_value;

typedef struct ps_sum {
    int used;
    enum ps_table table;
    char name[CTR_NAME_MAX + 1];
    ctr_date day;          /* PS_DAILY */
    int64_t minute_ms;     /* PS_BUCKET: start of the UTC minute */
    ps_sum_value delta;    /* sum of the batch's deltas */
    int64_t last_event_ms; /* newest event time */
} ps_sum;

typedef struct ps_unique_row {
    char name[CTR_NAME_MAX + 1];
    ctr_date day;
    char *user_id;
    int64_t ts_ms;
    /* the message's place in its batch: of two events of one user and
     * day, the one first in the log is the one that counts (its time is
     * the user's first sighting), whichever way it came */
    int64_t seq;
} ps_unique_row;

typedef struct ps_hll_group {
    char name[CTR_NAME_MAX + 1];
    ctr_date day;
    int64_t last_event_ms;
    uint8_t regs[CTR_HLL_REGISTERS]; /* this batch's users only */
} ps_hll_group;

typedef struct ps_partition_range {
    int32_t partition;
    int64_t first_offset;
    int64_t last_offset;
} ps_partition_range;

/* An empty batch for up to max_events events. NULL if out of memory. */
ps_batch *ps_batch_new(size_t max_events) __attribute__((warn_unused_result));
void ps_batch_free(ps_batch *b);
void ps_batch_reset(ps_batch *b);

/* Messages consumed (valid or not) since the last reset. */
size_t ps_batch_messages(const ps_batch *b);

/*
 * Records the message at (partition, offset). ev is NULL for a message
 * that failed validation (its offset still advances); otherwise def is
 * the counter's definition and day the local date of ev->ts_ms in its
 * zone. Returns 0, or -1 when the batch cannot take it: it holds
 * max_events messages or messages of 1024 partitions (the caller flushes
 * and adds again), or memory ran out. What it holds never refuses an
 * event: sums do not overflow and HLL groups grow as needed.
 */
int ps_batch_add(ps_batch *b, int32_t partition, int64_t offset,
                 const ctr_event *ev, const ctr_counter_def *def, ctr_date day)
    __attribute__((warn_unused_result));

/* ps_batch_add with the message's place in the batch given (seq, see
 * ps_unique_row) rather than taken as the next: a record counted later
 * keeps the place it had among the batch's messages. */
int ps_batch_add_as(ps_batch *b, int32_t partition, int64_t offset, int64_t seq,
                    const ctr_event *ev, const ctr_counter_def *def,
                    ctr_date day) __attribute__((warn_unused_result));

/* The event an applier record records (its "source" header). */
typedef struct ps_source {
    const char *topic;
    int32_t partition;
    int64_t offset;
} ps_source;

/*
 * Keeps a copy of an applier record (header "origin: applier") to be
 * counted only if it is new to PostgreSQL (the sink decides, inside the
 * batch's transaction): by its source (src non-NULL, copied: counted if
 * its offset is past every one counted before for the counter and that
 * partition), else by its event id and gen. Returns 0 or -1 as
 * ps_batch_add.
 */
int ps_batch_add_record(ps_batch *b, int32_t partition, int64_t offset,
                        const ctr_event *ev, const ctr_counter_def *def,
                        ctr_date day, int64_t gen, const ps_source *src)
    __attribute__((warn_unused_result));

typedef struct ps_record {
    ctr_event ev;       /* owned copy */
    int64_t gen;        /* an Idempotency-Key's generation; 0: none */
    char *source_topic; /* owned; NULL: counted by id (and gen) */
    int32_t source_partition;
    int64_t source_offset;
    int64_t seq; /* its place in the batch, as ps_unique_row.seq */
    const ctr_counter_def *def;
    ctr_date day;
} ps_record;

size_t ps_batch_records(const ps_batch *b);
const ps_record *ps_batch_record_at(const ps_batch *b, size_t i);

typedef struct ps_quarantined {
    int32_t partition;
    int64_t offset;
    char *reason; /* owned */
} ps_quarantined;

/*
 * Records the message at (partition, offset) as quarantined: PostgreSQL
 * refused what it would add, so only its offset advances, and the sink
 * lists it in quarantined_events with `reason` (copied) in the same
 * transaction. Returns 0 or -1 as ps_batch_add.
 */
int ps_batch_add_quarantined(ps_batch *b, int32_t partition, int64_t offset,
                             const char *reason)
    __attribute__((warn_unused_result));

size_t ps_batch_quarantined(const ps_batch *b);
const ps_quarantined *ps_batch_quarantined_at(const ps_batch *b, size_t i);

/* The sums: iterate 0..ps_batch_sum_slots()-1 (all used, in the order
 * they were first added; skipping unused ones stays harmless). */
size_t ps_batch_sum_slots(const ps_batch *b);
const ps_sum *ps_batch_sum_at(const ps_batch *b, size_t i);
size_t ps_batch_sums(const ps_batch *b, enum ps_table table);

size_t ps_batch_unique_rows(const ps_batch *b);
const ps_unique_row *ps_batch_unique_at(const ps_batch *b, size_t i);

size_t ps_batch_hll_groups(const ps_batch *b);
const ps_hll_group *ps_batch_hll_at(const ps_batch *b, size_t i);

/* The partitions touched, in first-seen order. */
size_t ps_batch_partitions(const ps_batch *b);
const ps_partition_range *ps_batch_partition_at(const ps_batch *b, size_t i);

#endif

/*
 * tail.h - what a restore leaves owed (CTR_TAIL_KEY, redis/restore.h):
 * the restore applied the log up to its end as it was then, but an api
 * write applied to the data set that was lost may reach the log later,
 * while librdkafka still tries it (up to kafka.message_timeout_ms). Its
 * event carries "origin: api", which the applier otherwise skips, and
 * the epoch of the lost data set. So one applier (a lock decides which;
 * the next takes over if it dies, from the offsets recorded) reads the log
 * on from the restore's end and applies again every api event that names
 * an epoch other than the new one (its id guarded, once; an event naming
 * none was never applied to a lost data set), until the time is up and
 * the log read to its end then. A newer restore makes the debt moot.
 *
 * Synchronous, on the applier's thread.
 */
#ifndef COUNTER_APPLIER_TAIL_H
#define COUNTER_APPLIER_TAIL_H

#include "common/config.h"
#include "redis/rclient.h"

#include <stdint.h>

typedef struct ctr_tail ctr_tail;

/* NULL when out of memory. */
ctr_tail *ctr_tail_new(const ctr_config *cfg)
    __attribute__((warn_unused_result));
void ctr_tail_free(ctr_tail *t);

/*
 * Looks for a debt (at most once a second while none) and, holding its
 * lock, applies a bounded stretch of it; epoch is the data set's now.
 * Returns the events applied again, 0 when nothing was owed or done, -1
 * when Redis or Kafka failed (tried again later).
 */
int ctr_tail_step(ctr_tail *t, ctr_rclient *c, const char *epoch);

/* The Redis client given to ctr_tail_step is a new one: its scripts are
 * to be loaded on it (once per client). */
void ctr_tail_new_connection(ctr_tail *t);

/* Events applied again since start. */
uint64_t ctr_tail_applied(const ctr_tail *t);

#endif

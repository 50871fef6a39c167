/*
 * resolver.h - settles the pending writes no api will: the entries of the
 * pending hashes (redis/apply.h) older than applier.resolve_after_ms,
 * by which time no verdict of the api that made one can still come
 * (librdkafka gave up on its event after kafka.message_timeout_ms). They
 * are what an api left when it died between its script and the log, lost
 * its Redis connection before the answer, heard "possibly persisted" from
 * Kafka, could not undo, or had a cluster write reach too few replicas.
 *
 * For each such entry, in one sweep: claim it (redis/claim.lua, so that
 * neither a late undo nor another applier acts on it meanwhile), look for
 * its event in the counter's partition of the log, from a minute before
 * the entry was made to the end of the log; found: finish it (the write is
 * whole); not found: publish it as the api would have (origin api, the
 * data set's epoch, a key's generation), wait for Kafka, then finish it.
 * A claim that is not finished (the applier died) is taken again after
 * the same time. Either way the write ends whole: in Redis and once in
 * the log (G3).
 *
 * Synchronous, on the applier's thread.
 */
#ifndef COUNTER_APPLIER_RESOLVER_H
#define COUNTER_APPLIER_RESOLVER_H

#include "common/config.h"
#include "redis/rclient.h"

#include <stdint.h>

typedef struct ctr_resolver ctr_resolver;

/* NULL when out of memory. */
ctr_resolver *ctr_resolver_new(const ctr_config *cfg)
    __attribute__((warn_unused_result));
void ctr_resolver_free(ctr_resolver *r);

typedef struct ctr_resolver_stats {
    uint64_t sweeps;    /* pending hashes looked through */
    uint64_t found;     /* entries whose event was in the log */
    uint64_t published; /* entries whose event was published */
    uint64_t failed;    /* claimed but not settled (retried later) */
} ctr_resolver_stats;

/*
 * Runs a sweep if applier.resolve_every_ms have passed since the last:
 * every pending hash of every master, on c; events published with a
 * producer of its own (delivery waited for); epoch is the data set's.
 * Returns the entries settled, or -1 when Redis or Kafka failed (the rest
 * waits for the next sweep).
 */
int ctr_resolver_step(ctr_resolver *r, ctr_rclient *c, const char *epoch);

/* The Redis client given to ctr_resolver_step is a new one: its scripts
 * are to be loaded on it (once per client). */
void ctr_resolver_new_connection(ctr_resolver *r);

void ctr_resolver_stats_get(const ctr_resolver *r, ctr_resolver_stats *out);

#endif

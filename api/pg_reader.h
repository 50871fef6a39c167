/*
 * pg_reader.h - the api's fallback reads from PostgreSQL (the persister's
 * totals), used when Redis cannot answer in time. Non-blocking libpq on the
 * api's libevent loop: one connection, requests queued in order, a deadline
 * on each. All on the loop's thread.
 */
#ifndef COUNTER_API_PG_READER_H
#define COUNTER_API_PG_READER_H

#include "common/config.h"

#include <event2/event.h>
#include <stddef.h>
#include <stdint.h>

typedef struct api_pg api_pg;

typedef struct api_pg_value {
    int exists;
    int64_t value;
    int64_t updated_ms; /* newest event time counted */
} api_pg_value;

/*
 * ok is 1 with values[] in the order asked (valid only during the call)
 * and as_of_ms the time the persister last committed (0 if never), or 0
 * when PostgreSQL could not answer in time.
 */
typedef void (*api_pg_get_cb)(int ok, const api_pg_value *values, size_t n,
                              int64_t as_of_ms, void *arg);

/* Creates the reader; it connects on first use. NULL + errbuf on failure. */
api_pg *api_pg_new(const ctr_config *cfg, struct event_base *base, char *errbuf,
                   size_t errlen) __attribute__((warn_unused_result));

/*
 * Reads n counters (names must be valid counter names). Returns 0 and cb
 * fires exactly once, or -1 (queue full, out of memory) and it never does.
 */
int api_pg_get(api_pg *pg, const char *const *names, size_t n, api_pg_get_cb cb,
               void *arg) __attribute__((warn_unused_result));

/* Closes; queued callbacks fire with ok 0 first. pg may be NULL. */
void api_pg_free(api_pg *pg);

#endif

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
#include <libpq-fe.h>
#include <stddef.h>
#include <stdint.h>

typedef struct api_pg api_pg;

/*
 * The result of one query: res is NULL when PostgreSQL could not answer in
 * time (or at all); otherwise it lives only during the call.
 */
typedef void (*api_pg_cb)(const PGresult *res, void *arg);

/* Creates the reader; it connects on first use. NULL + errbuf on failure. */
api_pg *api_pg_new(const ctr_config *cfg, struct event_base *base, char *errbuf,
                   size_t errlen) __attribute__((warn_unused_result));

/*
 * Queues one read-only query with text parameters (copied). Returns 0 and
 * cb fires exactly once, or -1 (queue full, out of memory) and it never
 * does.
 */
int api_pg_query(api_pg *pg, const char *sql, int nparams,
                 const char *const *params, api_pg_cb cb, void *arg)
    __attribute__((warn_unused_result));

/* Closes; queued callbacks fire with ok 0 first. pg may be NULL. */
void api_pg_free(api_pg *pg);

#endif

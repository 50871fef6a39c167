/*
 * pgconn.h - PostgreSQL connection parameters from the config, and a
 * blocking connect for the processes that may block (persister, counterctl).
 */
#ifndef COUNTER_COMMON_PGCONN_H
#define COUNTER_COMMON_PGCONN_H

#include "common/config.h"

#include <libpq-fe.h>
#include <stddef.h>
#include <stdint.h>

/* Keyword/value arrays for PQconnectdbParams; they point into cfg, which
 * must outlive them. */
typedef struct ctr_pg_params {
    const char *keys[8];
    const char *vals[8];
    char port[16];
    char connect_timeout_s[16];
} ctr_pg_params;

void ctr_pg_params_init(ctr_pg_params *p, const ctr_config *cfg,
                        const char *application_name);

/*
 * Connects, blocking up to postgres.timeout_ms (rounded up to seconds).
 * Returns the connection, or NULL with "could not connect to postgresql at
 * host:port: reason" in errbuf.
 */
PGconn *ctr_pg_connect(const ctr_config *cfg, const char *application_name,
                       char *errbuf, size_t errlen)
    __attribute__((warn_unused_result));

/*
 * Reads PostgreSQL's text of an integer (bigint, or numeric of scale 0:
 * "-?[0-9]+"). Returns 0 with *out set; 1 for an integer outside int64
 * (*out untouched: the caller keeps the exact text, never a clamped
 * value); -1 for anything else.
 */
int ctr_pg_int(const char *text, int64_t *out)
    __attribute__((warn_unused_result));

/* The current value of counters from PostgreSQL, as the api's fallback
 * read and counterctl ask it: $1 names (text[]), $2 days (date[], NULL
 * for counters without daily windows: their total); rows in the order
 * asked: value, last_event_ms, and the time of the persister's last
 * commit (as_of_ms). */
extern const char ctr_sql_current_values[];

#endif

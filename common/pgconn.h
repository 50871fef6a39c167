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
 * must outlive them. With postgres.hosts set, host and port are libpq's
 * lists ("a,b" and "5432,5433"), tried in order until one has the session
 * attributes asked for. */
typedef struct ctr_pg_params {
    const char *keys[10];
    const char *vals[10];
    char hosts[CTR_PG_HOSTS_LEN];
    char ports[CTR_PG_HOSTS_MAX * 6];
    char connect_timeout_s[16];
} ctr_pg_params;

/* session_attrs: libpq's target_session_attrs, one of the config's
 * postgres.target_session_attrs (writers) or postgres.read_session_attrs
 * (counter-api's reads). */
void ctr_pg_params_init(ctr_pg_params *p, const ctr_config *cfg,
                        const char *application_name,
                        const char *session_attrs);

/* libpq's message msg on one line, for a log line: with several servers
 * it writes a line (and indented hints) per server tried; they are joined
 * with "; ". out is always terminated. */
void ctr_pg_one_line(char *out, size_t len, const char *msg);

/* Where the config points, for log lines: postgres.hosts, or host:port. */
const char *ctr_pg_where(const ctr_config *cfg, char *buf, size_t len);

/*
 * Connects to a server that has postgres.target_session_attrs (the
 * primary, by default), blocking up to postgres.timeout_ms (rounded up to
 * seconds) per server tried. Returns the connection, or NULL with "could
 * not connect to postgresql at <where>: reason" in errbuf.
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

/*
 * pgconn.c - see pgconn.h.
 */
#include "common/pgconn.h"

#include <stdio.h>
#include <string.h>

void ctr_pg_params_init(ctr_pg_params *p, const ctr_config *cfg,
                        const char *application_name)
{
    int i = 0;
    snprintf(p->port, sizeof(p->port), "%d", cfg->postgres_port);
    snprintf(p->connect_timeout_s, sizeof(p->connect_timeout_s), "%d",
             (cfg->postgres_timeout_ms + 999) / 1000);
    p->keys[i] = "host", p->vals[i++] = cfg->postgres_host;
    p->keys[i] = "port", p->vals[i++] = p->port;
    p->keys[i] = "user", p->vals[i++] = cfg->postgres_user;
    p->keys[i] = "password", p->vals[i++] = cfg->postgres_password;
    p->keys[i] = "dbname", p->vals[i++] = cfg->postgres_dbname;
    p->keys[i] = "connect_timeout", p->vals[i++] = p->connect_timeout_s;
    p->keys[i] = "application_name", p->vals[i++] = application_name;
    p->keys[i] = NULL, p->vals[i] = NULL;
}

PGconn *ctr_pg_connect(const ctr_config *cfg, const char *application_name,
                       char *errbuf, size_t errlen)
{
    ctr_pg_params params;
    ctr_pg_params_init(&params, cfg, application_name);
    PGconn *conn = PQconnectdbParams(params.keys, params.vals, 0);
    if (conn == NULL || PQstatus(conn) != CONNECTION_OK) {
        char reason[512];
        snprintf(reason, sizeof(reason), "%s",
                 conn ? PQerrorMessage(conn) : "out of memory");
        reason[strcspn(reason, "\n")] = '\0';
        snprintf(errbuf, errlen, "could not connect to postgresql at %s:%d: %s",
                 cfg->postgres_host, cfg->postgres_port, reason);
        PQfinish(conn);
        return NULL;
    }
    return conn;
}

const char ctr_sql_current_values[] =
    "SELECT CASE WHEN q.day IS NULL THEN t.value ELSE d.value END, "
    "       CASE WHEN q.day IS NULL THEN t.last_event_ms "
    "            ELSE d.last_event_ms END, o.as_of_ms "
    "FROM unnest($1::text[], $2::date[]) WITH ORDINALITY AS q(name, day, i) "
    "LEFT JOIN counter_totals t ON q.day IS NULL AND t.name = q.name "
    "LEFT JOIN counter_daily d ON q.day IS NOT NULL AND d.name = q.name "
    "     AND d.day = q.day "
    "CROSS JOIN (SELECT (extract(epoch FROM max(updated_at)) * 1000)::bigint "
    "            AS as_of_ms FROM consumer_offsets) o "
    "ORDER BY q.i";

int ctr_pg_int(const char *text, int64_t *out)
{
    const char *p = text;
    int neg = *p == '-';
    uint64_t v = 0, limit = neg ? (uint64_t)INT64_MAX + 1 : INT64_MAX;
    int big = 0;

    p += neg;
    if (*p < '0' || *p > '9')
        return -1;
    for (; *p >= '0' && *p <= '9'; p++) {
        unsigned d = (unsigned)(*p - '0');
        if (big || v > (limit - d) / 10)
            big = 1;
        else
            v = v * 10 + d;
    }
    if (*p != '\0')
        return -1;
    if (big)
        return 1;
    *out = neg ? (int64_t)(0 - v) : (int64_t)v;
    return 0;
}

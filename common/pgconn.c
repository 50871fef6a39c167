/*
 * pgconn.c - see pgconn.h.
 */
#include "common/pgconn.h"

#include <stdio.h>
#include <string.h>

void ctr_pg_params_init(ctr_pg_params *p, const ctr_config *cfg,
                        const char *application_name, const char *session_attrs)
{
    int i = 0;
    size_t hl = 0, pl = 0, pos = 0;
    char host[256];
    int port;

    if (cfg->postgres_hosts[0] == '\0') {
        snprintf(p->hosts, sizeof(p->hosts), "%s", cfg->postgres_host);
        snprintf(p->ports, sizeof(p->ports), "%d", cfg->postgres_port);
    } else {
        /* validated by the config loader: it fits, and every entry parses */
        p->hosts[0] = p->ports[0] = '\0';
        while (ctr_config_addr_next(cfg->postgres_hosts, &pos, host,
                                    sizeof(host), &port) > 0) {
            hl += (size_t)snprintf(p->hosts + hl, sizeof(p->hosts) - hl, "%s%s",
                                   hl ? "," : "", host);
            pl += (size_t)snprintf(p->ports + pl, sizeof(p->ports) - pl, "%s%d",
                                   pl ? "," : "", port);
        }
    }
    snprintf(p->connect_timeout_s, sizeof(p->connect_timeout_s), "%d",
             (cfg->postgres_timeout_ms + 999) / 1000);
    p->keys[i] = "host", p->vals[i++] = p->hosts;
    p->keys[i] = "port", p->vals[i++] = p->ports;
    p->keys[i] = "user", p->vals[i++] = cfg->postgres_user;
    p->keys[i] = "password", p->vals[i++] = cfg->postgres_password;
    p->keys[i] = "dbname", p->vals[i++] = cfg->postgres_dbname;
    p->keys[i] = "connect_timeout", p->vals[i++] = p->connect_timeout_s;
    p->keys[i] = "application_name", p->vals[i++] = application_name;
    p->keys[i] = "target_session_attrs", p->vals[i++] = session_attrs;
    p->keys[i] = NULL, p->vals[i] = NULL;
}

void ctr_pg_one_line(char *out, size_t len, const char *msg)
{
    size_t n = 0;
    for (const char *p = msg; *p && n + 3 < len; p++) {
        if (*p == '\n' || *p == '\t') {
            p += strspn(p, "\n\t") - 1;
            if (p[1] != '\0' && n > 0) {
                out[n++] = ';';
                out[n++] = ' ';
            }
            continue;
        }
        out[n++] = *p;
    }
    out[n] = '\0';
}

const char *ctr_pg_where(const ctr_config *cfg, char *buf, size_t len)
{
    if (cfg->postgres_hosts[0])
        return cfg->postgres_hosts;
    snprintf(buf, len, "%s:%d", cfg->postgres_host, cfg->postgres_port);
    return buf;
}

PGconn *ctr_pg_connect(const ctr_config *cfg, const char *application_name,
                       char *errbuf, size_t errlen)
{
    ctr_pg_params params;
    char where[300];
    ctr_pg_params_init(&params, cfg, application_name,
                       cfg->postgres_target_session_attrs);
    PGconn *conn = PQconnectdbParams(params.keys, params.vals, 0);
    if (conn == NULL || PQstatus(conn) != CONNECTION_OK) {
        char reason[512];
        ctr_pg_one_line(reason, sizeof(reason),
                        conn ? PQerrorMessage(conn) : "out of memory");
        snprintf(errbuf, errlen, "could not connect to postgresql at %s: %s",
                 ctr_pg_where(cfg, where, sizeof(where)), reason);
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

/*
 * sink.c - see sink.h.
 */
#include "persister/sink.h"

#include "common/log.h"
#include "common/pgconn.h"

#include <inttypes.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct ps_sink {
    const ctr_config *cfg;
    PGconn *conn;
};

ps_sink *ps_sink_new(const ctr_config *cfg)
{
    ps_sink *s = calloc(1, sizeof(*s));
    if (s)
        s->cfg = cfg;
    return s;
}

void ps_sink_free(ps_sink *s)
{
    if (s == NULL)
        return;
    PQfinish(s->conn);
    free(s);
}

static int ensure_connected(ps_sink *s)
{
    char err[512];
    if (s->conn && PQstatus(s->conn) == CONNECTION_OK)
        return 0;
    PQfinish(s->conn);
    s->conn = ctr_pg_connect(s->cfg, "counter-persister", err, sizeof(err));
    if (s->conn == NULL) {
        ctr_warn("%s", err);
        return -1;
    }
    ctr_info("connected to postgresql at %s:%d", s->cfg->postgres_host,
             s->cfg->postgres_port);
    return 0;
}

/* Logs a failed statement once; drops the connection if it is broken. */
static void report(ps_sink *s, PGresult *res, const char *what)
{
    const char *msg = res ? PQresultErrorMessage(res) : PQerrorMessage(s->conn);
    char line[512];
    snprintf(line, sizeof(line), "%s", msg);
    line[strcspn(line, "\n")] = '\0';
    ctr_warn("postgresql %s failed: %s", what, line);
    if (PQstatus(s->conn) != CONNECTION_OK) {
        PQfinish(s->conn);
        s->conn = NULL;
    }
}

int ps_sink_load_offsets(ps_sink *s, const char *topic,
                         const int32_t *partitions, size_t n, int64_t *next)
{
    char part[16];
    const char *params[3] = {s->cfg->persister_group_id, topic, part};

    if (ensure_connected(s))
        return -1;
    for (size_t i = 0; i < n; i++) {
        snprintf(part, sizeof(part), "%" PRId32, partitions[i]);
        PGresult *res = PQexecParams(
            s->conn,
            "SELECT next_offset FROM consumer_offsets "
            "WHERE group_id = $1 AND topic = $2 AND partition = $3",
            3, NULL, params, NULL, NULL, 0);
        if (PQresultStatus(res) != PGRES_TUPLES_OK) {
            report(s, res, "offset read");
            PQclear(res);
            return -1;
        }
        next[i] =
            PQntuples(res) ? strtoll(PQgetvalue(res, 0, 0), NULL, 10) : -1;
        PQclear(res);
    }
    return 0;
}

/* Runs a command that must succeed; returns affected rows or -1. */
static long exec_cmd(ps_sink *s, const char *sql, int nparams,
                     const char *const *params, const char *what)
{
    PGresult *res =
        PQexecParams(s->conn, sql, nparams, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        report(s, res, what);
        PQclear(res);
        return -1;
    }
    long rows = strtol(PQcmdTuples(res), NULL, 10);
    PQclear(res);
    return rows;
}

/* Builds the three array literals of the totals upsert. */
static int build_arrays(const ps_batch *b, char **names, char **deltas,
                        char **times)
{
    size_t n = ps_batch_counters(b);
    size_t cap_names = n * (CTR_NAME_MAX + 3) + 3, cap_nums = n * 22 + 3;
    char *pn = *names = malloc(cap_names);
    char *pd = *deltas = malloc(cap_nums);
    char *pt = *times = malloc(cap_nums);
    if (!pn || !pd || !pt)
        return -1;
    *pn++ = '{', *pd++ = '{', *pt++ = '{';
    int first = 1;
    for (size_t i = 0; i < ps_batch_total_slots(b); i++) {
        const ps_total *t = ps_batch_total_at(b, i);
        if (!t->used)
            continue;
        /* Names are [A-Za-z0-9_.-]: quoting needs no escapes. */
        pn += sprintf(pn, "%s\"%s\"", first ? "" : ",", t->name);
        pd += sprintf(pd, "%s%" PRId64, first ? "" : ",", t->delta);
        pt += sprintf(pt, "%s%" PRId64, first ? "" : ",", t->last_event_ms);
        first = 0;
    }
    strcpy(pn, "}"), strcpy(pd, "}"), strcpy(pt, "}");
    return 0;
}

enum ps_sink_result ps_sink_commit(ps_sink *s, const char *topic,
                                   const ps_batch *b, const int64_t *expected)
{
    char *names = NULL, *deltas = NULL, *times = NULL;
    enum ps_sink_result rc = PS_SINK_ERROR;
    int in_tx = 0;

    if (ensure_connected(s))
        return PS_SINK_ERROR;
    if (exec_cmd(s, "BEGIN", 0, NULL, "begin") < 0)
        goto out;
    in_tx = 1;

    for (size_t i = 0; i < ps_batch_partitions(b); i++) {
        const ps_partition_range *r = ps_batch_partition_at(b, i);
        char part[16], next[24], exp[24];
        snprintf(part, sizeof(part), "%" PRId32, r->partition);
        snprintf(next, sizeof(next), "%" PRId64, r->last_offset + 1);
        snprintf(exp, sizeof(exp), "%" PRId64, expected[i]);
        const char *params[5] = {s->cfg->persister_group_id, topic, part, next,
                                 exp};
        long rows;
        if (expected[i] < 0)
            rows = exec_cmd(s,
                            "INSERT INTO consumer_offsets "
                            "(group_id, topic, partition, next_offset) "
                            "VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                            4, params, "offset insert");
        else
            rows = exec_cmd(
                s,
                "UPDATE consumer_offsets SET next_offset = $4, "
                "updated_at = now() WHERE group_id = $1 AND topic = $2 "
                "AND partition = $3 AND next_offset = $5",
                5, params, "offset update");
        if (rows < 0)
            goto out;
        if (rows != 1) {
            ctr_warn("partition %" PRId32 " offsets moved past %" PRId64
                     " under us; dropping this batch",
                     r->partition, expected[i]);
            rc = PS_SINK_FENCED;
            goto out;
        }
    }

    if (ps_batch_counters(b) > 0) {
        if (build_arrays(b, &names, &deltas, &times)) {
            ctr_error("out of memory building a batch");
            goto out;
        }
        const char *params[3] = {names, deltas, times};
        if (exec_cmd(s,
                     "INSERT INTO counter_totals (name, value, last_event_ms) "
                     "SELECT * FROM unnest($1::text[], $2::bigint[], "
                     "$3::bigint[]) "
                     "ON CONFLICT (name) DO UPDATE SET "
                     "value = counter_totals.value + EXCLUDED.value, "
                     "last_event_ms = GREATEST(counter_totals.last_event_ms, "
                     "EXCLUDED.last_event_ms), updated_at = now()",
                     3, params, "totals upsert") < 0)
            goto out;
    }
    if (exec_cmd(s, "COMMIT", 0, NULL, "commit") < 0) {
        in_tx = 0; /* a failed COMMIT leaves no transaction open */
        goto out;
    }
    in_tx = 0;
    rc = PS_SINK_OK;
out:
    if (in_tx && s->conn) {
        PGresult *res = PQexec(s->conn, "ROLLBACK");
        PQclear(res);
    }
    free(names);
    free(deltas);
    free(times);
    return rc;
}

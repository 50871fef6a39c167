/*
 * pg_writer.c - see pg_writer.h.
 */
#include "persister/pg_writer.h"

#include "common/log.h"
#include "common/pgconn.h"
#include "common/strbuf.h"

#include <inttypes.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* One queued statement of a pipeline and what its result must be. */
typedef struct queued {
    const char *what;
    int fence;         /* an offset move: must touch exactly one row */
    int32_t partition; /* for the log, with fence */
    int64_t expected;
} queued;

struct ps_sink {
    const ctr_config *cfg;
    PGconn *conn;
    char schema[64]; /* "" for the default search path */
    /* while a batch is queued in pipeline mode: its statements */
    int piping;
    size_t n_queued, cap_queued;
    queued *queue;
    /* the first error of the commit under way: SQLSTATE ("" if none) and
     * "SQLSTATE: message" */
    char err_state[6];
    char err_text[512];
};

ps_sink *ps_sink_new(const ctr_config *cfg)
{
    return ps_sink_new_in_schema(cfg, "");
}

ps_sink *ps_sink_new_in_schema(const ctr_config *cfg, const char *schema)
{
    ps_sink *s = calloc(1, sizeof(*s));
    if (s) {
        s->cfg = cfg;
        snprintf(s->schema, sizeof(s->schema), "%s", schema);
    }
    return s;
}

void ps_sink_free(ps_sink *s)
{
    if (s == NULL)
        return;
    PQfinish(s->conn);
    free(s->queue);
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
    if (s->schema[0]) {
        char sql[128];
        snprintf(sql, sizeof(sql), "SET search_path TO \"%s\"", s->schema);
        PGresult *res = PQexec(s->conn, sql);
        int ok = PQresultStatus(res) == PGRES_COMMAND_OK;
        PQclear(res);
        if (!ok) {
            ctr_warn("could not use schema %s", s->schema);
            PQfinish(s->conn);
            s->conn = NULL;
            return -1;
        }
    }
    ctr_info("connected to postgresql at %s:%s", PQhost(s->conn),
             PQport(s->conn));
    return 0;
}

int ps_sink_refused_state(const char *state)
{
    static const char *const classes[] = {"21", "22", "23", "54"};
    for (size_t i = 0; i < sizeof(classes) / sizeof(classes[0]); i++)
        if (state && strlen(state) == 5 && strncmp(state, classes[i], 2) == 0)
            return 1;
    return 0;
}

const char *ps_sink_refusal(const ps_sink *s)
{
    return s->err_text;
}

/*
 * Logs a failed statement once, and keeps the first error of a commit;
 * drops the connection if it is broken. A refusal of the data is only
 * noted here (debug): the persister narrows the batch down and logs what
 * it does about it.
 */
static void report(ps_sink *s, PGresult *res, const char *what)
{
    const char *msg =
        res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    char line[512];
    if (msg == NULL)
        msg = res ? PQresultErrorMessage(res) : PQerrorMessage(s->conn);
    snprintf(line, sizeof(line), "%s", msg);
    line[strcspn(line, "\n")] = '\0';
    if (s->err_state[0] == '\0' && state && strlen(state) == 5) {
        memcpy(s->err_state, state, 6);
        snprintf(s->err_text, sizeof(s->err_text), "%s: %.480s", state, line);
    }
    if (ps_sink_refused_state(state))
        ctr_debug("postgresql %s refused the batch: %s: %s", what, state, line);
    else
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

/* Queues a statement of the pipeline; returns 0 or -1 (connection
 * dropped). */
static int queue_cmd(ps_sink *s, const char *sql, int nparams,
                     const char *const *params, queued q)
{
    if (s->n_queued == s->cap_queued) {
        size_t cap = s->cap_queued ? s->cap_queued * 2 : 16;
        queued *n = realloc(s->queue, cap * sizeof(*n));
        if (n == NULL) {
            ctr_error("out of memory queueing a batch");
            PQfinish(s->conn); /* its open transaction goes with it */
            s->conn = NULL;
            return -1;
        }
        s->queue = n;
        s->cap_queued = cap;
    }
    if (!PQsendQueryParams(s->conn, sql, nparams, NULL, params, NULL, NULL,
                           0)) {
        report(s, NULL, q.what);
        PQfinish(s->conn);
        s->conn = NULL;
        return -1;
    }
    s->queue[s->n_queued++] = q;
    return 0;
}

/*
 * Sends the queued statements and reads their results, leaving pipeline
 * mode. Returns PS_SINK_OK, PS_SINK_FENCED (an offset move touched no
 * row; the transaction is still open, for the caller to roll back) or
 * PS_SINK_ERROR. On an error the connection is dropped, which rolls the
 * transaction back: the pipeline's state after a failure is not worth
 * untangling for a batch that is redone anyway. A statement PostgreSQL
 * refused (a data error) is the exception: every result was read, so the
 * connection stays, with its transaction open for the caller to roll back.
 */
static enum ps_sink_result run_pipeline(ps_sink *s)
{
    enum ps_sink_result rc = PS_SINK_OK;
    int fenced = 0;
    size_t n = s->n_queued;

    s->piping = 0;
    s->n_queued = 0;
    if (!PQpipelineSync(s->conn)) {
        report(s, NULL, "pipeline sync");
        goto drop;
    }
    for (size_t i = 0; i < n; i++) {
        PGresult *res = PQgetResult(s->conn);
        ExecStatusType st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
        if (st == PGRES_COMMAND_OK && s->queue[i].fence &&
            strcmp(PQcmdTuples(res), "1") != 0) {
            ctr_warn("partition %" PRId32 " offsets moved past %" PRId64
                     " under us; dropping this batch",
                     s->queue[i].partition, s->queue[i].expected);
            fenced = 1;
            if (rc == PS_SINK_OK)
                rc = PS_SINK_FENCED;
        } else if (st != PGRES_COMMAND_OK) {
            if (st != PGRES_PIPELINE_ABORTED)
                report(s, res, s->queue[i].what);
            rc = PS_SINK_ERROR;
        }
        PQclear(res);
        if (s->conn == NULL) /* report() found it broken */
            return fenced ? PS_SINK_FENCED : PS_SINK_ERROR;
        PGresult *extra = res ? PQgetResult(s->conn) : NULL;
        if (res == NULL || extra != NULL) {
            PQclear(extra);
            goto drop; /* not one result per statement: lost track */
        }
    }
    PGresult *sync = PQgetResult(s->conn);
    int synced = sync && PQresultStatus(sync) == PGRES_PIPELINE_SYNC;
    PQclear(sync);
    if (!synced || !PQexitPipelineMode(s->conn))
        goto drop;
    /* a refused statement leaves a whole pipeline behind, and the
     * connection in a failed transaction that the caller rolls back: kept,
     * for the narrowing batches that follow (see ps_sink_refusal) */
    if (rc == PS_SINK_ERROR && !ps_sink_refused_state(s->err_state))
        goto drop;
    return fenced ? PS_SINK_FENCED : rc;
drop:
    PQfinish(s->conn);
    s->conn = NULL;
    /* an offset that moved under us says the whole batch was another
     * member's, whatever else failed in it */
    return fenced ? PS_SINK_FENCED : PS_SINK_ERROR;
}

/* Runs a command that must succeed; returns affected rows or -1. While a
 * pipeline is open it only queues the command (and returns 0). */
static long exec_cmd(ps_sink *s, const char *sql, int nparams,
                     const char *const *params, const char *what)
{
    if (s->piping)
        return queue_cmd(s, sql, nparams, params, (queued){.what = what}) == 0
                   ? 0
                   : -1;
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

static void pgarray_date(ctr_strbuf *b, ctr_date d)
{
    char buf[16];
    ctr_date_format(d, buf, sizeof(buf));
    ctr_pgarray_text(b, buf);
}

static const char totals_sql[] =
    "INSERT INTO counter_totals (name, value, last_event_ms) "
    "SELECT * FROM unnest($1::text[], $2::numeric[], $3::bigint[]) "
    "ON CONFLICT (name) DO UPDATE SET "
    "value = counter_totals.value + EXCLUDED.value, "
    "last_event_ms = GREATEST(counter_totals.last_event_ms, "
    "EXCLUDED.last_event_ms), updated_at = now()";

static const char daily_sql[] =
    "INSERT INTO counter_daily (name, day, value, last_event_ms) "
    "SELECT * FROM unnest($1::text[], $2::date[], $3::numeric[], "
    "$4::bigint[]) "
    "ON CONFLICT (name, day) DO UPDATE SET "
    "value = counter_daily.value + EXCLUDED.value, "
    "last_event_ms = GREATEST(counter_daily.last_event_ms, "
    "EXCLUDED.last_event_ms), updated_at = now()";

static const char buckets_sql[] =
    "INSERT INTO counter_buckets (name, bucket_start, value) "
    "SELECT n, to_timestamp(m / 1000.0), v "
    "FROM unnest($1::text[], $2::bigint[], $3::numeric[]) AS u(n, m, v) "
    "ON CONFLICT (name, bucket_start) DO UPDATE SET "
    "value = counter_buckets.value + EXCLUDED.value";

/*
 * Exact unique counting: a (counter, day, user) row is inserted once; only
 * the rows actually inserted count, into the total, the day and the
 * minute the user was first seen.
 */
static const char unique_sql[] =
    "WITH ins AS ("
    "  INSERT INTO counter_unique_users (name, day, user_id, first_seen_ms)"
    "  SELECT * FROM unnest($1::text[], $2::date[], $3::text[], $4::bigint[])"
    "  ON CONFLICT DO NOTHING RETURNING name, day, first_seen_ms),"
    " t AS ("
    "  INSERT INTO counter_totals (name, value, last_event_ms)"
    "  SELECT name, count(*), max(first_seen_ms) FROM ins GROUP BY name"
    "  ON CONFLICT (name) DO UPDATE SET"
    "  value = counter_totals.value + EXCLUDED.value,"
    "  last_event_ms = GREATEST(counter_totals.last_event_ms,"
    "  EXCLUDED.last_event_ms), updated_at = now()),"
    " d AS ("
    "  INSERT INTO counter_daily (name, day, value, last_event_ms)"
    "  SELECT name, day, count(*), max(first_seen_ms) FROM ins"
    "  GROUP BY name, day"
    "  ON CONFLICT (name, day) DO UPDATE SET"
    "  value = counter_daily.value + EXCLUDED.value,"
    "  last_event_ms = GREATEST(counter_daily.last_event_ms,"
    "  EXCLUDED.last_event_ms), updated_at = now())"
    "INSERT INTO counter_buckets (name, bucket_start, value)"
    " SELECT name, to_timestamp((first_seen_ms / 60000) * 60), count(*)"
    " FROM ins GROUP BY 1, 2"
    " ON CONFLICT (name, bucket_start) DO UPDATE SET"
    " value = counter_buckets.value + EXCLUDED.value";

static int write_sums(ps_sink *s, const ps_batch *b)
{
    ctr_strbuf names = {0}, days = {0}, deltas = {0}, times = {0},
               minutes = {0};
    int rc = 0;

    for (int table = PS_TOTAL; table <= PS_BUCKET && rc == 0; table++) {
        if (ps_batch_sums(b, (enum ps_table)table) == 0)
            continue;
        ctr_pgarray_open(&names), ctr_pgarray_open(&days);
        ctr_pgarray_open(&deltas), ctr_pgarray_open(&times);
        ctr_pgarray_open(&minutes);
        for (size_t i = 0; i < ps_batch_sum_slots(b); i++) {
            const ps_sum *sum = ps_batch_sum_at(b, i);
            if (!sum->used || sum->table != (enum ps_table)table)
                continue;
            ctr_pgarray_text(&names, sum->name);
            pgarray_date(&days, sum->day);
            ctr_pgarray_i128(&deltas, sum->delta);
            ctr_pgarray_i64(&times, sum->last_event_ms);
            ctr_pgarray_i64(&minutes, sum->minute_ms);
        }
        ctr_pgarray_close(&names), ctr_pgarray_close(&days);
        ctr_pgarray_close(&deltas), ctr_pgarray_close(&times);
        ctr_pgarray_close(&minutes);
        if (names.failed || days.failed || deltas.failed || times.failed ||
            minutes.failed) {
            ctr_error("out of memory building a batch");
            rc = -1;
            break;
        }
        if (table == PS_TOTAL) {
            const char *p[3] = {names.s, deltas.s, times.s};
            rc = exec_cmd(s, totals_sql, 3, p, "totals upsert") < 0 ? -1 : 0;
        } else if (table == PS_DAILY) {
            const char *p[4] = {names.s, days.s, deltas.s, times.s};
            rc = exec_cmd(s, daily_sql, 4, p, "daily upsert") < 0 ? -1 : 0;
        } else {
            const char *p[3] = {names.s, minutes.s, deltas.s};
            rc = exec_cmd(s, buckets_sql, 3, p, "buckets upsert") < 0 ? -1 : 0;
        }
    }
    ctr_strbuf_clear(&names), ctr_strbuf_clear(&days),
        ctr_strbuf_clear(&deltas);
    ctr_strbuf_clear(&times), ctr_strbuf_clear(&minutes);
    return rc;
}

/* The unique rows of a and b (either may be NULL) in one insert, merged
 * by their place in the batch: of two rows of one user and day the first
 * in the log counts, as a replay of the log counts it, however the batch
 * was cut. */
static int write_unique(ps_sink *s, const ps_batch *a, const ps_batch *b)
{
    ctr_strbuf names = {0}, days = {0}, users = {0}, times = {0};
    size_t na = a ? ps_batch_unique_rows(a) : 0;
    size_t nb = b ? ps_batch_unique_rows(b) : 0;
    int rc = -1;

    if (na + nb == 0)
        return 0;
    ctr_pgarray_open(&names), ctr_pgarray_open(&days);
    ctr_pgarray_open(&users), ctr_pgarray_open(&times);
    for (size_t i = 0, j = 0; i < na || j < nb;) {
        const ps_unique_row *ra = i < na ? ps_batch_unique_at(a, i) : NULL;
        const ps_unique_row *rb = j < nb ? ps_batch_unique_at(b, j) : NULL;
        const ps_unique_row *row =
            rb == NULL || (ra && ra->seq <= rb->seq) ? (i++, ra) : (j++, rb);
        ctr_pgarray_text(&names, row->name);
        pgarray_date(&days, row->day);
        ctr_pgarray_text(&users, row->user_id);
        ctr_pgarray_i64(&times, row->ts_ms);
    }
    ctr_pgarray_close(&names), ctr_pgarray_close(&days);
    ctr_pgarray_close(&users), ctr_pgarray_close(&times);
    if (names.failed || days.failed || users.failed || times.failed) {
        ctr_error("out of memory building a batch");
    } else {
        const char *p[4] = {names.s, days.s, users.s, times.s};
        rc = exec_cmd(s, unique_sql, 4, p, "unique rows insert") < 0 ? -1 : 0;
    }
    ctr_strbuf_clear(&names), ctr_strbuf_clear(&days), ctr_strbuf_clear(&users);
    ctr_strbuf_clear(&times);
    return rc;
}

static int hexval(char c)
{
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
                                  : -1;
}

/* Long on purpose: read, merge, write back and count the change, for one
 * group at a time under its row lock. */
/*
 * Approximate unique counting: merge the batch's registers into the
 * stored ones (locked), and add the change of the estimate to the total,
 * the day and the minute of the group's newest event.
 */
static int write_hll(ps_sink *s, const ps_batch *b)
{
    static char hex[2 + 2 * CTR_HLL_REGISTERS + 1];
    uint8_t regs[CTR_HLL_REGISTERS];

    for (size_t g = 0; g < ps_batch_hll_groups(b); g++) {
        const ps_hll_group *grp = ps_batch_hll_at(b, g);
        char day[16], est_s[24], last_s[24], minute_s[24], delta_s[24];
        ctr_date_format(grp->day, day, sizeof(day));
        const char *key[2] = {grp->name, day};
        PGresult *res =
            PQexecParams(s->conn,
                         "SELECT registers, estimate FROM counter_hll "
                         "WHERE name = $1 AND day = $2 FOR UPDATE",
                         2, NULL, key, NULL, NULL, 0);
        if (PQresultStatus(res) != PGRES_TUPLES_OK) {
            report(s, res, "hll read");
            PQclear(res);
            return -1;
        }
        int64_t old_est = 0;
        memset(regs, 0, sizeof(regs));
        if (PQntuples(res) == 1) {
            const char *h = PQgetvalue(res, 0, 0);
            if (strlen(h) == 2 + 2 * CTR_HLL_REGISTERS && h[0] == '\\') {
                for (int i = 0; i < CTR_HLL_REGISTERS; i++)
                    regs[i] = (uint8_t)(hexval(h[2 + 2 * i]) * 16 +
                                        hexval(h[3 + 2 * i]));
            }
            old_est = strtoll(PQgetvalue(res, 0, 1), NULL, 10);
        }
        PQclear(res);
        for (int i = 0; i < CTR_HLL_REGISTERS; i++)
            if (grp->regs[i] > regs[i])
                regs[i] = grp->regs[i];
        int64_t est = ctr_hll_estimate(regs);
        int64_t delta = est > old_est ? est - old_est : 0;
        hex[0] = '\\', hex[1] = 'x';
        for (int i = 0; i < CTR_HLL_REGISTERS; i++)
            sprintf(hex + 2 + 2 * i, "%02x", regs[i]);
        int64_t minute = grp->last_event_ms - grp->last_event_ms % 60000;
        snprintf(est_s, sizeof(est_s), "%" PRId64, old_est + delta);
        snprintf(last_s, sizeof(last_s), "%" PRId64, grp->last_event_ms);
        snprintf(minute_s, sizeof(minute_s), "%" PRId64, minute);
        snprintf(delta_s, sizeof(delta_s), "%" PRId64, delta);
        const char *up[4] = {grp->name, day, hex, est_s};
        if (exec_cmd(s,
                     "INSERT INTO counter_hll (name, day, registers, estimate) "
                     "VALUES ($1, $2, $3::bytea, $4) ON CONFLICT (name, day) "
                     "DO UPDATE SET registers = EXCLUDED.registers, "
                     "estimate = EXCLUDED.estimate",
                     4, up, "hll upsert") < 0)
            return -1;
        if (delta == 0)
            continue;
        const char *pt[3] = {grp->name, delta_s, last_s};
        const char *pd[4] = {grp->name, day, delta_s, last_s};
        const char *pb[3] = {grp->name, minute_s, delta_s};
        if (exec_cmd(s,
                     "INSERT INTO counter_totals (name, value, last_event_ms) "
                     "VALUES ($1, $2, $3) ON CONFLICT (name) DO UPDATE SET "
                     "value = counter_totals.value + EXCLUDED.value, "
                     "last_event_ms = GREATEST(counter_totals.last_event_ms, "
                     "EXCLUDED.last_event_ms), updated_at = now()",
                     3, pt, "hll totals") < 0 ||
            exec_cmd(s,
                     "INSERT INTO counter_daily (name, day, value, "
                     "last_event_ms) VALUES ($1, $2, $3, $4) "
                     "ON CONFLICT (name, day) DO UPDATE SET "
                     "value = counter_daily.value + EXCLUDED.value, "
                     "last_event_ms = GREATEST(counter_daily.last_event_ms, "
                     "EXCLUDED.last_event_ms), updated_at = now()",
                     4, pd, "hll daily") < 0 ||
            exec_cmd(s,
                     "INSERT INTO counter_buckets (name, bucket_start, value) "
                     "VALUES ($1, to_timestamp($2::bigint / 1000.0), $3) "
                     "ON CONFLICT (name, bucket_start) DO UPDATE SET "
                     "value = counter_buckets.value + EXCLUDED.value",
                     3, pb, "hll bucket") < 0)
            return -1;
    }
    return 0;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/*
 * Which of the records counted by id are new: the (counter, event id, key
 * generation) triples new to applied_event_ids (each once, even if the
 * batch holds it twice) get counted[i] = 1. Keyed api events and records
 * without a source (older appliers', or events the applier applied one by
 * one) count this way. 0 or -1.
 */
static int records_by_id(ps_sink *s, const ps_batch *b, char *counted)
{
    size_t n = ps_batch_records(b), m = 0;
    ctr_strbuf ids = {0}, names = {0}, gens = {0};
    PGresult *res = NULL;
    char **found = NULL, *used = NULL;
    int nfound = 0, rc = -1;

    ctr_pgarray_open(&ids);
    ctr_pgarray_open(&names);
    ctr_pgarray_open(&gens);
    for (size_t i = 0; i < n; i++) {
        const ps_record *r = ps_batch_record_at(b, i);
        if (r->source_topic)
            continue;
        ctr_pgarray_text(&ids, r->ev.id);
        ctr_pgarray_text(&names, r->ev.counter);
        ctr_pgarray_i64(&gens, r->gen);
        m++;
    }
    ctr_pgarray_close(&ids);
    ctr_pgarray_close(&names);
    ctr_pgarray_close(&gens);
    if (ids.failed || names.failed || gens.failed) {
        ctr_error("out of memory building a batch");
        goto out;
    }
    if (m == 0) {
        rc = 0;
        goto out;
    }
    /* found as "name\nid\ngen": names and ids hold no newline */
    const char *params[3] = {names.s, ids.s, gens.s};
    res = PQexecParams(s->conn,
                       "INSERT INTO applied_event_ids (name, id, gen) "
                       "SELECT * FROM unnest($1::text[], $2::text[], "
                       "$3::bigint[]) "
                       "ON CONFLICT DO NOTHING "
                       "RETURNING name || chr(10) || id || chr(10) || gen",
                       3, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        report(s, res, "event id insert");
        goto out;
    }
    nfound = PQntuples(res);
    found = calloc((size_t)nfound + 1, sizeof(*found));
    used = calloc((size_t)nfound + 1, 1);
    if (found == NULL || used == NULL)
        goto out;
    for (int i = 0; i < nfound; i++)
        found[i] = PQgetvalue(res, i, 0);
    qsort(found, (size_t)nfound, sizeof(*found), cmp_str);
    for (size_t i = 0; i < n; i++) {
        const ps_record *r = ps_batch_record_at(b, i);
        if (r->source_topic)
            continue;
        char keybuf[CTR_NAME_MAX + CTR_EVENT_ID_MAX + 24];
        snprintf(keybuf, sizeof(keybuf), "%s\n%s\n%" PRId64, r->ev.counter,
                 r->ev.id, r->gen);
        const char *key = keybuf;
        char **hit =
            bsearch(&key, found, (size_t)nfound, sizeof(*found), cmp_str);
        if (hit == NULL || used[hit - found])
            continue;
        used[hit - found] = 1; /* a second copy in this batch is not new */
        counted[i] = 1;
    }
    rc = 0;
out:
    free(found);
    free(used);
    PQclear(res);
    ctr_strbuf_clear(&ids);
    ctr_strbuf_clear(&names);
    ctr_strbuf_clear(&gens);
    return rc;
}

/*
 * Which of the records naming their source are new: a record counts when
 * its source offset is past every one counted before for its counter and
 * source partition (applier_record_offsets, and the batch's earlier
 * records), which then moves on. The applier publishes a counter's records
 * of one partition in offset order, and again in that order after a crash,
 * so a copy always comes after its first. One row per counter and source
 * partition, whatever the number of events. 0 or -1.
 */
static int records_by_source(ps_sink *s, const ps_batch *b, char *counted)
{
    size_t n = ps_batch_records(b), m = 0;
    ctr_strbuf names = {0}, topics = {0}, parts = {0}, offs = {0}, idx = {0};
    PGresult *res = NULL;
    int rc = -1;

    ctr_pgarray_open(&names);
    ctr_pgarray_open(&topics);
    ctr_pgarray_open(&parts);
    ctr_pgarray_open(&offs);
    ctr_pgarray_open(&idx);
    for (size_t i = 0; i < n; i++) {
        const ps_record *r = ps_batch_record_at(b, i);
        if (r->source_topic == NULL)
            continue;
        ctr_pgarray_text(&names, r->ev.counter);
        ctr_pgarray_text(&topics, r->source_topic);
        ctr_pgarray_i64(&parts, r->source_partition);
        ctr_pgarray_i64(&offs, r->source_offset);
        ctr_pgarray_i64(&idx, (int64_t)i);
        m++;
    }
    ctr_pgarray_close(&names);
    ctr_pgarray_close(&topics);
    ctr_pgarray_close(&parts);
    ctr_pgarray_close(&offs);
    ctr_pgarray_close(&idx);
    if (names.failed || topics.failed || parts.failed || offs.failed ||
        idx.failed) {
        ctr_error("out of memory building a batch");
        goto out;
    }
    if (m == 0) {
        rc = 0;
        goto out;
    }
    const char *params[5] = {names.s, topics.s, parts.s, offs.s, idx.s};
    /* the data-modifying CTE runs whole; the SELECT sees the rows as
     * they were before it */
    res = PQexecParams(
        s->conn,
        "WITH r AS (SELECT * FROM unnest($1::text[], $2::text[], $3::int[], "
        "$4::bigint[], $5::int[]) AS r(name, topic, part, off, i)), "
        "seen AS (SELECT r.i, r.off, COALESCE(o.last_offset, -1) AS stored, "
        "max(r.off) OVER (PARTITION BY r.name, r.topic, r.part ORDER BY r.i "
        "ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS before "
        "FROM r LEFT JOIN applier_record_offsets o ON o.name = r.name "
        "AND o.topic = r.topic AND o.partition = r.part), "
        "moved AS (INSERT INTO applier_record_offsets "
        "(name, topic, partition, last_offset) "
        "SELECT name, topic, part, max(off) FROM r GROUP BY 1, 2, 3 "
        "ON CONFLICT (name, topic, partition) DO UPDATE SET last_offset = "
        "GREATEST(applier_record_offsets.last_offset, "
        "EXCLUDED.last_offset), updated_at = now()) "
        "SELECT i FROM seen WHERE off > GREATEST(stored, COALESCE(before, "
        "-1))",
        5, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        report(s, res, "record offsets");
        goto out;
    }
    for (int k = 0; k < PQntuples(res); k++) {
        long i = strtol(PQgetvalue(res, k, 0), NULL, 10);
        if (i >= 0 && (size_t)i < n)
            counted[i] = 1;
    }
    rc = 0;
out:
    PQclear(res);
    ctr_strbuf_clear(&names);
    ctr_strbuf_clear(&topics);
    ctr_strbuf_clear(&parts);
    ctr_strbuf_clear(&offs);
    ctr_strbuf_clear(&idx);
    return rc;
}

/*
 * The applier's records and keyed api events count once, as Redis decided
 * them once: by source offset or by id (records_by_source, records_by_id);
 * the new ones are counted, in log order, through a batch of their own.
 */
static int write_records(ps_sink *s, const ps_batch *b)
{
    size_t n = ps_batch_records(b);
    ps_batch *fresh = NULL;
    char *counted = NULL;
    int rc = -1;

    if (n == 0)
        return 0;
    counted = calloc(n, 1);
    fresh = ps_batch_new(n);
    if (counted == NULL || fresh == NULL) {
        ctr_error("out of memory building a batch");
        goto out;
    }
    if (records_by_source(s, b, counted) != 0 ||
        records_by_id(s, b, counted) != 0)
        goto out;
    for (size_t i = 0; i < n; i++) {
        const ps_record *r = ps_batch_record_at(b, i);
        if (counted[i] && ps_batch_add_as(fresh, 0, (int64_t)i, r->seq, &r->ev,
                                          r->def, r->day) != 0)
            goto out;
    }
    /* the batch's own unique rows wait for these (ps_sink_commit) */
    rc =
        write_sums(s, fresh) || write_unique(s, b, fresh) || write_hll(s, fresh)
            ? -1
            : 0;
out:
    ps_batch_free(fresh);
    free(counted);
    return rc;
}

/* Queues the batch's offset moves, each fenced on the value expected (see
 * run_pipeline), and the quarantined messages' rows. 0, or -1 with the
 * connection dropped. */
static int queue_offsets(ps_sink *s, const char *topic, const ps_batch *b,
                         const int64_t *expected)
{
    for (size_t i = 0; i < ps_batch_partitions(b); i++) {
        const ps_partition_range *r = ps_batch_partition_at(b, i);
        char part[16], next[24], exp[24];
        snprintf(part, sizeof(part), "%" PRId32, r->partition);
        snprintf(next, sizeof(next), "%" PRId64, r->last_offset + 1);
        snprintf(exp, sizeof(exp), "%" PRId64, expected[i]);
        const char *params[5] = {s->cfg->persister_group_id, topic, part, next,
                                 exp};
        queued q = {
            .fence = 1, .partition = r->partition, .expected = expected[i]};
        int sent;
        if (expected[i] < 0) {
            q.what = "offset insert";
            sent = queue_cmd(s,
                             "INSERT INTO consumer_offsets "
                             "(group_id, topic, partition, next_offset) "
                             "VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                             4, params, q);
        } else {
            q.what = "offset update";
            sent = queue_cmd(
                s,
                "UPDATE consumer_offsets SET next_offset = $4, "
                "updated_at = now() WHERE group_id = $1 AND topic = $2 "
                "AND partition = $3 AND next_offset = $5",
                5, params, q);
        }
        if (sent != 0)
            return -1;
    }

    for (size_t i = 0; i < ps_batch_quarantined(b); i++) {
        const ps_quarantined *q = ps_batch_quarantined_at(b, i);
        char part[16], off[24];
        snprintf(part, sizeof(part), "%" PRId32, q->partition);
        snprintf(off, sizeof(off), "%" PRId64, q->offset);
        const char *params[5] = {s->cfg->persister_group_id, topic, part, off,
                                 q->reason};
        if (exec_cmd(s,
                     "INSERT INTO quarantined_events (group_id, topic, "
                     "partition, \"offset\", reason) VALUES ($1, $2, $3, "
                     "$4, $5) ON CONFLICT DO NOTHING",
                     5, params, "quarantine record") < 0)
            return -1;
    }
    return 0;
}

/*
 * One transaction, in two round trips where the batch has no applier
 * records or HLL groups: BEGIN, the fenced offset moves and the sums and
 * unique rows go out as one pipeline; the fence is judged from its
 * results, and only then COMMIT (or ROLLBACK) is sent. Records and HLL
 * groups need what PostgreSQL answers first, so they follow one by one.
 */
enum ps_sink_result ps_sink_commit(ps_sink *s, const char *topic,
                                   const ps_batch *b, const int64_t *expected)
{
    enum ps_sink_result rc = PS_SINK_ERROR;
    int in_tx = 0;

    s->err_state[0] = '\0';
    s->err_text[0] = '\0';
    if (ensure_connected(s))
        return PS_SINK_ERROR;
    if (!PQenterPipelineMode(s->conn)) {
        report(s, NULL, "pipeline mode");
        return PS_SINK_ERROR;
    }
    s->piping = 1;
    s->n_queued = 0;
    in_tx = 1;
    if (exec_cmd(s, "BEGIN", 0, NULL, "begin") < 0)
        goto out;

    if (queue_offsets(s, topic, b, expected) != 0)
        goto out;
    /* a batch with records inserts its unique rows with theirs, in log
     * order, once the records' ids are checked (write_records) */
    if (write_sums(s, b) ||
        (ps_batch_records(b) == 0 && write_unique(s, b, NULL)))
        goto out;
    rc = run_pipeline(s);
    if (rc != PS_SINK_OK)
        goto out;
    rc = PS_SINK_ERROR;
    if (write_hll(s, b) || write_records(s, b))
        goto out;
    if (exec_cmd(s, "COMMIT", 0, NULL, "commit") < 0) {
        in_tx = 0; /* a failed COMMIT leaves no transaction open */
        goto out;
    }
    in_tx = 0;
    rc = PS_SINK_OK;
out:
    if (s->piping && s->conn) {
        /* failed while queueing (out of memory building an array): the
         * connection and its transaction go */
        PQfinish(s->conn);
        s->conn = NULL;
    }
    s->piping = 0;
    s->n_queued = 0;
    if (in_tx && s->conn) {
        PGresult *res = PQexec(s->conn, "ROLLBACK");
        PQclear(res);
    }
    if (rc == PS_SINK_ERROR && ps_sink_refused_state(s->err_state))
        rc = PS_SINK_REFUSED;
    return rc;
}

/* def's LIKE pattern: exact names match themselves; a prefix escapes '_'
 * (names hold no '%' or '\'). out holds 2 * CTR_NAME_MAX + 4 bytes. */
static void like_pattern(char *out, const ctr_counter_def *d)
{
    size_t n = d->is_prefix ? d->prefix_len : strlen(d->pattern);
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (d->pattern[i] == '_')
            out[o++] = '\\';
        out[o++] = d->pattern[i];
    }
    if (d->is_prefix)
        out[o++] = '%';
    out[o] = '\0';
}

/* Does def `other` take names away from def `d` (more specific)? */
static int overrides(const ctr_counter_def *d, const ctr_counter_def *other)
{
    if (other == d || !d->is_prefix)
        return 0;
    if (!other->is_prefix)
        return strncmp(other->pattern, d->pattern, d->prefix_len) == 0;
    return other->prefix_len > d->prefix_len &&
           strncmp(other->pattern, d->pattern, d->prefix_len) == 0;
}

long ps_sink_apply_retention(ps_sink *s, int64_t now_ms)
{
    const ctr_config *cfg = s->cfg;
    long deleted = 0;
    static const char *const sql[3] = {
        "DELETE FROM counter_unique_users WHERE name LIKE $1 "
        "AND NOT (name LIKE ANY ($2::text[])) AND day < $3::date",
        "DELETE FROM counter_hll WHERE name LIKE $1 "
        "AND NOT (name LIKE ANY ($2::text[])) AND day < $3::date",
        "DELETE FROM counter_buckets WHERE name LIKE $1 "
        "AND NOT (name LIKE ANY ($2::text[])) "
        "AND bucket_start < $3::date::timestamp AT TIME ZONE $4",
    };

    if (ensure_connected(s))
        return -1;
    /* An external event's id (generation 0) is remembered as long as the
     * applier's guard; a key's generation for idempotency_ttl_s after it,
     * when the key names a new write, and an hour more for a retry's event
     * still on its way. */
    char guard_s[24], key_ms[24];
    snprintf(guard_s, sizeof(guard_s), "%d", cfg->applier_guard_ttl_s);
    snprintf(key_ms, sizeof(key_ms), "%" PRId64,
             now_ms - ((int64_t)cfg->idempotency_ttl_s + 3600) * 1000);
    const char *tp[2] = {guard_s, key_ms};
    long ids = exec_cmd(s,
                        "DELETE FROM applied_event_ids WHERE (gen = 0 AND "
                        "seen_at < now() - make_interval(secs => $1::int)) "
                        "OR (gen > 0 AND gen < $2::bigint)",
                        2, tp, "retention");
    if (ids < 0)
        return -1;
    deleted += ids;
    for (size_t i = 0; i <= cfg->n_counters; i++) {
        const ctr_counter_def *d =
            i < cfg->n_counters ? &cfg->counters[i] : &cfg->default_counter;
        /* a declared "*" replaces the built-in default */
        if (i == cfg->n_counters && ctr_config_counter(cfg, "") != d)
            continue;
        char pattern[2 * CTR_NAME_MAX + 4], other[2 * CTR_NAME_MAX + 4];
        ctr_strbuf others = {0};
        like_pattern(pattern, d);
        ctr_pgarray_open(&others);
        for (size_t j = 0; j < cfg->n_counters; j++)
            if (overrides(d, &cfg->counters[j])) {
                like_pattern(other, &cfg->counters[j]);
                ctr_pgarray_text(&others, other);
            }
        ctr_pgarray_close(&others);

        char cutoff[16];
        ctr_date today = ctr_tz_local_day(d->tz, now_ms, NULL, NULL);
        ctr_date_format(ctr_date_add_days(today, -d->retention_days), cutoff,
                        sizeof(cutoff));
        const char *params[4] = {pattern, others.s, cutoff, ctr_tz_name(d->tz)};
        for (int k = 0; k < 3 && !others.failed; k++) {
            long n = exec_cmd(s, sql[k], k == 2 ? 4 : 3, params, "retention");
            if (n < 0) {
                deleted = -1;
                break;
            }
            deleted += n;
        }
        ctr_strbuf_clear(&others);
        if (deleted < 0)
            return -1;
    }
    return deleted;
}

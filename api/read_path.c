/*
 * read_path.c - reads: one counter or a batch from Redis, else from
 * PostgreSQL (saying so: source, stale, as_of); the history of a counter
 * from PostgreSQL's buckets; the counter definitions.
 */
#include "api/handlers.h"
#include "api/query.h"
#include "api/reply.h"
#include "common/log.h"
#include "common/pgconn.h"
#include "common/strbuf.h"
#include "common/timeutil.h"

#include <event2/buffer.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { HISTORY_MAX_POINTS = 10000 };

_Static_assert(API_BATCH_MAX <= API_REDIS_GET_MAX,
               "a batch is read from Redis in one call");

void api_live_key(const ctr_counter_def *def, const char *name, int64_t now_ms,
                  char *key, size_t keylen, char period[11])
{
    /* Written by hand: on a batch GET, snprintf was 7 % of the api's
     * instructions. A name is at most CTR_NAME_MAX and the key room is
     * API_KEY_MAX, but a short buffer still gets a cut, terminated key. */
    size_t nlen = strlen(name), n = 0;
    period[0] = '\0';
    if (def->reset == CTR_RESET_DAILY) {
        ctr_date today = ctr_tz_local_day(def->tz, now_ms, NULL, NULL);
        ctr_date_format(today, period, 11);
    }
    const char *parts[] = {"{c:", name, "}", period[0] ? ":d:" : "", period};
    size_t lens[] = {3, nlen, 1, period[0] ? 3 : 0, strlen(period)};
    if (keylen == 0)
        return;
    for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
        size_t take = lens[i] < keylen - 1 - n ? lens[i] : keylen - 1 - n;
        memcpy(key + n, parts[i], take);
        n += take;
    }
    key[n] = '\0';
}

/* One name of a read; a read_op holds exactly as many as were asked for,
 * so a single GET does not clear room for a whole batch. */
typedef struct read_item {
    const ctr_counter_def *def;
    char period[11];
    char name[CTR_NAME_MAX + 1];
    char key[API_KEY_MAX];
} read_item;

typedef struct read_op {
    api_app *app;
    struct evhttp_request *req;
    int batch; /* answer {"counters":[...]} rather than one object */
    size_t n;
    const char **key_ptrs; /* n entries, after items[] */
    read_item items[];
} read_op;

static void read_release(read_op *op)
{
    op->app->inflight--;
    free(op);
}

/* Room for one counter's object: its name plus the fixed text, numbers
 * and timestamps (under 400 bytes together). */
enum { READ_ITEM_ROOM = CTR_NAME_MAX + 400 };

/* exact: the value's decimal text when it lies outside int64 (read from
 * PostgreSQL, see read_from_pg_done), else NULL */
static char *put_counter(char *p, const read_item *it, int64_t value,
                         const char *exact, int64_t updated_ms,
                         const char *source, int stale, int64_t as_of_ms)
{
    const char *kind = ctr_kind_name(it->def->kind);
    /* names are checked against a JSON-safe alphabet when parsed */
    p = API_PUT_LIT(p, "{\"name\":\"");
    p = api_put(p, it->name, strlen(it->name));
    p = API_PUT_LIT(p, "\",\"value\":");
    p = exact ? api_put(p, exact, strlen(exact)) : api_put_i64(p, value);
    p = API_PUT_LIT(p, ",\"kind\":\"");
    p = api_put(p, kind, strlen(kind));
    p = API_PUT_LIT(p, "\",\"last_updated\":");
    p = api_put_time(p, updated_ms);
    if (it->period[0]) {
        p = API_PUT_LIT(p, ",\"period\":\"");
        p = api_put(p, it->period, strlen(it->period));
        p = API_PUT_LIT(p, "\"");
    }
    if (it->def->kind == CTR_KIND_UNIQUE && it->def->dedup == CTR_DEDUP_HLL)
        p = API_PUT_LIT(p, ",\"approximate\":true");
    p = API_PUT_LIT(p, ",\"source\":\"");
    p = api_put(p, source, strlen(source));
    if (stale) {
        p = API_PUT_LIT(p, "\",\"stale\":true,\"as_of\":");
        p = api_put_time(p, as_of_ms);
    } else {
        p = API_PUT_LIT(p, "\",\"stale\":false");
    }
    return API_PUT_LIT(p, "}");
}

/* exact: NULL, or per item what put_counter takes */
static void read_answer(read_op *op, const int64_t *values,
                        const char *const *exact, const int64_t *updated,
                        const char *source, int stale, int64_t as_of_ms)
{
    struct evbuffer *b = evbuffer_new();
    struct evbuffer_iovec v;
    size_t room = 32 + op->n * READ_ITEM_ROOM;
    for (size_t i = 0; exact && i < op->n; i++)
        room += exact[i] ? strlen(exact[i]) : 0;
    if (b == NULL || evbuffer_reserve_space(b, (ev_ssize_t)room, &v, 1) < 1) {
        if (b)
            evbuffer_free(b);
        api_reply_error(op->req, 500, "internal", NULL, "out of memory");
        return;
    }
    char *p = v.iov_base;
    if (op->batch)
        p = API_PUT_LIT(p, "{\"counters\":[");
    for (size_t i = 0; i < op->n; i++) {
        if (i)
            *p++ = ',';
        p = put_counter(p, &op->items[i], values[i], exact ? exact[i] : NULL,
                        updated[i], source, stale, as_of_ms);
    }
    if (op->batch)
        p = API_PUT_LIT(p, "]}");
    *p++ = '\n';
    v.iov_len = (size_t)(p - (char *)v.iov_base);
    evbuffer_commit_space(b, &v, 1);
    api_reply_json(op->req, 200, b);
    evbuffer_free(b);
}

/* Kinds whose value only grows within a period (a counter's decrement
 * is a correction). */
static int monotonic(const ctr_counter_def *def)
{
    return def->kind == CTR_KIND_COUNTER || def->kind == CTR_KIND_UNIQUE;
}

/* An integer column (NULL: 0): 0, 1 outside int64 (*v untouched), or -1
 * for a value that is no integer. */
static int field_int(const PGresult *res, int row, int col, int64_t *v)
{
    *v = 0;
    return PQgetisnull(res, row, col)
               ? 0
               : ctr_pg_int(PQgetvalue(res, row, col), v);
}

/*
 * A live value is within int64 (Redis refuses to leave it), but the sum
 * PostgreSQL holds may lie outside for a while (it adds the events in log
 * order, not in the order Redis applied them) or for good (an event was
 * quarantined): such a value is answered exactly, as its decimal text.
 */
static void read_from_pg_done(const PGresult *res, void *arg)
{
    read_op *op = arg;
    int bad = res == NULL || (size_t)PQntuples(res) != op->n;
    int64_t values[API_BATCH_MAX], updated[API_BATCH_MAX], as_of = 0;
    const char *exact[API_BATCH_MAX];
    for (size_t i = 0; !bad && i < op->n; i++) {
        int r = field_int(res, (int)i, 0, &values[i]);
        exact[i] = r == 1 ? PQgetvalue(res, (int)i, 0) : NULL;
        bad = r < 0 || field_int(res, (int)i, 1, &updated[i]) != 0 ||
              field_int(res, (int)i, 2, &as_of) != 0;
        /* PostgreSQL lags Redis by a batch: a monotonic counter
         * must not seem to go back to a client that read Redis */
        if (!bad && !exact[i] && monotonic(op->items[i].def) && op->app->floor)
            api_floor_raise(op->app->floor, op->items[i].name,
                            op->items[i].period, &values[i], &updated[i]);
    }
    if (bad) {
        op->app->metrics.reads_failed++;
        api_reply_error(op->req, 503, "unavailable", NULL,
                        "neither redis nor postgresql could answer in time");
    } else {
        op->app->metrics.reads_postgres++;
        read_answer(op, values, exact, updated, "postgres", 1, as_of);
    }
    read_release(op);
}

static void read_from_pg(read_op *op)
{
    ctr_strbuf names = {0}, days = {0};
    int rc = -1;

    ctr_pgarray_open(&names);
    ctr_pgarray_open(&days);
    for (size_t i = 0; i < op->n; i++) {
        ctr_pgarray_text(&names, op->items[i].name);
        if (op->items[i].period[0])
            ctr_pgarray_text(&days, op->items[i].period);
        else
            ctr_strbuf_puts(&days, days.len > 1 ? ",NULL" : "NULL");
    }
    ctr_pgarray_close(&names);
    ctr_pgarray_close(&days);
    if (!names.failed && !days.failed) {
        const char *params[2] = {names.s, days.s};
        rc = api_pg_query(op->app->pg, ctr_sql_current_values, 2, params,
                          read_from_pg_done, op);
    }
    ctr_strbuf_clear(&names);
    ctr_strbuf_clear(&days);
    if (rc != 0) {
        op->app->metrics.reads_failed++;
        api_reply_error(op->req, 503, "unavailable", NULL,
                        "redis is unavailable and postgresql is busy");
        read_release(op);
    }
}

static void read_from_redis_done(enum api_redis_status st,
                                 const api_redis_value *vals, size_t n,
                                 void *arg)
{
    read_op *op = arg;
    if (st != API_REDIS_OK) {
        read_from_pg(op);
        return;
    }
    int64_t values[API_BATCH_MAX], updated[API_BATCH_MAX];
    for (size_t i = 0; i < n; i++) {
        /* a counter that only grows shows what no pending write failing
         * can take back: a read never goes back for an undo (I6) */
        values[i] = !vals[i].exists               ? 0
                    : monotonic(op->items[i].def) ? vals[i].confirmed
                                                  : vals[i].value;
        updated[i] = vals[i].exists ? vals[i].updated_ms : 0;
        if (vals[i].exists && monotonic(op->items[i].def) && op->app->floor)
            api_floor_note(op->app->floor, op->items[i].name,
                           op->items[i].period, values[i], updated[i]);
    }
    op->app->metrics.reads_redis++;
    read_answer(op, values, NULL, updated, "redis", 0, 0);
    read_release(op);
}

static read_op *read_op_new(size_t n)
{
    read_op *op =
        malloc(sizeof(*op) + n * sizeof(read_item) + n * sizeof(const char *));
    if (op == NULL)
        return NULL;
    memset(op, 0, sizeof(*op));
    op->n = n;
    op->key_ptrs = (const char **)(void *)&op->items[n];
    return op;
}

void api_handle_read(api_app *app, struct evhttp_request *req,
                     const api_route *route, int batch)
{
    read_op *op;
    int64_t now = ctr_time_now_ms();

    if (batch) {
        char err[160];
        api_name_list names; /* on the stack: only the count is cleared */
        const char *q =
            evhttp_uri_get_query(evhttp_request_get_evhttp_uri(req));
        if (api_query_batch(q, &names, err, sizeof(err)) != 0) {
            app->metrics.rejected_4xx++;
            api_reply_error(req, 400, "invalid_query", "names", err);
            return;
        }
        if ((op = read_op_new(names.n)) != NULL)
            for (size_t i = 0; i < names.n; i++)
                memcpy(op->items[i].name, names.names[i],
                       sizeof(op->items[i].name));
    } else if ((op = read_op_new(1)) != NULL) {
        memcpy(op->items[0].name, route->name, sizeof(op->items[0].name));
    }
    if (op == NULL) {
        api_reply_error(req, 500, "internal", NULL, "out of memory");
        return;
    }
    op->app = app;
    op->req = req;
    op->batch = batch;
    for (size_t i = 0; i < op->n; i++) {
        read_item *it = &op->items[i];
        it->def = ctr_config_counter(app->cfg, it->name);
        api_live_key(it->def, it->name, now, it->key, sizeof(it->key),
                     it->period);
        op->key_ptrs[i] = it->key;
    }
    app->inflight++;
    if (api_redis_get(app->redis, op->key_ptrs, op->n,
                      app->cfg->redis_timeout_ms, read_from_redis_done,
                      op) != 0)
        read_from_pg(op);
}

/* ------------------------------------------------------------- history */

typedef struct history_op {
    api_app *app;
    struct evhttp_request *req;
    const ctr_counter_def *def;
    char name[CTR_NAME_MAX + 1];
    const char *interval;
    const ctr_tz *tz;       /* the zone points are shown in */
    int64_t from_ms, to_ms; /* the range used, given or by default */
} history_op;

/*
 * Buckets are kept per minute. Days are sums over the local days of the
 * zone ($5), stepped in local time so that a day is 23, 24 or 25 hours as
 * the calendar says. Minutes and hours are stepped in absolute time from a
 * start aligned in that zone (a half-hour zone has half-past hours), so a
 * DST change neither merges two hours nor repeats one. Empty periods come
 * back as 0. Sums are numeric, exact at any size (a minute of late events
 * can pass int64), and answered as PostgreSQL prints them.
 */
static const char history_day_sql[] =
    "WITH s AS ("
    "  SELECT g AT TIME ZONE $4 AS p_start,"
    "         (g + interval '1 day') AT TIME ZONE $4 AS p_end"
    "  FROM generate_series("
    "    date_trunc('day', $2::timestamptz AT TIME ZONE $4),"
    "    $3::timestamptz AT TIME ZONE $4 - interval '1 microsecond',"
    "    interval '1 day') g)"
    "SELECT (extract(epoch FROM s.p_start) * 1000)::bigint,"
    "       coalesce(sum(b.value), 0) "
    "FROM s LEFT JOIN counter_buckets b ON b.name = $1 "
    "  AND b.bucket_start >= s.p_start AND b.bucket_start < s.p_end "
    "GROUP BY s.p_start ORDER BY s.p_start";

/* $5: "minute" or "hour" */
static const char history_step_sql[] =
    "WITH s AS ("
    "  SELECT g AS p_start, g + ('1 ' || $5)::interval AS p_end"
    "  FROM generate_series("
    "    date_trunc($5, $2::timestamptz AT TIME ZONE $4) AT TIME ZONE $4,"
    "    $3::timestamptz - interval '1 microsecond',"
    "    ('1 ' || $5)::interval) g)"
    "SELECT (extract(epoch FROM s.p_start) * 1000)::bigint,"
    "       coalesce(sum(b.value), 0) "
    "FROM s LEFT JOIN counter_buckets b ON b.name = $1 "
    "  AND b.bucket_start >= s.p_start AND b.bucket_start < s.p_end "
    "GROUP BY s.p_start ORDER BY s.p_start";

/* How many periods [from, to) spans once from is aligned as the query
 * aligns it. */
static int64_t history_points(const ctr_tz *tz, int64_t from, int64_t to,
                              int64_t step_ms)
{
    if (step_ms == 86400000) {
        ctr_date a = ctr_tz_local_day(tz, from, NULL, NULL);
        ctr_date b = ctr_tz_local_day(tz, to - 1, NULL, NULL);
        return ctr_days_from_civil(b.year, b.month, b.day) -
               ctr_days_from_civil(a.year, a.month, a.day) + 1;
    }
    int64_t local = from + (int64_t)ctr_tz_offset_s(tz, from) * 1000;
    int64_t aligned = from - (((local % step_ms) + step_ms) % step_ms);
    return (to - aligned + step_ms - 1) / step_ms;
}

/* Whether every row is (start ms in int64, an integer of any size). */
static int history_rows_ok(const PGresult *res)
{
    int64_t v;
    for (int i = 0; i < PQntuples(res); i++)
        if (PQnfields(res) != 2 || field_int(res, i, 0, &v) != 0 ||
            PQgetisnull(res, i, 1) || ctr_pg_int(PQgetvalue(res, i, 1), &v) < 0)
            return 0;
    return 1;
}

static void history_done(const PGresult *res, void *arg)
{
    history_op *op = arg;
    if (res == NULL || !history_rows_ok(res)) {
        api_reply_error(op->req, 503, "unavailable", NULL,
                        "postgresql could not answer in time");
    } else {
        struct evbuffer *b = evbuffer_new();
        evbuffer_add_printf(b,
                            "{\"name\":\"%s\",\"kind\":\"%s\",\"interval\":"
                            "\"%s\",\"timezone\":",
                            op->name, ctr_kind_name(op->def->kind),
                            op->interval);
        api_json_append_string(b, ctr_tz_name(op->tz));
        char from[40], to[40];
        ctr_time_format_offset(op->from_ms,
                               ctr_tz_offset_s(op->tz, op->from_ms), from,
                               sizeof(from));
        ctr_time_format_offset(op->to_ms, ctr_tz_offset_s(op->tz, op->to_ms),
                               to, sizeof(to));
        evbuffer_add_printf(b, ",\"from\":\"%s\",\"to\":\"%s\"", from, to);
        if (op->def->kind == CTR_KIND_UNIQUE && op->def->dedup == CTR_DEDUP_HLL)
            evbuffer_add_printf(b, ",\"approximate\":true");
        evbuffer_add_printf(b, ",\"points\":[");
        for (int i = 0; i < PQntuples(res); i++) {
            char ts[40];
            int64_t start;
            (void)field_int(res, i, 0, &start); /* checked above */
            ctr_time_format_offset(start, ctr_tz_offset_s(op->tz, start), ts,
                                   sizeof(ts));
            evbuffer_add_printf(b, "%s{\"start\":\"%s\",\"value\":%s}",
                                i ? "," : "", ts, PQgetvalue(res, i, 1));
        }
        evbuffer_add_printf(b, "]}\n");
        api_reply_json(op->req, 200, b);
        evbuffer_free(b);
    }
    op->app->inflight--;
    free(op);
}

static int history_bad(api_app *app, struct evhttp_request *req,
                       const char *field, const char *message)
{
    app->metrics.rejected_4xx++;
    api_reply_error(req, 400, "invalid_query", field, message);
    return -1;
}

void api_handle_history(api_app *app, struct evhttp_request *req,
                        const api_route *route)
{
    const char *q = evhttp_uri_get_query(evhttp_request_get_evhttp_uri(req));
    api_history_query hq;
    const char *field = NULL;
    history_op *op = NULL;
    char msg[160];

    if (api_query_history(q, &hq, &field, msg, sizeof(msg)) != 0) {
        history_bad(app, req, field, msg);
        return;
    }
    const ctr_counter_def *def = ctr_config_counter(app->cfg, route->name);
    char tzerr[200];
    /* minutes are the same everywhere; hours and days follow the zone */
    const ctr_tz *tz =
        hq.step_ms == 60000 ? ctr_tz_get("UTC", tzerr, sizeof(tzerr)) : def->tz;
    if (tz == NULL)
        tz = def->tz;
    if (api_history_default_range(&hq, tz, ctr_time_now_ms(), &field, msg,
                                  sizeof(msg)) != 0) {
        history_bad(app, req, field, msg);
        return;
    }
    const int64_t from = hq.from_ms, to = hq.to_ms, step_ms = hq.step_ms;
    const char *iv = hq.interval;
    if (history_points(tz, from, to, step_ms) > HISTORY_MAX_POINTS) {
        snprintf(msg, sizeof(msg),
                 "to: the range holds more than %d %s points; narrow it or "
                 "use a coarser interval",
                 HISTORY_MAX_POINTS, iv);
        history_bad(app, req, "to", msg);
        return;
    }

    op = calloc(1, sizeof(*op));
    if (op == NULL) {
        api_reply_error(req, 500, "internal", NULL, "out of memory");
        return;
    }
    op->app = app;
    op->req = req;
    op->def = def;
    op->interval = iv;
    op->tz = tz;
    op->from_ms = from;
    op->to_ms = to;
    memcpy(op->name, route->name, sizeof(op->name));
    char from_iso[40], to_iso[40];
    ctr_time_format_rfc3339(from, from_iso, sizeof(from_iso));
    ctr_time_format_rfc3339(to, to_iso, sizeof(to_iso));
    const char *params[5] = {op->name, from_iso, to_iso, ctr_tz_name(op->tz),
                             iv};
    app->inflight++;
    if (api_pg_query(
            app->pg, step_ms == 86400000 ? history_day_sql : history_step_sql,
            step_ms == 86400000 ? 4 : 5, params, history_done, op) != 0) {
        app->inflight--;
        free(op);
        api_reply_error(req, 503, "unavailable", NULL,
                        "postgresql is busy; try again");
    }
}

/* --------------------------------------------------------- definitions */

static void append_def(struct evbuffer *b, const ctr_counter_def *d)
{
    evbuffer_add_printf(b, "{\"pattern\":");
    api_json_append_string(b, d->pattern);
    evbuffer_add_printf(b, ",\"kind\":\"%s\",\"reset\":\"%s\",\"timezone\":",
                        ctr_kind_name(d->kind), ctr_reset_name(d->reset));
    api_json_append_string(b, ctr_tz_name(d->tz));
    if (d->kind == CTR_KIND_GAUGE) {
        if (d->has_min)
            evbuffer_add_printf(b, ",\"min\":%" PRId64, d->min);
        if (d->has_max)
            evbuffer_add_printf(b, ",\"max\":%" PRId64, d->max);
        evbuffer_add_printf(b, ",\"on_bound\":\"%s\"",
                            ctr_on_bound_name(d->on_bound));
    }
    if (d->kind == CTR_KIND_UNIQUE)
        evbuffer_add_printf(b, ",\"dedup\":\"%s\"", ctr_dedup_name(d->dedup));
    evbuffer_add_printf(b, ",\"retention_days\":%d}", d->retention_days);
}

void api_handle_definitions(api_app *app, struct evhttp_request *req)
{
    const ctr_config *cfg = app->cfg;
    struct evbuffer *b = evbuffer_new();
    const ctr_counter_def *fallback = ctr_config_counter(cfg, "");

    evbuffer_add_printf(b, "{\"definitions\":[");
    for (size_t i = 0; i < cfg->n_counters; i++) {
        if (i)
            evbuffer_add(b, ",", 1);
        append_def(b, &cfg->counters[i]);
    }
    /* what an undeclared name gets ("*" when declared, else built in) */
    evbuffer_add_printf(b, "],\"default\":");
    append_def(b, fallback);
    evbuffer_add_printf(b, "}\n");
    api_reply_json(req, 200, b);
    evbuffer_free(b);
}

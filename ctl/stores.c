/*
 * stores.c - see stores.h.
 *
 * The values are read as counter-api reads them (api/read_path.c): the
 * value {c:NAME} and its stamp {c:NAME}:t, or a daily counter's window of today
 * in its zone; PostgreSQL's fallback is the api's own query. Redis is only used
 * when it holds the epoch key: a Redis that restarted empty answers 0 for
 * everything until it is restored, and the api does not read it either. Redis
 * is one server or a Redis Cluster (redis/rclient.h): SCAN runs on every
 * master, each MGET goes to the master of its key.
 */
#include "ctl/stores.h"

#include "common/pgconn.h"
#include "common/strbuf.h"
#include "common/timeutil.h"
#include "common/tz.h"
#include "ctl/cli.h"
#include "redis/apply.h"
#include "redis/rclient.h"
#include "redis/restore.h"

#include <hiredis/hiredis.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum {
    REDIS_TIMEOUT_MS = 5000, /* per command; SCAN of a large keyspace */
    SCAN_COUNT = 1000,       /* keys per SCAN step; MGETs per pipeline */
    PG_CHUNK = 1000,         /* names per array query */
};

enum store_state { STORE_UNTRIED, STORE_UP, STORE_DOWN };

struct ctl_stores {
    const ctr_config *cfg;
    ctr_rclient *redis; /* one server, or a Redis Cluster */
    enum store_state redis_state;
    PGconn *pg;
    enum store_state pg_state;
};

/* ---------------------------------------------------------- the list */

ctl_value *ctl_values_add(ctl_values *v, const ctr_config *cfg,
                          const char *name, size_t len, int64_t now_ms)
{
    if (len > CTR_NAME_MAX)
        return NULL;
    if (v->n == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 64;
        ctl_value *grown = realloc(v->items, cap * sizeof(*grown));
        if (grown == NULL)
            return NULL;
        v->items = grown;
        v->cap = cap;
    }
    ctl_value *it = &v->items[v->n++];
    memset(it, 0, sizeof(*it));
    memcpy(it->name, name, len);
    it->def = ctr_config_counter(cfg, it->name);
    if (it->def->reset == CTR_RESET_DAILY)
        ctr_date_format(ctr_tz_local_day(it->def->tz, now_ms, NULL, NULL),
                        it->period, sizeof(it->period));
    return it;
}

void ctl_values_free(ctl_values *v)
{
    free(v->items);
    v->items = NULL;
    v->n = v->cap = 0;
}

static int cmp_name(const void *a, const void *b)
{
    return strcmp(((const ctl_value *)a)->name, ((const ctl_value *)b)->name);
}

/* Sorts v->items[from..n) by name and keeps each name there once. */
static void sort_unique(ctl_values *v, size_t from)
{
    size_t out = from;
    if (v->n <= from)
        return;
    ctl_value *it = v->items;
    qsort(it + from, v->n - from, sizeof(*it), cmp_name);
    for (size_t i = from + 1; i < v->n; i++)
        if (strcmp(it[out].name, it[i].name) != 0)
            it[++out] = it[i];
    v->n = out + 1;
}

/* --------------------------------------------------------- the stores */

ctl_stores *ctl_stores_new(const ctr_config *cfg)
{
    ctl_stores *s = calloc(1, sizeof(*s));
    if (s)
        s->cfg = cfg;
    return s;
}

void ctl_stores_free(ctl_stores *s)
{
    if (s == NULL)
        return;
    ctr_rclient_free(s->redis);
    PQfinish(s->pg);
    free(s);
}

/* The Redis the messages name: the cluster's seed nodes, or the server. */
static const char *redis_name(const ctr_config *cfg)
{
    return cfg->redis_cluster_nodes[0] ? cfg->redis_cluster_nodes
                                       : cfg->redis_addr;
}

static void redis_down(ctl_stores *s, const char *why)
{
    ctl_err("redis unavailable: %s", why);
    ctr_rclient_free(s->redis);
    s->redis = NULL;
    s->redis_state = STORE_DOWN;
}

/* Connects once, and checks the epoch key. 0 when Redis can be read. */
static int redis_up(ctl_stores *s)
{
    char err[512];

    if (s->redis_state != STORE_UNTRIED)
        return s->redis_state == STORE_UP ? 0 : -1;
    s->redis = ctr_rclient_new(s->cfg, REDIS_TIMEOUT_MS, err, sizeof(err));
    if (s->redis == NULL) {
        redis_down(s, err);
        return -1;
    }
    char epoch_id[CTR_EPOCH_MAX];
    int epoch = ctr_redis_epoch_get(s->redis, epoch_id, sizeof(epoch_id));
    if (epoch <= 0) {
        const char *why = ctr_rclient_errstr(s->redis);
        snprintf(err, sizeof(err),
                 epoch == 0 ? "redis at %s has no epoch %s* (it restarted "
                              "without its data or is being restored)"
                            : "redis at %s: reading %s* failed: %s",
                 redis_name(s->cfg), CTR_APPLY_EPOCH_PREFIX,
                 why[0] ? why : "unexpected reply");
        redis_down(s, err);
        return -1;
    }
    s->redis_state = STORE_UP;
    return 0;
}

static void pg_down(ctl_stores *s, const char *what, const char *why)
{
    size_t len = strlen(why);
    while (len > 0 && why[len - 1] == '\n')
        len--;
    ctl_err("postgresql unavailable: %s%.*s", what, (int)len, why);
    PQfinish(s->pg);
    s->pg = NULL;
    s->pg_state = STORE_DOWN;
}

static int pg_up(ctl_stores *s)
{
    char err[512];

    if (s->pg_state != STORE_UNTRIED)
        return s->pg_state == STORE_UP ? 0 : -1;
    s->pg = ctr_pg_connect(s->cfg, "counterctl", err, sizeof(err));
    if (s->pg == NULL) {
        pg_down(s, "", err);
        return -1;
    }
    s->pg_state = STORE_UP;
    return 0;
}

/* Runs sql; the result (the caller clears it), or NULL with PostgreSQL
 * marked down and the reason printed. */
static PGresult *pg_run(ctl_stores *s, const char *sql, int nparams,
                        const char *const *params, const char *what)
{
    PGresult *res =
        PQexecParams(s->pg, sql, nparams, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        char prefix[128];
        snprintf(prefix, sizeof(prefix), "%s failed: ", what);
        pg_down(s, prefix, PQerrorMessage(s->pg));
        PQclear(res);
        return NULL;
    }
    return res;
}

/* -------------------------------------------------------------- names */

/* The counter name of a value key ({c:NAME} or {c:NAME}:d:YYYY-MM-DD);
 * 0 with *len set, or -1 for any other key (dedup sets, guards, fences). */
static int value_key_name(const char *key, size_t len, size_t *name_len)
{
    ctr_date d;
    char day[11];

    if (len < 4 || memcmp(key, "{c:", 3) != 0)
        return -1;
    const char *close = memchr(key + 3, '}', len - 3);
    if (close == NULL || !ctr_name_valid(key + 3, (size_t)(close - key - 3)))
        return -1;
    *name_len = (size_t)(close - key - 3);
    size_t rest = len - (size_t)(close + 1 - key);
    if (rest == 0)
        return 0;
    if (rest != 13 || memcmp(close + 1, ":d:", 3) != 0)
        return -1;
    memcpy(day, close + 4, 10);
    day[10] = '\0';
    return ctr_date_parse(day, &d);
}

/* One SCAN over the masters: what each step needs, and the first failure. */
typedef struct scan_state {
    ctl_stores *s;
    const char *match;
    int64_t now_ms;
    ctl_values *out;
    size_t from; /* out's first item of this listing */
    int oom;
    char why[512];
} scan_state;

/* SCANs one master (the one server when not a cluster); a key lives on
 * one master only, so the union of theirs is the whole keyspace. */
static int scan_node(redisContext *node, void *arg)
{
    scan_state *st = arg;
    ctl_stores *s = st->s;
    ctl_values *out = st->out;
    char cursor[32] = "0", count[16];

    snprintf(count, sizeof(count), "%d", SCAN_COUNT);
    do {
        const char *argv[] = {"SCAN",    cursor,  "MATCH",
                              st->match, "COUNT", count};
        redisReply *r = redisCommandArgv(node, 6, argv, NULL);
        if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
            r->element[0]->type != REDIS_REPLY_STRING ||
            r->element[0]->len >= sizeof(cursor) ||
            r->element[1]->type != REDIS_REPLY_ARRAY) {
            char where[320] = "";
            if (s->cfg->redis_cluster_nodes[0])
                snprintf(where, sizeof(where), "node %s:%d: ", node->tcp.host,
                         node->tcp.port);
            snprintf(st->why, sizeof(st->why), "redis at %s: SCAN failed: %s%s",
                     redis_name(s->cfg), where,
                     r && r->type == REDIS_REPLY_ERROR ? r->str
                     : node->err                       ? node->errstr
                                                       : "unexpected reply");
            freeReplyObject(r);
            return -1;
        }
        snprintf(cursor, sizeof(cursor), "%s", r->element[0]->str);
        for (size_t i = 0; i < r->element[1]->elements; i++) {
            const redisReply *k = r->element[1]->element[i];
            size_t name_len;
            if (k->type != REDIS_REPLY_STRING ||
                value_key_name(k->str, k->len, &name_len) != 0)
                continue;
            if (ctl_values_add(out, s->cfg, k->str + 3, name_len, st->now_ms) ==
                NULL) {
                freeReplyObject(r);
                st->oom = 1;
                return -1;
            }
        }
        freeReplyObject(r);
        /* a counter has many keys (windows, dedup sets, guards) and SCAN
         * may return a key twice: keep the list small as it grows */
        if (out->n - st->from > 4 * SCAN_COUNT && out->n == out->cap)
            sort_unique(out, st->from);
    } while (strcmp(cursor, "0") != 0);
    return 0;
}

/* SCAN, never KEYS: a large keyspace must not stall Redis. */
static int redis_names(ctl_stores *s, const char *prefix, int64_t now_ms,
                       ctl_values *out)
{
    char match[CTR_NAME_MAX + 8];
    scan_state st = {s, match, now_ms, out, out->n, 0, ""};

    snprintf(match, sizeof(match), "{c:%s*", prefix);
    if (ctr_rclient_each_master(s->redis, scan_node, &st) == 0)
        return 0;
    if (st.oom) {
        ctl_err("out of memory");
        return -1;
    }
    if (st.why[0] == '\0') /* a master could not be reached */
        snprintf(st.why, sizeof(st.why), "redis at %s: SCAN failed: %s",
                 redis_name(s->cfg), ctr_rclient_errstr(s->redis));
    redis_down(s, st.why);
    return -1;
}

static int pg_names(ctl_stores *s, const char *prefix, int64_t now_ms,
                    ctl_values *out)
{
    static const char sql[] =
        "SELECT name FROM counter_totals WHERE starts_with(name, $1) "
        "UNION SELECT name FROM counter_daily WHERE starts_with(name, $1)";
    const char *params[] = {prefix};
    PGresult *res = pg_run(s, sql, 1, params, "listing counters");
    int rc = 0;

    if (res == NULL)
        return -1;
    for (int i = 0; i < PQntuples(res) && rc == 0; i++) {
        const char *name = PQgetvalue(res, i, 0);
        size_t len = strlen(name);
        if (!ctr_name_valid(name, len))
            continue; /* no api could have written it */
        if (ctl_values_add(out, s->cfg, name, len, now_ms) == NULL) {
            ctl_err("out of memory");
            rc = -1;
        }
    }
    PQclear(res);
    return rc;
}

int ctl_stores_names(ctl_stores *s, const char *prefix, ctl_values *out,
                     int *from)
{
    int64_t now_ms = ctr_time_now_ms();
    size_t before = out->n;

    *from = 0;
    if (pg_up(s) == 0 && pg_names(s, prefix, now_ms, out) == 0)
        *from |= CTL_NAMES_POSTGRES;
    else
        out->n = before;
    size_t mark = out->n;
    if (redis_up(s) == 0 && redis_names(s, prefix, now_ms, out) == 0)
        *from |= CTL_NAMES_REDIS;
    else
        out->n = mark; /* a partial SCAN says nothing */
    sort_unique(out, before);
    return *from ? 0 : -1;
}

/* ------------------------------------------------------------- values */

static void key_of(const ctl_value *it, char *key, size_t len)
{
    snprintf(key, len, "{c:%s}%s%s", it->name, it->period[0] ? ":d:" : "",
             it->period);
}

/* One MGET answer ([value, stamp]) into it. 0, or -1 if malformed. */
static int take_mget(const redisReply *r, ctl_value *it)
{
    it->value = it->updated_ms = 0;
    it->invalid = 0;
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 2)
        return -1;
    const redisReply *v = r->element[0], *t = r->element[1];
    if (v->type == REDIS_REPLY_STRING) {
        if (ctl_parse_i64(v->str, &it->value) != 0)
            return -1;
    } else if (v->type != REDIS_REPLY_NIL) {
        return -1;
    }
    if (t->type == REDIS_REPLY_STRING &&
        ctl_parse_i64(t->str, &it->updated_ms) != 0)
        return -1;
    return 0;
}

/* One pipeline of MGETs: the items it reads, and the first failure. */
typedef struct mget_state {
    ctl_stores *s;
    ctl_value *items; /* the pipeline's first item; reply i is items[i] */
    char why[512];
} mget_state;

static void on_mget(const redisReply *r, size_t i, void *arg)
{
    mget_state *st = arg;
    ctl_value *it = &st->items[i];

    if (r == NULL) {
        if (st->why[0] == '\0')
            snprintf(st->why, sizeof(st->why), "redis at %s: MGET failed: %s",
                     redis_name(st->s->cfg), ctr_rclient_errstr(st->s->redis));
        return;
    }
    if (take_mget(r, it) != 0) {
        /* one damaged key says nothing of the others */
        it->value = it->updated_ms = 0;
        it->invalid = 1;
        ctl_err("redis at %s holds no integer value for %s%s%s",
                redis_name(st->s->cfg), it->name, it->period[0] ? " day " : "",
                it->period);
    }
}

/* Pipelined MGET of value and stamp, SCAN_COUNT at a time, each to the
 * server of its key. 0, or -1 (Redis down). */
static int redis_values(ctl_stores *s, ctl_values *vals)
{
    char key[CTR_NAME_MAX + 32], tkey[CTR_NAME_MAX + 34];

    for (size_t i = 0; i < vals->n;) {
        size_t end = i + SCAN_COUNT < vals->n ? i + SCAN_COUNT : vals->n;
        mget_state st = {s, &vals->items[i], ""};
        for (size_t j = i; j < end; j++) {
            key_of(&vals->items[j], key, sizeof(key));
            if (ctr_apply_stamp_key(tkey, sizeof(tkey), key) != 0)
                tkey[0] = '\0'; /* cannot be: the key room has space */
            const char *argv[] = {"MGET", key, tkey};
            if (ctr_rclient_append(s->redis, key, 3, argv, NULL) != 0) {
                /* out of memory; freeing the client drops the queue */
                snprintf(st.why, sizeof(st.why), "redis at %s: MGET failed: %s",
                         redis_name(s->cfg), ctr_rclient_errstr(s->redis));
                redis_down(s, st.why);
                return -1;
            }
        }
        if (ctr_rclient_drain(s->redis, on_mget, &st) != 0 && st.why[0] == '\0')
            snprintf(st.why, sizeof(st.why), "redis at %s: MGET failed: %s",
                     redis_name(s->cfg), ctr_rclient_errstr(s->redis));
        if (st.why[0]) {
            redis_down(s, st.why);
            return -1;
        }
        i = end;
    }
    return 0;
}

static int64_t field_i64(const PGresult *res, int row, int col)
{
    int64_t v = 0;
    if (PQgetisnull(res, row, col) ||
        ctl_parse_i64(PQgetvalue(res, row, col), &v) != 0)
        return 0;
    return v;
}

/*
 * A value of counter_totals or counter_daily (numeric) into it. A live
 * value is within int64, but PostgreSQL's sum may lie outside for a while
 * (it adds events in log order) or for good (an event was quarantined):
 * then the item is invalid and the exact value named on stderr.
 */
static void take_pg_value(const PGresult *res, int row, ctl_value *it)
{
    const char *text = PQgetvalue(res, row, 0);
    it->value = 0;
    it->invalid = 0;
    if (PQgetisnull(res, row, 0) || ctr_pg_int(text, &it->value) == 0)
        return;
    it->invalid = 1;
    ctl_err("postgresql holds %.60s%s for %s%s%s, outside the 64-bit range "
            "of a live value",
            text, strlen(text) > 60 ? "..." : "", it->name,
            it->period[0] ? " day " : "", it->period);
}

static int pg_values(ctl_stores *s, ctl_values *vals, int64_t *as_of_ms)
{
    ctr_strbuf names = {0}, days = {0};
    int rc = -1;

    *as_of_ms = 0;
    for (size_t i = 0; i < vals->n;) {
        size_t end = i + PG_CHUNK < vals->n ? i + PG_CHUNK : vals->n;
        ctr_pgarray_open(&names);
        ctr_pgarray_open(&days);
        for (size_t j = i; j < end; j++) {
            ctr_pgarray_text(&names, vals->items[j].name);
            if (vals->items[j].period[0])
                ctr_pgarray_text(&days, vals->items[j].period);
            else
                ctr_strbuf_puts(&days, days.len > 1 ? ",NULL" : "NULL");
        }
        ctr_pgarray_close(&names);
        ctr_pgarray_close(&days);
        if (names.failed || days.failed) {
            ctl_err("out of memory");
            goto out;
        }
        const char *params[] = {names.s, days.s};
        PGresult *res =
            pg_run(s, ctr_sql_current_values, 2, params, "reading the values");
        if (res == NULL)
            goto out;
        if ((size_t)PQntuples(res) != end - i) {
            PQclear(res);
            pg_down(s, "reading the values: ", "unexpected row count");
            goto out;
        }
        for (size_t j = i; j < end; j++) {
            take_pg_value(res, (int)(j - i), &vals->items[j]);
            vals->items[j].updated_ms = field_i64(res, (int)(j - i), 1);
            *as_of_ms = field_i64(res, (int)(j - i), 2);
        }
        PQclear(res);
        i = end;
    }
    if (vals->n == 0) {
        /* nothing to read, but say how fresh PostgreSQL is all the same */
        PGresult *res = pg_run(
            s,
            "SELECT (extract(epoch FROM max(updated_at)) * 1000)::bigint "
            "FROM consumer_offsets",
            0, NULL, "reading the persister's offsets");
        if (res == NULL)
            goto out;
        *as_of_ms = PQntuples(res) ? field_i64(res, 0, 0) : 0;
        PQclear(res);
    }
    rc = 0;
out:
    ctr_strbuf_clear(&names);
    ctr_strbuf_clear(&days);
    return rc;
}

int ctl_stores_values(ctl_stores *s, ctl_values *vals, ctl_source *src)
{
    memset(src, 0, sizeof(*src));
    if (redis_up(s) == 0 && redis_values(s, vals) == 0) {
        src->store = "redis";
        return 0;
    }
    if (pg_up(s) == 0 && pg_values(s, vals, &src->as_of_ms) == 0) {
        src->store = "postgres";
        src->stale = 1;
        return 0;
    }
    return -1;
}

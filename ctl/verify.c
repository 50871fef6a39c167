/*
 * verify.c - see verify.h.
 *
 * Each compared value (a counter's total, or one of its daily windows) is
 * one item of a list. Redis is read in bulk (SCAN, then pipelined GETs)
 * and PostgreSQL in a few array queries inside one repeatable-read
 * transaction, so that its values are of one instant; each row found
 * becomes an item of its own, and sorting by (name, day) and merging
 * neighbours pairs the two sides up without a hash table.
 *
 * Live writes: the api applies a write to Redis before Kafka has it, and
 * the persister folds it into PostgreSQL later. So a value is read from
 * Redis, then from PostgreSQL once the persister has caught up, then (if it
 * differs) from Redis again; PostgreSQL then holds every write Redis had at
 * the first read (but those still on their way to Kafka) and none that
 * Redis lacked at the second. A value is only a difference if PostgreSQL's
 * lies outside what Redis held between the two reads; a counter written
 * all the time would otherwise differ at almost every look.
 *
 * A value with writes still pending (its pending hash, redis/apply.h:
 * applied, not yet known to be in the log; the api or the applier's
 * resolver settles them) is not a difference yet: it is named as pending.
 *
 * Plain blocking clients: this is a one-shot operator command. Redis is
 * one server or a Redis Cluster (redis/rclient.h): SCAN runs on every
 * master, each GET goes to the master of its key.
 */
#include "ctl/verify.h"

#include "common/strbuf.h"

#include "common/name.h"
#include "common/pgconn.h"
#include "common/timeutil.h"
#include "common/tz.h"
#include "redis/rclient.h"

#include <hiredis/hiredis.h>
#include <librdkafka/rdkafka.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum {
    SCAN_COUNT = 1000, /* keys per SCAN step; GETs per pipeline */
    PG_CHUNK = 1000,   /* names or windows per array query */
    POLL_MS = 200,     /* between two looks at the persister's offsets */
    RECHECK_PAUSE_MS = 1000,
    /* Not redis.timeout_ms: that is the api's deadline for one read under
     * load (50 ms by default), too short for SCAN over a large keyspace. */
    REDIS_TIMEOUT_MS = 5000,
    KAFKA_TIMEOUT_MS = 5000,
    KEY_MAX = CTR_NAME_MAX + 32,
};

/* One read of a value from Redis. */
typedef struct ver_redis {
    int found;
    int invalid; /* the value is not a 64-bit integer, or not a string */
    int64_t value;
} ver_redis;

typedef struct ver_item {
    char name[CTR_NAME_MAX + 1];
    char day[11]; /* "YYYY-MM-DD" of a daily window; "" for a total */
    ver_redis before, after; /* Redis before and after PostgreSQL's read */
    int in_pg;
    int64_t pg;
    /* PostgreSQL's value when it lies outside int64 (a sum of events no
     * live value can hold): its decimal text, cut at 40 digits; else "" */
    char pg_exact[44];
} ver_item;

typedef struct ver_list {
    ver_item *items;
    size_t n, cap;
} ver_list;

/* A growing string, for PostgreSQL array literals. */

typedef struct ver_ctx {
    const ctr_config *cfg;
    ctr_rclient *redis;
    PGconn *pg;
    rd_kafka_t *rk;
    int partition_cnt;
    int64_t *high;   /* per partition: the topic's high watermark */
    int64_t *stored; /* per partition: the persister's next offset */
    /* A store or the broker did not answer, or the persister did not
     * catch up: the check could not be made (CTL_VERIFY_UNREACHABLE). */
    int unreachable;
} ver_ctx;

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* Whole-string base-10 int64, as Redis and PostgreSQL print them. */
static int parse_i64(const char *s, size_t len, int64_t *out)
{
    char *end;
    if (len == 0 || strlen(s) != len ||
        !(s[0] == '-' || (s[0] >= '0' && s[0] <= '9')))
        return -1;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno == ERANGE || *end != '\0')
        return -1;
    *out = (int64_t)v;
    return 0;
}

/* ------------------------------------------------------------ the list */

static ver_item *list_add(ver_list *l, const char *name, size_t name_len,
                          const char *day)
{
    if (name_len > CTR_NAME_MAX)
        return NULL;
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 256;
        ver_item *grown = realloc(l->items, cap * sizeof(*grown));
        if (grown == NULL) {
            fprintf(stderr, "counterctl: out of memory\n");
            return NULL;
        }
        l->items = grown;
        l->cap = cap;
    }
    ver_item *it = &l->items[l->n++];
    memset(it, 0, sizeof(*it));
    memcpy(it->name, name, name_len);
    snprintf(it->day, sizeof(it->day), "%s", day);
    return it;
}

static void list_free(ver_list *l)
{
    free(l->items);
    l->items = NULL;
    l->n = l->cap = 0;
}

static int cmp_item(const void *a, const void *b)
{
    const ver_item *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    return c ? c : strcmp(x->day, y->day);
}

/* Sorts l and merges items of the same (name, day) into one: SCAN may
 * return a key twice, and a window may be read by two queries. */
static void list_merge(ver_list *l)
{
    size_t out = 0;

    if (l->n == 0)
        return;
    qsort(l->items, l->n, sizeof(*l->items), cmp_item);
    for (size_t i = 1; i < l->n; i++) {
        ver_item *keep = &l->items[out], *it = &l->items[i];
        if (cmp_item(keep, it) != 0) {
            l->items[++out] = *it;
            continue;
        }
        if (it->before.found)
            keep->before = it->before;
        if (it->in_pg) {
            keep->in_pg = 1;
            keep->pg = it->pg;
            memcpy(keep->pg_exact, it->pg_exact, sizeof(keep->pg_exact));
        }
    }
    l->n = out + 1;
}

static int list_append(ver_list *dst, const ver_list *src)
{
    for (size_t i = 0; i < src->n; i++) {
        const ver_item *s = &src->items[i];
        ver_item *d = list_add(dst, s->name, strlen(s->name), s->day);
        if (d == NULL)
            return -1;
        *d = *s;
    }
    return 0;
}

static size_t count_names(const ver_list *l)
{
    size_t n = 0;
    for (size_t i = 0; i < l->n; i++)
        if (i == 0 || strcmp(l->items[i].name, l->items[i - 1].name) != 0)
            n++;
    return n;
}

static int is_daily(const ctr_config *cfg, const char *name)
{
    return ctr_config_counter(cfg, name)->reset == CTR_RESET_DAILY;
}

/* Can a late event still land on `day` of this daily counter? Then its
 * window must still be in Redis (the api keeps windows lateness_s past the
 * day's end). Today and later days always can. */
static int window_is_live(const ctr_config *cfg, const char *name,
                          const char *day, int64_t now_ms)
{
    ctr_date d;
    if (ctr_date_parse(day, &d) != 0)
        return 0;
    const ctr_tz *tz = ctr_config_counter(cfg, name)->tz;
    int64_t end_ms = ctr_tz_day_start(tz, ctr_date_add_days(d, 1));
    return end_ms > now_ms - (int64_t)cfg->lateness_s * 1000;
}

static int64_t redis_value(const ver_redis *r)
{
    return r->found ? r->value : 0;
}

static int item_differs(const ctr_config *cfg, const ver_item *it,
                        int64_t now_ms)
{
    int64_t a = redis_value(&it->before), b = redis_value(&it->after);
    int64_t pg = it->in_pg ? it->pg : 0;
    const ctr_counter_def *def = ctr_config_counter(cfg, it->name);

    /* Approximate counters: Redis and PostgreSQL each keep their own
     * HyperLogLog, whose estimates agree only within its error. */
    if (def->kind == CTR_KIND_UNIQUE && def->dedup == CTR_DEDUP_HLL)
        return 0;

    if (it->before.invalid || it->after.invalid)
        return 1;
    /* A window Redis no longer has is only missing while it is live. */
    if (it->day[0] && !it->before.found && !it->after.found &&
        !window_is_live(cfg, it->name, it->day, now_ms))
        return 0;
    if (it->in_pg && it->pg_exact[0])
        return 1; /* no value Redis holds is equal */
    return pg < (a < b ? a : b) || pg > (a < b ? b : a);
}

/* Prints the difference with Redis' newer value. */
static void print_item(const ver_item *it)
{
    char redis[24], pg[sizeof(it->pg_exact)];
    if (it->after.invalid)
        snprintf(redis, sizeof(redis), "invalid");
    else
        snprintf(redis, sizeof(redis), "%" PRId64, redis_value(&it->after));
    if (it->in_pg && it->pg_exact[0])
        memcpy(pg, it->pg_exact, sizeof(pg));
    else
        snprintf(pg, sizeof(pg), "%" PRId64, it->in_pg ? it->pg : 0);
    printf("counter %s%s%s: redis=%s postgres=%s\n", it->name,
           it->day[0] ? " day " : "", it->day, redis, pg);
}

/* ----------------------------------------------------------------- redis */

static void key_of(const ver_item *it, char *key, size_t len)
{
    snprintf(key, len, "{c:%s}%s%s", it->name, it->day[0] ? ":d:" : "",
             it->day);
}

/* 1 if the item's value has writes pending, 0 if not, -1 on error. */
static int has_pending(ver_ctx *c, const ver_item *it)
{
    char key[KEY_MAX + 4];
    key_of(it, key, sizeof(key) - 2);
    strcat(key, ":p");
    redisReply *r = ctr_rclient_cmd(c->redis, key, "EXISTS %s", key);
    int rc = r && r->type == REDIS_REPLY_INTEGER ? r->integer > 0 : -1;
    freeReplyObject(r);
    return rc;
}

/*
 * Splits a key into a counter name and a window date ("" for the counter's
 * own value). Returns -1 for any other key: dedup sets, HLLs, guards and
 * fences live under the same hash tag and hold no value.
 */
static int parse_key(const char *key, size_t len, size_t *name_len,
                     char day[11])
{
    ctr_date d;

    if (len < 4 || memcmp(key, "{c:", 3) != 0)
        return -1;
    const char *close = memchr(key + 3, '}', len - 3);
    if (close == NULL || !ctr_name_valid(key + 3, (size_t)(close - key - 3)))
        return -1;
    *name_len = (size_t)(close - key - 3);
    size_t rest = len - (size_t)(close + 1 - key);
    day[0] = '\0';
    if (rest == 0)
        return 0;
    if (rest != 13 || memcmp(close + 1, ":d:", 3) != 0)
        return -1;
    memcpy(day, close + 4, 10);
    day[10] = '\0';
    return ctr_date_parse(day, &d);
}

/* The Redis the messages name: the cluster's seed nodes, or the server. */
static const char *redis_name(const ctr_config *cfg)
{
    return cfg->redis_cluster_nodes[0] ? cfg->redis_cluster_nodes
                                       : cfg->redis_addr;
}

/* Prints why `what` failed: an error reply r (Redis answering), else
 * `lost` (no answer: the check cannot be made), else a reply of the wrong
 * shape. */
static void redis_failed(ver_ctx *c, const char *what, const redisReply *r,
                         const char *lost)
{
    if (r == NULL && lost)
        c->unreachable = 1;
    fprintf(stderr, "counterctl: redis at %s: %s failed: %s\n",
            redis_name(c->cfg), what,
            r      ? r->str
            : lost ? lost
                   : "unexpected reply");
}

static int redis_open(ver_ctx *c)
{
    char err[512];
    c->redis = ctr_rclient_new(c->cfg, REDIS_TIMEOUT_MS, err, sizeof(err));
    if (c->redis == NULL) {
        fprintf(stderr, "counterctl: %s\n", err);
        c->unreachable = 1;
        return -1;
    }
    return 0;
}

/* One SCAN over the masters. */
typedef struct scan_state {
    ver_ctx *c;
    ver_list *out;
    int failed; /* the reason is printed */
} scan_state;

/* SCANs one master (the one server when not a cluster): a key lives on one
 * master only, so the union of theirs is the whole keyspace. */
static int scan_node(redisContext *node, void *arg)
{
    scan_state *st = arg;
    ver_ctx *c = st->c;
    char cursor[32] = "0";
    redisReply *r = NULL;

    st->failed = 1;
    do {
        r = redisCommand(node, "SCAN %s MATCH %s COUNT %d", cursor, "{c:*",
                         SCAN_COUNT);
        if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
            r->element[0]->type != REDIS_REPLY_STRING ||
            r->element[0]->len >= sizeof(cursor) ||
            r->element[1]->type != REDIS_REPLY_ARRAY) {
            char lost[600];
            if (c->cfg->redis_cluster_nodes[0]) /* say which master */
                snprintf(lost, sizeof(lost), "node %s:%d: %s", node->tcp.host,
                         node->tcp.port, node->errstr);
            else
                snprintf(lost, sizeof(lost), "%s", node->errstr);
            redis_failed(c, "SCAN",
                         r && r->type == REDIS_REPLY_ERROR ? r : NULL,
                         r == NULL ? lost : NULL);
            freeReplyObject(r);
            return -1;
        }
        memcpy(cursor, r->element[0]->str, r->element[0]->len + 1);
        for (size_t i = 0; i < r->element[1]->elements; i++) {
            const redisReply *k = r->element[1]->element[i];
            char day[11];
            size_t name_len;
            if (k->type != REDIS_REPLY_STRING ||
                parse_key(k->str, k->len, &name_len, day) != 0)
                continue;
            char name[CTR_NAME_MAX + 1];
            memcpy(name, k->str + 3, name_len);
            name[name_len] = '\0';
            /* A key of the other kind is left over from before a change of
             * the counter's definition: nothing writes or reads it now. */
            if ((day[0] != '\0') != is_daily(c->cfg, name))
                continue;
            if (list_add(st->out, name, name_len, day) == NULL) {
                freeReplyObject(r);
                return -1;
            }
        }
        freeReplyObject(r);
    } while (strcmp(cursor, "0") != 0);
    st->failed = 0;
    return 0;
}

/* Adds an item for every key that holds a value of the kind the counter's
 * definition says (a window of a daily counter, else the counter's own value);
 * values are read later. SCAN, never KEYS: this must not stall Redis. */
static int redis_scan(ver_ctx *c, ver_list *out)
{
    scan_state st = {c, out, 0};

    if (ctr_rclient_each_master(c->redis, scan_node, &st) == 0)
        return 0;
    if (!st.failed) /* a master could not be reached */
        redis_failed(c, "SCAN", NULL, ctr_rclient_errstr(c->redis));
    return -1;
}

/* One pipeline of GETs: reply i is for items[sent[i]]. */
typedef struct fill_state {
    ver_ctx *c;
    ver_item *items;
    const size_t *sent;
    int after;
    int failed;
} fill_state;

static void on_get(const redisReply *r, size_t i, void *arg)
{
    fill_state *st = arg;
    ver_item *it = &st->items[st->sent[i]];
    ver_redis *to = st->after ? &it->after : &it->before;

    if (r == NULL) {
        if (!st->failed)
            redis_failed(st->c, "GET", NULL, ctr_rclient_errstr(st->c->redis));
        st->failed = 1;
        return;
    }
    memset(to, 0, sizeof(*to));
    if (r->type == REDIS_REPLY_STRING) {
        to->found = 1;
        to->invalid = parse_i64(r->str, r->len, &to->value) != 0;
    } else if (r->type != REDIS_REPLY_NIL) {
        /* WRONGTYPE: something replaced the value */
        to->found = 1;
        to->invalid = 1;
    }
}

/*
 * Reads the value key of each item into its `before` (all items) or
 * `after` (only the items that differ so far), SCAN_COUNT commands per
 * pipeline, each to the server of its key. A missing key is not found.
 */
static int redis_fill(ver_ctx *c, ver_item *items, size_t n, int after,
                      int64_t now_ms)
{
    char key[KEY_MAX];
    size_t sent[SCAN_COUNT];
    size_t i = 0;

    while (i < n) {
        size_t nsent = 0;
        for (; i < n && nsent < SCAN_COUNT; i++) {
            if (after && !item_differs(c->cfg, &items[i], now_ms))
                continue;
            key_of(&items[i], key, sizeof(key));
            const char *argv[] = {"GET", key};
            if (ctr_rclient_append(c->redis, key, 2, argv, NULL) != 0) {
                /* what is queued goes with the client */
                fprintf(stderr, "counterctl: out of memory\n");
                return -1;
            }
            sent[nsent++] = i;
        }
        fill_state st = {c, items, sent, after, 0};
        if (ctr_rclient_drain(c->redis, on_get, &st) != 0 || st.failed) {
            if (!st.failed)
                redis_failed(c, "GET", NULL, ctr_rclient_errstr(c->redis));
            return -1;
        }
    }
    return 0;
}

/* ------------------------------------------------------------ postgresql */

static void pg_failed(ver_ctx *c, const char *what, const PGresult *res)
{
    if (PQstatus(c->pg) == CONNECTION_BAD)
        c->unreachable = 1;
    const char *msg = res ? PQresultErrorMessage(res) : "";
    if (msg[0] == '\0')
        msg = PQerrorMessage(c->pg);
    size_t len = strlen(msg);
    while (len > 0 && msg[len - 1] == '\n')
        len--;
    fprintf(stderr, "counterctl: %s failed: %.*s\n", what, (int)len, msg);
}

/* Runs sql; returns its result (the caller PQclears it) or NULL, with the
 * reason printed. */
static PGresult *pg_run(ver_ctx *c, const char *sql, int nparams,
                        const char *const *params, const char *what)
{
    PGresult *res =
        PQexecParams(c->pg, sql, nparams, NULL, params, NULL, NULL, 0);
    ExecStatusType st = PQresultStatus(res);
    if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
        pg_failed(c, what, res);
        PQclear(res);
        return NULL;
    }
    return res;
}

static int pg_exec(ver_ctx *c, const char *sql)
{
    PGresult *res = pg_run(c, sql, 0, NULL, sql);
    PQclear(res);
    return res ? 0 : -1;
}

/* Adds the (name, day, value) rows of res as PostgreSQL items. Columns:
 * name, day ("" for totals) or none, value. */
static int add_pg_rows(const PGresult *res, int with_day, ver_list *out)
{
    for (int i = 0; i < PQntuples(res); i++) {
        const char *name = PQgetvalue(res, i, 0);
        const char *day = with_day ? PQgetvalue(res, i, 1) : "";
        const char *val = PQgetvalue(res, i, with_day ? 2 : 1);
        int64_t v = 0;
        int range = ctr_pg_int(val, &v);
        if (range < 0) {
            fprintf(stderr, "counterctl: unexpected value %.60s of %s\n", val,
                    name);
            return -1;
        }
        if (strlen(name) > CTR_NAME_MAX)
            continue; /* no Redis key can hold it: not a counter of ours */
        ver_item *it = list_add(out, name, strlen(name), day);
        if (it == NULL)
            return -1;
        it->in_pg = 1;
        it->pg = v;
        if (range > 0)
            snprintf(it->pg_exact, sizeof(it->pg_exact), "%.40s%s", val,
                     strlen(val) > 40 ? "..." : "");
    }
    return 0;
}

/* counter_daily values of the window items among items[0..n). */
static int pg_windows_of(ver_ctx *c, const ver_item *items, size_t n,
                         ver_list *out)
{
    static const char sql[] =
        "SELECT d.name, to_char(d.day, 'YYYY-MM-DD'), d.value "
        "FROM counter_daily d "
        "JOIN unnest($1::text[], $2::date[]) AS k(name, day) "
        "ON d.name = k.name AND d.day = k.day";
    ctr_strbuf names = {0}, days = {0};
    int rc = -1;
    size_t i = 0;

    while (i < n) {
        ctr_pgarray_open(&names);
        ctr_pgarray_open(&days);
        for (size_t added = 0; i < n && added < PG_CHUNK; i++) {
            if (items[i].day[0] == '\0')
                continue;
            ctr_pgarray_text(&names, items[i].name);
            ctr_pgarray_text(&days, items[i].day);
            added++;
        }
        if (names.len == 1)
            break;
        ctr_pgarray_close(&names);
        ctr_pgarray_close(&days);
        if (names.failed || days.failed) {
            fprintf(stderr, "counterctl: out of memory\n");
            goto out;
        }
        const char *params[] = {names.s, days.s};
        PGresult *res = pg_run(c, sql, 2, params, "reading counter_daily");
        if (res == NULL)
            goto out;
        int bad = add_pg_rows(res, 1, out);
        PQclear(res);
        if (bad)
            goto out;
    }
    rc = 0;
out:
    ctr_strbuf_clear(&names);
    ctr_strbuf_clear(&days);
    return rc;
}

/* counter_totals values of the total items among items[0..n). */
static int pg_totals_of(ver_ctx *c, const ver_item *items, size_t n,
                        ver_list *out)
{
    static const char sql[] = "SELECT name, value FROM counter_totals "
                              "WHERE name = ANY($1::text[])";
    ctr_strbuf names = {0};
    int rc = -1;
    size_t i = 0;

    while (i < n) {
        ctr_pgarray_open(&names);
        for (size_t added = 0; i < n && added < PG_CHUNK; i++) {
            if (items[i].day[0] != '\0')
                continue;
            ctr_pgarray_text(&names, items[i].name);
            added++;
        }
        if (names.len == 1)
            break;
        ctr_pgarray_close(&names);
        if (names.failed) {
            fprintf(stderr, "counterctl: out of memory\n");
            goto out;
        }
        const char *params[] = {names.s};
        PGresult *res = pg_run(c, sql, 1, params, "reading counter_totals");
        if (res == NULL)
            goto out;
        int bad = add_pg_rows(res, 0, out);
        PQclear(res);
        if (bad)
            goto out;
    }
    rc = 0;
out:
    ctr_strbuf_clear(&names);
    return rc;
}

/*
 * Every counter's total: those of counters without a daily reset become
 * items; the names of daily counters go to `daily` (their totals are sums
 * over all days and have nothing to match in Redis).
 */
static int pg_all_totals(ver_ctx *c, ver_list *out, ver_list *daily)
{
    PGresult *res = pg_run(c, "SELECT name, value FROM counter_totals", 0, NULL,
                           "reading counter_totals");
    ver_list all = {0};
    int rc = -1;

    if (res == NULL || add_pg_rows(res, 0, &all) != 0)
        goto out;
    for (size_t i = 0; i < all.n; i++) {
        ver_item *it = &all.items[i];
        ver_list *to = is_daily(c->cfg, it->name) ? daily : out;
        ver_item *copy = list_add(to, it->name, strlen(it->name), "");
        if (copy == NULL)
            goto out;
        *copy = *it;
    }
    rc = 0;
out:
    PQclear(res);
    list_free(&all);
    return rc;
}

/*
 * The nonzero counter_daily rows of the named daily counters whose window
 * must still be in Redis (window_is_live). The SQL bound is a coarse one in
 * UTC with two days to spare for any zone; window_is_live decides.
 */
static int pg_live_windows(ver_ctx *c, const ver_list *daily, int64_t now_ms,
                           ver_list *out)
{
    static const char sql[] =
        "SELECT name, to_char(day, 'YYYY-MM-DD'), value FROM counter_daily "
        "WHERE name = ANY($1::text[]) AND day >= $2::date AND value <> 0";
    ctr_strbuf names = {0};
    ver_list rows = {0};
    char since[16];
    int rc = -1;
    time_t since_s = (time_t)((now_ms / 1000) - c->cfg->lateness_s - 2 * 86400);
    struct tm tm;

    if (gmtime_r(&since_s, &tm) == NULL)
        goto out;
    strftime(since, sizeof(since), "%Y-%m-%d", &tm);
    for (size_t i = 0; i < daily->n;) {
        ctr_pgarray_open(&names);
        for (size_t added = 0; i < daily->n && added < PG_CHUNK; i++, added++)
            ctr_pgarray_text(&names, daily->items[i].name);
        ctr_pgarray_close(&names);
        if (names.failed) {
            fprintf(stderr, "counterctl: out of memory\n");
            goto out;
        }
        const char *params[] = {names.s, since};
        PGresult *res = pg_run(c, sql, 2, params, "reading counter_daily");
        if (res == NULL)
            goto out;
        int bad = add_pg_rows(res, 1, &rows);
        PQclear(res);
        if (bad)
            goto out;
    }
    for (size_t i = 0; i < rows.n; i++) {
        const ver_item *it = &rows.items[i];
        if (!window_is_live(c->cfg, it->name, it->day, now_ms))
            continue;
        ver_item *copy = list_add(out, it->name, strlen(it->name), it->day);
        if (copy == NULL)
            goto out;
        *copy = *it;
    }
    rc = 0;
out:
    ctr_strbuf_clear(&names);
    list_free(&rows);
    return rc;
}

/* ----------------------------------------------------------------- kafka */

static int kafka_open(ver_ctx *c)
{
    const ctr_config *cfg = c->cfg;
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_topic_t *rkt = NULL;
    rd_kafka_resp_err_t err;
    char errstr[512];
    int rc = -1;

    /* The producer's passthrough settings carry what it takes to reach the
     * cluster (security.protocol, sasl.*); our own come last and win. No
     * topic auto-creation: a check must not create what it checks. */
    for (size_t i = 0; i < cfg->n_kafka_producer; i++)
        if (rd_kafka_conf_set(conf, cfg->kafka_producer[i].key,
                              cfg->kafka_producer[i].value, errstr,
                              sizeof(errstr)) != RD_KAFKA_CONF_OK) {
            fprintf(stderr, "counterctl: kafka.producer.%s: %s\n",
                    cfg->kafka_producer[i].key, errstr);
            goto out;
        }
    if (rd_kafka_conf_set(conf, "bootstrap.servers", cfg->kafka_brokers, errstr,
                          sizeof(errstr)) != RD_KAFKA_CONF_OK ||
        rd_kafka_conf_set(conf, "allow.auto.create.topics", "false", errstr,
                          sizeof(errstr)) != RD_KAFKA_CONF_OK ||
        rd_kafka_conf_set(conf, "log_level", "3", errstr, sizeof(errstr)) !=
            RD_KAFKA_CONF_OK) {
        fprintf(stderr, "counterctl: kafka: %s\n", errstr);
        goto out;
    }
    /* No client log: every failure comes back to us as a value and is
     * reported once, as one line (a down broker would log every retry). */
    rd_kafka_conf_set_log_cb(conf, NULL);
    c->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    if (c->rk == NULL) {
        fprintf(stderr, "counterctl: could not create kafka client: %s\n",
                errstr);
        goto out;
    }
    conf = NULL; /* rd_kafka_new took it */
    rkt = rd_kafka_topic_new(c->rk, cfg->kafka_topic, NULL);
    if (rkt == NULL) {
        fprintf(stderr, "counterctl: kafka topic %s: %s\n", cfg->kafka_topic,
                rd_kafka_err2str(rd_kafka_last_error()));
        goto out;
    }
    err = rd_kafka_metadata(c->rk, 0, rkt, &md, KAFKA_TIMEOUT_MS);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        fprintf(stderr, "counterctl: could not reach kafka at %s: %s\n",
                cfg->kafka_brokers, rd_kafka_err2str(err));
        c->unreachable = 1;
        goto out;
    }
    if (md->topic_cnt != 1 || md->topics[0].err ||
        md->topics[0].partition_cnt <= 0) {
        fprintf(stderr, "counterctl: could not read topic %s: %s\n",
                cfg->kafka_topic,
                md->topic_cnt == 1 && md->topics[0].err
                    ? rd_kafka_err2str(md->topics[0].err)
                    : "no partitions");
        goto out;
    }
    c->partition_cnt = md->topics[0].partition_cnt;
    c->high = calloc((size_t)c->partition_cnt, sizeof(*c->high));
    c->stored = calloc((size_t)c->partition_cnt, sizeof(*c->stored));
    if (c->high == NULL || c->stored == NULL) {
        fprintf(stderr, "counterctl: out of memory\n");
        goto out;
    }
    rc = 0;
out:
    if (md)
        rd_kafka_metadata_destroy(md);
    if (rkt)
        rd_kafka_topic_destroy(rkt);
    if (conf)
        rd_kafka_conf_destroy(conf);
    return rc;
}

/* Reads every partition's high watermark into c->high, each within
 * timeout_ms. Returns 0, or -1 with the reason in `why`. */
static int read_watermarks(ver_ctx *c, int timeout_ms, char *why, size_t whylen)
{
    for (int p = 0; p < c->partition_cnt; p++) {
        int64_t low;
        rd_kafka_resp_err_t err = rd_kafka_query_watermark_offsets(
            c->rk, c->cfg->kafka_topic, p, &low, &c->high[p], timeout_ms);
        if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
            snprintf(why, whylen,
                     "could not read the high watermark of partition %d "
                     "from kafka at %s: %s",
                     p, c->cfg->kafka_brokers, rd_kafka_err2str(err));
            return -1;
        }
    }
    return 0;
}

/*
 * One look at the persister's stored offsets: has it reached c->high in
 * every partition? Returns 1 yes, 0 not yet (why in `why`), -1 on a
 * PostgreSQL error (printed). A partition without a row has consumed
 * nothing, which is caught up only with an empty partition.
 */
static int offsets_reached(ver_ctx *c, char *why, size_t whylen)
{
    static const char sql[] =
        "SELECT partition, next_offset FROM consumer_offsets "
        "WHERE group_id = $1 AND topic = $2";
    const char *params[] = {c->cfg->persister_group_id, c->cfg->kafka_topic};
    PGresult *res =
        pg_run(c, sql, 2, params, "reading the persister's offsets");

    if (res == NULL)
        return -1;
    memset(c->stored, 0, (size_t)c->partition_cnt * sizeof(*c->stored));
    for (int i = 0; i < PQntuples(res); i++) {
        int64_t p, next;
        const char *ps = PQgetvalue(res, i, 0), *ns = PQgetvalue(res, i, 1);
        if (parse_i64(ps, strlen(ps), &p) == 0 &&
            parse_i64(ns, strlen(ns), &next) == 0 && p >= 0 &&
            p < c->partition_cnt)
            c->stored[p] = next;
    }
    PQclear(res);
    for (int p = 0; p < c->partition_cnt; p++)
        if (c->stored[p] < c->high[p]) {
            snprintf(why, whylen,
                     "partition %d: stored next offset %" PRId64
                     ", high watermark %" PRId64,
                     p, c->stored[p], c->high[p]);
            return 0;
        }
    return 1;
}

/*
 * Waits up to wait_s until the persister has folded in everything the
 * topic held when the wait began. The target is read once: chasing the
 * watermarks of a topic written all the time could wait forever. Kafka
 * errors are retried (a leader election passes); the deadline bounds
 * them. Returns 0, or -1 (reason printed).
 */
static int wait_caught_up(ver_ctx *c, int wait_s)
{
    int64_t deadline_ms = ctr_time_mono_ms() + (int64_t)wait_s * 1000;
    char why[512] = "";
    int have_target = 0, r = 0;

    for (;;) {
        int64_t left_ms = deadline_ms - ctr_time_mono_ms();
        int timeout_ms = left_ms > KAFKA_TIMEOUT_MS ? KAFKA_TIMEOUT_MS
                         : left_ms < POLL_MS        ? POLL_MS
                                                    : (int)left_ms;
        if (!have_target)
            have_target = read_watermarks(c, timeout_ms, why, sizeof(why)) == 0;
        if (have_target && (r = offsets_reached(c, why, sizeof(why))) != 0)
            break;
        if (ctr_time_mono_ms() >= deadline_ms) {
            fprintf(stderr,
                    "counterctl: the persister (group %s) has not caught up "
                    "with topic %s within %d s: %s\n",
                    c->cfg->persister_group_id, c->cfg->kafka_topic, wait_s,
                    why);
            c->unreachable = 1;
            return -1;
        }
        sleep_ms(POLL_MS);
    }
    return r > 0 ? 0 : -1;
}

/* ------------------------------------------------------------- the check */

/*
 * Reads both stores' values for the items of l and, when `all`, adds
 * every value PostgreSQL has that must be checked too; then merges l.
 * The order of the reads is the one the file's header explains. Returns 0
 * or -1 (reason printed).
 */
static int read_values(ver_ctx *c, ver_list *l, int all, int wait_s)
{
    ver_list rows = {0}, daily = {0};
    int rc = -1, in_tx = 0;

    for (size_t i = 0; i < l->n; i++) {
        ver_item *it = &l->items[i];
        memset(&it->before, 0, sizeof(it->before));
        it->in_pg = 0;
        it->pg = 0;
        it->pg_exact[0] = '\0';
    }
    if (redis_fill(c, l->items, l->n, 0, 0) != 0 ||
        wait_caught_up(c, wait_s) != 0)
        goto out;
    int64_t now_ms = ctr_time_now_ms();
    if (pg_exec(c, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY") != 0)
        goto out;
    in_tx = 1;
    if (pg_windows_of(c, l->items, l->n, &rows) != 0)
        goto out;
    if (all ? pg_all_totals(c, &rows, &daily) != 0 ||
                  pg_live_windows(c, &daily, now_ms, &rows) != 0
            : pg_totals_of(c, l->items, l->n, &rows) != 0)
        goto out;
    in_tx = 0;
    if (pg_exec(c, "COMMIT") != 0 || list_append(l, &rows) != 0)
        goto out;
    list_merge(l);
    for (size_t i = 0; i < l->n; i++)
        l->items[i].after = l->items[i].before;
    if (redis_fill(c, l->items, l->n, 1, ctr_time_now_ms()) != 0)
        goto out;
    rc = 0;
out:
    if (in_tx)
        PQclear(PQexec(c->pg, "ROLLBACK"));
    list_free(&rows);
    list_free(&daily);
    return rc;
}

/* Copies the keys of l's differing items into `out` (values cleared). */
static int collect_differing(const ver_ctx *c, const ver_list *l,
                             int64_t now_ms, ver_list *out)
{
    for (size_t i = 0; i < l->n; i++) {
        const ver_item *it = &l->items[i];
        if (item_differs(c->cfg, it, now_ms) &&
            list_add(out, it->name, strlen(it->name), it->day) == NULL)
            return -1;
    }
    return 0;
}

int ctl_verify_run(const ctr_config *cfg, int wait_s)
{
    ver_ctx c = {.cfg = cfg};
    ver_list found = {0}, differing = {0}, still = {0};
    char err[512];
    size_t checked = 0;
    int rc = CTL_VERIFY_ERROR;

    if (redis_open(&c) != 0)
        goto out;
    c.pg = ctr_pg_connect(cfg, "counterctl verify", err, sizeof(err));
    if (c.pg == NULL) {
        fprintf(stderr, "counterctl: %s\n", err);
        c.unreachable = 1;
        goto out;
    }
    /* Also waited for before reading PostgreSQL, but a persister that is
     * far behind or stopped is better said before a long SCAN. */
    if (kafka_open(&c) != 0 || wait_caught_up(&c, wait_s) != 0)
        goto out;
    if (redis_scan(&c, &found) != 0 || read_values(&c, &found, 1, wait_s) != 0)
        goto out;
    checked = count_names(&found);
    if (collect_differing(&c, &found, ctr_time_now_ms(), &differing) != 0)
        goto out;
    if (differing.n > 0) {
        /* A write between our Redis and PostgreSQL reads differs for a
         * moment; a real difference survives a second look. */
        sleep_ms(RECHECK_PAUSE_MS);
        if (read_values(&c, &differing, 0, wait_s) != 0)
            goto out;
        /* Print the values of the second look: they are what stayed. */
        int64_t now_ms = ctr_time_now_ms();
        for (size_t i = 0; i < differing.n; i++) {
            const ver_item *it = &differing.items[i];
            if (!item_differs(cfg, it, now_ms))
                continue;
            int pending = has_pending(&c, it);
            if (pending < 0) {
                redis_failed(&c, "EXISTS", NULL, ctr_rclient_errstr(c.redis));
                goto out;
            }
            if (pending) {
                fprintf(stderr,
                        "counterctl: counter %s%s%s: writes pending (not yet "
                        "known to be in the log); not compared\n",
                        it->name, it->day[0] ? " day " : "", it->day);
                continue;
            }
            print_item(it);
            if (list_add(&still, it->name, strlen(it->name), "") == NULL)
                goto out;
        }
        list_merge(&still); /* one per counter, whatever its days */
    }
    printf("verify: %zu counters checked, %zu differ\n", checked, still.n);
    rc = still.n ? CTL_VERIFY_DIFFER : CTL_VERIFY_SAME;
out:
    if (rc == CTL_VERIFY_ERROR && c.unreachable)
        rc = CTL_VERIFY_UNREACHABLE;
    fflush(stdout);
    list_free(&still);
    list_free(&differing);
    list_free(&found);
    free(c.stored);
    free(c.high);
    if (c.rk)
        rd_kafka_destroy(c.rk);
    if (c.pg)
        PQfinish(c.pg);
    ctr_rclient_free(c.redis);
    return rc;
}

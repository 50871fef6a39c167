/*
 * restore.c - see restore.h.
 */
#include "redis/restore.h"

#include "common/log.h"
#include "common/pgconn.h"
#include "common/strbuf.h"
#include "common/timeutil.h"
#include "common/tz.h"
#include "redis/apply.h"
#include "ingest/consumer.h"
#include "ingest/event.h"
#include "redis/slots.h"
#include "redis/scripts.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int fail(char *errbuf, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(char *errbuf, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(errbuf, errlen, fmt, ap);
    va_end(ap);
    return -1;
}

static int epoch_in_use(const char *s, size_t len)
{
    static const char restoring[] = "restoring:";
    return len > 0 && !(len >= sizeof(restoring) - 1 &&
                        memcmp(s, restoring, sizeof(restoring) - 1) == 0);
}

int ctr_redis_epoch_get(ctr_rclient *c, char *epoch, size_t len)
{
    int slots[CTR_SLOTS];
    int n = ctr_rclient_master_slots(c, slots, CTR_SLOTS);
    if (n <= 0)
        return -1;
    epoch[0] = '\0';
    for (int i = 0; i < n; i++) {
        char key[CTR_APPLY_EPOCH_KEY_MAX];
        ctr_apply_epoch_key(key, slots[i]);
        redisReply *r = ctr_rclient_cmd(c, key, "GET %s", key);
        if (r == NULL)
            return -1;
        int whole = r->type == REDIS_REPLY_STRING &&
                    epoch_in_use(r->str, r->len) && r->len < len &&
                    (i == 0 || strcmp(epoch, r->str) == 0);
        if (whole && i == 0) {
            memcpy(epoch, r->str, r->len);
            epoch[r->len] = '\0';
        }
        freeReplyObject(r);
        if (!whole)
            return 0;
    }
    return 1;
}

rd_kafka_t *ctr_reader_new(const ctr_config *cfg, const char *group,
                           char *errbuf, size_t errlen)
{
    char err[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (rd_kafka_conf_set(conf, "bootstrap.servers", cfg->kafka_brokers, err,
                          sizeof(err)) != RD_KAFKA_CONF_OK ||
        rd_kafka_conf_set(conf, "group.id", group, err, sizeof(err)) ||
        rd_kafka_conf_set(conf, "enable.auto.commit", "false", err,
                          sizeof(err)) ||
        rd_kafka_conf_set(conf, "enable.partition.eof", "true", err,
                          sizeof(err)) ||
        rd_kafka_conf_set(conf, "log_level", "3", err, sizeof(err))) {
        fail(errbuf, errlen, "kafka: %s", err);
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof(err));
    if (rk == NULL) {
        fail(errbuf, errlen, "kafka: %s", err);
        rd_kafka_conf_destroy(conf);
    }
    return rk;
}

void ctr_reader_free(rd_kafka_t *rk)
{
    if (rk == NULL)
        return;
    rd_kafka_assign(rk, NULL);
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
}

int ctr_topic_partitions(rd_kafka_t *rk, const char *topic)
{
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
    int n = -1;
    if (rd_kafka_metadata(rk, 0, rkt, &md, 10000) == 0 && md->topic_cnt == 1 &&
        md->topics[0].err == 0)
        n = md->topics[0].partition_cnt;
    if (md)
        rd_kafka_metadata_destroy(md);
    rd_kafka_topic_destroy(rkt);
    return n > CTR_MAX_PARTITIONS ? CTR_MAX_PARTITIONS : n;
}

int ctr_persister_offsets(PGconn *conn, const ctr_config *cfg,
                          const char *schema, int nparts, int64_t *next,
                          char *errbuf, size_t errlen)
{
    char sql[256];
    snprintf(sql, sizeof(sql),
             "SELECT partition, next_offset FROM %s.consumer_offsets "
             "WHERE group_id = $1 AND topic = $2",
             schema);
    const char *params[2] = {cfg->persister_group_id, cfg->kafka_topic};
    PGresult *res = PQexecParams(conn, sql, 2, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        fail(errbuf, errlen, "reading offsets: %s", PQresultErrorMessage(res));
        PQclear(res);
        return -1;
    }
    for (int p = 0; p < nparts; p++)
        next[p] = 0;
    for (int i = 0; i < PQntuples(res); i++) {
        int p = atoi(PQgetvalue(res, i, 0));
        if (p >= 0 && p < nparts)
            next[p] = strtoll(PQgetvalue(res, i, 1), NULL, 10);
    }
    PQclear(res);
    return 0;
}

/* ------------------------------------------------------------ pipeline --- */

enum { LOCK_MS = 30000, RENEW_EVERY_MS = 5000 };

/* The restore's writes, pipelined per server, each run through
 * redis/fenced.lua against the marker of its slot. Each is idempotent:
 * one whose server failed mid-pipeline is sent again. */
typedef struct pipe_state {
    ctr_rclient *c;
    int failed;
    char err[256];
    char token[40];     /* the lock's */
    char restoring[80]; /* the markers while we restore */
    char gen[24];       /* this restore's generation */
    char fenced_sha[41], lock_sha[41], mark_sha[41];
    int64_t renewed_ms;
} pipe_state;

static void pipe_fail(pipe_state *ps, const char *what)
{
    if (!ps->failed)
        snprintf(ps->err, sizeof(ps->err), "%s", what);
    ps->failed = 1;
}

static void drain_reply(const redisReply *r, size_t i, void *arg)
{
    pipe_state *ps = arg;
    (void)i;
    if (r == NULL)
        pipe_fail(ps, "redis: a server failed during the restore");
    else if (r->type == REDIS_REPLY_ERROR)
        pipe_fail(ps, strncmp(r->str, "FENCED", 6) == 0
                          ? "another restore took over"
                          : r->str);
}

/* The lock (redis/lock.lua): take, renew or release. 1 done, 0 not the
 * owner, -1 error. */
static int lock_op(pipe_state *ps, const char *op)
{
    const char *argv[] = {"EVALSHA", ps->lock_sha, "1",    CTR_RESTORE_LOCK_KEY,
                          ps->token, op,           "30000"};
    redisReply *r =
        ctr_rclient_argv(ps->c, CTR_RESTORE_LOCK_KEY, 7, argv, NULL);
    int rc = r && r->type == REDIS_REPLY_INTEGER ? (int)r->integer : -1;
    freeReplyObject(r);
    return rc;
}

/* Renews the lock every few seconds; a lost lock fails the restore. */
static void keep_lock(pipe_state *ps)
{
    if (ps->failed || ctr_time_mono_ms() - ps->renewed_ms < RENEW_EVERY_MS)
        return;
    if (lock_op(ps, "renew") != 1)
        pipe_fail(ps, "lost the restore lock");
    ps->renewed_ms = ctr_time_mono_ms();
}

static void pipe_drain(pipe_state *ps)
{
    if (ctr_rclient_drain(ps->c, drain_reply, ps) != 0)
        pipe_fail(ps, ctr_rclient_errstr(ps->c));
    keep_lock(ps);
}

/* Queues argv (argv[1] the key) fenced by the marker of the key's slot:
 * EVALSHA fenced 2 <marker> <key> <restoring> <cmd> <args...>. */
static void pipe_cmd(pipe_state *ps, int argc, const char **argv)
{
    char marker[CTR_APPLY_EPOCH_KEY_MAX];
    const char *fv[16];
    if (ps->failed || argc > 10)
        return;
    ctr_apply_epoch_key(marker, ctr_key_slot(argv[1], strlen(argv[1])));
    fv[0] = "EVALSHA", fv[1] = ps->fenced_sha, fv[2] = "2", fv[3] = marker;
    fv[4] = argv[1], fv[5] = ps->restoring, fv[6] = argv[0];
    for (int i = 2; i < argc; i++)
        fv[5 + i] = argv[i];
    if (ctr_rclient_append(ps->c, argv[1], argc + 5, fv, NULL) != 0)
        pipe_fail(ps, ctr_rclient_errstr(ps->c));
    if (ctr_rclient_queued(ps->c) >= 1000)
        pipe_drain(ps);
}

/* Every slot's marker set to value: with expected NULL as a restore
 * starting (redis/mark.lua: unless a later restore has the slot), else
 * only where it still reads expected. Slot 0's
 * marker, which probes read (ctr_redis_epoch_get, deploy/stack.sh), is
 * set first when the restore starts and last when it ends, so that it
 * says "whole" only once every slot is. */
static int set_markers(pipe_state *ps, const char *expected, const char *value)
{
    char marker[CTR_APPLY_EPOCH_KEY_MAX];
    for (int i = 0; i < CTR_SLOTS && !ps->failed; i++) {
        int slot = expected ? (i + 1) % CTR_SLOTS : i;
        ctr_apply_epoch_key(marker, slot);
        if (expected) {
            const char *argv[] = {"EVALSHA", ps->fenced_sha, "2",   marker,
                                  marker,    expected,       "SET", value};
            if (ctr_rclient_append(ps->c, marker, 8, argv, NULL) != 0)
                pipe_fail(ps, ctr_rclient_errstr(ps->c));
        } else {
            const char *argv[] = {"EVALSHA", ps->mark_sha, "1",
                                  marker,    ps->gen,      value};
            if (ctr_rclient_append(ps->c, marker, 6, argv, NULL) != 0)
                pipe_fail(ps, ctr_rclient_errstr(ps->c));
        }
        if (ctr_rclient_queued(ps->c) >= 1000)
            pipe_drain(ps);
    }
    pipe_drain(ps);
    return ps->failed ? -1 : 0;
}

/* One master's counter keys ({c:...}), unlinked through the pipeline. */
static int clear_node(redisContext *node, void *arg)
{
    pipe_state *ps = arg;
    char cursor[32] = "0";
    do {
        redisReply *r =
            redisCommand(node, "SCAN %s MATCH {c:* COUNT 1000", cursor);
        if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
            r->element[0]->type != REDIS_REPLY_STRING) {
            snprintf(ps->err, sizeof(ps->err), "redis: SCAN: %s",
                     r && r->type == REDIS_REPLY_ERROR ? r->str : node->errstr);
            ps->failed = 1;
            freeReplyObject(r);
            return -1;
        }
        snprintf(cursor, sizeof(cursor), "%s", r->element[0]->str);
        const redisReply *keys = r->element[1];
        for (size_t i = 0; i < keys->elements; i++) {
            const char *argv[] = {"UNLINK", keys->element[i]->str};
            pipe_cmd(ps, 2, argv);
        }
        freeReplyObject(r);
        /* the UNLINKs share this connection: their answers are read
         * before the next SCAN's */
        pipe_drain(ps);
        if (ps->failed)
            return -1;
    } while (strcmp(cursor, "0") != 0);
    return 0;
}

/* Removes every counter key ({c:...}) on every master: what a crashed
 * restore or a data set without an epoch left behind is not to be
 * trusted. 0 or -1. */
static int clear_counters(pipe_state *ps)
{
    if (ctr_rclient_each_master(ps->c, clear_node, ps) != 0) {
        if (!ps->failed)
            pipe_fail(ps, ctr_rclient_errstr(ps->c));
        return -1;
    }
    pipe_drain(ps);
    return ps->failed ? -1 : 0;
}

/* ---------------------------------------------------- from PostgreSQL --- */

/* Long on purpose: the three queries share the one loop that writes a
 * row back as a write of its day would. */
/* The values; rows written, or -1. Runs inside the caller's snapshot. */
static long restore_values(const ctr_config *cfg, PGconn *conn, pipe_state *ps,
                           int64_t now)
{
    char days[16], key[CTR_APPLY_KEY_MAX], tkey[CTR_APPLY_KEY_MAX], v[24],
        t[24], ttl[16];
    long rows = 0;
    snprintf(days, sizeof(days), "%d", cfg->lateness_s / 86400 + 2);
    const char *params[1] = {days};
    static const char *const queries[3] = {
        "SELECT name, NULL, value, last_event_ms FROM counter_totals",
        "SELECT name, day::text, value, last_event_ms FROM counter_daily "
        "WHERE day >= current_date - $1::int",
        "SELECT name, day::text, user_id, 0 FROM counter_unique_users "
        "WHERE day >= current_date - $1::int",
    };
    for (int q = 0; q < 3; q++) {
        PGresult *res = PQexecParams(conn, queries[q], q ? 1 : 0, NULL, params,
                                     NULL, NULL, 0);
        if (PQresultStatus(res) != PGRES_TUPLES_OK) {
            snprintf(ps->err, sizeof(ps->err), "%s", PQresultErrorMessage(res));
            PQclear(res);
            return -1;
        }
        for (int i = 0; i < PQntuples(res); i++) {
            const char *name = PQgetvalue(res, i, 0);
            const ctr_counter_def *def = ctr_config_counter(cfg, name);
            int daily = def->reset == CTR_RESET_DAILY;
            ctr_date d = {0, 0, 0};
            if (q > 0 && ctr_date_parse(PQgetvalue(res, i, 1), &d) != 0)
                continue;
            if ((q == 0 && daily) || (q == 1 && !daily) ||
                (q == 2 && (def->kind != CTR_KIND_UNIQUE ||
                            def->dedup != CTR_DEDUP_EXACT)))
                continue;
            /* the same expiry a write of that day would give */
            ctr_apply_spec spec;
            int64_t day_start = q ? ctr_tz_day_start(def->tz, d) : now;
            ctr_apply_plan(&spec, def, day_start, now, cfg->lateness_s, NULL, 0,
                           0);
            snprintf(ttl, sizeof(ttl), "%d",
                     spec.ttl_s ? spec.ttl_s : spec.dedup_ttl_s);
            if (q == 2) {
                snprintf(key, sizeof(key), "{c:%s}:u:%s", name,
                         PQgetvalue(res, i, 1));
                const char *sadd[] = {"SADD", key, PQgetvalue(res, i, 2)};
                const char *exp[] = {"EXPIRE", key, ttl};
                pipe_cmd(ps, 3, sadd);
                pipe_cmd(ps, 3, exp);
            } else {
                int64_t value;
                snprintf(key, sizeof(key), "{c:%s}%s%s", name, q ? ":d:" : "",
                         q ? PQgetvalue(res, i, 1) : "");
                /* a live value is within int64; a sum PostgreSQL holds
                 * outside it (an event of the counter was quarantined) has
                 * no Redis value: left out, and verify names it */
                if (ctr_pg_int(PQgetvalue(res, i, 2), &value) != 0) {
                    ctr_warn("not restoring %s: postgresql holds %.60s, "
                             "outside the 64-bit range of a live value",
                             key, PQgetvalue(res, i, 2));
                    continue;
                }
                snprintf(v, sizeof(v), "%" PRId64, value);
                snprintf(t, sizeof(t), "%s", PQgetvalue(res, i, 3));
                if (ctr_apply_stamp_key(tkey, sizeof(tkey), key) != 0)
                    continue;
                const char *set_v[] = {"SET", key, v};
                const char *set_t[] = {"SET", tkey, t};
                pipe_cmd(ps, 3, set_v);
                if (t[0]) /* NULL: never stamped */
                    pipe_cmd(ps, 3, set_t);
                if (q == 1) {
                    const char *exp[] = {"EXPIRE", key, ttl};
                    const char *exp_t[] = {"EXPIRE", tkey, ttl};
                    pipe_cmd(ps, 3, exp);
                    pipe_cmd(ps, 3, exp_t);
                }
            }
            rows++;
        }
        PQclear(res);
    }
    pipe_drain(ps);
    return ps->failed ? -1 : rows;
}

/*
 * The event ids PostgreSQL counted once per id, remembered again for what
 * is left of their time, so that a producer's or a client's retry still
 * counts once: an external event's for applier.guard_ttl_s after it was
 * counted, an Idempotency-Key for idempotency_ttl_s after its generation
 * (its first use; after that the key names a new write, and no guard is
 * written). Recorded as "a0": applied, its answer not kept. Rows written,
 * or -1.
 */
static long restore_guards(const ctr_config *cfg, PGconn *conn, pipe_state *ps)
{
    char key[CTR_APPLY_KEY_MAX], guard_s[16], key_s[16];
    long rows = 0;
    snprintf(guard_s, sizeof(guard_s), "%d", cfg->applier_guard_ttl_s);
    snprintf(key_s, sizeof(key_s), "%d", cfg->idempotency_ttl_s);
    const char *params[2] = {guard_s, key_s};
    PGresult *res = PQexecParams(
        conn,
        "SELECT name, id, ttl FROM (SELECT name, id, CASE WHEN gen = 0 "
        "THEN GREATEST(60, $1::int - "
        "extract(epoch FROM now() - seen_at)::int) "
        "ELSE (gen / 1000 + $2::int - "
        "extract(epoch FROM now())::bigint)::int END AS ttl "
        "FROM applied_event_ids) t WHERE ttl > 0",
        2, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        snprintf(ps->err, sizeof(ps->err), "%s", PQresultErrorMessage(res));
        PQclear(res);
        return -1;
    }
    for (int i = 0; i < PQntuples(res); i++) {
        if (ctr_apply_guard_key(key, sizeof(key), PQgetvalue(res, i, 0),
                                PQgetvalue(res, i, 1)) != 0)
            continue;
        const char *set[] = {"SET", key, "a0", "EX", PQgetvalue(res, i, 2)};
        pipe_cmd(ps, 5, set);
        rows++;
    }
    PQclear(res);
    pipe_drain(ps);
    return ps->failed ? -1 : rows;
}

static int pg_exec_ok(PGconn *conn, const char *sql, char *errbuf,
                      size_t errlen)
{
    PGresult *res = PQexec(conn, sql);
    int ok = PQresultStatus(res) == PGRES_COMMAND_OK;
    if (!ok)
        fail(errbuf, errlen, "%s", PQresultErrorMessage(res));
    PQclear(res);
    return ok ? 0 : -1;
}

/* ------------------------------------------------------- from the log --- */

int ctr_restore_reapply(const ctr_config *cfg, ctr_rclient *c, const char *sha,
                        const ctr_event *ev, const char *epoch_want,
                        int64_t now, ctr_apply_result *res, char *errbuf,
                        size_t errlen)
{
    ctr_apply_spec spec;
    ctr_apply_argv av;
    char err[256];

    const ctr_counter_def *def = ctr_config_counter(cfg, ev->counter);
    ctr_apply_plan(&spec, def, ev->ts_ms, now, cfg->lateness_s, ev->user_id, 0,
                   ev->delta);
    /* the log records what was applied: bounds were decided already */
    spec.has_min = spec.has_max = 0;
    spec.guard_id = ev->id; /* a record published twice applies once */
    spec.guard_ttl_s = cfg->applier_guard_ttl_s;
    spec.epoch_want = epoch_want;
    if (ctr_apply_write_argv(&av, sha, ev->counter, &spec) != 0)
        return fail(errbuf, errlen, "event %s: key too long", ev->id);
    redisReply *r = ctr_rclient_argv(c, av.argv[3], av.argc, av.argv, NULL);
    if (r == NULL)
        return fail(errbuf, errlen, "redis: %s", ctr_rclient_errstr(c));
    int rc = ctr_apply_parse(r, res, err, sizeof(err));
    freeReplyObject(r);
    if (rc == CTR_APPLY_OVERFLOW)
        return 0; /* refused when it was first applied, too */
    if (rc != CTR_APPLY_OK)
        return fail(errbuf, errlen, "event %s: %s", ev->id, err);
    return res->outcome == CTR_APPLY_NO_EPOCH ||
                   res->outcome == CTR_APPLY_SAME_EPOCH
               ? 1
               : 0;
}

/* Applies one logged event again, fenced like every write of the
 * restore (the script's epoch check). */
static int reapply(const ctr_config *cfg, pipe_state *ps, const char *sha,
                   const ctr_event *ev, int64_t now, char *errbuf,
                   size_t errlen)
{
    ctr_apply_result res;
    char want[96];
    snprintf(want, sizeof(want), "=%s", ps->restoring);
    int rc = ctr_restore_reapply(cfg, ps->c, sha, ev, want, now, &res, errbuf,
                                 errlen);
    if (rc == 1)
        return fail(errbuf, errlen, "another restore took over");
    return rc;
}

/* Applies the logged events of partitions [from, high), high being the
 * end of the log now (filled in); count in *n. */
static int replay_log(const ctr_config *cfg, pipe_state *ps, const char *sha,
                      rd_kafka_t *rk, int nparts, const int64_t *from,
                      int64_t *high, int64_t now, long *n, char *errbuf,
                      size_t errlen)
{
    char err[256];
    int open = 0;

    rd_kafka_topic_partition_list_t *l =
        rd_kafka_topic_partition_list_new(nparts);
    for (int p = 0; p < nparts; p++) {
        int64_t lo;
        if (rd_kafka_query_watermark_offsets(rk, cfg->kafka_topic, p, &lo,
                                             &high[p], 10000) != 0) {
            rd_kafka_topic_partition_list_destroy(l);
            return fail(errbuf, errlen, "no watermarks for partition %d", p);
        }
        if (from[p] < high[p]) {
            rd_kafka_topic_partition_list_add(l, cfg->kafka_topic, p)->offset =
                from[p];
            open++;
        }
    }
    rd_kafka_assign(rk, l);
    rd_kafka_topic_partition_list_destroy(l);
    while (open > 0) {
        rd_kafka_message_t *msg = rd_kafka_consumer_poll(rk, 5000);
        if (msg == NULL)
            return fail(errbuf, errlen, "kafka stopped answering");
        int p = msg->partition;
        if (!msg->err && p >= 0 && p < nparts && msg->offset < high[p]) {
            char origin[16];
            ctr_event ev;
            /* events without an origin are the applier's to apply: its
             * record, when it has, is logged and replayed instead */
            int logged = ctr_message_origin(msg, origin, sizeof(origin));
            if (logged && ctr_event_decode(msg->payload, msg->len, &ev, err,
                                           sizeof(err)) == 0) {
                int rc = reapply(cfg, ps, sha, &ev, now, errbuf, errlen);
                ctr_event_clear(&ev);
                if (rc != 0) {
                    rd_kafka_message_destroy(msg);
                    return -1;
                }
                (*n)++;
                keep_lock(ps);
                if (ps->failed) {
                    rd_kafka_message_destroy(msg);
                    return fail(errbuf, errlen, "%s", ps->err);
                }
            }
            if (msg->offset + 1 >= high[p])
                open--;
        }
        rd_kafka_message_destroy(msg);
    }
    return 0;
}

/* Leaves the tail of this restore owed (ctr_tail_key, applier/tail.c):
 * api events applied to the lost data set can still reach the log after
 * high, until librdkafka has given up on them. */
static int tail_owed(const ctr_config *cfg, ctr_rclient *c, const char *epoch,
                     int64_t started_ms, const int64_t *high, int nparts,
                     char *errbuf, size_t errlen)
{
    ctr_strbuf b = {0};
    ctr_strbuf_printf(&b, "%s|%" PRId64 "|", epoch,
                      started_ms + cfg->kafka_message_timeout_ms +
                          cfg->kafka_delivery_timeout_ms + 10000);
    for (int p = 0; p < nparts; p++)
        ctr_strbuf_printf(&b, "%s%" PRId64, p ? "," : "", high[p]);
    if (b.failed)
        return fail(errbuf, errlen, "out of memory");
    redisReply *r =
        ctr_rclient_cmd(c, CTR_TAIL_KEY, "SET %s %s", CTR_TAIL_KEY, b.s);
    int ok = r && r->type == REDIS_REPLY_STATUS;
    if (!ok)
        fail(errbuf, errlen, "recording the tail: %s",
             r ? r->str : ctr_rclient_errstr(c));
    freeReplyObject(r);
    ctr_strbuf_clear(&b);
    return ok ? 0 : -1;
}

/* Deletes the epoch keys of older layouts; 0, or -1 with errbuf. */
static int drop_old_epochs(ctr_rclient *c, char *errbuf, size_t errlen)
{
    static const char *const keys[] = {CTR_EPOCH_KEY_V1, CTR_EPOCH_KEY_V2};
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        redisReply *r = ctr_rclient_cmd(c, keys[i], "DEL %s", keys[i]);
        int ok = r != NULL && r->type != REDIS_REPLY_ERROR;
        if (!ok)
            fail(errbuf, errlen, "removing %s: %s", keys[i],
                 r ? r->str : ctr_rclient_errstr(c));
        freeReplyObject(r);
        if (!ok)
            return -1;
    }
    return 0;
}

/* Long on purpose: the restore's steps in their order (restore.h), each a
 * call, with the lock taken before and released after all of them. */
int ctr_redis_restore(const ctr_config *cfg, ctr_rclient *c,
                      ctr_restore_stats *st, char *epoch, char *errbuf,
                      size_t errlen)
{
    int64_t from[CTR_MAX_PARTITIONS], high[CTR_MAX_PARTITIONS];
    int64_t now = ctr_time_now_ms();
    char sha[41];
    PGconn *conn = NULL;
    rd_kafka_t *rk = NULL;
    int rc = -1, nparts, locked = 0;
    pipe_state ps;

    memset(st, 0, sizeof(*st));
    memset(&ps, 0, sizeof(ps));
    ps.c = c;
    snprintf(ps.token, sizeof(ps.token), "%016" PRIx64 "%016" PRIx64,
             ctr_random_u64(), ctr_random_u64());
    if (ctr_rclient_script(c, ctr_script_write, sha) != 0 ||
        ctr_rclient_script(c, ctr_script_fenced, ps.fenced_sha) != 0 ||
        ctr_rclient_script(c, ctr_script_lock, ps.lock_sha) != 0 ||
        ctr_rclient_script(c, ctr_script_mark, ps.mark_sha) != 0)
        return fail(errbuf, errlen, "could not load the scripts: %s",
                    ctr_rclient_errstr(c));
    switch (lock_op(&ps, "take")) {
    case 1: break;
    case 0: return 1;
    default: return fail(errbuf, errlen, "redis: %s", ctr_rclient_errstr(c));
    }
    locked = 1;
    ps.renewed_ms = ctr_time_mono_ms();
    /* a generation above every restore before: markers of a later one
     * are never taken back by this one (redis/mark.lua) */
    redisReply *g =
        ctr_rclient_cmd(c, CTR_RESTORE_GEN_KEY, "INCR %s", CTR_RESTORE_GEN_KEY);
    if (g == NULL || g->type != REDIS_REPLY_INTEGER) {
        fail(errbuf, errlen, "redis: %s",
             g && g->type == REDIS_REPLY_ERROR ? g->str
                                               : ctr_rclient_errstr(c));
        freeReplyObject(g);
        goto out;
    }
    snprintf(ps.gen, sizeof(ps.gen), "%lld", (long long)g->integer);
    freeReplyObject(g);
    snprintf(ps.restoring, sizeof(ps.restoring), "restoring:%s:%s", ps.gen,
             ps.token);

    conn = ctr_pg_connect(cfg, "counter-restore", errbuf, errlen);
    if (conn == NULL)
        goto out;
    rk = ctr_reader_new(cfg, "counter-restore-redis", errbuf, errlen);
    if (rk == NULL)
        goto out;
    nparts = ctr_topic_partitions(rk, cfg->kafka_topic);
    if (nparts <= 0) {
        fail(errbuf, errlen, "topic %s: no partitions known", cfg->kafka_topic);
        goto out;
    }
    /* writers keep off from here on; values and offsets from one
     * snapshot: the log after those offsets is exactly what they lack */
    if (set_markers(&ps, NULL, ps.restoring) != 0 || clear_counters(&ps) != 0) {
        fail(errbuf, errlen, "%s", ps.err);
        goto out;
    }
    if (pg_exec_ok(conn, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
                   errbuf, errlen) ||
        ctr_persister_offsets(conn, cfg, "public", nparts, from, errbuf,
                              errlen))
        goto out;
    st->values = restore_values(cfg, conn, &ps, now);
    st->guards = st->values < 0 ? -1 : restore_guards(cfg, conn, &ps);
    if (st->values < 0 || st->guards < 0) {
        fail(errbuf, errlen, "%s", ps.err);
        goto out;
    }
    if (pg_exec_ok(conn, "COMMIT", errbuf, errlen) ||
        replay_log(cfg, &ps, sha, rk, nparts, from, high, now, &st->replayed,
                   errbuf, errlen))
        goto out;

    snprintf(epoch, CTR_EPOCH_MAX, "%s-%" PRId64 "-%016" PRIx64, ps.gen, now,
             ctr_random_u64());
    if (set_markers(&ps, ps.restoring, epoch) != 0) {
        fail(errbuf, errlen, "setting the epoch: %s", ps.err);
        goto out;
    }
    if (drop_old_epochs(c, errbuf, errlen) != 0 ||
        tail_owed(cfg, c, epoch, now, high, nparts, errbuf, errlen) != 0)
        goto out;
    rc = 0;
out:
    if (locked && lock_op(&ps, "release") != 1 && rc == 0)
        ctr_warn("the restore lock was not ours when released");
    ctr_reader_free(rk);
    PQfinish(conn);
    return rc;
}

/*
 * rebuild.c - see rebuild.h.
 */
#include "ctl/rebuild.h"

#include "common/pgconn.h"
#include "common/timeutil.h"
#include "ctl/migrate.h"
#include "ingest/apply.h"
#include "ingest/consumer.h"
#include "persister/batch.h"
#include "persister/fold.h"
#include "persister/sink.h"

#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { MAX_PARTS = 1024, BATCH_EVENTS = 5000, ROUNDS = 20 };

static const char rebuild_schema[] = "counter_rebuild";

/* A consumer outside any group's commits, for reading partitions. */
static rd_kafka_t *reader_new(const ctr_config *cfg, const char *group)
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
        fprintf(stderr, "counterctl: kafka: %s\n", err);
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof(err));
    if (rk == NULL) {
        fprintf(stderr, "counterctl: kafka: %s\n", err);
        rd_kafka_conf_destroy(conf);
    }
    return rk;
}

static int partition_count(rd_kafka_t *rk, const char *topic)
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
    return n > MAX_PARTS ? MAX_PARTS : n;
}

/* The persister's stored offsets (0 where none) from `schema`. */
static int stored_offsets(PGconn *conn, const ctr_config *cfg,
                          const char *schema, int nparts, int64_t *next)
{
    char sql[256];
    snprintf(sql, sizeof(sql),
             "SELECT partition, next_offset FROM %s.consumer_offsets "
             "WHERE group_id = $1 AND topic = $2",
             schema);
    const char *params[2] = {cfg->persister_group_id, cfg->kafka_topic};
    PGresult *res = PQexecParams(conn, sql, 2, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        fprintf(stderr, "counterctl: reading offsets: %s",
                PQresultErrorMessage(res));
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

static int exec_ok(PGconn *conn, const char *sql)
{
    PGresult *res = PQexec(conn, sql);
    int ok = PQresultStatus(res) == PGRES_COMMAND_OK ||
             PQresultStatus(res) == PGRES_TUPLES_OK;
    if (!ok)
        fprintf(stderr, "counterctl: %s", PQresultErrorMessage(res));
    PQclear(res);
    return ok ? 0 : -1;
}

/* Columns compared per table: everything the log determines. */
static const struct {
    const char *table, *columns;
} compared[] = {
    {"counter_totals", "name, value, last_event_ms"},
    {"counter_daily", "name, day, value, last_event_ms"},
    {"counter_buckets", "name, bucket_start, value"},
    {"counter_unique_users", "name, day, user_id, first_seen_ms"},
    {"counter_hll", "name, day, registers, estimate"},
};

/* Prints the differing rows of each table; returns their count or -1. */
static long compare_tables(PGconn *conn)
{
    long total = 0;
    for (size_t t = 0; t < sizeof(compared) / sizeof(compared[0]); t++) {
        char sql[1024];
        snprintf(sql, sizeof(sql),
                 "(SELECT 'live' AS side, %s FROM public.%s EXCEPT "
                 " SELECT 'live', %s FROM %s.%s) UNION ALL "
                 "(SELECT 'replay', %s FROM %s.%s EXCEPT "
                 " SELECT 'replay', %s FROM public.%s)",
                 compared[t].columns, compared[t].table, compared[t].columns,
                 rebuild_schema, compared[t].table, compared[t].columns,
                 rebuild_schema, compared[t].table, compared[t].columns,
                 compared[t].table);
        PGresult *res = PQexec(conn, sql);
        if (PQresultStatus(res) != PGRES_TUPLES_OK) {
            fprintf(stderr, "counterctl: comparing %s: %s", compared[t].table,
                    PQresultErrorMessage(res));
            PQclear(res);
            return -1;
        }
        int n = PQntuples(res);
        if (n > 0)
            printf("%s: %d rows differ\n", compared[t].table, n);
        for (int i = 0; i < n && i < 10; i++) {
            printf("  only in %s:", PQgetvalue(res, i, 0));
            for (int c = 1; c < PQnfields(res); c++)
                printf(" %s=%.40s", PQfname(res, c), PQgetvalue(res, i, c));
            printf("\n");
        }
        total += n;
        PQclear(res);
    }
    return total;
}

/* Replays partitions [pos, target) into the sink; pos advances. */
static int replay(const ctr_config *cfg, rd_kafka_t *rk, ps_sink *sink,
                  ps_batch *batch, int nparts, int64_t *pos,
                  const int64_t *target, int64_t *committed, long *events)
{
    char err[256];
    rd_kafka_topic_partition_list_t *l =
        rd_kafka_topic_partition_list_new(nparts);
    int open = 0;
    for (int p = 0; p < nparts; p++)
        if (pos[p] < target[p]) {
            rd_kafka_topic_partition_list_add(l, cfg->kafka_topic, p)->offset =
                pos[p];
            open++;
        }
    if (open == 0) {
        rd_kafka_topic_partition_list_destroy(l);
        return 0;
    }
    rd_kafka_assign(rk, l);
    rd_kafka_topic_partition_list_destroy(l);

    int64_t idle_since = ctr_time_mono_ms();
    while (open > 0) {
        rd_kafka_message_t *msg = rd_kafka_consumer_poll(rk, 200);
        if (msg == NULL) {
            if (ctr_time_mono_ms() - idle_since > 30000) {
                fprintf(stderr, "counterctl: no messages for 30 s while "
                                "replaying; is kafka up?\n");
                return -1;
            }
            continue;
        }
        idle_since = ctr_time_mono_ms();
        int p = msg->partition;
        if (msg->err || p < 0 || p >= nparts || msg->offset < pos[p] ||
            msg->offset >= target[p]) {
            if (msg->err == RD_KAFKA_RESP_ERR__PARTITION_EOF && p >= 0 &&
                p < nparts && pos[p] < target[p]) {
                fprintf(stderr,
                        "counterctl: partition %d ends at %" PRId64
                        " before the persister's offset %" PRId64 "\n",
                        p, msg->offset, target[p]);
                rd_kafka_message_destroy(msg);
                return -1;
            }
            rd_kafka_message_destroy(msg);
            continue;
        }
        for (int attempt = 0; attempt < 2; attempt++) {
            if (ps_fold_message(batch, cfg, msg, err, sizeof(err)) !=
                PS_FOLD_FULL)
                break;
            /* full: commit what we have, then fold again */
            int64_t expected[MAX_PARTS];
            for (size_t i = 0; i < ps_batch_partitions(batch); i++)
                expected[i] =
                    committed[ps_batch_partition_at(batch, i)->partition];
            if (ps_sink_commit(sink, cfg->kafka_topic, batch, expected) !=
                PS_SINK_OK) {
                /* a message still held keeps rd_kafka_destroy waiting */
                rd_kafka_message_destroy(msg);
                return -1;
            }
            for (size_t i = 0; i < ps_batch_partitions(batch); i++) {
                const ps_partition_range *r = ps_batch_partition_at(batch, i);
                committed[r->partition] = r->last_offset + 1;
            }
            ps_batch_reset(batch);
        }
        (*events)++;
        pos[p] = msg->offset + 1;
        if (pos[p] >= target[p])
            open--;
        rd_kafka_message_destroy(msg);
    }
    if (ps_batch_messages(batch) > 0) {
        int64_t expected[MAX_PARTS];
        for (size_t i = 0; i < ps_batch_partitions(batch); i++)
            expected[i] = committed[ps_batch_partition_at(batch, i)->partition];
        if (ps_sink_commit(sink, cfg->kafka_topic, batch, expected) !=
            PS_SINK_OK)
            return -1;
        for (size_t i = 0; i < ps_batch_partitions(batch); i++) {
            const ps_partition_range *r = ps_batch_partition_at(batch, i);
            committed[r->partition] = r->last_offset + 1;
        }
        ps_batch_reset(batch);
    }
    return 0;
}

int ctl_rebuild_postgres(const ctr_config *cfg, const char *sql_dir, int keep)
{
    char err[512], sql[256];
    PGconn *conn = NULL;
    rd_kafka_t *rk = NULL;
    ps_sink *sink = NULL;
    ps_batch *batch = NULL;
    int64_t pos[MAX_PARTS], target[MAX_PARTS], committed[MAX_PARTS];
    long events = 0, diffs = -1;
    int rc = 2, nparts;

    conn = ctr_pg_connect(cfg, "counterctl", err, sizeof(err));
    if (conn == NULL) {
        fprintf(stderr, "counterctl: %s\n", err);
        goto out;
    }
    PQclear(PQexec(conn, "SET client_min_messages = warning"));
    snprintf(sql, sizeof(sql),
             "DROP SCHEMA IF EXISTS %s CASCADE; CREATE SCHEMA %s; "
             "SET search_path TO %s",
             rebuild_schema, rebuild_schema, rebuild_schema);
    if (exec_ok(conn, sql) || ctl_migrate_up(conn, sql_dir) ||
        exec_ok(conn, "SET search_path TO public"))
        goto out;

    rk = reader_new(cfg, "counterctl-rebuild");
    sink = ps_sink_new_in_schema(cfg, rebuild_schema);
    batch = ps_batch_new(BATCH_EVENTS);
    if (rk == NULL || sink == NULL || batch == NULL)
        goto out;
    nparts = partition_count(rk, cfg->kafka_topic);
    if (nparts <= 0) {
        fprintf(stderr, "counterctl: topic %s not found\n", cfg->kafka_topic);
        goto out;
    }
    for (int p = 0; p < nparts; p++)
        pos[p] = 0, committed[p] = -1;

    /*
     * The live tables keep moving while the persister runs: replay up to
     * its offsets, then compare inside one snapshot that still shows
     * those offsets; if they moved, replay the difference and try again.
     */
    for (int round = 0; round < ROUNDS; round++) {
        if (stored_offsets(conn, cfg, "public", nparts, target) ||
            replay(cfg, rk, sink, batch, nparts, pos, target, committed,
                   &events))
            goto out;
        if (ps_sink_apply_retention(sink, ctr_time_now_ms()) < 0)
            goto out;
        if (exec_ok(conn, "BEGIN ISOLATION LEVEL REPEATABLE READ"))
            goto out;
        int64_t now_at[MAX_PARTS];
        int moved = stored_offsets(conn, cfg, "public", nparts, now_at) != 0;
        for (int p = 0; p < nparts && !moved; p++)
            moved = now_at[p] != target[p];
        if (!moved)
            diffs = compare_tables(conn);
        exec_ok(conn, "COMMIT");
        if (!moved)
            break;
    }
    if (diffs < 0) {
        fprintf(stderr, "counterctl: the live tables kept moving; stop the "
                        "writers for an exact comparison\n");
        goto out;
    }
    printf("rebuild-postgres: replayed %ld events; %s\n", events,
           diffs == 0 ? "the rebuilt tables equal the live ones"
                      : "the rebuilt tables DIFFER from the live ones");
    rc = diffs == 0 ? 0 : 1;
out:
    if (conn && !keep) {
        snprintf(sql, sizeof(sql), "DROP SCHEMA IF EXISTS %s CASCADE",
                 rebuild_schema);
        exec_ok(conn, sql);
    }
    ps_batch_free(batch);
    ps_sink_free(sink);
    if (rk) {
        rd_kafka_assign(rk, NULL);
        rd_kafka_consumer_close(rk);
        rd_kafka_destroy(rk);
    }
    PQfinish(conn);
    return rc;
}

/* ---------------------------------------------------------- rebuild-redis */

typedef struct pipe_state {
    redisContext *c;
    int pending;
    int failed;
} pipe_state;

static void pipe_drain(pipe_state *ps)
{
    while (ps->pending > 0) {
        redisReply *r = NULL;
        if (redisGetReply(ps->c, (void **)&r) != REDIS_OK) {
            ps->failed = 1;
            ps->pending = 0;
            return;
        }
        if (r && r->type == REDIS_REPLY_ERROR) {
            fprintf(stderr, "counterctl: redis: %s\n", r->str);
            ps->failed = 1;
        }
        freeReplyObject(r);
        ps->pending--;
    }
}

static void pipe_cmd(pipe_state *ps, int argc, const char **argv)
{
    size_t lens[24];
    for (int i = 0; i < argc; i++)
        lens[i] = strlen(argv[i]);
    if (redisAppendCommandArgv(ps->c, argc, argv, lens) != REDIS_OK) {
        ps->failed = 1;
        return;
    }
    if (++ps->pending >= 1000)
        pipe_drain(ps);
}

static redisContext *redis_open(const ctr_config *cfg)
{
    char host[256];
    int port;
    struct timeval tv = {5, 0};
    if (ctr_config_split_addr(cfg->redis_addr, host, sizeof(host), &port))
        return NULL;
    redisContext *c = redisConnectWithTimeout(host, port, tv);
    if (c == NULL || c->err) {
        fprintf(stderr, "counterctl: could not connect to redis at %s: %s\n",
                cfg->redis_addr, c ? c->errstr : "out of memory");
        if (c)
            redisFree(c);
        return NULL;
    }
    redisReply *r = NULL;
    if (cfg->redis_password[0])
        r = redisCommand(c, "AUTH %s", cfg->redis_password);
    if (r == NULL || r->type != REDIS_REPLY_ERROR) {
        freeReplyObject(r);
        r = cfg->redis_db ? redisCommand(c, "SELECT %d", cfg->redis_db) : NULL;
    }
    if (r && r->type == REDIS_REPLY_ERROR) {
        fprintf(stderr, "counterctl: redis: %s\n", r->str);
        freeReplyObject(r);
        redisFree(c);
        return NULL;
    }
    freeReplyObject(r);
    return c;
}

/* Restores what PostgreSQL holds; returns rows written or -1. */
static long restore_from_postgres(const ctr_config *cfg, PGconn *conn,
                                  pipe_state *ps, int64_t now)
{
    char days[16], key[CTR_APPLY_KEY_MAX], v[24], t[24], ttl[16];
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
            fprintf(stderr, "counterctl: %s", PQresultErrorMessage(res));
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
                snprintf(key, sizeof(key), "{c:%s}%s%s", name, q ? ":d:" : "",
                         q ? PQgetvalue(res, i, 1) : "");
                snprintf(v, sizeof(v), "%s", PQgetvalue(res, i, 2));
                snprintf(t, sizeof(t), "%s", PQgetvalue(res, i, 3));
                const char *hset[] = {"HSET", key, "v", v, "t", t};
                pipe_cmd(ps, 6, hset);
                if (q == 1) {
                    const char *exp[] = {"EXPIRE", key, ttl};
                    pipe_cmd(ps, 3, exp);
                }
            }
            rows++;
        }
        PQclear(res);
    }
    pipe_drain(ps);
    return ps->failed ? -1 : rows;
}

/* Applies one logged event (the api's or the applier's record) again. */
static int reapply(const ctr_config *cfg, redisContext *c, const char *sha,
                   const ctr_event *ev, int64_t now)
{
    ctr_apply_spec spec;
    ctr_apply_argv av;
    ctr_apply_result res;
    char err[256];
    size_t lens[24];

    const ctr_counter_def *def = ctr_config_counter(cfg, ev->counter);
    ctr_apply_plan(&spec, def, ev->ts_ms, now, cfg->lateness_s, ev->user_id, 0,
                   ev->delta);
    /* the log records what was applied: bounds were decided already */
    spec.has_min = spec.has_max = 0;
    spec.guard_id = ev->id; /* a record published twice applies once */
    spec.guard_ttl_s = cfg->applier_guard_ttl_s;
    if (ctr_apply_write_argv(&av, sha, ev->counter, &spec) != 0)
        return -1;
    for (int i = 0; i < av.argc; i++)
        lens[i] = strlen(av.argv[i]);
    redisReply *r = redisCommandArgv(c, av.argc, av.argv, lens);
    if (r == NULL) {
        fprintf(stderr, "counterctl: redis: %s\n", c->errstr);
        return -1;
    }
    int rc = ctr_apply_parse(r, &res, err, sizeof(err));
    freeReplyObject(r);
    if (rc != CTR_APPLY_OK) {
        fprintf(stderr, "counterctl: event %s: %s\n", ev->id, err);
        return rc == CTR_APPLY_OVERFLOW ? 0 : -1;
    }
    return 0;
}

int ctl_rebuild_redis(const ctr_config *cfg)
{
    char err[512];
    PGconn *conn = NULL;
    redisContext *c = NULL;
    rd_kafka_t *rk = NULL;
    int64_t from[MAX_PARTS], high[MAX_PARTS], now = ctr_time_now_ms();
    long restored, replayed = 0;
    int rc = 2, nparts;

    conn = ctr_pg_connect(cfg, "counterctl", err, sizeof(err));
    c = redis_open(cfg);
    rk = reader_new(cfg, "counterctl-rebuild-redis");
    if (conn == NULL || c == NULL || rk == NULL) {
        if (conn == NULL)
            fprintf(stderr, "counterctl: %s\n", err);
        goto out;
    }
    redisReply *r = redisCommand(c, "SCRIPT LOAD %s", ctr_apply_write_script);
    if (r == NULL || r->type != REDIS_REPLY_STRING || r->len != 40) {
        fprintf(stderr, "counterctl: could not load the write script\n");
        freeReplyObject(r);
        goto out;
    }
    char sha[41];
    memcpy(sha, r->str, 40);
    sha[40] = '\0';
    freeReplyObject(r);

    nparts = partition_count(rk, cfg->kafka_topic);
    if (nparts <= 0 || stored_offsets(conn, cfg, "public", nparts, from))
        goto out;
    pipe_state ps = {c, 0, 0};
    restored = restore_from_postgres(cfg, conn, &ps, now);
    if (restored < 0)
        goto out;

    /* then the events PostgreSQL has not counted yet */
    rd_kafka_topic_partition_list_t *l =
        rd_kafka_topic_partition_list_new(nparts);
    int open = 0;
    for (int p = 0; p < nparts; p++) {
        int64_t lo;
        if (rd_kafka_query_watermark_offsets(rk, cfg->kafka_topic, p, &lo,
                                             &high[p], 10000) != 0) {
            fprintf(stderr, "counterctl: no watermarks for partition %d\n", p);
            rd_kafka_topic_partition_list_destroy(l);
            goto out;
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
        if (msg == NULL) {
            fprintf(stderr, "counterctl: kafka stopped answering\n");
            goto out;
        }
        int p = msg->partition;
        if (!msg->err && p >= 0 && p < nparts && msg->offset < high[p]) {
            char origin[16];
            ctr_event ev;
            int logged = ctr_message_origin(msg, origin, sizeof(origin));
            if (logged && ctr_event_decode(msg->payload, msg->len, &ev, err,
                                           sizeof(err)) == 0) {
                int fail = reapply(cfg, c, sha, &ev, now);
                ctr_event_clear(&ev);
                if (fail) {
                    rd_kafka_message_destroy(msg);
                    goto out;
                }
                replayed++;
            }
            if (msg->offset + 1 >= high[p])
                open--;
        }
        rd_kafka_message_destroy(msg);
    }
    printf("rebuild-redis: restored %ld values from postgresql, applied %ld "
           "logged events after its offsets\n",
           restored, replayed);
    rc = 0;
out:
    if (rk) {
        rd_kafka_assign(rk, NULL);
        rd_kafka_consumer_close(rk);
        rd_kafka_destroy(rk);
    }
    if (c)
        redisFree(c);
    PQfinish(conn);
    return rc;
}

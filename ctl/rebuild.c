/*
 * rebuild.c - see rebuild.h.
 */
#include "ctl/rebuild.h"

#include "common/pgconn.h"
#include "common/timeutil.h"
#include "ctl/migrate.h"
#include "ctl/partitions.h"
#include "redis/apply.h"
#include "ingest/consumer.h"
#include "redis/restore.h"
#include "persister/batch.h"
#include "persister/fold.h"
#include "persister/pg_writer.h"

#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { BATCH_EVENTS = 5000, ROUNDS = 20 };

static const char rebuild_schema[] = "counter_rebuild";

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

/* The messages the live persister quarantined (public.quarantined_events),
 * sorted by (partition, offset): the replay skips them as it did. */
typedef struct quarantine_list {
    size_t n;
    struct quarantined_at {
        int32_t partition;
        int64_t offset;
    } * at;
} quarantine_list;

static int cmp_quarantined(const void *a, const void *b)
{
    const struct quarantined_at *x = a, *y = b;
    if (x->partition != y->partition)
        return x->partition < y->partition ? -1 : 1;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

/* Reads the list again (it only grows). 0 or -1 (printed). */
static int load_quarantined(PGconn *conn, const ctr_config *cfg,
                            quarantine_list *q)
{
    const char *params[2] = {cfg->persister_group_id, cfg->kafka_topic};
    PGresult *res = PQexecParams(
        conn,
        "SELECT partition, \"offset\" FROM public.quarantined_events "
        "WHERE group_id = $1 AND topic = $2",
        2, NULL, params, NULL, NULL, 0);
    int rc = -1;

    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        fprintf(stderr, "counterctl: reading quarantined_events: %s",
                PQresultErrorMessage(res));
        goto out;
    }
    struct quarantined_at *at = calloc((size_t)PQntuples(res) + 1, sizeof(*at));
    if (at == NULL) {
        fprintf(stderr, "counterctl: out of memory\n");
        goto out;
    }
    for (int i = 0; i < PQntuples(res); i++) {
        at[i].partition = (int32_t)strtol(PQgetvalue(res, i, 0), NULL, 10);
        at[i].offset = strtoll(PQgetvalue(res, i, 1), NULL, 10);
    }
    free(q->at);
    q->at = at;
    q->n = (size_t)PQntuples(res);
    qsort(q->at, q->n, sizeof(*q->at), cmp_quarantined);
    rc = 0;
out:
    PQclear(res);
    return rc;
}

static int is_quarantined(const quarantine_list *q, int32_t partition,
                          int64_t offset)
{
    struct quarantined_at key = {partition, offset};
    return q->n > 0 &&
           bsearch(&key, q->at, q->n, sizeof(*q->at), cmp_quarantined);
}

/* Replays partitions [pos, target) into the sink; pos advances. */
static int replay(const ctr_config *cfg, rd_kafka_t *rk, ps_sink *sink,
                  ps_batch *batch, const quarantine_list *quarantined,
                  int nparts, int64_t *pos, const int64_t *target,
                  int64_t *committed, long *events)
{
    const ctr_date none = {0, 0, 0};
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
        int skip = is_quarantined(quarantined, msg->partition, msg->offset);
        for (int attempt = 0; attempt < 2; attempt++) {
            if (skip ? ps_batch_add(batch, msg->partition, msg->offset, NULL,
                                    NULL, none) == 0
                     : ps_fold_message(batch, cfg, msg, err, sizeof(err)) !=
                           PS_FOLD_FULL)
                break;
            /* full: commit what we have, then fold again */
            int64_t expected[CTR_MAX_PARTITIONS];
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
        int64_t expected[CTR_MAX_PARTITIONS];
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
    quarantine_list quarantined = {0, NULL};
    int64_t pos[CTR_MAX_PARTITIONS], target[CTR_MAX_PARTITIONS],
        committed[CTR_MAX_PARTITIONS];
    long events = 0, diffs = -1;
    int rc = 2, nparts;

    conn = ctr_pg_connect(cfg, "counterctl", err, sizeof(err));
    if (conn == NULL) {
        fprintf(stderr, "counterctl: %s\n", err);
        rc = 3; /* unreachable */
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

    rk = ctr_reader_new(cfg, "counterctl-rebuild", err, sizeof(err));
    sink = ps_sink_new_in_schema(cfg, rebuild_schema);
    batch = ps_batch_new(BATCH_EVENTS);
    if (rk == NULL)
        fprintf(stderr, "counterctl: %s\n", err);
    if (rk == NULL || sink == NULL || batch == NULL)
        goto out;
    nparts = ctr_topic_partitions(rk, cfg->kafka_topic);
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
        if (ctr_persister_offsets(conn, cfg, "public", nparts, target, err,
                                  sizeof(err))) {
            fprintf(stderr, "counterctl: %s\n", err);
            goto out;
        }
        /* after the offsets: every message they pass that was
         * quarantined is listed by then (same transaction) */
        if (load_quarantined(conn, cfg, &quarantined) ||
            replay(cfg, rk, sink, batch, &quarantined, nparts, pos, target,
                   committed, &events))
            goto out;
        if (ps_sink_apply_retention(sink, ctr_time_now_ms()) < 0)
            goto out;
        /* the live tables lose the months past the retention.* settings
         * (counterctl partitions): so do the rebuilt ones */
        ctl_partitions_totals dropped;
        if (ctl_partitions_apply(conn, cfg, rebuild_schema,
                                 CTL_PARTITIONS_AHEAD, -1, 0, NULL, NULL,
                                 &dropped, err, sizeof(err))) {
            fprintf(stderr, "counterctl: partitions of %s: %s\n",
                    rebuild_schema, err);
            goto out;
        }
        if (exec_ok(conn, "BEGIN ISOLATION LEVEL REPEATABLE READ"))
            goto out;
        int64_t now_at[CTR_MAX_PARTITIONS];
        int moved = ctr_persister_offsets(conn, cfg, "public", nparts, now_at,
                                          err, sizeof(err)) != 0;
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
    free(quarantined.at);
    ps_batch_free(batch);
    ps_sink_free(sink);
    ctr_reader_free(rk);
    PQfinish(conn);
    return rc;
}

/* ---------------------------------------------------------- rebuild-redis */

int ctl_rebuild_redis(const ctr_config *cfg)
{
    char err[512];
    ctr_restore_stats st;
    ctr_rclient *c = ctr_rclient_new(cfg, 5000, err, sizeof(err));
    if (c == NULL) {
        fprintf(stderr, "counterctl: %s\n", err);
        return strstr(err, "could not connect") != NULL ? 3 : 2;
    }
    char epoch[CTR_EPOCH_MAX];
    int rc = ctr_redis_restore(cfg, c, &st, epoch, err, sizeof(err));
    ctr_rclient_free(c);
    if (rc == 1) {
        fprintf(stderr, "counterctl: rebuild-redis: another restore is "
                        "running (the key " CTR_RESTORE_LOCK_KEY " is held)\n");
        return 3;
    }
    if (rc != 0) {
        fprintf(stderr, "counterctl: rebuild-redis: %s\n", err);
        /* PostgreSQL out of reach is said so by ctr_pg_connect's message */
        return strstr(err, "could not connect") != NULL ? 3 : 2;
    }
    printf("rebuild-redis: restored %ld values from postgresql and %ld event "
           "ids it counted, applied %ld logged events after its offsets; "
           "epoch %s\n",
           st.values, st.guards, st.replayed, epoch);
    return 0;
}

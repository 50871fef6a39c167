/*
 * main.c - counter-applier: applies to Redis the events that other
 * services write straight into Kafka (the input topic, kafka.input_topic:
 * no "origin" header), exactly once, with the api's decisions, so they
 * obey the counter's kind, dedup, bounds and windows.
 *
 * A consumed batch goes to Redis at once: its events are grouped per
 * counter and partition, and consecutive events of one counter (one value
 * key) are one call of redis/fold.lua, which decides each event as the
 * api's write script decides a confirmed write; the calls of a batch are
 * pipelined, one per counter in flight (per master in a cluster), their
 * replies matched in order. A keyed api write sent around Redis (header
 * "dedup") still goes through redis/write.lua on its own, with its
 * Idempotency-Key record.
 *
 * Exactly once across crashes and rebalances: the scripts keep, per
 * counter and partition, the last offset applied and refuse anything at
 * or below it; an event id the counter saw within applier.dedup_window_s
 * (a producer's retry) is refused by the id window.
 *
 * For each event it applies (or dedups) it publishes a record with header
 * "origin: applier" carrying the applied delta and "source" naming the
 * event's offset; that record is what the persister counts (once per
 * source offset), so PostgreSQL follows Redis's decisions (a refused
 * bound, a clamp) rather than the raw request. Records are produced
 * without waiting; Kafka offsets are committed only after every record is
 * delivered; after a crash the fence recognises applied events, fold.lua's
 * outcome log says what they led to, and their records are published
 * again, which the persister recognises by their source.
 *
 * Events that fail validation are copied to "<topic>.dlq". A deployment
 * from before the input topic has its bare events in kafka.topic: they
 * are read there too until drained (applier/legacy.h).
 * Single thread: rebalance callbacks run inside rd_kafka_consumer_poll.
 */
#include "applier/applier.h"
#include "common/config.h"
#include "common/log.h"
#include "common/metrics.h"
#include "common/service.h"
#include "common/timeutil.h"
#include "redis/apply.h"
#include "ingest/consumer.h"
#include "ingest/event.h"
#include "ingest/producer.h"
#include "redis/restore.h"
#include "applier/fold.h"
#include "applier/group_watch.h"
#include "applier/legacy.h"
#include "applier/resolver.h"
#include "applier/tail.h"

#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <librdkafka/rdkafka.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void on_record(enum ctr_delivery result, void *arg)
{
    applier *a = arg;
    if (result != CTR_DELIVERED)
        a->undelivered++;
}

/* ---- Redis ---- */

void applier_redis_drop(applier *a)
{
    ctr_rclient_free(a->redis);
    a->redis = NULL;
    if (a->resolver)
        ctr_resolver_new_connection(a->resolver);
    if (a->tail)
        ctr_tail_new_connection(a->tail);
}

static void commit_progress(applier *a);
static void render_metrics(ctr_strbuf *b, void *arg);

/* Answers Prometheus and keeps the group watch current: from every loop
 * that waits, so that both go on while Redis is away. */
void applier_serve_metrics(applier *a)
{
    ctr_group_watch_step(a->groups);
    ctr_metrics_server_poll(a->metrics, render_metrics, a);
}

/*
 * A Redis without the epoch markers restarted without its data (or never
 * had any): before anything is applied to it, it is restored from
 * PostgreSQL and the log, by one applier (ctr_redis_restore takes the
 * restore lock) while the api keeps off it. First every record of what
 * this applier applied is delivered and its offsets committed, so that
 * the log the restore reads is complete and what the applier reads next
 * is exactly what the restore lacks.
 * 0 when the data set is whole, -1 to retry later.
 */
static int ensure_epoch(applier *a, char *err, size_t errlen)
{
    int whole = ctr_redis_epoch_get(a->redis, a->epoch, sizeof(a->epoch));
    if (whole == 1)
        return 0;
    if (whole < 0) {
        snprintf(err, errlen, "%s", ctr_rclient_errstr(a->redis));
        return -1;
    }
    commit_progress(a);
    ctr_info("redis has no epoch: restoring it from postgresql and the log");
    ctr_restore_stats st;
    int64_t t0 = ctr_time_mono_ms();
    int rc = ctr_redis_restore(a->cfg, a->redis, &st, a->epoch, err, errlen);
    if (rc == 1) {
        snprintf(err, errlen, "redis is being restored by another applier");
        return -1;
    }
    if (rc != 0)
        return -1;
    a->restores++;
    ctr_info("restored redis in %" PRId64 " ms: %ld values, %ld event ids, "
             "%ld logged events replayed; epoch %s",
             ctr_time_mono_ms() - t0, st.values, st.guards, st.replayed,
             a->epoch);
    return 0;
}

/* Connects, loads the script and makes sure the data set is whole (see
 * ensure_epoch); 0 or -1 (logged once per outage). */
int applier_redis_ready(applier *a)
{
    static int down_logged;
    char err[512];
    const char *where = a->cfg->redis_cluster_nodes[0]
                            ? a->cfg->redis_cluster_nodes
                            : a->cfg->redis_addr;

    if (a->redis)
        return 0;
    a->redis = ctr_rclient_new(a->cfg, 2000, err, sizeof(err));
    if (a->redis == NULL)
        goto failed;
    if (ctr_rclient_script(a->redis, ctr_script_write, a->sha) != 0 ||
        ctr_rclient_script(a->redis, ctr_script_finish, a->finish_sha) != 0 ||
        ctr_rclient_script(a->redis, ctr_script_fold, a->fold_sha) != 0) {
        snprintf(err, sizeof(err), "%s", ctr_rclient_errstr(a->redis));
        goto failed;
    }
    if (ensure_epoch(a, err, sizeof(err)) != 0)
        goto failed;
    if (down_logged)
        ctr_info("connected to redis at %s", where);
    down_logged = 0;
    return 0;
failed:
    if (!down_logged)
        ctr_warn("redis at %s not usable: %s; retrying", where, err);
    down_logged = 1;
    applier_redis_drop(a);
    return -1;
}

/* Reconnects if needed, and notices a Redis that lost its data. */
static void redis_check(applier *a)
{
    if (a->redis) {
        if (ctr_redis_epoch_get(a->redis, a->epoch, sizeof(a->epoch)) == 1)
            return;
        applier_redis_drop(a); /* reconnecting checks the epoch and restores */
    }
    (void)applier_redis_ready(a);
}

void applier_wait_ms(applier *a, int ms)
{
    int64_t until = ctr_time_mono_ms() + ms;
    for (;;) {
        applier_serve_metrics(a);
        int64_t left = until - ctr_time_mono_ms();
        if (left <= 0 || ctr_service_stopping())
            return;
        ctr_service_sleep_ms(left < 50 ? (int)left : 50);
    }
}

/* Which of the committed_offsets a topic is: 0 the input topic, 1
 * kafka.topic (its bare events from before the input topic). */
int applier_topic_index(const applier *a, const char *topic)
{
    return strcmp(topic, a->cfg->kafka_input_topic) == 0 ? 0 : 1;
}

/* Waits for every record, then commits the stored offsets. */
static void commit_progress(applier *a)
{
    if (a->uncommitted == 0)
        return;
    int left = ctr_producer_flush(a->producer, RECORD_TIMEOUT_MS);
    if (left > 0 || a->undelivered > 0) {
        /* Committing now would lose records; restarting redoes them. */
        ctr_error("%d records of applied events were not delivered to "
                  "kafka; exiting so that a restart publishes them again",
                  left + a->undelivered);
        exit(1);
    }
    /* Asynchronous: a synchronous commit (librdkafka 2.0) left a
     * reference behind that made rd_kafka_destroy wait forever at exit.
     * A commit that is lost only makes a restart see a few events again,
     * which the fence recognises. */
    rd_kafka_resp_err_t err = rd_kafka_commit(a->rk, NULL, 1);
    if (err && err != RD_KAFKA_RESP_ERR__NO_OFFSET)
        ctr_warn("could not commit offsets: %s", rd_kafka_err2str(err));
    a->uncommitted = 0;
    a->last_commit_ms = ctr_time_mono_ms();
}

static void commit_progress_cb(void *arg)
{
    commit_progress(arg);
}

/* What the broker took of a commit: the group watch's committed offsets
 * (fold.lua trims its outcome log by them). */
static void on_commit(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                      rd_kafka_topic_partition_list_t *offsets, void *opaque)
{
    applier *a = opaque;
    (void)rk;
    ctr_group_watch_committed(a->groups, err, offsets);
}

static void on_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                         rd_kafka_topic_partition_list_t *parts, void *opaque)
{
    applier *a = opaque;
    ctr_group_watch_moved(a->groups, parts);
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        /* from the committed offsets: the fence skips what was applied
         * after them */
        for (int i = 0; i < parts->cnt; i++) {
            ctr_info("assigned partition %d of %s",
                     (int)parts->elems[i].partition, parts->elems[i].topic);
            if (applier_topic_index(a, parts->elems[i].topic) == 1)
                ctr_legacy_activity(a->legacy);
        }
        ctr_consumer_assign(rk, parts);
    } else {
        /* The records of what was applied go out, and the offsets with
         * them, before the next owner starts: it then redoes little. When
         * the partitions were lost the commit is refused, and the next
         * owner's fence recognises what this member applied. Messages of
         * these partitions taken into the batch being filled are left to
         * the next owner (fill_batch). */
        for (int i = 0; i < parts->cnt; i++) {
            ctr_info("revoked partition %d of %s%s",
                     (int)parts->elems[i].partition, parts->elems[i].topic,
                     rd_kafka_assignment_lost(rk) ? " (lost)" : "");
            rd_kafka_topic_partition_list_add(a->revoked_parts,
                                              parts->elems[i].topic,
                                              parts->elems[i].partition);
        }
        a->revoked = 1;
        commit_progress(a);
        ctr_consumer_unassign(rk, parts);
    }
}

/* Was msg's partition revoked while the batch filled? */
static int revoked(const applier *a, const rd_kafka_message_t *msg)
{
    return rd_kafka_topic_partition_list_find(a->revoked_parts,
                                              rd_kafka_topic_name(msg->rkt),
                                              msg->partition) != NULL;
}

/* Takes up to BATCH_MAX messages: waits up to wait_ms for the first, then
 * takes what is there. Messages of partitions revoked meanwhile are
 * dropped (their next owner reads them). Returns how many. */
static int fill_batch(applier *a, rd_kafka_message_t **msgs, int wait_ms)
{
    int n = 0;
    a->revoked = 0;
    while (n < BATCH_MAX) {
        rd_kafka_message_t *m =
            rd_kafka_consumer_poll(a->rk, n == 0 ? wait_ms : 0);
        if (m == NULL)
            break;
        msgs[n++] = m;
    }
    if (a->revoked) {
        int k = 0;
        for (int i = 0; i < n; i++) {
            if (revoked(a, msgs[i]))
                rd_kafka_message_destroy(msgs[i]);
            else
                msgs[k++] = msgs[i];
        }
        n = k;
        rd_kafka_topic_partition_list_destroy(a->revoked_parts);
        a->revoked_parts = rd_kafka_topic_partition_list_new(4);
    }
    return n;
}

/* Prometheus text, for the metrics port. */
static void render_metrics(ctr_strbuf *b, void *arg)
{
    applier *a = arg;
    ctr_metric_help(b, "counter_applier_events_total", "counter",
                    "External events by outcome.");
    const struct {
        const char *outcome;
        uint64_t v;
    } outcomes[] = {
        {"applied", a->applied},       {"duplicate", a->duplicates},
        {"bound_refused", a->refused}, {"dead_lettered", a->invalid},
        {"skipped", a->skipped},
    };
    for (size_t i = 0; i < sizeof(outcomes) / sizeof(outcomes[0]); i++)
        ctr_strbuf_printf(b,
                          "counter_applier_events_total{outcome=\"%s\"} "
                          "%llu\n",
                          outcomes[i].outcome,
                          (unsigned long long)outcomes[i].v);
    ctr_metric_help(b, "counter_applier_redis_restores_total", "counter",
                    "Times Redis was found without its epoch and restored.");
    ctr_strbuf_printf(b, "counter_applier_redis_restores_total %llu\n",
                      (unsigned long long)a->restores);
    ctr_metric_help(b, "counter_applier_redis_up", "gauge",
                    "1 while connected to a whole Redis data set.");
    ctr_strbuf_printf(b, "counter_applier_redis_up %d\n", a->redis != NULL);
    ctr_metric_help(b, "counter_applier_apply_seconds", "histogram",
                    "How long an event waited for Redis: the round trip of "
                    "its batch's calls (with retries).");
    ctr_hist_render(b, "counter_applier_apply_seconds", "", &a->apply_seconds);
    ctr_metric_help(b, "counter_applier_batch_events", "histogram",
                    "Messages taken from Kafka at once.");
    ctr_hist_render(b, "counter_applier_batch_events", "", &a->batch_events);
    ctr_consumer_render_lag(b, a->rk, a->cfg->kafka_input_topic,
                            "counter_applier_consumer_lag");
    ctr_resolver_stats rs = {0};
    if (a->resolver)
        ctr_resolver_stats_get(a->resolver, &rs);
    ctr_metric_help(b, "counter_applier_resolved_total", "counter",
                    "Pending writes settled by the resolver: found in the "
                    "log, or published.");
    ctr_strbuf_printf(b,
                      "counter_applier_resolved_total{how=\"found\"} %llu\n"
                      "counter_applier_resolved_total{how=\"published\"} "
                      "%llu\n",
                      (unsigned long long)rs.found,
                      (unsigned long long)rs.published);
    ctr_metric_help(b, "counter_applier_tail_applied_total", "counter",
                    "Api events of a lost data set applied again after a "
                    "restore.");
    ctr_strbuf_printf(
        b, "counter_applier_tail_applied_total %llu\n",
        (unsigned long long)(a->tail ? ctr_tail_applied(a->tail) : 0));
    ctr_metric_help(b, "counter_applier_resolve_failures_total", "counter",
                    "Pending writes claimed but not settled (retried).");
    ctr_strbuf_printf(b, "counter_applier_resolve_failures_total %llu\n",
                      (unsigned long long)rs.failed);
    ctr_group_watch_render(a->groups, b);
}

/* Long on purpose: start-up read top to bottom and torn down in reverse
 * (STYLE.md 11), every step in one place, in order. */
int main(void)
{
    applier a;
    ctr_config *cfg = NULL;
    ctr_config_kv *record_kv = NULL;
    rd_kafka_message_t **msgs = NULL;
    char err[512];
    int rc = 1;

    memset(&a, 0, sizeof(a));
    cfg = ctr_service_start("counter-applier");
    if (cfg == NULL)
        return 2;
    a.cfg = cfg;

    /* Records must not be given up on quickly: an undelivered one stops
     * the applier (see commit_progress). They are produced without
     * waiting, so they may linger a little to travel in fuller batches
     * (kafka.producer.linger.ms still overrides it). */
    ctr_config record_cfg = *cfg;
    record_cfg.kafka_message_timeout_ms = RECORD_TIMEOUT_MS;
    record_kv = calloc(cfg->n_kafka_producer + 1, sizeof(*record_kv));
    if (record_kv == NULL) {
        ctr_error("out of memory");
        goto out;
    }
    record_kv[0].key = "linger.ms";
    record_kv[0].value = "5";
    if (cfg->n_kafka_producer > 0)
        memcpy(record_kv + 1, cfg->kafka_producer,
               cfg->n_kafka_producer * sizeof(*record_kv));
    record_cfg.kafka_producer = record_kv;
    record_cfg.n_kafka_producer = cfg->n_kafka_producer + 1;
    a.producer =
        ctr_producer_new(&record_cfg, NULL, on_record, err, sizeof(err));
    if (a.producer == NULL) {
        ctr_error("could not set up kafka: %s", err);
        goto out;
    }
    a.rk = ctr_consumer_new(cfg, cfg->applier_group_id, on_rebalance, on_commit,
                            &a, err, sizeof(err));
    a.revoked_parts = rd_kafka_topic_partition_list_new(4);
    if (a.rk == NULL) {
        ctr_error("%s", err);
        goto out;
    }
    a.legacy = ctr_legacy_new(cfg, a.rk);
    if (a.legacy == NULL) {
        ctr_error("out of memory");
        goto out;
    }
    const char *topics[2] = {cfg->kafka_input_topic, cfg->kafka_topic};
    if (ctr_consumer_subscribe(a.rk, topics,
                               ctr_legacy_reading(a.legacy) ? 2 : 1, err,
                               sizeof(err)) != 0) {
        ctr_error("%s", err);
        goto out;
    }
    ctr_info("applying external events of %s as group %s to redis %s%s",
             cfg->kafka_input_topic, cfg->applier_group_id,
             cfg->redis_cluster_nodes[0] ? "cluster " : "at ",
             cfg->redis_cluster_nodes[0] ? cfg->redis_cluster_nodes
                                         : cfg->redis_addr);
    ctr_hist_init(&a.apply_seconds, ctr_latency_bounds);
    ctr_hist_init(&a.batch_events, ctr_size_bounds);
    a.resolver = ctr_resolver_new(cfg);
    a.tail = ctr_tail_new(cfg);
    a.groups = ctr_group_watch_new(cfg, a.rk);
    msgs = calloc(BATCH_MAX, sizeof(*msgs));
    if (a.resolver == NULL || a.tail == NULL || a.groups == NULL ||
        msgs == NULL) {
        ctr_error("out of memory");
        goto out;
    }
    a.metrics =
        ctr_metrics_server_open(cfg->server_bind, cfg->applier_metrics_port);
    (void)applier_redis_ready(&a);

    a.last_commit_ms = ctr_time_mono_ms();
    while (!ctr_service_stopping()) {
        int n = fill_batch(&a, msgs, 50);
        if (n > 0)
            applier_apply_batch(&a, msgs, n);
        for (int i = 0; i < n; i++)
            rd_kafka_message_destroy(msgs[i]);
        ctr_producer_poll(a.producer, 0);
        applier_serve_metrics(&a);
        /* idle: still watch Redis, so that a restart that lost its data
         * is restored (and the api can use it again) without waiting for
         * an event to apply */
        if (n == 0 && ctr_time_mono_ms() - a.last_redis_check_ms >=
                          REDIS_CHECK_EVERY_MS) {
            a.last_redis_check_ms = ctr_time_mono_ms();
            redis_check(&a);
        }
        if (a.redis && (ctr_resolver_step(a.resolver, a.redis, a.epoch) < 0 ||
                        ctr_tail_step(a.tail, a.redis, a.epoch) < 0))
            applier_redis_drop(&a); /* reconnect before the next try */
        if (a.uncommitted >= COMMIT_EVERY_MSGS ||
            (a.uncommitted > 0 &&
             ctr_time_mono_ms() - a.last_commit_ms >= COMMIT_EVERY_MS))
            commit_progress(&a);
        if (ctr_legacy_step(a.legacy, commit_progress_cb, &a) == 1 &&
            ctr_consumer_subscribe(a.rk, topics, 1, err, sizeof(err)) != 0)
            ctr_warn("%s", err);
    }
    ctr_info("stopping: publishing the last records and committing");
    commit_progress(&a);
    rc = 0;
out:
    if (a.rk)
        rd_kafka_consumer_close(a.rk); /* its callbacks may use the watch */
    ctr_group_watch_free(a.groups);    /* its thread uses the consumer */
    a.groups = NULL;
    if (a.rk)
        rd_kafka_destroy(a.rk);
    ctr_producer_free(a.producer);
    free(record_kv);
    free(msgs);
    ctr_legacy_free(a.legacy);
    if (a.revoked_parts)
        rd_kafka_topic_partition_list_destroy(a.revoked_parts);
    applier_redis_drop(&a); /* before what it tells of a new connection */
    ctr_resolver_free(a.resolver);
    ctr_tail_free(a.tail);
    ctr_metrics_server_free(a.metrics);
    ctr_info("stopped: %" PRIu64 " applied, %" PRIu64 " duplicates, %" PRIu64
             " refused by bounds, %" PRIu64 " invalid, %" PRIu64
             " already applied elsewhere",
             a.applied, a.duplicates, a.refused, a.invalid, a.skipped);
    ctr_config_free(cfg);
    return rc;
}

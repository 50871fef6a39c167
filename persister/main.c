/*
 * main.c - counter-persister: a Kafka consumer group that folds events into
 * PostgreSQL exactly once. Offsets live in PostgreSQL beside the totals and
 * are written in the same transaction; on assignment the consumer seeks to
 * them (partitions.c), so Kafka's own committed offsets are informational
 * only. This file reads the messages into the batch (fold.c, batch.c),
 * hands full batches to the committer (flush.c) and serves the metrics.
 */
#include "persister/persister.h"

#include "common/log.h"
#include "common/pgconn.h"
#include "common/service.h"
#include "common/timeutil.h"
#include "ingest/consumer.h"
#include "ingest/event.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void handle_message(persister *p, rd_kafka_message_t *msg)
{
    char err[256];

    if (msg->err) {
        if (msg->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
            ctr_warn("kafka consumer: %s", rd_kafka_message_errstr(msg));
        return;
    }
    if (ps_committed_slot(p, msg->partition) == NULL)
        return; /* a leftover from a partition we no longer own */
    p->events_total++;
    for (int attempt = 0; attempt < 2; attempt++) {
        if (ps_batch_messages(p->batch) == 0)
            p->batch_started_ms = ctr_time_mono_ms();
        /* looked up on each try: a flush in between may pass marks */
        quarantine_mark *mark =
            p->n_quarantine ? ps_quarantine_find(p, msg->partition, msg->offset)
                            : NULL;
        enum ps_fold_result r =
            mark ? ps_quarantine(p, msg, mark)
                 : ps_fold_message(p->batch, p->cfg, msg, err, sizeof(err));
        if (r == PS_FOLD_INVALID) {
            p->invalid_total++;
            ctr_warn("invalid event at partition %" PRId32 " offset %" PRId64
                     " sent to the dead-letter topic: %s",
                     msg->partition, msg->offset, err);
            ps_dead_letter(p, msg, err);
        }
        if (r != PS_FOLD_FULL)
            return;
        uint64_t resyncs = p->resyncs;
        ps_flush_batch(p, 0, 0);
        if (p->resyncs != resyncs)
            return; /* read again from the stored offsets, this one too */
    }
    ctr_error("event at partition %" PRId32 " offset %" PRId64
              " does not fit an empty batch; skipped",
              msg->partition, msg->offset);
}

/* Prometheus text, for the metrics port. */
static void render_metrics(ctr_strbuf *b, void *arg)
{
    persister *p = arg;
    const struct {
        const char *name, *help;
        uint64_t v;
    } counters[] = {
        {"counter_persister_events_total", "Events read from Kafka.",
         p->events_total},
        {"counter_persister_dead_lettered_total",
         "Invalid events sent to the dead-letter topic.", p->invalid_total},
        {"counter_persister_batches_total", "Batches committed to PostgreSQL.",
         p->batches_total},
        {"counter_persister_fenced_batches_total",
         "Stale batches rolled back (partitions had moved on).",
         p->fenced_total},
        {"counter_persister_commit_errors_total",
         "Failed commit attempts (retried with backoff).",
         p->commit_errors_total},
        {"counter_persister_reread_events_total",
         "Events read again because PostgreSQL's stored offsets went back "
         "behind this member's own commits (lost in a failover).",
         p->reread_total},
        {"counter_persister_quarantined_total",
         "Events PostgreSQL refused, sent to the dead-letter topic.",
         p->quarantined_total},
    };
    for (size_t i = 0; i < sizeof(counters) / sizeof(counters[0]); i++) {
        ctr_metric_help(b, counters[i].name, "counter", counters[i].help);
        ctr_strbuf_printf(b, "%s %llu\n", counters[i].name,
                          (unsigned long long)counters[i].v);
    }
    ctr_metric_help(b, "counter_persister_batch_events", "histogram",
                    "Events per committed batch.");
    ctr_hist_render(b, "counter_persister_batch_events", "", &p->batch_events);
    ctr_metric_help(b, "counter_persister_commit_seconds", "histogram",
                    "PostgreSQL commit latency of a batch.");
    ctr_hist_render(b, "counter_persister_commit_seconds", "",
                    &p->commit_seconds);
    ctr_metric_help(b, "counter_persister_pending_events", "gauge",
                    "Events read but not yet committed.");
    ctr_strbuf_printf(b, "counter_persister_pending_events %zu\n",
                      ps_batch_messages(p->batch));
    ctr_consumer_render_lag(b, p->rk, p->cfg->kafka_topic,
                            "counter_persister_consumer_lag");
    if (p->fluct)
        ps_fluct_render(p->fluct, b);
}

static void on_dead_letter(enum ctr_delivery result, void *arg)
{
    persister *p = arg;
    if (result != CTR_DELIVERED)
        p->dlq_failed++;
}

/*
 * Consumer settings for the persister alone (kafka.consumer.* is shared
 * with the applier), unless the configuration names them. librdkafka 2.0
 * stops fetching a partition for fetch.error.backoff.ms (500 ms) whenever
 * its local queue holds queued.min.messages (100000) or
 * queued.max.messages.kbytes; draining a backlog, the persister emptied
 * the queue and then waited (half its time at 1M events). So: a message
 * floor it never reaches, a byte bound per partition (16 MB rather than
 * 64 MB, to keep the memory near what it was), and a short pause when the
 * bound is reached.
 */
static int add_consumer_defaults(ctr_config *cfg)
{
    static const char *const defaults[][2] = {
        {"queued.min.messages", "1000000"},
        {"queued.max.messages.kbytes", "16384"},
        {"fetch.error.backoff.ms", "50"},
    };
    for (size_t d = 0; d < sizeof(defaults) / sizeof(defaults[0]); d++) {
        int set = 0;
        for (size_t i = 0; i < cfg->n_kafka_consumer; i++)
            set |= strcmp(cfg->kafka_consumer[i].key, defaults[d][0]) == 0;
        if (set)
            continue;
        ctr_config_kv *grown = realloc(
            cfg->kafka_consumer, (cfg->n_kafka_consumer + 1) * sizeof(*grown));
        if (grown == NULL)
            return -1;
        cfg->kafka_consumer = grown;
        ctr_config_kv *kv = &grown[cfg->n_kafka_consumer];
        kv->key = strdup(defaults[d][0]);
        kv->value = strdup(defaults[d][1]);
        if (kv->key == NULL || kv->value == NULL) {
            free(kv->key);
            free(kv->value);
            return -1;
        }
        cfg->n_kafka_consumer++;
    }
    return 0;
}

/* Long on purpose: start-up read top to bottom and torn down in reverse
 * (STYLE.md 11), every step in one place, in order. */
int main(void)
{
    persister p;
    ctr_config *cfg = NULL;
    char err[512];
    int rc = 1;

    memset(&p, 0, sizeof(p));
    cfg = ctr_service_start("counter-persister");
    if (cfg == NULL)
        return 2;
    p.cfg = cfg;
    p.limit = (size_t)cfg->persister_batch_size;
    p.sink = ps_sink_new(cfg);
    p.batch = ps_batch_new((size_t)cfg->persister_batch_size);
    p.spare = ps_batch_new((size_t)cfg->persister_batch_size);
    p.committer = p.sink ? ps_committer_new(p.sink, cfg->kafka_topic) : NULL;
    if (p.sink == NULL || p.batch == NULL || p.spare == NULL ||
        p.committer == NULL || add_consumer_defaults(cfg) != 0) {
        ctr_error("out of memory");
        goto out;
    }
    p.producer = ctr_producer_new(cfg, NULL, on_dead_letter, err, sizeof(err));
    if (p.producer == NULL) {
        ctr_error("could not set up kafka: %s", err);
        goto out;
    }
    p.rk = ctr_consumer_new(cfg, cfg->persister_group_id,
                            ps_on_rebalance_after_commit, NULL, &p, err,
                            sizeof(err));
    if (p.rk == NULL ||
        ctr_consumer_subscribe(p.rk, (const char *const *)&cfg->kafka_topic, 1,
                               err, sizeof(err)) != 0) {
        ctr_error("%s", err);
        goto out;
    }
    p.fluct = ps_fluct_new(cfg->persister_fluctuation_window_ms,
                           cfg->persister_fluctuation_warmup);
    ctr_hist_init(&p.batch_events, ctr_size_bounds);
    ctr_hist_init(&p.commit_seconds, ctr_latency_bounds);
    p.metrics =
        ctr_metrics_server_open(cfg->server_bind, cfg->persister_metrics_port);
    char where[300];
    ctr_info("consuming %s as group %s into postgresql at %s", cfg->kafka_topic,
             cfg->persister_group_id, ctr_pg_where(cfg, where, sizeof(where)));

    int64_t next_retention_ms = ctr_time_mono_ms() + RETENTION_FIRST_MS;
    int64_t next_idle_work_ms = 0;
    while (!ctr_service_stopping()) {
        int wait_ms = 100;
        int64_t now = ctr_time_mono_ms();
        if (now >= next_retention_ms) {
            ps_finish_commit(&p, 1, 0, 0); /* the sink is ours alone then */
            long n = ps_sink_apply_retention(p.sink, ctr_time_now_ms());
            if (n > 0)
                ctr_info("retention: dropped %ld expired rows", n);
            now = ctr_time_mono_ms();
            next_retention_ms = now + RETENTION_EVERY_MS;
        }
        if (ps_batch_messages(p.batch) > 0) {
            int64_t left = p.batch_started_ms + cfg->persister_batch_ms - now;
            wait_ms = left < 0 ? 0 : (int)left;
        }
        if (p.in_flight && wait_ms > IDLE_WORK_EVERY_MS)
            wait_ms = IDLE_WORK_EVERY_MS; /* to take its result soon */
        rd_kafka_message_t *msg = rd_kafka_consumer_poll(p.rk, wait_ms);
        if (msg) {
            handle_message(&p, msg);
            rd_kafka_message_destroy(msg);
        }
        /*
         * Draining a backlog runs this loop once per message: the metrics
         * port (an accept4 that allocates a socket even when nobody is
         * waiting) and the fluctuation windows are looked at every few
         * milliseconds instead, which is far below any scrape interval or
         * window.
         */
        now = ctr_time_mono_ms();
        if (msg == NULL || now >= next_idle_work_ms) {
            /* a finished commit's offsets and rates are taken at once, so
             * that they never wait for the next batch to fill */
            if (p.in_flight && ps_committer_done(p.committer))
                ps_finish_commit(&p, 1, 0, 0);
            ctr_metrics_server_poll(p.metrics, render_metrics, &p);
            if (p.fluct)
                ps_fluct_tick(p.fluct, now);
            next_idle_work_ms = now + IDLE_WORK_EVERY_MS;
        }
        size_t n = ps_batch_messages(p.batch);
        if (n >= p.limit ||
            (n > 0 && now - p.batch_started_ms >= cfg->persister_batch_ms))
            ps_flush_batch(&p, 0, 0);
    }

    ctr_info("stopping: committing the last batch");
    ps_flush_batch(&p, 1, ctr_time_mono_ms() + 5000);
    rc = 0;
out:
    if (p.rk) {
        rd_kafka_consumer_close(p.rk);
        rd_kafka_destroy(p.rk);
    }
    ctr_info("stopped after %" PRIu64 " events (%" PRIu64
             " invalid) in %" PRIu64 " batches",
             p.events_total, p.invalid_total, p.batches_total);
    ctr_metrics_server_free(p.metrics);
    ps_fluct_free(p.fluct);
    ps_committer_free(p.committer); /* before the sink it uses */
    ps_batch_free(p.batch);
    ps_batch_free(p.spare);
    ps_batch_free(p.in_flight);
    ps_sink_free(p.sink);
    ctr_producer_free(p.producer);
    ctr_config_free(cfg);
    return rc;
}

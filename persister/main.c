/*
 * main.c - counter-persister: a Kafka consumer group that folds events into
 * PostgreSQL exactly once. Offsets live in PostgreSQL beside the totals and
 * are written in the same transaction; on assignment the consumer seeks to
 * them, so Kafka's own committed offsets are informational only.
 *
 * Single thread: rebalance callbacks run inside rd_kafka_consumer_poll on
 * this thread, so the batch and the offset table need no locks.
 */
#include "common/config.h"
#include "common/log.h"
#include "common/metrics.h"
#include "common/timeutil.h"
#include "ingest/consumer.h"
#include "ingest/event.h"
#include "ingest/producer.h"
#include "persister/batch.h"
#include "persister/fluct.h"
#include "persister/fold.h"
#include "persister/sink.h"

#include <inttypes.h>
#include <librdkafka/rdkafka.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum {
    MAX_PARTS = 1024,
    BACKOFF_MAX_MS = 5000,
    RETENTION_FIRST_MS = 60 * 1000,
    RETENTION_EVERY_MS = 3600 * 1000,
};

static volatile sig_atomic_t stop_requested;

typedef struct persister {
    const ctr_config *cfg;
    rd_kafka_t *rk;
    ps_sink *sink;
    ps_batch *batch;
    int64_t batch_started_ms;
    /* stored next offset per assigned partition; -1: no row yet */
    size_t n_assigned;
    int32_t assigned[MAX_PARTS];
    int64_t committed[MAX_PARTS];
    uint64_t events_total, invalid_total, batches_total;
    uint64_t fenced_total, commit_errors_total;
    ctr_histogram batch_events, commit_seconds;
    ctr_metrics_server *metrics;
    ps_fluct *fluct;        /* NULL if it could not be had */
    ctr_producer *producer; /* dead letters */
    int dlq_failed;
} persister;

static void watch_rates(persister *p);

static void on_stop_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int64_t *committed_slot(persister *p, int32_t partition)
{
    for (size_t i = 0; i < p->n_assigned; i++)
        if (p->assigned[i] == partition)
            return &p->committed[i];
    return NULL;
}

/* Loads stored offsets for every assigned partition, retrying until it
 * works or a stop is requested. Returns 0 or -1 (stopping). */
static int load_offsets(persister *p)
{
    int backoff = 100;
    while (!stop_requested) {
        if (ps_sink_load_offsets(p->sink, p->cfg->kafka_topic, p->assigned,
                                 p->n_assigned, p->committed) == 0)
            return 0;
        sleep_ms(backoff);
        backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
    }
    return -1;
}

/* The list of assigned partitions with the stored offsets as positions. */
static rd_kafka_topic_partition_list_t *positions(persister *p)
{
    rd_kafka_topic_partition_list_t *l =
        rd_kafka_topic_partition_list_new((int)p->n_assigned);
    for (size_t i = 0; i < p->n_assigned; i++) {
        rd_kafka_topic_partition_t *tp = rd_kafka_topic_partition_list_add(
            l, p->cfg->kafka_topic, p->assigned[i]);
        tp->offset =
            p->committed[i] >= 0 ? p->committed[i] : RD_KAFKA_OFFSET_BEGINNING;
    }
    return l;
}

static void on_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                         rd_kafka_topic_partition_list_t *parts, void *opaque)
{
    persister *p = opaque;

    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        p->n_assigned = 0;
        for (int i = 0; i < parts->cnt && i < MAX_PARTS; i++)
            if (strcmp(parts->elems[i].topic, p->cfg->kafka_topic) == 0)
                p->assigned[p->n_assigned++] = parts->elems[i].partition;
        if (load_offsets(p) != 0) {
            rd_kafka_assign(rk, NULL);
            return;
        }
        rd_kafka_topic_partition_list_t *l = positions(p);
        for (size_t i = 0; i < p->n_assigned; i++)
            ctr_info("assigned partition %" PRId32 " from offset %" PRId64 "%s",
                     p->assigned[i], p->committed[i] < 0 ? 0 : p->committed[i],
                     p->committed[i] < 0 ? " (beginning)" : "");
        rd_kafka_assign(rk, l);
        rd_kafka_topic_partition_list_destroy(l);
    } else {
        /* Best effort: what is not committed now is redone by the next
         * owner from the stored offsets. */
        if (ps_batch_messages(p->batch) > 0) {
            enum ps_sink_result r = PS_SINK_ERROR;
            int64_t expected[MAX_PARTS];
            size_t np = ps_batch_partitions(p->batch);
            for (size_t i = 0; i < np; i++) {
                int64_t *slot = committed_slot(
                    p, ps_batch_partition_at(p->batch, i)->partition);
                expected[i] = slot ? *slot : -1;
            }
            r = ps_sink_commit(p->sink, p->cfg->kafka_topic, p->batch,
                               expected);
            if (r != PS_SINK_OK)
                ctr_info("dropped an uncommitted batch of %zu events on "
                         "revocation; the next owner redoes it",
                         ps_batch_messages(p->batch));
            ps_batch_reset(p->batch);
        }
        p->n_assigned = 0;
        rd_kafka_assign(rk, NULL);
    }
}

/* After a fenced commit: forget the batch and go back to the stored
 * offsets, which another member advanced. */
static void resync(persister *p)
{
    ps_batch_reset(p->batch);
    if (load_offsets(p) != 0)
        return;
    rd_kafka_topic_partition_list_t *l = positions(p);
    rd_kafka_error_t *e = rd_kafka_seek_partitions(p->rk, l, 5000);
    if (e) {
        ctr_warn("could not seek to stored offsets: %s",
                 rd_kafka_error_string(e));
        rd_kafka_error_destroy(e);
    }
    rd_kafka_topic_partition_list_destroy(l);
}

/*
 * Commits the batch, retrying with backoff while PostgreSQL is down: until
 * a stop is requested, or with final set until final_deadline_ms.
 */
static void flush_batch(persister *p, int final, int64_t final_deadline_ms)
{
    int64_t expected[MAX_PARTS];
    size_t np = ps_batch_partitions(p->batch);
    int backoff = 100;

    if (ps_batch_messages(p->batch) == 0)
        return;
    /* dead letters go out before the offsets that pass them move on */
    if (ctr_producer_flush(p->producer, 30000) > 0 || p->dlq_failed) {
        ctr_error("could not deliver dead letters; exiting so that a "
                  "restart sends them again");
        exit(1);
    }
    for (;;) {
        for (size_t i = 0; i < np; i++) {
            int64_t *slot = committed_slot(
                p, ps_batch_partition_at(p->batch, i)->partition);
            expected[i] = slot ? *slot : -1;
        }
        int64_t t0 = ctr_time_mono_us();
        enum ps_sink_result r =
            ps_sink_commit(p->sink, p->cfg->kafka_topic, p->batch, expected);
        if (r == PS_SINK_OK) {
            ctr_hist_observe(&p->commit_seconds,
                             (double)(ctr_time_mono_us() - t0) / 1e6);
            ctr_hist_observe(&p->batch_events,
                             (double)ps_batch_messages(p->batch));
            break;
        }
        if (r == PS_SINK_FENCED) {
            p->fenced_total++;
            resync(p);
            return;
        }
        p->commit_errors_total++;
        if (final ? ctr_time_mono_ms() >= final_deadline_ms : stop_requested) {
            ctr_warn("stopping with an uncommitted batch of %zu events; it "
                     "is redone on restart",
                     ps_batch_messages(p->batch));
            ps_batch_reset(p->batch);
            return;
        }
        sleep_ms(backoff);
        backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
    }

    /* Mirror the positions into Kafka so its lag tools see progress. */
    rd_kafka_topic_partition_list_t *l =
        rd_kafka_topic_partition_list_new((int)np);
    for (size_t i = 0; i < np; i++) {
        const ps_partition_range *r = ps_batch_partition_at(p->batch, i);
        int64_t *slot = committed_slot(p, r->partition);
        if (slot)
            *slot = r->last_offset + 1;
        rd_kafka_topic_partition_list_add(l, p->cfg->kafka_topic, r->partition)
            ->offset = r->last_offset + 1;
    }
    rd_kafka_commit(p->rk, l, 1);
    rd_kafka_topic_partition_list_destroy(l);

    p->batches_total++;
    ctr_debug("committed a batch of %zu events", ps_batch_messages(p->batch));
    watch_rates(p);
    ps_batch_reset(p->batch);
}

/* Feeds what the committed batch changed to the fluctuation watch: the
 * per-minute sums of every counter, and the records counted once per id. */
static void watch_rates(persister *p)
{
    if (p->fluct == NULL)
        return;
    int64_t now = ctr_time_mono_ms();
    for (size_t i = 0; i < ps_batch_sum_slots(p->batch); i++) {
        const ps_sum *s = ps_batch_sum_at(p->batch, i);
        if (s->used && s->table == PS_BUCKET)
            ps_fluct_add(p->fluct, s->name, s->delta, now);
    }
    for (size_t i = 0; i < ps_batch_records(p->batch); i++) {
        const ps_record *r = ps_batch_record_at(p->batch, i);
        ps_fluct_add(p->fluct, r->ev.counter, r->ev.delta, now);
    }
}

static void handle_message(persister *p, rd_kafka_message_t *msg)
{
    char err[256];

    if (msg->err) {
        if (msg->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
            ctr_warn("kafka consumer: %s", rd_kafka_message_errstr(msg));
        return;
    }
    if (committed_slot(p, msg->partition) == NULL)
        return; /* a leftover from a partition we no longer own */
    p->events_total++;
    for (int attempt = 0; attempt < 2; attempt++) {
        if (ps_batch_messages(p->batch) == 0)
            p->batch_started_ms = ctr_time_mono_ms();
        enum ps_fold_result r =
            ps_fold_message(p->batch, p->cfg, msg, err, sizeof(err));
        if (r == PS_FOLD_INVALID) {
            p->invalid_total++;
            ctr_warn("invalid event at partition %" PRId32 " offset %" PRId64
                     " sent to the dead-letter topic: %s",
                     msg->partition, msg->offset, err);
            while (ctr_producer_send_dlq(p->producer, msg->key, msg->key_len,
                                         msg->payload, msg->len, err,
                                         msg->partition, msg->offset, p) != 0)
                ctr_producer_poll(p->producer, 100);
        }
        if (r != PS_FOLD_FULL)
            return;
        flush_batch(p, 0, 0);
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

int main(void)
{
    persister p;
    ctr_config *cfg = NULL;
    char err[512];
    int rc = 1;

    memset(&p, 0, sizeof(p));
    cfg = ctr_service_start("counter-persister", on_stop_signal);
    if (cfg == NULL)
        return 2;
    p.cfg = cfg;
    p.sink = ps_sink_new(cfg);
    p.batch = ps_batch_new((size_t)cfg->persister_batch_size);
    if (p.sink == NULL || p.batch == NULL) {
        ctr_error("out of memory");
        goto out;
    }
    p.producer = ctr_producer_new(cfg, NULL, on_dead_letter, err, sizeof(err));
    if (p.producer == NULL) {
        ctr_error("could not set up kafka: %s", err);
        goto out;
    }
    p.rk = ctr_consumer_new(cfg, cfg->persister_group_id, on_rebalance, &p, err,
                            sizeof(err));
    if (p.rk == NULL) {
        ctr_error("%s", err);
        goto out;
    }
    p.fluct = ps_fluct_new(cfg->persister_fluctuation_window_ms,
                           cfg->persister_fluctuation_warmup);
    ctr_hist_init(&p.batch_events, ctr_size_bounds);
    ctr_hist_init(&p.commit_seconds, ctr_latency_bounds);
    p.metrics =
        ctr_metrics_server_open(cfg->server_bind, cfg->persister_metrics_port);
    ctr_info("consuming %s as group %s into postgresql at %s:%d",
             cfg->kafka_topic, cfg->persister_group_id, cfg->postgres_host,
             cfg->postgres_port);

    int64_t next_retention_ms = ctr_time_mono_ms() + RETENTION_FIRST_MS;
    while (!stop_requested) {
        int wait_ms = 100;
        if (ctr_time_mono_ms() >= next_retention_ms) {
            long n = ps_sink_apply_retention(p.sink, ctr_time_now_ms());
            if (n > 0)
                ctr_info("retention: dropped %ld expired rows", n);
            next_retention_ms = ctr_time_mono_ms() + RETENTION_EVERY_MS;
        }
        if (ps_batch_messages(p.batch) > 0) {
            int64_t left = p.batch_started_ms + cfg->persister_batch_ms -
                           ctr_time_mono_ms();
            wait_ms = left < 0 ? 0 : (int)left;
        }
        rd_kafka_message_t *msg = rd_kafka_consumer_poll(p.rk, wait_ms);
        if (msg) {
            handle_message(&p, msg);
            rd_kafka_message_destroy(msg);
        }
        ctr_metrics_server_poll(p.metrics, render_metrics, &p);
        if (p.fluct)
            ps_fluct_tick(p.fluct, ctr_time_mono_ms());
        size_t n = ps_batch_messages(p.batch);
        if (n >= (size_t)cfg->persister_batch_size ||
            (n > 0 && ctr_time_mono_ms() - p.batch_started_ms >=
                          cfg->persister_batch_ms))
            flush_batch(&p, 0, 0);
    }

    ctr_info("stopping: committing the last batch");
    flush_batch(&p, 1, ctr_time_mono_ms() + 5000);
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
    ps_batch_free(p.batch);
    ps_sink_free(p.sink);
    ctr_producer_free(p.producer);
    ctr_config_free(cfg);
    return rc;
}

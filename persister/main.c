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
#include "persister/committer.h"
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
    IDLE_WORK_EVERY_MS = 5,
    MAX_QUARANTINE = 16, /* messages found at fault, not yet passed */
};

static volatile sig_atomic_t stop_requested;

/* A message PostgreSQL refused alone (see narrow), kept until the batch
 * that passes it is committed: it is skipped whenever it is read again. */
typedef struct quarantine_mark {
    int32_t partition;
    int64_t offset;
    int sent; /* dead-lettered, counted and logged already */
    char reason[600];
} quarantine_mark;

typedef struct persister {
    const ctr_config *cfg;
    rd_kafka_t *rk;
    ps_sink *sink;
    ps_batch *batch;
    int64_t batch_started_ms;
    /* the batch being committed on the committer's thread, while the next
     * one fills; NULL when none is */
    ps_committer *committer;
    ps_batch *in_flight, *spare;
    uint64_t resyncs; /* times the positions went back to the stored ones */
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
    /*
     * Narrowing down a batch PostgreSQL refused (see narrow): batches hold
     * at most `limit` messages (persister.batch_size when not narrowing);
     * the message found at fault is quarantined when it is read again.
     */
    size_t limit;
    size_t n_quarantine;
    quarantine_mark quarantine[MAX_QUARANTINE];
    uint64_t quarantined_total;
} persister;

static void watch_rates(persister *p, const ps_batch *b);

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

/* Loads stored offsets for the assigned partitions from index `from` on,
 * retrying until it works or a stop is requested. Returns 0 or -1
 * (stopping). */
static int load_offsets_from(persister *p, size_t from)
{
    int backoff = 100;
    while (!stop_requested) {
        if (ps_sink_load_offsets(p->sink, p->cfg->kafka_topic,
                                 p->assigned + from, p->n_assigned - from,
                                 p->committed + from) == 0)
            return 0;
        sleep_ms(backoff);
        backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
    }
    return -1;
}

/* The same for every assigned partition. */
static int load_offsets(persister *p)
{
    return load_offsets_from(p, 0);
}

/* The assigned partitions from index `from` on, with the stored offsets
 * as positions. */
static rd_kafka_topic_partition_list_t *positions_from(persister *p,
                                                       size_t from)
{
    rd_kafka_topic_partition_list_t *l =
        rd_kafka_topic_partition_list_new((int)(p->n_assigned - from));
    for (size_t i = from; i < p->n_assigned; i++) {
        rd_kafka_topic_partition_t *tp = rd_kafka_topic_partition_list_add(
            l, p->cfg->kafka_topic, p->assigned[i]);
        tp->offset =
            p->committed[i] >= 0 ? p->committed[i] : RD_KAFKA_OFFSET_BEGINNING;
    }
    return l;
}

static rd_kafka_topic_partition_list_t *positions(persister *p)
{
    return positions_from(p, 0);
}

/* Whether `parts` (of a rebalance) holds our topic's `partition`. */
static int listed(const persister *p,
                  const rd_kafka_topic_partition_list_t *parts,
                  int32_t partition)
{
    for (int i = 0; i < parts->cnt; i++)
        if (parts->elems[i].partition == partition &&
            strcmp(parts->elems[i].topic, p->cfg->kafka_topic) == 0)
            return 1;
    return 0;
}

/*
 * Newly assigned partitions (all of them under EAGER, the ones that moved
 * here under COOPERATIVE): each starts at the offset stored in PostgreSQL,
 * never at Kafka's committed one, which may lag or lead what PostgreSQL
 * holds.
 */
static void take_partitions(persister *p, rd_kafka_t *rk,
                            rd_kafka_topic_partition_list_t *parts)
{
    size_t from = p->n_assigned;
    for (int i = 0; i < parts->cnt && p->n_assigned < MAX_PARTS; i++)
        if (strcmp(parts->elems[i].topic, p->cfg->kafka_topic) == 0 &&
            committed_slot(p, parts->elems[i].partition) == NULL)
            p->assigned[p->n_assigned++] = parts->elems[i].partition;
    /* stopping: take none of them (from an unknown offset a member could
     * skip events); the close gives them back */
    if (load_offsets_from(p, from) != 0)
        p->n_assigned = from;
    rd_kafka_topic_partition_list_t *l = positions_from(p, from);
    for (size_t i = from; i < p->n_assigned; i++)
        ctr_info("assigned partition %" PRId32 " from offset %" PRId64 "%s",
                 p->assigned[i], p->committed[i] < 0 ? 0 : p->committed[i],
                 p->committed[i] < 0 ? " (beginning)" : "");
    ctr_consumer_assign(rk, l);
    rd_kafka_topic_partition_list_destroy(l);
}

/*
 * Revoked (or lost) partitions. The batch in memory is dropped, not
 * committed: once the partitions are lost another member may own them
 * already, and even a clean revocation would only save redoing one batch.
 * Their events are redone from the stored offsets by the next owner; the
 * partitions this member keeps (COOPERATIVE) go back to their stored
 * offsets too, because their events in the dropped batch must be read
 * again.
 */
static void give_up_partitions(persister *p, rd_kafka_t *rk,
                               rd_kafka_topic_partition_list_t *parts)
{
    rd_kafka_topic_partition_list_t *rewind =
        rd_kafka_topic_partition_list_new(1);
    size_t dropped = ps_batch_messages(p->batch);
    if (dropped > 0) {
        for (size_t i = 0; i < ps_batch_partitions(p->batch); i++) {
            int32_t part = ps_batch_partition_at(p->batch, i)->partition;
            int64_t *slot = committed_slot(p, part);
            if (slot != NULL && !listed(p, parts, part))
                rd_kafka_topic_partition_list_add(rewind, p->cfg->kafka_topic,
                                                  part)
                    ->offset = *slot >= 0 ? *slot : RD_KAFKA_OFFSET_BEGINNING;
        }
        ps_batch_reset(p->batch);
        ctr_info("dropped an uncommitted batch of %zu events on %s; it is "
                 "read again from the stored offsets",
                 dropped,
                 rd_kafka_assignment_lost(rk) ? "losing partitions"
                                              : "revocation");
    }
    size_t kept_marks = 0; /* the next owner finds the others again */
    for (size_t i = 0; i < p->n_quarantine; i++)
        if (!listed(p, parts, p->quarantine[i].partition))
            p->quarantine[kept_marks++] = p->quarantine[i];
    p->n_quarantine = kept_marks;
    size_t kept = 0;
    for (size_t i = 0; i < p->n_assigned; i++) {
        if (listed(p, parts, p->assigned[i])) {
            ctr_info("revoked partition %" PRId32, p->assigned[i]);
            continue;
        }
        p->assigned[kept] = p->assigned[i];
        p->committed[kept] = p->committed[i];
        kept++;
    }
    p->n_assigned = kept;
    ctr_consumer_unassign(rk, parts);
    if (rewind->cnt > 0) {
        rd_kafka_error_t *e = rd_kafka_seek_partitions(rk, rewind, 5000);
        const char *why = e ? rd_kafka_error_string(e) : NULL;
        for (int i = 0; why == NULL && i < rewind->cnt; i++)
            if (rewind->elems[i].err)
                why = rd_kafka_err2str(rewind->elems[i].err);
        if (why != NULL) {
            /* reading on past the dropped events would lose them */
            ctr_error("could not seek kept partitions back to their stored "
                      "offsets: %s; exiting so that a restart reads them",
                      why);
            exit(1);
        }
    }
    rd_kafka_topic_partition_list_destroy(rewind);
}

static void on_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                         rd_kafka_topic_partition_list_t *parts, void *opaque)
{
    persister *p = opaque;

    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS)
        take_partitions(p, rk, parts);
    else
        give_up_partitions(p, rk, parts);
}

/* After a fenced commit: forget the batch and go back to the stored
 * offsets, which another member advanced. */
static void resync(persister *p)
{
    p->resyncs++;
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

static quarantine_mark *quarantine_find(persister *p, int32_t partition,
                                        int64_t offset)
{
    for (size_t i = 0; i < p->n_quarantine; i++)
        if (p->quarantine[i].partition == partition &&
            p->quarantine[i].offset == offset)
            return &p->quarantine[i];
    return NULL;
}

/* The batch that passes these marks' messages is committed. */
static void quarantine_passed(persister *p, const ps_batch *b)
{
    for (size_t i = 0; i < ps_batch_quarantined(b); i++) {
        const ps_quarantined *q = ps_batch_quarantined_at(b, i);
        quarantine_mark *m = quarantine_find(p, q->partition, q->offset);
        if (m)
            *m = p->quarantine[--p->n_quarantine];
    }
}

/*
 * PostgreSQL refused batch b's data (PS_SINK_REFUSED): the same batch
 * would be refused again, whereas one event in it may be all that is at
 * fault (a sum or a value a column cannot hold, a constraint). So it is
 * narrowed down, bisecting: b is dropped and read again from the stored
 * offsets in batches of half its size, halved again on each refusal; a
 * committed batch doubles the size back towards persister.batch_size. A
 * refused batch of one message is the message at fault: read again, it
 * goes to the dead-letter topic with PostgreSQL's reason and only its
 * offset advances, in the transaction of the batch it joins (quarantine).
 * Returns 1 when b is to be dropped, 0 when no event can be at fault (a
 * message already quarantined, that is only its offset, was refused
 * alone): then the commit is retried with backoff like any failure.
 */
static int narrow(persister *p, const ps_batch *b)
{
    size_t n = ps_batch_messages(b);
    const char *why = ps_sink_refusal(p->sink);

    if (n == 1) {
        const ps_partition_range *r = ps_batch_partition_at(b, 0);
        /* a message already marked is only skipped: refused all the same,
         * it is not at fault */
        if (quarantine_find(p, r->partition, r->first_offset))
            return 0;
        if (p->n_quarantine == MAX_QUARANTINE) {
            /* read again one by one, the batches that pass the marked
             * messages are committed and make room */
            p->limit = 1;
            return 1;
        }
        quarantine_mark *m = &p->quarantine[p->n_quarantine++];
        m->partition = r->partition;
        m->offset = r->first_offset;
        m->sent = 0;
        snprintf(m->reason, sizeof(m->reason), "postgresql refused it: %s",
                 why);
    } else {
        if (p->limit == (size_t)p->cfg->persister_batch_size)
            ctr_warn("postgresql refused a batch of %zu events (%s); "
                     "narrowing it down to the events at fault",
                     n, why);
        p->limit = n / 2;
    }
    return 1;
}

/*
 * Takes the result of the commit under way (waiting for it), retrying
 * with backoff while PostgreSQL is down: with may_retry until a stop is
 * requested or, with final set too, until final_deadline_ms. A batch that
 * is not committed in the end, or that PostgreSQL refused (see narrow),
 * is dropped together with the one filling behind it (its events follow
 * the dropped ones: committing it would skip them), and the partitions go
 * back to the stored offsets.
 */
static void finish_commit(persister *p, int may_retry, int final,
                          int64_t final_deadline_ms)
{
    ps_batch *b = p->in_flight;
    int64_t expected[MAX_PARTS];
    size_t np;
    int backoff = 100;
    double seconds;

    if (b == NULL)
        return;
    np = ps_batch_partitions(b);
    enum ps_sink_result r = ps_committer_wait(p->committer, &seconds);
    for (;;) {
        if (r == PS_SINK_OK) {
            ctr_hist_observe(&p->commit_seconds, seconds);
            ctr_hist_observe(&p->batch_events, (double)ps_batch_messages(b));
            break;
        }
        if (r == PS_SINK_FENCED) {
            p->fenced_total++;
            goto drop;
        }
        if (r == PS_SINK_REFUSED && narrow(p, b))
            goto drop;
        p->commit_errors_total++;
        if (!may_retry || (final ? ctr_time_mono_ms() >= final_deadline_ms
                                 : stop_requested)) {
            ctr_warn("dropping an uncommitted batch of %zu events and the "
                     "%zu read after it; they are read again from the "
                     "stored offsets",
                     ps_batch_messages(b), ps_batch_messages(p->batch));
            goto drop;
        }
        sleep_ms(backoff);
        backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
        for (size_t i = 0; i < np; i++) {
            int64_t *slot =
                committed_slot(p, ps_batch_partition_at(b, i)->partition);
            expected[i] = slot ? *slot : -1;
        }
        int64_t t0 = ctr_time_mono_us();
        r = ps_sink_commit(p->sink, p->cfg->kafka_topic, b, expected);
        seconds = (double)(ctr_time_mono_us() - t0) / 1e6;
    }

    /* Mirror the positions into Kafka so its lag tools see progress. */
    rd_kafka_topic_partition_list_t *l =
        rd_kafka_topic_partition_list_new((int)np);
    for (size_t i = 0; i < np; i++) {
        const ps_partition_range *pr = ps_batch_partition_at(b, i);
        int64_t *slot = committed_slot(p, pr->partition);
        if (slot)
            *slot = pr->last_offset + 1;
        rd_kafka_topic_partition_list_add(l, p->cfg->kafka_topic, pr->partition)
            ->offset = pr->last_offset + 1;
    }
    rd_kafka_commit(p->rk, l, 1);
    rd_kafka_topic_partition_list_destroy(l);

    p->batches_total++;
    quarantine_passed(p, b);
    if (p->limit < (size_t)p->cfg->persister_batch_size) {
        p->limit *= 2;
        if (p->limit >= (size_t)p->cfg->persister_batch_size) {
            p->limit = (size_t)p->cfg->persister_batch_size;
            ctr_info("back to batches of %zu events", p->limit);
        }
    }
    ctr_debug("committed a batch of %zu events", ps_batch_messages(b));
    watch_rates(p, b);
    ps_batch_reset(b);
    p->spare = b;
    p->in_flight = NULL;
    return;
drop:
    ps_batch_reset(b);
    p->spare = b;
    p->in_flight = NULL;
    resync(p); /* also empties the batch behind it */
}

/*
 * Hands the batch to the committer (after the one before it is in) and
 * starts the next one; with final set, waits for it too. The batch's
 * expected offsets are the stored ones as they stand once its predecessor
 * is committed.
 */
static void flush_batch(persister *p, int final, int64_t final_deadline_ms)
{
    int64_t expected[MAX_PARTS];

    if (ps_batch_messages(p->batch) == 0) {
        if (final)
            finish_commit(p, 1, final, final_deadline_ms);
        return;
    }
    /* dead letters go out before the offsets that pass them move on */
    if (ctr_producer_flush(p->producer, 30000) > 0 || p->dlq_failed) {
        ctr_error("could not deliver dead letters; exiting so that a "
                  "restart sends them again");
        exit(1);
    }
    finish_commit(p, 1, final, final_deadline_ms);
    if (ps_batch_messages(p->batch) == 0)
        return; /* dropped behind a batch that could not be committed */
    size_t np = ps_batch_partitions(p->batch);
    for (size_t i = 0; i < np; i++) {
        int64_t *slot =
            committed_slot(p, ps_batch_partition_at(p->batch, i)->partition);
        expected[i] = slot ? *slot : -1;
    }
    ps_committer_start(p->committer, p->batch, expected);
    p->in_flight = p->batch;
    p->batch = p->spare;
    p->spare = NULL;
    if (final)
        finish_commit(p, 1, final, final_deadline_ms);
}

/*
 * Rebalances see no commit under way: the positions they keep or rewind
 * to, and the stored offsets they load, are then final. A commit that
 * failed is not retried here (the group waits), its batches are dropped.
 */
static void on_rebalance_after_commit(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                                      rd_kafka_topic_partition_list_t *parts,
                                      void *opaque)
{
    finish_commit(opaque, 0, 0, 0);
    on_rebalance(rk, err, parts, opaque);
}

/* Feeds what the committed batch changed to the fluctuation watch: the
 * per-minute sums of every counter, and the records counted once per id. */
static void watch_rates(persister *p, const ps_batch *b)
{
    if (p->fluct == NULL)
        return;
    int64_t now = ctr_time_mono_ms();
    for (size_t i = 0; i < ps_batch_sum_slots(b); i++) {
        const ps_sum *s = ps_batch_sum_at(b, i);
        if (s->used && s->table == PS_BUCKET)
            ps_fluct_add(p->fluct, s->name, (double)s->delta, now);
    }
    for (size_t i = 0; i < ps_batch_records(b); i++) {
        const ps_record *r = ps_batch_record_at(b, i);
        ps_fluct_add(p->fluct, r->ev.counter, (double)r->ev.delta, now);
    }
}

/* Copies msg to the dead-letter topic with `reason` (delivered before the
 * offsets that pass it are committed: see flush_batch). */
static void dead_letter(persister *p, const rd_kafka_message_t *msg,
                        const char *reason)
{
    while (ctr_producer_send_dlq(p->producer, msg->key, msg->key_len,
                                 msg->payload, msg->len, reason, msg->partition,
                                 msg->offset, p) != 0)
        ctr_producer_poll(p->producer, 100);
}

/* A message narrow() found at fault, read again: only its offset
 * advances; the first time, it goes to the dead-letter topic with the
 * reason, and batches go back to their full size. */
static enum ps_fold_result
quarantine(persister *p, const rd_kafka_message_t *msg, quarantine_mark *m)
{
    if (ps_batch_add_quarantined(p->batch, msg->partition, msg->offset,
                                 m->reason))
        return PS_FOLD_FULL;
    if (m->sent)
        return PS_FOLD_ADDED; /* read again after a dropped batch */
    p->quarantined_total++;
    ctr_warn("event at partition %" PRId32 " offset %" PRId64
             " quarantined to the dead-letter topic: %s",
             msg->partition, msg->offset, m->reason);
    dead_letter(p, msg, m->reason);
    m->sent = 1;
    p->limit = (size_t)p->cfg->persister_batch_size;
    return PS_FOLD_ADDED;
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
        /* looked up on each try: a flush in between may pass marks */
        quarantine_mark *mark =
            p->n_quarantine ? quarantine_find(p, msg->partition, msg->offset)
                            : NULL;
        enum ps_fold_result r =
            mark ? quarantine(p, msg, mark)
                 : ps_fold_message(p->batch, p->cfg, msg, err, sizeof(err));
        if (r == PS_FOLD_INVALID) {
            p->invalid_total++;
            ctr_warn("invalid event at partition %" PRId32 " offset %" PRId64
                     " sent to the dead-letter topic: %s",
                     msg->partition, msg->offset, err);
            dead_letter(p, msg, err);
        }
        if (r != PS_FOLD_FULL)
            return;
        uint64_t resyncs = p->resyncs;
        flush_batch(p, 0, 0);
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
                            on_rebalance_after_commit, &p, err, sizeof(err));
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
    ctr_info("consuming %s as group %s into postgresql at %s:%d",
             cfg->kafka_topic, cfg->persister_group_id, cfg->postgres_host,
             cfg->postgres_port);

    int64_t next_retention_ms = ctr_time_mono_ms() + RETENTION_FIRST_MS;
    int64_t next_idle_work_ms = 0;
    while (!stop_requested) {
        int wait_ms = 100;
        int64_t now = ctr_time_mono_ms();
        if (now >= next_retention_ms) {
            finish_commit(&p, 1, 0, 0); /* the sink is ours alone then */
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
                finish_commit(&p, 1, 0, 0);
            ctr_metrics_server_poll(p.metrics, render_metrics, &p);
            if (p.fluct)
                ps_fluct_tick(p.fluct, now);
            next_idle_work_ms = now + IDLE_WORK_EVERY_MS;
        }
        size_t n = ps_batch_messages(p.batch);
        if (n >= p.limit ||
            (n > 0 && now - p.batch_started_ms >= cfg->persister_batch_ms))
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
    ps_committer_free(p.committer); /* before the sink it uses */
    ps_batch_free(p.batch);
    ps_batch_free(p.spare);
    ps_batch_free(p.in_flight);
    ps_sink_free(p.sink);
    ctr_producer_free(p.producer);
    ctr_config_free(cfg);
    return rc;
}

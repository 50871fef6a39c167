/*
 * flush.c - see persister.h: a batch's commit and its verdict.
 */
#include "persister/persister.h"

#include "common/log.h"
#include "common/service.h"
#include "common/timeutil.h"
#include "ingest/consumer.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

quarantine_mark *ps_quarantine_find(persister *p, int32_t partition,
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
        quarantine_mark *m = ps_quarantine_find(p, q->partition, q->offset);
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
 * offset advances, in the transaction of the batch it joins (ps_quarantine).
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
        if (ps_quarantine_find(p, r->partition, r->first_offset))
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
void ps_finish_commit(persister *p, int may_retry, int final,
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
                                 : ctr_service_stopping())) {
            ctr_warn("dropping an uncommitted batch of %zu events and the "
                     "%zu read after it; they are read again from the "
                     "stored offsets",
                     ps_batch_messages(b), ps_batch_messages(p->batch));
            goto drop;
        }
        ctr_service_sleep_ms(backoff);
        backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
        for (size_t i = 0; i < np; i++) {
            int64_t *slot =
                ps_committed_slot(p, ps_batch_partition_at(b, i)->partition);
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
        int64_t *slot = ps_committed_slot(p, pr->partition);
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
    ps_watch_rates(p, b);
    ps_batch_reset(b);
    p->spare = b;
    p->in_flight = NULL;
    return;
drop:
    ps_batch_reset(b);
    p->spare = b;
    p->in_flight = NULL;
    ps_resync(p); /* also empties the batch behind it */
}

/*
 * Hands the batch to the committer (after the one before it is in) and
 * starts the next one; with final set, waits for it too. The batch's
 * expected offsets are the stored ones as they stand once its predecessor
 * is committed.
 */
void ps_flush_batch(persister *p, int final, int64_t final_deadline_ms)
{
    int64_t expected[MAX_PARTS];

    if (ps_batch_messages(p->batch) == 0) {
        if (final)
            ps_finish_commit(p, 1, final, final_deadline_ms);
        return;
    }
    /* dead letters go out before the offsets that pass them move on */
    if (ctr_producer_flush(p->producer, 30000) > 0 || p->dlq_failed) {
        ctr_error("could not deliver dead letters; exiting so that a "
                  "restart sends them again");
        exit(1);
    }
    ps_finish_commit(p, 1, final, final_deadline_ms);
    if (ps_batch_messages(p->batch) == 0)
        return; /* dropped behind a batch that could not be committed */
    size_t np = ps_batch_partitions(p->batch);
    for (size_t i = 0; i < np; i++) {
        int64_t *slot =
            ps_committed_slot(p, ps_batch_partition_at(p->batch, i)->partition);
        expected[i] = slot ? *slot : -1;
    }
    ps_committer_start(p->committer, p->batch, expected);
    p->in_flight = p->batch;
    p->batch = p->spare;
    p->spare = NULL;
    if (final)
        ps_finish_commit(p, 1, final, final_deadline_ms);
}

/*
 * Rebalances see no commit under way: the positions they keep or rewind
 * to, and the stored offsets they load, are then final. A commit that
 * failed is not retried here (the group waits), its batches are dropped.
 */
void ps_on_rebalance_after_commit(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                                  rd_kafka_topic_partition_list_t *parts,
                                  void *opaque)
{
    ps_finish_commit(opaque, 0, 0, 0);
    ps_on_rebalance(rk, err, parts, opaque);
}

/* Feeds what the committed batch changed to the fluctuation watch: the
 * per-minute sums of every counter, and the records counted once per id. */
void ps_watch_rates(persister *p, const ps_batch *b)
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
 * offsets that pass it are committed: see ps_flush_batch). */
void ps_dead_letter(persister *p, const rd_kafka_message_t *msg,
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
enum ps_fold_result ps_quarantine(persister *p, const rd_kafka_message_t *msg,
                                  quarantine_mark *m)
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
    ps_dead_letter(p, msg, m->reason);
    m->sent = 1;
    p->limit = (size_t)p->cfg->persister_batch_size;
    return PS_FOLD_ADDED;
}

/*
 * partitions.c - see persister.h: the partitions the persister owns.
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

int64_t *ps_committed_slot(persister *p, int32_t partition)
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
    while (!ctr_service_stopping()) {
        if (ps_sink_load_offsets(p->sink, p->cfg->kafka_topic,
                                 p->assigned + from, p->n_assigned - from,
                                 p->committed + from) == 0)
            return 0;
        ctr_service_sleep_ms(backoff);
        backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
    }
    return -1;
}

/* The same for every assigned partition. */
int ps_load_offsets(persister *p)
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

rd_kafka_topic_partition_list_t *ps_positions(persister *p)
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
            ps_committed_slot(p, parts->elems[i].partition) == NULL)
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
            int64_t *slot = ps_committed_slot(p, part);
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

void ps_on_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t err,
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
void ps_resync(persister *p)
{
    p->resyncs++;
    ps_batch_reset(p->batch);
    if (ps_load_offsets(p) != 0)
        return;
    rd_kafka_topic_partition_list_t *l = ps_positions(p);
    rd_kafka_error_t *e = rd_kafka_seek_partitions(p->rk, l, 5000);
    if (e) {
        ctr_warn("could not seek to stored offsets: %s",
                 rd_kafka_error_string(e));
        rd_kafka_error_destroy(e);
    }
    rd_kafka_topic_partition_list_destroy(l);
}

/*
 * legacy.c - see legacy.h.
 */
#include "applier/legacy.h"

#include "common/log.h"
#include "common/service.h"
#include "common/timeutil.h"
#include "redis/restore.h"

#include <stdlib.h>
#include <string.h>

#define DRAINED "drained"

enum {
    LOOK_EVERY_MS = 5000,
    BROKER_TIMEOUT_MS = 5000,
    START_TRIES = 30, /* a second apart */
};

struct ctr_legacy {
    const ctr_config *cfg;
    rd_kafka_t *rk;
    /* the answers to admin requests: one queue for the applier's life, so
     * that an answer that comes after its wait was given up on still has
     * somewhere to go (librdkafka 2.0 asserted otherwise) */
    rd_kafka_queue_t *queue;
    intptr_t request; /* the last request's number, its opaque */
    int reading;
    int64_t activity_ms; /* monotonic */
    int64_t next_look_ms;
};

static int marked(const rd_kafka_topic_partition_t *tp)
{
    return tp->metadata_size == sizeof(DRAINED) - 1 &&
           memcmp(tp->metadata, DRAINED, sizeof(DRAINED) - 1) == 0;
}

/* The group's committed offsets (with their metadata) of the partitions
 * of l (asked of the group coordinator as an admin request, waited for up
 * to BROKER_TIMEOUT_MS), or NULL (logged). */
static rd_kafka_topic_partition_list_t *
group_offsets(ctr_legacy *l, const rd_kafka_topic_partition_list_t *parts)
{
    rd_kafka_topic_partition_list_t *out = NULL;
    rd_kafka_queue_t *q = l->queue;
    rd_kafka_ListConsumerGroupOffsets_t *req =
        rd_kafka_ListConsumerGroupOffsets_new(l->cfg->applier_group_id, parts);
    rd_kafka_AdminOptions_t *opt = rd_kafka_AdminOptions_new(
        l->rk, RD_KAFKA_ADMIN_OP_LISTCONSUMERGROUPOFFSETS);
    rd_kafka_event_t *ev = NULL;
    const char *why = "out of memory";
    if (q == NULL || req == NULL || opt == NULL)
        goto out;
    (void)rd_kafka_AdminOptions_set_request_timeout(opt, BROKER_TIMEOUT_MS,
                                                    NULL, 0);
    rd_kafka_AdminOptions_set_opaque(opt, (void *)++l->request);
    rd_kafka_ListConsumerGroupOffsets(l->rk, &req, 1, opt, q);
    int64_t deadline = ctr_time_mono_ms() + BROKER_TIMEOUT_MS + 1000;
    why = "no answer";
    for (;;) {
        int64_t left = deadline - ctr_time_mono_ms();
        if (left <= 0)
            goto out;
        ev = rd_kafka_queue_poll(q, (int)left);
        if (ev && rd_kafka_event_opaque(ev) == (void *)l->request)
            break;
        if (ev) /* the late answer of a request given up on */
            rd_kafka_event_destroy(ev);
        ev = NULL;
    }
    why = rd_kafka_event_error_string(ev);
    if (rd_kafka_event_error(ev))
        goto out;
    size_t n = 0;
    const rd_kafka_group_result_t **res =
        rd_kafka_ListConsumerGroupOffsets_result_groups(
            rd_kafka_event_ListConsumerGroupOffsets_result(ev), &n);
    why = "no result";
    if (n != 1 || rd_kafka_group_result_error(res[0]))
        goto out;
    out = rd_kafka_topic_partition_list_copy(
        rd_kafka_group_result_partitions(res[0]));
out:
    if (out == NULL)
        ctr_warn("legacy input: could not read the committed offsets of %s: "
                 "%s",
                 l->cfg->kafka_topic, why ? why : "error");
    if (ev)
        rd_kafka_event_destroy(ev);
    if (opt)
        rd_kafka_AdminOptions_destroy(opt);
    if (req)
        rd_kafka_ListConsumerGroupOffsets_destroy(req);
    return out;
}

/* The group's committed offsets of every partition of kafka.topic, or
 * NULL (logged). */
static rd_kafka_topic_partition_list_t *committed_all(ctr_legacy *l)
{
    int n = ctr_topic_partitions(l->rk, l->cfg->kafka_topic);
    if (n <= 0) {
        ctr_warn("legacy input: could not read the partitions of %s",
                 l->cfg->kafka_topic);
        return NULL;
    }
    rd_kafka_topic_partition_list_t *all = rd_kafka_topic_partition_list_new(n);
    for (int p = 0; p < n; p++)
        rd_kafka_topic_partition_list_add(all, l->cfg->kafka_topic, p);
    rd_kafka_topic_partition_list_t *got = group_offsets(l, all);
    rd_kafka_topic_partition_list_destroy(all);
    return got;
}

ctr_legacy *ctr_legacy_new(const ctr_config *cfg, rd_kafka_t *rk)
{
    ctr_legacy *l = calloc(1, sizeof(*l));
    if (l == NULL)
        return NULL;
    l->cfg = cfg;
    l->rk = rk;
    l->activity_ms = ctr_time_mono_ms();
    l->queue = rd_kafka_queue_new(rk);
    if (l->queue == NULL) {
        free(l);
        return NULL;
    }
    /* a broker just started may not have the group's coordinator yet */
    rd_kafka_topic_partition_list_t *all = NULL;
    for (int tries = 0; all == NULL && tries < START_TRIES; tries++) {
        if (tries > 0)
            ctr_service_sleep_ms(1000);
        all = committed_all(l);
    }
    if (all == NULL) {
        l->reading = 1; /* not known: reading is only slower */
        ctr_warn("legacy input: reading the bare events of %s too, not "
                 "knowing whether an older applier left some",
                 cfg->kafka_topic);
        return l;
    }
    int committed = 0, unmarked = 0;
    for (int i = 0; i < all->cnt; i++) {
        if (all->elems[i].offset < 0)
            continue;
        committed++;
        unmarked += !marked(&all->elems[i]);
    }
    rd_kafka_topic_partition_list_destroy(all);
    l->reading = committed > 0 && unmarked > 0;
    if (l->reading)
        ctr_info("legacy input: reading the bare events of %s too, until "
                 "none came for %d s",
                 cfg->kafka_topic, cfg->applier_legacy_quiet_s);
    return l;
}

void ctr_legacy_free(ctr_legacy *l)
{
    if (l == NULL)
        return;
    rd_kafka_queue_destroy(l->queue);
    free(l);
}

int ctr_legacy_reading(const ctr_legacy *l)
{
    return l->reading;
}

void ctr_legacy_activity(ctr_legacy *l)
{
    l->activity_ms = ctr_time_mono_ms();
}

/* Marks the partitions of kafka.topic assigned here that are read to their
 * end; 1 if every assigned one was (or none is assigned), 0 if not yet. */
static int mark_mine(ctr_legacy *l, void (*commit)(void *), void *arg)
{
    rd_kafka_topic_partition_list_t *mine = NULL, *pos = NULL;
    int done = 0;
    if (rd_kafka_assignment(l->rk, &mine) != RD_KAFKA_RESP_ERR_NO_ERROR)
        return 0;
    pos = rd_kafka_topic_partition_list_new(mine->cnt > 0 ? mine->cnt : 1);
    for (int i = 0; i < mine->cnt; i++)
        if (strcmp(mine->elems[i].topic, l->cfg->kafka_topic) == 0)
            rd_kafka_topic_partition_list_add(pos, l->cfg->kafka_topic,
                                              mine->elems[i].partition);
    if (pos->cnt == 0) {
        done = 1;
        goto out;
    }
    commit(arg); /* what was applied is committed first */
    rd_kafka_topic_partition_list_t *got = group_offsets(l, pos);
    if (got == NULL)
        goto out;
    rd_kafka_topic_partition_list_destroy(pos);
    pos = got;
    for (int i = 0; i < pos->cnt; i++) {
        rd_kafka_topic_partition_t *tp = &pos->elems[i];
        int64_t lo, hi;
        if (rd_kafka_query_watermark_offsets(l->rk, tp->topic, tp->partition,
                                             &lo, &hi,
                                             BROKER_TIMEOUT_MS) != 0 ||
            tp->offset < hi)
            goto out; /* not read to its end, or its commit not through */
        free(tp->metadata);
        tp->metadata = strdup(DRAINED);
        tp->metadata_size = tp->metadata ? sizeof(DRAINED) - 1 : 0;
    }
    rd_kafka_resp_err_t err = rd_kafka_commit(l->rk, pos, 1);
    if (err)
        ctr_warn("legacy input: could not mark %s drained: %s",
                 l->cfg->kafka_topic, rd_kafka_err2str(err));
    done = err == 0;
out:
    rd_kafka_topic_partition_list_destroy(pos);
    rd_kafka_topic_partition_list_destroy(mine);
    return done;
}

int ctr_legacy_step(ctr_legacy *l, void (*commit)(void *), void *arg)
{
    int64_t now = ctr_time_mono_ms();
    if (!l->reading || now < l->next_look_ms)
        return 0;
    l->next_look_ms = now + LOOK_EVERY_MS;
    if (now - l->activity_ms < (int64_t)l->cfg->applier_legacy_quiet_s * 1000)
        return 0;
    if (!mark_mine(l, commit, arg))
        return 0;
    rd_kafka_topic_partition_list_t *all = committed_all(l);
    if (all == NULL)
        return 0;
    int unmarked = 0;
    for (int i = 0; i < all->cnt; i++)
        unmarked += all->elems[i].offset >= 0 && !marked(&all->elems[i]);
    rd_kafka_topic_partition_list_destroy(all);
    if (unmarked > 0)
        return 0;
    ctr_info("legacy input: %s drained of bare events; reading %s only",
             l->cfg->kafka_topic, l->cfg->kafka_input_topic);
    l->reading = 0;
    return 1;
}

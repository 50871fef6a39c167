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
    int reading;
    int64_t activity_ms; /* monotonic */
    int64_t next_look_ms;
};

static int marked(const rd_kafka_topic_partition_t *tp)
{
    return tp->metadata_size == sizeof(DRAINED) - 1 &&
           memcmp(tp->metadata, DRAINED, sizeof(DRAINED) - 1) == 0;
}

/*
 * The group's committed offsets (with their metadata) of the partitions
 * of l, or NULL (logged). Asked through the consumer's own group
 * (rd_kafka_committed: an OffsetFetch from the group's coordinator, waited
 * for up to BROKER_TIMEOUT_MS), not as an admin request: librdkafka 2.0.2
 * aborted (rd_kafka_enq_once_del_source_return) when a broker restart
 * dropped an admin ListConsumerGroupOffsets in flight, seen with a node
 * down while the applier started.
 */
static rd_kafka_topic_partition_list_t *
group_offsets(ctr_legacy *l, const rd_kafka_topic_partition_list_t *parts)
{
    rd_kafka_topic_partition_list_t *out =
        rd_kafka_topic_partition_list_copy(parts);
    const char *why = "out of memory";
    if (out == NULL)
        goto fail;
    rd_kafka_resp_err_t err = rd_kafka_committed(l->rk, out, BROKER_TIMEOUT_MS);
    why = rd_kafka_err2str(err);
    if (err)
        goto fail;
    for (int i = 0; i < out->cnt; i++)
        if (out->elems[i].err) {
            why = rd_kafka_err2str(out->elems[i].err);
            goto fail;
        }
    return out;
fail:
    ctr_warn("legacy input: could not read the committed offsets of %s: %s",
             l->cfg->kafka_topic, why);
    if (out)
        rd_kafka_topic_partition_list_destroy(out);
    return NULL;
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
                                             &lo, &hi, BROKER_TIMEOUT_MS) != 0)
            goto out;
        /* a partition that holds nothing has no commit, and nothing to
         * read: it is drained at its end */
        if (tp->offset < 0 && lo == hi)
            tp->offset = hi;
        if (tp->offset < hi)
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

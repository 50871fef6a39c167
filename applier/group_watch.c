/*
 * group_watch.c - see group_watch.h.
 *
 * Progress: a partition's time moves on whenever the group's committed
 * offset there changed since the last answer, or nothing was left to
 * commit (lag 0). So an idle partition is never "stale": the time says
 * how long work has waited there without a commit, which is what the
 * stalled-persister alert asks (lag > 0 and no progress for 60 s). The
 * first answer after a start, or after the partition came to this
 * applier, counts as progress: the watch cannot know what came before.
 */
#include "applier/group_watch.h"

#include "common/log.h"
#include "common/metrics.h"
#include "common/timeutil.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum {
    WATCH_EVERY_MS = 1000,
    REQUEST_TIMEOUT_MS = 5000,
    MAX_PARTS = 1024, /* partitions past it are not watched */
    N_GROUPS = 2,
    QUERY_TIMEOUT_MS = 500,
};

typedef struct part_state {
    int known;           /* in the last answer: this applier owns it */
    int64_t committed;   /* the group's committed offset; < 0: none */
    int64_t lag;         /* events after it */
    int64_t progress_ms; /* wall clock */
} part_state;

typedef struct watched {
    const char *consumer; /* the label: "persister", "applier" */
    const char *group;    /* the group id, from the config */
    const char *topic;    /* the topic it reads */
    int in_flight;
    int failing; /* the last request failed (logged once) */
    int64_t next_ms;
    part_state parts[MAX_PARTS];
} watched;

struct ctr_group_watch {
    rd_kafka_t *rk;
    const char *topic; /* the applier's: whose partitions are owned here */
    rd_kafka_queue_t *queue;
    watched groups[N_GROUPS];
};

ctr_group_watch *ctr_group_watch_new(const ctr_config *cfg, rd_kafka_t *rk)
{
    ctr_group_watch *w = calloc(1, sizeof(*w));
    if (w == NULL)
        return NULL;
    w->rk = rk;
    w->topic = cfg->kafka_input_topic;
    w->queue = rd_kafka_queue_new(rk);
    if (w->queue == NULL) {
        free(w);
        return NULL;
    }
    w->groups[0].consumer = "persister";
    w->groups[0].group = cfg->persister_group_id;
    w->groups[0].topic = cfg->kafka_topic;
    w->groups[1].consumer = "applier";
    w->groups[1].group = cfg->applier_group_id;
    w->groups[1].topic = cfg->kafka_input_topic;
    return w;
}

void ctr_group_watch_free(ctr_group_watch *w)
{
    if (w == NULL)
        return;
    rd_kafka_queue_destroy(w->queue);
    free(w);
}

/* Asks for g's committed offsets on the partitions assigned here now (of
 * the input topic; the same numbers of the persister's topic: a counter's
 * events and records share a partition number, keyed alike). */
static void ask(ctr_group_watch *w, watched *g)
{
    rd_kafka_topic_partition_list_t *mine = NULL, *parts = NULL;
    rd_kafka_ListConsumerGroupOffsets_t *req = NULL;
    rd_kafka_AdminOptions_t *opt = NULL;

    if (rd_kafka_assignment(w->rk, &mine) != RD_KAFKA_RESP_ERR_NO_ERROR)
        return;
    parts = rd_kafka_topic_partition_list_new(mine->cnt > 0 ? mine->cnt : 1);
    for (int i = 0; i < mine->cnt; i++)
        if (strcmp(mine->elems[i].topic, w->topic) == 0 &&
            mine->elems[i].partition < MAX_PARTS)
            rd_kafka_topic_partition_list_add(parts, g->topic,
                                              mine->elems[i].partition);
    if (parts->cnt == 0) { /* nothing owned here: nothing to show */
        for (int p = 0; p < MAX_PARTS; p++)
            g->parts[p].known = 0;
        goto out;
    }
    req = rd_kafka_ListConsumerGroupOffsets_new(g->group, parts);
    opt = rd_kafka_AdminOptions_new(w->rk,
                                    RD_KAFKA_ADMIN_OP_LISTCONSUMERGROUPOFFSETS);
    if (req == NULL || opt == NULL)
        goto out;
    (void)rd_kafka_AdminOptions_set_request_timeout(opt, REQUEST_TIMEOUT_MS,
                                                    NULL, 0);
    rd_kafka_AdminOptions_set_opaque(opt, g);
    rd_kafka_ListConsumerGroupOffsets(w->rk, &req, 1, opt, w->queue);
    g->in_flight = 1; /* a result comes, if only its timeout */
out:
    if (opt)
        rd_kafka_AdminOptions_destroy(opt);
    if (req)
        rd_kafka_ListConsumerGroupOffsets_destroy(req);
    rd_kafka_topic_partition_list_destroy(parts);
    rd_kafka_topic_partition_list_destroy(mine);
}

static void failed(watched *g, const char *why)
{
    if (!g->failing)
        ctr_warn("could not read the committed offsets of group %s: %s; "
                 "its lag is not updated",
                 g->group, why);
    g->failing = 1;
}

/* The start and end of partition p of topic: cached when this consumer reads
 * it, else asked of the broker (briefly: a metric may go without a sample). */
static int log_end(ctr_group_watch *w, const char *topic, int32_t p,
                   int64_t *lo, int64_t *hi)
{
    if (strcmp(topic, w->topic) == 0)
        return rd_kafka_get_watermark_offsets(w->rk, topic, p, lo, hi) ==
                       RD_KAFKA_RESP_ERR_NO_ERROR
                   ? 0
                   : -1;
    return rd_kafka_query_watermark_offsets(w->rk, topic, p, lo, hi,
                                            QUERY_TIMEOUT_MS) ==
                   RD_KAFKA_RESP_ERR_NO_ERROR
               ? 0
               : -1;
}

/* An answer: the group's committed offsets beside the log ends. */
static void take(ctr_group_watch *w, rd_kafka_event_t *ev)
{
    watched *g = rd_kafka_event_opaque(ev);
    size_t n = 0;

    g->in_flight = 0;
    if (rd_kafka_event_error(ev)) {
        failed(g, rd_kafka_event_error_string(ev));
        return;
    }
    const rd_kafka_group_result_t **res =
        rd_kafka_ListConsumerGroupOffsets_result_groups(
            rd_kafka_event_ListConsumerGroupOffsets_result(ev), &n);
    if (n != 1 || rd_kafka_group_result_error(res[0])) {
        failed(g, n == 1 ? rd_kafka_error_string(
                               rd_kafka_group_result_error(res[0]))
                         : "no result");
        return;
    }
    if (g->failing)
        ctr_info("reading the committed offsets of group %s again", g->group);
    g->failing = 0;
    const rd_kafka_topic_partition_list_t *l =
        rd_kafka_group_result_partitions(res[0]);
    int64_t now_ms = ctr_time_now_ms();
    int was_known[MAX_PARTS];
    for (int p = 0; p < MAX_PARTS; p++) {
        was_known[p] = g->parts[p].known;
        g->parts[p].known = 0;
    }
    for (int i = 0; l != NULL && i < l->cnt; i++) {
        const rd_kafka_topic_partition_t *tp = &l->elems[i];
        int64_t lo, hi;
        if (tp->err || tp->partition < 0 || tp->partition >= MAX_PARTS ||
            log_end(w, g->topic, tp->partition, &lo, &hi) != 0 || hi < 0)
            continue; /* not known: no sample rather than a wrong one */
        part_state *ps = &g->parts[tp->partition];
        /* never committed: every event still in the log waits */
        int64_t from = tp->offset >= 0 ? tp->offset : (lo > 0 ? lo : 0);
        int64_t lag = hi > from ? hi - from : 0;
        if (!was_known[tp->partition] || tp->offset != ps->committed ||
            lag == 0)
            ps->progress_ms = now_ms;
        ps->committed = tp->offset;
        ps->lag = lag;
        ps->known = 1;
    }
}

void ctr_group_watch_step(ctr_group_watch *w)
{
    rd_kafka_event_t *ev;
    while ((ev = rd_kafka_queue_poll(w->queue, 0)) != NULL) {
        if (rd_kafka_event_type(ev) ==
            RD_KAFKA_EVENT_LISTCONSUMERGROUPOFFSETS_RESULT)
            take(w, ev);
        rd_kafka_event_destroy(ev);
    }
    int64_t now = ctr_time_mono_ms();
    for (int i = 0; i < N_GROUPS; i++) {
        watched *g = &w->groups[i];
        if (g->in_flight || now < g->next_ms)
            continue;
        g->next_ms = now + WATCH_EVERY_MS;
        ask(w, g);
    }
}

/* The group id as a label value: '\', '"' and newlines escaped. */
static void label_value(char *out, size_t len, const char *s)
{
    size_t o = 0;
    for (; *s && o + 3 < len; s++) {
        if (*s == '\\' || *s == '"' || *s == '\n') {
            out[o++] = '\\';
            out[o++] = *s == '\n' ? 'n' : *s;
        } else {
            out[o++] = *s;
        }
    }
    out[o] = '\0';
}

/* One family, name{consumer, group, partition} for every known partition:
 * the progress time in seconds when in_seconds, else the lag. */
static void render_family(const ctr_group_watch *w, ctr_strbuf *b,
                          const char *name, const char *help, int in_seconds)
{
    char group[512];
    ctr_metric_help(b, name, "gauge", help);
    for (int i = 0; w && i < N_GROUPS; i++) {
        const watched *g = &w->groups[i];
        label_value(group, sizeof(group), g->group);
        for (int p = 0; p < MAX_PARTS; p++) {
            const part_state *ps = &g->parts[p];
            if (!ps->known)
                continue;
            ctr_strbuf_printf(
                b, "%s{consumer=\"%s\",group=\"%s\",partition=\"%d\"} ", name,
                g->consumer, group, p);
            if (in_seconds)
                ctr_strbuf_printf(b, "%.3f\n", (double)ps->progress_ms / 1e3);
            else
                ctr_strbuf_printf(b, "%lld\n", (long long)ps->lag);
        }
    }
}

int64_t ctr_group_watch_applier_committed(const ctr_group_watch *w, int p)
{
    if (w == NULL || p < 0 || p >= MAX_PARTS || !w->groups[1].parts[p].known)
        return -1;
    return w->groups[1].parts[p].committed;
}

void ctr_group_watch_render(const ctr_group_watch *w, ctr_strbuf *b)
{
    render_family(w, b, "counter_kafka_group_lag",
                  "Events in the partition after the offset the group last "
                  "committed to Kafka, for the partitions this applier owns.",
                  0);
    render_family(w, b, "counter_kafka_group_progress_timestamp_seconds",
                  "When the group last committed a new offset on the "
                  "partition or had nothing left there to commit (Unix "
                  "time, as this applier saw it).",
                  1);
}

/*
 * group_watch.c - see group_watch.h.
 *
 * Progress: a partition's time moves on whenever the group's committed
 * offset there changed since the last look, or nothing was left to
 * commit (lag 0). So an idle partition is never "stale": the time says
 * how long work has waited there without a commit, which is what the
 * stalled-persister alert asks (lag > 0 and no progress for 60 s). The
 * first look after a start, or after the partition came to this applier,
 * counts as progress: the watch cannot know what came before.
 */
#include "applier/group_watch.h"

#include "common/log.h"
#include "common/metrics.h"
#include "common/pgconn.h"
#include "common/timeutil.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum {
    WATCH_EVERY_MS = 1000,
    MAX_PARTS = 1024,        /* partitions past it are not watched */
    QUERY_TIMEOUT_MS = 2000, /* on the watch's own thread */
    STOP_WAIT_MS = 3000,
};

typedef struct part_state {
    int known;           /* in the last look: this applier owns it */
    int64_t committed;   /* the group's committed offset; < 0: none */
    int64_t lag;         /* events after it */
    int64_t progress_ms; /* wall clock */
} part_state;

typedef struct watched {
    const char *consumer; /* the label: "persister", "applier" */
    const char *group;    /* the group id, from the config */
    const char *topic;    /* the topic it reads */
    int failing;          /* the last look failed (logged once) */
    part_state parts[MAX_PARTS];
} watched;

struct ctr_group_watch {
    const ctr_config *cfg;
    rd_kafka_t *rk;
    const char *topic; /* the applier's: whose partitions are owned here */

    /* the applier group: applier thread only */
    watched applier;
    int64_t confirmed[MAX_PARTS]; /* committed by this applier, or -1 */
    int64_t next_ms;

    /* the persister group: written by the thread, under lock */
    pthread_mutex_t lock;
    pthread_cond_t wake;
    int stopping, done; /* under lock */
    watched persister;
    pthread_t thread;
    /* the thread's own (not under lock): its last look */
    int64_t next[MAX_PARTS], lo[MAX_PARTS], hi[MAX_PARTS];
    int commit_failing; /* applier thread */
};

/* The partitions of the input topic assigned here, as a bitmap; 0, or -1
 * when the consumer did not say. */
static int owned(rd_kafka_t *rk, const char *topic, unsigned char *mine)
{
    rd_kafka_topic_partition_list_t *l = NULL;
    memset(mine, 0, MAX_PARTS);
    if (rd_kafka_assignment(rk, &l) != RD_KAFKA_RESP_ERR_NO_ERROR)
        return -1;
    for (int i = 0; i < l->cnt; i++)
        if (strcmp(l->elems[i].topic, topic) == 0 &&
            l->elems[i].partition >= 0 && l->elems[i].partition < MAX_PARTS)
            mine[l->elems[i].partition] = 1;
    rd_kafka_topic_partition_list_destroy(l);
    return 0;
}

/* One partition's look: committed (< 0: none) against the log's [lo, hi). */
static void note(part_state *ps, int was_known, int64_t committed, int64_t lo,
                 int64_t hi, int64_t now_ms)
{
    /* never committed: every event still in the log waits */
    int64_t from = committed >= 0 ? committed : (lo > 0 ? lo : 0);
    int64_t lag = hi > from ? hi - from : 0;
    if (!was_known || committed != ps->committed || lag == 0)
        ps->progress_ms = now_ms;
    ps->committed = committed;
    ps->lag = lag;
    ps->known = 1;
}

static void failed(watched *g, const char *why)
{
    if (!g->failing)
        ctr_warn("could not read the committed offsets of group %s: %s; "
                 "its lag is not updated",
                 g->group, why);
    g->failing = 1;
}

/* ---- the persister group, on the watch's thread ---- */

/* The persister's next offsets of kafka.topic from consumer_offsets into
 * next[] (-1 where it has none). 0, or -1 with the reason in err. */
static int read_offsets(ctr_group_watch *w, PGconn *pg, int64_t *next,
                        char *err, size_t errlen)
{
    const char *params[2] = {w->cfg->persister_group_id, w->cfg->kafka_topic};
    for (int p = 0; p < MAX_PARTS; p++)
        next[p] = -1;
    PGresult *r = PQexecParams(pg,
                               "SELECT partition, next_offset "
                               "FROM consumer_offsets "
                               "WHERE group_id = $1 AND topic = $2",
                               2, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        ctr_pg_one_line(err, errlen, PQerrorMessage(pg));
        PQclear(r);
        return -1;
    }
    for (int i = 0; i < PQntuples(r); i++) {
        int p = atoi(PQgetvalue(r, i, 0));
        int64_t off;
        if (p >= 0 && p < MAX_PARTS &&
            ctr_pg_int(PQgetvalue(r, i, 1), &off) == 0)
            next[p] = off;
    }
    PQclear(r);
    return 0;
}

/* One look at the persister group; the connection is dropped on failure
 * (reconnected at the next look). */
static void look_persister(ctr_group_watch *w, PGconn **pg)
{
    int64_t *next = w->next, *lo = w->lo, *hi = w->hi;
    unsigned char mine[MAX_PARTS];
    char err[512];
    if (*pg == NULL)
        *pg = ctr_pg_connect(w->cfg, "counter-applier-watch", err, sizeof(err));
    if (*pg == NULL || read_offsets(w, *pg, next, err, sizeof(err)) != 0) {
        if (*pg) {
            PQfinish(*pg);
            *pg = NULL;
        }
        pthread_mutex_lock(&w->lock);
        failed(&w->persister, err);
        pthread_mutex_unlock(&w->lock);
        return;
    }
    if (owned(w->rk, w->topic, mine) != 0)
        return;
    /* the ends first, outside the lock: each may take a round trip. A
     * partition whose end did not come keeps what the last look said
     * (mine 2): a missed sample must not count as progress. */
    for (int p = 0; p < MAX_PARTS; p++)
        if (mine[p] && (rd_kafka_query_watermark_offsets(
                            w->rk, w->cfg->kafka_topic, p, &lo[p], &hi[p],
                            QUERY_TIMEOUT_MS) != RD_KAFKA_RESP_ERR_NO_ERROR ||
                        hi[p] < 0))
            mine[p] = 2;
    int64_t now_ms = ctr_time_now_ms();
    pthread_mutex_lock(&w->lock);
    watched *g = &w->persister;
    if (g->failing)
        ctr_info("reading the committed offsets of group %s again", g->group);
    g->failing = 0;
    for (int p = 0; p < MAX_PARTS; p++) {
        int was_known = g->parts[p].known;
        if (mine[p] == 1)
            note(&g->parts[p], was_known, next[p], lo[p], hi[p], now_ms);
        else if (mine[p] == 0)
            g->parts[p].known = 0; /* not this applier's any more */
    }
    pthread_mutex_unlock(&w->lock);
}

static void *persister_thread(void *arg)
{
    ctr_group_watch *w = arg;
    PGconn *pg = NULL;
    pthread_mutex_lock(&w->lock);
    while (!w->stopping) {
        pthread_mutex_unlock(&w->lock);
        look_persister(w, &pg);
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += WATCH_EVERY_MS / 1000;
        pthread_mutex_lock(&w->lock);
        while (!w->stopping &&
               pthread_cond_timedwait(&w->wake, &w->lock, &until) != ETIMEDOUT)
            ;
    }
    pthread_mutex_unlock(&w->lock);
    if (pg)
        PQfinish(pg);
    pthread_mutex_lock(&w->lock);
    w->done = 1;
    pthread_cond_broadcast(&w->wake);
    pthread_mutex_unlock(&w->lock);
    return NULL;
}

ctr_group_watch *ctr_group_watch_new(const ctr_config *cfg, rd_kafka_t *rk)
{
    ctr_group_watch *w = calloc(1, sizeof(*w));
    if (w == NULL)
        return NULL;
    w->cfg = cfg;
    w->rk = rk;
    w->topic = cfg->kafka_input_topic;
    w->persister.consumer = "persister";
    w->persister.group = cfg->persister_group_id;
    w->persister.topic = cfg->kafka_topic;
    w->applier.consumer = "applier";
    w->applier.group = cfg->applier_group_id;
    w->applier.topic = cfg->kafka_input_topic;
    for (int p = 0; p < MAX_PARTS; p++)
        w->confirmed[p] = -1;
    pthread_mutex_init(&w->lock, NULL);
    pthread_cond_init(&w->wake, NULL);
    if (pthread_create(&w->thread, NULL, persister_thread, w) != 0) {
        pthread_cond_destroy(&w->wake);
        pthread_mutex_destroy(&w->lock);
        free(w);
        return NULL;
    }
    return w;
}

void ctr_group_watch_free(ctr_group_watch *w)
{
    if (w == NULL)
        return;
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += STOP_WAIT_MS / 1000;
    pthread_mutex_lock(&w->lock);
    w->stopping = 1;
    pthread_cond_broadcast(&w->wake);
    while (!w->done &&
           pthread_cond_timedwait(&w->wake, &w->lock, &until) != ETIMEDOUT)
        ;
    int done = w->done;
    pthread_mutex_unlock(&w->lock);
    if (!done) {
        /* stuck in a query to a server that stopped answering: the
         * process is on its way out; the thread keeps what it uses */
        ctr_warn("the persister group's watch did not stop in %d ms",
                 STOP_WAIT_MS);
        pthread_detach(w->thread);
        return;
    }
    pthread_join(w->thread, NULL);
    pthread_cond_destroy(&w->wake);
    pthread_mutex_destroy(&w->lock);
    free(w);
}

/* ---- the applier group, on the applier thread ---- */

void ctr_group_watch_committed(ctr_group_watch *w, rd_kafka_resp_err_t err,
                               const rd_kafka_topic_partition_list_t *offsets)
{
    if (w == NULL || offsets == NULL)
        return;
    if (err && err != RD_KAFKA_RESP_ERR__NO_OFFSET) {
        if (!w->commit_failing)
            ctr_warn("commits of group %s fail: %s", w->applier.group,
                     rd_kafka_err2str(err));
        w->commit_failing = 1;
        return;
    }
    for (int i = 0; i < offsets->cnt; i++) {
        const rd_kafka_topic_partition_t *tp = &offsets->elems[i];
        if (tp->err || tp->offset < 0 || tp->partition < 0 ||
            tp->partition >= MAX_PARTS || strcmp(tp->topic, w->topic) != 0)
            continue;
        w->confirmed[tp->partition] = tp->offset;
    }
    if (w->commit_failing && err == 0)
        ctr_info("commits of group %s go through again", w->applier.group);
    w->commit_failing = w->commit_failing && err != 0;
}

void ctr_group_watch_moved(ctr_group_watch *w,
                           const rd_kafka_topic_partition_list_t *parts)
{
    for (int i = 0; w && parts && i < parts->cnt; i++)
        if (parts->elems[i].partition >= 0 &&
            parts->elems[i].partition < MAX_PARTS &&
            strcmp(parts->elems[i].topic, w->topic) == 0) {
            w->confirmed[parts->elems[i].partition] = -1;
            w->applier.parts[parts->elems[i].partition].known = 0;
        }
}

void ctr_group_watch_step(ctr_group_watch *w)
{
    int64_t now = ctr_time_mono_ms();
    rd_kafka_topic_partition_list_t *l = NULL;
    if (w == NULL || now < w->next_ms)
        return;
    w->next_ms = now + WATCH_EVERY_MS;
    if (rd_kafka_assignment(w->rk, &l) != RD_KAFKA_RESP_ERR_NO_ERROR)
        return;
    rd_kafka_position(w->rk, l); /* local: what was consumed */
    int64_t now_ms = ctr_time_now_ms();
    int was_known[MAX_PARTS];
    for (int p = 0; p < MAX_PARTS; p++) {
        was_known[p] = w->applier.parts[p].known;
        w->applier.parts[p].known = 0;
    }
    for (int i = 0; i < l->cnt; i++) {
        const rd_kafka_topic_partition_t *tp = &l->elems[i];
        int p = tp->partition;
        int64_t lo, hi;
        if (p < 0 || p >= MAX_PARTS || strcmp(tp->topic, w->topic) != 0 ||
            rd_kafka_get_watermark_offsets(w->rk, w->topic, p, &lo, &hi) !=
                RD_KAFKA_RESP_ERR_NO_ERROR ||
            hi < 0)
            continue;
        /* before this applier's first confirmed commit of p, where it
         * stands; neither known (nothing consumed yet): no sample */
        int64_t at = w->confirmed[p] >= 0 ? w->confirmed[p] : tp->offset;
        if (at < 0)
            continue;
        note(&w->applier.parts[p], was_known[p], at, lo, hi, now_ms);
    }
    rd_kafka_topic_partition_list_destroy(l);
}

int64_t ctr_group_watch_applier_committed(const ctr_group_watch *w, int p)
{
    if (w == NULL || p < 0 || p >= MAX_PARTS)
        return -1;
    return w->confirmed[p];
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

/* name{consumer, group, partition} for every known partition of g: the
 * progress time in seconds when in_seconds, else the lag. */
static void render_group(const watched *g, ctr_strbuf *b, const char *name,
                         int in_seconds)
{
    char group[512];
    label_value(group, sizeof(group), g->group);
    for (int p = 0; p < MAX_PARTS; p++) {
        const part_state *ps = &g->parts[p];
        if (!ps->known)
            continue;
        ctr_strbuf_printf(b,
                          "%s{consumer=\"%s\",group=\"%s\",partition=\"%d\"} ",
                          name, g->consumer, group, p);
        if (in_seconds)
            ctr_strbuf_printf(b, "%.3f\n", (double)ps->progress_ms / 1e3);
        else
            ctr_strbuf_printf(b, "%lld\n", (long long)ps->lag);
    }
}

static void render_family(ctr_group_watch *w, ctr_strbuf *b, const char *name,
                          const char *help, int in_seconds)
{
    ctr_metric_help(b, name, "gauge", help);
    if (w == NULL)
        return;
    pthread_mutex_lock(&w->lock);
    render_group(&w->persister, b, name, in_seconds);
    pthread_mutex_unlock(&w->lock);
    render_group(&w->applier, b, name, in_seconds);
}

void ctr_group_watch_render(ctr_group_watch *w, ctr_strbuf *b)
{
    render_family(w, b, "counter_kafka_group_lag",
                  "Events in the partition after the offset the group last "
                  "committed, for the partitions this applier owns (the "
                  "persister's as PostgreSQL has them; the applier's as its "
                  "commits were confirmed, or its position before one).",
                  0);
    render_family(w, b, "counter_kafka_group_progress_timestamp_seconds",
                  "When the group last committed a new offset on the "
                  "partition or had nothing left there to commit (Unix "
                  "time, as this applier saw it).",
                  1);
}

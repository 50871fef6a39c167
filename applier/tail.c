/*
 * tail.c - see tail.h.
 */
#include "applier/tail.h"

#include "common/log.h"
#include "common/strbuf.h"
#include "common/timeutil.h"
#include "ingest/consumer.h"
#include "ingest/event.h"
#include "ingest/producer.h"
#include "redis/restore.h"
#include "redis/scripts.h"

#include <inttypes.h>
#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TAIL_LOCK_KEY "counter:restore-tail-lock"

enum {
    LOOK_EVERY_MS = 1000,
    STRETCH = 2000, /* messages per step */
    POLL_MS = 100,
};

struct ctr_tail {
    const ctr_config *cfg;
    rd_kafka_t *rk; /* the reader while paying */
    char *owed;     /* the debt's text as last read or written */
    char epoch[CTR_EPOCH_MAX];
    int64_t until_ms;
    int nparts;
    int64_t offset[CTR_MAX_PARTITIONS];
    int64_t end[CTR_MAX_PARTITIONS]; /* once the time is up; -1 unknown */
    char token[20];
    char lock_sha[41], fenced_sha[41], write_sha[41];
    int64_t last_look_ms;
    uint64_t applied;
};

ctr_tail *ctr_tail_new(const ctr_config *cfg)
{
    ctr_tail *t = calloc(1, sizeof(*t));
    if (t == NULL)
        return NULL;
    t->cfg = cfg;
    snprintf(t->token, sizeof(t->token), "%016" PRIx64, ctr_random_u64());
    return t;
}

static void stop_paying(ctr_tail *t)
{
    ctr_reader_free(t->rk);
    t->rk = NULL;
    free(t->owed);
    t->owed = NULL;
}

void ctr_tail_free(ctr_tail *t)
{
    if (t == NULL)
        return;
    stop_paying(t);
    free(t);
}

void ctr_tail_new_connection(ctr_tail *t)
{
    t->lock_sha[0] = t->fenced_sha[0] = t->write_sha[0] = '\0';
}

uint64_t ctr_tail_applied(const ctr_tail *t)
{
    return t->applied;
}

/* Parses "<epoch>|<until>|<o0>,<o1>,..." into t; 0 or -1. */
static int debt_parse(ctr_tail *t, const char *s)
{
    const char *bar = strchr(s, '|');
    if (bar == NULL || (size_t)(bar - s) >= sizeof(t->epoch))
        return -1;
    memcpy(t->epoch, s, (size_t)(bar - s));
    t->epoch[bar - s] = '\0';
    char *end;
    t->until_ms = strtoll(bar + 1, &end, 10);
    if (*end != '|')
        return -1;
    t->nparts = 0;
    for (const char *p = end + 1; *p && t->nparts < CTR_MAX_PARTITIONS;) {
        t->offset[t->nparts] = strtoll(p, &end, 10);
        t->end[t->nparts++] = -1;
        if (end == p || (*end != ',' && *end != '\0'))
            return -1;
        p = *end ? end + 1 : end;
    }
    return t->nparts > 0 ? 0 : -1;
}

/* Replaces the debt's text (or deletes it: text NULL) if it still reads
 * what we last saw; 1 done, 0 changed meanwhile, -1 error. */
static int debt_swap(ctr_tail *t, ctr_rclient *c, const char *text)
{
    const char *set[] = {"EVALSHA",    t->fenced_sha, "2",   CTR_TAIL_KEY,
                         CTR_TAIL_KEY, t->owed,       "SET", text};
    const char *del[] = {"EVALSHA",    t->fenced_sha, "2",  CTR_TAIL_KEY,
                         CTR_TAIL_KEY, t->owed,       "DEL"};
    redisReply *r = text ? ctr_rclient_argv(c, CTR_TAIL_KEY, 8, set, NULL)
                         : ctr_rclient_argv(c, CTR_TAIL_KEY, 7, del, NULL);
    int rc = r == NULL ? -1 : r->type == REDIS_REPLY_ERROR ? 0 : 1;
    freeReplyObject(r);
    if (rc == 1 && text) {
        char *copy = strdup(text);
        if (copy == NULL)
            return -1;
        free(t->owed);
        t->owed = copy;
    }
    return rc;
}

static int lock_op(ctr_tail *t, ctr_rclient *c, const char *op)
{
    const char *argv[] = {"EVALSHA", t->lock_sha, "1",    TAIL_LOCK_KEY,
                          t->token,  op,          "30000"};
    redisReply *r = ctr_rclient_argv(c, TAIL_LOCK_KEY, 7, argv, NULL);
    int rc = r && r->type == REDIS_REPLY_INTEGER ? (int)r->integer : -1;
    freeReplyObject(r);
    return rc;
}

/* Starts reading from the debt's offsets. 0 or -1. */
static int start_reading(ctr_tail *t)
{
    char err[256];
    t->rk = ctr_reader_new(t->cfg, "counter-restore-tail", err, sizeof(err));
    if (t->rk == NULL) {
        ctr_warn("restore tail: %s", err);
        return -1;
    }
    rd_kafka_topic_partition_list_t *l =
        rd_kafka_topic_partition_list_new(t->nparts);
    for (int p = 0; p < t->nparts; p++)
        rd_kafka_topic_partition_list_add(l, t->cfg->kafka_topic, p)->offset =
            t->offset[p];
    rd_kafka_resp_err_t e = rd_kafka_assign(t->rk, l);
    rd_kafka_topic_partition_list_destroy(l);
    return e ? -1 : 0;
}

/* An api event of another data set than the debt's: applied again. 0 or
 * -1. */
static int pay_message(ctr_tail *t, ctr_rclient *c, const rd_kafka_message_t *m)
{
    char origin[16], epoch[CTR_EPOCH_MAX], err[256];
    ctr_event ev;
    ctr_apply_result res;
    if (!ctr_message_origin(m, origin, sizeof(origin)) ||
        strcmp(origin, "api") != 0)
        return 0;
    /* The api names the data set it applied a write to in every event it
     * logs; an api event without one (a tool's, or a replay's) was never
     * applied to a data set a restore lost: it is not owed. */
    if (!ctr_message_header(m, CTR_HEADER_EPOCH, epoch, sizeof(epoch)) ||
        epoch[0] == '\0')
        return 0;
    if (strcmp(epoch, t->epoch) == 0)
        return 0; /* applied to the data set we have */
    if (ctr_event_decode(m->payload, m->len, &ev, err, sizeof(err)) != 0)
        return 0; /* the persister dead-letters it */
    int rc = ctr_restore_reapply(t->cfg, c, t->write_sha, &ev, epoch,
                                 ctr_time_now_ms(), &res, err, sizeof(err));
    if (rc < 0)
        ctr_warn("restore tail: %s", err);
    else if (rc == 0 && res.outcome == CTR_APPLY_APPLIED)
        t->applied++;
    ctr_event_clear(&ev);
    return rc < 0 ? -1 : 0;
}

/* Reads a stretch; 1 when the debt is paid, 0 not yet, -1 error. */
static int pay_stretch(ctr_tail *t, ctr_rclient *c)
{
    int paid = 0;
    for (int n = 0; n < STRETCH; n++) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(t->rk, POLL_MS);
        if (m == NULL)
            break;
        int p = m->partition, rc = 0;
        if (p >= 0 && p < t->nparts && m->offset >= t->offset[p]) {
            if (!m->err)
                rc = pay_message(t, c, m);
            if (!m->err || m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF)
                t->offset[p] = m->err ? m->offset : m->offset + 1;
        }
        rd_kafka_message_destroy(m);
        if (rc < 0)
            return -1;
    }
    if (ctr_time_now_ms() < t->until_ms)
        return 0;
    /* the time is up: read to the end of the log as it is now */
    paid = 1;
    for (int p = 0; p < t->nparts; p++) {
        int64_t lo;
        if (t->end[p] < 0 &&
            rd_kafka_query_watermark_offsets(t->rk, t->cfg->kafka_topic, p, &lo,
                                             &t->end[p], 5000) != 0)
            return -1;
        paid &= t->offset[p] >= t->end[p];
    }
    return paid;
}

int ctr_tail_step(ctr_tail *t, ctr_rclient *c, const char *epoch)
{
    int64_t now = ctr_time_now_ms();
    if (t->rk == NULL && now - t->last_look_ms < LOOK_EVERY_MS)
        return 0;
    t->last_look_ms = now;
    redisReply *r = ctr_rclient_cmd(c, CTR_TAIL_KEY, "GET %s", CTR_TAIL_KEY);
    if (r == NULL)
        return -1;
    char *text = r->type == REDIS_REPLY_STRING ? strdup(r->str) : NULL;
    freeReplyObject(r);
    if (text == NULL) {
        stop_paying(t);
        return 0;
    }
    if (t->owed == NULL || strcmp(text, t->owed) != 0) {
        /* new to us, or another applier paid some: start from its offsets */
        stop_paying(t);
        if (debt_parse(t, text) != 0) {
            ctr_warn("restore tail: unreadable %s: %.80s", CTR_TAIL_KEY, text);
            free(text);
            return 0;
        }
        t->owed = text;
    } else {
        free(text);
    }
    if (!t->lock_sha[0] &&
        (ctr_rclient_script(c, ctr_script_lock, t->lock_sha) != 0 ||
         ctr_rclient_script(c, ctr_script_fenced, t->fenced_sha) != 0 ||
         ctr_rclient_script(c, ctr_script_write, t->write_sha) != 0)) {
        t->lock_sha[0] = '\0';
        return -1;
    }
    /* the applier's epoch is the one it last read: older than the debt's
     * (epochs begin with a restore's sequence number) means it has not
     * seen this restore's marker yet, not that a newer restore came */
    if (strtoll(t->epoch, NULL, 10) > strtoll(epoch, NULL, 10))
        return 0;
    if (strcmp(t->epoch, epoch) != 0) {
        /* a newer restore applied the log up to its own end */
        if (epoch[0] && debt_swap(t, c, NULL) == 1)
            ctr_info("restore tail of epoch %s: moot, epoch is %s now",
                     t->epoch, epoch);
        stop_paying(t);
        return 0;
    }
    if (lock_op(t, c, "take") != 1) {
        stop_paying(t); /* another applier pays it */
        return 0;
    }
    if (t->rk == NULL) {
        ctr_info("restore tail of epoch %s: applying api events of the lost "
                 "data set logged after the restore",
                 t->epoch);
        if (start_reading(t) != 0) {
            stop_paying(t);
            return -1;
        }
    }
    uint64_t before = t->applied;
    int paid = pay_stretch(t, c);
    if (paid < 0) {
        stop_paying(t);
        return -1;
    }
    if (paid) {
        ctr_info("restore tail of epoch %s paid: %" PRIu64
                 " api events applied again",
                 t->epoch, t->applied);
        (void)debt_swap(t, c, NULL);
        (void)lock_op(t, c, "release");
        stop_paying(t);
        return (int)(t->applied - before);
    }
    ctr_strbuf b = {0};
    ctr_strbuf_printf(&b, "%s|%" PRId64 "|", t->epoch, t->until_ms);
    for (int p = 0; p < t->nparts; p++)
        ctr_strbuf_printf(&b, "%s%" PRId64, p ? "," : "", t->offset[p]);
    int swapped = b.failed ? -1 : debt_swap(t, c, b.s);
    ctr_strbuf_clear(&b);
    if (swapped != 1)
        stop_paying(t);
    return swapped < 0 ? -1 : (int)(t->applied - before);
}

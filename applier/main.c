/*
 * main.c - counter-applier: applies to Redis the events that other
 * services write straight into Kafka (the input topic, kafka.input_topic:
 * no "origin" header), exactly once, with the api's decisions, so they
 * obey the counter's kind, dedup, bounds and windows.
 *
 * A consumed batch goes to Redis at once: its events are grouped per
 * counter and partition, and consecutive events of one counter (one value
 * key) are one call of redis/fold.lua, which decides each event as the
 * api's write script decides a confirmed write; the calls of a batch are
 * pipelined, one per counter in flight (per master in a cluster), their
 * replies matched in order. A keyed api write sent around Redis (header
 * "dedup") still goes through redis/write.lua on its own, with its
 * Idempotency-Key record.
 *
 * Exactly once across crashes and rebalances: the scripts keep, per
 * counter and partition, the last offset applied and refuse anything at
 * or below it; an event id the counter saw within applier.dedup_window_s
 * (a producer's retry) is refused by the id window.
 *
 * For each event it applies (or dedups) it publishes a record with header
 * "origin: applier" carrying the applied delta and "source" naming the
 * event's offset; that record is what the persister counts (once per
 * source offset), so PostgreSQL follows Redis's decisions (a refused
 * bound, a clamp) rather than the raw request. Records are produced
 * without waiting; Kafka offsets are committed only after every record is
 * delivered; after a crash the fence recognises applied events, fold.lua's
 * outcome log says what they led to, and their records are published
 * again, which the persister recognises by their source.
 *
 * Events that fail validation are copied to "<topic>.dlq". A deployment
 * from before the input topic has its bare events in kafka.topic: they
 * are read there too until drained (applier/legacy.h).
 * Single thread: rebalance callbacks run inside rd_kafka_consumer_poll.
 */
#include "common/config.h"
#include "common/log.h"
#include "common/metrics.h"
#include "common/service.h"
#include "common/timeutil.h"
#include "redis/apply.h"
#include "ingest/consumer.h"
#include "ingest/event.h"
#include "ingest/producer.h"
#include "redis/restore.h"
#include "applier/fold.h"
#include "applier/group_watch.h"
#include "applier/legacy.h"
#include "applier/resolver.h"
#include "applier/tail.h"

#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <librdkafka/rdkafka.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

enum {
    COMMIT_EVERY_MS = 200,
    COMMIT_EVERY_MSGS = 100000,
    /* messages taken from the consumer at once: under a backlog of many
     * counters, more of each counter's events share one call */
    BATCH_MAX = 20000,
    RECORD_TIMEOUT_MS = 300000,
    REDIS_CHECK_EVERY_MS = 500,
    WAIT_REPLICAS_MS = 1000,
    BACKOFF_MAX_MS = 2000,
};

typedef struct applier {
    const ctr_config *cfg;
    rd_kafka_t *rk;
    ctr_producer *producer;
    ctr_rclient *redis;
    char sha[41], finish_sha[41], fold_sha[41];
    char epoch[CTR_EPOCH_MAX]; /* the data set's, last seen */
    int undelivered; /* records whose delivery failed since the last commit */
    size_t uncommitted;
    int64_t last_commit_ms;
    int64_t last_redis_check_ms;
    uint64_t applied, duplicates, refused, invalid, skipped;
    uint64_t restores;
    int wait_short_logged;
    ctr_histogram apply_seconds; /* a batch's Redis calls, retries included */
    ctr_histogram batch_events;  /* messages per batch */
    ctr_legacy *legacy;          /* bare events of kafka.topic, from before */
    int revoked; /* a rebalance took partitions while a batch filled */
    rd_kafka_topic_partition_list_t *revoked_parts;
    ctr_resolver *resolver;  /* pending writes nobody else settles */
    ctr_tail *tail;          /* what a restore left owed */
    ctr_group_watch *groups; /* the consumer groups' committed lag */
    ctr_metrics_server *metrics;
} applier;

static void on_record(enum ctr_delivery result, void *arg)
{
    applier *a = arg;
    if (result != CTR_DELIVERED)
        a->undelivered++;
}

/* ---- Redis ---- */

static void redis_drop(applier *a)
{
    ctr_rclient_free(a->redis);
    a->redis = NULL;
    if (a->resolver)
        ctr_resolver_new_connection(a->resolver);
    if (a->tail)
        ctr_tail_new_connection(a->tail);
}

static void commit_progress(applier *a);
static void render_metrics(ctr_strbuf *b, void *arg);

/* Answers Prometheus and keeps the group watch current: from every loop
 * that waits, so that both go on while Redis is away. */
static void serve_metrics(applier *a)
{
    ctr_group_watch_step(a->groups);
    ctr_metrics_server_poll(a->metrics, render_metrics, a);
}

/*
 * A Redis without the epoch markers restarted without its data (or never
 * had any): before anything is applied to it, it is restored from
 * PostgreSQL and the log, by one applier (ctr_redis_restore takes the
 * restore lock) while the api keeps off it. First every record of what
 * this applier applied is delivered and its offsets committed, so that
 * the log the restore reads is complete and what the applier reads next
 * is exactly what the restore lacks.
 * 0 when the data set is whole, -1 to retry later.
 */
static int ensure_epoch(applier *a, char *err, size_t errlen)
{
    int whole = ctr_redis_epoch_get(a->redis, a->epoch, sizeof(a->epoch));
    if (whole == 1)
        return 0;
    if (whole < 0) {
        snprintf(err, errlen, "%s", ctr_rclient_errstr(a->redis));
        return -1;
    }
    commit_progress(a);
    ctr_info("redis has no epoch: restoring it from postgresql and the log");
    ctr_restore_stats st;
    int64_t t0 = ctr_time_mono_ms();
    int rc = ctr_redis_restore(a->cfg, a->redis, &st, a->epoch, err, errlen);
    if (rc == 1) {
        snprintf(err, errlen, "redis is being restored by another applier");
        return -1;
    }
    if (rc != 0)
        return -1;
    a->restores++;
    ctr_info("restored redis in %" PRId64 " ms: %ld values, %ld event ids, "
             "%ld logged events replayed; epoch %s",
             ctr_time_mono_ms() - t0, st.values, st.guards, st.replayed,
             a->epoch);
    return 0;
}

/* Connects, loads the script and makes sure the data set is whole (see
 * ensure_epoch); 0 or -1 (logged once per outage). */
static int redis_ready(applier *a)
{
    static int down_logged;
    char err[512];
    const char *where = a->cfg->redis_cluster_nodes[0]
                            ? a->cfg->redis_cluster_nodes
                            : a->cfg->redis_addr;

    if (a->redis)
        return 0;
    a->redis = ctr_rclient_new(a->cfg, 2000, err, sizeof(err));
    if (a->redis == NULL)
        goto failed;
    if (ctr_rclient_script(a->redis, ctr_script_write, a->sha) != 0 ||
        ctr_rclient_script(a->redis, ctr_script_finish, a->finish_sha) != 0 ||
        ctr_rclient_script(a->redis, ctr_script_fold, a->fold_sha) != 0) {
        snprintf(err, sizeof(err), "%s", ctr_rclient_errstr(a->redis));
        goto failed;
    }
    if (ensure_epoch(a, err, sizeof(err)) != 0)
        goto failed;
    if (down_logged)
        ctr_info("connected to redis at %s", where);
    down_logged = 0;
    return 0;
failed:
    if (!down_logged)
        ctr_warn("redis at %s not usable: %s; retrying", where, err);
    down_logged = 1;
    redis_drop(a);
    return -1;
}

/* Reconnects if needed, and notices a Redis that lost its data. */
static void redis_check(applier *a)
{
    if (a->redis) {
        if (ctr_redis_epoch_get(a->redis, a->epoch, sizeof(a->epoch)) == 1)
            return;
        redis_drop(a); /* reconnecting checks the epoch and restores */
    }
    (void)redis_ready(a);
}

/*
 * Runs the write script for spec, retrying with backoff while Redis is
 * unreachable. Returns CTR_APPLY_OK with res, CTR_APPLY_OVERFLOW or
 * CTR_APPLY_ERROR (a reply Redis will give again: the event is refused),
 * or 1 when a stop was requested first.
 */
static int apply_event(applier *a, const char *name, const ctr_apply_spec *s,
                       ctr_apply_result *res, char *err, size_t errlen)
{
    int backoff = 50;
    ctr_apply_argv av;

    for (;;) {
        if (ctr_service_stopping())
            return 1;
        if (redis_ready(a) == 0) {
            if (ctr_apply_write_argv(&av, a->sha, name, s) != 0) {
                snprintf(err, errlen, "key too long");
                return CTR_APPLY_ERROR;
            }
            redisReply *r =
                ctr_rclient_argv(a->redis, av.argv[3], av.argc, av.argv, NULL);
            if (r != NULL) {
                int rc = ctr_apply_parse(r, res, err, errlen);
                int noscript = r->type == REDIS_REPLY_ERROR &&
                               strncmp(r->str, "NOSCRIPT", 8) == 0;
                freeReplyObject(r);
                /* In a cluster the write must reach a replica before its
                 * record goes out: a failover would lose it otherwise. If
                 * the master went away meanwhile the write is sent again;
                 * the event id guard applies it once. */
                int waited = rc != CTR_APPLY_OK
                                 ? 0
                                 : ctr_rclient_wait(a->redis, av.argv[3],
                                                    WAIT_REPLICAS_MS);
                if (waited > 0 && !a->wait_short_logged) {
                    ctr_warn("redis: a write reached fewer replicas than "
                             "redis.wait_replicas within %d ms",
                             WAIT_REPLICAS_MS);
                    a->wait_short_logged = 1;
                }
                int lost =
                    rc == CTR_APPLY_OK && res->outcome == CTR_APPLY_NO_EPOCH;
                if (!noscript && !lost && waited >= 0)
                    return rc;
                if (waited < 0)
                    ctr_warn("redis: %s", ctr_rclient_errstr(a->redis));
                /* the slot lost its data: reconnecting restores it */
                /* still NOSCRIPT after the client loaded the script again:
                 * not the event's fault; reconnect rather than refuse it */
            } else {
                ctr_warn("redis: %s", ctr_rclient_errstr(a->redis));
            }
            redis_drop(a);
        }
        /* still answer Prometheus while waiting for Redis */
        serve_metrics(a);
        ctr_service_sleep_ms(backoff);
        backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
    }
}

/* ---- Kafka ---- */

/* Which of the committed_offsets a topic is: 0 the input topic, 1
 * kafka.topic (its bare events from before the input topic). */
static int topic_index(const applier *a, const char *topic)
{
    return strcmp(topic, a->cfg->kafka_input_topic) == 0 ? 0 : 1;
}

/* Waits for every record, then commits the stored offsets. */
static void commit_progress(applier *a)
{
    if (a->uncommitted == 0)
        return;
    int left = ctr_producer_flush(a->producer, RECORD_TIMEOUT_MS);
    if (left > 0 || a->undelivered > 0) {
        /* Committing now would lose records; restarting redoes them. */
        ctr_error("%d records of applied events were not delivered to "
                  "kafka; exiting so that a restart publishes them again",
                  left + a->undelivered);
        exit(1);
    }
    /* Asynchronous: a synchronous commit (librdkafka 2.0) left a
     * reference behind that made rd_kafka_destroy wait forever at exit.
     * A commit that is lost only makes a restart see a few events again,
     * which the fence recognises. */
    rd_kafka_resp_err_t err = rd_kafka_commit(a->rk, NULL, 1);
    if (err && err != RD_KAFKA_RESP_ERR__NO_OFFSET)
        ctr_warn("could not commit offsets: %s", rd_kafka_err2str(err));
    a->uncommitted = 0;
    a->last_commit_ms = ctr_time_mono_ms();
}

static void commit_progress_cb(void *arg)
{
    commit_progress(arg);
}

/* What the broker took of a commit: the group watch's committed offsets
 * (fold.lua trims its outcome log by them). */
static void on_commit(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                      rd_kafka_topic_partition_list_t *offsets, void *opaque)
{
    applier *a = opaque;
    (void)rk;
    ctr_group_watch_committed(a->groups, err, offsets);
}

static void on_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                         rd_kafka_topic_partition_list_t *parts, void *opaque)
{
    applier *a = opaque;
    ctr_group_watch_moved(a->groups, parts);
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        /* from the committed offsets: the fence skips what was applied
         * after them */
        for (int i = 0; i < parts->cnt; i++) {
            ctr_info("assigned partition %d of %s",
                     (int)parts->elems[i].partition, parts->elems[i].topic);
            if (topic_index(a, parts->elems[i].topic) == 1)
                ctr_legacy_activity(a->legacy);
        }
        ctr_consumer_assign(rk, parts);
    } else {
        /* The records of what was applied go out, and the offsets with
         * them, before the next owner starts: it then redoes little. When
         * the partitions were lost the commit is refused, and the next
         * owner's fence recognises what this member applied. Messages of
         * these partitions taken into the batch being filled are left to
         * the next owner (fill_batch). */
        for (int i = 0; i < parts->cnt; i++) {
            ctr_info("revoked partition %d of %s%s",
                     (int)parts->elems[i].partition, parts->elems[i].topic,
                     rd_kafka_assignment_lost(rk) ? " (lost)" : "");
            rd_kafka_topic_partition_list_add(a->revoked_parts,
                                              parts->elems[i].topic,
                                              parts->elems[i].partition);
        }
        a->revoked = 1;
        commit_progress(a);
        ctr_consumer_unassign(rk, parts);
    }
}

/*
 * Publishes the record of an applied event: what it changed, counted by
 * the persister once per source offset (msg: the event's message), or,
 * without one, once per (counter, event id[, generation of a key]).
 */
static void publish_record(applier *a, const ctr_event *ev, int64_t delta,
                           int64_t gen, const rd_kafka_message_t *msg)
{
    ctr_event rec = *ev;
    size_t len;
    rec.delta = delta;
    char *payload = ctr_event_encode(&rec, &len);
    ctr_event_headers h = {.origin = "applier", .dedup_gen = gen};
    if (msg) {
        h.source_topic = rd_kafka_topic_name(msg->rkt);
        h.source_partition = msg->partition;
        h.source_offset = msg->offset;
    }
    int backoff = 10;
    while (payload) {
        if (ctr_producer_send(a->producer, ev->counter, strlen(ev->counter),
                              payload, len, &h, a) == 0)
            break;
        /* the queue is full: let deliveries drain */
        ctr_producer_poll(a->producer, backoff);
        backoff = backoff * 2 > 1000 ? 1000 : backoff * 2;
    }
    free(payload);
}

static void dead_letter(applier *a, const rd_kafka_message_t *msg,
                        const char *reason)
{
    a->invalid++;
    ctr_warn("event at partition %d offset %" PRId64
             " sent to the dead-letter topic: %s",
             (int)msg->partition, msg->offset, reason);
    while (ctr_producer_send_dlq(a->producer, msg->key, msg->key_len,
                                 msg->payload, msg->len, reason, msg->partition,
                                 msg->offset, a) != 0)
        ctr_producer_poll(a->producer, 100);
}

/* The generation of a keyed api write sent through the log (its "dedup"
 * header), or 0. */
static int64_t message_gen(const rd_kafka_message_t *msg)
{
    char v[24];
    char *end;
    if (!ctr_message_header(msg, CTR_HEADER_DEDUP, v, sizeof(v)))
        return 0;
    long long g = strtoll(v, &end, 10);
    return *end == '\0' && g > 0 ? (int64_t)g : 0;
}

/*
 * The guard of this event's id holds the api's record of a keyed write:
 * the api applied the same key itself (a first attempt timed out, its
 * retry went through the log). If that attempt is still pending, this
 * event confirms it: its entry is finished (so that its undo, should its
 * own event fail, takes nothing back) and a record of what it applied is
 * published under its generation, which the persister counts once with
 * the api's own event should that arrive too. A done record: counted.
 */
static void confirm_api_write(applier *a, const ctr_event *ev,
                              const ctr_counter_def *def, const char *record)
{
    ctr_idem_record rec;
    ctr_apply_spec spec;
    ctr_apply_argv av;
    if (ctr_idem_record_parse(record, &rec) != 0 || rec.state != 'P')
        return;
    ctr_apply_plan(&spec, def, rec.ts_ms, ctr_time_now_ms(), a->cfg->lateness_s,
                   ev->user_id, 0, rec.applied);
    spec.pending_id = ev->id;
    if (ctr_apply_finish_argv(&av, a->finish_sha, ev->counter, &spec) != 0)
        return;
    redisReply *r =
        ctr_rclient_argv(a->redis, av.argv[3], av.argc, av.argv, NULL);
    int finished = r && r->type == REDIS_REPLY_INTEGER && r->integer == 1;
    freeReplyObject(r);
    if (finished)
        publish_record(a, ev, def->kind == CTR_KIND_UNIQUE ? 1 : rec.applied,
                       rec.gen_ms, NULL);
}

/* ---- a batch ---- */

/* One message of a batch. */
typedef struct item {
    rd_kafka_message_t *msg;
    ctr_event ev;
    const ctr_counter_def *def;
    ctr_apply_spec spec; /* its plan, fence and guard */
    int64_t gen;         /* a keyed api write's generation, else 0 */
    int next;            /* the next item of its lane, -1: none */
} item;

/* The items of one counter on one partition of one topic, in log order:
 * what must reach Redis one call after another. */
typedef struct lane {
    const char *name;
    const char *topic;
    int32_t partition;
    int head; /* the next item to apply, -1: done */
    int tail;
} lane;

/* One script call of a round. */
typedef struct call {
    int lane;
    int n;      /* items from the lane's head */
    int single; /* write.lua for one item; else fold.lua */
    enum { CALL_SENT, CALL_OK, CALL_RETRY, CALL_LOST, CALL_REFUSED } status;
    char **codes; /* fold.lua's, one per item */
    int rc;       /* write.lua's: ctr_apply_parse's status, res, err */
    ctr_apply_result res;
    char err[256];
    ctr_fold_args fold;
    ctr_apply_argv write;
} call;

typedef struct batch {
    item *items;
    int n;
    lane *lanes;
    int nlanes, cap_lanes;
    int *slots; /* hash of (topic, partition, name) -> lane + 1 */
    int nslots;
    call *calls;
    int ncalls;
} batch;

static uint32_t lane_hash(const char *topic, int32_t partition,
                          const char *name)
{
    uint32_t h = 2166136261u ^ (uint32_t)partition;
    for (const char *p = name; *p; p++)
        h = (h ^ (unsigned char)*p) * 16777619u;
    return h ^ (uint32_t)(unsigned char)topic[0] * 31u;
}

/* The lane of item i's counter and partition, made if new. 0 or -1. */
static int lane_add(batch *b, int i)
{
    item *it = &b->items[i];
    const char *topic = rd_kafka_topic_name(it->msg->rkt);
    uint32_t h = lane_hash(topic, it->msg->partition, it->ev.counter);
    int s = (int)(h & (uint32_t)(b->nslots - 1));
    for (; b->slots[s]; s = (s + 1) & (b->nslots - 1)) {
        lane *l = &b->lanes[b->slots[s] - 1];
        if (l->partition == it->msg->partition &&
            strcmp(l->name, it->ev.counter) == 0 &&
            strcmp(l->topic, topic) == 0) {
            b->items[l->tail].next = i;
            l->tail = i;
            if (l->head < 0)
                l->head = i;
            return 0;
        }
    }
    if (b->nlanes == b->cap_lanes)
        return -1; /* cannot happen: a lane per item at most */
    lane *l = &b->lanes[b->nlanes++];
    l->name = it->ev.counter;
    l->topic = topic;
    l->partition = it->msg->partition;
    l->head = l->tail = i;
    b->slots[s] = b->nlanes;
    return 0;
}

/* Items j and k may share one fold.lua call: the same value and dedup
 * keys, neither a keyed api write. */
static int same_run(const item *j, const item *k)
{
    return k->gen == 0 && j->gen == 0 &&
           strcmp(j->spec.key_suffix, k->spec.key_suffix) == 0 &&
           strcmp(j->spec.dedup_suffix, k->spec.dedup_suffix) == 0;
}

/* The calls of a round that went into the pipeline, in its order. */
typedef struct round {
    batch *b;
    const int *sent;
} round;

/* The reply of the round's i-th sent call (r lives only during this
 * call). */
static void on_call_reply(const redisReply *r, size_t i, void *arg)
{
    round *rd = arg;
    call *c = &rd->b->calls[rd->sent[i]];
    if (r == NULL) {
        c->status = CALL_RETRY;
        return;
    }
    if (r->type == REDIS_REPLY_ERROR && (strncmp(r->str, "NOSCRIPT", 8) == 0 ||
                                         strncmp(r->str, "LOADING", 7) == 0 ||
                                         strncmp(r->str, "BUSY", 4) == 0)) {
        c->status = CALL_RETRY; /* not run: not the events' fault */
        return;
    }
    if (c->single) {
        c->rc = ctr_apply_parse(r, &c->res, c->err, sizeof(c->err));
        c->status =
            c->rc == CTR_APPLY_OK && c->res.outcome == CTR_APPLY_NO_EPOCH
                ? CALL_LOST
                : CALL_OK;
        return;
    }
    if (r->type == REDIS_REPLY_ARRAY && r->elements >= 1 &&
        r->element[0]->type == REDIS_REPLY_STRING) {
        if (strcmp(r->element[0]->str, "epoch") == 0) {
            c->status = CALL_LOST;
            return;
        }
        if (strcmp(r->element[0]->str, "ok") == 0 &&
            r->elements == (size_t)c->n + 1) {
            c->codes = calloc((size_t)c->n, sizeof(*c->codes));
            for (int k = 0; c->codes && k < c->n; k++) {
                const redisReply *e = r->element[k + 1];
                if (e->type != REDIS_REPLY_STRING ||
                    (c->codes[k] = strndup(e->str, e->len)) == NULL)
                    break;
            }
            for (int k = 0; c->codes && k < c->n; k++)
                if (c->codes[k] == NULL) {
                    c->status = CALL_RETRY; /* out of memory: again */
                    return;
                }
            c->status = c->codes ? CALL_OK : CALL_RETRY;
            return;
        }
    }
    /* an error the script gives again (a key of the wrong type, a
     * damaged value): each event on its own, as before batches */
    snprintf(c->err, sizeof(c->err), "%s",
             r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
    c->status = CALL_REFUSED;
}

static void call_clear(call *c)
{
    for (int k = 0; c->codes && k < c->n; k++)
        free(c->codes[k]);
    free(c->codes);
    ctr_fold_args_clear(&c->fold);
    memset(c, 0, sizeof(*c));
}

/*
 * What a write.lua call decided for it (rc, res as apply_event returns
 * them): the record, the dead letter or the log line, as the applier has
 * always done for one event. A record goes without a source: the
 * persister counts it once per id, as the guard key remembers it.
 */
static void act_single(applier *a, item *it, int rc,
                       const ctr_apply_result *res, const char *err)
{
    const ctr_event *ev = &it->ev;
    int unique = it->def->kind == CTR_KIND_UNIQUE;
    if (rc == CTR_APPLY_OVERFLOW) {
        dead_letter(a, it->msg,
                    "delta: the counter would leave the int64 range");
        return;
    }
    if (rc != CTR_APPLY_OK) {
        dead_letter(a, it->msg, err);
        return;
    }
    switch (res->outcome) {
    case CTR_APPLY_APPLIED:
    case CTR_APPLY_DUPLICATE:
        if (res->outcome == CTR_APPLY_APPLIED)
            a->applied++;
        else
            a->duplicates++;
        publish_record(a, ev, unique ? 1 : res->value - res->prev, it->gen,
                       NULL);
        break;
    case CTR_APPLY_ALREADY_APPLIED:
        /* applied before a crash: its record may not have gone out */
        if (res->recorded == 'a')
            publish_record(a, ev, unique ? 1 : res->recorded_delta, it->gen,
                           NULL);
        else
            confirm_api_write(a, ev, it->def, res->record);
        break;
    case CTR_APPLY_DUPLICATE_ID:
        a->duplicates++;
        confirm_api_write(a, ev, it->def, res->record);
        break;
    case CTR_APPLY_KEY_SEEN:     /* api writes only */
    case CTR_APPLY_NO_EPOCH:     /* the caller waits for the epoch */
    case CTR_APPLY_OUT_OF_RANGE: /* returned as CTR_APPLY_OVERFLOW */
    case CTR_APPLY_SAME_EPOCH: /* not asked for */ break;
    case CTR_APPLY_BOUND_REFUSED:
        a->refused++;
        ctr_info("event %s on %s refused: it would cross a bound", ev->id,
                 ev->counter);
        break;
    }
}

/* What fold.lua decided for one event (its code: see redis/fold.lua). */
static void act_fold(applier *a, item *it, const char *code)
{
    const ctr_event *ev = &it->ev;
    int unique = it->def->kind == CTR_KIND_UNIQUE;
    int64_t d;
    switch (code[0]) {
    case 'a':
        a->applied++;
        d = strtoll(code + 1, NULL, 10);
        publish_record(a, ev, unique ? 1 : d, 0, it->msg);
        return;
    case 'u':
        a->duplicates++;
        publish_record(a, ev, 1, 0, it->msg);
        return;
    case 'r':
        a->refused++;
        ctr_info("event %s on %s refused: it would cross a bound", ev->id,
                 ev->counter);
        return;
    case 'o':
        dead_letter(a, it->msg,
                    "delta: the counter would leave the int64 range");
        return;
    case 'd': a->duplicates++; return;
    case 'g':
        a->duplicates++;
        confirm_api_write(a, ev, it->def, code + 1);
        return;
    case 'A': break;
    default:
        ctr_warn("event %s on %s: unknown outcome \"%.16s\"", ev->id,
                 ev->counter, code);
        return;
    }
    /* applied before a crash: its record may not have gone out */
    const char *c = code + 1;
    switch (c[0]) {
    case '\0': publish_record(a, ev, unique ? 1 : ev->delta, 0, it->msg); break;
    case 'a':
        publish_record(a, ev, unique ? 1 : strtoll(c + 1, NULL, 10), 0,
                       it->msg);
        break;
    case 'u': publish_record(a, ev, 1, 0, it->msg); break;
    case 'o':
        dead_letter(a, it->msg,
                    "delta: the counter would leave the int64 range");
        break;
    case 'g': confirm_api_write(a, ev, it->def, c + 1); break;
    case 'G': /* only a guard key knows: applied one by one (act_single) */
        if (c[1] == 'a')
            publish_record(a, ev, unique ? 1 : strtoll(c + 2, NULL, 10), 0,
                           NULL);
        else
            confirm_api_write(a, ev, it->def, c + 1);
        break;
    default: /* r, d: nothing was recorded */ break;
    }
}

/* Builds the next call of lane li into c; 0 or -1 (a key too long: the
 * item goes on its own, and write.lua refuses it as before). */
static int call_build(applier *a, batch *b, int li, call *c)
{
    lane *l = &b->lanes[li];
    item *first = &b->items[l->head];
    memset(c, 0, sizeof(*c));
    c->lane = li;
    c->n = 1;
    if (first->gen == 0) {
        const ctr_event *evs[CTR_FOLD_MAX];
        int64_t offs[CTR_FOLD_MAX];
        int n = 0;
        for (int k = l->head;
             k >= 0 && n < CTR_FOLD_MAX && same_run(first, &b->items[k]);
             k = b->items[k].next) {
            evs[n] = &b->items[k].ev;
            offs[n++] = b->items[k].msg->offset;
        }
        /* what the group has committed, as the broker said to the group
         * watch (asynchronously, every second): fold.lua keeps an outcome
         * only while its offset may be read again, and only the broker
         * knows which commits went through. The bare events of
         * kafka.topic keep theirs (a passing phase). */
        int64_t committed =
            topic_index(a, l->topic) == 0
                ? ctr_group_watch_applier_committed(a->groups, l->partition)
                : -1;
        ctr_fold_ctx ctx = {
            .sha = a->fold_sha,
            .now_s = ctr_time_now_ms() / 1000,
            .window_s = a->cfg->applier_dedup_window_s,
            .committed = committed,
            .log_ttl_s = a->cfg->applier_guard_ttl_s,
        };
        if (ctr_fold_args_build(&c->fold, &ctx, first->ev.counter, &first->spec,
                                evs, offs, (size_t)n) == 0) {
            c->n = n;
            return 0;
        }
    }
    c->single = 1;
    return ctr_apply_write_argv(&c->write, a->sha, first->ev.counter,
                                &first->spec);
}

/* Acts on call c's items and moves its lane on. */
static void call_done(applier *a, batch *b, call *c)
{
    lane *l = &b->lanes[c->lane];
    for (int k = 0; k < c->n && !ctr_service_stopping(); k++) {
        item *it = &b->items[l->head];
        if (c->status == CALL_REFUSED) {
            /* each on its own, as before batches (apply_event waits for
             * Redis; a stop leaves the item unapplied) */
            ctr_apply_result res;
            char err[256];
            it->spec.guard_id = it->ev.id;
            if (it->gen == 0)
                it->spec.guard_ttl_s = a->cfg->applier_guard_ttl_s;
            int rc = apply_event(a, it->ev.counter, &it->spec, &res, err,
                                 sizeof(err));
            if (rc == 1)
                return;
            act_single(a, it, rc, &res, err);
        } else if (c->single) {
            act_single(a, it, c->rc, &c->res, c->err);
        } else {
            act_fold(a, it, c->codes[k]);
        }
        l->head = it->next;
    }
}

/*
 * Applies the batch's items: rounds of at most one call per lane,
 * pipelined, until every lane is done. A call Redis did not answer (or
 * that found the data set gone) is sent again in the next round, once
 * Redis is back; its lane's later calls wait for it, so a counter's events
 * reach Redis in log order. 0, or 1 when a stop was requested first.
 */
static int apply_items(applier *a, batch *b)
{
    int backoff = 50;
    for (;;) {
        if (ctr_service_stopping())
            return 1;
        if (redis_ready(a) != 0) {
            serve_metrics(a);
            ctr_service_sleep_ms(backoff);
            backoff =
                backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
            continue;
        }
        int64_t t0 = ctr_time_mono_us();
        b->ncalls = 0;
        for (int li = 0; li < b->nlanes; li++) {
            if (b->lanes[li].head < 0)
                continue;
            call *c = &b->calls[b->ncalls++];
            if (call_build(a, b, li, c) != 0) {
                c->status = CALL_REFUSED;
                continue;
            }
            const char **argv = c->single ? c->write.argv : c->fold.argv;
            int argc = c->single ? c->write.argc : c->fold.argc;
            if (ctr_rclient_append(a->redis, argv[3], argc, argv, NULL) != 0)
                c->status = CALL_RETRY;
        }
        if (b->ncalls == 0)
            return 0;
        /* calls refused before sending are not in the pipeline: the
         * pipeline's i counts the sent ones */
        int sent[BATCH_MAX];
        int nsent = 0;
        for (int i = 0; i < b->ncalls; i++)
            if (b->calls[i].status == CALL_SENT)
                sent[nsent++] = i;
        round rd = {b, sent};
        int failed = ctr_rclient_drain(a->redis, on_call_reply, &rd) != 0;
        /* in a cluster a write must reach a replica before its record
         * goes out: a failover would lose it otherwise */
        for (int i = 0; i < b->ncalls; i++) {
            call *c = &b->calls[i];
            if (c->status != CALL_OK)
                continue;
            const char *key = c->single ? c->write.argv[3] : c->fold.argv[3];
            int waited = ctr_rclient_wait(a->redis, key, WAIT_REPLICAS_MS);
            if (waited > 0 && !a->wait_short_logged) {
                ctr_warn("redis: a write reached fewer replicas than "
                         "redis.wait_replicas within %d ms",
                         WAIT_REPLICAS_MS);
                a->wait_short_logged = 1;
            }
            if (waited < 0)
                c->status = CALL_RETRY; /* the fence makes it safe again */
        }
        int lost = 0, applied_n = 0;
        for (int i = 0; i < b->ncalls; i++) {
            call *c = &b->calls[i];
            applied_n += c->n;
            if (c->status == CALL_OK || c->status == CALL_REFUSED)
                call_done(a, b, c);
            else
                failed = 1;
            lost |= c->status == CALL_LOST;
            call_clear(c);
        }
        /* the time each event of the round waited for Redis */
        double took = (double)(ctr_time_mono_us() - t0) / 1e6;
        for (int k = 0; k < applied_n; k++)
            ctr_hist_observe(&a->apply_seconds, took);
        if (failed || lost) {
            ctr_warn("redis: %s", lost ? "the data set is gone"
                                       : ctr_rclient_errstr(a->redis));
            redis_drop(a); /* reconnecting restores a lost data set */
        } else {
            backoff = 50;
        }
    }
}

/* Decodes and plans message i of the batch; 0 when it goes to Redis, 1
 * when it is done already (an error, an applied event, a dead letter). */
static int item_prepare(applier *a, item *it)
{
    rd_kafka_message_t *msg = it->msg;
    char err[256];
    if (msg->err) {
        if (msg->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
            ctr_warn("kafka consumer: %s", rd_kafka_message_errstr(msg));
        return 1;
    }
    char origin[16];
    if (ctr_message_origin(msg, origin, sizeof(origin))) {
        a->skipped++; /* already in Redis, or our own record */
        return 1;
    }
    int legacy = topic_index(a, rd_kafka_topic_name(msg->rkt)) == 1;
    if (legacy)
        ctr_legacy_activity(a->legacy);
    if (ctr_event_decode(msg->payload, msg->len, &it->ev, err, sizeof(err)) !=
        0) {
        dead_letter(a, msg, err);
        return 1;
    }
    it->def = ctr_config_counter(a->cfg, it->ev.counter);
    if (it->def->kind == CTR_KIND_UNIQUE &&
        (it->ev.user_id == NULL || it->ev.delta != 1)) {
        dead_letter(a, msg,
                    it->ev.user_id == NULL
                        ? "user_id: required for a unique counter"
                        : "delta: must be 1 for a unique counter");
        return 1;
    }
    ctr_apply_plan(&it->spec, it->def, it->ev.ts_ms, ctr_time_now_ms(),
                   a->cfg->lateness_s, it->ev.user_id, 0, it->ev.delta);
    it->spec.fence_offset = msg->offset;
    it->spec.fence_partition = msg->partition;
    it->spec.fence_kind = legacy ? 'o' : 'i';
    /* a keyed api write the api sent around Redis: its key names it for
     * as long as the api's own keys do, in a guard key of its own */
    it->gen = message_gen(msg);
    if (it->gen > 0) {
        it->spec.guard_id = it->ev.id;
        it->spec.guard_ttl_s = a->cfg->idempotency_ttl_s;
    }
    return 0;
}

/* Stores the offsets after the batch's messages, partition by partition. */
static void store_offsets(applier *a, rd_kafka_message_t **msgs, int n)
{
    /* A list of librdkafka's own, not one on the stack: librdkafka may
     * keep a reference to the partition in an element, which only the
     * list's destroy gives back. */
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(8);
    for (int i = 0; i < n; i++) {
        if (msgs[i]->err || msgs[i]->offset < 0)
            continue; /* an error, not a message of the log */
        const char *topic = rd_kafka_topic_name(msgs[i]->rkt);
        rd_kafka_topic_partition_t *tp =
            rd_kafka_topic_partition_list_find(l, topic, msgs[i]->partition);
        if (tp == NULL)
            tp =
                rd_kafka_topic_partition_list_add(l, topic, msgs[i]->partition);
        if (msgs[i]->offset + 1 > tp->offset)
            tp->offset = msgs[i]->offset + 1;
    }
    if (l->cnt > 0)
        rd_kafka_offsets_store(a->rk, l);
    rd_kafka_topic_partition_list_destroy(l);
    a->uncommitted += (size_t)n;
}

/* Applies messages msgs[0..n), in order per partition. */
static void apply_batch(applier *a, rd_kafka_message_t **msgs, int n)
{
    batch b;
    memset(&b, 0, sizeof(b));
    b.items = calloc((size_t)n, sizeof(*b.items));
    b.lanes = calloc((size_t)n, sizeof(*b.lanes));
    b.calls = calloc((size_t)n, sizeof(*b.calls));
    b.nslots = 16;
    while (b.nslots < 2 * n)
        b.nslots *= 2;
    b.slots = calloc((size_t)b.nslots, sizeof(*b.slots));
    b.cap_lanes = n;
    if (b.items == NULL || b.lanes == NULL || b.calls == NULL ||
        b.slots == NULL) {
        ctr_error("out of memory for a batch of %d events; exiting", n);
        exit(1);
    }
    ctr_hist_observe(&a->batch_events, (double)n);
    for (int i = 0; i < n; i++) {
        item *it = &b.items[b.n];
        it->msg = msgs[i];
        it->next = -1;
        if (item_prepare(a, it) != 0) {
            ctr_event_clear(&it->ev);
            continue;
        }
        if (lane_add(&b, b.n) != 0) {
            ctr_error("batch lanes overflowed; exiting");
            exit(1);
        }
        b.n++;
    }
    int stopped = apply_items(a, &b);
    for (int i = 0; i < b.n; i++)
        ctr_event_clear(&b.items[i].ev);
    free(b.items);
    free(b.lanes);
    free(b.calls);
    free(b.slots);
    if (!stopped) /* stopping: these offsets stay unprocessed */
        store_offsets(a, msgs, n);
}

/* Was msg's partition revoked while the batch filled? */
static int revoked(const applier *a, const rd_kafka_message_t *msg)
{
    return rd_kafka_topic_partition_list_find(a->revoked_parts,
                                              rd_kafka_topic_name(msg->rkt),
                                              msg->partition) != NULL;
}

/* Takes up to BATCH_MAX messages: waits up to wait_ms for the first, then
 * takes what is there. Messages of partitions revoked meanwhile are
 * dropped (their next owner reads them). Returns how many. */
static int fill_batch(applier *a, rd_kafka_message_t **msgs, int wait_ms)
{
    int n = 0;
    a->revoked = 0;
    while (n < BATCH_MAX) {
        rd_kafka_message_t *m =
            rd_kafka_consumer_poll(a->rk, n == 0 ? wait_ms : 0);
        if (m == NULL)
            break;
        msgs[n++] = m;
    }
    if (a->revoked) {
        int k = 0;
        for (int i = 0; i < n; i++) {
            if (revoked(a, msgs[i]))
                rd_kafka_message_destroy(msgs[i]);
            else
                msgs[k++] = msgs[i];
        }
        n = k;
        rd_kafka_topic_partition_list_destroy(a->revoked_parts);
        a->revoked_parts = rd_kafka_topic_partition_list_new(4);
    }
    return n;
}

/* Prometheus text, for the metrics port. */
static void render_metrics(ctr_strbuf *b, void *arg)
{
    applier *a = arg;
    ctr_metric_help(b, "counter_applier_events_total", "counter",
                    "External events by outcome.");
    const struct {
        const char *outcome;
        uint64_t v;
    } outcomes[] = {
        {"applied", a->applied},       {"duplicate", a->duplicates},
        {"bound_refused", a->refused}, {"dead_lettered", a->invalid},
        {"skipped", a->skipped},
    };
    for (size_t i = 0; i < sizeof(outcomes) / sizeof(outcomes[0]); i++)
        ctr_strbuf_printf(b,
                          "counter_applier_events_total{outcome=\"%s\"} "
                          "%llu\n",
                          outcomes[i].outcome,
                          (unsigned long long)outcomes[i].v);
    ctr_metric_help(b, "counter_applier_redis_restores_total", "counter",
                    "Times Redis was found without its epoch and restored.");
    ctr_strbuf_printf(b, "counter_applier_redis_restores_total %llu\n",
                      (unsigned long long)a->restores);
    ctr_metric_help(b, "counter_applier_redis_up", "gauge",
                    "1 while connected to a whole Redis data set.");
    ctr_strbuf_printf(b, "counter_applier_redis_up %d\n", a->redis != NULL);
    ctr_metric_help(b, "counter_applier_apply_seconds", "histogram",
                    "How long an event waited for Redis: the round trip of "
                    "its batch's calls (with retries).");
    ctr_hist_render(b, "counter_applier_apply_seconds", "", &a->apply_seconds);
    ctr_metric_help(b, "counter_applier_batch_events", "histogram",
                    "Messages taken from Kafka at once.");
    ctr_hist_render(b, "counter_applier_batch_events", "", &a->batch_events);
    ctr_consumer_render_lag(b, a->rk, a->cfg->kafka_input_topic,
                            "counter_applier_consumer_lag");
    ctr_resolver_stats rs = {0};
    if (a->resolver)
        ctr_resolver_stats_get(a->resolver, &rs);
    ctr_metric_help(b, "counter_applier_resolved_total", "counter",
                    "Pending writes settled by the resolver: found in the "
                    "log, or published.");
    ctr_strbuf_printf(b,
                      "counter_applier_resolved_total{how=\"found\"} %llu\n"
                      "counter_applier_resolved_total{how=\"published\"} "
                      "%llu\n",
                      (unsigned long long)rs.found,
                      (unsigned long long)rs.published);
    ctr_metric_help(b, "counter_applier_tail_applied_total", "counter",
                    "Api events of a lost data set applied again after a "
                    "restore.");
    ctr_strbuf_printf(
        b, "counter_applier_tail_applied_total %llu\n",
        (unsigned long long)(a->tail ? ctr_tail_applied(a->tail) : 0));
    ctr_metric_help(b, "counter_applier_resolve_failures_total", "counter",
                    "Pending writes claimed but not settled (retried).");
    ctr_strbuf_printf(b, "counter_applier_resolve_failures_total %llu\n",
                      (unsigned long long)rs.failed);
    ctr_group_watch_render(a->groups, b);
}

/* Long on purpose: start-up read top to bottom and torn down in reverse
 * (STYLE.md 11), every step in one place, in order. */
int main(void)
{
    applier a;
    ctr_config *cfg = NULL;
    ctr_config_kv *record_kv = NULL;
    rd_kafka_message_t **msgs = NULL;
    char err[512];
    int rc = 1;

    memset(&a, 0, sizeof(a));
    cfg = ctr_service_start("counter-applier");
    if (cfg == NULL)
        return 2;
    a.cfg = cfg;

    /* Records must not be given up on quickly: an undelivered one stops
     * the applier (see commit_progress). They are produced without
     * waiting, so they may linger a little to travel in fuller batches
     * (kafka.producer.linger.ms still overrides it). */
    ctr_config record_cfg = *cfg;
    record_cfg.kafka_message_timeout_ms = RECORD_TIMEOUT_MS;
    record_kv = calloc(cfg->n_kafka_producer + 1, sizeof(*record_kv));
    if (record_kv == NULL) {
        ctr_error("out of memory");
        goto out;
    }
    record_kv[0].key = "linger.ms";
    record_kv[0].value = "5";
    if (cfg->n_kafka_producer > 0)
        memcpy(record_kv + 1, cfg->kafka_producer,
               cfg->n_kafka_producer * sizeof(*record_kv));
    record_cfg.kafka_producer = record_kv;
    record_cfg.n_kafka_producer = cfg->n_kafka_producer + 1;
    a.producer =
        ctr_producer_new(&record_cfg, NULL, on_record, err, sizeof(err));
    if (a.producer == NULL) {
        ctr_error("could not set up kafka: %s", err);
        goto out;
    }
    a.rk = ctr_consumer_new(cfg, cfg->applier_group_id, on_rebalance, on_commit,
                            &a, err, sizeof(err));
    a.revoked_parts = rd_kafka_topic_partition_list_new(4);
    if (a.rk == NULL) {
        ctr_error("%s", err);
        goto out;
    }
    a.legacy = ctr_legacy_new(cfg, a.rk);
    if (a.legacy == NULL) {
        ctr_error("out of memory");
        goto out;
    }
    const char *topics[2] = {cfg->kafka_input_topic, cfg->kafka_topic};
    if (ctr_consumer_subscribe(a.rk, topics,
                               ctr_legacy_reading(a.legacy) ? 2 : 1, err,
                               sizeof(err)) != 0) {
        ctr_error("%s", err);
        goto out;
    }
    ctr_info("applying external events of %s as group %s to redis %s%s",
             cfg->kafka_input_topic, cfg->applier_group_id,
             cfg->redis_cluster_nodes[0] ? "cluster " : "at ",
             cfg->redis_cluster_nodes[0] ? cfg->redis_cluster_nodes
                                         : cfg->redis_addr);
    ctr_hist_init(&a.apply_seconds, ctr_latency_bounds);
    ctr_hist_init(&a.batch_events, ctr_size_bounds);
    a.resolver = ctr_resolver_new(cfg);
    a.tail = ctr_tail_new(cfg);
    a.groups = ctr_group_watch_new(cfg, a.rk);
    msgs = calloc(BATCH_MAX, sizeof(*msgs));
    if (a.resolver == NULL || a.tail == NULL || a.groups == NULL ||
        msgs == NULL) {
        ctr_error("out of memory");
        goto out;
    }
    a.metrics =
        ctr_metrics_server_open(cfg->server_bind, cfg->applier_metrics_port);
    (void)redis_ready(&a);

    a.last_commit_ms = ctr_time_mono_ms();
    while (!ctr_service_stopping()) {
        int n = fill_batch(&a, msgs, 50);
        if (n > 0)
            apply_batch(&a, msgs, n);
        for (int i = 0; i < n; i++)
            rd_kafka_message_destroy(msgs[i]);
        ctr_producer_poll(a.producer, 0);
        serve_metrics(&a);
        /* idle: still watch Redis, so that a restart that lost its data
         * is restored (and the api can use it again) without waiting for
         * an event to apply */
        if (n == 0 && ctr_time_mono_ms() - a.last_redis_check_ms >=
                          REDIS_CHECK_EVERY_MS) {
            a.last_redis_check_ms = ctr_time_mono_ms();
            redis_check(&a);
        }
        if (a.redis && (ctr_resolver_step(a.resolver, a.redis, a.epoch) < 0 ||
                        ctr_tail_step(a.tail, a.redis, a.epoch) < 0))
            redis_drop(&a); /* reconnect before the next try */
        if (a.uncommitted >= COMMIT_EVERY_MSGS ||
            (a.uncommitted > 0 &&
             ctr_time_mono_ms() - a.last_commit_ms >= COMMIT_EVERY_MS))
            commit_progress(&a);
        if (ctr_legacy_step(a.legacy, commit_progress_cb, &a) == 1 &&
            ctr_consumer_subscribe(a.rk, topics, 1, err, sizeof(err)) != 0)
            ctr_warn("%s", err);
    }
    ctr_info("stopping: publishing the last records and committing");
    commit_progress(&a);
    rc = 0;
out:
    if (a.rk)
        rd_kafka_consumer_close(a.rk); /* its callbacks may use the watch */
    ctr_group_watch_free(a.groups);    /* its thread uses the consumer */
    a.groups = NULL;
    if (a.rk)
        rd_kafka_destroy(a.rk);
    ctr_producer_free(a.producer);
    free(record_kv);
    free(msgs);
    ctr_legacy_free(a.legacy);
    if (a.revoked_parts)
        rd_kafka_topic_partition_list_destroy(a.revoked_parts);
    redis_drop(&a); /* before what it tells of a new connection */
    ctr_resolver_free(a.resolver);
    ctr_tail_free(a.tail);
    ctr_metrics_server_free(a.metrics);
    ctr_info("stopped: %" PRIu64 " applied, %" PRIu64 " duplicates, %" PRIu64
             " refused by bounds, %" PRIu64 " invalid, %" PRIu64
             " already applied elsewhere",
             a.applied, a.duplicates, a.refused, a.invalid, a.skipped);
    ctr_config_free(cfg);
    return rc;
}

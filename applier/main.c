/*
 * main.c - counter-applier: applies to Redis the events that other
 * services wrote straight into Kafka (no "origin" header), exactly once,
 * with the same Lua call as the api, so they obey the counter's kind,
 * dedup, bounds and windows.
 *
 * Exactly once across crashes and rebalances: the script keeps, per
 * counter and partition, the last offset applied and refuses anything at
 * or below it; an event id seen before on that counter (a producer's
 * retry) is refused by a per-id guard that also records what the first
 * one applied.
 *
 * For each event it applies (or dedups) it publishes a record with header
 * "origin: applier" carrying the applied delta; that record is what the
 * persister counts, so PostgreSQL follows Redis's decisions (a refused
 * bound, a clamp) rather than the raw request. Kafka offsets are committed
 * only after the records are delivered; after a crash the fence recognises
 * applied events and their records are published again, which the
 * persister dedups by event id.
 *
 * Events that fail validation are copied to "<topic>.dlq".
 * Single thread: rebalance callbacks run inside rd_kafka_consumer_poll.
 */
#include "common/config.h"
#include "common/log.h"
#include "common/metrics.h"
#include "common/service.h"
#include "common/timeutil.h"
#include "ingest/apply.h"
#include "ingest/consumer.h"
#include "ingest/event.h"
#include "ingest/producer.h"
#include "ingest/restore.h"
#include "applier/group_watch.h"
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
    COMMIT_EVERY_MSGS = 2000,
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
    char sha[41], finish_sha[41];
    char epoch[CTR_EPOCH_MAX]; /* the data set's, last seen */
    int undelivered; /* records whose delivery failed since the last commit */
    size_t uncommitted;
    int64_t last_commit_ms;
    int64_t last_redis_check_ms;
    uint64_t applied, duplicates, refused, invalid, skipped;
    uint64_t restores;
    int wait_short_logged;
    ctr_histogram apply_seconds; /* the Lua call, retries included */
    ctr_resolver *resolver;      /* pending writes nobody else settles */
    ctr_tail *tail;              /* what a restore left owed */
    ctr_group_watch *groups;     /* the consumer groups' committed lag */
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
        ctr_rclient_script(a->redis, ctr_script_finish, a->finish_sha) != 0) {
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
     * which the fence and the id guard recognise. */
    rd_kafka_resp_err_t err = rd_kafka_commit(a->rk, NULL, 1);
    if (err && err != RD_KAFKA_RESP_ERR__NO_OFFSET)
        ctr_warn("could not commit offsets: %s", rd_kafka_err2str(err));
    a->uncommitted = 0;
    a->last_commit_ms = ctr_time_mono_ms();
}

static void on_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                         rd_kafka_topic_partition_list_t *parts, void *opaque)
{
    applier *a = opaque;
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        /* from the committed offsets: the fence skips what was applied
         * after them */
        for (int i = 0; i < parts->cnt; i++)
            ctr_info("assigned partition %d", (int)parts->elems[i].partition);
        ctr_consumer_assign(rk, parts);
    } else {
        /* The records of what was applied go out, and the offsets with
         * them, before the next owner starts: it then redoes little. When
         * the partitions were lost the commit is refused, and the next
         * owner's fence recognises what this member applied. */
        for (int i = 0; i < parts->cnt; i++)
            ctr_info("revoked partition %d%s", (int)parts->elems[i].partition,
                     rd_kafka_assignment_lost(rk) ? " (lost)" : "");
        commit_progress(a);
        ctr_consumer_unassign(rk, parts);
    }
}

/* Publishes the record of an applied event: what it changed, counted by
 * the persister once per (counter, event id[, generation of a key]). */
static void publish_record(applier *a, const ctr_event *ev, int64_t delta,
                           int64_t gen)
{
    ctr_event rec = *ev;
    size_t len;
    rec.delta = delta;
    char *payload = ctr_event_encode(&rec, &len);
    ctr_event_headers h = {.origin = "applier", .dedup_gen = gen};
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
                       rec.gen_ms);
}

static void handle_message(applier *a, rd_kafka_message_t *msg)
{
    ctr_event ev;
    ctr_apply_spec spec;
    ctr_apply_result res;
    char err[256];

    if (msg->err) {
        if (msg->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
            ctr_warn("kafka consumer: %s", rd_kafka_message_errstr(msg));
        return;
    }
    char origin[16];
    if (ctr_message_origin(msg, origin, sizeof(origin))) {
        a->skipped++; /* already in Redis, or our own record */
        goto done;
    }
    if (ctr_event_decode(msg->payload, msg->len, &ev, err, sizeof(err)) != 0) {
        dead_letter(a, msg, err);
        goto done;
    }
    const ctr_counter_def *def = ctr_config_counter(a->cfg, ev.counter);
    if (def->kind == CTR_KIND_UNIQUE && (ev.user_id == NULL || ev.delta != 1)) {
        dead_letter(a, msg,
                    ev.user_id == NULL
                        ? "user_id: required for a unique counter"
                        : "delta: must be 1 for a unique counter");
        ctr_event_clear(&ev);
        goto done;
    }
    ctr_apply_plan(&spec, def, ev.ts_ms, ctr_time_now_ms(), a->cfg->lateness_s,
                   ev.user_id, 0, ev.delta);
    spec.fence_offset = msg->offset;
    spec.fence_partition = msg->partition;
    spec.guard_id = ev.id;
    spec.guard_ttl_s = a->cfg->applier_guard_ttl_s;
    /* a keyed api write the api sent around Redis: its key names it for
     * as long as the api's own keys do */
    int64_t gen = message_gen(msg);
    if (gen > 0)
        spec.guard_ttl_s = a->cfg->idempotency_ttl_s;

    int64_t t0 = ctr_time_mono_us();
    int rc = apply_event(a, ev.counter, &spec, &res, err, sizeof(err));
    ctr_hist_observe(&a->apply_seconds,
                     (double)(ctr_time_mono_us() - t0) / 1e6);
    if (rc == 1) { /* stopping: leave this offset unprocessed */
        ctr_event_clear(&ev);
        return;
    }
    if (rc == CTR_APPLY_OVERFLOW) {
        dead_letter(a, msg, "delta: the counter would leave the int64 range");
    } else if (rc != CTR_APPLY_OK) {
        dead_letter(a, msg, err);
    } else {
        int unique = def->kind == CTR_KIND_UNIQUE;
        switch (res.outcome) {
        case CTR_APPLY_APPLIED:
        case CTR_APPLY_DUPLICATE:
            if (res.outcome == CTR_APPLY_APPLIED)
                a->applied++;
            else
                a->duplicates++;
            publish_record(a, &ev, unique ? 1 : res.value - res.prev, gen);
            break;
        case CTR_APPLY_ALREADY_APPLIED:
            /* applied before a crash: its record may not have gone out */
            if (res.recorded == 'a')
                publish_record(a, &ev, unique ? 1 : res.recorded_delta, gen);
            else
                confirm_api_write(a, &ev, def, res.record);
            break;
        case CTR_APPLY_DUPLICATE_ID:
            a->duplicates++;
            confirm_api_write(a, &ev, def, res.record);
            break;
        case CTR_APPLY_KEY_SEEN:     /* api writes only */
        case CTR_APPLY_NO_EPOCH:     /* apply_event waits for the epoch */
        case CTR_APPLY_OUT_OF_RANGE: /* returned as CTR_APPLY_OVERFLOW */
        case CTR_APPLY_SAME_EPOCH: /* not asked for */ break;
        case CTR_APPLY_BOUND_REFUSED:
            a->refused++;
            ctr_info("event %s on %s refused: it would cross a bound", ev.id,
                     ev.counter);
            break;
        }
    }
    ctr_event_clear(&ev);
done:;
    /* A list of librdkafka's own, not one on the stack: librdkafka may
     * keep a reference to the partition in an element, which only the
     * list's destroy gives back. */
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, rd_kafka_topic_name(msg->rkt),
                                      msg->partition)
        ->offset = msg->offset + 1;
    rd_kafka_offsets_store(a->rk, l);
    rd_kafka_topic_partition_list_destroy(l);
    a->uncommitted++;
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
                    "Redis round trip of one event (with retries).");
    ctr_hist_render(b, "counter_applier_apply_seconds", "", &a->apply_seconds);
    ctr_consumer_render_lag(b, a->rk, a->cfg->kafka_topic,
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
    char err[512];
    int rc = 1;

    memset(&a, 0, sizeof(a));
    cfg = ctr_service_start("counter-applier");
    if (cfg == NULL)
        return 2;
    a.cfg = cfg;

    /* Records must not be given up on quickly: an undelivered one stops
     * the applier (see commit_progress). */
    ctr_config record_cfg = *cfg;
    record_cfg.kafka_message_timeout_ms = RECORD_TIMEOUT_MS;
    a.producer =
        ctr_producer_new(&record_cfg, NULL, on_record, err, sizeof(err));
    if (a.producer == NULL) {
        ctr_error("could not set up kafka: %s", err);
        goto out;
    }
    a.rk = ctr_consumer_new(cfg, cfg->applier_group_id, on_rebalance, &a, err,
                            sizeof(err));
    if (a.rk == NULL) {
        ctr_error("%s", err);
        goto out;
    }
    ctr_info("applying external events of %s as group %s to redis %s%s",
             cfg->kafka_topic, cfg->applier_group_id,
             cfg->redis_cluster_nodes[0] ? "cluster " : "at ",
             cfg->redis_cluster_nodes[0] ? cfg->redis_cluster_nodes
                                         : cfg->redis_addr);
    ctr_hist_init(&a.apply_seconds, ctr_latency_bounds);
    a.resolver = ctr_resolver_new(cfg);
    a.tail = ctr_tail_new(cfg);
    a.groups = ctr_group_watch_new(cfg, a.rk);
    if (a.resolver == NULL || a.tail == NULL || a.groups == NULL) {
        ctr_error("out of memory");
        goto out;
    }
    a.metrics =
        ctr_metrics_server_open(cfg->server_bind, cfg->applier_metrics_port);
    (void)redis_ready(&a);

    a.last_commit_ms = ctr_time_mono_ms();
    while (!ctr_service_stopping()) {
        rd_kafka_message_t *msg = rd_kafka_consumer_poll(a.rk, 50);
        if (msg) {
            handle_message(&a, msg);
            rd_kafka_message_destroy(msg);
        }
        ctr_producer_poll(a.producer, 0);
        serve_metrics(&a);
        /* idle: still watch Redis, so that a restart that lost its data
         * is restored (and the api can use it again) without waiting for
         * an event to apply */
        if (msg == NULL && ctr_time_mono_ms() - a.last_redis_check_ms >=
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
    }
    ctr_info("stopping: publishing the last records and committing");
    commit_progress(&a);
    rc = 0;
out:
    ctr_group_watch_free(a.groups); /* its queue before the consumer */
    if (a.rk) {
        rd_kafka_consumer_close(a.rk);
        rd_kafka_destroy(a.rk);
    }
    ctr_producer_free(a.producer);
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

/*
 * producer.c - see producer.h.
 */
#include "ingest/producer.h"

#include "common/strbuf.h"

#include "common/jsonparse.h"
#include "common/log.h"

#include <fcntl.h>
#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct ctr_producer {
    rd_kafka_t *rk;
    rd_kafka_topic_t *rkt;       /* kafka.topic: applied events */
    rd_kafka_topic_t *rkt_input; /* kafka.input_topic: events to apply */
    rd_kafka_conf_t *conf;       /* what rk was made of: for a new one after a
                                  * fatal error (replace_if_fatal) */
    char topic[256];
    char input_topic[256];
    ctr_producer_cb cb;
    struct event *wake_ev; /* librdkafka's queue became non-empty */
    struct event *tick_ev; /* belt and braces: poll every 100 ms */
    int wake_fd[2];
    int brokers_up; /* from the last statistics: -1 unknown, 0 none, 1 some */
    int brokers_known; /* brokers of the cluster in the last statistics */
    int fatal;         /* rk raised a fatal error: it takes no message until the
                        * owner's next poll replaces it */
    char dlq_topic[256];
};

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *msg,
                        void *opaque)
{
    ctr_producer *p = opaque;
    enum ctr_delivery result = CTR_DELIVERED;
    (void)rk;

    if (msg->err) {
        rd_kafka_msg_status_t st = rd_kafka_message_status(msg);
        result = st == RD_KAFKA_MSG_STATUS_NOT_PERSISTED ? CTR_DELIVERY_FAILED
                                                         : CTR_DELIVERY_UNKNOWN;
        /* logged at debug: the caller reports it, once, with context */
        ctr_debug("kafka delivery failed (%s): %s",
                  result == CTR_DELIVERY_FAILED ? "not persisted"
                                                : "possibly persisted",
                  rd_kafka_err2str(msg->err));
    }
    p->cb(result, msg->_private);
}

static void on_error(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    ctr_producer *p = opaque;
    if (rk != p->rk)
        return; /* a handle being replaced: its last words */
    if (err == RD_KAFKA_RESP_ERR__FATAL) {
        char buf[512];
        rd_kafka_resp_err_t orig = rd_kafka_fatal_error(rk, buf, sizeof(buf));
        ctr_error("kafka producer fatal error: %s: %s; replacing the producer",
                  rd_kafka_err2name(orig), buf);
        /* Every send fails until then: counted as no broker up, so that
         * writes are refused before Redis (not applied, then undone,
         * visible to readers meanwhile) and health says so. */
        p->fatal = 1;
        return;
    }
    /* Broker-down states are transient and librdkafka retries by itself;
     * each connection failure already has its own log line. */
    if (err == RD_KAFKA_RESP_ERR__TRANSPORT)
        return;
    /*
     * Reported the moment the last connection drops, where the statistics
     * would say so only at their next tick (up to 500 ms on): a write let
     * into Redis in that window is in flight to a dead broker, answers
     * "indeterminate" and stays until the broker returns. The next
     * statistics with a broker up clear it again.
     * Only on a one-broker cluster: librdkafka 2.0.2 also counts brokers
     * it has no connection to yet as down, so in a cluster it says "all
     * down" when the one node it talked to dies while the others are up
     * (the writes then wait for the new leader); there the statistics,
     * which see every connection, decide.
     */
    if (err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN && p->brokers_up != 0 &&
        p->brokers_known <= 1) {
        if (p->brokers_up == 1)
            ctr_info("kafka brokers are unreachable");
        p->brokers_up = 0;
    }
    ctr_warn("kafka: %s: %s", rd_kafka_err2name(err), reason);
}

/*
 * librdkafka's statistics (every 500 ms, served by rd_kafka_poll on the
 * owner's thread) say whether any broker connection is up. While none is,
 * the api refuses writes at once instead of applying them to Redis and
 * undoing them when the delivery times out.
 */
static int on_stats(rd_kafka_t *rk, char *json, size_t len, void *opaque)
{
    ctr_producer *p = opaque;
    struct json_object *root = ctr_json_parse(json, len), *brokers;
    if (rk == p->rk && root &&
        json_object_object_get_ex(root, "brokers", &brokers) &&
        json_object_is_type(brokers, json_type_object)) {
        int up = 0, known = 0;
        json_object_object_foreach(brokers, name, b)
        {
            struct json_object *state, *nodeid;
            (void)name;
            if (!json_object_object_get_ex(b, "nodeid", &nodeid) ||
                json_object_get_int(nodeid) < 0)
                continue; /* a bootstrap address, not a broker of the cluster */
            known++;
            if (json_object_object_get_ex(b, "state", &state) &&
                strcmp(json_object_get_string(state), "UP") == 0)
                up = 1;
        }
        p->brokers_known = known;
        if (up != p->brokers_up && p->brokers_up != -1)
            ctr_info("kafka brokers are %s",
                     up ? "reachable again" : "unreachable");
        p->brokers_up = up;
    }
    json_object_put(root);
    return 0; /* librdkafka frees json */
}

static void on_log(const rd_kafka_t *rk, int level, const char *fac,
                   const char *buf)
{
    (void)rk;
    if (level <= 5) /* librdkafka's errors are mostly transient */
        ctr_warn("kafka: %s: %s", fac, buf);
    else
        ctr_debug("kafka: %s: %s", fac, buf);
}

/*
 * After a fatal error a handle takes no more messages (an idempotent
 * producer whose sequence numbers parted from a broker's: librdkafka 2.0.2
 * does it after some leader changes, fixed in 2.3.0). A new handle is a
 * new producer id and starts afresh. The old one's messages each get
 * their report first, as when the producer is freed: queued ones "not
 * persisted", in-flight ones "possibly persisted". Runs after a poll,
 * never inside one (the old handle is destroyed); on failure the next
 * poll tries again.
 */
static void replace_if_fatal(ctr_producer *p)
{
    char err[512];
    if (!p->fatal)
        return;
    rd_kafka_conf_t *conf = rd_kafka_conf_dup(p->conf);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
    if (rk == NULL) {
        rd_kafka_conf_destroy(conf);
        ctr_error("could not create a kafka producer: %s", err);
        return;
    }
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, p->topic, NULL);
    rd_kafka_topic_t *rkt_input = rd_kafka_topic_new(rk, p->input_topic, NULL);
    if (rkt == NULL || rkt_input == NULL) {
        ctr_error("could not create kafka topic handles %s, %s: %s", p->topic,
                  p->input_topic, rd_kafka_err2str(rd_kafka_last_error()));
        if (rkt)
            rd_kafka_topic_destroy(rkt);
        if (rkt_input)
            rd_kafka_topic_destroy(rkt_input);
        rd_kafka_destroy(rk);
        return;
    }
    rd_kafka_t *old = p->rk;
    rd_kafka_topic_t *old_rkt = p->rkt, *old_rkt_input = p->rkt_input;
    if (p->wake_fd[1] >= 0) {
        rd_kafka_queue_t *q = rd_kafka_queue_get_main(old);
        rd_kafka_queue_io_event_enable(q, -1, NULL, 0);
        rd_kafka_queue_destroy(q);
        q = rd_kafka_queue_get_main(rk);
        rd_kafka_queue_io_event_enable(q, p->wake_fd[1], "1", 1);
        rd_kafka_queue_destroy(q);
    }
    /* the new one first: a callback below may send again */
    p->rk = rk;
    p->rkt = rkt;
    p->rkt_input = rkt_input;
    p->fatal = 0;
    p->brokers_up = -1;
    rd_kafka_topic_destroy(old_rkt);
    rd_kafka_topic_destroy(old_rkt_input);
    rd_kafka_purge(old, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
    /* every report served before the handle goes (2 s at most, once) */
    for (int i = 0; i < 20 && rd_kafka_outq_len(old) > 0; i++)
        rd_kafka_poll(old, 100);
    rd_kafka_destroy(old);
    ctr_warn("kafka producer replaced after its fatal error; its events "
             "still queued were reported not persisted, those in flight "
             "possibly persisted");
}

static void on_wake(evutil_socket_t fd, short what, void *arg)
{
    char drain[64];
    ctr_producer *p = arg;
    (void)what;
    while (read(fd, drain, sizeof(drain)) > 0)
        ;
    rd_kafka_poll(p->rk, 0);
    replace_if_fatal(p);
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    ctr_producer *p = arg;
    (void)fd;
    (void)what;
    rd_kafka_poll(p->rk, 0);
    replace_if_fatal(p);
}

static int set_conf(rd_kafka_conf_t *conf, const char *k, const char *v,
                    char *errbuf, size_t errlen)
{
    char err[256];
    if (rd_kafka_conf_set(conf, k, v, err, sizeof(err)) != RD_KAFKA_CONF_OK) {
        snprintf(errbuf, errlen, "kafka producer setting %s=%s: %s", k, v, err);
        return -1;
    }
    return 0;
}

/* Long on purpose: every setting of the producer in one place, each with
 * why it has its value. */
ctr_producer *ctr_producer_new(const ctr_config *cfg, struct event_base *base,
                               ctr_producer_cb cb, char *errbuf, size_t errlen)
{
    ctr_producer *p = NULL;
    rd_kafka_conf_t *conf = NULL;
    char num[32], err[512];

    p = calloc(1, sizeof(*p));
    if (p == NULL) {
        snprintf(errbuf, errlen, "out of memory");
        goto err;
    }
    p->wake_fd[0] = p->wake_fd[1] = -1;
    p->cb = cb;
    p->brokers_up = -1;
    snprintf(p->dlq_topic, sizeof(p->dlq_topic), "%s.dlq", cfg->kafka_topic);
    snprintf(p->topic, sizeof(p->topic), "%s", cfg->kafka_topic);
    snprintf(p->input_topic, sizeof(p->input_topic), "%s",
             cfg->kafka_input_topic);

    conf = rd_kafka_conf_new();
    /*
     * The api answers a client at kafka.delivery_timeout_ms, but librdkafka
     * keeps an event it has queued for kafka.message_timeout_ms (minutes):
     * an event in flight when the broker died is resent, under the
     * idempotent producer's sequence numbers, when it comes back, so the
     * write already in Redis becomes whole instead of being undone (which
     * a reader could see as the counter going back) or, when the broker
     * may have it ("possibly persisted"), kept in Redis without its event.
     * New writes are refused before Redis while no broker is up.
     */
    snprintf(num, sizeof(num), "%d", cfg->kafka_message_timeout_ms);
    /* Defaults first, so the passthrough settings can override them. */
    if (set_conf(conf, "bootstrap.servers", cfg->kafka_brokers, errbuf,
                 errlen) ||
        set_conf(conf, "enable.idempotence", "true", errbuf, errlen) ||
        set_conf(conf, "acks", "all", errbuf, errlen) ||
        set_conf(conf, "message.timeout.ms", num, errbuf, errlen) ||
        /* A write waits for its event's ack, so latency rules, but not
         * to the point of one produce request per event: half a
         * millisecond gathers the events of a loop turn or two into one
         * request. Measured in make bench (linger 0 against 0.5, one
         * run): CPU per write over the stack 95 -> 79 us, p99 at 50
         * connections 0.58x, req/s 1.00x at 50 and 1.17x at 400; 1 ms
         * had cost one connection's p50 ~1.4 ms against 0. Small produce
         * requests are never held back for Nagle. */
        set_conf(conf, "linger.ms", "0.5", errbuf, errlen) ||
        set_conf(conf, "socket.nagle.disable", "true", errbuf, errlen) ||
        set_conf(conf, "partitioner", "murmur2_random", errbuf, errlen) ||
        set_conf(conf, "socket.connection.setup.timeout.ms", "2000", errbuf,
                 errlen) ||
        set_conf(conf, "reconnect.backoff.max.ms", "1000", errbuf, errlen) ||
        (base &&
         set_conf(conf, "statistics.interval.ms", "500", errbuf, errlen)))
        goto err;
    for (size_t i = 0; i < cfg->n_kafka_producer; i++)
        if (set_conf(conf, cfg->kafka_producer[i].key,
                     cfg->kafka_producer[i].value, errbuf, errlen))
            goto err;
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    rd_kafka_conf_set_error_cb(conf, on_error);
    if (base)
        rd_kafka_conf_set_stats_cb(conf, on_stats);
    rd_kafka_conf_set_log_cb(conf, on_log);
    rd_kafka_conf_set_opaque(conf, p);
    p->conf = rd_kafka_conf_dup(conf);

    p->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
    if (p->rk == NULL) {
        snprintf(errbuf, errlen, "could not create kafka producer: %s", err);
        goto err;
    }
    conf = NULL; /* owned by rk now */
    p->rkt = rd_kafka_topic_new(p->rk, p->topic, NULL);
    if (p->rkt == NULL) {
        snprintf(errbuf, errlen, "could not create kafka topic handle %s: %s",
                 cfg->kafka_topic, rd_kafka_err2str(rd_kafka_last_error()));
        goto err;
    }
    p->rkt_input = rd_kafka_topic_new(p->rk, p->input_topic, NULL);
    if (p->rkt_input == NULL) {
        snprintf(errbuf, errlen, "could not create kafka topic handle %s: %s",
                 cfg->kafka_input_topic,
                 rd_kafka_err2str(rd_kafka_last_error()));
        goto err;
    }

    if (base) {
        if (pipe(p->wake_fd) != 0) {
            snprintf(errbuf, errlen, "could not create pipe");
            goto err;
        }
        for (int i = 0; i < 2; i++)
            fcntl(p->wake_fd[i], F_SETFL,
                  fcntl(p->wake_fd[i], F_GETFL) | O_NONBLOCK);
        rd_kafka_queue_t *mainq = rd_kafka_queue_get_main(p->rk);
        rd_kafka_queue_io_event_enable(mainq, p->wake_fd[1], "1", 1);
        rd_kafka_queue_destroy(mainq);
        p->wake_ev =
            event_new(base, p->wake_fd[0], EV_READ | EV_PERSIST, on_wake, p);
        p->tick_ev = event_new(base, -1, EV_PERSIST, on_tick, p);
        struct timeval tick = {0, 100 * 1000};
        if (p->wake_ev == NULL || p->tick_ev == NULL ||
            event_add(p->wake_ev, NULL) || event_add(p->tick_ev, &tick)) {
            snprintf(errbuf, errlen, "could not register kafka events");
            goto err;
        }
    }
    return p;
err:
    if (conf)
        rd_kafka_conf_destroy(conf);
    ctr_producer_free(p);
    return NULL;
}

int ctr_producer_send(ctr_producer *p, const char *key, size_t keylen,
                      const char *payload, size_t len,
                      const ctr_event_headers *h, void *arg)
{
    rd_kafka_resp_err_t err;
    rd_kafka_headers_t *hdrs = NULL;
    /* an event nobody applied yet is the applier's input */
    rd_kafka_topic_t *rkt = h && h->origin ? p->rkt : p->rkt_input;

    if (h && (h->origin || h->dedup_gen > 0 || (h->epoch && h->epoch[0]) ||
              h->source_topic)) {
        hdrs = rd_kafka_headers_new(4);
        if (h->origin)
            rd_kafka_header_add(hdrs, CTR_HEADER_ORIGIN, -1, h->origin, -1);
        if (h->dedup_gen > 0) {
            char gen[24];
            ctr_i64_text(h->dedup_gen, gen);
            rd_kafka_header_add(hdrs, CTR_HEADER_DEDUP, -1, gen, -1);
        }
        if (h->epoch && h->epoch[0])
            rd_kafka_header_add(hdrs, CTR_HEADER_EPOCH, -1, h->epoch, -1);
        if (h->source_topic) {
            char src[300];
            int n =
                snprintf(src, sizeof(src), "%s:%d:%lld", h->source_topic,
                         (int)h->source_partition, (long long)h->source_offset);
            if (n > 0 && (size_t)n < sizeof(src))
                rd_kafka_header_add(hdrs, CTR_HEADER_SOURCE, -1, src, n);
        }
    }
    /* producev owns hdrs once it succeeds */
    if (hdrs)
        err = rd_kafka_producev(
            p->rk, RD_KAFKA_V_RKT(rkt),
            RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
            RD_KAFKA_V_KEY(key, keylen), RD_KAFKA_V_VALUE((void *)payload, len),
            RD_KAFKA_V_HEADERS(hdrs), RD_KAFKA_V_OPAQUE(arg), RD_KAFKA_V_END);
    else
        err = rd_kafka_producev(p->rk, RD_KAFKA_V_RKT(rkt),
                                RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                RD_KAFKA_V_KEY(key, keylen),
                                RD_KAFKA_V_VALUE((void *)payload, len),
                                RD_KAFKA_V_OPAQUE(arg), RD_KAFKA_V_END);
    if (err) {
        if (hdrs)
            rd_kafka_headers_destroy(hdrs);
        ctr_warn("could not queue kafka message: %s", rd_kafka_err2str(err));
        return -1;
    }
    return 0;
}

int ctr_producer_send_dlq(ctr_producer *p, const void *key, size_t keylen,
                          const void *payload, size_t len, const char *reason,
                          int32_t partition, int64_t offset, void *arg)
{
    char part[16], off[24];
    snprintf(part, sizeof(part), "%d", (int)partition);
    snprintf(off, sizeof(off), "%lld", (long long)offset);
    rd_kafka_resp_err_t err = rd_kafka_producev(
        p->rk, RD_KAFKA_V_TOPIC(p->dlq_topic),
        RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
        RD_KAFKA_V_KEY((void *)key, keylen),
        RD_KAFKA_V_VALUE((void *)payload, len),
        RD_KAFKA_V_HEADER("error", reason, (ssize_t)strlen(reason)),
        RD_KAFKA_V_HEADER("source_partition", part, (ssize_t)strlen(part)),
        RD_KAFKA_V_HEADER("source_offset", off, (ssize_t)strlen(off)),
        RD_KAFKA_V_OPAQUE(arg), RD_KAFKA_V_END);
    if (err) {
        ctr_warn("could not queue dead letter: %s", rd_kafka_err2str(err));
        return -1;
    }
    return 0;
}

void ctr_producer_poll(ctr_producer *p, int timeout_ms)
{
    rd_kafka_poll(p->rk, timeout_ms);
    replace_if_fatal(p);
}

int ctr_producer_flush(ctr_producer *p, int timeout_ms)
{
    rd_kafka_flush(p->rk, timeout_ms);
    replace_if_fatal(p);
    return rd_kafka_outq_len(p->rk);
}

int ctr_producer_outq_len(ctr_producer *p)
{
    return rd_kafka_outq_len(p->rk);
}

rd_kafka_t *ctr_producer_kafka(ctr_producer *p)
{
    return p->rk;
}

int ctr_producer_brokers_down(const ctr_producer *p)
{
    return p->brokers_up == 0 || p->fatal;
}

void ctr_producer_free(ctr_producer *p)
{
    if (p == NULL)
        return;
    if (p->wake_ev)
        event_free(p->wake_ev);
    if (p->tick_ev)
        event_free(p->tick_ev);
    if (p->rkt)
        rd_kafka_topic_destroy(p->rkt);
    if (p->rkt_input)
        rd_kafka_topic_destroy(p->rkt_input);
    if (p->rk) {
        /* rd_kafka_destroy fires the remaining delivery reports (as
         * failed) through a final poll; purge first so it cannot block. */
        rd_kafka_purge(p->rk,
                       RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
        rd_kafka_poll(p->rk, 0);
        rd_kafka_destroy(p->rk);
    }
    if (p->conf)
        rd_kafka_conf_destroy(p->conf);
    for (int i = 0; i < 2; i++)
        if (p->wake_fd[i] >= 0)
            close(p->wake_fd[i]);
    free(p);
}

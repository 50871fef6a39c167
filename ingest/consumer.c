/*
 * consumer.c - see consumer.h.
 */
#include "ingest/consumer.h"

#include "common/metrics.h"

#include "common/log.h"

#include <stdio.h>
#include <string.h>

static void on_kafka_log(const rd_kafka_t *rk, int level, const char *fac,
                         const char *buf)
{
    (void)rk;
    if (level <= 4)
        ctr_warn("kafka: %s: %s", fac, buf);
    else
        ctr_debug("kafka: %s: %s", fac, buf);
}

rd_kafka_t *ctr_consumer_new(const ctr_config *cfg, const char *group_id,
                             ctr_consumer_cb rebalance_cb,
                             ctr_consumer_cb commit_cb, void *opaque,
                             char *errbuf, size_t errlen)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    const char *defaults[][2] = {
        {"bootstrap.servers", cfg->kafka_brokers},
        {"group.id", group_id},
        {"enable.auto.commit", "false"},
        {"enable.auto.offset.store", "false"},
        {"auto.offset.reset", "earliest"},
        {"isolation.level", "read_committed"},
        /* Incremental rebalancing: when a member joins or leaves, only the
         * partitions that move are revoked; the others keep being consumed
         * throughout. The callbacks must then use
         * ctr_consumer_assign/unassign below. Members on the old
         * eager strategies share no protocol with these: an upgrade stops
         * every old member of a group before starting new ones. */
        {"partition.assignment.strategy", "cooperative-sticky"},
        {"reconnect.backoff.max.ms", "1000"},
        /* A crashed member's partitions wait this long for a new owner;
         * librdkafka's 45 s default would stall the group that long. */
        {"session.timeout.ms", "10000"},
        {"heartbeat.interval.ms", "2000"},
        /* Fetch in batches under load: with librdkafka's defaults (answer
         * as soon as 1 byte is there) the persister's and the applier's
         * fetches took half the broker's CPU at ~12k writes/s, and the
         * api's writes wait for that broker. The broker now answers at
         * 100 kB or after 50 ms: measured on the test stack, its CPU per
         * write fell by ~40 % and wrk's increments rose ~20 %; an event
         * reaches a consumer at most 50 ms later on a quiet topic. */
        {"fetch.min.bytes", "100000"},
        {"fetch.wait.max.ms", "50"},
    };
    char err[256];

    for (size_t i = 0; i < sizeof(defaults) / sizeof(defaults[0]); i++)
        if (rd_kafka_conf_set(conf, defaults[i][0], defaults[i][1], err,
                              sizeof(err)) != RD_KAFKA_CONF_OK)
            goto bad;
    for (size_t i = 0; i < cfg->n_kafka_consumer; i++)
        if (rd_kafka_conf_set(conf, cfg->kafka_consumer[i].key,
                              cfg->kafka_consumer[i].value, err,
                              sizeof(err)) != RD_KAFKA_CONF_OK)
            goto bad;
    rd_kafka_conf_set_rebalance_cb(conf, rebalance_cb);
    if (commit_cb)
        rd_kafka_conf_set_offset_commit_cb(conf, commit_cb);
    rd_kafka_conf_set_log_cb(conf, on_kafka_log);
    rd_kafka_conf_set_opaque(conf, opaque);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof(err));
    if (rk == NULL)
        goto bad;
    rd_kafka_poll_set_consumer(rk);
    return rk;
bad:
    snprintf(errbuf, errlen, "kafka consumer: %s", err);
    rd_kafka_conf_destroy(conf);
    return NULL;
}

int ctr_consumer_subscribe(rd_kafka_t *rk, const char *const *topics, int n,
                           char *errbuf, size_t errlen)
{
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(n);
    for (int i = 0; i < n; i++)
        rd_kafka_topic_partition_list_add(l, topics[i], RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t kerr = rd_kafka_subscribe(rk, l);
    rd_kafka_topic_partition_list_destroy(l);
    if (kerr) {
        snprintf(errbuf, errlen, "could not subscribe to %s%s: %s", topics[0],
                 n > 1 ? " and more" : "", rd_kafka_err2str(kerr));
        return -1;
    }
    return 0;
}

static int cooperative(rd_kafka_t *rk)
{
    return strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE") == 0;
}

static void report_assign_error(const char *what, rd_kafka_error_t *e,
                                rd_kafka_resp_err_t err)
{
    /* Logged only: inside the rebalance callback there is nothing better
     * to do, and librdkafka fails an (un)assign only for a misuse of the
     * protocol, which the tests would show. */
    if (e) {
        ctr_error("kafka: could not %s partitions: %s", what,
                  rd_kafka_error_string(e));
        rd_kafka_error_destroy(e);
    } else if (err) {
        ctr_error("kafka: could not %s partitions: %s", what,
                  rd_kafka_err2str(err));
    }
}

void ctr_consumer_assign(rd_kafka_t *rk, rd_kafka_topic_partition_list_t *parts)
{
    if (cooperative(rk))
        report_assign_error("assign", rd_kafka_incremental_assign(rk, parts),
                            0);
    else
        report_assign_error("assign", NULL, rd_kafka_assign(rk, parts));
}

void ctr_consumer_unassign(rd_kafka_t *rk,
                           rd_kafka_topic_partition_list_t *parts)
{
    if (cooperative(rk))
        report_assign_error("unassign",
                            rd_kafka_incremental_unassign(rk, parts), 0);
    else
        report_assign_error("unassign", NULL, rd_kafka_assign(rk, NULL));
}

int ctr_message_origin(const rd_kafka_message_t *msg, char *out, size_t len)
{
    return ctr_message_header(msg, "origin", out, len);
}

int ctr_message_header(const rd_kafka_message_t *msg, const char *name,
                       char *out, size_t len)
{
    rd_kafka_headers_t *hdrs = NULL;
    const void *val;
    size_t size;

    out[0] = '\0';
    if (rd_kafka_message_headers(msg, &hdrs) != RD_KAFKA_RESP_ERR_NO_ERROR ||
        rd_kafka_header_get_last(hdrs, name, &val, &size) !=
            RD_KAFKA_RESP_ERR_NO_ERROR)
        return 0;
    if (val != NULL && size < len) {
        memcpy(out, val, size);
        out[size] = '\0';
    }
    return 1;
}

void ctr_consumer_render_lag(ctr_strbuf *b, rd_kafka_t *rk, const char *topic,
                             const char *metric)
{
    rd_kafka_topic_partition_list_t *l = NULL;
    ctr_metric_help(b, metric, "gauge",
                    "Events in the partition after the consumer's position.");
    if (rk == NULL || rd_kafka_assignment(rk, &l) != RD_KAFKA_RESP_ERR_NO_ERROR)
        return;
    /* Positions only: nothing is asked of the group coordinator here.
     * librdkafka 2.0's offset fetch can abort the process when the
     * coordinator's connection drops while it is in flight. A partition
     * with nothing consumed since its assignment has no sample. */
    rd_kafka_position(rk, l);
    for (int i = 0; i < l->cnt; i++) {
        const rd_kafka_topic_partition_t *tp = &l->elems[i];
        int64_t lo, hi;
        /* the cached watermarks: no broker round trip */
        if (strcmp(tp->topic, topic) != 0 ||
            rd_kafka_get_watermark_offsets(rk, topic, tp->partition, &lo,
                                           &hi) != RD_KAFKA_RESP_ERR_NO_ERROR ||
            hi < 0)
            continue;
        if (tp->offset < 0)
            continue; /* not known: no sample rather than a wrong one */
        int64_t pos = tp->offset;
        ctr_strbuf_printf(b, "%s{partition=\"%d\"} %lld\n", metric,
                          (int)tp->partition,
                          (long long)(hi > pos ? hi - pos : 0));
    }
    rd_kafka_topic_partition_list_destroy(l);
}

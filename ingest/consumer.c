/*
 * consumer.c - see consumer.h.
 */
#include "ingest/consumer.h"

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

rd_kafka_t *ctr_consumer_new(
    const ctr_config *cfg, const char *group_id,
    void (*rebalance_cb)(rd_kafka_t *, rd_kafka_resp_err_t,
                         rd_kafka_topic_partition_list_t *, void *),
    void *opaque, char *errbuf, size_t errlen)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    const char *defaults[][2] = {
        {"bootstrap.servers", cfg->kafka_brokers},
        {"group.id", group_id},
        {"enable.auto.commit", "false"},
        {"enable.auto.offset.store", "false"},
        {"auto.offset.reset", "earliest"},
        {"isolation.level", "read_committed"},
        {"partition.assignment.strategy", "range,roundrobin"},
        {"reconnect.backoff.max.ms", "1000"},
        /* A crashed member's partitions wait this long for a new owner;
         * librdkafka's 45 s default would stall the group that long. */
        {"session.timeout.ms", "10000"},
        {"heartbeat.interval.ms", "2000"},
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

/*
 * topic.c - see topic.h.
 */
#include "ctl/topic.h"

#include "common/timeutil.h"

#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

/* Leaders known for every partition of the topic? Returns the partition
 * count or -1; *replicas: the fewest replicas a partition has. */
static int partitions_ready(rd_kafka_t *rk, const char *topic, int *replicas)
{
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
    int n = -1;
    if (rd_kafka_metadata(rk, 0, rkt, &md, 2000) ==
            RD_KAFKA_RESP_ERR_NO_ERROR &&
        md->topic_cnt == 1 && md->topics[0].err == 0) {
        n = md->topics[0].partition_cnt;
        *replicas = 0;
        for (int i = 0; i < md->topics[0].partition_cnt; i++) {
            const rd_kafka_metadata_partition_t *mp =
                &md->topics[0].partitions[i];
            if (mp->leader < 0)
                n = -1;
            if (i == 0 || mp->replica_cnt < *replicas)
                *replicas = mp->replica_cnt;
        }
    }
    if (md)
        rd_kafka_metadata_destroy(md);
    rd_kafka_topic_destroy(rkt);
    return n;
}

/* The brokers of the cluster, or -1 (no answer: *err says why). */
static int broker_count(rd_kafka_t *rk, int timeout_ms,
                        rd_kafka_resp_err_t *err)
{
    const struct rd_kafka_metadata *md = NULL;
    *err = rd_kafka_metadata(rk, 0, NULL, &md, timeout_ms);
    if (*err != RD_KAFKA_RESP_ERR_NO_ERROR)
        return -1;
    int n = md->broker_cnt;
    rd_kafka_metadata_destroy(md);
    return n;
}

static int is_unreachable(rd_kafka_resp_err_t err)
{
    return err == RD_KAFKA_RESP_ERR__TIMED_OUT ||
           err == RD_KAFKA_RESP_ERR__TRANSPORT ||
           err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN ||
           err == RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT;
}

/* Creates one topic if missing and waits for its leaders. 0, -1, or
 * CTL_TOPIC_UNREACHABLE. */
static int create_one(rd_kafka_t *rk, const ctr_config *cfg, const char *topic,
                      int timeout_ms)
{
    char err[512], min_isr[16];
    rd_kafka_queue_t *q = NULL;
    rd_kafka_AdminOptions_t *opts = NULL;
    rd_kafka_NewTopic_t *nt = NULL;
    rd_kafka_event_t *ev = NULL;
    int rc = -1, partitions = cfg->kafka_partitions;

    nt = rd_kafka_NewTopic_new(topic, partitions, cfg->kafka_replication_factor,
                               err, sizeof(err));
    if (nt == NULL) {
        fprintf(stderr, "counterctl: topic %s: %s\n", topic, err);
        goto out;
    }
    /* acks=all then waits for this many replicas, and a partition with
     * fewer in sync refuses writes instead of taking them on one disk */
    snprintf(min_isr, sizeof(min_isr), "%d", cfg->kafka_min_insync_replicas);
    if (rd_kafka_NewTopic_set_config(nt, "min.insync.replicas", min_isr)) {
        fprintf(stderr,
                "counterctl: topic %s: could not set min.insync.replicas\n",
                topic);
        goto out;
    }
    q = rd_kafka_queue_new(rk);
    opts = rd_kafka_AdminOptions_new(rk, RD_KAFKA_ADMIN_OP_CREATETOPICS);
    rd_kafka_AdminOptions_set_request_timeout(opts, timeout_ms, err,
                                              sizeof(err));
    rd_kafka_AdminOptions_set_operation_timeout(opts, timeout_ms, err,
                                                sizeof(err));
    rd_kafka_CreateTopics(rk, &nt, 1, opts, q);
    ev = rd_kafka_queue_poll(q, timeout_ms + 2000);
    if (ev == NULL) {
        fprintf(stderr, "counterctl: no answer from kafka within %d ms\n",
                timeout_ms);
        rc = CTL_TOPIC_UNREACHABLE;
        goto out;
    }
    if (rd_kafka_event_error(ev)) {
        fprintf(stderr, "counterctl: could not create topic %s: %s\n", topic,
                rd_kafka_event_error_string(ev));
        if (is_unreachable(rd_kafka_event_error(ev)))
            rc = CTL_TOPIC_UNREACHABLE;
        goto out;
    }
    size_t cnt = 0;
    const rd_kafka_topic_result_t **res = rd_kafka_CreateTopics_result_topics(
        rd_kafka_event_CreateTopics_result(ev), &cnt);
    rd_kafka_resp_err_t terr =
        cnt ? rd_kafka_topic_result_error(res[0]) : RD_KAFKA_RESP_ERR_UNKNOWN;
    if (terr == RD_KAFKA_RESP_ERR_NO_ERROR)
        printf("created topic %s with %d partitions, replication factor %d, "
               "min.insync.replicas %d\n",
               topic, partitions, cfg->kafka_replication_factor,
               cfg->kafka_min_insync_replicas);
    else if (terr != RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS) {
        fprintf(stderr, "counterctl: could not create topic %s: %s\n", topic,
                cnt ? rd_kafka_topic_result_error_string(res[0]) : "no result");
        if (is_unreachable(terr))
            rc = CTL_TOPIC_UNREACHABLE;
        goto out;
    }

    int64_t deadline = ctr_time_mono_ms() + timeout_ms;
    int n, replicas = 0;
    while ((n = partitions_ready(rk, topic, &replicas)) < 0 &&
           ctr_time_mono_ms() < deadline) {
        struct timespec ts = {0, 200 * 1000000L};
        nanosleep(&ts, NULL);
    }
    if (n < 0) {
        fprintf(stderr, "counterctl: topic %s has no leaders after %d ms\n",
                topic, timeout_ms);
        goto out;
    }
    if (n != partitions)
        fprintf(stderr,
                "counterctl: note: topic %s has %d partitions, config says "
                "%d\n",
                topic, n, partitions);
    if (replicas != cfg->kafka_replication_factor)
        fprintf(stderr,
                "counterctl: note: topic %s has %d replicas per partition, "
                "config says %d (kafka-reassign-partitions changes it)\n",
                topic, replicas, cfg->kafka_replication_factor);
    printf("topic %s ready (%d partitions, %d replicas)\n", topic, n, replicas);
    rc = 0;
out:
    if (ev)
        rd_kafka_event_destroy(ev);
    if (opts)
        rd_kafka_AdminOptions_destroy(opts);
    if (nt)
        rd_kafka_NewTopic_destroy(nt);
    if (q)
        rd_kafka_queue_destroy(q);
    return rc;
}

int ctl_topic_create(const ctr_config *cfg, int timeout_ms)
{
    char err[512], dlq[300];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();

    if (rd_kafka_conf_set(conf, "bootstrap.servers", cfg->kafka_brokers, err,
                          sizeof(err)) != RD_KAFKA_CONF_OK) {
        fprintf(stderr, "counterctl: kafka.brokers: %s\n", err);
        rd_kafka_conf_destroy(conf);
        return -1;
    }
    rd_kafka_conf_set(conf, "log_level", "3", err, sizeof(err));
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
    if (rk == NULL) {
        fprintf(stderr, "counterctl: could not create kafka client: %s\n", err);
        rd_kafka_conf_destroy(conf);
        return -1;
    }
    /* A replica per broker at most: Kafka would refuse the topic anyway,
     * and a cluster smaller than the config says is worth its own line. */
    rd_kafka_resp_err_t merr;
    int rc = -1, brokers = broker_count(rk, timeout_ms, &merr);
    if (brokers < 0) {
        fprintf(stderr,
                "counterctl: could not read kafka's metadata at %s: %s\n",
                cfg->kafka_brokers, rd_kafka_err2str(merr));
        rc = is_unreachable(merr) ? CTL_TOPIC_UNREACHABLE : -1;
    } else if (brokers < cfg->kafka_replication_factor) {
        fprintf(stderr,
                "counterctl: kafka.replication_factor is %d but the cluster "
                "at %s has %d broker%s; refusing to create topics\n",
                cfg->kafka_replication_factor, cfg->kafka_brokers, brokers,
                brokers == 1 ? "" : "s");
    } else {
        /* the applied events, the events to apply, and the dead letters
         * of events that failed validation */
        snprintf(dlq, sizeof(dlq), "%s.dlq", cfg->kafka_topic);
        rc = create_one(rk, cfg, cfg->kafka_topic, timeout_ms);
        if (rc == 0)
            rc = create_one(rk, cfg, cfg->kafka_input_topic, timeout_ms);
        if (rc == 0)
            rc = create_one(rk, cfg, dlq, timeout_ms);
    }
    rd_kafka_destroy(rk);
    return rc;
}

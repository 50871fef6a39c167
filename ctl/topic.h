/*
 * topic.h - creates the event topics with the configured partition count
 * and replication (topics are never auto-created), and waits until they
 * are usable.
 */
#ifndef COUNTER_CTL_TOPIC_H
#define COUNTER_CTL_TOPIC_H

#include "common/config.h"

enum { CTL_TOPIC_UNREACHABLE = -2 };

/* Creates cfg's topic, its input topic (kafka.input_topic) and the
 * dead-letter topic "<topic>.dlq" if missing, with kafka.partitions
 * partitions, kafka.replication_factor replicas and min.insync.replicas
 * kafka.min_insync_replicas; refuses (-1) when the cluster has fewer
 * brokers than the replication factor. Returns 0 (created or already
 * there, leaders known), -1, or CTL_TOPIC_UNREACHABLE when Kafka did not
 * answer in time, with the reason printed. */
int ctl_topic_create(const ctr_config *cfg, int timeout_ms);

#endif

/*
 * topic.h - creates the event topics with the configured partition count
 * (topics are never auto-created), and waits until it is usable.
 */
#ifndef COUNTER_CTL_TOPIC_H
#define COUNTER_CTL_TOPIC_H

#include "common/config.h"

enum { CTL_TOPIC_UNREACHABLE = -2 };

/* Creates cfg's topic, its input topic (kafka.input_topic) and the
 * dead-letter topic "<topic>.dlq" if missing.
 * Returns 0 (created or already there, leaders known), -1, or
 * CTL_TOPIC_UNREACHABLE when Kafka did not answer in time, with the
 * reason printed. */
int ctl_topic_create(const ctr_config *cfg, int timeout_ms);

#endif

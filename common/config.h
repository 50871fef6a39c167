/*
 * config.h - every setting of every process, declared once.
 *
 * Load order: built-in defaults, then the YAML file (COUNTER_CONFIG, else
 * ./config.yaml if present), then COUNTER_<KEY_PATH> environment variables
 * (COUNTER_SERVER_PORT=8081 overrides server.port). The result is validated
 * as a whole; any problem is reported as one line naming the key.
 *
 * Keys under kafka.producer.* and kafka.consumer.* pass through to
 * librdkafka unchanged (for example kafka.producer.linger.ms: 1).
 */
#ifndef COUNTER_COMMON_CONFIG_H
#define COUNTER_COMMON_CONFIG_H

#include "common/counterdef.h"

#include <stddef.h>
#include <stdint.h>

/* postgres.hosts: at most this many servers, and this many characters
 * with the final NUL (so that libpq's host and port lists built from it
 * fit common/pgconn.h's buffers). */
enum { CTR_PG_HOSTS_MAX = 8, CTR_PG_HOSTS_LEN = 512 };

typedef struct ctr_config_kv {
    char *key;
    char *value;
} ctr_config_kv;

/*
 * One entry of `auth.tokens` as written (checked by counter-api, which is
 * the only user). The token is a secret: never log it.
 */
typedef struct ctr_config_token {
    char *token;
    char *access; /* "read" or "write" */
    size_t line;  /* in the config file, for error messages */
} ctr_config_token;

/* Plain data, read-only after ctr_config_load(); owned by the loader. */
typedef struct ctr_config {
    char *server_bind;
    int server_port;
    int server_max_body_bytes;
    int server_max_batch_body_bytes; /* POST /api/v1/counters/batch */
    int server_timeout_s;
    /* limits of counter-api (issue 5) */
    int server_max_header_bytes; /* request line plus headers */
    int server_max_connections;  /* open at once; past it, stop accepting */
    int server_max_inflight;     /* requests at work; past it, 503 */

    /* bearer tokens of counter-api; none configured: auth is off */
    char *auth_tokens_file;        /* "ACCESS TOKEN" lines, or "" */
    ctr_config_token *auth_tokens; /* the `auth.tokens` list, n_auth_tokens */
    size_t n_auth_tokens;

    char *redis_addr; /* host:port */
    char *redis_password;
    int redis_db;
    char *redis_cluster_nodes;  /* host:port,...: Redis Cluster seeds */
    int redis_wait_replicas;    /* cluster: WAIT for this many after writes */
    int redis_timeout_ms;       /* reads: past this, fall back to PostgreSQL */
    int redis_write_timeout_ms; /* writes: past this, answer "indeterminate" */

    char *postgres_host;
    int postgres_port;
    char *postgres_user;
    char *postgres_password;
    char *postgres_dbname;
    int postgres_timeout_ms;
    /* host:port,... (libpq multi-host, tried in order); "" = host and
     * port above. Which server is taken is libpq's choice by
     * target_session_attrs: the primary for the persister, counterctl
     * and the applier's restores; the api's reads may take a standby. */
    char *postgres_hosts;
    char *postgres_target_session_attrs;
    char *postgres_read_session_attrs;

    char *kafka_brokers;
    char *kafka_topic;       /* applied events: the api's, the applier's */
    char *kafka_input_topic; /* events to apply: external producers', the
                              * api's while Redis is away */
    int kafka_partitions;
    /* what counterctl create-topic gives new topics: replicas of each
     * partition, and how many must have a write before it is acknowledged
     * (acks=all) */
    int kafka_replication_factor;
    int kafka_min_insync_replicas;
    int kafka_delivery_timeout_ms; /* the api answers a write by then */
    int kafka_message_timeout_ms;  /* librdkafka keeps trying this long */
    ctr_config_kv *kafka_producer; /* passthrough, n_kafka_producer entries */
    size_t n_kafka_producer;
    ctr_config_kv *kafka_consumer;
    size_t n_kafka_consumer;

    int persister_batch_size;
    int persister_batch_ms;
    char *persister_group_id;
    int persister_metrics_port; /* Prometheus text on server.bind; 0: off */
    int persister_fluctuation_window_ms; /* see persister/fluctuation.h */
    int persister_fluctuation_warmup;    /* windows before judging */

    char *applier_group_id;
    int applier_metrics_port;
    /* how long a guard key is kept: a keyed write's, a restore's, or an
     * event applied one by one (applier/main.c) */
    int applier_guard_ttl_s;
    /* an external event id seen again within this counts once */
    int applier_dedup_window_s;
    /* the bare events of kafka.topic (before kafka.input_topic) are read
     * until none came for this long (applier/legacy.h) */
    int applier_legacy_quiet_s;
    /* the resolver of pending writes (applier/resolver.h): how often it
     * looks, and how old an entry must be (0 in the file: derived from
     * kafka.message_timeout_ms, see validate) */
    int applier_resolve_every_ms;
    int applier_resolve_after_ms;
    int idempotency_ttl_s; /* how long the api remembers an
                            * Idempotency-Key and its answer */

    char *log_level;

    /*
     * Table-wide retention of the partitioned history tables, in days
     * (0: keep forever), applied by `counterctl partitions`, which drops
     * the monthly partitions wholly older than it: counter_daily,
     * counter_buckets, counter_unique_users with counter_hll.
     */
    int retention_history_days;
    int retention_buckets_days;
    int retention_unique_days;

    char *timezone;            /* default IANA zone of counters */
    int lateness_s;            /* how old an event's own timestamp may be */
    ctr_counter_def *counters; /* the `counters:` section, n_counters */
    size_t n_counters;
    ctr_counter_def default_counter; /* for names nothing matches */

    char *source_path; /* file that was read, or "" for defaults only */
} ctr_config;

/*
 * Loads the configuration. path NULL means COUNTER_CONFIG, else
 * ./config.yaml if it exists, else defaults only. Returns a new config the
 * caller frees with ctr_config_free(), or NULL with a one-line reason in
 * errbuf. Main thread, at startup.
 */
ctr_config *ctr_config_load(const char *path, char *errbuf, size_t errlen)
    __attribute__((warn_unused_result));

void ctr_config_free(ctr_config *cfg);

/* The definition that applies to counter `name` (never NULL). */
const ctr_counter_def *ctr_config_counter(const ctr_config *cfg,
                                          const char *name);

/*
 * Splits "host:port" (IPv6 as "[::1]:6379"). Returns 0, or -1 if malformed.
 * host receives at most hostlen-1 characters.
 */
int ctr_config_split_addr(const char *addr, char *host, size_t hostlen,
                          int *port) __attribute__((warn_unused_result));

/*
 * The next "host:port" of a list separated by commas or spaces, from *pos
 * (advanced past it): 1 with host and port, 0 at the end, -1 if the entry
 * is malformed.
 */
int ctr_config_addr_next(const char *list, size_t *pos, char *host,
                         size_t hostlen, int *port)
    __attribute__((warn_unused_result));

#endif

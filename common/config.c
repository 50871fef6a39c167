/*
 * config.c - see config.h. The table below is the single declaration of
 * every setting: its key, type, default and bounds.
 */
#include "common/config.h"
#include "common/log.h"

#include <ctype.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

enum opt_type { OPT_STR, OPT_INT };

typedef struct opt_def {
    const char *key;
    enum opt_type type;
    size_t offset;
    const char *defval;
    long long min, max; /* OPT_INT bounds; OPT_STR: min 1 = must be set */
} opt_def;

#define O(field) offsetof(ctr_config, field)
static const opt_def options[] = {
    {"server.bind", OPT_STR, O(server_bind), "0.0.0.0", 1, 0},
    {"server.port", OPT_INT, O(server_port), "8080", 1, 65535},
    {"server.max_body_bytes", OPT_INT, O(server_max_body_bytes), "16384", 64,
     16 * 1024 * 1024},
    {"server.timeout_s", OPT_INT, O(server_timeout_s), "10", 1, 3600},
    {"redis.addr", OPT_STR, O(redis_addr), "127.0.0.1:6380", 1, 0},
    {"redis.password", OPT_STR, O(redis_password), "", 0, 0},
    {"redis.db", OPT_INT, O(redis_db), "0", 0, 15},
    {"redis.timeout_ms", OPT_INT, O(redis_timeout_ms), "50", 1, 60000},
    {"redis.write_timeout_ms", OPT_INT, O(redis_write_timeout_ms), "1000", 1,
     60000},
    {"postgres.host", OPT_STR, O(postgres_host), "127.0.0.1", 1, 0},
    {"postgres.port", OPT_INT, O(postgres_port), "5433", 1, 65535},
    {"postgres.user", OPT_STR, O(postgres_user), "counter", 1, 0},
    {"postgres.password", OPT_STR, O(postgres_password), "", 0, 0},
    {"postgres.dbname", OPT_STR, O(postgres_dbname), "counter", 1, 0},
    {"postgres.timeout_ms", OPT_INT, O(postgres_timeout_ms), "2000", 1, 600000},
    {"kafka.brokers", OPT_STR, O(kafka_brokers), "127.0.0.1:9092", 1, 0},
    {"kafka.topic", OPT_STR, O(kafka_topic), "counter-events", 1, 0},
    {"kafka.partitions", OPT_INT, O(kafka_partitions), "4", 1, 10000},
    {"kafka.delivery_timeout_ms", OPT_INT, O(kafka_delivery_timeout_ms), "2000",
     10, 600000},
    {"persister.batch_size", OPT_INT, O(persister_batch_size), "5000", 1,
     1000000},
    {"persister.batch_ms", OPT_INT, O(persister_batch_ms), "50", 1, 60000},
    {"persister.group_id", OPT_STR, O(persister_group_id), "counter-persister",
     1, 0},
    {"log.level", OPT_STR, O(log_level), "info", 1, 0},
};
#undef O
#define N_OPTIONS (sizeof(options) / sizeof(options[0]))

static const char *const passthrough_prefix[2] = {"kafka.producer.",
                                                  "kafka.consumer."};

static char **str_field(ctr_config *cfg, const opt_def *o)
{
    return (char **)((char *)cfg + o->offset);
}

static int *int_field(ctr_config *cfg, const opt_def *o)
{
    return (int *)((char *)cfg + o->offset);
}

static int kv_append(ctr_config_kv **arr, size_t *n, const char *key,
                     const char *value)
{
    ctr_config_kv *grown = realloc(*arr, (*n + 1) * sizeof(**arr));
    if (grown == NULL)
        return -1;
    *arr = grown;
    grown[*n].key = strdup(key);
    grown[*n].value = strdup(value);
    if (grown[*n].key == NULL || grown[*n].value == NULL) {
        free(grown[*n].key);
        free(grown[*n].value);
        return -1;
    }
    (*n)++;
    return 0;
}

/* Sets one option from text; "source" names where it came from. */
static int set_option(ctr_config *cfg, const opt_def *o, const char *value,
                      const char *source, char *errbuf, size_t errlen)
{
    if (o->type == OPT_STR) {
        char **f = str_field(cfg, o);
        char *copy = strdup(value);
        if (copy == NULL) {
            snprintf(errbuf, errlen, "config: %s: out of memory", o->key);
            return -1;
        }
        free(*f);
        *f = copy;
        return 0;
    }
    char *end = NULL;
    errno = 0;
    long long v = strtoll(value, &end, 10);
    if (errno != 0 || end == value || *end != '\0' || v < o->min ||
        v > o->max) {
        snprintf(errbuf, errlen,
                 "config: %s (from %s): must be an integer from %lld to "
                 "%lld, got \"%.64s\"",
                 o->key, source, o->min, o->max, value);
        return -1;
    }
    *int_field(cfg, o) = (int)v;
    return 0;
}

static int apply_pair(ctr_config *cfg, const char *key, const char *value,
                      const char *source, char *errbuf, size_t errlen)
{
    for (size_t i = 0; i < N_OPTIONS; i++)
        if (strcmp(options[i].key, key) == 0)
            return set_option(cfg, &options[i], value, source, errbuf, errlen);
    for (int k = 0; k < 2; k++) {
        size_t plen = strlen(passthrough_prefix[k]);
        if (strncmp(key, passthrough_prefix[k], plen) == 0 && key[plen]) {
            int rc = k == 0
                         ? kv_append(&cfg->kafka_producer,
                                     &cfg->n_kafka_producer, key + plen, value)
                         : kv_append(&cfg->kafka_consumer,
                                     &cfg->n_kafka_consumer, key + plen, value);
            if (rc != 0)
                snprintf(errbuf, errlen, "config: %s: out of memory", key);
            return rc;
        }
    }
    snprintf(errbuf, errlen, "config: unknown key \"%s\" in %s", key, source);
    return -1;
}

/*
 * Walks the YAML document, joining nested mapping keys with '.', and applies
 * every scalar leaf. Sequences are refused: no setting takes a list yet.
 */
static int load_yaml(ctr_config *cfg, const char *path, char *errbuf,
                     size_t errlen)
{
    FILE *fp = NULL;
    yaml_parser_t parser;
    yaml_event_t ev;
    bool parser_ready = false;
    char keypath[512] = "";
    size_t depth_len[32];
    int depth = 0;
    bool expect_key = false; /* inside a mapping, next scalar is a key */
    bool have_key = false;
    int rc = -1;

    fp = fopen(path, "r");
    if (fp == NULL) {
        snprintf(errbuf, errlen, "config: could not open \"%s\": %s", path,
                 strerror(errno));
        goto out;
    }
    if (!yaml_parser_initialize(&parser)) {
        snprintf(errbuf, errlen, "config: could not initialize yaml parser");
        goto out;
    }
    parser_ready = true;
    yaml_parser_set_input_file(&parser, fp);

    for (;;) {
        if (!yaml_parser_parse(&parser, &ev)) {
            snprintf(errbuf, errlen, "config: %s:%zu: %s", path,
                     parser.problem_mark.line + 1,
                     parser.problem ? parser.problem : "parse error");
            goto out;
        }
        yaml_event_type_t type = ev.type;
        if (type == YAML_STREAM_END_EVENT) {
            yaml_event_delete(&ev);
            break;
        }
        switch (type) {
        case YAML_MAPPING_START_EVENT:
            if (depth >= 31) {
                snprintf(errbuf, errlen, "config: %s: nested too deeply", path);
                yaml_event_delete(&ev);
                goto out;
            }
            depth_len[depth++] = strlen(keypath);
            expect_key = true;
            have_key = false;
            break;
        case YAML_MAPPING_END_EVENT:
            depth--;
            if (depth > 0) {
                /* drop the key that named this mapping */
                size_t parent = depth_len[depth - 1];
                keypath[parent] = '\0';
            } else {
                keypath[0] = '\0';
            }
            expect_key = true;
            have_key = false;
            break;
        case YAML_SEQUENCE_START_EVENT:
            snprintf(errbuf, errlen, "config: %s: lists are not supported",
                     keypath[0] ? keypath : path);
            yaml_event_delete(&ev);
            goto out;
        case YAML_SCALAR_EVENT: {
            const char *text = (const char *)ev.data.scalar.value;
            if (depth == 0)
                break; /* a bare scalar document: nothing to set */
            if (expect_key && !have_key) {
                size_t base = depth_len[depth - 1];
                int n = snprintf(keypath + base, sizeof(keypath) - base, "%s%s",
                                 base ? "." : "", text);
                if (n < 0 || (size_t)n >= sizeof(keypath) - base) {
                    snprintf(errbuf, errlen, "config: key too long");
                    yaml_event_delete(&ev);
                    goto out;
                }
                have_key = true;
            } else {
                char source[600];
                snprintf(source, sizeof(source), "%s line %zu", path,
                         ev.start_mark.line + 1);
                if (apply_pair(cfg, keypath, text, source, errbuf, errlen)) {
                    yaml_event_delete(&ev);
                    goto out;
                }
                keypath[depth_len[depth - 1]] = '\0';
                have_key = false;
            }
            break;
        }
        default: break;
        }
        /* a mapping value that was itself a mapping: its key is consumed */
        if (type == YAML_MAPPING_END_EVENT && depth > 0)
            have_key = false;
        yaml_event_delete(&ev);
    }
    rc = 0;
out:
    if (parser_ready)
        yaml_parser_delete(&parser);
    if (fp)
        fclose(fp);
    return rc;
}

/* "server.max_body_bytes" -> "COUNTER_SERVER_MAX_BODY_BYTES" */
static void env_name(const char *key, char *buf, size_t len)
{
    size_t pos = (size_t)snprintf(buf, len, "COUNTER_");
    for (const char *p = key; *p && pos + 1 < len; p++)
        buf[pos++] = *p == '.' ? '_' : (char)toupper((unsigned char)*p);
    buf[pos] = '\0';
}

static int validate(ctr_config *cfg, char *errbuf, size_t errlen)
{
    char host[256];
    int port;

    for (size_t i = 0; i < N_OPTIONS; i++) {
        const opt_def *o = &options[i];
        if (o->type == OPT_STR && o->min == 1 && (*str_field(cfg, o))[0] == 0) {
            snprintf(errbuf, errlen, "config: %s: must not be empty", o->key);
            return -1;
        }
    }
    if (ctr_config_split_addr(cfg->redis_addr, host, sizeof(host), &port)) {
        snprintf(errbuf, errlen,
                 "config: redis.addr: expected host:port, got \"%.128s\"",
                 cfg->redis_addr);
        return -1;
    }
    if (ctr_log_level_parse(cfg->log_level) < 0) {
        snprintf(errbuf, errlen,
                 "config: log.level: expected debug, info, warning or error, "
                 "got \"%.32s\"",
                 cfg->log_level);
        return -1;
    }
    return 0;
}

ctr_config *ctr_config_load(const char *path, char *errbuf, size_t errlen)
{
    ctr_config *cfg = calloc(1, sizeof(*cfg));
    if (cfg == NULL) {
        snprintf(errbuf, errlen, "config: out of memory");
        return NULL;
    }
    for (size_t i = 0; i < N_OPTIONS; i++)
        if (set_option(cfg, &options[i], options[i].defval, "defaults", errbuf,
                       errlen))
            goto err;

    if (path == NULL)
        path = getenv("COUNTER_CONFIG");
    if (path == NULL) {
        FILE *probe = fopen("config.yaml", "r");
        if (probe) {
            fclose(probe);
            path = "config.yaml";
        }
    }
    cfg->source_path = strdup(path ? path : "");
    if (cfg->source_path == NULL)
        goto err;
    if (path && load_yaml(cfg, path, errbuf, errlen))
        goto err;

    for (size_t i = 0; i < N_OPTIONS; i++) {
        char name[128];
        env_name(options[i].key, name, sizeof(name));
        const char *v = getenv(name);
        if (v && set_option(cfg, &options[i], v, name, errbuf, errlen))
            goto err;
    }
    if (validate(cfg, errbuf, errlen))
        goto err;
    return cfg;
err:
    ctr_config_free(cfg);
    return NULL;
}

void ctr_config_free(ctr_config *cfg)
{
    if (cfg == NULL)
        return;
    for (size_t i = 0; i < N_OPTIONS; i++)
        if (options[i].type == OPT_STR)
            free(*str_field(cfg, &options[i]));
    for (size_t i = 0; i < cfg->n_kafka_producer; i++) {
        free(cfg->kafka_producer[i].key);
        free(cfg->kafka_producer[i].value);
    }
    for (size_t i = 0; i < cfg->n_kafka_consumer; i++) {
        free(cfg->kafka_consumer[i].key);
        free(cfg->kafka_consumer[i].value);
    }
    free(cfg->kafka_producer);
    free(cfg->kafka_consumer);
    free(cfg->source_path);
    free(cfg);
}

int ctr_config_split_addr(const char *addr, char *host, size_t hostlen,
                          int *port)
{
    const char *colon, *hbeg = addr, *hend;

    if (addr == NULL || hostlen == 0)
        return -1;
    if (addr[0] == '[') {
        hend = strchr(addr, ']');
        if (hend == NULL || hend[1] != ':')
            return -1;
        hbeg = addr + 1;
        colon = hend + 1;
    } else {
        colon = strrchr(addr, ':');
        if (colon == NULL)
            return -1;
        hend = colon;
    }
    size_t hl = (size_t)(hend - hbeg);
    if (hl == 0 || hl >= hostlen)
        return -1;
    char *end = NULL;
    errno = 0;
    long p = strtol(colon + 1, &end, 10);
    if (errno || end == colon + 1 || *end || p < 1 || p > 65535)
        return -1;
    memcpy(host, hbeg, hl);
    host[hl] = '\0';
    *port = (int)p;
    return 0;
}

/* test_config.c - defaults, the YAML file, environment overrides, and the
 * one-line errors that name the key. */
#include "common/config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char path[64];

static void write_yaml(const char *text)
{
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    fputs(text, fp);
    fclose(fp);
}

static int setup(void **state)
{
    (void)state;
    snprintf(path, sizeof(path), "/tmp/counter-config-test-%d.yaml",
             (int)getpid());
    unsetenv("COUNTER_SERVER_PORT");
    unsetenv("COUNTER_REDIS_ADDR");
    unsetenv("COUNTER_CONFIG");
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    unlink(path);
    return 0;
}

static void test_file_and_env(void **state)
{
    char err[256];
    (void)state;
    write_yaml("server:\n  port: 9000\nredis:\n  addr: \"10.0.0.1:7000\"\n"
               "kafka:\n  topic: t1\n  producer:\n    linger.ms: 7\n"
               "  consumer:\n    session.timeout.ms: 6000\n");
    ctr_config *cfg = ctr_config_load(path, err, sizeof(err));
    assert_non_null(cfg);
    assert_int_equal(cfg->server_port, 9000);
    assert_string_equal(cfg->redis_addr, "10.0.0.1:7000");
    assert_string_equal(cfg->kafka_topic, "t1");
    assert_int_equal(cfg->postgres_port, 5433); /* default kept */
    assert_int_equal(cfg->n_kafka_producer, 1);
    assert_string_equal(cfg->kafka_producer[0].key, "linger.ms");
    assert_string_equal(cfg->kafka_producer[0].value, "7");
    assert_int_equal(cfg->n_kafka_consumer, 1);
    assert_string_equal(cfg->kafka_consumer[0].key, "session.timeout.ms");
    ctr_config_free(cfg);

    setenv("COUNTER_SERVER_PORT", "8081", 1);
    setenv("COUNTER_CONFIG", path, 1);
    cfg = ctr_config_load(NULL, err, sizeof(err));
    assert_non_null(cfg);
    assert_int_equal(cfg->server_port, 8081); /* env beats file */
    ctr_config_free(cfg);
    unsetenv("COUNTER_SERVER_PORT");
    unsetenv("COUNTER_CONFIG");
}

static void test_errors_name_the_key(void **state)
{
    static const struct {
        const char *yaml;
        const char *env_key, *env_val;
        const char *expect;
    } cases[] = {
        {"server:\n  port: 99999\n", NULL, NULL, "server.port"},
        {"server:\n  port: abc\n", NULL, NULL, "server.port"},
        {"server:\n  prot: 1\n", NULL, NULL, "server.prot"},
        {"redis:\n  addr: nocolon\n", NULL, NULL, "redis.addr"},
        {"redis:\n  cluster_nodes: \"h:1,nocolon\"\n", NULL, NULL,
         "redis.cluster_nodes"},
        {"redis:\n  wait_replicas: 17\n", NULL, NULL, "redis.wait_replicas"},
        {"server:\n  port: 1\n", "COUNTER_REDIS_CLUSTER_NODES", "h:1,:2",
         "redis.cluster_nodes"},
        {"log:\n  level: loud\n", NULL, NULL, "log.level"},
        {"kafka:\n  topic: \"\"\n", NULL, NULL, "kafka.topic"},
        {"server:\n  port: [1, 2]\n", NULL, NULL, "server.port"},
        {"server: {port: 1\n", NULL, NULL, "config"},
        {"server:\n  port: 1\n", "COUNTER_SERVER_PORT", "8o", "server.port"},
    };
    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char err[256] = "";
        write_yaml(cases[i].yaml);
        if (cases[i].env_key)
            setenv(cases[i].env_key, cases[i].env_val, 1);
        ctr_config *cfg = ctr_config_load(path, err, sizeof(err));
        if (cases[i].env_key)
            unsetenv(cases[i].env_key);
        if (cfg != NULL)
            fail_msg("accepted: %s", cases[i].yaml);
        if (strstr(err, cases[i].expect) == NULL)
            fail_msg("error \"%s\" does not name %s", err, cases[i].expect);
        assert_null(strchr(err, '\n'));
    }
}

static void test_counter_definitions(void **state)
{
    char err[256];
    (void)state;
    write_yaml("timezone: Asia/Shanghai\n"
               "counters:\n"
               "  online_players: {kind: gauge, min: 0, on_bound: clamp}\n"
               "  daily_active_users: {kind: unique, reset: daily}\n"
               "  \"daily_*\": {kind: counter, reset: daily}\n"
               "  \"daily_x_*\": {kind: counter, timezone: UTC}\n"
               "  hll.users: {kind: unique, dedup: hll, retention_days: 7}\n");
    ctr_config *cfg = ctr_config_load(path, err, sizeof(err));
    if (cfg == NULL)
        fail_msg("%s", err);
    const ctr_counter_def *d = ctr_config_counter(cfg, "online_players");
    assert_int_equal(d->kind, CTR_KIND_GAUGE);
    assert_true(d->has_min);
    assert_false(d->has_max);
    assert_int_equal(d->on_bound, CTR_BOUND_CLAMP);
    d = ctr_config_counter(cfg, "daily_active_users"); /* exact beats daily_* */
    assert_int_equal(d->kind, CTR_KIND_UNIQUE);
    assert_string_equal(ctr_tz_name(d->tz), "Asia/Shanghai");
    d = ctr_config_counter(cfg, "daily_logins");
    assert_string_equal(d->pattern, "daily_*");
    assert_int_equal(d->reset, CTR_RESET_DAILY);
    d = ctr_config_counter(cfg, "daily_x_1"); /* the longest prefix wins */
    assert_string_equal(d->pattern, "daily_x_*");
    assert_string_equal(ctr_tz_name(d->tz), "UTC");
    d = ctr_config_counter(cfg, "hll.users"); /* dots in names are fine */
    assert_int_equal(d->dedup, CTR_DEDUP_HLL);
    assert_int_equal(d->retention_days, 7);
    d = ctr_config_counter(cfg, "anything_else"); /* built-in default */
    assert_int_equal(d->kind, CTR_KIND_COUNTER);
    assert_int_equal(d->reset, CTR_RESET_NONE);
    assert_string_equal(ctr_tz_name(d->tz), "Asia/Shanghai");
    ctr_config_free(cfg);

    write_yaml("counters:\n  \"*\": {kind: gauge, min: -5}\n");
    cfg = ctr_config_load(path, err, sizeof(err));
    assert_non_null(cfg);
    d = ctr_config_counter(cfg, "whatever");
    assert_int_equal(d->kind, CTR_KIND_GAUGE);
    assert_int_equal(d->min, -5);
    ctr_config_free(cfg);
}

static void test_definition_errors(void **state)
{
    static const struct {
        const char *yaml;
        const char *expect;
    } cases[] = {
        {"counters:\n  a: {kind: gauge, timezone: Mars/Base}\n",
         "counters.a.timezone"},
        {"timezone: Nowhere/Land\n", "timezone"},
        {"counters:\n  a: {kind: meter}\n", "counters.a.kind"},
        {"counters:\n  a: {kind: counter, min: 0}\n", "counters.a.min"},
        {"counters:\n  a: {kind: gauge, min: 5, max: 1}\n", "counters.a"},
        {"counters:\n  a: {kind: gauge, max: 99999999999999999999}\n",
         "counters.a.max"},
        {"counters:\n  a: {kind: counter, dedup: hll}\n", "counters.a.dedup"},
        {"counters:\n  a: {kind: counter, reset: weekly}\n",
         "counters.a.reset"},
        {"counters:\n  a: {kind: counter, colour: red}\n", "counters.a.colour"},
        {"counters:\n  \"a:b\": {kind: counter}\n", "counters.a:b"},
        {"counters:\n  a: {kind: counter, retention_days: 0}\n",
         "counters.a.retention_days"},
        {"counters:\n  - a\n", "counters"},
    };
    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char err[256] = "";
        write_yaml(cases[i].yaml);
        ctr_config *cfg = ctr_config_load(path, err, sizeof(err));
        if (cfg != NULL)
            fail_msg("accepted: %s", cases[i].yaml);
        if (strstr(err, cases[i].expect) == NULL)
            fail_msg("error \"%s\" does not name %s", err, cases[i].expect);
    }
}

static void test_missing_file(void **state)
{
    char err[256];
    (void)state;
    assert_null(ctr_config_load("/nonexistent/x.yaml", err, sizeof(err)));
    assert_non_null(strstr(err, "/nonexistent/x.yaml"));
}

static void test_split_addr(void **state)
{
    char host[64];
    int port;
    (void)state;
    assert_int_equal(
        ctr_config_split_addr("127.0.0.1:6379", host, sizeof(host), &port), 0);
    assert_string_equal(host, "127.0.0.1");
    assert_int_equal(port, 6379);
    assert_int_equal(
        ctr_config_split_addr("[::1]:7000", host, sizeof(host), &port), 0);
    assert_string_equal(host, "::1");
    assert_int_equal(ctr_config_split_addr("host", host, sizeof(host), &port),
                     -1);
    assert_int_equal(ctr_config_split_addr("h:0", host, sizeof(host), &port),
                     -1);
    assert_int_equal(ctr_config_split_addr(":1", host, sizeof(host), &port),
                     -1);
    assert_int_equal(ctr_config_split_addr("h:1x", host, sizeof(host), &port),
                     -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_file_and_env, setup, teardown),
        cmocka_unit_test_setup_teardown(test_errors_name_the_key, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_counter_definitions, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_definition_errors, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_missing_file, setup, teardown),
        cmocka_unit_test(test_split_addr),
    };
    return cmocka_run_group_tests_name("config", tests, NULL, NULL);
}

/* test_pgconn.c - reading PostgreSQL's integers (bigint, and numeric sums
 * of any size) exactly: in int64, outside it, or no integer at all; the
 * connection parameters from the config, one server or several; libpq's
 * messages on one line. */
#include "common/pgconn.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static void test_pg_int(void **state)
{
    static const struct {
        const char *text;
        int result; /* 0 in int64, 1 outside, -1 not an integer */
        int64_t value;
    } cases[] = {
        {"0", 0, 0},
        {"-0", 0, 0},
        {"42", 0, 42},
        {"-42", 0, -42},
        {"9007199254740993", 0, 9007199254740993LL},
        {"-9007199254740993", 0, -9007199254740993LL},
        {"9223372036854775807", 0, INT64_MAX},
        {"-9223372036854775808", 0, INT64_MIN},
        {"9223372036854775808", 1, 0},
        {"-9223372036854775809", 1, 0},
        {"18446744073709551614", 1, 0},
        {"99999999999999999999999999999999999999999999", 1, 0},
        {"", -1, 0},
        {"-", -1, 0},
        {"1.0", -1, 0},
        {"1e3", -1, 0},
        {" 1", -1, 0},
        {"1 ", -1, 0},
        {"+1", -1, 0},
        {"NaN", -1, 0},
        {"12a", -1, 0},
    };
    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int64_t v = 7;
        int r = ctr_pg_int(cases[i].text, &v);
        if (r != cases[i].result)
            fail_msg("\"%s\": %d, expected %d", cases[i].text, r,
                     cases[i].result);
        if (r == 0 && v != cases[i].value)
            fail_msg("\"%s\": read %lld", cases[i].text, (long long)v);
        if (r != 0 && v != 7)
            fail_msg("\"%s\": the value was written", cases[i].text);
    }
}

/* The config of this YAML text (environment overrides aside). */
static ctr_config *config_of(const char *yaml)
{
    char path[64], err[256];
    snprintf(path, sizeof(path), "/tmp/counter-pgconn-test-%d.yaml",
             (int)getpid());
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    fputs(yaml, fp);
    fclose(fp);
    ctr_config *cfg = ctr_config_load(path, err, sizeof(err));
    unlink(path);
    if (cfg == NULL)
        fail_msg("%s", err);
    return cfg;
}

/* Which keyword of a libpq parameter list has which value. */
static const char *pg_param(const ctr_pg_params *p, const char *key)
{
    for (int i = 0; p->keys[i]; i++)
        if (strcmp(p->keys[i], key) == 0)
            return p->vals[i];
    return NULL;
}

static void test_one_server_or_several(void **state)
{
    char where[64];
    ctr_pg_params p;
    (void)state;
    ctr_config *cfg = config_of("postgres:\n  host: db1\n  port: 5432\n");
    ctr_pg_params_init(&p, cfg, "t", cfg->postgres_target_session_attrs);
    assert_string_equal(pg_param(&p, "host"), "db1");
    assert_string_equal(pg_param(&p, "port"), "5432");
    assert_string_equal(pg_param(&p, "target_session_attrs"), "read-write");
    assert_string_equal(ctr_pg_where(cfg, where, sizeof(where)), "db1:5432");
    assert_string_equal(cfg->postgres_read_session_attrs, "prefer-standby");
    ctr_config_free(cfg);

    /* several servers: libpq's host and port lists, in the order given */
    cfg = config_of("postgres:\n  hosts: \"10.0.0.1:5432, [::1]:5433\"\n"
                    "  read_session_attrs: any\n");
    ctr_pg_params_init(&p, cfg, "t", cfg->postgres_read_session_attrs);
    assert_string_equal(pg_param(&p, "host"), "10.0.0.1,::1");
    assert_string_equal(pg_param(&p, "port"), "5432,5433");
    assert_string_equal(pg_param(&p, "target_session_attrs"), "any");
    assert_string_equal(pg_param(&p, "application_name"), "t");
    assert_string_equal(ctr_pg_where(cfg, where, sizeof(where)),
                        "10.0.0.1:5432, [::1]:5433");
    ctr_config_free(cfg);
}

static void test_one_line(void **state)
{
    char out[128];
    (void)state;
    ctr_pg_one_line(out, sizeof(out),
                    "connection to server at \"a\" failed: refused\n"
                    "\tIs the server running?\nserver is in hot standby\n");
    assert_string_equal(out, "connection to server at \"a\" failed: refused; "
                             "Is the server running?; server is in hot "
                             "standby");
    ctr_pg_one_line(out, 8, "abcdefghijkl");
    assert_true(strlen(out) < 8);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pg_int),
        cmocka_unit_test(test_one_server_or_several),
        cmocka_unit_test(test_one_line),
    };
    return cmocka_run_group_tests_name("pgconn", tests, NULL, NULL);
}

/* test_auth.c - bearer tokens: the constant-time compare, the tokens file
 * format, the Authorization header, and the config keys of issue 5 (limits
 * and auth) with their environment overrides. */
#include "api/auth.h"
#include "common/config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define TOK_R "read-token-0123456789abcdef"
#define TOK_W "write-token-0123456789ABCDEF+/=="

static char yaml_path[64], tokens_path[64];

static void write_file(const char *path, const char *text)
{
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    fputs(text, fp);
    fclose(fp);
}

static int setup(void **state)
{
    (void)state;
    snprintf(yaml_path, sizeof(yaml_path), "/tmp/counter-auth-test-%d.yaml",
             (int)getpid());
    snprintf(tokens_path, sizeof(tokens_path),
             "/tmp/counter-auth-test-%d.tokens", (int)getpid());
    unsetenv("COUNTER_CONFIG");
    unsetenv("COUNTER_AUTH_TOKENS_FILE");
    unsetenv("COUNTER_SERVER_MAX_CONNECTIONS");
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    unlink(yaml_path);
    unlink(tokens_path);
    return 0;
}

static void test_equal_ct(void **state)
{
    static const struct {
        const char *x, *y;
        size_t n;
        int equal;
    } cases[] = {
        {"abcdef", "abcdef", 6, 1}, {"abcdef", "xbcdef", 6, 0},
        {"abcdef", "abcdex", 6, 0}, {"abcdef", "abcdef", 0, 1},
        {"\x80zz", "\x00zz", 3, 0}, {"a\xff", "a\xfe", 2, 0},
    };
    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        assert_int_equal(api_auth_equal_ct(cases[i].x, cases[i].y, cases[i].n),
                         cases[i].equal);
}

static double seconds_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The fastest of a few runs of comparing a with b. */
static double best_time(const unsigned char *a, const unsigned char *b,
                        size_t n)
{
    double best = 1e9;
    for (int run = 0; run < 15; run++) {
        double t0 = seconds_now();
        int r = api_auth_equal_ct(a, b, n);
        double t = seconds_now() - t0;
        assert_int_equal(r, 0);
        if (t < best)
            best = t;
    }
    return best;
}

/*
 * A compare that stopped at the first difference would be about a million
 * times faster on the first buffer pair than on the second; a constant-time
 * one takes the same time for both (within noise, hence the wide bound).
 */
static void test_equal_ct_reads_every_byte(void **state)
{
    enum { N = 4 << 20 };
    unsigned char *a = malloc(N), *first = malloc(N), *last = malloc(N);
    (void)state;
    assert_non_null(a);
    assert_non_null(first);
    assert_non_null(last);
    memset(a, 'x', N);
    memcpy(first, a, N);
    memcpy(last, a, N);
    first[0] = 'y';
    last[N - 1] = 'y';
    double t_first = best_time(a, first, N);
    double t_last = best_time(a, last, N);
    assert_true(t_first > t_last / 4);
    assert_true(t_last > t_first / 4);
    free(a);
    free(first);
    free(last);
}

static api_auth *auth_from_text(const char *text, char *err, size_t errlen)
{
    ctr_config *cfg = ctr_config_load("/dev/null", err, errlen);
    assert_non_null(cfg);
    api_auth *a = api_auth_new(cfg, err, errlen);
    ctr_config_free(cfg);
    assert_non_null(a);
    assert_int_equal(api_auth_count(a), 0);
    if (api_auth_add_text(a, text, "tokens.txt", err, errlen) != 0) {
        api_auth_free(a);
        return NULL;
    }
    return a;
}

static void test_tokens_file_format(void **state)
{
    char err[300];
    (void)state;
    api_auth *a = auth_from_text("# the dashboards\n"
                                 "read " TOK_R "\n"
                                 "\n"
                                 "   \t\n"
                                 "  write\t" TOK_W "   # the game servers\r\n"
                                 "# the end, no newline after it",
                                 err, sizeof(err));
    assert_non_null(a);
    assert_int_equal(api_auth_count(a), 2);
    assert_int_equal(api_auth_check(a, "Bearer " TOK_R), API_ACCESS_READ);
    assert_int_equal(api_auth_check(a, "Bearer " TOK_W), API_ACCESS_WRITE);
    api_auth_free(a);
}

static void test_tokens_file_errors(void **state)
{
    static const struct {
        const char *text;
        const char *expect; /* in the message */
    } cases[] = {
        {"admin " TOK_R "\n", "tokens.txt line 1: expected"},
        {"read\n", "tokens.txt line 1: expected"},
        {"# ok\nread " TOK_R " extra\n", "tokens.txt line 2: expected"},
        {"read short-token\n", "tokens.txt line 1: a token is 16 to 256"},
        {"read abcdefghijklmnop\"q\n", "line 1: a token is"},
        {"read abcdefghijklmnop=q\n", "line 1: a token is"},
        {"read " TOK_R "\nwrite " TOK_R "\n", "line 2: this token is listed"},
        {"READ " TOK_R "\n", "line 1: expected"},
    };
    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char err[300] = "";
        api_auth *a = auth_from_text(cases[i].text, err, sizeof(err));
        assert_null(a);
        if (strstr(err, cases[i].expect) == NULL)
            fail_msg("case %zu: \"%s\" lacks \"%s\"", i, err, cases[i].expect);
        /* no message ever repeats a token */
        assert_null(strstr(err, TOK_R));
        assert_null(strstr(err, "abcdefghijklmnop"));
    }
}

static void test_authorization_header(void **state)
{
    static const struct {
        const char *header;
        enum api_access expect;
    } cases[] = {
        {"Bearer " TOK_R, API_ACCESS_READ},
        {"Bearer " TOK_W, API_ACCESS_WRITE},
        {"bearer   " TOK_W "  ", API_ACCESS_WRITE},
        {"BEARER\t" TOK_R, API_ACCESS_READ},
        {NULL, API_ACCESS_NONE},
        {"", API_ACCESS_NONE},
        {"Bearer", API_ACCESS_NONE},
        {"Bearer ", API_ACCESS_NONE},
        {"Bearer" TOK_R, API_ACCESS_NONE},
        {"Basic " TOK_R, API_ACCESS_NONE},
        {TOK_R, API_ACCESS_NONE},
        {"Bearer " TOK_R "x", API_ACCESS_NONE},                 /* longer */
        {"Bearer read-token-0123456789abcde", API_ACCESS_NONE}, /* prefix */
        {"Bearer read-token-0123456789abcdeF", API_ACCESS_NONE},
        {"Bearer " TOK_R " " TOK_W, API_ACCESS_NONE},
        {"Bearer unknown-token-0123456789", API_ACCESS_NONE},
    };
    char err[300];
    (void)state;
    api_auth *a =
        auth_from_text("read " TOK_R "\nwrite " TOK_W "\n", err, sizeof(err));
    assert_non_null(a);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        if (api_auth_check(a, cases[i].header) != cases[i].expect)
            fail_msg("case %zu (%s): got %d, expected %d", i,
                     cases[i].header ? cases[i].header : "NULL",
                     (int)api_auth_check(a, cases[i].header),
                     (int)cases[i].expect);
    api_auth_free(a);
}

static void test_config_tokens_and_file(void **state)
{
    char err[300];
    (void)state;
    write_file(tokens_path, "write " TOK_W "\n");
    write_file(yaml_path, "auth:\n"
                          "  tokens:\n"
                          "    - {token: \"" TOK_R "\", access: read}\n"
                          "server:\n  max_inflight: 5\n");
    setenv("COUNTER_AUTH_TOKENS_FILE", tokens_path, 1);
    setenv("COUNTER_SERVER_MAX_CONNECTIONS", "7", 1);
    ctr_config *cfg = ctr_config_load(yaml_path, err, sizeof(err));
    unsetenv("COUNTER_AUTH_TOKENS_FILE");
    unsetenv("COUNTER_SERVER_MAX_CONNECTIONS");
    assert_non_null(cfg);
    assert_int_equal(cfg->n_auth_tokens, 1);
    assert_string_equal(cfg->auth_tokens_file, tokens_path);
    assert_int_equal(cfg->server_max_inflight, 5);
    assert_int_equal(cfg->server_max_connections, 7);
    assert_int_equal(cfg->server_max_header_bytes, 8192); /* default */
    api_auth *a = api_auth_new(cfg, err, sizeof(err));
    assert_non_null(a);
    assert_int_equal(api_auth_count(a), 2);
    assert_int_equal(api_auth_check(a, "Bearer " TOK_R), API_ACCESS_READ);
    assert_int_equal(api_auth_check(a, "Bearer " TOK_W), API_ACCESS_WRITE);
    api_auth_free(a);
    ctr_config_free(cfg);

    /* no token anywhere: auth is off */
    cfg = ctr_config_load("/dev/null", err, sizeof(err));
    assert_non_null(cfg);
    assert_int_equal(cfg->server_max_connections, 4096);
    assert_int_equal(cfg->server_max_inflight, 10000);
    a = api_auth_new(cfg, err, sizeof(err));
    assert_non_null(a);
    assert_int_equal(api_auth_count(a), 0);
    assert_int_equal(api_auth_check(a, "Bearer " TOK_R), API_ACCESS_NONE);
    api_auth_free(a);
    ctr_config_free(cfg);
}

static void test_config_errors(void **state)
{
    static const struct {
        const char *yaml;
        const char *tokens_file; /* text of the tokens file, or NULL */
        int at_load;             /* 1: ctr_config_load fails */
        const char *expect;
    } cases[] = {
        {"auth:\n  tokens: " TOK_R "\n", NULL, 1, "auth.tokens"},
        {"auth:\n  tokens:\n    - {token: \"" TOK_R "\"}\n", NULL, 1,
         "auth.tokens"},
        {"auth:\n  tokens:\n    - {token: \"" TOK_R "\", access: read, x: 1}\n",
         NULL, 1, "auth.tokens"},
        {"auth:\n  tokens:\n    - {token: \"" TOK_R "\", access: admin}\n",
         NULL, 0, "line 3): access must be read or write"},
        {"auth:\n  tokens:\n    - {token: short, access: read}\n", NULL, 0,
         "auth.tokens"},
        {"server:\n  max_connections: 0\n", NULL, 1, "server.max_connections"},
        {"server:\n  max_header_bytes: 10\n", NULL, 1,
         "server.max_header_bytes"},
        {"server:\n  max_inflight: x\n", NULL, 1, "server.max_inflight"},
        {"auth:\n  tokens_file: /nonexistent/tokens\n", NULL, 0,
         "could not open \"/nonexistent/tokens\""},
        {"", "# only a comment\n", 0, "holds no token"},
        {"", "write " TOK_W "\nread\n", 0, "line 2: expected"},
    };
    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char err[300] = "";
        write_file(yaml_path, cases[i].yaml);
        if (cases[i].tokens_file) {
            write_file(tokens_path, cases[i].tokens_file);
            setenv("COUNTER_AUTH_TOKENS_FILE", tokens_path, 1);
        }
        ctr_config *cfg = ctr_config_load(yaml_path, err, sizeof(err));
        unsetenv("COUNTER_AUTH_TOKENS_FILE");
        api_auth *a = NULL;
        if (cases[i].at_load) {
            assert_null(cfg);
        } else {
            if (cfg == NULL)
                fail_msg("case %zu: load failed: %s", i, err);
            a = api_auth_new(cfg, err, sizeof(err));
            assert_null(a);
            ctr_config_free(cfg);
        }
        if (strstr(err, cases[i].expect) == NULL)
            fail_msg("case %zu: \"%s\" lacks \"%s\"", i, err, cases[i].expect);
        assert_null(strstr(err, TOK_R));
        assert_null(strstr(err, TOK_W));
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_equal_ct),
        cmocka_unit_test(test_equal_ct_reads_every_byte),
        cmocka_unit_test_setup_teardown(test_tokens_file_format, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_tokens_file_errors, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_authorization_header, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_config_tokens_and_file, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_config_errors, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* test_apply.c - the arguments of the Redis write and undo scripts, and
 * the api's idempotency record. */
#include "ingest/apply.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void test_record_parse(void **state)
{
    ctr_idem_record r;
    (void)state;

    assert_int_equal(ctr_idem_record_parse("AP|1795661940887|30b3b4488fb947e8|"
                                           "d43eedabce7f75e7|0|-5|-7|17956619",
                                           &r),
                     0);
    assert_int_equal(r.state, 'P');
    assert_true(r.lease_ms == 1795661940887LL);
    assert_string_equal(r.token, "30b3b4488fb947e8");
    assert_string_equal(r.fingerprint, "d43eedabce7f75e7");
    assert_int_equal(r.outcome, CTR_APPLY_APPLIED);
    assert_true(r.value == -5 && r.applied == -7 && r.ts_ms == 17956619);

    assert_int_equal(ctr_idem_record_parse("AD|1|ab|cd|1|9223372036854775807|"
                                           "0|0",
                                           &r),
                     0);
    assert_int_equal(r.state, 'D');
    assert_int_equal(r.outcome, CTR_APPLY_DUPLICATE);
    assert_true(r.value == INT64_MAX);
}

static void test_record_rejects(void **state)
{
    ctr_idem_record r;
    static const char *const bad[] = {
        "a5",                     /* the applier's guard */
        "r",                      /* the applier's refusal */
        "",                       /* nothing */
        "AX|1|ab|cd|0|1|1|1",     /* unknown state */
        "AP|1|ab|cd|2|1|1|1",     /* a refusal is never recorded */
        "AP|1|ab|cd|0|1|1",       /* a field short */
        "AP|1|ab|cd|0|1|1|1|",    /* trailing text */
        "AP|1|AB|cd|0|1|1|1",     /* token not lower hex */
        "AP|x|ab|cd|0|1|1|1",     /* lease not a number */
        "AP|1|ab|cd|0|1|1|1 junk" /* trailing text */
    };
    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(ctr_idem_record_parse(bad[i], &r), -1);
}

static void test_write_argv_carries_the_record_head(void **state)
{
    ctr_apply_spec s;
    ctr_apply_argv a;
    (void)state;

    memset(&s, 0, sizeof(s));
    s.fence_offset = -1;
    s.arg = 3;
    s.guard_id = "key-1";
    s.guard_ttl_s = 86400;
    s.idem_head = "AP|99|ab|cd";
    assert_int_equal(ctr_apply_write_argv(&a, "sha", "games", &s), 0);
    assert_int_equal(a.argc, 21);
    assert_string_equal(a.argv[2], "5");
    assert_string_equal(a.argv[3], "{c:games}");
    assert_string_equal(a.argv[6], "{c:games}:id:key-1");
    assert_string_equal(a.argv[7], "{c:games}:t"); /* the stamp */
    assert_string_equal(a.argv[19], "86400");
    assert_string_equal(a.argv[20], "AP|99|ab|cd");

    /* a daily window's stamp goes with the window */
    snprintf(s.key_suffix, sizeof(s.key_suffix), ":d:2026-11-26");
    assert_int_equal(ctr_apply_write_argv(&a, "sha", "games", &s), 0);
    assert_string_equal(a.argv[3], "{c:games}:d:2026-11-26");
    assert_string_equal(a.argv[7], "{c:games}:d:2026-11-26:t");
    s.key_suffix[0] = '\0';

    /* the applier's guard has no head */
    s.idem_head = NULL;
    assert_int_equal(ctr_apply_write_argv(&a, "sha", "games", &s), 0);
    assert_string_equal(a.argv[20], "");
}

static void test_undo_argv_names_the_guard_and_token(void **state)
{
    ctr_apply_spec s;
    ctr_apply_result res;
    ctr_apply_argv a;
    (void)state;

    memset(&s, 0, sizeof(s));
    memset(&res, 0, sizeof(res));
    s.guard_id = "key-1";
    s.idem_token = "0123456789abcdef";
    res.value = 10;
    res.prev = 4;
    assert_int_equal(ctr_apply_undo_argv(&a, "sha", "games", &s, &res), 0);
    assert_string_equal(a.argv[2], "4");
    assert_string_equal(a.argv[5], "{c:games}:id:key-1");
    assert_string_equal(a.argv[6], "{c:games}:t");
    assert_string_equal(a.argv[7], "-6");
    assert_string_equal(a.argv[a.argc - 1], "0123456789abcdef");

    /* a difference that cannot be negated is refused */
    res.value = INT64_MIN;
    res.prev = 0;
    assert_int_equal(ctr_apply_undo_argv(&a, "sha", "games", &s, &res), -1);
}

static void test_guard_key_length(void **state)
{
    char buf[CTR_APPLY_KEY_MAX];
    char id[CTR_EVENT_ID_MAX + 1];
    (void)state;
    memset(id, 'x', CTR_EVENT_ID_MAX);
    id[CTR_EVENT_ID_MAX] = '\0';
    assert_int_equal(ctr_apply_guard_key(buf, sizeof(buf), "n", id), 0);
    assert_int_equal(ctr_apply_guard_key(buf, 8, "n", id), -1);
}

/* Redis's integer strings, read without strtoll: every int64 and nothing
 * else (no sign but one leading '-', no spaces, no overflow). */
static int reply_i64(const char *text, int64_t *out)
{
    redisReply r = {
        .type = REDIS_REPLY_STRING, .str = (char *)text, .len = strlen(text)};
    return ctr_apply_reply_i64(&r, out);
}

static void test_reply_integers(void **state)
{
    int64_t v = 7;
    (void)state;
    assert_int_equal(reply_i64("0", &v), 0);
    assert_true(v == 0);
    assert_int_equal(reply_i64("-42", &v), 0);
    assert_true(v == -42);
    assert_int_equal(reply_i64("1764150000123", &v), 0);
    assert_true(v == 1764150000123LL);
    assert_int_equal(reply_i64("9223372036854775807", &v), 0);
    assert_true(v == INT64_MAX);
    assert_int_equal(reply_i64("-9223372036854775808", &v), 0);
    assert_true(v == INT64_MIN);
    v = 7;
    const char *bad[] = {"",
                         "-",
                         "+1",
                         " 1",
                         "1 ",
                         "1x",
                         "--1",
                         "9223372036854775808",
                         "-9223372036854775809",
                         "18446744073709551616",
                         "99999999999999999999",
                         "123456789012345678901"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(reply_i64(bad[i], &v), -1);
    assert_true(v == 7); /* untouched on failure */
    redisReply nil = {.type = REDIS_REPLY_NIL};
    assert_int_equal(ctr_apply_reply_i64(&nil, &v), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_record_parse),
        cmocka_unit_test(test_record_rejects),
        cmocka_unit_test(test_write_argv_carries_the_record_head),
        cmocka_unit_test(test_undo_argv_names_the_guard_and_token),
        cmocka_unit_test(test_guard_key_length),
        cmocka_unit_test(test_reply_integers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

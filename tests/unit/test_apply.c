/* test_apply.c - the arguments of the Redis write and undo scripts, and
 * the api's idempotency record. */
#include "redis/apply.h"
#include "redis/slots.h"

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
                                           "d43eedabce7f75e7|0|-5|-7|17956619|"
                                           "1795661930000|-6",
                                           &r),
                     0);
    assert_int_equal(r.state, 'P');
    assert_true(r.lease_ms == 1795661940887LL);
    assert_string_equal(r.token, "30b3b4488fb947e8");
    assert_string_equal(r.fingerprint, "d43eedabce7f75e7");
    assert_int_equal(r.outcome, CTR_APPLY_APPLIED);
    assert_true(r.value == -5 && r.applied == -7 && r.ts_ms == 17956619);
    assert_true(r.gen_ms == 1795661930000LL && r.seen == -6);

    assert_int_equal(ctr_idem_record_parse("AD|1|ab|cd|1|9223372036854775807|"
                                           "0|0|5|5",
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
        "a5",                         /* the applier's guard */
        "r",                          /* the applier's refusal */
        "",                           /* nothing */
        "AX|1|ab|cd|0|1|1|1|1|1",     /* unknown state */
        "AP|1|ab|cd|2|1|1|1|1|1",     /* a refusal is never recorded */
        "AP|1|ab|cd|0|1|1|1|1",       /* a field short (no seen value) */
        "AP|1|ab|cd|0|1|1|1|1|1|",    /* trailing text */
        "AP|1|AB|cd|0|1|1|1|1|1",     /* token not lower hex */
        "AP|x|ab|cd|0|1|1|1|1|1",     /* lease not a number */
        "AP|1|ab|cd|0|1|1|1|1|1 junk" /* trailing text */
    };
    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(ctr_idem_record_parse(bad[i], &r), -1);
}

static void test_write_argv_carries_the_record_head(void **state)
{
    ctr_apply_spec s;
    ctr_apply_argv a;
    char marker[CTR_APPLY_EPOCH_KEY_MAX];
    (void)state;

    memset(&s, 0, sizeof(s));
    s.fence_offset = -1;
    s.arg = 3;
    s.guard_id = "key-1";
    s.guard_ttl_s = 86400;
    s.idem_head = "AP|99|ab|cd";
    s.pending_id = "key-1";
    s.created_ms = 1000;
    s.gen_ms = 990;
    assert_int_equal(ctr_apply_write_argv(&a, "sha", "games", &s), 0);
    assert_int_equal(a.argc, 28);
    assert_string_equal(a.argv[2], "9");
    assert_string_equal(a.argv[3], "{c:games}");
    assert_string_equal(a.argv[4], "{c:games}:t"); /* the stamp */
    assert_string_equal(a.argv[5], "{c:games}:p"); /* the pending hash */
    assert_string_equal(a.argv[8], "{c:games}:id:key-1");
    /* the epoch marker of the counter's slot */
    ctr_apply_epoch_key(marker, ctr_key_slot("c:games", 7));
    assert_string_equal(a.argv[9], marker);
    assert_string_equal(a.argv[10], "{c:games}:lo");
    assert_string_equal(a.argv[11], "{c:games}:hi");
    assert_string_equal(a.argv[23], "86400");
    assert_string_equal(a.argv[24], "AP|99|ab|cd");
    assert_string_equal(a.argv[25], "key-1");
    assert_string_equal(a.argv[26], "1000|990");
    assert_string_equal(a.argv[27], "");

    /* a daily window's stamp and pending hash go with the window */
    snprintf(s.key_suffix, sizeof(s.key_suffix), ":d:2026-11-26");
    assert_int_equal(ctr_apply_write_argv(&a, "sha", "games", &s), 0);
    assert_string_equal(a.argv[3], "{c:games}:d:2026-11-26");
    assert_string_equal(a.argv[4], "{c:games}:d:2026-11-26:t");
    assert_string_equal(a.argv[5], "{c:games}:d:2026-11-26:p");
    s.key_suffix[0] = '\0';

    /* the applier's guard has no head, and its writes no entry */
    s.idem_head = NULL;
    s.pending_id = NULL;
    s.epoch_want = "=restoring:x";
    assert_int_equal(ctr_apply_write_argv(&a, "sha", "games", &s), 0);
    assert_string_equal(a.argv[24], "");
    assert_string_equal(a.argv[25], "");
    assert_string_equal(a.argv[26], "");
    assert_string_equal(a.argv[27], "=restoring:x");
}

static void test_undo_and_finish_argv(void **state)
{
    ctr_apply_spec s;
    ctr_apply_argv a;
    (void)state;

    memset(&s, 0, sizeof(s));
    s.pending_id = "key-1";
    s.idem_token = "0123456789abcdef";
    assert_int_equal(ctr_apply_undo_argv(&a, "sha", "games", &s), 0);
    assert_int_equal(a.argc, 11);
    assert_string_equal(a.argv[2], "6");
    assert_string_equal(a.argv[3], "{c:games}");
    assert_string_equal(a.argv[4], "{c:games}:t");
    assert_string_equal(a.argv[5], "{c:games}:p");
    assert_string_equal(a.argv[6], "{c:games}:id:key-1");
    assert_string_equal(a.argv[7], "{c:games}:lo");
    assert_string_equal(a.argv[8], "{c:games}:hi");
    assert_string_equal(a.argv[9], "key-1");
    assert_string_equal(a.argv[10], "0123456789abcdef");

    assert_int_equal(ctr_apply_finish_argv(&a, "sha", "games", &s), 0);
    assert_int_equal(a.argc, 10);
    assert_string_equal(a.argv[2], "5");
    assert_string_equal(a.argv[3], "{c:games}");
    assert_string_equal(a.argv[4], "{c:games}:p");
    assert_string_equal(a.argv[5], "{c:games}:lo");
    assert_string_equal(a.argv[6], "{c:games}:hi");
    assert_string_equal(a.argv[7], "{c:games}:id:key-1");
    assert_string_equal(a.argv[8], "key-1");
    assert_string_equal(a.argv[9], "0123456789abcdef");

    /* a write from the log has no entry to undo or finish */
    s.pending_id = NULL;
    assert_int_equal(ctr_apply_undo_argv(&a, "sha", "games", &s), -1);
    assert_int_equal(ctr_apply_finish_argv(&a, "sha", "games", &s), -1);
}

/* Every slot has a marker, in that slot, and the names are stable. */
static void test_epoch_keys_cover_every_slot(void **state)
{
    char key[CTR_APPLY_EPOCH_KEY_MAX];
    (void)state;
    for (int slot = 0; slot < CTR_SLOTS; slot++) {
        ctr_apply_epoch_key(key, slot);
        assert_int_equal(ctr_key_slot(key, strlen(key)), slot);
        assert_true(strncmp(key, CTR_APPLY_EPOCH_PREFIX,
                            strlen(CTR_APPLY_EPOCH_PREFIX)) == 0);
    }
    /* "1" hashes to slot 9842: the first tag found for it */
    ctr_apply_epoch_key(key, ctr_key_slot("1", 1));
    assert_string_equal(key, CTR_APPLY_EPOCH_PREFIX "{1}");
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
        cmocka_unit_test(test_undo_and_finish_argv),
        cmocka_unit_test(test_epoch_keys_cover_every_slot),
        cmocka_unit_test(test_guard_key_length),
        cmocka_unit_test(test_reply_integers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

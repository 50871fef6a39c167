/* test_evdecode.c - the persister's fast event decoder: it takes the
 * common shapes, leaves every other text to ctr_event_decode, and never
 * accepts what ctr_event_decode refuses or reads a field differently. */
#include "persister/evdecode.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void assert_same_event(const ctr_event *a, const ctr_event *b)
{
    assert_int_equal(a->v, b->v);
    assert_string_equal(a->id, b->id);
    assert_string_equal(a->counter, b->counter);
    assert_int_equal(a->delta, b->delta);
    assert_int_equal(a->ts_ms, b->ts_ms);
    if (a->user_id == NULL || b->user_id == NULL)
        assert_ptr_equal(a->user_id, b->user_id);
    else
        assert_string_equal(a->user_id, b->user_id);
    if (a->metadata == NULL || b->metadata == NULL)
        assert_ptr_equal(a->metadata, b->metadata);
    else
        assert_string_equal(a->metadata, b->metadata);
}

/* If the fast path takes text, ctr_event_decode takes it alike; returns
 * whether the fast path took it. */
static int agrees(const char *text, size_t len)
{
    ctr_event fast, slow;
    char err[256];
    int f = ps_event_decode_fast(text, len, &fast);
    int s = ctr_event_decode(text, len, &slow, err, sizeof(err));
    if (f == 0) {
        if (s != 0)
            fail_msg("fast path took what ctr_event_decode refuses (%s): "
                     "%.*s",
                     err, (int)len, text);
        assert_same_event(&fast, &slow);
    } else {
        /* nothing left behind on a refusal */
        assert_null(fast.user_id);
        assert_string_equal(fast.counter, "");
    }
    ctr_event_clear(&fast);
    ctr_event_clear(&slow);
    return f == 0;
}

static void test_common_shapes(void **state)
{
    static const char *const taken[] = {
        "{\"v\":1,\"id\":\"bench-drain-7\",\"counter\":\"bench_drain_7\","
        "\"delta\":1,\"ts\":1764153000123}",
        "{\"v\":1,\"id\":\"9c0f-1\",\"counter\":\"daily_active_users\","
        "\"delta\":1,\"user_id\":\"u 42\",\"ts\":1764153000123}",
        " {\n\t\"ts\" : 5 ,\"counter\":\"a.b-c\", \"delta\" : "
        "-9223372036854775, \"id\":\"x\",\"v\":1, \"user_id\":null,"
        "\"metadata\":null }\r\n",
        "{\"v\":1,\"id\":\"z\",\"counter\":\"c\",\"delta\":0,\"ts\":1}",
        "{\"v\":1,\"id\":\"z\",\"counter\":\"c\",\"delta\":-0,\"ts\":1}",
        "{\"v\":1,\"id\":\"z\",\"counter\":\"c\",\"delta\":1,"
        "\"ts\":253402214399999}",
    };
    (void)state;
    for (size_t i = 0; i < sizeof(taken) / sizeof(taken[0]); i++)
        assert_true(agrees(taken[i], strlen(taken[i])));

    ctr_event ev;
    assert_int_equal(ps_event_decode_fast(taken[1], strlen(taken[1]), &ev), 0);
    assert_int_equal(ev.v, 1);
    assert_string_equal(ev.id, "9c0f-1");
    assert_string_equal(ev.counter, "daily_active_users");
    assert_int_equal(ev.delta, 1);
    assert_string_equal(ev.user_id, "u 42");
    assert_int_equal(ev.ts_ms, 1764153000123);
    assert_null(ev.metadata);
    ctr_event_clear(&ev);
}

/* Left to ctr_event_decode, valid or not; ps_event_decode then answers
 * as ctr_event_decode does, reason included. */
static void test_left_to_json_c(void **state)
{
    static const char *const left[] = {
        /* valid, but not the fast path's business */
        "{\"v\":1,\"id\":\"a\",\"counter\":\"c\",\"delta\":1,\"ts\":1,"
        "\"metadata\":{\"k\":[1,2]}}",
        "{\"v\":1,\"id\":\"a\\u0062\",\"counter\":\"c\",\"delta\":1,\"ts\":1}",
        "{\"v\":1,\"id\":\"a\",\"counter\":\"c\",\"delta\":1,\"ts\":1,"
        "\"user_id\":\"caf\xc3\xa9\"}",
        "{\"v\":1,\"id\":\"a\",\"counter\":\"c\",\"delta\":1,\"ts\":1,"
        "\"extra\":true}",
        "{\"v\":1,\"id\":\"a\",\"counter\":\"c\",\"delta\":1,\"ts\":1,"
        "\"delta\":2}",
        "{\"v\":1,\"id\":\"a\",\"counter\":\"c\",\"delta\":"
        "1000000000000000000,\"ts\":1}",
        /* invalid */
        "{\"v\":1,\"id\":\"a\",\"counter\":\"c\",\"delta\":1.0,\"ts\":1}",
        "{\"v\":1,\"id\":\"a\",\"counter\":\"c\",\"delta\":1e3,\"ts\":1}",
        "{\"v\":1,\"id\":\"a\",\"counter\":\"c\",\"delta\":01,\"ts\":1}",
        "{\"v\":1,\"id\":\"a\",\"counter\":\"c\",\"delta\":1}",
        "{\"v\":2,\"id\":\"a\",\"counter\":\"c\",\"delta\":1,\"ts\":1}",
        "{\"v\":1,\"id\":\"a\",\"counter\":\"c d\",\"delta\":1,\"ts\":1}",
        "{\"v\":1,\"id\":\"a b\",\"counter\":\"c\",\"delta\":1,\"ts\":1}",
        "{\"v\":1,\"id\":\"a\",\"counter\":\"c\",\"delta\":1,\"ts\":0}",
        "{\"v\":1,\"id\":\"a\",\"counter\":\"c\",\"delta\":1,"
        "\"ts\":253402214400000}",
        "{\"v\":1,\"id\":\"a\",\"counter\":\"c\",\"delta\":1,"
        "\"ts\":999999999999999999}",
        "{\"v\":1,\"id\":\"a\",\"counter\":\"c\",\"delta\":1,\"ts\":1,"
        "\"user_id\":\"\"}",
        "{\"v\":1,\"id\":\"a\",\"counter\":\"c\",\"delta\":1,\"ts\":1} x",
        "{\"v\":1,\"id\":\"a\",\"counter\":\"c\",\"delta\":1,\"ts\":1,}",
        "{\"v\":1,\"id\":\"a\",\"counter\":\"c\",\"delta\":\"1\",\"ts\":1}",
        "[1]",
        "{}",
        "",
    };
    (void)state;
    for (size_t i = 0; i < sizeof(left) / sizeof(left[0]); i++) {
        ctr_event a, b;
        char ea[256] = "", eb[256] = "";
        size_t len = strlen(left[i]);
        assert_false(agrees(left[i], len));
        int ra = ps_event_decode(left[i], len, &a, ea, sizeof(ea));
        int rb = ctr_event_decode(left[i], len, &b, eb, sizeof(eb));
        assert_int_equal(ra, rb);
        if (ra == 0)
            assert_same_event(&a, &b);
        else
            assert_string_equal(ea, eb);
        ctr_event_clear(&a);
        ctr_event_clear(&b);
    }
    ctr_event ev;
    assert_int_equal(ps_event_decode_fast(NULL, 0, &ev), -1);
}

/* Random edits of valid events, each judged by both decoders. */
static void test_mutations(void **state)
{
    static const char *const seeds[] = {
        "{\"v\":1,\"id\":\"bench-drain-7\",\"counter\":\"bench_drain_7\","
        "\"delta\":1,\"ts\":1764153000123}",
        "{\"v\":1,\"id\":\"e\",\"counter\":\"u\",\"delta\":-5,"
        "\"user_id\":\"u1\",\"ts\":17,\"metadata\":null}",
    };
    static const char alphabet[] = "{}[]\":,. \t\\-+0123456789eEnulvdtsa\x01"
                                   "\x7f\xc3\xa9";
    uint64_t rng = 0x9e3779b97f4a7c15ULL;
    int taken = 0, left = 0;
    char text[256];
    (void)state;

    for (int round = 0; round < 20000; round++) {
        const char *seed = seeds[round % 2];
        size_t len = strlen(seed);
        memcpy(text, seed, len);
        int edits = 1 + (int)(round % 3);
        for (int e = 0; e < edits; e++) {
            rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
            size_t at = (size_t)(rng >> 8) % (len + 1);
            char ch = alphabet[(rng >> 40) % (sizeof(alphabet) - 1)];
            switch ((rng >> 60) % 3) {
            case 0: /* replace */
                if (at < len)
                    text[at] = ch;
                break;
            case 1: /* delete */
                if (at < len) {
                    memmove(text + at, text + at + 1, len - at - 1);
                    len--;
                }
                break;
            default: /* insert */
                if (len + 1 < sizeof(text)) {
                    memmove(text + at + 1, text + at, len - at);
                    text[at] = ch;
                    len++;
                }
                break;
            }
        }
        if (agrees(text, len))
            taken++;
        else
            left++;
    }
    /* both outcomes were exercised */
    assert_true(taken > 100);
    assert_true(left > 100);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_common_shapes),
        cmocka_unit_test(test_left_to_json_c),
        cmocka_unit_test(test_mutations),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

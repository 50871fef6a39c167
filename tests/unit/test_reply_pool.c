/* test_reply_pool.c - the api's pooled hiredis reply objects against
 * hiredis's own: the same replies from the same bytes, fed in pieces. */
#include "api/reply_pool.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t rng = 0x2545f4914f6cdd1du;

static unsigned rnd(unsigned n)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (unsigned)(rng % n);
}

/* Appends one random RESP value to buf at *len. */
static void gen(char *buf, size_t *len, int depth)
{
    unsigned kind = rnd(depth < 3 ? 7 : 5);
    switch (kind) {
    case 0:
    case 1: { /* bulk strings across the inline limit, binary bytes too */
        size_t n = rnd(4) == 0 ? rnd(200) : rnd(50);
        *len += (size_t)sprintf(buf + *len, "$%zu\r\n", n);
        for (size_t i = 0; i < n; i++)
            buf[(*len)++] = (char)rnd(256);
        memcpy(buf + *len, "\r\n", 2);
        *len += 2;
        break;
    }
    case 2:
        *len += (size_t)sprintf(buf + *len, ":%lld\r\n",
                                (long long)rnd(1u << 31) - (1ll << 30));
        break;
    case 3:
        *len += (size_t)sprintf(buf + *len, "%s\r\n", rnd(2) ? "$-1" : "+OK");
        break;
    case 4:
        *len += (size_t)sprintf(buf + *len, "-ERR %.*s\r\n", (int)rnd(60),
                                "something went wrong with a rather long "
                                "message to cross the limit");
        break;
    default: { /* arrays, nil and empty ones */
        int n = rnd(5) == 0 ? -1 : (int)rnd(25);
        *len += (size_t)sprintf(buf + *len, "*%d\r\n", n);
        for (int i = 0; i < n; i++)
            gen(buf, len, depth + 1);
    }
    }
}

static void same(const redisReply *a, const redisReply *b)
{
    assert_int_equal(a->type, b->type);
    switch (a->type) {
    case REDIS_REPLY_ARRAY:
        assert_int_equal(a->elements, b->elements);
        for (size_t i = 0; i < a->elements; i++)
            same(a->element[i], b->element[i]);
        break;
    case REDIS_REPLY_INTEGER: assert_true(a->integer == b->integer); break;
    case REDIS_REPLY_NIL: break;
    default:
        assert_int_equal(a->len, b->len);
        assert_memory_equal(a->str, b->str, a->len);
        assert_int_equal(b->str[b->len], '\0');
    }
}

static void test_same_replies_as_hiredis(void **state)
{
    static char buf[1 << 20];
    (void)state;
    for (int round = 0; round < 300; round++) {
        size_t len = 0;
        int count = 1 + (int)rnd(20);
        for (int i = 0; i < count; i++)
            gen(buf, &len, 0);
        redisReader *plain = redisReaderCreate();
        redisReader *pooled =
            redisReaderCreateWithFunctions(&api_reply_pool_functions);
        assert_non_null(plain);
        assert_non_null(pooled);
        assert_int_equal(redisReaderFeed(plain, buf, len), REDIS_OK);
        /* in pieces: objects of a half-read reply wait in the reader */
        for (size_t at = 0; at < len;) {
            size_t n = 1 + rnd(64);
            n = n < len - at ? n : len - at;
            assert_int_equal(redisReaderFeed(pooled, buf + at, n), REDIS_OK);
            at += n;
        }
        for (int i = 0; i < count; i++) {
            void *a, *b;
            assert_int_equal(redisReaderGetReply(plain, &a), REDIS_OK);
            assert_int_equal(redisReaderGetReply(pooled, &b), REDIS_OK);
            assert_non_null(a);
            assert_non_null(b);
            same(a, b);
            freeReplyObject(a);
            api_reply_pool_functions.freeObject(b);
        }
        void *none;
        assert_int_equal(redisReaderGetReply(pooled, &none), REDIS_OK);
        assert_null(none);
        redisReaderFree(plain);
        redisReaderFree(pooled);
    }
    api_reply_pool_drain();
}

/* A reader freed with a reply half read frees its objects through us. */
static void test_half_read_reply_is_freed(void **state)
{
    static const char part[] = "*3\r\n$3\r\nabc\r\n:7\r\n*2\r\n$1\r\nx";
    (void)state;
    redisReader *pooled =
        redisReaderCreateWithFunctions(&api_reply_pool_functions);
    void *r;
    assert_int_equal(redisReaderFeed(pooled, part, sizeof(part) - 1), REDIS_OK);
    assert_int_equal(redisReaderGetReply(pooled, &r), REDIS_OK);
    assert_null(r);
    redisReaderFree(pooled);
    api_reply_pool_drain();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_same_replies_as_hiredis),
        cmocka_unit_test(test_half_read_reply_is_freed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* test_framing.c - the request line and header block reader of
 * api/framing.c: what passes, what is refused and why, fed whole and one
 * byte at a time. */
#include "api/framing.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>

enum { MAX = 256 };

/* Feeds text whole (step 0) or growing by step bytes; the result of the
 * last call. */
static int feed(const char *text, size_t step, api_framing_head *h)
{
    size_t n = strlen(text);
    int rc = 0;
    api_framing_head_init(h);
    if (step == 0)
        return api_framing_head_feed(h, text, n, MAX);
    for (size_t have = step; rc == 0; have += step) {
        if (have > n)
            have = n;
        rc = api_framing_head_feed(h, text, have, MAX);
        if (have == n)
            break;
    }
    return rc;
}

static void test_passes(void **state)
{
    static const struct {
        const char *text;
        enum api_framing_method method;
        int minor;
        int64_t content_length;
        const char *target;
    } cases[] = {
        {"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", API_FM_GET, 1, -1,
         "/healthz"},
        {"GET / HTTP/1.0\r\n\r\n", API_FM_GET, 0, -1, "/"},
        {"POST /api/v1/counter/a/increment HTTP/1.1\r\nContent-Length: 11\r\n"
         "Content-Type: application/json\r\n\r\n",
         API_FM_POST, 1, 11, "/api/v1/counter/a/increment"},
        /* bare LF line ends, as evhttp reads them */
        {"GET /x?a=1 HTTP/1.1\nHost: x\n\n", API_FM_GET, 1, -1, "/x?a=1"},
        /* empty lines before the request (RFC 9112 2.2) */
        {"\r\n\r\nGET /x HTTP/1.1\r\n\r\n", API_FM_GET, 1, -1, "/x"},
        {"OPTIONS * HTTP/1.1\r\n\r\n", API_FM_OPTIONS, 1, -1, "*"},
        {"GET http://h.example/x HTTP/1.1\r\n\r\n", API_FM_GET, 1, -1,
         "http://h.example/x"},
        {"PATCH /x HTTP/1.1\r\nContent-Length: 0\r\n\r\n", API_FM_PATCH, 1, 0,
         "/x"},
        {"GET /x HTTP/1.1\r\nExpect: 100-Continue\r\nX-Empty:\r\n"
         "X-Tab:\tv\t\r\nX-Obs: caf\xc3\xa9\r\n\r\n",
         API_FM_GET, 1, -1, "/x"},
        /* an Expect of HTTP/1.0 is ignored (RFC 9110 10.1.1) */
        {"POST /x HTTP/1.0\r\nExpect: nothing\r\nContent-Length: 1\r\n\r\n",
         API_FM_POST, 0, 1, "/x"},
        {"HEAD /x HTTP/1.1\r\nContent-Length: 0\r\n\r\n", API_FM_HEAD, 1, 0,
         "/x"},
        /* its body is dropped by framing, not by the head's reader */
        {"HEAD /x HTTP/1.1\r\nContent-Length: 3\r\n\r\n", API_FM_HEAD, 1, 3,
         "/x"},
        {"GET /x HTTP/1.9\r\n\r\n", API_FM_GET, 9, -1, "/x"},
    };
    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        for (size_t step = 0; step <= 1; step++) {
            api_framing_head h;
            const char *text = cases[i].text;
            int rc = feed(text, step, &h);
            if (rc != 1)
                fail_msg("%s (step %zu): %d, refusal %d", text, step, rc,
                         (int)h.refusal);
            assert_int_equal(h.len, strlen(text));
            assert_int_equal(h.method, cases[i].method);
            assert_int_equal(h.minor, cases[i].minor);
            assert_int_equal(h.content_length, cases[i].content_length);
            assert_int_equal(h.target_len, strlen(cases[i].target));
            assert_memory_equal(text + h.target, cases[i].target, h.target_len);
        }
}

static void test_refusals(void **state)
{
    static const struct {
        const char *text;
        enum api_framing_refusal refusal;
    } cases[] = {
        {"GET  /x HTTP/1.1\r\n\r\n", API_REFUSE_BAD_REQUEST_LINE},
        {"GET /x  HTTP/1.1\r\n\r\n", API_REFUSE_BAD_REQUEST_LINE},
        {"GET /x HTTP/1.1 \r\n\r\n", API_REFUSE_BAD_REQUEST_LINE},
        {"GET/x HTTP/1.1\r\n\r\n", API_REFUSE_BAD_REQUEST_LINE},
        {"GET /x\r\n\r\n", API_REFUSE_BAD_REQUEST_LINE},
        {"GET /x HTTP/1.1x\r\n\r\n", API_REFUSE_BAD_REQUEST_LINE},
        {"GET /x http/1.1\r\n\r\n", API_REFUSE_BAD_REQUEST_LINE},
        {"GET /a\x01 HTTP/1.1\r\n\r\n", API_REFUSE_BAD_REQUEST_LINE},
        {"GET /a\rb HTTP/1.1\r\n\r\n", API_REFUSE_BAD_REQUEST_LINE},
        {"GET /\xc3\xa9 HTTP/1.1\r\n\r\n", API_REFUSE_BAD_REQUEST_LINE},
        {"GET //h:99999/x HTTP/1.1\r\n\r\n", API_REFUSE_BAD_REQUEST_LINE},
        {"\r\n\r\n\r\n\r\n\r\nGET / HTTP/1.1\r\n\r\n",
         API_REFUSE_BAD_REQUEST_LINE},
        {"GET /x HTTP/2.0\r\n\r\n", API_REFUSE_VERSION},
        {"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", API_REFUSE_VERSION},
        {"GET /x HTTP/0.9\r\n\r\n", API_REFUSE_VERSION},
        {"QUERY /x HTTP/1.1\r\n\r\n", API_REFUSE_NOT_IMPLEMENTED},
        {"get /x HTTP/1.1\r\n\r\n", API_REFUSE_NOT_IMPLEMENTED},
        {"CONNECT h.example:443 HTTP/1.1\r\n\r\n", API_REFUSE_NOT_IMPLEMENTED},
        {"GET /x HTTP/1.1\r\nNo colon\r\n\r\n", API_REFUSE_BAD_HEADER},
        {"GET /x HTTP/1.1\r\nName : v\r\n\r\n", API_REFUSE_BAD_HEADER},
        {"GET /x HTTP/1.1\r\n: v\r\n\r\n", API_REFUSE_BAD_HEADER},
        {"GET /x HTTP/1.1\r\nA: b\r\n c\r\n\r\n", API_REFUSE_BAD_HEADER},
        {"GET /x HTTP/1.1\r\nA: b\rc\r\n\r\n", API_REFUSE_BAD_HEADER},
        {"GET /x HTTP/1.1\r\nA: b\x7f\r\n\r\n", API_REFUSE_BAD_HEADER},
        {"GET /x HTTP/1.1\r\nA: b\r\r\n\r\n", API_REFUSE_BAD_HEADER},
        {"POST /x HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
         API_REFUSE_BAD_CONTENT_LENGTH},
        {"POST /x HTTP/1.1\r\nContent-Length: +1\r\n\r\n",
         API_REFUSE_BAD_CONTENT_LENGTH},
        {"POST /x HTTP/1.1\r\nContent-Length: 1 1\r\n\r\n",
         API_REFUSE_BAD_CONTENT_LENGTH},
        {"POST /x HTTP/1.1\r\nContent-Length: 1, 1\r\n\r\n",
         API_REFUSE_BAD_CONTENT_LENGTH},
        {"POST /x HTTP/1.1\r\nContent-Length:\r\n\r\n",
         API_REFUSE_BAD_CONTENT_LENGTH},
        {"POST /x HTTP/1.1\r\nContent-Length: 0x10\r\n\r\n",
         API_REFUSE_BAD_CONTENT_LENGTH},
        {"POST /x HTTP/1.1\r\nContent-Length: 2\r\ncontent-length: 2\r\n\r\n",
         API_REFUSE_BAD_CONTENT_LENGTH},
        {"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
         API_REFUSE_LENGTH_REQUIRED},
        {"POST /x HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
         API_REFUSE_LENGTH_REQUIRED},
        {"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n"
         "Content-Length: 3\r\n\r\n",
         API_REFUSE_AMBIGUOUS_LENGTH},
        {"TRACE /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
         API_REFUSE_LENGTH_REQUIRED},
        {"POST /x HTTP/1.1\r\nExpect: 200-ok\r\nContent-Length: 1\r\n\r\n",
         API_REFUSE_EXPECTATION},
        {"GET /x HTTP/1.1\r\nExpect: 100-continue, x\r\n\r\n",
         API_REFUSE_EXPECTATION},
    };
    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        for (size_t step = 0; step <= 1; step++) {
            api_framing_head h;
            int rc = feed(cases[i].text, step, &h);
            if (rc != -1 || h.refusal != cases[i].refusal)
                fail_msg("case %zu (step %zu): %d, refusal %d, not %d", i, step,
                         rc, (int)h.refusal, (int)cases[i].refusal);
        }
}

/* 414 for a request line over the limit, 431 for the line and headers;
 * both known before the end of the block has come. */
static void test_sizes(void **state)
{
    char text[4 * MAX];
    api_framing_head h;
    (void)state;

    /* exactly at the limit: the line, its CRLF and the empty line */
    int n =
        snprintf(text, sizeof(text), "GET /%0*d HTTP/1.1\r\n\r\n", MAX - 18, 0);
    assert_int_equal(n, MAX);
    assert_int_equal(feed(text, 0, &h), 1);
    /* a byte more */
    snprintf(text, sizeof(text), "GET /%0*d HTTP/1.1\r\n\r\n", MAX - 17, 0);
    assert_int_equal(feed(text, 0, &h), -1);
    assert_int_equal(h.refusal, API_REFUSE_HEADERS_TOO_LARGE);
    /* a request line over the limit, its end not yet come */
    memset(text, 'a', sizeof(text));
    memcpy(text, "GET /", 5);
    api_framing_head_init(&h);
    assert_int_equal(api_framing_head_feed(&h, text, MAX, MAX), 0);
    assert_int_equal(api_framing_head_feed(&h, text, MAX + 1, MAX), -1);
    assert_int_equal(h.refusal, API_REFUSE_URI_TOO_LONG);
    /* headers flooding in, their end not yet come */
    n = snprintf(text, sizeof(text), "GET / HTTP/1.1\r\n");
    while (n < MAX + 10)
        n += snprintf(text + n, sizeof(text) - (size_t)n, "X-P: v\r\n");
    api_framing_head_init(&h);
    assert_int_equal(api_framing_head_feed(&h, text, (size_t)n, MAX), -1);
    assert_int_equal(h.refusal, API_REFUSE_HEADERS_TOO_LARGE);
}

/* The headers the body depends on: the first Authorization, how many. */
static void test_authorization(void **state)
{
    const char *text = "POST /x HTTP/1.1\r\nauthorization:  Bearer abc \r\n"
                       "Authorization: Bearer def\r\nContent-Length: "
                       "99999999999999999999999\r\n\r\n";
    api_framing_head h;
    (void)state;
    assert_int_equal(feed(text, 0, &h), 1);
    assert_int_equal(h.auth_count, 2);
    assert_int_equal(h.auth_len, 10);
    assert_memory_equal(text + h.auth, "Bearer abc", 10);
    assert_int_equal(h.content_length, INT64_MAX);
}

/* Only the stand-ins framing.c writes are refusals. */
static void test_stand_in(void **state)
{
    char path[64];
    (void)state;
    snprintf(path, sizeof(path), "%s%d", API_FRAMING_STAND_IN,
             (int)API_REFUSE_URI_TOO_LONG);
    assert_int_equal(api_framing_refusal_of(path), API_REFUSE_URI_TOO_LONG);
    assert_int_equal(api_framing_refusal_of("/api/v1/counter/x"),
                     API_REFUSE_NONE);
    assert_int_equal(api_framing_refusal_of(""), API_REFUSE_NONE);
    assert_int_equal(api_framing_refusal_of(NULL), API_REFUSE_NONE);
    assert_int_equal(api_framing_refusal_of("/\x01refused/99"),
                     API_REFUSE_BAD_REQUEST_LINE);
    api_framing_limits lim = {8192, 16384, NULL, NULL};
    api_framing_answer a;
    for (int r = API_REFUSE_NONE + 1; r < API_REFUSE_COUNT; r++) {
        api_framing_describe((enum api_framing_refusal)r, &lim, &a);
        assert_true(a.status >= 400 && a.status <= 505);
        assert_non_null(a.code);
        assert_true(a.message[0] != '\0');
        assert_null(strchr(a.message, '%'));
    }
    api_framing_describe(API_REFUSE_BODY_TOO_LARGE, &lim, &a);
    assert_string_equal(a.message, "request body is larger than 16384 bytes");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_passes),   cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_sizes),    cmocka_unit_test(test_authorization),
        cmocka_unit_test(test_stand_in),
    };
    return cmocka_run_group_tests_name("framing", tests, NULL, NULL);
}

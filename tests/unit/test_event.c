/* test_event.c - the event schema: round trips and every rejection. */
#include "common/strbuf.h"
#include "ingest/event.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <inttypes.h>
#include <stdio.h>
#include <cmocka.h>
#include <json-c/json.h>
#include <stdlib.h>
#include <string.h>

static void test_round_trip(void **state)
{
    ctr_event in, out;
    char err[256];
    size_t len;
    (void)state;

    memset(&in, 0, sizeof(in));
    in.v = 1;
    strcpy(in.id, "e-1");
    strcpy(in.counter, "games_played");
    in.delta = -42;
    in.user_id = strdup("user \"quoted\" \\ caf\xc3\xa9");
    in.ts_ms = 1764153000123;
    in.metadata = strdup("{\"k\":[1,true,null]}");

    char *json = ctr_event_encode(&in, &len);
    assert_non_null(json);
    assert_int_equal(strlen(json), len);
    assert_int_equal(ctr_event_encoded_len(&in), len);
    assert_int_equal(ctr_event_decode(json, len, &out, err, sizeof(err)), 0);
    assert_int_equal(out.v, 1);
    assert_string_equal(out.id, "e-1");
    assert_string_equal(out.counter, "games_played");
    assert_int_equal(out.delta, -42);
    assert_string_equal(out.user_id, in.user_id);
    assert_int_equal(out.ts_ms, 1764153000123);
    assert_string_equal(out.metadata, "{\"k\":[1,true,null]}");
    free(json);
    ctr_event_clear(&out);

    /* optional fields absent, extreme delta */
    free(in.user_id);
    free(in.metadata);
    in.user_id = NULL;
    in.metadata = NULL;
    in.delta = INT64_MIN;
    json = ctr_event_encode(&in, &len);
    assert_non_null(json);
    assert_int_equal(ctr_event_encoded_len(&in), len);
    assert_null(strstr(json, "user_id"));
    assert_int_equal(ctr_event_decode(json, len, &out, err, sizeof(err)), 0);
    assert_int_equal(out.delta, INT64_MIN);
    assert_null(out.user_id);
    assert_null(out.metadata);
    free(json);
    ctr_event_clear(&out);
}

static void test_rejections(void **state)
{
    static const struct {
        const char *json;
        const char *field;
    } cases[] = {
        {"not json", "JSON"},
        {"[1]", "object"},
        {"{\"id\":\"a\",\"counter\":\"c\",\"delta\":1,\"ts\":1}", "v"},
        {"{\"v\":2,\"id\":\"a\",\"counter\":\"c\",\"delta\":1,\"ts\":1}", "v"},
        {"{\"v\":\"1\",\"id\":\"a\",\"counter\":\"c\",\"delta\":1,\"ts\":1}",
         "v"},
        {"{\"v\":1,\"counter\":\"c\",\"delta\":1,\"ts\":1}", "id"},
        {"{\"v\":1,\"id\":\"a b\",\"counter\":\"c\",\"delta\":1,\"ts\":1}",
         "id"},
        {"{\"v\":1,\"id\":\"a\",\"counter\":\"a:b\",\"delta\":1,\"ts\":1}",
         "counter"},
        {"{\"v\":1,\"id\":\"a\",\"counter\":\"\",\"delta\":1,\"ts\":1}",
         "counter"},
        {"{\"v\":1,\"id\":\"a\",\"counter\":\"c\",\"delta\":1.5,\"ts\":1}",
         "delta"},
        {"{\"v\":1,\"id\":\"a\",\"counter\":\"c\",\"delta\":"
         "9223372036854775808,\"ts\":1}",
         "delta"},
        {"{\"v\":1,\"id\":\"a\",\"counter\":\"c\",\"ts\":1}", "delta"},
        {"{\"v\":1,\"id\":\"a\",\"counter\":\"c\",\"delta\":1}", "ts"},
        {"{\"v\":1,\"id\":\"a\",\"counter\":\"c\",\"delta\":1,\"ts\":-5}",
         "ts"},
        /* past 9999-12-30T23:59:59.999Z: no store could hold its day */
        {"{\"v\":1,\"id\":\"a\",\"counter\":\"c\",\"delta\":1,"
         "\"ts\":253402214400000}",
         "ts"},
        {"{\"v\":1,\"id\":\"a\",\"counter\":\"c\",\"delta\":1,"
         "\"ts\":9223372036854775807}",
         "ts"},
        {"{\"v\":1,\"id\":\"a\",\"counter\":\"c\",\"delta\":1,\"ts\":1,"
         "\"user_id\":7}",
         "user_id"},
        {"{\"v\":1,\"id\":\"a\",\"counter\":\"c\",\"delta\":1,\"ts\":1,"
         "\"metadata\":[]}",
         "metadata"},
    };
    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        ctr_event ev;
        char err[256] = "";
        if (ctr_event_decode(cases[i].json, strlen(cases[i].json), &ev, err,
                             sizeof(err)) == 0)
            fail_msg("accepted: %s", cases[i].json);
        if (strstr(err, cases[i].field) == NULL)
            fail_msg("%s: error \"%s\" does not name %s", cases[i].json, err,
                     cases[i].field);
    }

    /* oversize */
    size_t big = CTR_EVENT_MAX_BYTES + 10;
    char *buf = malloc(big);
    memset(buf, ' ', big);
    ctr_event ev;
    char err[256];
    assert_int_equal(ctr_event_decode(buf, big, &ev, err, sizeof(err)), -1);
    free(buf);
}

/* An event just under the limit whose metadata is all '/' re-encodes no
 * longer (json-c's "\/" once doubled it), so a record the applier
 * re-publishes is one the persister still takes. */
static void test_reencode_does_not_grow(void **state)
{
    static const char head[] = "{\"v\":1,\"id\":\"e\",\"counter\":\"c\","
                               "\"delta\":1,\"ts\":1,\"metadata\":{\"u\":\"";
    size_t n = CTR_EVENT_MAX_BYTES - sizeof(head) - 8, len, len2;
    char *buf = malloc(CTR_EVENT_MAX_BYTES);
    ctr_event ev, again;
    char err[256];
    (void)state;
    assert_non_null(buf);
    memcpy(buf, head, sizeof(head) - 1);
    memset(buf + sizeof(head) - 1, '/', n);
    memcpy(buf + sizeof(head) - 1 + n, "\"}}", 4);
    len = sizeof(head) - 1 + n + 3;
    assert_int_equal(ctr_event_decode(buf, len, &ev, err, sizeof(err)), 0);
    char *enc = ctr_event_encode(&ev, &len2);
    assert_non_null(enc);
    assert_true(len2 <= len);
    assert_int_equal(ctr_event_decode(enc, len2, &again, err, sizeof(err)), 0);
    assert_string_equal(again.metadata, ev.metadata);
    free(enc);
    free(buf);
    ctr_event_clear(&again);
    ctr_event_clear(&ev);
}

static void test_ids(void **state)
{
    char a[37], b[37];
    (void)state;
    ctr_event_new_id(a);
    ctr_event_new_id(b);
    assert_int_equal(strlen(a), 36);
    assert_string_not_equal(a, b);
    assert_int_equal(a[14], '4');
    assert_true(ctr_event_id_valid(a, 36));
    assert_false(ctr_event_id_valid("", 0));
    assert_false(ctr_event_id_valid("a b", 3));
}

/* The encoder writes numbers with ctr_i64_text instead of printf. */
static void test_integer_text(void **state)
{
    char buf[21];
    (void)state;
    assert_int_equal(ctr_i64_text(0, buf), 1);
    assert_string_equal(buf, "0");
    assert_int_equal(ctr_i64_text(-1, buf), 2);
    assert_string_equal(buf, "-1");
    assert_int_equal(ctr_i64_text(1234567890123LL, buf), 13);
    assert_string_equal(buf, "1234567890123");
    assert_int_equal(ctr_i64_text(INT64_MAX, buf), 19);
    assert_string_equal(buf, "9223372036854775807");
    assert_int_equal(ctr_i64_text(INT64_MIN, buf), 20);
    assert_string_equal(buf, "-9223372036854775808");
    /* every length and sign against printf */
    uint64_t x = 0x9e3779b97f4a7c15u;
    for (int i = 0; i < 20000; i++) {
        char want[32];
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        int64_t v = (int64_t)(x >> (i % 64));
        if (i % 3 == 0)
            v = -v;
        int len = snprintf(want, sizeof(want), "%" PRId64, v);
        assert_int_equal(ctr_i64_text(v, buf), len);
        assert_string_equal(buf, want);
    }

    ctr_event ev = {.v = CTR_EVENT_VERSION,
                    .id = "e1",
                    .counter = "c",
                    .delta = INT64_MIN,
                    .ts_ms = 1764150000123LL},
              back;
    char err[128];
    size_t len;
    char *json = ctr_event_encode(&ev, &len);
    assert_non_null(json);
    assert_string_equal(json, "{\"v\":1,\"id\":\"e1\",\"counter\":\"c\","
                              "\"delta\":-9223372036854775808,"
                              "\"ts\":1764150000123}");
    assert_int_equal(ctr_event_decode(json, len, &back, err, sizeof(err)), 0);
    assert_true(back.delta == INT64_MIN);
    ctr_event_clear(&back);
    free(json);
}

/* Every byte but NUL, each escaped the way JSON requires (or passed
 * through), read back by json-c as the same string. */
static void test_json_quote(void **state)
{
    char in[256];
    ctr_strbuf b = {0};
    (void)state;

    for (int i = 1; i < 256; i++)
        in[i - 1] = (char)i;
    in[255] = '\0';
    ctr_strbuf_put_json(&b, in);
    assert_false(b.failed);
    assert_non_null(strstr(b.s, "\"\\u0001\\u0002"));
    assert_non_null(strstr(b.s, "\\u001f !\\\"#"));
    assert_non_null(strstr(b.s, "[\\\\]"));
    assert_non_null(strstr(b.s, "\\u000a"));
    struct json_object *o = json_tokener_parse(b.s);
    assert_non_null(o);
    assert_true(json_object_is_type(o, json_type_string));
    assert_int_equal(json_object_get_string_len(o), 255);
    assert_memory_equal(json_object_get_string(o), in, 255);
    json_object_put(o);
    ctr_strbuf_clear(&b);

    ctr_strbuf_put_json(&b, "");
    assert_string_equal(b.s, "\"\"");
    ctr_strbuf_clear(&b);
    ctr_strbuf_put_json(&b, "plain caf\xc3\xa9");
    assert_string_equal(b.s, "\"plain caf\xc3\xa9\"");
    ctr_strbuf_clear(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_json_quote),
        cmocka_unit_test(test_rejections),
        cmocka_unit_test(test_reencode_does_not_grow),
        cmocka_unit_test(test_ids),
        cmocka_unit_test(test_integer_text),
    };
    return cmocka_run_group_tests_name("event", tests, NULL, NULL);
}

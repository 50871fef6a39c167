/* test_body.c - the write body parser: defaults, types, ranges, fields. */
#include "api/body.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

static int parse(const char *text, api_write_body *out, api_body_error *err)
{
    return api_body_parse_write(text, strlen(text), API_BODY_DELTA, out, err);
}

static void test_defaults(void **state)
{
    api_write_body b;
    api_body_error e;
    (void)state;
    static const char *const empty[] = {"", " ", "\r\n\t ", "{}", " {} \n"};
    for (size_t i = 0; i < 5; i++) {
        assert_int_equal(parse(empty[i], &b, &e), 0);
        assert_int_equal(b.value, 1);
        assert_null(b.user_id);
        assert_null(b.metadata);
        api_write_body_clear(&b);
    }
}

static void test_valid_bodies(void **state)
{
    api_write_body b;
    api_body_error e;
    (void)state;

    assert_int_equal(parse("{\"value\": 5, \"user_id\": \"u1\", "
                           "\"metadata\": {\"a\": [1, 2]}}",
                           &b, &e),
                     0);
    assert_int_equal(b.value, 5);
    assert_string_equal(b.user_id, "u1");
    assert_string_equal(b.metadata, "{\"a\":[1,2]}");
    api_write_body_clear(&b);

    assert_int_equal(parse("{\"value\": 9223372036854775807}", &b, &e), 0);
    assert_int_equal(b.value, INT64_MAX);
    api_write_body_clear(&b);

    assert_int_equal(parse("{\"user_id\": null, \"metadata\": null}", &b, &e),
                     0);
    assert_null(b.user_id);
    api_write_body_clear(&b);
    /* the strict grammar still takes every valid form */
    assert_int_equal(parse("{\"metadata\": {\"n\": [-0.5e+10, 1E-3, 0, -0], "
                           "\"s\": \"\xc3\xa9\xf0\x9f\x98\x80 \\u00e9\\/\"}}",
                           &b, &e),
                     0);
    assert_string_equal(b.metadata,
                        "{\"n\":[-0.5e+10,1E-3,0,0],"
                        "\"s\":\"\xc3\xa9\xf0\x9f\x98\x80 \xc3\xa9\\/\"}");
    api_write_body_clear(&b);
}

static void test_rejections(void **state)
{
    static const struct {
        const char *body;
        const char *code;
        const char *field; /* NULL: whole body */
    } cases[] = {
        {"{", "invalid_json", NULL},
        {"{\"value\": 1} x", "invalid_json", NULL},
        {"{\"value\": 1}{}", "invalid_json", NULL},
        {"[1]", "invalid_json", NULL},
        {"1", "invalid_json", NULL},
        {"\"x\"", "invalid_json", NULL},
        {"{\"value\": 0}", "invalid_field", "value"},
        {"{\"value\": -3}", "invalid_field", "value"},
        {"{\"value\": 1.5}", "invalid_field", "value"},
        {"{\"value\": 1e3}", "invalid_field", "value"},
        {"{\"value\": \"5\"}", "invalid_field", "value"},
        {"{\"value\": true}", "invalid_field", "value"},
        {"{\"value\": null}", "invalid_field", "value"},
        {"{\"value\": 9223372036854775808}", "invalid_field", "value"},
        {"{\"value\": 99999999999999999999999}", "invalid_field", "value"},
        {"{\"user_id\": 5}", "invalid_field", "user_id"},
        {"{\"user_id\": \"\"}", "invalid_field", "user_id"},
        {"{\"user_id\": \"a\\nb\"}", "invalid_field", "user_id"},
        {"{\"user_id\": \"a\\u0000b\"}", "invalid_field", "user_id"},
        {"{\"metadata\": [1]}", "invalid_field", "metadata"},
        {"{\"metadata\": \"x\"}", "invalid_field", "metadata"},
        {"{\"vaule\": 5}", "unknown_field", NULL},
        /* json-c takes all of these; the first five went on verbatim into
         * the event's metadata, where strict consumers cannot read them */
        {"{\"metadata\": {\"x\": NaN}}", "invalid_json", NULL},
        {"{\"metadata\": {\"x\": -Infinity}}", "invalid_json", NULL},
        {"{\"metadata\": {\"x\": 1.}}", "invalid_json", NULL},
        {"{\"metadata\": {\"x\": \"\xc0\x80\"}}", "invalid_json", NULL},
        {"{\"metadata\": {\"x\": \"\xed\xa0\x80\"}}", "invalid_json", NULL},
        {"{\"metadata\": {\"x\": \"a\tb\"}}", "invalid_json", NULL},
        {"{'value': 1}", "invalid_json", NULL},
        {"{\"value\": -01}", "invalid_json", NULL},
        /* lone surrogates would read as U+FFFD: two ids alike */
        {"{\"user_id\": \"\\udc00\"}", "invalid_json", NULL},
        {"{\"user_id\": \"\\ud800x\"}", "invalid_json", NULL},
        {"{\"user_id\": \"\\ud800\\u0041\"}", "invalid_json", NULL},
    };
    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        api_write_body b;
        api_body_error e;
        memset(&e, 0, sizeof(e));
        int rc = parse(cases[i].body, &b, &e);
        if (rc == 0)
            fail_msg("accepted: %s", cases[i].body);
        assert_string_equal(e.code, cases[i].code);
        if (cases[i].field) {
            assert_non_null(e.field);
            assert_string_equal(e.field, cases[i].field);
            /* the message names the field */
            assert_non_null(strstr(e.message, cases[i].field));
        } else {
            assert_null(e.field);
        }
        assert_null(b.user_id);
        assert_null(b.metadata);
    }
}

static void test_surrogate_pair(void **state)
{
    api_write_body b;
    api_body_error e;
    (void)state;
    assert_int_equal(parse("{\"user_id\": \"\\ud83c\\udfae\"}", &b, &e), 0);
    assert_string_equal(b.user_id, "\xf0\x9f\x8e\xae");
    api_write_body_clear(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_valid_bodies),
        cmocka_unit_test(test_rejections),
        cmocka_unit_test(test_surrogate_pair),
    };
    return cmocka_run_group_tests_name("body", tests, NULL, NULL);
}

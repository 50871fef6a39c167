/* test_body.c - the write body parser: defaults, types, ranges, fields. */
#include "api/body.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
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
                        "\"s\":\"\xc3\xa9\xf0\x9f\x98\x80 \xc3\xa9/\"}");
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

static int parse_set(const char *text, api_write_body *out, api_body_error *err)
{
    return api_body_parse_write(text, strlen(text), API_BODY_SET, out, err);
}

/* A repeated key anywhere: parsers differ on which one wins (json-c:
 * the last), so a proxy could check one value and the api apply another. */
static void test_duplicate_keys(void **state)
{
    static const struct {
        const char *body;
        const char *field; /* NULL: none */
        const char *key;   /* as the message shows it */
    } cases[] = {
        {"{\"value\": 1, \"value\": 1000}", "value", "\"value\""},
        {"{\"value\": 1, \"\\u0076alue\": 2}", "value", "\"value\""},
        {"{\"user_id\": \"a\", \"metadata\": {}, \"user_id\": \"b\"}",
         "user_id", "\"user_id\""},
        {"{\"metadata\": null, \"metadata\": {}}", "metadata", "\"metadata\""},
        {"{\"vaule\": 1, \"vaule\": 2}", NULL, "\"vaule\""},
        {"{\"metadata\": {\"a\": 1, \"a\": 2}}", "metadata", "\"a\""},
        {"{\"metadata\": {\"x\": {\"y\": [{\"k\": 1, \"k\": 1}]}}}", "metadata",
         "\"k\""},
        {"{\"metadata\": {\"\\u00e9\": 1, \"\xc3\xa9\": 2}}", "metadata",
         "\"\xc3\xa9\""},
        {"{\"metadata\": {\"\\ud83c\\udfae\": 1, \"\xf0\x9f\x8e\xae\": 2}}",
         "metadata", "\"\xf0\x9f\x8e\xae\""},
        {"{\"metadata\": {\"\\/\": 1, \"/\": 2}}", "metadata", "\"/\""},
        /* past 8 keys the object's keys are sorted by hash first */
        {"{\"metadata\": {\"k0\": 0, \"k1\": 0, \"k2\": 0, \"k3\": 0, \"k4\": "
         "0, "
         "\"k5\": 0, \"k6\": 0, \"k7\": 0, \"k8\": 0, \"k9\": 0, \"k3\": 1}}",
         "metadata", "\"k3\""},
        /* the key's control characters are not echoed */
        {"{\"metadata\": {\"a\\nb\": 1, \"a\\u000ab\": 2}}", "metadata",
         "\"a?b\""},
    };
    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        api_write_body b;
        api_body_error e;
        memset(&e, 0, sizeof(e));
        if (parse(cases[i].body, &b, &e) == 0)
            fail_msg("accepted: %s", cases[i].body);
        assert_string_equal(e.code, "invalid_json");
        if (cases[i].field) {
            assert_non_null(e.field);
            assert_string_equal(e.field, cases[i].field);
        } else {
            assert_null(e.field);
        }
        if (strstr(e.message, cases[i].key) == NULL)
            fail_msg("%s: message %s does not name %s", cases[i].body,
                     e.message, cases[i].key);
    }
}

/* The same key in different objects is no repeat; neither are keys that
 * differ only after a cut or in case. */
static void test_same_key_in_other_objects(void **state)
{
    static const char *const ok[] = {
        "{\"metadata\": {\"a\": {\"a\": 1}, \"b\": {\"a\": 2}}}",
        "{\"metadata\": {\"a\": [{\"a\": 1}, {\"a\": 2}], \"A\": 3}}",
        "{\"metadata\": {\"value\": 1}, \"value\": 2}",
        "{\"metadata\": {\"a\": 1, \"a\\u0000\": 2, \"\": 3}}",
    };
    (void)state;
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        api_write_body b;
        api_body_error e;
        if (parse(ok[i], &b, &e) != 0)
            fail_msg("refused %s: %s", ok[i], e.message);
        api_write_body_clear(&b);
    }
}

/* A long repeated key is cut on a character boundary in the message. */
static void test_duplicate_key_message_is_cut(void **state)
{
    char body[1024], key[301];
    api_write_body b;
    api_body_error e;
    (void)state;
    for (int i = 0; i < 100; i++)
        memcpy(key + 3 * i, "\xe2\x82\xac", 3); /* 100 euro signs */
    key[300] = '\0';
    snprintf(body, sizeof(body), "{\"metadata\": {\"%s\": 1, \"%s\": 2}}", key,
             key);
    assert_int_equal(parse(body, &b, &e), -1);
    assert_string_equal(e.code, "invalid_json");
    assert_non_null(strstr(e.message, "\xe2\x82\xac..."));
    assert_true(strlen(e.message) < sizeof(e.message) - 1);
    /* whole characters only */
    const char *q = strchr(e.message, '"') + 1;
    assert_int_equal((strstr(q, "...") - q) % 3, 0);
}

/* Integers at and around +-2^53 and +-2^63: exact, or refused naming the
 * field; never clamped. */
static void test_integer_edges(void **state)
{
    static const struct {
        const char *body;
        int set;          /* API_BODY_SET */
        int ok;           /* accepted */
        int64_t value;    /* when ok */
        const char *code; /* when refused */
        const char *field;
    } cases[] = {
        {"{\"value\": 9007199254740992}", 0, 1, 9007199254740992LL, 0, 0},
        {"{\"value\": 9007199254740993}", 0, 1, 9007199254740993LL, 0, 0},
        {"{\"value\": 9223372036854775806}", 0, 1, INT64_MAX - 1, 0, 0},
        {"{\"value\": 9223372036854775807}", 0, 1, INT64_MAX, 0, 0},
        {"{\"value\": 9223372036854775808}", 0, 0, 0, "invalid_field", "value"},
        {"{\"value\": 18446744073709551615}", 0, 0, 0, "invalid_field",
         "value"},
        {"{\"value\": 18446744073709551616}", 0, 0, 0, "invalid_field",
         "value"},
        {"{\"value\": -9223372036854775809}", 0, 0, 0, "invalid_field",
         "value"},
        {"{\"value\": 9007199254740993}", 1, 1, 9007199254740993LL, 0, 0},
        {"{\"value\": -9007199254740993}", 1, 1, -9007199254740993LL, 0, 0},
        {"{\"value\": -9007199254740992}", 1, 1, -9007199254740992LL, 0, 0},
        {"{\"value\": 9223372036854775807}", 1, 1, INT64_MAX, 0, 0},
        {"{\"value\": -9223372036854775807}", 1, 1, -INT64_MAX, 0, 0},
        {"{\"value\": -9223372036854775808}", 1, 1, INT64_MIN, 0, 0},
        {"{\"value\": -9223372036854775809}", 1, 0, 0, "invalid_field",
         "value"},
        {"{\"value\": -18446744073709551616}", 1, 0, 0, "invalid_field",
         "value"},
        {"{\"value\": 9223372036854775808}", 1, 0, 0, "invalid_field", "value"},
        {"{\"value\": -9223372036854775808.0}", 1, 0, 0, "invalid_field",
         "value"},
        {"{\"value\": -9.223372036854775808e18}", 1, 0, 0, "invalid_field",
         "value"},
        {"{\"metadata\": {\"n\": -9223372036854775809}}", 0, 0, 0,
         "invalid_field", "metadata"},
        {"{\"metadata\": {\"n\": [18446744073709551616]}}", 0, 0, 0,
         "invalid_field", "metadata"},
        {"{\"x\": 18446744073709551616}", 0, 0, 0, "invalid_json", NULL},
    };
    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        api_write_body b;
        api_body_error e;
        memset(&e, 0, sizeof(e));
        int rc = cases[i].set ? parse_set(cases[i].body, &b, &e)
                              : parse(cases[i].body, &b, &e);
        if (cases[i].ok) {
            if (rc != 0)
                fail_msg("refused %s: %s", cases[i].body, e.message);
            assert_int_equal(b.value, cases[i].value);
            api_write_body_clear(&b);
            continue;
        }
        if (rc == 0)
            fail_msg("accepted %s as %lld", cases[i].body, (long long)b.value);
        assert_string_equal(e.code, cases[i].code);
        if (cases[i].field) {
            assert_non_null(e.field);
            assert_string_equal(e.field, cases[i].field);
        } else {
            assert_null(e.field);
        }
    }
}

/* Metadata keeps its integers exact and its '/' unescaped: the event is
 * never larger than the body that made it. */
static void test_metadata_is_not_rewritten(void **state)
{
    api_write_body b;
    api_body_error e;
    (void)state;
    assert_int_equal(
        parse("{\"metadata\": {\"u\": \"a/b\\/c\", \"big\": "
              "18446744073709551615, "
              "\"min\": -9223372036854775808, \"p\": \"https://x.example/a\"}}",
              &b, &e),
        0);
    assert_string_equal(b.metadata,
                        "{\"u\":\"a/b/c\",\"big\":18446744073709551615,"
                        "\"min\":-9223372036854775808,"
                        "\"p\":\"https://x.example/a\"}");
    api_write_body_clear(&b);
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
        cmocka_unit_test(test_duplicate_keys),
        cmocka_unit_test(test_same_key_in_other_objects),
        cmocka_unit_test(test_duplicate_key_message_is_cut),
        cmocka_unit_test(test_integer_edges),
        cmocka_unit_test(test_metadata_is_not_rewritten),
    };
    return cmocka_run_group_tests_name("body", tests, NULL, NULL);
}

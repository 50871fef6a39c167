/* test_strbuf.c - decimal text of 64- and 128-bit integers, and the
 * PostgreSQL array literals built from them. */
#include "common/strbuf.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

static const __int128 I128_MAX = (__int128)(~(unsigned __int128)0 >> 1);

static void test_i128_text(void **state)
{
    static const struct {
        __int128 v;
        const char *text;
    } cases[] = {
        {0, "0"},
        {-1, "-1"},
        {(__int128)1 << 53, "9007199254740992"},
        {((__int128)1 << 53) + 1, "9007199254740993"},
        {INT64_MAX, "9223372036854775807"},
        {INT64_MIN, "-9223372036854775808"},
        {(__int128)INT64_MAX + 1, "9223372036854775808"},
        {(__int128)INT64_MIN - 1, "-9223372036854775809"},
        {(__int128)INT64_MAX * 2, "18446744073709551614"},
        {(__int128)INT64_MIN * 5000, "-46116860184273879040000"},
        {I128_MAX, "170141183460469231731687303715884105727"},
        {-I128_MAX - 1, "-170141183460469231731687303715884105728"},
    };
    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char text[CTR_I128_TEXT_MAX];
        assert_int_equal(ctr_i128_text(cases[i].v, text),
                         strlen(cases[i].text));
        assert_string_equal(text, cases[i].text);
    }
}

static void test_numeric_array(void **state)
{
    ctr_strbuf b = {0};
    (void)state;
    ctr_pgarray_open(&b);
    ctr_pgarray_i128(&b, (__int128)INT64_MAX * 2);
    ctr_pgarray_i64(&b, INT64_MIN);
    ctr_pgarray_i128(&b, -7);
    ctr_pgarray_close(&b);
    assert_false(b.failed);
    assert_string_equal(b.s, "{18446744073709551614,-9223372036854775808,-7}");
    ctr_strbuf_clear(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_i128_text),
        cmocka_unit_test(test_numeric_array),
    };
    return cmocka_run_group_tests_name("strbuf", tests, NULL, NULL);
}

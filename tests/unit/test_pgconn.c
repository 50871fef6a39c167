/* test_pgconn.c - reading PostgreSQL's integers (bigint, and numeric sums
 * of any size) exactly: in int64, outside it, or no integer at all. */
#include "common/pgconn.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

static void test_pg_int(void **state)
{
    static const struct {
        const char *text;
        int result; /* 0 in int64, 1 outside, -1 not an integer */
        int64_t value;
    } cases[] = {
        {"0", 0, 0},
        {"-0", 0, 0},
        {"42", 0, 42},
        {"-42", 0, -42},
        {"9007199254740993", 0, 9007199254740993LL},
        {"-9007199254740993", 0, -9007199254740993LL},
        {"9223372036854775807", 0, INT64_MAX},
        {"-9223372036854775808", 0, INT64_MIN},
        {"9223372036854775808", 1, 0},
        {"-9223372036854775809", 1, 0},
        {"18446744073709551614", 1, 0},
        {"99999999999999999999999999999999999999999999", 1, 0},
        {"", -1, 0},
        {"-", -1, 0},
        {"1.0", -1, 0},
        {"1e3", -1, 0},
        {" 1", -1, 0},
        {"1 ", -1, 0},
        {"+1", -1, 0},
        {"NaN", -1, 0},
        {"12a", -1, 0},
    };
    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int64_t v = 7;
        int r = ctr_pg_int(cases[i].text, &v);
        if (r != cases[i].result)
            fail_msg("\"%s\": %d, expected %d", cases[i].text, r,
                     cases[i].result);
        if (r == 0 && v != cases[i].value)
            fail_msg("\"%s\": read %lld", cases[i].text, (long long)v);
        if (r != 0 && v != 7)
            fail_msg("\"%s\": the value was written", cases[i].text);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pg_int),
    };
    return cmocka_run_group_tests_name("pgconn", tests, NULL, NULL);
}

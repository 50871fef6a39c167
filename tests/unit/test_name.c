/* test_name.c - counter names and user ids: what is accepted, what not. */
#include "common/name.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

static void test_counter_names(void **state)
{
    (void)state;
    static const struct {
        const char *name;
        int valid;
    } cases[] = {
        {"online_players", 1},
        {"a", 1},
        {"A.b-c_9", 1},
        {"", 0},
        {"a b", 0},
        {"a:b", 0},
        {"{c:x}", 0},
        {"a}", 0},
        {"a/b", 0},
        {"a%20", 0},
        {"caf\xc3\xa9", 0},
        {"a\nb", 0},
        {"'; DROP", 0},
        {"EVAL", 1},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        assert_int_equal(ctr_name_valid(cases[i].name, strlen(cases[i].name)),
                         cases[i].valid);

    char longest[CTR_NAME_MAX + 2];
    memset(longest, 'x', sizeof(longest));
    assert_true(ctr_name_valid(longest, CTR_NAME_MAX));
    assert_false(ctr_name_valid(longest, CTR_NAME_MAX + 1));
    assert_false(ctr_name_valid("ab\0c", 4)); /* embedded NUL */
    assert_false(ctr_name_valid(NULL, 0));
}

static void test_user_ids(void **state)
{
    (void)state;
    assert_true(ctr_user_id_valid("u123456", 7));
    assert_true(ctr_user_id_valid("user:{1}'\"", 10)); /* stored verbatim */
    assert_true(ctr_user_id_valid("caf\xc3\xa9", 5));
    assert_true(ctr_user_id_valid("\xf0\x9f\x8e\xae", 4)); /* emoji */
    assert_false(ctr_user_id_valid("", 0));
    assert_false(ctr_user_id_valid("a\r\nb", 4));
    assert_false(ctr_user_id_valid("a\0b", 3));
    assert_false(ctr_user_id_valid("\xc3", 1));             /* truncated */
    assert_false(ctr_user_id_valid("\xc0\xaf", 2));         /* overlong */
    assert_false(ctr_user_id_valid("\xe2\x82", 2));         /* truncated */
    assert_false(ctr_user_id_valid("\xe0\x80\xaf", 3));     /* overlong */
    assert_false(ctr_user_id_valid("\xf0\x80\x80\xaf", 4)); /* overlong */
    assert_false(ctr_user_id_valid("\xed\xa0\x80", 3));     /* surrogate */
    assert_false(ctr_user_id_valid("\xf4\x90\x80\x80", 4)); /* > U+10FFFF */
    assert_true(ctr_user_id_valid("\xed\x9f\xbf", 3));      /* U+D7FF */
    assert_true(ctr_user_id_valid("\xf4\x8f\xbf\xbf", 4));  /* U+10FFFF */
    assert_false(ctr_user_id_valid("\xff", 1));

    char big[CTR_USER_ID_MAX + 1];
    memset(big, 'u', sizeof(big));
    assert_true(ctr_user_id_valid(big, CTR_USER_ID_MAX));
    assert_false(ctr_user_id_valid(big, CTR_USER_ID_MAX + 1));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_counter_names),
        cmocka_unit_test(test_user_ids),
    };
    return cmocka_run_group_tests_name("name", tests, NULL, NULL);
}

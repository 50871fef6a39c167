/* test_batch.c - the persister's aggregation: one sum per counter, offset
 * ranges per partition, overflow handed back to the caller. */
#include "persister/batch.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>

static ctr_event make(const char *name, int64_t delta, int64_t ts)
{
    ctr_event ev;
    memset(&ev, 0, sizeof(ev));
    ev.v = 1;
    snprintf(ev.counter, sizeof(ev.counter), "%s", name);
    ev.delta = delta;
    ev.ts_ms = ts;
    return ev;
}

static const ps_total *find(ps_batch *b, const char *name)
{
    for (size_t i = 0; i < ps_batch_total_slots(b); i++) {
        const ps_total *t = ps_batch_total_at(b, i);
        if (t->used && strcmp(t->name, name) == 0)
            return t;
    }
    return NULL;
}

static void test_aggregation(void **state)
{
    (void)state;
    ps_batch *b = ps_batch_new(100);
    assert_non_null(b);
    ctr_event a1 = make("a", 5, 10), a2 = make("a", -2, 30),
              b1 = make("b", 1, 20);
    assert_int_equal(ps_batch_add(b, 0, 100, &a1), 0);
    assert_int_equal(ps_batch_add(b, 1, 7, &b1), 0);
    assert_int_equal(ps_batch_add(b, 0, 101, NULL), 0); /* invalid event */
    assert_int_equal(ps_batch_add(b, 0, 102, &a2), 0);

    assert_int_equal(ps_batch_messages(b), 4);
    assert_int_equal(ps_batch_counters(b), 2);
    assert_int_equal(find(b, "a")->delta, 3);
    assert_int_equal(find(b, "a")->last_event_ms, 30);
    assert_int_equal(find(b, "b")->delta, 1);
    assert_int_equal(ps_batch_partitions(b), 2);
    assert_int_equal(ps_batch_partition_at(b, 0)->partition, 0);
    assert_int_equal(ps_batch_partition_at(b, 0)->first_offset, 100);
    assert_int_equal(ps_batch_partition_at(b, 0)->last_offset, 102);
    assert_int_equal(ps_batch_partition_at(b, 1)->last_offset, 7);

    ps_batch_reset(b);
    assert_int_equal(ps_batch_messages(b), 0);
    assert_int_equal(ps_batch_counters(b), 0);
    assert_null(find(b, "a"));
    ps_batch_free(b);
}

static void test_many_counters(void **state)
{
    (void)state;
    ps_batch *b = ps_batch_new(5000);
    char name[32];
    for (int i = 0; i < 5000; i++) {
        snprintf(name, sizeof(name), "c%d", i % 1000);
        ctr_event ev = make(name, 1, i);
        assert_int_equal(ps_batch_add(b, i % 4, i, &ev), 0);
    }
    assert_int_equal(ps_batch_counters(b), 1000);
    int64_t sum = 0;
    for (size_t i = 0; i < ps_batch_total_slots(b); i++)
        if (ps_batch_total_at(b, i)->used)
            sum += ps_batch_total_at(b, i)->delta;
    assert_int_equal(sum, 5000);
    ps_batch_free(b);
}

static void test_overflow_refused(void **state)
{
    (void)state;
    ps_batch *b = ps_batch_new(10);
    ctr_event big = make("x", INT64_MAX, 1), one = make("x", 1, 2);
    assert_int_equal(ps_batch_add(b, 0, 0, &big), 0);
    assert_int_equal(ps_batch_add(b, 0, 1, &one), -1);
    /* the refused event left no trace */
    assert_int_equal(ps_batch_messages(b), 1);
    assert_int_equal(ps_batch_partition_at(b, 0)->last_offset, 0);
    assert_int_equal(find(b, "x")->delta, INT64_MAX);
    ps_batch_free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_aggregation),
        cmocka_unit_test(test_many_counters),
        cmocka_unit_test(test_overflow_refused),
    };
    return cmocka_run_group_tests_name("batch", tests, NULL, NULL);
}

/* test_batch.c - the persister's batch: sums per counter, day and minute,
 * unique rows, HLL groups, offset ranges, and refusals that leave no
 * trace. */
#include "persister/batch.h"

#include "common/strbuf.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>

static ctr_counter_def plain = {.kind = CTR_KIND_COUNTER};
static ctr_counter_def exact = {.kind = CTR_KIND_UNIQUE,
                                .dedup = CTR_DEDUP_EXACT};
static ctr_counter_def approx = {.kind = CTR_KIND_UNIQUE,
                                 .dedup = CTR_DEDUP_HLL};
static const ctr_date d1 = {2026, 11, 25}, d2 = {2026, 11, 26};

static ctr_event make(const char *name, int64_t delta, int64_t ts, char *user)
{
    ctr_event ev;
    memset(&ev, 0, sizeof(ev));
    ev.v = 1;
    snprintf(ev.counter, sizeof(ev.counter), "%s", name);
    ev.delta = delta;
    ev.ts_ms = ts;
    ev.user_id = user;
    return ev;
}

static const ps_sum *find(ps_batch *b, enum ps_table t, const char *name,
                          ctr_date day, int64_t minute)
{
    for (size_t i = 0; i < ps_batch_sum_slots(b); i++) {
        const ps_sum *s = ps_batch_sum_at(b, i);
        if (!s->used || s->table != t || strcmp(s->name, name) != 0)
            continue;
        if (t == PS_DAILY && memcmp(&s->day, &day, sizeof(day)) != 0)
            continue;
        if (t == PS_BUCKET && s->minute_ms != minute)
            continue;
        return s;
    }
    return NULL;
}

static void test_sums(void **state)
{
    (void)state;
    ps_batch *b = ps_batch_new(100);
    assert_non_null(b);
    ctr_event a1 = make("a", 5, 60000, NULL), a2 = make("a", -2, 61000, NULL),
              a3 = make("a", 7, 125000, NULL), b1 = make("b", 1, 20, NULL);
    assert_int_equal(ps_batch_add(b, 0, 100, &a1, &plain, d1), 0);
    assert_int_equal(ps_batch_add(b, 1, 7, &b1, &plain, d1), 0);
    assert_int_equal(ps_batch_add(b, 0, 101, NULL, NULL, d1), 0); /* bad */
    assert_int_equal(ps_batch_add(b, 0, 102, &a2, &plain, d1), 0);
    assert_int_equal(ps_batch_add(b, 0, 103, &a3, &plain, d2), 0);

    assert_int_equal(ps_batch_messages(b), 5);
    assert_int_equal(ps_batch_sums(b, PS_TOTAL), 2);
    assert_int_equal(find(b, PS_TOTAL, "a", d1, 0)->delta, 10);
    assert_int_equal(find(b, PS_TOTAL, "a", d1, 0)->last_event_ms, 125000);
    assert_int_equal(ps_batch_sums(b, PS_DAILY), 3);
    assert_int_equal(find(b, PS_DAILY, "a", d1, 0)->delta, 3);
    assert_int_equal(find(b, PS_DAILY, "a", d2, 0)->delta, 7);
    assert_int_equal(ps_batch_sums(b, PS_BUCKET), 3);
    assert_int_equal(find(b, PS_BUCKET, "a", d1, 60000)->delta, 3);
    assert_int_equal(find(b, PS_BUCKET, "a", d1, 120000)->delta, 7);
    assert_int_equal(find(b, PS_BUCKET, "b", d1, 0)->delta, 1);

    assert_int_equal(ps_batch_partitions(b), 2);
    assert_int_equal(ps_batch_partition_at(b, 0)->first_offset, 100);
    assert_int_equal(ps_batch_partition_at(b, 0)->last_offset, 103);
    assert_int_equal(ps_batch_partition_at(b, 1)->last_offset, 7);

    ps_batch_reset(b);
    assert_int_equal(ps_batch_messages(b), 0);
    assert_null(find(b, PS_TOTAL, "a", d1, 0));
    assert_int_equal(ps_batch_partitions(b), 0);
    ps_batch_free(b);
}

static void test_unique_and_hll(void **state)
{
    (void)state;
    ps_batch *b = ps_batch_new(100);
    char u1[] = "u1", u2[] = "u\"2\\";
    ctr_event e1 = make("dau", 1, 10, u1), e2 = make("dau", 1, 11, u2),
              e3 = make("dau", 1, 12, u1), h1 = make("hau", 1, 13, u1),
              h2 = make("hau", 1, 14, u2), nouser = make("dau", 1, 15, NULL);
    assert_int_equal(ps_batch_add(b, 0, 0, &e1, &exact, d1), 0);
    assert_int_equal(ps_batch_add(b, 0, 1, &e2, &exact, d1), 0);
    assert_int_equal(ps_batch_add(b, 0, 2, &e3, &exact, d1), 0);
    assert_int_equal(ps_batch_add(b, 0, 3, &h1, &approx, d1), 0);
    assert_int_equal(ps_batch_add(b, 0, 4, &h2, &approx, d1), 0);
    assert_int_equal(ps_batch_add(b, 0, 5, &nouser, &exact, d1), 0);

    /* rows are kept in log order; PostgreSQL dedups them */
    assert_int_equal(ps_batch_unique_rows(b), 3);
    assert_string_equal(ps_batch_unique_at(b, 1)->user_id, u2);
    assert_int_equal(ps_batch_sums(b, PS_TOTAL), 0);
    assert_int_equal(ps_batch_hll_groups(b), 1);
    assert_int_equal(ctr_hll_estimate(ps_batch_hll_at(b, 0)->regs), 2);
    assert_int_equal(ps_batch_partition_at(b, 0)->last_offset, 5);
    ps_batch_free(b); /* frees the copied user ids (ASan checks) */
}

/* Sums are exact past int64 (a day or a minute of late events can hold
 * any number of them); a batch refuses only when it is full or would
 * need a 1025th partition, and then leaves no trace. */
static void test_sums_beyond_int64_and_refusals(void **state)
{
    (void)state;
    ps_batch *b = ps_batch_new(4);
    ctr_event big = make("x", INT64_MAX, 1, NULL), one = make("x", 1, 2, NULL),
              low = make("y", INT64_MIN, 3, NULL);
    assert_int_equal(ps_batch_add(b, 0, 0, &big, &plain, d1), 0);
    assert_int_equal(ps_batch_add(b, 0, 1, &big, &plain, d1), 0);
    assert_int_equal(ps_batch_add(b, 0, 2, &one, &plain, d1), 0);
    char text[CTR_I128_TEXT_MAX];
    ctr_i128_text(find(b, PS_TOTAL, "x", d1, 0)->delta, text);
    assert_string_equal(text, "18446744073709551615"); /* 2^64 - 1 */
    ctr_i128_text(find(b, PS_BUCKET, "x", d1, 0)->delta, text);
    assert_string_equal(text, "18446744073709551615");
    assert_int_equal(ps_batch_add(b, 3, 3, &low, &plain, d1), 0);
    assert_int_equal(ps_batch_add(b, 0, 4, &one, &plain, d1), -1); /* full */
    assert_int_equal(ps_batch_messages(b), 4);
    assert_int_equal(ps_batch_partitions(b), 2);
    ps_batch_free(b);

    b = ps_batch_new(2000);
    for (int p = 0; p < 1024; p++)
        assert_int_equal(ps_batch_add(b, p, 0, NULL, NULL, d1), 0);
    assert_int_equal(ps_batch_add(b, 1024, 0, &one, &plain, d1), -1);
    assert_int_equal(ps_batch_partitions(b), 1024); /* no range for it */
    assert_null(find(b, PS_TOTAL, "x", d1, 0));
    ps_batch_free(b);
}

/* A batch takes any number of HLL groups (once at most 64: a batch of
 * the applier's records, which cannot be flushed half way, then failed
 * for good). */
static void test_many_hll_groups(void **state)
{
    (void)state;
    ps_batch *b = ps_batch_new(1000);
    char name[32], u1[] = "u1";
    for (int i = 0; i < 1000; i++) {
        snprintf(name, sizeof(name), "hll%d", i);
        ctr_event ev = make(name, 1, 10, u1);
        assert_int_equal(ps_batch_add(b, 0, i, &ev, &approx, i % 2 ? d1 : d2),
                         0);
    }
    assert_int_equal(ps_batch_hll_groups(b), 1000);
    assert_string_equal(ps_batch_hll_at(b, 999)->name, "hll999");
    assert_int_equal(ctr_hll_estimate(ps_batch_hll_at(b, 500)->regs), 1);
    ps_batch_reset(b);
    assert_int_equal(ps_batch_hll_groups(b), 0);
    ps_batch_free(b);
}

static void test_applier_records(void **state)
{
    (void)state;
    ps_batch *b = ps_batch_new(10);
    char u1[] = "u1";
    ctr_event r1 = make("c", 3, 10, NULL), r2 = make("dau", 1, 11, u1);
    strcpy(r1.id, "id-1");
    strcpy(r2.id, "id-2");
    assert_int_equal(ps_batch_add_record(b, 2, 40, &r1, &plain, d1, 0, NULL),
                     0);
    assert_int_equal(ps_batch_add_record(b, 2, 41, &r2, &exact, d1, 7, NULL),
                     0);
    /* records wait for the id check: no sums yet, offsets advance */
    assert_int_equal(ps_batch_records(b), 2);
    assert_int_equal(ps_batch_sums(b, PS_TOTAL), 0);
    assert_int_equal(ps_batch_messages(b), 2);
    assert_int_equal(ps_batch_partition_at(b, 0)->last_offset, 41);
    assert_string_equal(ps_batch_record_at(b, 0)->ev.id, "id-1");
    assert_string_equal(ps_batch_record_at(b, 1)->ev.user_id, "u1");
    assert_ptr_not_equal(ps_batch_record_at(b, 1)->ev.user_id, u1); /* copy */
    ps_batch_reset(b);
    assert_int_equal(ps_batch_records(b), 0);
    ps_batch_free(b);
}

/* A quarantined message only advances its offset; its reason is kept for
 * the sink's quarantined_events row. A full batch takes none, and leaves
 * no trace of it. */
static void test_quarantined(void **state)
{
    (void)state;
    ps_batch *b = ps_batch_new(3);
    ctr_event one = make("x", 1, 2, NULL);
    assert_int_equal(ps_batch_add(b, 0, 10, &one, &plain, d1), 0);
    assert_int_equal(
        ps_batch_add_quarantined(b, 0, 11, "postgresql refused it: 23514: x"),
        0);
    assert_int_equal(ps_batch_messages(b), 2);
    assert_int_equal(ps_batch_quarantined(b), 1);
    assert_int_equal(ps_batch_quarantined_at(b, 0)->partition, 0);
    assert_int_equal(ps_batch_quarantined_at(b, 0)->offset, 11);
    assert_string_equal(ps_batch_quarantined_at(b, 0)->reason,
                        "postgresql refused it: 23514: x");
    assert_int_equal(ps_batch_partition_at(b, 0)->last_offset, 11);
    assert_int_equal(find(b, PS_TOTAL, "x", d1, 0)->delta, 1);
    assert_int_equal(ps_batch_add(b, 0, 12, &one, &plain, d1), 0);
    assert_int_equal(ps_batch_add_quarantined(b, 0, 13, "full"), -1);
    assert_int_equal(ps_batch_quarantined(b), 1);
    assert_int_equal(ps_batch_partition_at(b, 0)->last_offset, 12);
    ps_batch_reset(b);
    assert_int_equal(ps_batch_quarantined(b), 0);
    ps_batch_free(b); /* frees the reasons (ASan checks) */
}

/* A new counter's total, day and minute must take three slots even where
 * their hashes meet in a small table. */
static void test_new_counter_sums_never_share_a_slot(void **state)
{
    (void)state;
    char name[32];
    for (int i = 0; i < 2000; i++) {
        ps_batch *b = ps_batch_new(1); /* the smallest table: 16 slots */
        snprintf(name, sizeof(name), "c%d", i);
        ctr_event ev = make(name, 17, 61000, NULL);
        assert_int_equal(ps_batch_add(b, 0, 0, &ev, &plain, d1), 0);
        for (int t = PS_TOTAL; t <= PS_BUCKET; t++) {
            const ps_sum *sum = find(b, (enum ps_table)t, name, d1, 60000);
            if (sum == NULL || sum->delta != 17)
                fail_msg("%s: table %d has %s", name, t,
                         sum ? "a wrong sum" : "no row");
        }
        ps_batch_free(b);
    }
}

static void test_hll_accuracy(void **state)
{
    (void)state;
    uint8_t regs[CTR_HLL_REGISTERS] = {0};
    char id[32];
    for (int i = 0; i < 100000; i++) {
        int n = snprintf(id, sizeof(id), "user-%d", i);
        ctr_hll_add(regs, ctr_hll_hash(id, (size_t)n));
    }
    int64_t est = ctr_hll_estimate(regs);
    assert_in_range(est, 95000, 105000); /* about 1.6% standard error */
    for (int i = 0; i < 1000; i++) {     /* the same users again add nothing */
        int n = snprintf(id, sizeof(id), "user-%d", i);
        assert_int_equal(ctr_hll_add(regs, ctr_hll_hash(id, (size_t)n)), 0);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sums),
        cmocka_unit_test(test_unique_and_hll),
        cmocka_unit_test(test_sums_beyond_int64_and_refusals),
        cmocka_unit_test(test_many_hll_groups),
        cmocka_unit_test(test_applier_records),
        cmocka_unit_test(test_quarantined),
        cmocka_unit_test(test_new_counter_sums_never_share_a_slot),
        cmocka_unit_test(test_hll_accuracy),
    };
    return cmocka_run_group_tests_name("batch", tests, NULL, NULL);
}

/* test_fluctuation.c - the abnormal-fluctuation watch: a burst alarms once and
 * clears, and the table stays bounded without locking real counters out
 * when floods of names come and go. */
#include "persister/fluctuation.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { WINDOW_MS = 1000, WARMUP = 4 };

/* Moves on to the next window (closing the one open). */
static int64_t next_window(ps_fluct *f, int64_t t)
{
    t += WINDOW_MS;
    ps_fluct_tick(f, t);
    return t;
}

static int abnormal(const ps_fluct *f, const char *name)
{
    ctr_strbuf b = {0};
    char line[200];
    ps_fluct_render(f, &b);
    snprintf(line, sizeof(line), "counter_abnormal{counter=\"%s\"} 1\n", name);
    int found = b.s && strstr(b.s, line) != NULL;
    ctr_strbuf_clear(&b);
    return found;
}

static size_t watched(const ps_fluct *f)
{
    ctr_strbuf b = {0};
    ps_fluct_render(f, &b);
    const char *p = b.s ? strstr(b.s, "\ncounter_fluctuation_watched ") : NULL;
    size_t n = p ? (size_t)strtoul(p + 29, NULL, 10) : (size_t)-1;
    ctr_strbuf_clear(&b);
    return n;
}

/* Changes name by 10 in each of `windows` windows. */
static int64_t steady(ps_fluct *f, int64_t t, const char *name, int windows)
{
    for (int w = 0; w < windows; w++) {
        ps_fluct_add(f, name, 10, t + 1);
        t = next_window(f, t);
    }
    return t;
}

/* A burst after a steady run raises the alarm if name is watched. */
static int64_t burst(ps_fluct *f, int64_t t, const char *name)
{
    ps_fluct_add(f, name, -1e6, t + 1); /* the sign does not matter */
    return next_window(f, t);
}

static void test_burst_alarms_and_clears(void **state)
{
    (void)state;
    ps_fluct *f = ps_fluct_new(WINDOW_MS, WARMUP);
    assert_non_null(f);
    int64_t t = next_window(f, 0);
    t = steady(f, t, "games", 6);
    assert_false(abnormal(f, "games"));
    t = burst(f, t, "games");
    assert_true(abnormal(f, "games"));
    t = steady(f, t, "games", 1);
    assert_false(abnormal(f, "games"));
    assert_int_equal(watched(f), 1);
    ps_fluct_free(f);
}

/*
 * Floods of names changed once or a few times, then a quiet spell: a
 * counter established before the flood stays watched through it, and a
 * counter new after it is watched (its burst alarms), while the table
 * never holds more than its slots.
 */
static void test_floods_of_names(void **state)
{
    static const struct {
        const char *what;
        int junk;          /* names in the flood */
        int junk_windows;  /* windows in which each of them changes */
        int quiet_windows; /* windows without a change after it */
    } cases[] = {
        {"no flood", 0, 0, 0},
        {"names changed once, more than the table holds", 3 * PS_FLUCT_SLOTS, 1,
         0},
        {"names changed in fewer windows than the warmup", 2 * PS_FLUCT_SLOTS,
         WARMUP - 1, 0},
        {"names established, then idle past the limit", PS_FLUCT_SLOTS / 2,
         WARMUP + 1, PS_FLUCT_IDLE_WINDOWS},
        {"a flood past the idle limit, then one more", 2 * PS_FLUCT_SLOTS,
         WARMUP + 1, PS_FLUCT_IDLE_WINDOWS},
    };
    (void)state;
    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        char name[32];
        ps_fluct *f = ps_fluct_new(WINDOW_MS, WARMUP);
        assert_non_null(f);
        int64_t t = next_window(f, 0);
        t = steady(f, t, "real_old", WARMUP + 2);
        for (int w = 0; w < cases[c].junk_windows; w++) {
            for (int j = 0; j < cases[c].junk; j++) {
                snprintf(name, sizeof(name), "junk-%d", j);
                ps_fluct_add(f, name, 1, t + 1);
            }
            ps_fluct_add(f, "real_old", 10, t + 1);
            t = next_window(f, t);
            if (watched(f) > PS_FLUCT_SLOTS)
                fail_msg("%s: %zu watched", cases[c].what, watched(f));
        }
        for (int w = 0; w < cases[c].quiet_windows; w++) {
            ps_fluct_add(f, "real_old", 10, t + 1);
            t = next_window(f, t);
        }
        if (!ps_fluct_watching(f, "real_old"))
            fail_msg("%s: the established counter was pushed out",
                     cases[c].what);
        t = steady(f, t, "real_new", WARMUP + 2);
        if (!ps_fluct_watching(f, "real_new"))
            fail_msg("%s: a new counter is not watched", cases[c].what);
        t = burst(f, t, "real_new");
        if (!abnormal(f, "real_new"))
            fail_msg("%s: the new counter's burst raised no alarm",
                     cases[c].what);
        t = burst(f, t, "real_old");
        if (!abnormal(f, "real_old"))
            fail_msg("%s: the old counter's burst raised no alarm",
                     cases[c].what);
        ps_fluct_free(f);
    }
}

/* Names unchanged for the idle limit are forgotten; the rest stay. */
static void test_idle_names_are_forgotten(void **state)
{
    (void)state;
    ps_fluct *f = ps_fluct_new(WINDOW_MS, WARMUP);
    int64_t t = next_window(f, 0);
    ps_fluct_add(f, "once", 5, t + 1);
    ps_fluct_add(f, "busy", 5, t + 1);
    t = next_window(f, t); /* the window "once" changed in */
    for (int w = 0; w < PS_FLUCT_IDLE_WINDOWS - 1; w++) {
        ps_fluct_add(f, "busy", 5, t + 1);
        t = next_window(f, t);
    }
    assert_true(ps_fluct_watching(f, "once"));
    ps_fluct_add(f, "busy", 5, t + 1);
    t = next_window(f, t);
    assert_false(ps_fluct_watching(f, "once"));
    assert_true(ps_fluct_watching(f, "busy"));
    assert_int_equal(watched(f), 1);
    ps_fluct_free(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_burst_alarms_and_clears),
        cmocka_unit_test(test_floods_of_names),
        cmocka_unit_test(test_idle_names_are_forgotten),
    };
    return cmocka_run_group_tests_name("fluct", tests, NULL, NULL);
}

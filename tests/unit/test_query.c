/* test_query.c - the history read's query (api/query.c): which of from, to
 * and interval may be left out, and the range a history without them
 * reads: the last hour of minutes, day of hours, 30 local days of days,
 * ending with the period that holds now, aligned in the counter's zone. */
#include "api/query.h"
#include "common/timeutil.h"
#include "common/tz.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "instants.h" /* after cmocka.h */

static const struct {
    const char *query; /* NULL: no query at all */
    const char *zone;
    const char *now;
    const char *from, *to; /* the range used */
} ranges[] = {
    /* nothing given: the last day of hours, ending with this hour */
    {NULL, "UTC", "2026-11-26T10:30:00Z", "2026-11-25T11:00:00Z",
     "2026-11-26T11:00:00Z"},
    {"", "UTC", "2026-11-26T10:30:00Z", "2026-11-25T11:00:00Z",
     "2026-11-26T11:00:00Z"},
    /* the last hour of minutes, ending with this minute */
    {"interval=minute", "UTC", "2026-11-26T10:30:15.5Z", "2026-11-26T09:31:00Z",
     "2026-11-26T10:31:00Z"},
    /* hours in a half-hour zone start at half past */
    {"interval=hour", "Asia/Kolkata", "2026-11-26T10:10:00Z",
     "2026-11-25T10:30:00Z", "2026-11-26T10:30:00Z"},
    /* 30 local days, ending with today */
    {"interval=day", "Asia/Shanghai", "2026-11-26T17:00:00Z",
     "2026-10-29T00:00:00+08:00", "2026-11-28T00:00:00+08:00"},
    /* across a DST change: 30 local days, one of them 23 hours long */
    {"interval=day", "America/New_York", "2026-03-20T12:00:00Z",
     "2026-02-19T00:00:00-05:00", "2026-03-21T00:00:00-04:00"},
    /* to alone: the default span before it */
    {"to=2026-01-02T00:00:00Z&interval=minute", "UTC", "2026-11-26T10:30:00Z",
     "2026-01-01T23:00:00Z", "2026-01-02T00:00:00Z"},
    {"to=2026-01-02T12:00:00Z&interval=day", "UTC", "2026-11-26T10:30:00Z",
     "2025-12-04T00:00:00Z", "2026-01-02T12:00:00Z"},
    /* from alone: up to the end of the current period */
    {"from=2026-11-26T08:00:00Z", "UTC", "2026-11-26T10:30:00Z",
     "2026-11-26T08:00:00Z", "2026-11-26T11:00:00Z"},
    /* both: as given */
    {"from=2026-01-01T00:00:00Z&to=2026-01-02T00:00:00Z", "UTC",
     "2026-11-26T10:30:00Z", "2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z"},
    /* never before the year 0001 */
    {"to=0001-01-01T00:30:00Z&interval=hour", "UTC", "2026-11-26T10:30:00Z",
     "0001-01-01T00:00:00Z", "0001-01-01T00:30:00Z"},
};

static void test_default_ranges(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(ranges) / sizeof(ranges[0]); i++) {
        api_history_query h;
        const char *field = NULL;
        char err[160] = "";
        const char *q = ranges[i].query ? ranges[i].query : "(none)";
        if (api_query_history(ranges[i].query, &h, &field, err, sizeof(err)) !=
                0 ||
            api_history_default_range(&h, zone(ranges[i].zone),
                                      at(ranges[i].now), &field, err,
                                      sizeof(err)) != 0)
            fail_msg("%s: refused (%s: %s)", q, field, err);
        if (h.from_ms != at(ranges[i].from) || h.to_ms != at(ranges[i].to)) {
            char from[40], to[40];
            ctr_time_format_rfc3339(h.from_ms, from, sizeof(from));
            ctr_time_format_rfc3339(h.to_ms, to, sizeof(to));
            fail_msg("%s at %s in %s: [%s, %s), want [%s, %s)", q,
                     ranges[i].now, ranges[i].zone, from, to, ranges[i].from,
                     ranges[i].to);
        }
    }
}

static const struct {
    const char *query;
    const char *field; /* refused, naming it */
} refusals[] = {
    {"from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z", "to"},
    {"from=2026-01-01T00:00:00Z&to=2026-01-01T00:00:00Z", "to"},
    {"from=yesterday", "from"},
    {"to=2026-13-01T00:00:00Z", "to"},
    {"from=2026-01-01T00:00:00Z&from=2026-01-01T01:00:00Z", "from"},
    {"to=2026-01-01T00:00:00Z&to=2026-01-01T01:00:00Z", "to"},
    {"interval=week", "interval"},
    {"interval=", "interval"},
    /* from after the default to, which is the end of this period */
    {"from=2026-11-26T11:00:00Z", "from"},
    {"from=2030-01-01T00:00:00Z&interval=day", "from"},
    /* nothing before the year 0001's first instant */
    {"to=0001-01-01T00:00:00Z", "to"},
};

static void test_refusals_name_the_field(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(refusals) / sizeof(refusals[0]); i++) {
        api_history_query h;
        const char *field = NULL;
        char err[160] = "";
        int rc =
            api_query_history(refusals[i].query, &h, &field, err, sizeof(err));
        if (rc == 0)
            rc = api_history_default_range(&h, zone("UTC"),
                                           at("2026-11-26T10:30:00Z"), &field,
                                           err, sizeof(err));
        if (rc == 0)
            fail_msg("%s: accepted", refusals[i].query);
        assert_non_null(field);
        if (strcmp(field, refusals[i].field) != 0)
            fail_msg("%s: field %s, want %s (%s)", refusals[i].query, field,
                     refusals[i].field, err);
        assert_true(strncmp(err, field, strlen(field)) == 0);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_default_ranges),
        cmocka_unit_test(test_refusals_name_the_field),
    };
    return cmocka_run_group_tests_name("query", tests, NULL, NULL);
}

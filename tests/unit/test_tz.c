/* test_tz.c - local days in IANA zones: midnights, 23- and 25-hour days,
 * a zone whose DST starts at midnight, RFC 3339 parsing and formatting. */
#include "common/timeutil.h"
#include "common/tz.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "instants.h" /* after cmocka.h */

static void check_day(const char *zone_name, const char *instant,
                      const char *date, const char *start, const char *end)
{
    int64_t s, e;
    char buf[16];
    ctr_date d = ctr_tz_local_day(zone(zone_name), at(instant), &s, &e);
    ctr_date_format(d, buf, sizeof(buf));
    assert_string_equal(buf, date);
    assert_int_equal(s, at(start));
    assert_int_equal(e, at(end));
}

static void test_local_days(void **state)
{
    (void)state;
    /* either side of midnight in a zone east of UTC */
    check_day("Asia/Shanghai", "2026-11-25T15:59:59Z", "2026-11-25",
              "2026-11-25T00:00:00+08:00", "2026-11-26T00:00:00+08:00");
    check_day("Asia/Shanghai", "2026-11-25T16:00:00Z", "2026-11-26",
              "2026-11-26T00:00:00+08:00", "2026-11-27T00:00:00+08:00");
    /* New York: 23-hour day (2026-03-08) and 25-hour day (2026-11-01) */
    check_day("America/New_York", "2026-03-08T12:00:00-04:00", "2026-03-08",
              "2026-03-08T00:00:00-05:00", "2026-03-09T00:00:00-04:00");
    check_day("America/New_York", "2026-11-01T01:30:00-05:00", "2026-11-01",
              "2026-11-01T00:00:00-04:00", "2026-11-02T00:00:00-05:00");
    check_day("America/New_York", "2026-11-01T03:59:59Z", "2026-10-31",
              "2026-10-31T00:00:00-04:00", "2026-11-01T00:00:00-04:00");
    /* Santiago starts DST at midnight: 2026-09-06 begins at 01:00 */
    check_day("America/Santiago", "2026-09-06T12:00:00-03:00", "2026-09-06",
              "2026-09-06T01:00:00-03:00", "2026-09-07T00:00:00-03:00");
    /* a 30-minute offset */
    check_day("Asia/Kolkata", "2026-11-25T18:29:59Z", "2026-11-25",
              "2026-11-25T00:00:00+05:30", "2026-11-26T00:00:00+05:30");
    check_day("UTC", "2026-11-26T00:00:00Z", "2026-11-26",
              "2026-11-26T00:00:00Z", "2026-11-27T00:00:00Z");
    /* the cache of the last day must not leak into another zone */
    check_day("Asia/Shanghai", "2026-11-25T16:00:00Z", "2026-11-26",
              "2026-11-26T00:00:00+08:00", "2026-11-27T00:00:00+08:00");
}

static void test_offsets_and_formatting(void **state)
{
    char buf[40];
    (void)state;
    assert_int_equal(ctr_tz_offset_s(zone("Asia/Kolkata"), 0), 19800);
    assert_int_equal(
        ctr_tz_offset_s(zone("America/New_York"), at("2026-07-01T00:00:00Z")),
        -4 * 3600);
    ctr_time_format_offset(at("2026-11-25T16:00:00Z"), 8 * 3600, buf,
                           sizeof(buf));
    assert_string_equal(buf, "2026-11-26T00:00:00+08:00");
    ctr_time_format_offset(at("2026-11-25T16:00:00Z"), -(5 * 3600 + 1800), buf,
                           sizeof(buf));
    assert_string_equal(buf, "2026-11-25T10:30:00-05:30");
    ctr_time_format_rfc3339(at("2026-11-26T10:30:00.123+00:00"), buf,
                            sizeof(buf));
    assert_string_equal(buf, "2026-11-26T10:30:00.123Z");
}

/* The formatter does its own calendar arithmetic: it must agree with
 * gmtime_r on every day of several centuries, leap days included. */
static void test_rfc3339_format_matches_gmtime(void **state)
{
    char got[40], want[96];
    struct tm tm;
    (void)state;
    for (int64_t ms = -2208988800000LL; ms < 7258118400000LL;
         ms += 86400000LL + 3723456) {
        time_t t = (time_t)(ms / 1000 - (ms % 1000 < 0));
        int frac = (int)(((ms % 1000) + 1000) % 1000);
        gmtime_r(&t, &tm);
        snprintf(want, sizeof(want), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ",
                 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                 tm.tm_min, tm.tm_sec, frac);
        assert_int_equal(ctr_time_format_rfc3339(ms, got, sizeof(got)), 24);
        assert_string_equal(got, want);
    }
    assert_int_equal(ctr_time_format_rfc3339(0, got, 24), -1);
    assert_int_equal(ctr_time_format_rfc3339(-62167219200001LL, got, 40), -1);
    assert_int_equal(ctr_time_format_rfc3339(-62167219200000LL, got, 40), 24);
    assert_string_equal(got, "0000-01-01T00:00:00.000Z");
    assert_int_equal(ctr_time_format_rfc3339(253402300799999LL, got, 40), 24);
    assert_string_equal(got, "9999-12-31T23:59:59.999Z");
    assert_int_equal(ctr_time_format_rfc3339(253402300800000LL, got, 40), -1);
}

static void test_rfc3339_parsing(void **state)
{
    int64_t ms;
    (void)state;
    assert_int_equal(ctr_time_parse_rfc3339("1970-01-01T00:00:00Z", &ms), 0);
    assert_int_equal(ms, 0);
    assert_int_equal(ctr_time_parse_rfc3339("2026-11-26T08:00:00.5+08:00", &ms),
                     0);
    assert_int_equal(ms, at("2026-11-26T00:00:00.500Z"));
    assert_int_equal(ctr_time_parse_rfc3339("2024-02-29t00:00:00z", &ms), 0);
    static const char *const bad[] = {
        "2026-11-26T10:30:00",  /* no offset */
        "2026-11-26 10:30:00Z", /* space */
        "2026-02-29T00:00:00Z", /* not a leap year */
        "2026-13-01T00:00:00Z",     "2026-11-31T00:00:00Z",
        "2026-11-26T24:00:00Z",     "2026-11-26T10:30:00.Z",
        "2026-11-26T10:30:00+0800", "2026-11-26T10:30:00Zjunk",
        "26-11-26T10:30:00Z",       "",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (ctr_time_parse_rfc3339(bad[i], &ms) == 0)
            fail_msg("accepted %s", bad[i]);
}

static void test_unknown_zone_and_dates(void **state)
{
    char err[200];
    ctr_date d;
    (void)state;
    assert_null(ctr_tz_get("Mars/Olympus", err, sizeof(err)));
    assert_non_null(strstr(err, "Mars/Olympus"));
    assert_null(ctr_tz_get("../../etc/passwd", err, sizeof(err)));
    assert_int_equal(ctr_date_parse("2026-12-31", &d), 0);
    d = ctr_date_add_days(d, 1);
    assert_int_equal(d.year, 2027);
    assert_int_equal(d.month, 1);
    assert_int_equal(d.day, 1);
    d = ctr_date_add_days(d, -366);
    ctr_date_format(d, err, sizeof(err));
    assert_string_equal(err, "2025-12-31");
    assert_int_equal(ctr_date_parse("2026-02-30", &d), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_local_days),
        cmocka_unit_test(test_offsets_and_formatting),
        cmocka_unit_test(test_rfc3339_format_matches_gmtime),
        cmocka_unit_test(test_rfc3339_parsing),
        cmocka_unit_test(test_unknown_zone_and_dates),
    };
    return cmocka_run_group_tests_name("tz", tests, NULL, NULL);
}

/*
 * instants.h - for the unit tests that speak of instants and zones: an
 * RFC 3339 text as ms since the epoch, and a zone by name, each failing
 * the test when it cannot be had. Include after cmocka.h.
 */
#ifndef COUNTER_TESTS_UNIT_INSTANTS_H
#define COUNTER_TESTS_UNIT_INSTANTS_H

#include "common/timeutil.h"
#include "common/tz.h"

static int64_t at(const char *rfc3339)
{
    int64_t ms = 0;
    assert_int_equal(ctr_time_parse_rfc3339(rfc3339, &ms), 0);
    return ms;
}

static const ctr_tz *zone(const char *name)
{
    char err[200];
    const ctr_tz *tz = ctr_tz_get(name, err, sizeof(err));
    assert_non_null(tz);
    return tz;
}

#endif

/*
 * tz.h - IANA time zones: the local date of an instant, and the instants
 * where a local date begins and ends. Daily counters are windows keyed by
 * the local date, so 23- and 25-hour days need nothing special.
 */
#ifndef COUNTER_COMMON_TZ_H
#define COUNTER_COMMON_TZ_H

#include <stddef.h>
#include <stdint.h>

typedef struct ctr_tz ctr_tz;

typedef struct ctr_date {
    int year, month, day; /* month 1-12, day 1-31 */
} ctr_date;

/*
 * Loads zone `name` ("UTC", "Asia/Shanghai", ...) from the system's
 * zoneinfo. Returns NULL with "unknown time zone ..." in errbuf if there is
 * no such zone. Zones are loaded once and live until ctr_tz_free_all().
 */
const ctr_tz *ctr_tz_get(const char *name, char *errbuf, size_t errlen)
    __attribute__((warn_unused_result));

const char *ctr_tz_name(const ctr_tz *tz);

/*
 * The local date at ts_ms, and the [start, end) instants of that local day
 * in ms since the epoch (end - start is 23, 24 or 25 hours). Any thread.
 */
ctr_date ctr_tz_local_day(const ctr_tz *tz, int64_t ts_ms, int64_t *start_ms,
                          int64_t *end_ms);

/* The first instant of local date d, in ms since the epoch. Any thread. */
int64_t ctr_tz_day_start(const ctr_tz *tz, ctr_date d);

/* The UTC offset in seconds at ts_ms (east positive). Any thread. */
int ctr_tz_offset_s(const ctr_tz *tz, int64_t ts_ms);

/* "2026-11-26" into buf (at least 11 bytes). */
void ctr_date_format(ctr_date d, char *buf, size_t len);

/* Parses "YYYY-MM-DD"; returns 0 or -1. */
int ctr_date_parse(const char *s, ctr_date *out);

/* Adds n days (may be negative). */
ctr_date ctr_date_add_days(ctr_date d, int n);

void ctr_tz_free_all(void);

#endif

/*
 * timeutil.h - wall-clock and monotonic time, RFC 3339 formatting.
 */
#ifndef COUNTER_COMMON_TIMEUTIL_H
#define COUNTER_COMMON_TIMEUTIL_H

#include <stddef.h>
#include <stdint.h>

/* Milliseconds since the Unix epoch (wall clock). Any thread. */
int64_t ctr_time_now_ms(void);

/* Milliseconds from an arbitrary origin that never goes back. Any thread. */
int64_t ctr_time_mono_ms(void);
/* The same in microseconds, for latencies. */
int64_t ctr_time_mono_us(void);

/*
 * Writes "2026-11-26T10:30:00.123Z" (UTC, millisecond precision) into buf.
 * Returns the length written, or -1 if buf is smaller than 25 bytes.
 */
int ctr_time_format_rfc3339(int64_t epoch_ms, char *buf, size_t bufsize);

/* Days since 1970-01-01 of a proleptic Gregorian date (month 1-12). */
int64_t ctr_days_from_civil(int64_t year, int month, int day);

/*
 * Writes "2026-11-25T00:00:00+08:00": the instant in local time at the
 * given UTC offset, second precision. Returns the length or -1.
 */
int ctr_time_format_offset(int64_t epoch_ms, int offset_s, char *buf,
                           size_t bufsize);

/*
 * Parses an RFC 3339 date-time: "2026-11-26T10:30:00Z",
 * "2026-11-26T10:30:00.123+08:00" (a lowercase t or z is accepted; an
 * offset is required). Returns 0 with ms since the epoch, or -1.
 */
int ctr_time_parse_rfc3339(const char *s, int64_t *epoch_ms)
    __attribute__((warn_unused_result));

#endif

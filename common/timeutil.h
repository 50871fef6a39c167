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

/*
 * Writes "2026-11-26T10:30:00.123Z" (UTC, millisecond precision) into buf.
 * Returns the length written, or -1 if buf is smaller than 25 bytes.
 */
int ctr_time_format_rfc3339(int64_t epoch_ms, char *buf, size_t bufsize);

#endif

/*
 * timeutil.c - see timeutil.h.
 */
#include "common/timeutil.h"

#include <stdio.h>
#include <time.h>

int64_t ctr_time_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t ctr_time_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int ctr_time_format_rfc3339(int64_t epoch_ms, char *buf, size_t bufsize)
{
    struct tm tm;
    int64_t secs = epoch_ms / 1000, ms = epoch_ms % 1000;

    if (ms < 0) {
        ms += 1000;
        secs -= 1;
    }
    time_t t = (time_t)secs;
    if (bufsize < 25 || gmtime_r(&t, &tm) == NULL)
        return -1;
    return snprintf(buf, bufsize, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ",
                    tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                    tm.tm_min, tm.tm_sec, (int)ms);
}

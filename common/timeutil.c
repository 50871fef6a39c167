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

int64_t ctr_time_mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Writes v (0..10^width-1) as exactly width digits. */
static void put_digits(char *p, unsigned v, int width)
{
    for (int i = width - 1; i >= 0; i--) {
        p[i] = (char)('0' + v % 10);
        v /= 10;
    }
}

/*
 * Every read answer carries a timestamp, so this avoids gmtime_r and
 * snprintf: the civil date comes from the day number by the usual
 * era arithmetic (400-year eras of 146097 days starting on 1 March, so the
 * leap day is the last day of a shifted year).
 */
int ctr_time_format_rfc3339(int64_t epoch_ms, char *buf, size_t bufsize)
{
    int64_t secs = epoch_ms / 1000, ms = epoch_ms % 1000;

    if (ms < 0) {
        ms += 1000;
        secs -= 1;
    }
    int64_t days = secs / 86400, sod = secs % 86400;
    if (sod < 0) {
        sod += 86400;
        days -= 1;
    }
    /* a little beyond 0000-01-01 .. 9999-12-31; the year is checked below */
    if (bufsize < 25 || days < -800000 || days > 3000000)
        return -1;
    int64_t z = days + 719468; /* days since 0000-03-01 */
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    unsigned doe = (unsigned)(z - era * 146097);
    unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    unsigned mp = (5 * doy + 2) / 153; /* month from March = 0 */
    unsigned day = doy - (153 * mp + 2) / 5 + 1;
    unsigned month = mp < 10 ? mp + 3 : mp - 9;
    int64_t year = (int64_t)yoe + era * 400 + (month <= 2);
    if (year < 0 || year > 9999)
        return -1;

    put_digits(buf, (unsigned)year, 4);
    buf[4] = '-';
    put_digits(buf + 5, month, 2);
    buf[7] = '-';
    put_digits(buf + 8, day, 2);
    buf[10] = 'T';
    put_digits(buf + 11, (unsigned)(sod / 3600), 2);
    buf[13] = ':';
    put_digits(buf + 14, (unsigned)(sod / 60 % 60), 2);
    buf[16] = ':';
    put_digits(buf + 17, (unsigned)(sod % 60), 2);
    buf[19] = '.';
    put_digits(buf + 20, (unsigned)ms, 3);
    buf[23] = 'Z';
    buf[24] = '\0';
    return 24;
}

int ctr_time_format_offset(int64_t epoch_ms, int offset_s, char *buf,
                           size_t bufsize)
{
    struct tm tm;
    int64_t secs = epoch_ms / 1000 - (epoch_ms % 1000 < 0 ? 1 : 0);
    time_t t = (time_t)(secs + offset_s);
    int off = offset_s < 0 ? -offset_s : offset_s;

    if (bufsize < 26 || gmtime_r(&t, &tm) == NULL)
        return -1;
    return snprintf(buf, bufsize, "%04d-%02d-%02dT%02d:%02d:%02d%c%02d:%02d",
                    tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                    tm.tm_min, tm.tm_sec, offset_s < 0 ? '-' : '+', off / 3600,
                    off / 60 % 60);
}

int64_t ctr_days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

/* Reads exactly n digits at *p. */
static int digits(const char **p, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        char c = (*p)[i];
        if (c < '0' || c > '9')
            return -1;
        v = v * 10 + (c - '0');
    }
    *p += n;
    *out = v;
    return 0;
}

int ctr_time_parse_rfc3339(const char *s, int64_t *epoch_ms)
{
    static const int mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int y, mo, d, h, mi, sec, ms = 0, oh = 0, om = 0, sign = 1;
    const char *p = s;

    if (s == NULL || digits(&p, 4, &y) || *p++ != '-' || digits(&p, 2, &mo) ||
        *p++ != '-' || digits(&p, 2, &d) || (*p != 'T' && *p != 't'))
        return -1;
    p++;
    if (digits(&p, 2, &h) || *p++ != ':' || digits(&p, 2, &mi) || *p++ != ':' ||
        digits(&p, 2, &sec))
        return -1;
    if (*p == '.') {
        int n = 0;
        p++;
        while (*p >= '0' && *p <= '9') {
            if (n < 3)
                ms = ms * 10 + (*p - '0');
            n++;
            p++;
        }
        if (n == 0)
            return -1;
        for (; n < 3; n++)
            ms *= 10;
    }
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        sign = *p == '-' ? -1 : 1;
        p++;
        if (digits(&p, 2, &oh) || *p++ != ':' || digits(&p, 2, &om) ||
            oh > 23 || om > 59)
            return -1;
    } else {
        return -1;
    }
    if (*p != '\0' || mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1] ||
        (mo == 2 && d == 29 &&
         !((y % 4 == 0 && y % 100 != 0) || y % 400 == 0)) ||
        h > 23 || mi > 59 || sec > 60)
        return -1;
    if (sec == 60)
        sec = 59; /* a leap second is kept within its minute */
    int64_t t = ctr_days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 +
                sec - sign * (oh * 3600 + om * 60);
    *epoch_ms = t * 1000 + ms;
    return 0;
}

/*
 * tz.c - see tz.h.
 *
 * The C library already knows every zone's rules (TZif files plus their
 * POSIX footer for future years), but only through the process-wide TZ
 * setting. So the conversions switch TZ under a lock, and each zone caches
 * the last local day it computed: nearly every event of a counter falls on
 * the current day, so the switch happens about once per zone per day.
 */
#include "common/tz.h"
#include "common/timeutil.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

struct ctr_tz {
    struct ctr_tz *next;
    char *name;
    /* cache of the last day computed, under tz_lock */
    int64_t cached_start_ms, cached_end_ms;
    ctr_date cached_date;
};

static pthread_mutex_t tz_lock = PTHREAD_MUTEX_INITIALIZER;
static struct ctr_tz *zones;

/* Must hold tz_lock. */
static void use_zone(const ctr_tz *tz)
{
    static const ctr_tz *current;
    if (current == tz)
        return;
    char buf[300];
    snprintf(buf, sizeof(buf), ":%s", tz->name);
    setenv("TZ", buf, 1);
    tzset();
    current = tz;
}

static int zone_file_ok(const char *name)
{
    char path[512];
    unsigned char magic[4];
    if (name[0] == '\0' || name[0] == '/' || strstr(name, "..") ||
        strlen(name) > 200)
        return 0;
    snprintf(path, sizeof(path), "/usr/share/zoneinfo/%s", name);
    FILE *fp = fopen(path, "rb");
    if (fp == NULL)
        return 0;
    int ok = fread(magic, 1, 4, fp) == 4 && memcmp(magic, "TZif", 4) == 0;
    fclose(fp);
    return ok;
}

const ctr_tz *ctr_tz_get(const char *name, char *errbuf, size_t errlen)
{
    ctr_tz *tz;

    pthread_mutex_lock(&tz_lock);
    for (tz = zones; tz; tz = tz->next)
        if (strcmp(tz->name, name) == 0)
            break;
    if (tz == NULL && zone_file_ok(name)) {
        tz = calloc(1, sizeof(*tz));
        if (tz && (tz->name = strdup(name)) != NULL) {
            tz->cached_end_ms = tz->cached_start_ms = 0;
            tz->next = zones;
            zones = tz;
        } else {
            free(tz);
            tz = NULL;
        }
    }
    pthread_mutex_unlock(&tz_lock);
    if (tz == NULL)
        snprintf(errbuf, errlen,
                 "unknown time zone \"%.64s\" (expected an IANA name such as "
                 "Europe/Berlin, found in /usr/share/zoneinfo)",
                 name);
    return tz;
}

const char *ctr_tz_name(const ctr_tz *tz)
{
    return tz->name;
}

static int date_cmp(ctr_date a, ctr_date b)
{
    if (a.year != b.year)
        return a.year < b.year ? -1 : 1;
    if (a.month != b.month)
        return a.month < b.month ? -1 : 1;
    return a.day < b.day ? -1 : a.day > b.day;
}

/* Holds tz_lock. */
static ctr_date local_date_locked(time_t t)
{
    struct tm tm;
    localtime_r(&t, &tm);
    ctr_date d = {tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday};
    return d;
}

/*
 * The first instant of local date d, in seconds. Holds tz_lock. mktime
 * gives an instant near local midnight; where midnight is skipped or
 * repeated by a DST change that instant may be off by an hour or two, so
 * the exact start is found by bisection over the two hours before it.
 */
static int64_t midnight_locked(ctr_date d)
{
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    tm.tm_year = d.year - 1900;
    tm.tm_mon = d.month - 1;
    tm.tm_mday = d.day;
    tm.tm_isdst = -1;
    time_t t = mktime(&tm);
    for (int i = 0; i < 4 && date_cmp(local_date_locked(t), d) < 0; i++)
        t += 3600;
    time_t lo = t - 7200, hi = t; /* date(lo) < d assumed, date(hi) == d */
    if (date_cmp(local_date_locked(lo), d) == 0)
        return (int64_t)lo;
    while (hi - lo > 1) {
        time_t mid = lo + (hi - lo) / 2;
        if (date_cmp(local_date_locked(mid), d) < 0)
            lo = mid;
        else
            hi = mid;
    }
    return (int64_t)hi;
}

ctr_date ctr_tz_local_day(const ctr_tz *tz_const, int64_t ts_ms,
                          int64_t *start_ms, int64_t *end_ms)
{
    ctr_tz *tz = (ctr_tz *)tz_const;
    ctr_date d;

    pthread_mutex_lock(&tz_lock);
    if (ts_ms >= tz->cached_start_ms && ts_ms < tz->cached_end_ms) {
        d = tz->cached_date;
    } else {
        use_zone(tz);
        time_t t = (time_t)(ts_ms >= 0 ? ts_ms / 1000 : (ts_ms - 999) / 1000);
        struct tm tm;
        localtime_r(&t, &tm);
        d.year = tm.tm_year + 1900;
        d.month = tm.tm_mon + 1;
        d.day = tm.tm_mday;
        tz->cached_date = d;
        tz->cached_start_ms = midnight_locked(d) * 1000;
        tz->cached_end_ms = midnight_locked(ctr_date_add_days(d, 1)) * 1000;
    }
    if (start_ms)
        *start_ms = tz->cached_start_ms;
    if (end_ms)
        *end_ms = tz->cached_end_ms;
    pthread_mutex_unlock(&tz_lock);
    return d;
}

int64_t ctr_tz_day_start(const ctr_tz *tz, ctr_date d)
{
    pthread_mutex_lock(&tz_lock);
    use_zone(tz);
    int64_t s = midnight_locked(d);
    pthread_mutex_unlock(&tz_lock);
    return s * 1000;
}

int ctr_tz_offset_s(const ctr_tz *tz, int64_t ts_ms)
{
    struct tm tm;
    pthread_mutex_lock(&tz_lock);
    use_zone(tz);
    time_t t = (time_t)(ts_ms >= 0 ? ts_ms / 1000 : (ts_ms - 999) / 1000);
    localtime_r(&t, &tm);
    pthread_mutex_unlock(&tz_lock);
    int64_t local =
        ctr_days_from_civil(tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday) *
            86400 +
        tm.tm_hour * 3600 + tm.tm_min * 60 + tm.tm_sec;
    return (int)(local - (int64_t)t);
}

void ctr_date_format(ctr_date d, char *buf, size_t len)
{
    snprintf(buf, len, "%04d-%02d-%02d", d.year, d.month, d.day);
}

static int days_in_month(int y, int m)
{
    static const int dm[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (m == 2 && ((y % 4 == 0 && y % 100 != 0) || y % 400 == 0))
        return 29;
    return dm[m - 1];
}

int ctr_date_parse(const char *s, ctr_date *out)
{
    int y, m, d;
    char tail;
    if (strlen(s) != 10 || sscanf(s, "%4d-%2d-%2d%c", &y, &m, &d, &tail) != 3)
        return -1;
    if (y < 1970 || y > 9999 || m < 1 || m > 12 || d < 1 ||
        d > days_in_month(y, m))
        return -1;
    out->year = y, out->month = m, out->day = d;
    return 0;
}

ctr_date ctr_date_add_days(ctr_date d, int n)
{
    while (n > 0) {
        if (++d.day > days_in_month(d.year, d.month)) {
            d.day = 1;
            if (++d.month > 12) {
                d.month = 1;
                d.year++;
            }
        }
        n--;
    }
    while (n < 0) {
        if (--d.day < 1) {
            if (--d.month < 1) {
                d.month = 12;
                d.year--;
            }
            d.day = days_in_month(d.year, d.month);
        }
        n++;
    }
    return d;
}

void ctr_tz_free_all(void)
{
    pthread_mutex_lock(&tz_lock);
    while (zones) {
        ctr_tz *next = zones->next;
        free(zones->name);
        free(zones);
        zones = next;
    }
    pthread_mutex_unlock(&tz_lock);
}

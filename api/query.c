/*
 * query.c - see query.h. libevent splits the query and percent-decodes the
 * values ('+' as a space); the rules of each parameter are ours.
 */
#include "api/query.h"

#include "common/timeutil.h"
#include "common/tz.h"

#include <sys/queue.h> /* before evhttp's, for TAILQ_FOREACH */

#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <stdio.h>
#include <string.h>

/* The value of query parameter `key`, or NULL; *dup set if it repeats. */
const char *api_query_param(struct evkeyvalq *q, const char *key, int *dup)
{
    const char *found = NULL;
    struct evkeyval *kv;
    *dup = 0;
    TAILQ_FOREACH(kv, q, next)
    {
        if (strcmp(kv->key, key) != 0)
            continue;
        if (found)
            *dup = 1;
        found = kv->value;
    }
    return found;
}

/*
 * libevent decodes values into C strings, so a "%00" would silently cut a
 * value short ("a,b%00junk" reading as "a,b"). Returns 1, with the name of
 * the parameter holding one in key (as written, at most keylen - 1 bytes),
 * if the raw query has a percent-encoded NUL.
 */
static int query_has_nul(const char *query, char *key, size_t keylen)
{
    for (const char *p = query; p && (p = strchr(p, '%')) != NULL; p++) {
        if (p[1] != '0' || p[2] != '0')
            continue;
        const char *start = p;
        while (start > query && start[-1] != '&')
            start--;
        size_t n = strcspn(start, "=&");
        if (n >= keylen)
            n = keylen - 1;
        memcpy(key, start, n);
        key[n] = '\0';
        return 1;
    }
    return 0;
}

/*
 * The plain case without libevent's split-and-decode (4 % of a batch
 * GET): a query with nothing to decode ('%' or '+') reads the same raw.
 * Returns 1 with the value of names (not terminated: *len bytes; NULL if
 * absent) and *dup as api_query_param would give them, or 0 if libevent
 * must read it (something to decode, or a part libevent refuses or skips:
 * no '=', an empty name or an empty part).
 */
static int plain_names(const char *query, const char **names, size_t *len,
                       int *dup)
{
    if (strpbrk(query, "%+") != NULL)
        return 0;
    *names = NULL;
    *len = 0;
    *dup = 0;
    for (const char *p = query;;) {
        size_t n = strcspn(p, "&");
        const char *eq = memchr(p, '=', n);
        if (eq == NULL || eq == p)
            return 0;
        if (eq - p == 5 && memcmp(p, "names", 5) == 0) {
            *dup |= *names != NULL;
            *names = eq + 1;
            *len = n - 6;
        }
        if (p[n] == '\0')
            return 1;
        p += n + 1;
    }
}

static int names_given(const char *names, int dup, api_name_list *out,
                       char *errbuf, size_t errlen)
{
    if (!dup)
        return api_parse_names(names, out, errbuf, errlen);
    snprintf(errbuf, errlen, "names: give it once, as a comma-separated list");
    return -1;
}

int api_query_batch(const char *query, api_name_list *out, char *errbuf,
                    size_t errlen)
{
    struct evkeyvalq params;
    int dup = 0, rc = -1;
    char key[16], plain[API_BATCH_MAX * (CTR_NAME_MAX + 1)];
    const char *raw;
    size_t raw_len;

    out->n = 0;
    if (query && plain_names(query, &raw, &raw_len, &dup) &&
        raw_len < sizeof(plain)) {
        if (raw != NULL) {
            memcpy(plain, raw, raw_len);
            plain[raw_len] = '\0';
        }
        return names_given(raw ? plain : NULL, dup, out, errbuf, errlen);
    }
    TAILQ_INIT(&params);
    if (query_has_nul(query, key, sizeof(key))) {
        snprintf(errbuf, errlen, "names: must not contain NUL (%%00)");
    } else if (query && evhttp_parse_query_str(query, &params) == 0) {
        const char *names = api_query_param(&params, "names", &dup);
        rc = names_given(names, dup, out, errbuf, errlen);
    } else {
        snprintf(errbuf, errlen, "names: give 1 to %d comma-separated names",
                 API_BATCH_MAX);
    }
    evhttp_clear_headers(&params);
    return rc;
}

/*
 * The instants the history query can hand PostgreSQL: it has no year 0 and
 * reads "-001-..." as garbage, so an offset that pushes 0000-01-01 before
 * 0001-01-01 UTC (or 9999-12-31 past the four-digit years) would come back
 * as a PostgreSQL error, a 503, instead of a 400.
 */
#define HISTORY_MIN_MS INT64_C(-62135596800000) /* 0001-01-01T00:00:00Z */
#define HISTORY_END_MS INT64_C(253402300800000) /* 10000-01-01T00:00:00Z */

static int history_bad(const char **field, const char *name, char *errbuf,
                       size_t errlen, const char *message)
{
    *field = name;
    snprintf(errbuf, errlen, "%s", message);
    return -1;
}

int api_query_history(const char *query, api_history_query *out,
                      const char **field, char *errbuf, size_t errlen)
{
    struct evkeyvalq params;
    int dup_from, dup_to, dup_iv;
    int rc = -1;

    char key[16];
    static const char *const known[] = {"from", "to", "interval"};

    memset(out, 0, sizeof(*out));
    TAILQ_INIT(&params);
    if (query_has_nul(query, key, sizeof(key))) {
        const char *name = "from";
        for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
            if (strcmp(key, known[i]) == 0)
                name = known[i];
        *field = name;
        snprintf(errbuf, errlen, "%s: must not contain NUL (%%00)", name);
        goto out;
    }
    /* no query at all: the default range of the default interval */
    if (evhttp_parse_query_str(query ? query : "", &params) != 0) {
        history_bad(field, "from", errbuf, errlen,
                    "from, to, interval: give each as name=value, joined by "
                    "&");
        goto out;
    }
    const char *from_s = api_query_param(&params, "from", &dup_from);
    const char *to_s = api_query_param(&params, "to", &dup_to);
    const char *iv = api_query_param(&params, "interval", &dup_iv);
    out->has_from = from_s != NULL || dup_from;
    out->has_to = to_s != NULL || dup_to;
    if (out->has_from &&
        (dup_from || ctr_time_parse_rfc3339(from_s, &out->from_ms))) {
        history_bad(field, "from", errbuf, errlen,
                    "from: must be one RFC 3339 date-time with an offset");
        goto out;
    }
    if (out->has_to && (dup_to || ctr_time_parse_rfc3339(to_s, &out->to_ms))) {
        history_bad(field, "to", errbuf, errlen,
                    "to: must be one RFC 3339 date-time with an offset");
        goto out;
    }
    if (out->has_from &&
        (out->from_ms < HISTORY_MIN_MS || out->from_ms >= HISTORY_END_MS)) {
        history_bad(field, "from", errbuf, errlen,
                    "from: must lie within the years 0001 to 9999 (UTC)");
        goto out;
    }
    if (out->has_to &&
        (out->to_ms < HISTORY_MIN_MS || out->to_ms >= HISTORY_END_MS)) {
        history_bad(field, "to", errbuf, errlen,
                    "to: must lie within the years 0001 to 9999 (UTC)");
        goto out;
    }
    if (iv == NULL)
        iv = "hour";
    if (dup_iv) {
        history_bad(field, "interval", errbuf, errlen,
                    "interval: give it once");
        goto out;
    } else if (strcmp(iv, "minute") == 0) {
        out->interval = "minute", out->step_ms = 60000;
    } else if (strcmp(iv, "hour") == 0) {
        out->interval = "hour", out->step_ms = 3600000;
    } else if (strcmp(iv, "day") == 0) {
        out->interval = "day", out->step_ms = 86400000;
    } else {
        history_bad(field, "interval", errbuf, errlen,
                    "interval: must be minute, hour or day");
        goto out;
    }
    if (out->has_from && out->has_to && out->to_ms <= out->from_ms) {
        history_bad(field, "to", errbuf, errlen, "to: must be after from");
        goto out;
    }
    rc = 0;
out:
    evhttp_clear_headers(&params);
    return rc;
}

/* The start of the period of length step_ms that holds t, aligned in tz
 * (minutes and hours; a half-hour zone has half-past hours). */
static int64_t period_start(const ctr_tz *tz, int64_t t, int64_t step_ms)
{
    int64_t local = t + (int64_t)ctr_tz_offset_s(tz, t) * 1000;
    return t - (((local % step_ms) + step_ms) % step_ms);
}

int api_history_default_range(api_history_query *h, const ctr_tz *tz,
                              int64_t now_ms, const char **field, char *errbuf,
                              size_t errlen)
{
    int day = h->step_ms == 86400000;
    if (!h->has_to) {
        if (day)
            (void)ctr_tz_local_day(tz, now_ms, NULL, &h->to_ms);
        else
            h->to_ms = period_start(tz, now_ms, h->step_ms) + h->step_ms;
    }
    if (!h->has_from) {
        if (day) {
            ctr_date last = ctr_tz_local_day(tz, h->to_ms - 1, NULL, NULL);
            h->from_ms = ctr_tz_day_start(
                tz, ctr_date_add_days(last, 1 - API_HISTORY_DEFAULT_DAYS));
        } else {
            int64_t periods = h->step_ms == 60000 ? API_HISTORY_DEFAULT_MINUTES
                                                  : API_HISTORY_DEFAULT_HOURS;
            h->from_ms = h->to_ms - periods * h->step_ms;
        }
        if (h->from_ms < HISTORY_MIN_MS)
            h->from_ms = HISTORY_MIN_MS;
    }
    if (h->to_ms > h->from_ms)
        return 0;
    if (h->has_from) /* to is the default */
        return history_bad(field, "from", errbuf, errlen,
                           "from: must be before the end of the current "
                           "period when to is not given");
    return history_bad(field, "to", errbuf, errlen,
                       "to: must be after 0001-01-01T00:00:00Z");
}

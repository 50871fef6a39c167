/*
 * history.c - see history.h.
 */
#include "ctl/history.h"

#include "common/name.h"
#include "common/strbuf.h"
#include "common/timeutil.h"
#include "ctl/api_client.h"
#include "ctl/cli.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char help_history[] =
    "usage: counterctl history NAME --from T --to T "
    "[--interval minute|hour|day] [--api URL] [--json]\n"
    "\n"
    "A counter's history through counter-api (GET\n"
    "/api/v1/counter/NAME/history): the sum of its writes per minute, hour\n"
    "or day from T to T, hours and days in the counter's time zone, empty\n"
    "periods as 0. Printed as a table of (start, value) with a summary line.\n"
    "\n"
    "  --from T, --to T  RFC 3339 date-times with an offset\n"
    "                    (2026-11-26T00:00:00Z, 2026-11-26T08:00:00+08:00),\n"
    "                    \"now\", or a time before now: -90s, -15m, -6h, -7d\n"
    "  --interval I      minute, hour (the api's default) or day\n"
    "  --api URL         counter-api's address (default: the variable\n"
    "                    COUNTER_API_URL, else http://127.0.0.1:PORT with\n"
    "                    server.port of the configuration); send\n"
    "                    COUNTER_API_TOKEN as the bearer token when auth is\n"
    "                    on\n"
    "  --json            the api's JSON document: {\"name\", \"kind\",\n"
    "                    \"interval\", \"timezone\", \"points\": [{\"start\",\n"
    "                    \"value\"}, ...]}\n"
    "\n"
    "Exit status: 0 shown; 1 the api refused (4xx, for example a range of\n"
    "more than 10000 points; its message is shown); 2 usage or configuration\n"
    "error; 3 the api or PostgreSQL unavailable.\n";

/*
 * Turns a --from/--to argument into what the api takes: an RFC 3339 time
 * as given, or "now" / "-N{s,m,h,d}" as now minus that, in UTC. 0, or -1.
 */
static int time_arg(const char *arg, int64_t now_ms, char *out, size_t len)
{
    int64_t ms;

    if (strcmp(arg, "now") == 0) {
        ms = now_ms;
    } else if (arg[0] == '-') {
        size_t n = strlen(arg);
        char num[24];
        int64_t count, unit_ms;
        if (n < 3 || n - 2 >= sizeof(num))
            return -1;
        switch (arg[n - 1]) {
        case 's': unit_ms = 1000; break;
        case 'm': unit_ms = 60000; break;
        case 'h': unit_ms = 3600000; break;
        case 'd': unit_ms = 86400000; break;
        default: return -1;
        }
        memcpy(num, arg + 1, n - 2);
        num[n - 2] = '\0';
        if (num[0] == '-' || ctl_parse_i64(num, &count) != 0 || count < 0 ||
            count > 100LL * 366 * 86400000 / unit_ms)
            return -1;
        ms = now_ms - count * unit_ms;
    } else {
        if (ctr_time_parse_rfc3339(arg, &ms) != 0 || strlen(arg) >= len)
            return -1;
        snprintf(out, len, "%s", arg);
        return 0;
    }
    return ctr_time_format_rfc3339(ms, out, len) > 0 ? 0 : -1;
}

/* Percent-encodes s as a query value ('+' of an offset included). */
static void put_query_value(ctr_strbuf *b, const char *s)
{
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
            (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_' ||
            c == '~' || c == ':')
            ctr_strbuf_put(b, (const char *)&c, 1);
        else
            ctr_strbuf_printf(b, "%%%02X", c);
    }
}

/*
 * The points' values of a history answer, as their text in `body`: they
 * are its only numbers (json-c would clamp one past int64, and a sum of
 * the buckets may pass it). Fills up to n spans in order; returns how many
 * numbers the body holds, or -1 for one that is no integer.
 */
static long point_values(const char *body, const char **at, size_t *len,
                         size_t n)
{
    long found = 0;
    int in_string = 0;

    for (const char *p = body; *p; p++) {
        if (in_string) {
            if (*p == '\\' && p[1])
                p++;
            else if (*p == '"')
                in_string = 0;
            continue;
        }
        if (*p == '"') {
            in_string = 1;
            continue;
        }
        if (*p != '-' && (*p < '0' || *p > '9'))
            continue;
        const char *start = p;
        p += *p == '-';
        while (*p >= '0' && *p <= '9')
            p++;
        if (p == start + (*start == '-') || *p == '.' || *p == 'e' || *p == 'E')
            return -1;
        if ((size_t)found < n) {
            at[found] = start;
            len[found] = (size_t)(p - start);
        }
        found++;
        p--;
    }
    return found;
}

/* Adds the integer text s[0..n) to *sum; -1 when it leaves 128 bits. */
static int add_exact(__int128 *sum, const char *s, size_t n)
{
    int neg = n > 0 && s[0] == '-';
    __int128 v = 0;
    for (size_t i = (size_t)neg; i < n; i++)
        if (__builtin_mul_overflow(v, 10, &v) ||
            __builtin_add_overflow(v, neg ? -(s[i] - '0') : s[i] - '0', &v))
            return -1;
    return __builtin_add_overflow(*sum, v, sum) ? -1 : 0;
}

/* The answer as a table. 0, or -1 when its values cannot be read. */
static int print_points(json_object *doc, const char *body)
{
    json_object *points = NULL, *v;
    const char *interval = "?", *tz = "?";
    const char **at = NULL;
    size_t *len = NULL;
    int wstart = 5, wval = 5, rc = -1;

    if (json_object_object_get_ex(doc, "interval", &v))
        interval = json_object_get_string(v);
    if (json_object_object_get_ex(doc, "timezone", &v))
        tz = json_object_get_string(v);
    json_object_object_get_ex(doc, "points", &points);
    size_t n = json_object_is_type(points, json_type_array)
                   ? json_object_array_length(points)
                   : 0;
    at = calloc(n + 1, sizeof(*at));
    len = calloc(n + 1, sizeof(*len));
    if (at == NULL || len == NULL || body == NULL ||
        point_values(body, at, len, n) != (long)n)
        goto out;
    for (size_t i = 0; i < n; i++) {
        json_object *p = json_object_array_get_idx(points, i), *s;
        if (json_object_object_get_ex(p, "start", &s)) {
            int w = (int)strlen(json_object_get_string(s));
            wstart = w > wstart ? w : wstart;
        }
        wval = (int)len[i] > wval ? (int)len[i] : wval;
    }
    printf("%-*s  %*s\n", wstart, "START", wval, "VALUE");
    __int128 total = 0;
    int exact = 1;
    for (size_t i = 0; i < n; i++) {
        json_object *p = json_object_array_get_idx(points, i), *s = NULL;
        json_object_object_get_ex(p, "start", &s);
        exact = exact && add_exact(&total, at[i], len[i]) == 0;
        printf("%-*s  %*.*s\n", wstart, s ? json_object_get_string(s) : "?",
               wval, (int)len[i], at[i]);
    }
    char sum[CTR_I128_TEXT_MAX] = "more than 38 digits";
    if (exact)
        ctr_i128_text(total, sum);
    json_object *approx;
    printf("%zu point%s by %s in %s; sum %s%s\n", n, n == 1 ? "" : "s",
           interval, tz, sum,
           json_object_object_get_ex(doc, "approximate", &approx) &&
                   json_object_get_boolean(approx)
               ? " (approximate)"
               : "");
    rc = 0;
out:
    free(at);
    free(len);
    return rc;
}

int ctl_history_main(int argc, char **argv)
{
    const char *from = NULL, *to = NULL, *interval = NULL, *api_url = NULL;
    const char *pos[1];
    int json = 0, rc;
    size_t npos;
    char why[512], from_v[64], to_v[64];
    ctl_opt opts[] = {{"--from", &from, NULL},
                      {"--to", &to, NULL},
                      {"--interval", &interval, NULL},
                      {"--api", &api_url, NULL},
                      {"--json", NULL, &json}};
    ctr_strbuf target = {0};
    ctl_api api;
    ctl_api_result res = {0};

    switch (ctl_args_parse(argc, argv, opts, 5, pos, 1, 1, &npos, why,
                           sizeof(why))) {
    case CTL_ARGS_HELP: return ctl_help(help_history);
    case CTL_ARGS_BAD: return ctl_usage_error(help_history, why);
    }
    if (!ctr_name_valid(pos[0], strlen(pos[0])))
        return ctl_usage_error(help_history,
                               "invalid counter name: 1-128 characters of "
                               "A-Z a-z 0-9 _ . -");
    if (from == NULL || to == NULL)
        return ctl_usage_error(help_history, "--from and --to are required");
    int64_t now_ms = ctr_time_now_ms();
    if (time_arg(from, now_ms, from_v, sizeof(from_v)) != 0 ||
        time_arg(to, now_ms, to_v, sizeof(to_v)) != 0) {
        snprintf(why, sizeof(why),
                 "--%s: expected an RFC 3339 date-time with an offset, "
                 "\"now\", or -N followed by s, m, h or d",
                 time_arg(from, now_ms, from_v, sizeof(from_v)) ? "from"
                                                                : "to");
        return ctl_usage_error(help_history, why);
    }
    if (interval && strcmp(interval, "minute") != 0 &&
        strcmp(interval, "hour") != 0 && strcmp(interval, "day") != 0)
        return ctl_usage_error(help_history, "--interval: minute, hour or day");
    ctr_config *cfg = ctl_config_load();
    if (cfg == NULL)
        return CTL_EXIT_USAGE;
    if (ctl_api_init(&api, cfg, api_url, why, sizeof(why)) != 0) {
        ctl_err("%s", why);
        rc = CTL_EXIT_USAGE;
        goto out;
    }
    ctr_strbuf_printf(&target, "/api/v1/counter/%s/history?from=", pos[0]);
    put_query_value(&target, from_v);
    ctr_strbuf_puts(&target, "&to=");
    put_query_value(&target, to_v);
    if (interval)
        ctr_strbuf_printf(&target, "&interval=%s", interval);
    if (target.failed) {
        ctl_err("out of memory");
        rc = CTL_EXIT_UNREACHABLE;
        goto out;
    }
    rc = ctl_api_get(&api, target.s, &res);
    if (rc != CTL_EXIT_OK) {
        ctl_err("%s", res.message);
        if (json) {
            json_object *err, *doc = ctl_json_failure(res.code, res.message);
            /* the api's own error object, when it gave one */
            if (res.doc && json_object_object_get_ex(res.doc, "error", &err))
                json_object_object_add(doc, "error", json_object_get(err));
            json_object_object_add(doc, "status",
                                   json_object_new_int(res.status));
            ctl_json_print(doc);
        }
    } else if (json) {
        /* as the api wrote it: its values may pass int64, which json-c
         * would clamp */
        fputs(res.body, stdout);
    } else if (print_points(res.doc, res.body) != 0) {
        ctl_err("api at %s: a history answer whose values are not integers",
                api.display);
        rc = CTL_EXIT_UNREACHABLE;
    }
out:
    ctl_api_result_free(&res);
    ctr_strbuf_clear(&target);
    ctr_config_free(cfg);
    return rc;
}

/*
 * fuzz_query.c - the query strings of the batch read (names=a,b) and of the
 * history read (from=&to=&interval=), api/query.c.
 *
 * Input: the first byte picks the parser (even: batch, odd: history), the
 * rest is the raw query. Beyond "no crash": an accepted batch holds 1-100
 * valid names and reads back the same when written out again; an accepted
 * history range, its defaults filled in (api_history_default_range), has
 * to after from and a known interval, and reads back the same from its
 * canonical form; a refusal always says which parameter and why.
 */
#include "api/query.h"
#include "common/timeutil.h"
#include "common/tz.h"
#include "fuzz.h"

static void fuzz_batch(const char *query)
{
    static api_name_list l, again;
    static char joined[sizeof("names=") + API_BATCH_MAX * (CTR_NAME_MAX + 1)];
    char err[160] = "";

    if (api_query_batch(query, &l, err, sizeof(err)) != 0) {
        FUZZ_CHECK(strncmp(err, "names: ", 7) == 0);
        return;
    }
    FUZZ_CHECK(l.n >= 1 && l.n <= API_BATCH_MAX);
    size_t o = (size_t)snprintf(joined, sizeof(joined), "names=");
    for (size_t i = 0; i < l.n; i++) {
        size_t len = strlen(l.names[i]);
        FUZZ_CHECK(ctr_name_valid(l.names[i], len));
        if (i)
            joined[o++] = ',';
        memcpy(joined + o, l.names[i], len);
        o += len;
    }
    joined[o] = '\0';

    /* the canonical query, and the bare list, read back the same */
    FUZZ_CHECK(api_query_batch(joined, &again, err, sizeof(err)) == 0);
    FUZZ_CHECK(again.n == l.n);
    for (size_t i = 0; i < l.n; i++)
        FUZZ_CHECK(strcmp(again.names[i], l.names[i]) == 0);
    FUZZ_CHECK(api_parse_names(joined + 6, &again, err, sizeof(err)) == 0);
    FUZZ_CHECK(again.n == l.n);
    for (size_t i = 0; i < l.n; i++)
        FUZZ_CHECK(strcmp(again.names[i], l.names[i]) == 0);
}

static void fuzz_history(const char *query)
{
    api_history_query h, again;
    const char *field = NULL;
    char err[160] = "", from[40], to[40], canon[160];
    /* a zone with a DST change and a fixed "now" (2026-03-08T12:00:00Z) */
    const ctr_tz *tz = ctr_tz_get("America/New_York", err, sizeof(err));
    const int64_t now_ms = INT64_C(1772971200000);

    FUZZ_CHECK(tz != NULL);
    if (api_query_history(query, &h, &field, err, sizeof(err)) != 0) {
        FUZZ_CHECK(field != NULL);
        FUZZ_CHECK(strcmp(field, "from") == 0 || strcmp(field, "to") == 0 ||
                   strcmp(field, "interval") == 0);
        FUZZ_CHECK(err[0] != '\0');
        return;
    }
    if (h.has_from && h.has_to)
        FUZZ_CHECK(h.to_ms > h.from_ms);
    int given_from = h.has_from, given_to = h.has_to;
    int64_t from_ms = h.from_ms, to_ms = h.to_ms;
    if (api_history_default_range(&h, tz, now_ms, &field, err, sizeof(err)) !=
        0) {
        FUZZ_CHECK(!(given_from && given_to));
        FUZZ_CHECK(strcmp(field, given_from ? "from" : "to") == 0);
        return;
    }
    /* what was given stays as given */
    FUZZ_CHECK(!given_from || h.from_ms == from_ms);
    FUZZ_CHECK(!given_to || h.to_ms == to_ms);
    FUZZ_CHECK(h.to_ms > h.from_ms);
    FUZZ_CHECK(h.interval != NULL);
    FUZZ_CHECK((strcmp(h.interval, "minute") == 0 && h.step_ms == 60000) ||
               (strcmp(h.interval, "hour") == 0 && h.step_ms == 3600000) ||
               (strcmp(h.interval, "day") == 0 && h.step_ms == 86400000));

    /* What the handler hands PostgreSQL (UTC, ms) must parse back exactly. */
    FUZZ_CHECK(ctr_time_format_rfc3339(h.from_ms, from, sizeof(from)) > 0);
    FUZZ_CHECK(ctr_time_format_rfc3339(h.to_ms, to, sizeof(to)) > 0);
    snprintf(canon, sizeof(canon), "interval=%s&from=%s&to=%s", h.interval,
             from, to);
    FUZZ_CHECK(api_query_history(canon, &again, &field, err, sizeof(err)) == 0);
    FUZZ_CHECK(again.from_ms == h.from_ms && again.to_ms == h.to_ms);
    FUZZ_CHECK(again.step_ms == h.step_ms);
    FUZZ_CHECK(strcmp(again.interval, h.interval) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    /* a lone selector byte stands for a URI without any query */
    char *query = size > 1 ? fuzz_cstr(data + 1, size - 1) : NULL;
    if (data[0] & 1)
        fuzz_history(query);
    else
        fuzz_batch(query);
    free(query);
    return 0;
}

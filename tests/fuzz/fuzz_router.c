/*
 * fuzz_router.c - api_route_match on any method and path.
 *
 * Input: the first byte picks the method (mod 4), the rest is the path.
 * Beyond "no crash": a match carries a valid counter name (exactly the
 * endpoints that take one), that name routes back to the same endpoint
 * whether written plainly or fully percent-encoded, HEAD routes as GET, and
 * a 405 names methods that the same path does accept.
 */
#include "api/router.h"
#include "fuzz.h"

static int takes_name(enum api_endpoint ep)
{
    return ep == API_EP_COUNTER_GET || ep == API_EP_COUNTER_INCR ||
           ep == API_EP_COUNTER_DECR || ep == API_EP_COUNTER_SET ||
           ep == API_EP_HISTORY;
}

static const char *suffix_of(enum api_endpoint ep)
{
    switch (ep) {
    case API_EP_COUNTER_INCR: return "/increment";
    case API_EP_COUNTER_DECR: return "/decrement";
    case API_EP_COUNTER_SET: return "/set";
    case API_EP_HISTORY: return "/history";
    default: return "";
    }
}

static int wants_post(enum api_endpoint ep)
{
    return ep == API_EP_COUNTER_INCR || ep == API_EP_COUNTER_DECR ||
           ep == API_EP_COUNTER_SET || ep == API_EP_COUNTERS_BATCH;
}

/* The route must come back the same from path. */
static void check_same(enum api_method m, const char *path,
                       const api_route *want)
{
    api_route again;
    FUZZ_CHECK(api_route_match(m, path, &again) == 0);
    FUZZ_CHECK(again.endpoint == want->endpoint);
    FUZZ_CHECK(strcmp(again.name, want->name) == 0);
}

static void check_match(enum api_method m, const api_route *r)
{
    static const char hex[] = "0123456789ABCDEF";
    char path[16 + 3 * CTR_NAME_MAX + 16];
    size_t len = strlen(r->name);

    FUZZ_CHECK(r->status == 0);
    FUZZ_CHECK(r->endpoint != API_EP_NONE);
    FUZZ_CHECK(wants_post(r->endpoint) ? m == API_POST
                                       : m == API_GET || m == API_HEAD);
    if (!takes_name(r->endpoint)) {
        FUZZ_CHECK(r->name[0] == '\0');
        return;
    }
    FUZZ_CHECK(len <= CTR_NAME_MAX);
    FUZZ_CHECK(ctr_name_valid(r->name, len));

    /* Names need no escaping, so the plain path routes the same... */
    snprintf(path, sizeof(path), "/api/v1/counter/%s%s", r->name,
             suffix_of(r->endpoint));
    check_same(m, path, r);

    /* ...and so does the name with every byte percent-encoded. */
    size_t o = (size_t)snprintf(path, sizeof(path), "/api/v1/counter/");
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)r->name[i];
        path[o++] = '%';
        path[o++] = hex[c >> 4];
        path[o++] = hex[c & 15];
    }
    snprintf(path + o, sizeof(path) - o, "%s", suffix_of(r->endpoint));
    check_same(m, path, r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const enum api_method methods[] = {API_GET, API_POST, API_HEAD,
                                              API_OTHER};
    if (size < 1)
        return 0;
    enum api_method m = methods[data[0] % 4];
    char *path = fuzz_cstr(data + 1, size - 1);
    api_route r;

    int rc = api_route_match(m, path, &r);
    FUZZ_CHECK((rc == 0) == (r.status == 0));
    if (rc == 0) {
        check_match(m, &r);
    } else {
        FUZZ_CHECK(r.status == 400 || r.status == 404 || r.status == 405);
        FUZZ_CHECK(r.endpoint == API_EP_NONE);
        if (r.status == 400)
            FUZZ_CHECK(strncmp(path, "/api/v1/counter/", 16) == 0);
        if (r.status == 405) {
            /* the Allow header's first method must be accepted */
            FUZZ_CHECK(r.allow != NULL);
            enum api_method ok =
                strncmp(r.allow, "POST", 4) == 0 ? API_POST : API_GET;
            FUZZ_CHECK(ok != m);
            api_route r2;
            FUZZ_CHECK(api_route_match(ok, path, &r2) == 0);
            check_match(ok, &r2);
        }
    }

    /* HEAD is GET without a body: both route alike. */
    if (m == API_GET || m == API_HEAD) {
        api_route other;
        int rc2 =
            api_route_match(m == API_GET ? API_HEAD : API_GET, path, &other);
        FUZZ_CHECK(rc2 == rc && other.status == r.status &&
                   other.endpoint == r.endpoint &&
                   strcmp(other.name, r.name) == 0);
    }
    free(path);
    return 0;
}

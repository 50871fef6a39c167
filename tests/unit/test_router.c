/* test_router.c - paths and methods to endpoints; the names= list. */
#include "api/query.h"
#include "api/router.h"

#include <sys/queue.h>

#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>

static void test_routes(void **state)
{
    static const struct {
        enum api_method method;
        const char *path;
        int rc;
        enum api_endpoint ep;
        int status;
        const char *name;
    } cases[] = {
        {API_GET, "/api/v1/counter/online_players", 0, API_EP_COUNTER_GET, 0,
         "online_players"},
        {API_HEAD, "/api/v1/counter/x", 0, API_EP_COUNTER_GET, 0, "x"},
        {API_POST, "/api/v1/counter/games/increment", 0, API_EP_COUNTER_INCR, 0,
         "games"},
        {API_POST, "/api/v1/counter/games/decrement", 0, API_EP_COUNTER_DECR, 0,
         "games"},
        {API_POST, "/api/v1/counter/a%2Eb/increment", 0, API_EP_COUNTER_INCR, 0,
         "a.b"},
        {API_GET, "/api/v1/counters", 0, API_EP_COUNTERS_GET, 0, NULL},
        {API_GET, "/healthz", 0, API_EP_HEALTH, 0, NULL},
        {API_GET, "/api/v1/counter/games/increment", -1, API_EP_NONE, 405,
         NULL},
        {API_POST, "/api/v1/counter/games", -1, API_EP_NONE, 405, NULL},
        {API_OTHER, "/api/v1/counters", -1, API_EP_NONE, 405, NULL},
        {API_POST, "/api/v1/counter/a:b/increment", -1, API_EP_NONE, 400, NULL},
        {API_GET, "/api/v1/counter/%7Bc%3Ax%7D", -1, API_EP_NONE, 400, NULL},
        {API_GET, "/api/v1/counter/a%00b", -1, API_EP_NONE, 400, NULL},
        {API_GET, "/api/v1/counter/a%2", -1, API_EP_NONE, 400, NULL},
        {API_GET, "/api/v1/counter/a%zz", -1, API_EP_NONE, 400, NULL},
        {API_GET, "/api/v1/counter/", -1, API_EP_NONE, 404, NULL},
        {API_GET, "/api/v1/counter//increment", -1, API_EP_NONE, 404, NULL},
        {API_POST, "/api/v1/counter/x/reset", -1, API_EP_NONE, 404, NULL},
        {API_POST, "/api/v1/counter/x/increment/", -1, API_EP_NONE, 404, NULL},
        {API_GET, "/", 0, API_EP_DASHBOARD, 0, NULL},
        {API_HEAD, "/", 0, API_EP_DASHBOARD, 0, NULL},
        {API_POST, "/", -1, API_EP_NONE, 405, NULL},
        {API_GET, "/ui/dashboard.js", 0, API_EP_UI_ASSET, 0, NULL},
        {API_GET, "/ui/", -1, API_EP_NONE, 404, NULL},
        {API_GET, "/api/v1/counters/names", 0, API_EP_NAMES, 0, NULL},
        {API_POST, "/api/v1/counters/names", -1, API_EP_NONE, 405, NULL},
        {API_POST, "/api/v1/counters/batch", 0, API_EP_COUNTERS_BATCH, 0, NULL},
        {API_GET, "/api/v1/counters/batch", -1, API_EP_NONE, 405, NULL},
        {API_GET, "/index.html", -1, API_EP_NONE, 404, NULL},
        {API_GET, "/api/v2/counter/x", -1, API_EP_NONE, 404, NULL},
    };
    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        api_route r;
        int rc = api_route_match(cases[i].method, cases[i].path, &r);
        if (rc != cases[i].rc || r.status != cases[i].status)
            fail_msg("%s: rc %d status %d", cases[i].path, rc, r.status);
        assert_int_equal(r.endpoint, cases[i].ep);
        if (cases[i].name)
            assert_string_equal(r.name, cases[i].name);
        if (r.status == 405)
            assert_non_null(r.allow);
    }

    char path[512], name[CTR_NAME_MAX + 2];
    api_route r;
    memset(name, 'n', sizeof(name));
    name[CTR_NAME_MAX] = '\0';
    snprintf(path, sizeof(path), "/api/v1/counter/%s", name);
    assert_int_equal(api_route_match(API_GET, path, &r), 0);
    name[CTR_NAME_MAX] = 'n';
    name[CTR_NAME_MAX + 1] = '\0';
    snprintf(path, sizeof(path), "/api/v1/counter/%s", name);
    assert_int_equal(api_route_match(API_GET, path, &r), -1);
    assert_int_equal(r.status, 400);
}

static void test_names_list(void **state)
{
    static api_name_list l;
    char err[160];
    (void)state;

    assert_int_equal(api_parse_names("a,b,a", &l, err, sizeof(err)), 0);
    assert_int_equal(l.n, 3);
    assert_string_equal(l.names[0], "a");
    assert_string_equal(l.names[1], "b");
    assert_string_equal(l.names[2], "a");

    static const char *const bad[] = {"", "a,", ",a", "a,,b", "a,b:c", "a b"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = '\0';
        assert_int_equal(api_parse_names(bad[i], &l, err, sizeof(err)), -1);
        assert_non_null(strstr(err, "names"));
    }
    assert_int_equal(api_parse_names(NULL, &l, err, sizeof(err)), -1);

    char many[API_BATCH_MAX * 4 + 8] = "";
    for (int i = 0; i < API_BATCH_MAX; i++)
        strcat(many, i ? ",n" : "n");
    assert_int_equal(api_parse_names(many, &l, err, sizeof(err)), 0);
    assert_int_equal(l.n, API_BATCH_MAX);
    strcat(many, ",n");
    assert_int_equal(api_parse_names(many, &l, err, sizeof(err)), -1);
}

/* The batch query as libevent reads it (split, decode), the way the api
 * read every query before its plain-query path. */
static int reference_batch(const char *query, api_name_list *out, char *err,
                           size_t errlen)
{
    struct evkeyvalq params;
    int dup = 0, rc = -1;
    out->n = 0;
    TAILQ_INIT(&params);
    if (strstr(query, "%00") != NULL) {
        snprintf(err, errlen, "names: must not contain NUL (%%00)");
    } else if (evhttp_parse_query_str(query, &params) == 0) {
        const char *names = api_query_param(&params, "names", &dup);
        if (dup)
            snprintf(err, errlen,
                     "names: give it once, as a comma-separated list");
        else
            rc = api_parse_names(names, out, err, errlen);
    } else {
        snprintf(err, errlen, "names: give 1 to %d comma-separated names",
                 API_BATCH_MAX);
    }
    evhttp_clear_headers(&params);
    return rc;
}

/* Random queries from pieces that matter to either reading: the same
 * names or the same error. */
static void test_batch_query_like_libevent(void **state)
{
    static const char *const parts[] = {
        "names=", "names", "a",   "b.c", "x_1",     ",",  "&", "=",   "other=1",
        "%2C",    "+",     "%41", "%00", "names=a", "&&", "-", "nam", "es"};
    static api_name_list got, want;
    char query[512], e1[160], e2[160];
    uint64_t x = 0x9e3779b97f4a7c15u;
    (void)state;
    for (int round = 0; round < 200000; round++) {
        size_t len = 0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        int n = 1 + (int)(x % 9);
        for (int i = 0; i < n; i++) {
            const char *p =
                parts[(x >> (5 * i + 4)) % (sizeof(parts) / sizeof(parts[0]))];
            size_t pl = strlen(p);
            memcpy(query + len, p, pl);
            len += pl;
        }
        query[len] = '\0';
        e1[0] = e2[0] = '\0';
        int rc = api_query_batch(query, &got, e1, sizeof(e1));
        int rc_want = reference_batch(query, &want, e2, sizeof(e2));
        if (rc != rc_want || strcmp(e1, e2) != 0)
            fail_msg("%s: %d '%s', libevent: %d '%s'", query, rc, e1, rc_want,
                     e2);
        if (rc == 0) {
            assert_int_equal(got.n, want.n);
            for (size_t i = 0; i < got.n; i++)
                assert_string_equal(got.names[i], want.names[i]);
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_routes),
        cmocka_unit_test(test_names_list),
        cmocka_unit_test(test_batch_query_like_libevent),
    };
    return cmocka_run_group_tests_name("router", tests, NULL, NULL);
}

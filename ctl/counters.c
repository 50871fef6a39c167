/*
 * counters.c - see counters.h.
 */
#include "ctl/counters.h"

#include "common/name.h"
#include "common/timeutil.h"
#include "common/tz.h"
#include "ctl/api_client.h"
#include "ctl/cli.h"
#include "ctl/stores.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char help_counters[] =
    "usage: counterctl counters list [--prefix P] [--json]\n"
    "       counterctl counters get NAME [--json]\n"
    "       counterctl counters set NAME VALUE [--api URL] "
    "[--idempotency-key K] [--json]\n"
    "       counterctl counters reset NAME [--api URL] "
    "[--idempotency-key K] [--json]\n"
    "\n"
    "The counters, their definitions and current values; corrections.\n"
    "list and get read Redis (PostgreSQL when Redis is down); set and reset\n"
    "write through counter-api. `counterctl counters SUBCOMMAND --help` tells\n"
    "more.\n";

static const char help_list[] =
    "usage: counterctl counters list [--prefix P] [--json]\n"
    "\n"
    "Lists every counter the stores know: the names in PostgreSQL\n"
    "(counter_totals, counter_daily) and those with a value in Redis that\n"
    "the persister has not reached yet (found with SCAN), each with its\n"
    "kind, reset and time zone from the configuration's definitions and its\n"
    "current value (a daily counter's: today's, in its zone). Values come\n"
    "from Redis, or from PostgreSQL when Redis is down or not yet restored\n"
    "(then they are as of the persister's last commit); the last line says\n"
    "which.\n"
    "\n"
    "  --prefix P  only the counters whose name starts with P\n"
    "  --json      one JSON document: {\"counters\": [{\"name\", \"value\",\n"
    "              \"kind\", \"reset\", \"timezone\", \"period\" (daily),\n"
    "              \"last_updated\"}, ...], \"count\", \"source\", \"stale\",\n"
    "              \"as_of\" (when stale), \"names_from\"}\n"
    "\n"
    "Exit status: 0 listed; 2 usage or configuration error; 3 neither Redis\n"
    "nor PostgreSQL answered.\n";

static const char help_get[] =
    "usage: counterctl counters get NAME [--json]\n"
    "\n"
    "Shows one counter: its value, kind, reset and time zone, the period a\n"
    "daily counter's value belongs to (today's local date), when it was last\n"
    "written, and where the value came from: Redis, or PostgreSQL (stale, as\n"
    "of the persister's last commit) when Redis is down. A counter never\n"
    "written reads 0, last updated never.\n"
    "\n"
    "  --json  one JSON document: {\"name\", \"value\", \"kind\", \"reset\",\n"
    "          \"timezone\", \"period\" (daily), \"last_updated\", "
    "\"source\",\n"
    "          \"stale\", \"as_of\" (when stale)}\n"
    "\n"
    "Exit status: 0 shown; 2 usage or configuration error; 3 neither Redis\n"
    "nor PostgreSQL answered.\n";

#define API_OPTIONS_HELP                                                       \
    "  --api URL               counter-api's address (default: the variable\n" \
    "                          COUNTER_API_URL, else http://127.0.0.1:PORT\n"  \
    "                          with server.port of the configuration); send\n" \
    "                          COUNTER_API_TOKEN as the bearer token when\n"   \
    "                          auth is on\n"                                   \
    "  --idempotency-key K     the request's Idempotency-Key (default: a "     \
    "new\n"                                                                    \
    "                          one). The command sends the same request\n"     \
    "                          again by itself while its outcome is unsure;\n" \
    "                          if it still ends unsure (exit 3), run it "      \
    "again\n"                                                                  \
    "                          with the key it printed: it takes effect "      \
    "once.\n"                                                                  \
    "  --json                  one JSON document with the outcome, the key\n"  \
    "                          (\"idempotency_key\") and the api's answer\n"

static const char help_set[] =
    "usage: counterctl counters set NAME VALUE [--api URL] "
    "[--idempotency-key K] [--json]\n"
    "\n"
    "Sets a gauge to VALUE (an integer) through counter-api (POST\n"
    "/api/v1/counter/NAME/set), so that the change is an event in Redis and\n"
    "in the Kafka log like every write, and PostgreSQL follows. Gauges only:\n"
    "the api refuses a set on any other kind, and on a value outside the\n"
    "gauge's min/max.\n"
    "\n" API_OPTIONS_HELP "\n"
    "Exit status: 0 set; 1 the api refused (4xx; its message is shown); 2\n"
    "usage or configuration error; 3 the api, Redis or Kafka unavailable, or\n"
    "the outcome unknown (retry with the key).\n";

static const char help_reset[] =
    "usage: counterctl counters reset NAME [--api URL] "
    "[--idempotency-key K] [--json]\n"
    "\n"
    "Brings a counter's current value (a daily counter's: today's window) to\n"
    "0 through counter-api, as an event in Redis and the Kafka log like every\n"
    "write; PostgreSQL follows. The current value is read from the api first\n"
    "(from Redis: with Redis down the value may be stale, and the reset is\n"
    "refused). Then:\n"
    "  - a gauge is set to 0 (the api refuses when 0 is outside its\n"
    "    min/max);\n"
    "  - a counter gets a correction: a decrement by its current value (an\n"
    "    increment if it is negative), a logged event whose metadata says\n"
    "    {\"counterctl\": \"reset\", \"previous_value\": N}, on the same day\n"
    "    as the value read. Writes that land between the read and the\n"
    "    correction stay counted. History keeps the earlier counts and\n"
    "    shows the correction in its own minute;\n"
    "  - a unique counter is refused: it counts distinct users, and no\n"
    "    correction can un-count a user.\n"
    "\n" API_OPTIONS_HELP "\n"
    "Exit status: 0 reset (or already 0); 1 refused (a unique counter, or\n"
    "the api refused: 4xx, its message shown); 2 usage or configuration\n"
    "error; 3 the api, Redis or Kafka unavailable, or the outcome unknown\n"
    "(retry with the key).\n";

/* ------------------------------------------------------------ helpers */

/* Reads the common arguments' name; 0, or a usage error printed. */
static int check_name(const char *help, const char *name)
{
    char why[300];
    if (ctr_name_valid(name, strlen(name)))
        return 0;
    snprintf(why, sizeof(why),
             "invalid counter name \"%.140s\": 1-128 characters of "
             "A-Z a-z 0-9 _ . -",
             name);
    return ctl_usage_error(help, why);
}

static json_object *value_json(const ctl_value *v)
{
    const ctr_counter_def *d = v->def;
    json_object *o = json_object_new_object();
    json_object_object_add(o, "name", json_object_new_string(v->name));
    /* null for a value Redis holds damaged (named on stderr) */
    json_object_object_add(o, "value",
                           v->invalid ? NULL : json_object_new_int64(v->value));
    json_object_object_add(o, "kind",
                           json_object_new_string(ctr_kind_name(d->kind)));
    json_object_object_add(o, "reset",
                           json_object_new_string(ctr_reset_name(d->reset)));
    json_object_object_add(o, "timezone",
                           json_object_new_string(ctr_tz_name(d->tz)));
    if (v->period[0])
        json_object_object_add(o, "period", json_object_new_string(v->period));
    json_object_object_add(o, "last_updated", ctl_json_time(v->updated_ms));
    if (d->kind == CTR_KIND_UNIQUE && d->dedup == CTR_DEDUP_HLL)
        json_object_object_add(o, "approximate", json_object_new_boolean(1));
    return o;
}

static void source_json(json_object *o, const ctl_source *src)
{
    json_object_object_add(o, "source", json_object_new_string(src->store));
    json_object_object_add(o, "stale", json_object_new_boolean(src->stale));
    if (src->stale)
        json_object_object_add(o, "as_of", ctl_json_time(src->as_of_ms));
}

/* "redis" or "postgresql (stale, as of T)" for the human outputs. */
static void source_text(const ctl_source *src, char *buf, size_t len)
{
    char ts[40] = "unknown";
    if (!src->stale) {
        snprintf(buf, len, "redis");
        return;
    }
    if (src->as_of_ms > 0)
        ctr_time_format_rfc3339(src->as_of_ms, ts, sizeof(ts));
    snprintf(buf, len, "postgresql (stale: redis is unavailable; as of %s)",
             ts);
}

static void time_text(int64_t ms, char *buf, size_t len)
{
    if (ms <= 0 || ctr_time_format_rfc3339(ms, buf, len) <= 0)
        snprintf(buf, len, "never");
}

static int unreachable(int json, const char *message)
{
    ctl_err("%s", message);
    if (json)
        ctl_json_print(ctl_json_failure("unreachable", message));
    return CTL_EXIT_UNREACHABLE;
}

/* --------------------------------------------------------------- list */

static void print_table(const ctl_values *vals, const ctl_source *src)
{
    int wname = 4, wtz = 8, wval = 5;
    char num[24], ts[40], from[160];

    for (size_t i = 0; i < vals->n; i++) {
        const ctl_value *v = &vals->items[i];
        int n = (int)strlen(v->name), t = (int)strlen(ctr_tz_name(v->def->tz));
        int w =
            v->invalid ? 7 : snprintf(num, sizeof(num), "%" PRId64, v->value);
        wname = n > wname ? n : wname;
        wtz = t > wtz ? t : wtz;
        wval = w > wval ? w : wval;
    }
    printf("%-*s  %-7s  %-5s  %-*s  %-10s  %*s  %s\n", wname, "NAME", "KIND",
           "RESET", wtz, "TIMEZONE", "PERIOD", wval, "VALUE", "LAST_UPDATED");
    for (size_t i = 0; i < vals->n; i++) {
        const ctl_value *v = &vals->items[i];
        time_text(v->updated_ms, ts, sizeof(ts));
        if (v->invalid)
            snprintf(num, sizeof(num), "invalid");
        else
            snprintf(num, sizeof(num), "%" PRId64, v->value);
        printf("%-*s  %-7s  %-5s  %-*s  %-10s  %*s  %s\n", wname, v->name,
               ctr_kind_name(v->def->kind), ctr_reset_name(v->def->reset), wtz,
               ctr_tz_name(v->def->tz), v->period[0] ? v->period : "-", wval,
               num, ts);
    }
    source_text(src, from, sizeof(from));
    printf("%zu counter%s; values from %s\n", vals->n, vals->n == 1 ? "" : "s",
           from);
}

static int cmd_list(int argc, char **argv)
{
    const char *prefix = "", *pos[1];
    int json = 0, from = 0, rc = CTL_EXIT_UNREACHABLE;
    size_t npos;
    char why[200];
    ctl_opt opts[] = {{"--prefix", &prefix, NULL}, {"--json", NULL, &json}};
    ctl_values vals = {0};
    ctl_stores *stores = NULL;
    ctl_source src;

    switch (ctl_args_parse(argc, argv, opts, 2, pos, 0, 0, &npos, why,
                           sizeof(why))) {
    case CTL_ARGS_HELP: return ctl_help(help_list);
    case CTL_ARGS_BAD: return ctl_usage_error(help_list, why);
    }
    if (prefix[0] && !ctr_name_valid(prefix, strlen(prefix)))
        return ctl_usage_error(help_list,
                               "--prefix: 1-128 characters of A-Z a-z 0-9 "
                               "_ . -");
    ctr_config *cfg = ctl_config_load();
    if (cfg == NULL)
        return CTL_EXIT_USAGE;
    stores = ctl_stores_new(cfg);
    if (stores == NULL) {
        ctl_err("out of memory");
        goto out;
    }
    if (ctl_stores_names(stores, prefix, &vals, &from) != 0) {
        rc = unreachable(json, "neither redis nor postgresql could list the "
                               "counters");
        goto out;
    }
    if (!(from & CTL_NAMES_POSTGRES))
        ctl_err("the list holds only the counters redis has a value for");
    if (ctl_stores_values(stores, &vals, &src) != 0) {
        rc = unreachable(json, "neither redis nor postgresql could read the "
                               "values");
        goto out;
    }
    if (json) {
        json_object *doc = json_object_new_object();
        json_object *list = json_object_new_array();
        json_object *names = json_object_new_array();
        for (size_t i = 0; i < vals.n; i++)
            json_object_array_add(list, value_json(&vals.items[i]));
        json_object_object_add(doc, "counters", list);
        json_object_object_add(doc, "count",
                               json_object_new_int64((int64_t)vals.n));
        source_json(doc, &src);
        if (from & CTL_NAMES_POSTGRES)
            json_object_array_add(names, json_object_new_string("postgres"));
        if (from & CTL_NAMES_REDIS)
            json_object_array_add(names, json_object_new_string("redis"));
        json_object_object_add(doc, "names_from", names);
        ctl_json_print(doc);
    } else {
        print_table(&vals, &src);
    }
    rc = CTL_EXIT_OK;
out:
    ctl_values_free(&vals);
    ctl_stores_free(stores);
    ctr_config_free(cfg);
    return rc;
}

/* ---------------------------------------------------------------- get */

static int cmd_get(int argc, char **argv)
{
    const char *pos[1];
    int json = 0, rc = CTL_EXIT_UNREACHABLE;
    size_t npos;
    char why[200];
    ctl_opt opts[] = {{"--json", NULL, &json}};
    ctl_values vals = {0};
    ctl_stores *stores = NULL;
    ctl_source src;

    switch (ctl_args_parse(argc, argv, opts, 1, pos, 1, 1, &npos, why,
                           sizeof(why))) {
    case CTL_ARGS_HELP: return ctl_help(help_get);
    case CTL_ARGS_BAD: return ctl_usage_error(help_get, why);
    }
    if (check_name(help_get, pos[0]) != 0)
        return CTL_EXIT_USAGE;
    ctr_config *cfg = ctl_config_load();
    if (cfg == NULL)
        return CTL_EXIT_USAGE;
    stores = ctl_stores_new(cfg);
    if (stores == NULL || ctl_values_add(&vals, cfg, pos[0], strlen(pos[0]),
                                         ctr_time_now_ms()) == NULL) {
        ctl_err("out of memory");
        goto out;
    }
    if (ctl_stores_values(stores, &vals, &src) != 0) {
        rc = unreachable(json, "neither redis nor postgresql could read the "
                               "value");
        goto out;
    }
    const ctl_value *v = &vals.items[0];
    if (json) {
        json_object *doc = value_json(v);
        source_json(doc, &src);
        ctl_json_print(doc);
    } else {
        char ts[40], from[160];
        time_text(v->updated_ms, ts, sizeof(ts));
        source_text(&src, from, sizeof(from));
        printf("name          %s\n", v->name);
        if (v->invalid)
            printf("value         invalid (see the line on stderr)\n");
        else
            printf("value         %" PRId64 "%s\n", v->value,
                   v->def->kind == CTR_KIND_UNIQUE &&
                           v->def->dedup == CTR_DEDUP_HLL
                       ? " (approximate)"
                       : "");
        printf("kind          %s\n", ctr_kind_name(v->def->kind));
        printf("reset         %s\n", ctr_reset_name(v->def->reset));
        printf("timezone      %s\n", ctr_tz_name(v->def->tz));
        if (v->period[0])
            printf("period        %s\n", v->period);
        printf("last_updated  %s\n", ts);
        printf("source        %s\n", from);
    }
    rc = CTL_EXIT_OK;
out:
    ctl_values_free(&vals);
    ctl_stores_free(stores);
    ctr_config_free(cfg);
    return rc;
}

/* ---------------------------------------------------------- set, reset */

/* What set and reset share: the api, the key, --json. */
typedef struct write_args {
    const char *name;
    const char *api_url;
    const char *key_opt;
    int json;
    char key[CTL_API_KEY_MAX + 1];
    ctr_config *cfg;
    ctl_api api;
} write_args;

/* Parses the arguments of set (2 positional) or reset (1). CTL_EXIT_OK to
 * go on; else the exit status (-1: after --help). */
static int write_args_parse(write_args *w, const char *help, int argc,
                            char **argv, const char **pos, size_t npos_want)
{
    size_t npos;
    char why[512];
    ctl_opt opts[] = {{"--api", &w->api_url, NULL},
                      {"--idempotency-key", &w->key_opt, NULL},
                      {"--json", NULL, &w->json}};

    switch (ctl_args_parse(argc, argv, opts, 3, pos, npos_want, npos_want,
                           &npos, why, sizeof(why))) {
    case CTL_ARGS_HELP: ctl_help(help); return -1;
    case CTL_ARGS_BAD: return ctl_usage_error(help, why);
    }
    w->name = pos[0];
    if (check_name(help, w->name) != 0)
        return CTL_EXIT_USAGE;
    if (w->key_opt && !ctl_api_key_valid(w->key_opt))
        return ctl_usage_error(help, "--idempotency-key: 1-128 printable "
                                     "ASCII characters, no spaces");
    if (w->key_opt)
        snprintf(w->key, sizeof(w->key), "%s", w->key_opt);
    else
        ctl_api_new_key(w->key);
    return CTL_EXIT_OK;
}

/* Loads the configuration and finds the api. CTL_EXIT_OK, or
 * CTL_EXIT_USAGE with the reason printed. */
static int write_args_connect(write_args *w)
{
    char why[512];

    w->cfg = ctl_config_load();
    if (w->cfg == NULL)
        return CTL_EXIT_USAGE;
    if (ctl_api_init(&w->api, w->cfg, w->api_url, why, sizeof(why)) != 0) {
        ctl_err("%s", why);
        return CTL_EXIT_USAGE;
    }
    return CTL_EXIT_OK;
}

static int64_t doc_int(json_object *doc, const char *field, int *found)
{
    json_object *v;
    *found = doc && json_object_object_get_ex(doc, field, &v) &&
             json_object_is_type(v, json_type_int);
    return *found ? json_object_get_int64(v) : 0;
}

static const char *doc_str(json_object *doc, const char *field)
{
    json_object *v;
    if (doc && json_object_object_get_ex(doc, field, &v) &&
        json_object_is_type(v, json_type_string))
        return json_object_get_string(v);
    return NULL;
}

/* The api's own {"code", "message"} when it answered with one, else
 * ours (no answer, not JSON). */
static json_object *failure_json(const ctl_api_result *res)
{
    json_object *err;
    if (res->doc && json_object_object_get_ex(res->doc, "error", &err) &&
        json_object_is_type(err, json_type_object))
        return json_object_get(err);
    err = json_object_new_object();
    json_object_object_add(err, "code", json_object_new_string(res->code));
    json_object_object_add(err, "message",
                           json_object_new_string(res->message));
    return err;
}

/*
 * Reports a write's outcome: a line (or, with --json, `doc` completed
 * with the outcome) and, on failure, the reason on stderr, with the key to
 * retry with when the outcome is unknown. Takes doc. Returns the exit
 * status.
 */
static int report_write(const write_args *w, ctl_api_result *res,
                        json_object *doc, const char *done_line)
{
    int unsure = strcmp(res->code, "no_answer") == 0 ||
                 strcmp(res->code, "indeterminate") == 0 ||
                 strcmp(res->code, "request_in_progress") == 0;

    if (res->exit_code != CTL_EXIT_OK) {
        ctl_err("%s", res->message);
        if (unsure)
            ctl_err("the outcome is unknown; run the same command with "
                    "--idempotency-key %s to finish it exactly once",
                    w->key);
    } else if (!w->json) {
        puts(done_line);
    }
    if (w->json) {
        json_object_object_add(
            doc, "ok", json_object_new_boolean(res->exit_code == CTL_EXIT_OK));
        json_object_object_add(doc, "idempotency_key",
                               json_object_new_string(w->key));
        json_object_object_add(doc, "status", json_object_new_int(res->status));
        json_object_object_add(doc, "replayed",
                               json_object_new_boolean(res->replayed));
        json_object_object_add(doc, "attempts",
                               json_object_new_int(res->attempts));
        if (res->exit_code != CTL_EXIT_OK)
            json_object_object_add(doc, "error", failure_json(res));
        json_object_object_add(doc, "answer",
                               res->doc ? json_object_get(res->doc) : NULL);
        ctl_json_print(doc);
    } else {
        json_object_put(doc);
    }
    return res->exit_code;
}

/* " (the api replayed ...)" for a line, when it did. */
static const char *replay_note(const ctl_api_result *res)
{
    return res->replayed ? " (an earlier request with this key did it; the "
                           "api replayed its answer)"
                         : "";
}

/* A done line from the api's answer: current_value, or applied: false. */
static void outcome_text(const ctl_api_result *res, char *buf, size_t len)
{
    int found;
    int64_t now = doc_int(res->doc, "current_value", &found);
    json_object *applied;
    if (found)
        snprintf(buf, len, "now %" PRId64 "%s", now, replay_note(res));
    else if (json_object_object_get_ex(res->doc, "applied", &applied) &&
             !json_object_get_boolean(applied))
        snprintf(buf, len,
                 "accepted into the log; redis is away and gets it when it "
                 "is back%s",
                 replay_note(res));
    else
        snprintf(buf, len, "done%s", replay_note(res));
}

static int cmd_set(int argc, char **argv)
{
    write_args w = {0};
    const char *pos[2];
    int64_t value;
    int rc = write_args_parse(&w, help_set, argc, argv, pos, 2);
    ctl_api_result res = {0};
    char target[CTR_NAME_MAX + 32], body[128], line[400], outcome[200];

    if (rc != CTL_EXIT_OK)
        goto out;
    if (ctl_parse_i64(pos[1], &value) != 0) {
        rc = ctl_usage_error(help_set, "VALUE must be a 64-bit integer");
        goto out;
    }
    if ((rc = write_args_connect(&w)) != CTL_EXIT_OK)
        goto out;
    snprintf(target, sizeof(target), "/api/v1/counter/%s/set", w.name);
    snprintf(body, sizeof(body), "{\"value\":%" PRId64 "}", value);
    ctl_api_write(&w.api, target, body, w.key, &res);
    outcome_text(&res, outcome, sizeof(outcome));
    snprintf(line, sizeof(line), "%s set to %" PRId64 ": %s", w.name, value,
             outcome);
    json_object *doc = json_object_new_object();
    json_object_object_add(doc, "name", json_object_new_string(w.name));
    json_object_object_add(doc, "operation", json_object_new_string("set"));
    json_object_object_add(doc, "value", json_object_new_int64(value));
    rc = report_write(&w, &res, doc, line);
out:
    ctl_api_result_free(&res);
    ctr_config_free(w.cfg);
    return rc < 0 ? CTL_EXIT_OK : rc;
}

/* The value to reset, read through the api as a client would see it. */
typedef struct current {
    const char *kind; /* points into the api's answer */
    int64_t value;
    char period[11]; /* "" unless daily */
    int64_t read_ms; /* our clock just before the read */
} current;

static int read_current(const write_args *w, ctl_api_result *res, current *cur)
{
    char target[CTR_NAME_MAX + 32];
    int found;

    snprintf(target, sizeof(target), "/api/v1/counter/%s", w->name);
    cur->read_ms = ctr_time_now_ms();
    if (ctl_api_get(&w->api, target, res) != CTL_EXIT_OK)
        return res->exit_code;
    const char *source = doc_str(res->doc, "source");
    const char *period = doc_str(res->doc, "period");
    cur->kind = doc_str(res->doc, "kind");
    cur->value = doc_int(res->doc, "value", &found);
    snprintf(cur->period, sizeof(cur->period), "%s", period ? period : "");
    if (cur->kind == NULL || !found || source == NULL) {
        snprintf(res->code, sizeof(res->code), "bad_answer");
        snprintf(res->message, sizeof(res->message),
                 "api at %s: the answer to GET %s lacks kind, value or "
                 "source",
                 w->api.display, target);
        return res->exit_code = CTL_EXIT_UNREACHABLE;
    }
    if (strcmp(source, "redis") != 0) {
        snprintf(res->code, sizeof(res->code), "stale_value");
        snprintf(res->message, sizeof(res->message),
                 "the api read %s from %s (redis is unavailable), which may "
                 "lag behind the true value; not reset, try again when redis "
                 "is back",
                 w->name, source);
        return res->exit_code = CTL_EXIT_UNREACHABLE;
    }
    return CTL_EXIT_OK;
}

/* Does our clock's local day at cur->read_ms match the period the api
 * read? Then a correction stamped read_ms lands in that same window. */
static int same_period(const write_args *w, const current *cur)
{
    char day[11];
    const ctr_counter_def *def = ctr_config_counter(w->cfg, w->name);
    ctr_date_format(ctr_tz_local_day(def->tz, cur->read_ms, NULL, NULL), day,
                    sizeof(day));
    return strcmp(day, cur->period) == 0;
}

/* What a reset does, decided from the value read alone (no I/O). */
enum reset_kind {
    RESET_REFUSED, /* message says why */
    RESET_NOTHING, /* already 0 */
    RESET_WRITE,   /* target and body */
};

typedef struct reset_plan {
    enum reset_kind kind;
    const char *code; /* RESET_REFUSED */
    char message[400];
    const char *operation; /* "set", "decrement" or "increment" */
    char target[CTR_NAME_MAX + 40];
    char body[400];
} reset_plan;

/*
 * A gauge is set to 0; a counter gets a correction by the value read,
 * stamped with the time of the read (so that it lands in the same day),
 * with metadata naming it; a unique counter is refused (no correction can
 * un-count a user), and so is a counter at INT64_MIN (no single correction
 * brings it to 0).
 */
static void reset_plan_make(reset_plan *p, const char *name, const current *cur)
{
    int64_t prev = cur->value;
    char ts[40] = "";

    memset(p, 0, sizeof(*p));
    if (strcmp(cur->kind, "unique") == 0) {
        p->kind = RESET_REFUSED;
        p->code = "unique_counter";
        snprintf(p->message, sizeof(p->message),
                 "%s is a unique counter: it counts distinct users, and no "
                 "correction can un-count a user; reset refused",
                 name);
        return;
    }
    if (strcmp(cur->kind, "gauge") == 0) {
        p->kind = RESET_WRITE;
        p->operation = "set";
        snprintf(p->target, sizeof(p->target), "/api/v1/counter/%s/set", name);
        snprintf(p->body, sizeof(p->body),
                 "{\"value\":0,\"metadata\":{\"counterctl\":\"reset\","
                 "\"previous_value\":%" PRId64 "}}",
                 prev);
        return;
    }
    if (prev == INT64_MIN) {
        p->kind = RESET_REFUSED;
        p->code = "out_of_range";
        snprintf(p->message, sizeof(p->message),
                 "%s is at the lowest int64; no single correction can bring "
                 "it to 0",
                 name);
        return;
    }
    if (prev == 0) {
        p->kind = RESET_NOTHING;
        return;
    }
    p->kind = RESET_WRITE;
    p->operation = prev > 0 ? "decrement" : "increment";
    snprintf(p->target, sizeof(p->target), "/api/v1/counter/%s/%s", name,
             p->operation);
    if (cur->period[0])
        ctr_time_format_rfc3339(cur->read_ms, ts, sizeof(ts));
    snprintf(p->body, sizeof(p->body),
             "{\"value\":%" PRId64 ",%s%s%s\"metadata\":{\"counterctl\":"
             "\"reset\",\"previous_value\":%" PRId64 "}}",
             prev > 0 ? prev : -prev, ts[0] ? "\"timestamp\":\"" : "", ts,
             ts[0] ? "\"," : "", prev);
}

/* Prints a refusal (nothing was written) in the chosen form. */
static void print_refusal(const write_args *w, const char *code,
                          const char *message)
{
    ctl_err("%s", message);
    if (w->json) {
        json_object *fail = ctl_json_failure(code, message);
        json_object_object_add(fail, "name", json_object_new_string(w->name));
        ctl_json_print(fail);
    }
}

static int cmd_reset(int argc, char **argv)
{
    write_args w = {0};
    const char *pos[1];
    int rc = write_args_parse(&w, help_reset, argc, argv, pos, 1);
    ctl_api_result res = {0};
    current cur = {0};
    reset_plan plan;
    char line[400], outcome[200];
    json_object *doc = NULL;

    if (rc != CTL_EXIT_OK || (rc = write_args_connect(&w)) != CTL_EXIT_OK)
        goto out;
    /* A daily counter's day may turn between the read and our look at the
     * clock: read again once. */
    for (int attempt = 0; attempt < 2; attempt++) {
        rc = read_current(&w, &res, &cur);
        if (rc != CTL_EXIT_OK || cur.period[0] == '\0' || same_period(&w, &cur))
            break;
        if (attempt == 1) {
            snprintf(res.code, sizeof(res.code), "period_changed");
            snprintf(res.message, sizeof(res.message),
                     "the api reads %s's window of %s, which is not today by "
                     "this machine's clock; check both clocks and the "
                     "counter's timezone",
                     w.name, cur.period);
            rc = res.exit_code = CTL_EXIT_FAILED;
        }
    }
    if (rc != CTL_EXIT_OK) {
        /* nothing was written: the key is not worth retrying with */
        print_refusal(&w, res.code, res.message);
        goto out;
    }
    reset_plan_make(&plan, w.name, &cur);
    if (plan.kind == RESET_REFUSED) {
        print_refusal(&w, plan.code, plan.message);
        rc = CTL_EXIT_FAILED;
        goto out;
    }
    doc = json_object_new_object();
    json_object_object_add(doc, "name", json_object_new_string(w.name));
    json_object_object_add(doc, "kind", json_object_new_string(cur.kind));
    json_object_object_add(doc, "previous_value",
                           json_object_new_int64(cur.value));
    if (cur.period[0])
        json_object_object_add(doc, "period",
                               json_object_new_string(cur.period));
    json_object_object_add(doc, "operation",
                           json_object_new_string(plan.kind == RESET_NOTHING
                                                      ? "none"
                                                      : plan.operation));
    json_object_object_add(doc, "delta", json_object_new_int64(-cur.value));
    if (plan.kind == RESET_NOTHING) {
        if (w.json) {
            json_object_object_add(doc, "ok", json_object_new_boolean(1));
            ctl_json_print(doc);
        } else {
            json_object_put(doc);
            printf("%s is already 0: nothing to correct\n", w.name);
        }
        rc = CTL_EXIT_OK;
        goto out;
    }
    ctl_api_result_free(&res);
    ctl_api_write(&w.api, plan.target, plan.body, w.key, &res);
    outcome_text(&res, outcome, sizeof(outcome));
    snprintf(line, sizeof(line), "%s reset%s%s: was %" PRId64 ", %s", w.name,
             cur.period[0] ? " for " : "", cur.period, cur.value, outcome);
    rc = report_write(&w, &res, doc, line);
out:
    ctl_api_result_free(&res);
    ctr_config_free(w.cfg);
    return rc < 0 ? CTL_EXIT_OK : rc;
}

/* --------------------------------------------------------------- main */

int ctl_counters_main(int argc, char **argv)
{
    static const struct {
        const char *name;
        int (*run)(int argc, char **argv);
    } subs[] = {
        {"list", cmd_list},
        {"get", cmd_get},
        {"set", cmd_set},
        {"reset", cmd_reset},
    };
    char why[200];

    if (argc < 1)
        return ctl_usage_error(help_counters, "counters: missing subcommand");
    if (strcmp(argv[0], "--help") == 0 || strcmp(argv[0], "-h") == 0)
        return ctl_help(help_counters);
    for (size_t i = 0; i < sizeof(subs) / sizeof(subs[0]); i++)
        if (strcmp(argv[0], subs[i].name) == 0)
            return subs[i].run(argc - 1, argv + 1);
    snprintf(why, sizeof(why), "counters: unknown subcommand %.60s", argv[0]);
    return ctl_usage_error(help_counters, why);
}

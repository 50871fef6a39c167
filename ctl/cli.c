/*
 * cli.c - see cli.h.
 */
#include "ctl/cli.h"

#include "common/timeutil.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const ctl_opt *find_opt(const ctl_opt *opts, size_t nopts,
                               const char *arg, size_t len)
{
    for (size_t i = 0; i < nopts; i++)
        if (strlen(opts[i].name) == len && memcmp(opts[i].name, arg, len) == 0)
            return &opts[i];
    return NULL;
}

static int is_negative_number(const char *s)
{
    return s[0] == '-' && s[1] >= '0' && s[1] <= '9';
}

int ctl_args_parse(int argc, char **argv, const ctl_opt *opts, size_t nopts,
                   const char **pos, size_t min_pos, size_t max_pos,
                   size_t *npos, char *errbuf, size_t errlen)
{
    unsigned char seen[32] = {0}; /* per option: given already */
    int only_positional = 0;
    size_t n = 0;

    /* --help wins over any other mistake on the line */
    for (int i = 0; i < argc && strcmp(argv[i], "--") != 0; i++)
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)
            return CTL_ARGS_HELP;
    for (int i = 0; i < argc; i++) {
        const char *arg = argv[i];
        if (only_positional || arg[0] != '-' || arg[1] == '\0' ||
            is_negative_number(arg)) {
            if (n == max_pos) {
                snprintf(errbuf, errlen, "unexpected argument %s", arg);
                return CTL_ARGS_BAD;
            }
            pos[n++] = arg;
            continue;
        }
        if (strcmp(arg, "--") == 0) {
            only_positional = 1;
            continue;
        }
        const char *eq = strchr(arg, '=');
        size_t len = eq ? (size_t)(eq - arg) : strlen(arg);
        const ctl_opt *o = find_opt(opts, nopts, arg, len);
        if (o == NULL) {
            snprintf(errbuf, errlen, "unknown option %.*s", (int)len, arg);
            return CTL_ARGS_BAD;
        }
        size_t idx = (size_t)(o - opts);
        if (idx < sizeof(seen) && seen[idx]++) {
            snprintf(errbuf, errlen, "%s given twice", o->name);
            return CTL_ARGS_BAD;
        }
        if (o->flag) {
            if (eq) {
                snprintf(errbuf, errlen, "%s takes no value", o->name);
                return CTL_ARGS_BAD;
            }
            *o->flag = 1;
        } else if (eq) {
            *o->value = eq + 1;
        } else if (i + 1 < argc) {
            *o->value = argv[++i];
        } else {
            snprintf(errbuf, errlen, "%s needs a value", o->name);
            return CTL_ARGS_BAD;
        }
    }
    if (n < min_pos) {
        snprintf(errbuf, errlen, "missing argument");
        return CTL_ARGS_BAD;
    }
    *npos = n;
    return CTL_ARGS_OK;
}

int ctl_parse_i64(const char *s, int64_t *out)
{
    char *end;

    if (s == NULL || !(s[0] == '-' || (s[0] >= '0' && s[0] <= '9')))
        return -1;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno == ERANGE || end == s || *end != '\0')
        return -1;
    *out = (int64_t)v;
    return 0;
}

ctr_config *ctl_config_load(void)
{
    char err[512];
    ctr_config *cfg = ctr_config_load(NULL, err, sizeof(err));
    if (cfg == NULL)
        ctl_err("%s", err);
    return cfg;
}

void ctl_err(const char *fmt, ...)
{
    va_list ap;
    fputs("counterctl: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

void ctl_json_print(json_object *doc)
{
    puts(json_object_to_json_string_ext(
        doc, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
    json_object_put(doc);
}

json_object *ctl_json_time(int64_t ms)
{
    char ts[40];
    if (ms <= 0 || ctr_time_format_rfc3339(ms, ts, sizeof(ts)) <= 0)
        return NULL; /* json-c writes NULL as null */
    return json_object_new_string(ts);
}

int ctl_help(const char *help)
{
    fputs(help, stdout);
    return CTL_EXIT_OK;
}

int ctl_usage_error(const char *help, const char *why)
{
    const char *blank = strstr(help, "\n\n");
    if (why)
        ctl_err("%s", why);
    fprintf(stderr, "%.*s\n", blank ? (int)(blank - help) : (int)strlen(help),
            help);
    fputs("(counterctl --help lists every command)\n", stderr);
    return CTL_EXIT_USAGE;
}

json_object *ctl_json_failure(const char *code, const char *message)
{
    json_object *doc = json_object_new_object(),
                *err = json_object_new_object();
    json_object_object_add(err, "code", json_object_new_string(code));
    json_object_object_add(err, "message", json_object_new_string(message));
    json_object_object_add(doc, "ok", json_object_new_boolean(0));
    json_object_object_add(doc, "error", err);
    return doc;
}

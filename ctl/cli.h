/*
 * cli.h - what every counterctl command shares: its exit codes, strict
 * option parsing, the configuration, and printing one JSON document.
 */
#ifndef COUNTER_CTL_CLI_H
#define COUNTER_CTL_CLI_H

#include "common/config.h"

#include <json-c/json.h>
#include <stddef.h>
#include <stdint.h>

/* The exit status of every command (`counterctl --help` lists them). */
enum ctl_exit {
    CTL_EXIT_OK = 0,
    /* a check found a difference (verify, rebuild-postgres), the api
     * refused the request (4xx), or a step failed (migrate, create-topic) */
    CTL_EXIT_FAILED = 1,
    CTL_EXIT_USAGE = 2,       /* usage or configuration error */
    CTL_EXIT_UNREACHABLE = 3, /* Redis, PostgreSQL, Kafka or the api down */
};

/* One option a command accepts. Exactly one of value and flag is set. */
typedef struct ctl_opt {
    const char *name;   /* "--prefix" */
    const char **value; /* receives the option's argument */
    int *flag;          /* set to 1 when the option is given */
} ctl_opt;

enum { CTL_ARGS_OK = 0, CTL_ARGS_HELP = 1, CTL_ARGS_BAD = -1 };

/*
 * Parses argv[0..argc): "--name value" and "--name=value" for options
 * with a value, bare flags, "-h"/"--help" anywhere, "--" ending the
 * options. Anything else starting with '-' is an unknown option, except a
 * negative number ("-5"), which is a positional argument. Positional
 * arguments go to pos[0..max_pos); fewer than min_pos or more than max_pos
 * is an error. A repeated option is an error. Returns CTL_ARGS_OK (with
 * *npos set), CTL_ARGS_HELP, or CTL_ARGS_BAD with a one-line reason in
 * errbuf.
 */
int ctl_args_parse(int argc, char **argv, const ctl_opt *opts, size_t nopts,
                   const char **pos, size_t min_pos, size_t max_pos,
                   size_t *npos, char *errbuf, size_t errlen)
    __attribute__((warn_unused_result));

/* Whole-string base-10 int64. 0, or -1 if s is anything else. */
int ctl_parse_i64(const char *s, int64_t *out)
    __attribute__((warn_unused_result));

/* Loads the configuration as the services do; NULL with the reason
 * printed on stderr (the caller exits CTL_EXIT_USAGE). */
ctr_config *ctl_config_load(void) __attribute__((warn_unused_result));

/* "counterctl: " + the message on stderr, with a newline. */
void ctl_err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Prints doc as one line of JSON on stdout and drops the caller's
 * reference to it. */
void ctl_json_print(json_object *doc);

/*
 * Prints the help of a command (on --help: stdout, CTL_EXIT_OK) or, after
 * a usage error, "counterctl: why" and the help's usage lines (up to its
 * first blank line) on stderr: CTL_EXIT_USAGE. why NULL: only the usage.
 */
int ctl_help(const char *help);
int ctl_usage_error(const char *help, const char *why);

/* {"ok": false, "error": {"code": code, "message": message}}: what --json
 * prints when a command fails after its arguments were read. */
json_object *ctl_json_failure(const char *code, const char *message);

/* An RFC 3339 string of ms since the epoch, or JSON null for 0 (never). */
json_object *ctl_json_time(int64_t ms);

#endif

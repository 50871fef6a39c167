/*
 * loadtool.h - what the load tools (tests/tools/loadgen, bench/openloop)
 * share besides their histogram (lathist.h): option parsing of a positive
 * number, seconds as a timeval, and an open-file limit that fits the
 * connections asked for. Header-only: each tool is a single file built on
 * its own.
 */
#ifndef COUNTER_TOOLS_LOADTOOL_H
#define COUNTER_TOOLS_LOADTOOL_H

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/time.h>

/* descriptors beyond the connections: stdio, logs, libevent internals */
enum { LOADTOOL_FD_SLACK = 64 };

/* A positive finite number, the whole of s; -1 otherwise. */
static inline int parse_double(const char *s, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || *s == '\0' || *end != '\0' || !(v > 0))
        return -1;
    *out = v;
    return 0;
}

static inline struct timeval to_timeval(double secs)
{
    struct timeval tv;
    tv.tv_sec = (time_t)secs;
    tv.tv_usec = (suseconds_t)((secs - (double)tv.tv_sec) * 1e6);
    return tv;
}

/* Each connection is a descriptor; the default soft limit (1024) would
 * make connects beyond it fail as "errors" that are really ours. */
static inline void raise_nofile(const char *prog, long connections)
{
    struct rlimit rl;
    rlim_t want = (rlim_t)connections + LOADTOOL_FD_SLACK;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur >= want)
        return;
    if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < want) {
        struct rlimit raised = {want, want};
        if (setrlimit(RLIMIT_NOFILE, &raised) == 0)
            return;
        /* not privileged: take what the hard limit allows */
        want = rl.rlim_max;
    }
    rl.rlim_cur = want;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0 ||
        rl.rlim_cur < (rlim_t)connections + LOADTOOL_FD_SLACK)
        fprintf(stderr,
                "%s: warning: open-file limit %llu is below the %ld "
                "connections asked for; some will fail\n",
                prog, (unsigned long long)rl.rlim_cur, connections);
}

#endif

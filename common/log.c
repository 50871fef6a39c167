/*
 * log.c - see log.h. Each line is built in one buffer and written with one
 * write(2), so lines from librdkafka's threads and ours never interleave.
 */
#include "common/log.h"
#include "common/timeutil.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

int ctr_log_min_level = CTR_LOG_INFO;
static const char *log_proc_name = "counter";

void ctr_log_init(const char *proc_name, int min_level)
{
    log_proc_name = proc_name;
    ctr_log_min_level = min_level;
}

int ctr_log_level_parse(const char *name)
{
    static const char *const names[] = {"debug", "info", "warning", "error"};
    for (int i = 0; i < 4; i++)
        if (strcasecmp(name, names[i]) == 0)
            return i;
    return -1;
}

void ctr_log_write(int level, const char *fmt, ...)
{
    static const char *const names[] = {"debug", "info", "warning", "error"};
    char line[2048], msg[1536], ts[40];
    size_t pos = 0;
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    ctr_time_format_rfc3339(ctr_time_now_ms(), ts, sizeof(ts));

    int n = snprintf(line, sizeof(line), "ts=%s level=%s proc=%s msg=\"", ts,
                     names[level < 0 || level > 3 ? 3 : level], log_proc_name);
    pos = n > 0 ? (size_t)n : 0;
    /* Escape quotes and control characters so one event stays one line. */
    for (const char *p = msg; *p && pos + 4 < sizeof(line); p++) {
        unsigned char c = (unsigned char)*p;
        if (c == '"' || c == '\\') {
            line[pos++] = '\\';
            line[pos++] = (char)c;
        } else if (c < 0x20) {
            line[pos++] = ' ';
        } else {
            line[pos++] = (char)c;
        }
    }
    line[pos++] = '"';
    line[pos++] = '\n';
    ssize_t ignored = write(STDERR_FILENO, line, pos);
    (void)ignored;
}

/*
 * log.h - one-line structured logging shared by every process.
 *
 * Lines look like
 *   ts=2026-11-26T10:30:00.123Z level=warning proc=counter-api msg="could not
 * connect to redis at 127.0.0.1:6379: connection refused" so that people and
 * log shippers can both read them. The level check happens before the arguments
 * are evaluated.
 */
#ifndef COUNTER_COMMON_LOG_H
#define COUNTER_COMMON_LOG_H

enum ctr_log_level {
    CTR_LOG_DEBUG = 0,
    CTR_LOG_INFO = 1,
    CTR_LOG_WARNING = 2,
    CTR_LOG_ERROR = 3,
};

extern int ctr_log_min_level;

/* Sets the process name printed on each line; the string is not copied. */
void ctr_log_init(const char *proc_name, int min_level);

/* Parses "debug", "info", "warning" or "error"; returns -1 if unknown. */
int ctr_log_level_parse(const char *name);

void ctr_log_write(int level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#define ctr_log(level, ...)                                                    \
    do {                                                                       \
        if ((level) >= ctr_log_min_level)                                      \
            ctr_log_write((level), __VA_ARGS__);                               \
    } while (0)

#define ctr_debug(...) ctr_log(CTR_LOG_DEBUG, __VA_ARGS__)
#define ctr_info(...)  ctr_log(CTR_LOG_INFO, __VA_ARGS__)
#define ctr_warn(...)  ctr_log(CTR_LOG_WARNING, __VA_ARGS__)
#define ctr_error(...) ctr_log(CTR_LOG_ERROR, __VA_ARGS__)

#endif

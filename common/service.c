/*
 * service.c - see service.h.
 */
#include "common/service.h"

#include "common/log.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static volatile sig_atomic_t stop_requested;

static void on_stop_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

ctr_config *ctr_service_start(const char *proc)
{
    char err[512];
    struct sigaction sa;

    signal(SIGPIPE, SIG_IGN);
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_stop_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    ctr_config *cfg = ctr_config_load(NULL, err, sizeof(err));
    if (cfg == NULL) {
        fprintf(stderr, "%s: %s\n", proc, err);
        return NULL;
    }
    ctr_log_init(proc, ctr_log_level_parse(cfg->log_level));
    return cfg;
}

int ctr_service_stopping(void)
{
    return stop_requested;
}

void ctr_service_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/*
 * service.h - the skeleton the two consumer services (counter-persister,
 * counter-applier) share: the configuration and logging set up, SIGTERM
 * and SIGINT raising a stop flag that their loops watch, SIGPIPE ignored,
 * and a sleep for their retries. (counter-api takes its signals as events
 * of its libevent loop instead.)
 */
#ifndef COUNTER_COMMON_SERVICE_H
#define COUNTER_COMMON_SERVICE_H

#include "common/config.h"

/*
 * Ignores SIGPIPE, turns SIGTERM and SIGINT into the stop flag, loads the
 * configuration (config.yaml or COUNTER_CONFIG, and the environment) and
 * sets up logging as proc. NULL after printing why the configuration was
 * refused: exit 2. Main thread, once.
 */
ctr_config *ctr_service_start(const char *proc)
    __attribute__((warn_unused_result));

/* 1 once SIGTERM or SIGINT came. Any thread. */
int ctr_service_stopping(void);

/* Sleeps ms milliseconds (a signal may cut it short). */
void ctr_service_sleep_ms(int ms);

#endif

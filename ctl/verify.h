/*
 * verify.h - `counterctl verify`: compares the values in Redis with those in
 * PostgreSQL for every counter (invariant I4 without the api), after the
 * persister has caught up with the topic, and prints each difference.
 *
 * What is compared: a counter without a daily reset has its value
 * "{c:NAME}" against counter_totals; a daily counter has each
 * window "{c:NAME}:d:DATE" present in Redis against counter_daily, plus
 * every nonzero counter_daily row whose day a late event could still reach
 * (it ends less than lateness_s ago), which must have its window in Redis.
 * Older days are only in PostgreSQL once Redis has expired their windows,
 * so they are not differences. A value missing on one side counts as 0.
 */
#ifndef COUNTER_CTL_VERIFY_H
#define COUNTER_CTL_VERIFY_H

#include "common/config.h"

enum {
    CTL_VERIFY_SAME = 0,   /* no difference */
    CTL_VERIFY_DIFFER = 1, /* at least one difference, printed */
    CTL_VERIFY_ERROR = 2,  /* could not check: reason printed on stderr */
    /* could not check because Redis, PostgreSQL or Kafka did not answer,
     * or the persister did not catch up: reason printed on stderr */
    CTL_VERIFY_UNREACHABLE = 3,
};

/*
 * Runs the check. Before each read of PostgreSQL, waits up to wait_s
 * seconds for the persister's stored offsets to reach the topic's high
 * watermarks; past that, says so and returns CTL_VERIFY_UNREACHABLE. Anything
 * that differs is read again after a pause (writes arriving during the
 * check can make a difference that is gone a moment later). Prints one
 * line per difference that persists, "counter NAME[ day DATE]: redis=X
 * postgres=Y", then "verify: N counters checked, M differ", on stdout.
 * Returns one of the CTL_VERIFY_* codes (the command's exit status).
 * Blocking; main thread.
 */
int ctl_verify_run(const ctr_config *cfg, int wait_s)
    __attribute__((warn_unused_result));

#endif

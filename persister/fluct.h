/*
 * fluct.h - "abnormal fluctuation": a counter whose rate of change leaves
 * its recent band. Per counter, the absolute change per window (the sum
 * of |delta| of the events the persister folds) is compared with an
 * exponentially weighted mean and variance of the windows before it;
 * outside mean +/- (4 sigma + half the mean + 20) it is abnormal until it
 * comes back. The band's floor keeps quiet counters from alarming on a
 * handful of events. Pure bookkeeping, single thread.
 */
#ifndef COUNTER_PERSISTER_FLUCT_H
#define COUNTER_PERSISTER_FLUCT_H

#include "common/strbuf.h"

#include <stdint.h>

typedef struct ps_fluct ps_fluct;

/* window_ms: the rate's period; warmup: windows seen before judging. */
ps_fluct *ps_fluct_new(int window_ms, int warmup)
    __attribute__((warn_unused_result));
void ps_fluct_free(ps_fluct *f);

/* Counts |delta| of counter name at monotonic time now_ms; closes the
 * windows that ended before it (judging them, logging one line when a
 * counter becomes abnormal). */
void ps_fluct_add(ps_fluct *f, const char *name, int64_t delta, int64_t now_ms);

/* Closes the windows that ended by now_ms (call it when idle too). */
void ps_fluct_tick(ps_fluct *f, int64_t now_ms);

/* counter_fluctuation_alarms_total, counter_abnormal{counter=...}. */
void ps_fluct_render(const ps_fluct *f, ctr_strbuf *b);

#endif

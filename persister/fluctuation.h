/*
 * fluctuation.h - "abnormal fluctuation": a counter whose rate of change leaves
 * its recent band. Per counter, the absolute change per window (the sum
 * of |delta| of the events the persister folds) is compared with an
 * exponentially weighted mean and variance of the windows before it;
 * outside mean +/- (4 sigma + half the mean + 20) it is abnormal until it
 * comes back. The band's floor keeps quiet counters from alarming on a
 * handful of events. Pure bookkeeping, single thread.
 *
 * At most PS_FLUCT_SLOTS counters are watched, in a table that never
 * grows, so that no flood of names can take memory or keep real counters
 * out: a counter unchanged for PS_FLUCT_IDLE_WINDOWS windows is
 * forgotten, and a new name takes the place of the least changed one
 * among those not yet established (changed in fewer than `warmup`
 * windows), least recently changed first. Established counters that are
 * still changing are never pushed out; a new name that finds only those
 * is not watched until room is made.
 */
#ifndef COUNTER_PERSISTER_FLUCTUATION_H
#define COUNTER_PERSISTER_FLUCTUATION_H

#include "common/strbuf.h"

#include <stdint.h>

#define PS_FLUCT_SLOTS        4096
#define PS_FLUCT_IDLE_WINDOWS 360

typedef struct ps_fluct ps_fluct;

/* window_ms: the rate's period; warmup: windows seen before judging. */
ps_fluct *ps_fluct_new(int window_ms, int warmup)
    __attribute__((warn_unused_result));
void ps_fluct_free(ps_fluct *f);

/* Counts a change of counter name by `change` (its sign is ignored: a
 * batch's sum may pass int64, and the rate is a statistic) at monotonic
 * time now_ms; closes the windows that ended before it (judging them,
 * logging one line when a counter becomes abnormal). */
void ps_fluct_add(ps_fluct *f, const char *name, double change, int64_t now_ms);

/* Closes the windows that ended by now_ms (call it when idle too). */
void ps_fluct_tick(ps_fluct *f, int64_t now_ms);

/* Whether counter name is watched now. */
int ps_fluct_watching(const ps_fluct *f, const char *name);

/* counter_fluctuation_alarms_total, counter_fluctuation_watched,
 * counter_abnormal{counter=...}. */
void ps_fluct_render(const ps_fluct *f, ctr_strbuf *b);

#endif

/*
 * read_floor.h - the highest value this process has served, per monotonic
 * counter (kinds counter and unique) and period, so that a read that
 * falls back to PostgreSQL, which lags Redis by a batch, never shows a
 * client a value below one it already saw (I6 in DESIGN.md). A fixed,
 * direct-mapped table: a counter whose slot was taken by another loses
 * its floor, nothing else. Loop thread only.
 */
#ifndef COUNTER_API_READ_FLOOR_H
#define COUNTER_API_READ_FLOOR_H

#include <stdint.h>

typedef struct api_floor api_floor;

api_floor *api_floor_new(void);
void api_floor_free(api_floor *f);

/* Remembers that (name, period) was served with value, updated_ms. */
void api_floor_note(api_floor *f, const char *name, const char *period,
                    int64_t value, int64_t updated_ms);

/* The value (name, period) has now, as a write answered it: remembered
 * even when lower (a counter's decrement is a correction that stands). */
void api_floor_set(api_floor *f, const char *name, const char *period,
                   int64_t value, int64_t updated_ms);

/* Raises *value (and *updated_ms with it) to the floor of (name, period);
 * returns 1 if it did. */
int api_floor_raise(const api_floor *f, const char *name, const char *period,
                    int64_t *value, int64_t *updated_ms);

#endif

/*
 * fluctuation.c - see fluctuation.h. Open addressing over a fixed table: a name
 * lives in one of the PROBE slots after its hash, all of which are looked at (a
 * freed slot leaves no hole that would hide a name behind it).
 */
#include "persister/fluctuation.h"

#include "common/log.h"
#include "common/metrics.h"
#include "common/name.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { PROBE = 64 };
static const double ALPHA = 0.2;

_Static_assert((PS_FLUCT_SLOTS & (PS_FLUCT_SLOTS - 1)) == 0,
               "the table's size is a power of two");

typedef struct slot {
    char name[CTR_NAME_MAX + 1]; /* "" when free */
    uint32_t hash;
    double cur; /* |change| in the open window */
    double mean, var;
    int windows;            /* closed windows seen */
    int active;             /* closed windows with a change */
    int idle;               /* closed windows since the last change */
    int64_t last_change_ms; /* when it last changed */
    int abnormal;
} slot;

struct ps_fluct {
    int window_ms, warmup;
    int64_t window_end_ms; /* 0: no window open yet */
    uint64_t alarms;
    size_t used;
    slot *slots;
};

ps_fluct *ps_fluct_new(int window_ms, int warmup)
{
    ps_fluct *f = calloc(1, sizeof(*f));
    if (f == NULL)
        return NULL;
    f->slots = calloc(PS_FLUCT_SLOTS, sizeof(slot));
    if (f->slots == NULL) {
        free(f);
        return NULL;
    }
    f->window_ms = window_ms > 0 ? window_ms : 10000;
    f->warmup = warmup > 1 ? warmup : 2;
    return f;
}

void ps_fluct_free(ps_fluct *f)
{
    if (f == NULL)
        return;
    free(f->slots);
    free(f);
}

static uint32_t hash_name(const char *name)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (const unsigned char *p = (const unsigned char *)name; *p; p++)
        h = (h ^ *p) * 16777619u;
    return h;
}

static slot *probe_at(const ps_fluct *f, uint32_t h, uint32_t i)
{
    return &f->slots[(h + i) & (PS_FLUCT_SLOTS - 1)];
}

static slot *lookup(const ps_fluct *f, const char *name, uint32_t h)
{
    for (uint32_t i = 0; i < PROBE; i++) {
        slot *s = probe_at(f, h, i);
        if (s->name[0] && s->hash == h && strcmp(s->name, name) == 0)
            return s;
    }
    return NULL;
}

/* Changes seen: closed windows with one, and the open window's. */
static int changes(const slot *s)
{
    return s->active + (s->cur > 0);
}

/*
 * The slot for a name not in the table: a free one of its probe slots,
 * else the one of them with the fewest changes among those not yet
 * established (least recently changed first); NULL when every one is an
 * established counter.
 */
static slot *claim(ps_fluct *f, const char *name, uint32_t h, int64_t now_ms)
{
    slot *victim = NULL;
    for (uint32_t i = 0; i < PROBE; i++) {
        slot *s = probe_at(f, h, i);
        if (s->name[0] == '\0') {
            victim = s;
            f->used++;
            break;
        }
        if (changes(s) >= f->warmup)
            continue;
        if (victim == NULL || changes(s) < changes(victim) ||
            (changes(s) == changes(victim) &&
             s->last_change_ms < victim->last_change_ms))
            victim = s;
    }
    if (victim == NULL)
        return NULL;
    memset(victim, 0, sizeof(*victim));
    strcpy(victim->name, name);
    victim->hash = h;
    victim->last_change_ms = now_ms;
    return victim;
}

/* Judges the window just closed, then learns from it. */
static void close_window(ps_fluct *f, slot *s)
{
    double x = s->cur;
    s->cur = 0;
    if (x > 0)
        s->active++, s->idle = 0;
    else
        s->idle++;
    if (s->windows >= f->warmup) {
        double band = 4 * sqrt(s->var) + 0.5 * s->mean + 20;
        int out = fabs(x - s->mean) > band;
        if (out && !s->abnormal) {
            f->alarms++;
            ctr_warn("abnormal fluctuation: counter %s changed by %.0f in %d "
                     "ms, outside its recent band %.0f +/- %.0f",
                     s->name, x, f->window_ms, s->mean, band);
        } else if (!out && s->abnormal) {
            ctr_info("counter %s is back within its band", s->name);
        }
        s->abnormal = out;
    }
    if (s->windows == 0) {
        s->mean = x;
    } else {
        double d = x - s->mean;
        s->mean += ALPHA * d;
        s->var = (1 - ALPHA) * (s->var + ALPHA * d * d);
    }
    s->windows++;
}

/* Closes the open window of every counter watched, and forgets those
 * unchanged for PS_FLUCT_IDLE_WINDOWS windows. */
static void close_windows(ps_fluct *f)
{
    for (size_t i = 0; i < PS_FLUCT_SLOTS; i++) {
        slot *s = &f->slots[i];
        if (s->name[0] == '\0')
            continue;
        close_window(f, s);
        if (s->idle >= PS_FLUCT_IDLE_WINDOWS) {
            memset(s, 0, sizeof(*s));
            f->used--;
        }
    }
}

void ps_fluct_tick(ps_fluct *f, int64_t now_ms)
{
    if (f->window_end_ms == 0) {
        f->window_end_ms = now_ms + f->window_ms;
        return;
    }
    /* a long idle gap closes many windows; a few are enough to learn
     * that the counters were quiet */
    for (int n = 0; now_ms >= f->window_end_ms && n < 8; n++) {
        close_windows(f);
        f->window_end_ms += f->window_ms;
    }
    if (now_ms >= f->window_end_ms)
        f->window_end_ms = now_ms + f->window_ms;
}

void ps_fluct_add(ps_fluct *f, const char *name, double change, int64_t now_ms)
{
    ps_fluct_tick(f, now_ms);
    uint32_t h = hash_name(name);
    slot *s = lookup(f, name, h);
    if (s == NULL && (s = claim(f, name, h, now_ms)) == NULL)
        return;
    s->cur += fabs(change);
    if (change != 0)
        s->last_change_ms = now_ms;
}

int ps_fluct_watching(const ps_fluct *f, const char *name)
{
    return lookup(f, name, hash_name(name)) != NULL;
}

void ps_fluct_render(const ps_fluct *f, ctr_strbuf *b)
{
    ctr_metric_help(b, "counter_fluctuation_alarms_total", "counter",
                    "Times a counter's rate of change left its recent band.");
    ctr_strbuf_printf(b, "counter_fluctuation_alarms_total %llu\n",
                      (unsigned long long)f->alarms);
    ctr_metric_help(b, "counter_fluctuation_watched", "gauge",
                    "Counters whose rate of change is watched now.");
    ctr_strbuf_printf(b, "counter_fluctuation_watched %zu\n", f->used);
    ctr_metric_help(b, "counter_abnormal", "gauge",
                    "1 for each counter whose rate is outside its band now.");
    for (size_t i = 0; i < PS_FLUCT_SLOTS; i++)
        if (f->slots[i].abnormal)
            ctr_strbuf_printf(b, "counter_abnormal{counter=\"%s\"} 1\n",
                              f->slots[i].name);
}

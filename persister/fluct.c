/*
 * fluct.c - see fluct.h.
 */
#include "persister/fluct.h"

#include "common/log.h"
#include "common/metrics.h"
#include "common/name.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Counters watched at once; more are not judged (open addressing). */
enum { SLOTS = 4096 };
static const double ALPHA = 0.2;

typedef struct slot {
    char name[CTR_NAME_MAX + 1]; /* "" when free */
    double cur;                  /* |delta| in the open window */
    double mean, var;
    int windows; /* closed windows seen */
    int abnormal;
} slot;

struct ps_fluct {
    int window_ms, warmup;
    int64_t window_end_ms; /* 0: no window open yet */
    uint64_t alarms;
    slot *slots;
};

ps_fluct *ps_fluct_new(int window_ms, int warmup)
{
    ps_fluct *f = calloc(1, sizeof(*f));
    if (f == NULL)
        return NULL;
    f->slots = calloc(SLOTS, sizeof(slot));
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

static slot *find(ps_fluct *f, const char *name)
{
    uint32_t h = 2166136261u;
    for (const unsigned char *p = (const unsigned char *)name; *p; p++)
        h = (h ^ *p) * 16777619u;
    for (uint32_t i = 0; i < 64; i++) { /* bounded probe */
        slot *s = &f->slots[(h + i) & (SLOTS - 1)];
        if (s->name[0] == '\0') {
            strcpy(s->name, name);
            return s;
        }
        if (strcmp(s->name, name) == 0)
            return s;
    }
    return NULL;
}

/* Judges the window just closed, then learns from it. */
static void close_window(ps_fluct *f, slot *s)
{
    double x = s->cur;
    s->cur = 0;
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

void ps_fluct_tick(ps_fluct *f, int64_t now_ms)
{
    if (f->window_end_ms == 0) {
        f->window_end_ms = now_ms + f->window_ms;
        return;
    }
    /* a long idle gap closes many windows; a few are enough to learn
     * that the counters were quiet */
    for (int n = 0; now_ms >= f->window_end_ms && n < 8; n++) {
        for (size_t i = 0; i < SLOTS; i++)
            if (f->slots[i].name[0])
                close_window(f, &f->slots[i]);
        f->window_end_ms += f->window_ms;
    }
    if (now_ms >= f->window_end_ms)
        f->window_end_ms = now_ms + f->window_ms;
}

void ps_fluct_add(ps_fluct *f, const char *name, int64_t delta, int64_t now_ms)
{
    ps_fluct_tick(f, now_ms);
    slot *s = find(f, name);
    if (s)
        s->cur += fabs((double)delta);
}

void ps_fluct_render(const ps_fluct *f, ctr_strbuf *b)
{
    ctr_metric_help(b, "counter_fluctuation_alarms_total", "counter",
                    "Times a counter's rate of change left its recent band.");
    ctr_strbuf_printf(b, "counter_fluctuation_alarms_total %llu\n",
                      (unsigned long long)f->alarms);
    ctr_metric_help(b, "counter_abnormal", "gauge",
                    "1 for each counter whose rate is outside its band now.");
    for (size_t i = 0; i < SLOTS; i++)
        if (f->slots[i].abnormal)
            ctr_strbuf_printf(b, "counter_abnormal{counter=\"%s\"} 1\n",
                              f->slots[i].name);
}

/*
 * metrics.h - what the three services need to expose Prometheus metrics:
 * a fixed-bucket histogram, the text format written into a ctr_strbuf,
 * and, for the persister and the applier (which have no HTTP server of
 * their own), a tiny one that answers every connection with the metrics
 * text, polled from their main loops.
 */
#ifndef COUNTER_COMMON_METRICS_H
#define COUNTER_COMMON_METRICS_H

#include "common/strbuf.h"

#include <stddef.h>
#include <stdint.h>

/* Latency buckets in seconds, 0.25 ms to 10 s: the api's sub-millisecond
 * reads and the persister's commits both fall inside. */
enum { CTR_HIST_BUCKETS = 14 };
extern const double ctr_latency_bounds[CTR_HIST_BUCKETS];
/* Sizes (events per batch), 1 to 50000. */
extern const double ctr_size_bounds[CTR_HIST_BUCKETS];

typedef struct ctr_histogram {
    const double *bounds;                  /* CTR_HIST_BUCKETS upper bounds */
    uint64_t counts[CTR_HIST_BUCKETS + 1]; /* the last: above every bound */
    uint64_t n;
    double sum;
} ctr_histogram;

void ctr_hist_init(ctr_histogram *h, const double *bounds);
void ctr_hist_observe(ctr_histogram *h, double v);

/* "# HELP" and "# TYPE" lines of a metric family. */
void ctr_metric_help(ctr_strbuf *b, const char *name, const char *type,
                     const char *help);
/* The _bucket, _sum and _count lines of h; labels: "" or `a="b",c="d"`. */
void ctr_hist_render(ctr_strbuf *b, const char *name, const char *labels,
                     const ctr_histogram *h);

typedef struct ctr_metrics_server ctr_metrics_server;
typedef void (*ctr_metrics_render)(ctr_strbuf *out, void *arg);

/*
 * Listens on addr:port ("0.0.0.0", 9101). NULL with the reason in errbuf.
 * port 0: the caller should not call this (metrics off).
 */
ctr_metrics_server *ctr_metrics_server_new(const char *addr, int port,
                                           char *errbuf, size_t errlen)
    __attribute__((warn_unused_result));

/* The same for a service: NULL when port is 0 (metrics off) or when it
 * cannot listen, which is logged as a warning and not fatal. */
ctr_metrics_server *ctr_metrics_server_open(const char *addr, int port);

/*
 * Answers every connection waiting right now (never blocks waiting for
 * one) with 200 and render's text, whatever was asked: GET /metrics is
 * what Prometheus sends. A client slower than 100 ms to send its request
 * or take the answer is dropped.
 */
void ctr_metrics_server_poll(ctr_metrics_server *s, ctr_metrics_render render,
                             void *arg);

void ctr_metrics_server_free(ctr_metrics_server *s);

#endif

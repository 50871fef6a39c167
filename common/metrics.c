/*
 * metrics.c - see metrics.h.
 */
#define _GNU_SOURCE /* accept4 */
#include "common/metrics.h"

#include "common/log.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

const double ctr_latency_bounds[CTR_HIST_BUCKETS] = {
    0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
    0.05,    0.1,    0.25,  0.5,    1,     2.5,  10};

const double ctr_size_bounds[CTR_HIST_BUCKETS] = {
    1, 5, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 20000, 35000, 50000};

void ctr_hist_init(ctr_histogram *h, const double *bounds)
{
    memset(h, 0, sizeof(*h));
    h->bounds = bounds;
}

void ctr_hist_observe(ctr_histogram *h, double v)
{
    size_t i = 0;
    while (i < CTR_HIST_BUCKETS && v > h->bounds[i])
        i++;
    h->counts[i]++;
    h->n++;
    h->sum += v;
}

void ctr_metric_help(ctr_strbuf *b, const char *name, const char *type,
                     const char *help)
{
    ctr_strbuf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name,
                      type);
}

void ctr_hist_render(ctr_strbuf *b, const char *name, const char *labels,
                     const ctr_histogram *h)
{
    const char *sep = labels[0] ? "," : "";
    uint64_t cum = 0;
    for (size_t i = 0; i < CTR_HIST_BUCKETS; i++) {
        cum += h->counts[i];
        ctr_strbuf_printf(b, "%s_bucket{%s%sle=\"%g\"} %llu\n", name, labels,
                          sep, h->bounds[i], (unsigned long long)cum);
    }
    ctr_strbuf_printf(b, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", name, labels, sep,
                      (unsigned long long)h->n);
    if (labels[0]) {
        ctr_strbuf_printf(b, "%s_sum{%s} %.6f\n%s_count{%s} %llu\n", name,
                          labels, h->sum, name, labels,
                          (unsigned long long)h->n);
    } else {
        ctr_strbuf_printf(b, "%s_sum %.6f\n%s_count %llu\n", name, h->sum, name,
                          (unsigned long long)h->n);
    }
}

/* --------------------------------------------------------------- server --- */

struct ctr_metrics_server {
    int fd;
};

ctr_metrics_server *ctr_metrics_server_new(const char *addr, int port,
                                           char *errbuf, size_t errlen)
{
    struct sockaddr_in sa;
    int one = 1;

    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, addr, &sa.sin_addr) != 1) {
        snprintf(errbuf, errlen, "metrics address %s: not an IPv4 address",
                 addr);
        return NULL;
    }
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
        bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 ||
        listen(fd, 16) != 0) {
        snprintf(errbuf, errlen, "metrics on %s:%d: %s", addr, port,
                 strerror(errno));
        if (fd >= 0)
            close(fd);
        return NULL;
    }
    ctr_metrics_server *s = malloc(sizeof(*s));
    if (s == NULL) {
        close(fd);
        snprintf(errbuf, errlen, "out of memory");
        return NULL;
    }
    s->fd = fd;
    return s;
}

/* Waits up to 100 ms for fd to be ready for events. */
static int wait_fd(int fd, short events)
{
    struct pollfd p = {fd, events, 0};
    return poll(&p, 1, 100) == 1 && !(p.revents & (POLLERR | POLLNVAL));
}

static void answer(int fd, ctr_metrics_render render, void *arg)
{
    char req[2048];
    size_t got = 0;

    /* read the request head (ignored) so the close does not reset it */
    while (got < sizeof(req) - 1 && wait_fd(fd, POLLIN)) {
        ssize_t n = read(fd, req + got, sizeof(req) - 1 - got);
        if (n <= 0)
            break;
        got += (size_t)n;
        req[got] = '\0';
        if (strstr(req, "\r\n\r\n") || strstr(req, "\n\n"))
            break;
    }
    ctr_strbuf body = {0}, out = {0};
    render(&body, arg);
    ctr_strbuf_printf(&out,
                      "HTTP/1.1 200 OK\r\nContent-Type: text/plain; "
                      "version=0.0.4\r\nContent-Length: %zu\r\nConnection: "
                      "close\r\n\r\n",
                      body.len);
    if (body.len)
        ctr_strbuf_put(&out, body.s, body.len);
    size_t sent = 0;
    while (!out.failed && sent < out.len && wait_fd(fd, POLLOUT)) {
        ssize_t n = send(fd, out.s + sent, out.len - sent, MSG_NOSIGNAL);
        if (n <= 0)
            break;
        sent += (size_t)n;
    }
    ctr_strbuf_clear(&body);
    ctr_strbuf_clear(&out);
}

ctr_metrics_server *ctr_metrics_server_open(const char *addr, int port)
{
    char err[256];
    if (port <= 0)
        return NULL;
    ctr_metrics_server *s =
        ctr_metrics_server_new(addr, port, err, sizeof(err));
    if (s == NULL) /* the service's work matters more than its metrics */
        ctr_warn("no metrics: %s", err);
    return s;
}

void ctr_metrics_server_poll(ctr_metrics_server *s, ctr_metrics_render render,
                             void *arg)
{
    if (s == NULL)
        return;
    for (int i = 0; i < 8; i++) {
        int fd = accept4(s->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
            return; /* EAGAIN: nobody waiting */
        answer(fd, render, arg);
        close(fd);
    }
}

void ctr_metrics_server_free(ctr_metrics_server *s)
{
    if (s == NULL)
        return;
    close(s->fd);
    free(s);
}

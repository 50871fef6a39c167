/*
 * extlag.c - the lag of an external producer's events (issue 20): sends
 * --rate events per second for --duration seconds into the input topic on
 * a fixed timetable (open loop: an event is produced when it is due,
 * whatever came before), and measures for each one the time from its
 * produce acknowledgement (acks=all) to its effect being visible through
 * GET: a thread reads the --counters counters' values with one batch GET
 * every --poll-ms ms. Event i adds 1 to counter i % counters, so it is
 * visible once that counter reaches i / counters + 1 (each starts at 0:
 * use fresh names, --prefix). Prints one JSON object.
 *
 *   extlag --brokers H:P --topic T --api H:P --prefix P [--rate 20000]
 *          [--duration 10] [--counters 100] [--poll-ms 2]
 *
 * Exit 0, or 1 when some event never became visible (or was not
 * acknowledged) within 30 s of the end, 2 on a usage or setup error.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <librdkafka/rdkafka.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int64_t *ack_us;  /* per event; 0 not yet, -1 failed */
static int64_t *seen_us; /* per event; 0 not yet */
static _Atomic int64_t acked;
static int ncounters = 100, poll_ms = 2;
static int64_t total;
static char api_host[64] = "127.0.0.1", prefix[64];
static int api_port;
static atomic_int stop_polling;
static int64_t polls, poll_gap_max_us;

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *op)
{
    (void)rk;
    (void)op;
    int64_t i = (int64_t)(intptr_t)m->_private;
    ack_us[i] = m->err ? -1 : now_us();
    atomic_fetch_add(&acked, 1);
}

static int connect_api(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)api_port)};
    inet_pton(AF_INET, api_host, &a.sin_addr);
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return fd;
}

/* One batch GET on a keep-alive connection; values into v. 0 or -1. */
static int read_values(int fd, const char *req, size_t reqlen, int64_t *v)
{
    static char buf[1 << 20];
    if (write(fd, req, reqlen) != (ssize_t)reqlen)
        return -1;
    size_t got = 0, need = 0;
    char *body = NULL;
    for (;;) {
        ssize_t n = read(fd, buf + got, sizeof(buf) - 1 - got);
        if (n <= 0)
            return -1;
        got += (size_t)n;
        buf[got] = '\0';
        if (body == NULL && (body = strstr(buf, "\r\n\r\n")) != NULL) {
            char *cl = strcasestr(buf, "content-length:");
            if (cl == NULL)
                return -1;
            need = (size_t)(body + 4 - buf) + strtoul(cl + 15, NULL, 10);
        }
        if (body && got >= need)
            break;
    }
    const char *p = body;
    for (int c = 0; c < ncounters; c++) {
        p = strstr(p, "\"value\":");
        if (p == NULL)
            return -1;
        p += 8;
        v[c] = strtoll(p, NULL, 10);
    }
    return 0;
}

static void *poller(void *arg)
{
    (void)arg;
    char *req = malloc(64 + (size_t)ncounters * 80);
    int64_t *v = calloc((size_t)ncounters, sizeof(*v));
    int64_t *next = calloc((size_t)ncounters, sizeof(*next)); /* per counter:
                                                      the next event index */
    size_t len = (size_t)sprintf(req, "GET /api/v1/counters?names=");
    for (int c = 0; c < ncounters; c++) {
        len += (size_t)sprintf(req + len, "%s%s%d", c ? "," : "", prefix, c);
        next[c] = c;
    }
    len += (size_t)sprintf(req + len,
                           " HTTP/1.1\r\nHost: bench\r\nAccept: */*\r\n\r\n");
    int fd = -1;
    int64_t last = 0;
    while (!atomic_load(&stop_polling)) {
        if (fd < 0 && (fd = connect_api()) < 0) {
            usleep(10000);
            continue;
        }
        if (read_values(fd, req, len, v) != 0) {
            close(fd);
            fd = -1;
            continue;
        }
        int64_t t = now_us();
        if (last && t - last > poll_gap_max_us)
            poll_gap_max_us = t - last;
        last = t;
        polls++;
        for (int c = 0; c < ncounters; c++)
            /* counter c shows v[c]: events c, c + n, ... up to the
             * (v[c])-th are visible */
            while (next[c] < total && next[c] / ncounters < v[c]) {
                seen_us[next[c]] = t;
                next[c] += ncounters;
            }
        usleep((useconds_t)poll_ms * 1000);
    }
    if (fd >= 0)
        close(fd);
    free(req);
    free(v);
    free(next);
    return NULL;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    const char *brokers = NULL, *topic = NULL;
    double rate = 20000, duration = 10;
    char err[512];
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--brokers"))
            brokers = argv[i + 1];
        else if (!strcmp(argv[i], "--topic"))
            topic = argv[i + 1];
        else if (!strcmp(argv[i], "--api"))
            sscanf(argv[i + 1], "%63[^:]:%d", api_host, &api_port);
        else if (!strcmp(argv[i], "--prefix"))
            snprintf(prefix, sizeof(prefix), "%s", argv[i + 1]);
        else if (!strcmp(argv[i], "--rate"))
            rate = atof(argv[i + 1]);
        else if (!strcmp(argv[i], "--duration"))
            duration = atof(argv[i + 1]);
        else if (!strcmp(argv[i], "--counters"))
            ncounters = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--poll-ms"))
            poll_ms = atoi(argv[i + 1]);
    }
    if (!brokers || !topic || !api_port || !prefix[0] || ncounters < 1 ||
        ncounters > 100 || rate <= 0 || duration <= 0) {
        fprintf(stderr, "usage: extlag --brokers H:P --topic T --api H:P "
                        "--prefix P [--rate N] [--duration S] [--counters "
                        "1..100] [--poll-ms MS]\n");
        return 2;
    }
    total = (int64_t)(rate * duration);
    ack_us = calloc((size_t)total, sizeof(*ack_us));
    seen_us = calloc((size_t)total, sizeof(*seen_us));
    int64_t *due_us = calloc((size_t)total, sizeof(*due_us));
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    const char *set[][2] = {{"bootstrap.servers", brokers},
                            {"enable.idempotence", "true"},
                            {"acks", "all"},
                            {"linger.ms", "5"},
                            {"partitioner", "murmur2_random"}};
    for (size_t i = 0; i < sizeof(set) / sizeof(set[0]); i++)
        if (rd_kafka_conf_set(conf, set[i][0], set[i][1], err, sizeof(err))) {
            fprintf(stderr, "extlag: %s\n", err);
            return 2;
        }
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
    if (rk == NULL || ack_us == NULL || seen_us == NULL || due_us == NULL) {
        fprintf(stderr, "extlag: %s\n", rk ? "out of memory" : err);
        return 2;
    }
    pthread_t th;
    pthread_create(&th, NULL, poller, NULL);
    usleep(200000); /* the first poll: the baseline 0 */

    int64_t t0 = now_us(), late = 0;
    char name[128], payload[512];
    for (int64_t i = 0; i < total; i++) {
        int64_t due = t0 + (int64_t)((double)i * 1e6 / rate);
        int64_t t;
        while ((t = now_us()) < due) {
            rd_kafka_poll(rk, 0);
            if (due - t > 200)
                usleep((useconds_t)(due - t - 100));
        }
        if (t - due > 10000)
            late++;
        due_us[i] = due;
        int c = (int)(i % ncounters);
        int kl = snprintf(name, sizeof(name), "%s%d", prefix, c);
        struct timespec wall;
        clock_gettime(CLOCK_REALTIME, &wall);
        int pl =
            snprintf(payload, sizeof(payload),
                     "{\"v\":1,\"id\":\"%s-%" PRId64
                     "\",\"counter\":\"%s\",\"delta\":1,\"ts\":%lld}",
                     prefix, i, name,
                     (long long)wall.tv_sec * 1000 + wall.tv_nsec / 1000000);
        while (rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(topic),
                                 RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                 RD_KAFKA_V_KEY(name, (size_t)kl),
                                 RD_KAFKA_V_VALUE(payload, (size_t)pl),
                                 RD_KAFKA_V_OPAQUE((void *)(intptr_t)i),
                                 RD_KAFKA_V_END) != 0)
            rd_kafka_poll(rk, 1);
    }
    int64_t sent_us = now_us() - t0;
    rd_kafka_flush(rk, 30000);
    /* wait for visibility: up to 30 s after the last event */
    int64_t deadline = now_us() + 30 * 1000000;
    while (now_us() < deadline) {
        int64_t missing = 0;
        for (int64_t i = 0; i < total; i++)
            missing += seen_us[i] == 0;
        if (missing == 0)
            break;
        usleep(50000);
    }
    atomic_store(&stop_polling, 1);
    pthread_join(th, NULL);

    int64_t *lag = calloc((size_t)total, sizeof(*lag));
    int64_t n = 0, not_seen = 0, not_acked = 0, before_ack = 0;
    for (int64_t i = 0; i < total; i++) {
        if (ack_us[i] <= 0) {
            not_acked++;
            continue;
        }
        if (seen_us[i] == 0) {
            not_seen++;
            continue;
        }
        int64_t d = seen_us[i] - ack_us[i];
        if (d < 0) {
            before_ack++; /* applied before the ack reached the producer */
            d = 0;
        }
        lag[n++] = d;
    }
    qsort(lag, (size_t)n, sizeof(*lag), cmp_i64);
#define PCT(q) (n ? (double)lag[(int64_t)((double)(n - 1) * (q))] / 1000.0 : -1)
    printf("{\"events\":%" PRId64 ",\"measured\":%" PRId64
           ",\"not_acked\":%" PRId64 ",\"not_seen\":%" PRId64
           ",\"visible_before_ack\":%" PRId64 ",\"late\":%" PRId64
           ",\"sent_per_s\":%.0f,\"p50_ms\":%.1f,\"p99_ms\":%.1f,"
           "\"p99_9_ms\":%.1f,\"max_ms\":%.1f,\"polls\":%" PRId64
           ",\"poll_gap_max_ms\":%.1f,\"rate\":%.0f,\"duration_s\":%.1f,"
           "\"counters\":%d}\n",
           total, n, not_acked, not_seen, before_ack, late,
           (double)total * 1e6 / (double)sent_us, PCT(0.5), PCT(0.99),
           PCT(0.999), PCT(1.0), polls, (double)poll_gap_max_us / 1000.0, rate,
           duration, ncounters);
    rd_kafka_destroy(rk);
    return not_seen || not_acked ? 1 : 0;
}

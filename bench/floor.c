/*
 * The durable floor for bench/run.sh: the least a durable increment can be
 * in counter-api's architecture, to measure the api's write against.
 *
 * Any request to 127.0.0.1:PORT/<segment>/<name>/...:
 *   1. one EVALSHA on Redis: INCRBY {f:<name>} 1 and SET {f:<name>}:t <ms>;
 *   2. when Redis answered, the event (key <name>, a one-line JSON value
 *      like the api's, without its id) goes to Kafka: idempotent producer,
 *      acks=all, on a topic of its own that nothing consumes;
 *   3. when the delivery report says delivered, 200 with the new value.
 * A Redis error or a failed delivery answers 503. No JSON parsing of the
 * request, no metrics, no idempotency, no escrow, no deadlines: only what
 * every durable write of this architecture must pay. Redis then Kafka, in
 * that order, as the api does (the event is published once Redis took the
 * write), so the latency is that of the same two round trips in line.
 *
 * One event loop (libevent), one async hiredis connection, delivery
 * reports served in the loop (librdkafka's queue signals a pipe), as in
 * counter-api. librdkafka settings beyond the defaults (which are the
 * api's: linger.ms 0, Nagle off, murmur2_random) come as -X key=value, so
 * the bench gives the floor whatever it gives the api.
 *
 * Usage: floor PORT REDIS_HOST:PORT BROKERS TOPIC [-X key=value]...
 */
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <fcntl.h>
#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <librdkafka/rdkafka.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

static const char script[] =
    "local v = redis.call('INCRBY', KEYS[1], ARGV[1])\n"
    "redis.call('SET', KEYS[2], ARGV[2])\n"
    "return v\n";

typedef struct floor_app {
    struct event_base *base;
    redisAsyncContext *redis;
    char sha[41];
    rd_kafka_t *rk;
    rd_kafka_topic_t *rkt;
    int wake_fd[2];
} floor_app;

/* One request in flight: freed when it is answered. */
typedef struct floor_op {
    floor_app *app;
    struct evhttp_request *req;
    long long value;
    size_t name_len;
    char name[128];
} floor_op;

static void answer(floor_op *op, int status)
{
    struct evbuffer *out = evhttp_request_get_output_buffer(op->req);
    if (status == 200) {
        evbuffer_add_printf(out, "{\"success\":true,\"current_value\":%lld}\n",
                            op->value);
        evhttp_send_reply(op->req, 200, "OK", NULL);
    } else {
        evbuffer_add(out, "{\"success\":false}\n", 18);
        evhttp_send_reply(op->req, status, "Service Unavailable", NULL);
    }
    free(op);
}

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *msg,
                        void *opaque)
{
    (void)rk;
    (void)opaque;
    answer(msg->_private, msg->err ? 503 : 200);
}

static long long now_ms(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (long long)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

static void on_applied(redisAsyncContext *ac, void *replyp, void *privdata)
{
    redisReply *reply = replyp;
    floor_op *op = privdata;
    char payload[256];
    (void)ac;

    if (reply == NULL || reply->type != REDIS_REPLY_INTEGER) {
        answer(op, 503);
        return;
    }
    op->value = reply->integer;
    int len = snprintf(payload, sizeof(payload),
                       "{\"v\":1,\"counter\":\"%.*s\",\"delta\":1,\"ts\":%lld}",
                       (int)op->name_len, op->name, now_ms());
    if (rd_kafka_producev(op->app->rk, RD_KAFKA_V_RKT(op->app->rkt),
                          RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                          RD_KAFKA_V_KEY(op->name, op->name_len),
                          RD_KAFKA_V_VALUE(payload, (size_t)len),
                          RD_KAFKA_V_OPAQUE(op), RD_KAFKA_V_END) != 0)
        answer(op, 503);
}

/* The counter's name: the path's second segment (/counter/<name>/...). */
static size_t path_name(const char *uri, char *name, size_t cap)
{
    const char *p = strchr(uri + 1, '/');
    p = p ? p + 1 : uri + 1;
    size_t n = strcspn(p, "/?");
    if (n == 0 || n >= cap)
        n = (size_t)snprintf(name, cap, "floor");
    else
        memcpy(name, p, n);
    name[n] = '\0';
    return n;
}

static void on_request(struct evhttp_request *req, void *arg)
{
    floor_app *app = arg;
    floor_op *op = malloc(sizeof(*op));
    char key[160], stamp_key[168], ms[24];

    if (op == NULL) {
        evhttp_send_reply(req, 500, "Internal Server Error", NULL);
        return;
    }
    op->app = app;
    op->req = req;
    op->name_len =
        path_name(evhttp_request_get_uri(req), op->name, sizeof(op->name));
    snprintf(key, sizeof(key), "{f:%s}", op->name);
    snprintf(stamp_key, sizeof(stamp_key), "{f:%s}:t", op->name);
    snprintf(ms, sizeof(ms), "%lld", now_ms());
    if (redisAsyncCommand(app->redis, on_applied, op, "EVALSHA %s 2 %s %s 1 %s",
                          app->sha, key, stamp_key, ms) != REDIS_OK)
        answer(op, 503);
}

static void on_wake(evutil_socket_t fd, short what, void *arg)
{
    floor_app *app = arg;
    char drain[64];
    (void)what;
    while (read(fd, drain, sizeof(drain)) > 0)
        ;
    rd_kafka_poll(app->rk, 0);
}

static void on_signal(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    event_base_loopbreak(arg);
}

static int set_conf(rd_kafka_conf_t *conf, const char *k, const char *v)
{
    char err[256];
    if (rd_kafka_conf_set(conf, k, v, err, sizeof(err)) != RD_KAFKA_CONF_OK) {
        fprintf(stderr, "floor: kafka setting %s=%s: %s\n", k, v, err);
        return -1;
    }
    return 0;
}

static int producer_new(floor_app *app, const char *brokers, const char *topic,
                        int argc, char **argv)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    char err[512];
    if (set_conf(conf, "bootstrap.servers", brokers) ||
        set_conf(conf, "enable.idempotence", "true") ||
        set_conf(conf, "acks", "all") || set_conf(conf, "linger.ms", "0") ||
        set_conf(conf, "socket.nagle.disable", "true") ||
        set_conf(conf, "partitioner", "murmur2_random"))
        goto err;
    for (int i = 0; i + 1 < argc; i += 2) {
        char *eq = strcmp(argv[i], "-X") == 0 ? strchr(argv[i + 1], '=') : NULL;
        if (eq == NULL) {
            fprintf(stderr, "floor: expected -X key=value, got %s\n", argv[i]);
            goto err;
        }
        *eq = '\0';
        if (set_conf(conf, argv[i + 1], eq + 1))
            goto err;
    }
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    app->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
    if (app->rk == NULL) {
        fprintf(stderr, "floor: could not create kafka producer: %s\n", err);
        goto err;
    }
    app->rkt = rd_kafka_topic_new(app->rk, topic, NULL);
    if (app->rkt == NULL || pipe(app->wake_fd) != 0)
        return -1;
    for (int i = 0; i < 2; i++)
        fcntl(app->wake_fd[i], F_SETFL,
              fcntl(app->wake_fd[i], F_GETFL) | O_NONBLOCK);
    rd_kafka_queue_t *mainq = rd_kafka_queue_get_main(app->rk);
    rd_kafka_queue_io_event_enable(mainq, app->wake_fd[1], "1", 1);
    rd_kafka_queue_destroy(mainq);
    return 0;
err:
    if (app->rk == NULL)
        rd_kafka_conf_destroy(conf);
    return -1;
}

/* Loads the script with a synchronous connection before the loop starts. */
static int script_load(const char *host, int port, char sha[41])
{
    redisContext *c = redisConnect(host, port);
    redisReply *r =
        c && !c->err ? redisCommand(c, "SCRIPT LOAD %s", script) : NULL;
    int rc = r && r->type == REDIS_REPLY_STRING && r->len == 40 ? 0 : -1;
    if (rc == 0)
        memcpy(sha, r->str, 41);
    else
        fprintf(stderr,
                "floor: could not load the script into redis at %s:%d\n", host,
                port);
    if (r)
        freeReplyObject(r);
    if (c)
        redisFree(c);
    return rc;
}

int main(int argc, char **argv)
{
    floor_app app = {.wake_fd = {-1, -1}};
    if (argc < 5 || (argc - 5) % 2 != 0) {
        fprintf(stderr, "usage: floor PORT REDIS_HOST:PORT BROKERS TOPIC "
                        "[-X key=value]...\n");
        return 2;
    }
    char host[256];
    snprintf(host, sizeof(host), "%s", argv[2]);
    char *colon = strrchr(host, ':');
    if (colon == NULL) {
        fprintf(stderr, "floor: redis address is HOST:PORT\n");
        return 2;
    }
    *colon = '\0';
    int redis_port = atoi(colon + 1);

    signal(SIGPIPE, SIG_IGN);
    if (script_load(host, redis_port, app.sha) != 0 ||
        producer_new(&app, argv[3], argv[4], argc - 5, argv + 5) != 0)
        return 1;
    app.base = event_base_new();
    app.redis = redisAsyncConnect(host, redis_port);
    if (app.base == NULL || app.redis == NULL || app.redis->err ||
        redisLibeventAttach(app.redis, app.base) != REDIS_OK) {
        fprintf(stderr, "floor: could not connect to redis\n");
        return 1;
    }
    struct evhttp *http = evhttp_new(app.base);
    evhttp_set_gencb(http, on_request, &app);
    if (evhttp_bind_socket(http, "127.0.0.1", (ev_uint16_t)atoi(argv[1])) !=
        0) {
        fprintf(stderr, "floor: cannot bind 127.0.0.1:%s\n", argv[1]);
        return 1;
    }
    struct event *wake = event_new(app.base, app.wake_fd[0],
                                   EV_READ | EV_PERSIST, on_wake, &app);
    struct event *term = evsignal_new(app.base, SIGTERM, on_signal, app.base);
    struct event *intr = evsignal_new(app.base, SIGINT, on_signal, app.base);
    event_add(wake, NULL);
    event_add(term, NULL);
    event_add(intr, NULL);
    event_base_dispatch(app.base);
    /* A bench tool the bench stops: a request still in flight would be
     * answered into a freed evhttp, so nothing is torn down. */
    return 0;
}

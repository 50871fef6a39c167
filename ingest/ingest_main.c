/*
 * ingest_main.c - counter-ingest: bulk loads and backfills. Reads counter
 * events as JSON lines from files (or stdin), validates each with the same
 * decoder the consumers use, and produces the valid ones to the input topic
 * (kafka.input_topic) with delivery confirmation. Ends with one line of counts
 * on stdout:
 *
 *   {"read":N,"invalid":N,"delivered":N,"failed":N}
 *
 * The events carry no "origin: api" header: they are not in Redis yet, so
 * the applier applies them.
 *
 * Single thread: there is no event loop (the producer is created without
 * one), so this file polls the producer itself and the delivery callback
 * runs here, inside ctr_producer_poll/flush/free.
 */
#include "common/config.h"
#include "common/log.h"
#include "common/timeutil.h"
#include "ingest/event.h"
#include "ingest/producer.h"

#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum {
    EXIT_ALL_DELIVERED = 0,
    EXIT_INCOMPLETE = 1, /* invalid lines, undelivered events, a signal */
    EXIT_USAGE = 2,      /* bad arguments, config, unreadable file */

    /*
     * The window of events queued or in flight. It bounds memory (at most
     * INFLIGHT_MAX_BYTES of payload, whatever the file holds) and keeps it
     * below librdkafka's own queue limits, so a full queue is rare and the
     * time an event waits in the queue stays well inside its delivery
     * timeout.
     */
    INFLIGHT_MAX_EVENTS = 10000,
    INFLIGHT_MAX_BYTES = 16 * 1024 * 1024,

    POLL_WAIT_MS = 100,
    /* librdkafka judges message timeouts about once a second; the verdict
     * on the last event may come this long after the delivery timeout. */
    FLUSH_GRACE_MS = 3000,
};

/* 1 after the first SIGINT/SIGTERM (stop reading), 2 after the second
 * (stop waiting for deliveries). */
static volatile sig_atomic_t stop_requested;

/*
 * One event handed to the producer: where it came from, so that a failed
 * delivery names its line. Slots live in the ingest object and are reused,
 * so queuing needs no allocation of ours and the window is a free list.
 */
typedef struct ingest_slot {
    struct ingest *in;
    struct ingest_slot *next_free;
    const char *source; /* argv string or "stdin": outlives the producer */
    unsigned long line;
    size_t bytes;
} ingest_slot;

typedef struct ingest {
    const ctr_config *cfg;
    ctr_producer *producer; /* NULL with --dry-run */
    int dry_run;
    int aborted; /* a read error or a producer that refuses messages */

    ingest_slot *free_slots;
    size_t inflight_bytes;

    uint64_t read, invalid, delivered, failed;

    ingest_slot slots[INFLIGHT_MAX_EVENTS];
} ingest;

/* A line buffer one byte longer than the largest event, so that a longer
 * line still reaches ctr_event_decode, which names the problem. */
typedef struct ingest_line {
    char buf[CTR_EVENT_MAX_BYTES + 1];
    size_t len;
} ingest_line;

static void on_stop_signal(int sig)
{
    (void)sig;
    if (stop_requested < 2)
        stop_requested++;
}

static void usage(FILE *out)
{
    fprintf(
        out,
        "usage: counter-ingest [--dry-run] [FILE...]\n"
        "\n"
        "Reads counter events as JSON lines (docs/events.md) from each FILE,\n"
        "or from stdin when there is none or FILE is -, and produces every\n"
        "valid one to the input topic (kafka.input_topic), waiting for each\n"
        "delivery.\n"
        "Empty lines are skipped; each invalid line is reported on stderr\n"
        "as \"FILE: line N: reason\" and not produced.\n"
        "\n"
        "  --dry-run  validate only; produce nothing\n"
        "  --help     show this text\n"
        "\n"
        "Prints {\"read\":N,\"invalid\":N,\"delivered\":N,\"failed\":N} on\n"
        "stdout. Exit status: 0 if every line was valid and delivered; 1 if\n"
        "any line was invalid or not delivered, or on SIGINT/SIGTERM (reading\n"
        "stops, what was queued is still delivered); 2 on a usage, config\n"
        "or file error (then nothing is produced).\n"
        "\n"
        "Config as the services: COUNTER_CONFIG or ./config.yaml, then\n"
        "COUNTER_* variables (COUNTER_KAFKA_BROKERS, COUNTER_KAFKA_TOPIC).\n"
        "Each event has COUNTER_KAFKA_DELIVERY_TIMEOUT_MS to be confirmed;\n"
        "a larger value rides out a slow or restarting broker.\n");
}

/*
 * Called once per event the producer accepted, on this thread. An event
 * that timed out in flight may still be in Kafka, which the operator
 * needs to know before sending that line again.
 */
static void ingest_on_delivery(enum ctr_delivery result, void *arg)
{
    ingest_slot *slot = arg;
    ingest *in = slot->in;

    if (result == CTR_DELIVERED) {
        in->delivered++;
    } else {
        in->failed++;
        ctr_warn("%s: line %lu: not delivered: %s", slot->source, slot->line,
                 result == CTR_DELIVERY_UNKNOWN
                     ? "timed out in flight, it may be in kafka"
                     : "not in kafka");
    }
    in->inflight_bytes -= slot->bytes;
    slot->next_free = in->free_slots;
    in->free_slots = slot;
}

/*
 * Waits until the window has room for an event of `bytes`. Returns the
 * slot, or NULL if a stop was requested first.
 */
static ingest_slot *ingest_take_slot(ingest *in, size_t bytes)
{
    while (in->free_slots == NULL ||
           (in->inflight_bytes > 0 &&
            in->inflight_bytes + bytes > INFLIGHT_MAX_BYTES)) {
        if (stop_requested)
            return NULL;
        ctr_producer_poll(in->producer, POLL_WAIT_MS);
    }
    ingest_slot *slot = in->free_slots;
    in->free_slots = slot->next_free;
    return slot;
}

/*
 * Queues one encoded event. A refusal (librdkafka's queue full when the
 * config shrank it, or a producer failure) is retried while deliveries
 * make room, for as long as a delivery may take; past that the producer
 * is taken to be broken and reading stops. Returns 0 if queued (the
 * callback then counts it), -1 if not (the caller counts it as failed).
 */
static int ingest_send(ingest *in, const char *source, unsigned long line,
                       const ctr_event *ev, const char *payload, size_t len)
{
    ingest_slot *slot = ingest_take_slot(in, len);
    if (slot == NULL) {
        ctr_warn("%s: line %lu: not sent: interrupted", source, line);
        return -1;
    }
    slot->in = in;
    slot->source = source;
    slot->line = line;
    slot->bytes = len;

    int64_t give_up_ms = ctr_time_mono_ms() +
                         in->cfg->kafka_delivery_timeout_ms + FLUSH_GRACE_MS;
    while (ctr_producer_send(in->producer, ev->counter, strlen(ev->counter),
                             payload, len, NULL, slot) != 0) {
        if (stop_requested || ctr_time_mono_ms() >= give_up_ms) {
            if (!stop_requested) {
                ctr_error("kafka producer refuses events; stopping");
                in->aborted = 1;
            }
            ctr_warn("%s: line %lu: not sent", source, line);
            slot->next_free = in->free_slots;
            in->free_slots = slot;
            return -1;
        }
        ctr_producer_poll(in->producer, POLL_WAIT_MS);
    }
    in->inflight_bytes += len;
    return 0;
}

/*
 * Reads one line (without its newline) into ln. A line longer than the
 * buffer is cut to the buffer's size and the rest is skipped, so memory
 * stays bounded whatever the input holds (getline would grow without
 * limit on a file with no newline). Returns 1 for a line, 0 at the end,
 * -1 on a read error (errno set) or a signal.
 */
static int ingest_read_line(FILE *f, ingest_line *ln)
{
    int c = EOF;

    ln->len = 0;
    while ((c = getc_unlocked(f)) != EOF && c != '\n')
        if (ln->len < sizeof(ln->buf))
            ln->buf[ln->len++] = (char)c;
    if (c == EOF && ferror(f))
        return -1;
    if (c == EOF && ln->len == 0)
        return 0;
    return 1;
}

static int ingest_line_blank(const ingest_line *ln)
{
    for (size_t i = 0; i < ln->len; i++)
        if (ln->buf[i] != ' ' && ln->buf[i] != '\t' && ln->buf[i] != '\r')
            return 0;
    return 1;
}

/*
 * Validates one line and, unless this is a dry run, queues it. The event
 * is re-encoded rather than copied: the log then holds one canonical form
 * (as the api writes it), whatever spacing, duplicate keys or unknown
 * fields the line had.
 */
static void ingest_one(ingest *in, const char *source, unsigned long line,
                       const ingest_line *ln)
{
    ctr_event ev;
    char reason[256];
    char *payload = NULL;
    size_t len = 0;

    in->read++;
    if (ctr_event_decode(ln->buf, ln->len, &ev, reason, sizeof(reason)) != 0) {
        in->invalid++;
        ctr_warn("%s: line %lu: %s", source, line, reason);
        goto out;
    }
    if (in->dry_run)
        goto out;

    payload = ctr_event_encode(&ev, &len);
    if (payload == NULL) {
        ctr_error("%s: line %lu: out of memory", source, line);
        in->failed++;
        in->aborted = 1;
        goto out;
    }
    if (len > CTR_EVENT_MAX_BYTES) {
        /* The metadata can grow when re-encoded (json-c escapes '/'), and
         * consumers refuse events past the limit. */
        in->invalid++;
        ctr_warn("%s: line %lu: event is larger than %d bytes once encoded",
                 source, line, CTR_EVENT_MAX_BYTES);
        goto out;
    }
    if (ingest_send(in, source, line, &ev, payload, len) != 0)
        in->failed++;
    ctr_producer_poll(in->producer, 0);
out:
    free(payload);
    ctr_event_clear(&ev);
}

/* Reads one source to its end, a stop request, or an error. */
static void ingest_source(ingest *in, const char *path, ingest_line *ln)
{
    int use_stdin = strcmp(path, "-") == 0;
    const char *source = use_stdin ? "stdin" : path;
    FILE *f = use_stdin ? stdin : fopen(path, "r");
    unsigned long line = 0;
    int r = 0;

    if (f == NULL) {
        /* It could be opened at startup: deleted or changed since. */
        ctr_error("could not open %s: %s", path, strerror(errno));
        in->aborted = 1;
        return;
    }
    while (!stop_requested && !in->aborted) {
        r = ingest_read_line(f, ln);
        if (r <= 0)
            break;
        line++;
        if (!ingest_line_blank(ln))
            ingest_one(in, source, line, ln);
    }
    /* A signal interrupts a blocking read; that is a stop, not an error. */
    if (r < 0 && !stop_requested) {
        ctr_error("could not read %s: %s", source, strerror(errno));
        in->aborted = 1;
    }
    if (!use_stdin)
        fclose(f);
}

/*
 * Waits for every queued event to be confirmed, up to the delivery timeout
 * plus a grace (by then librdkafka has a verdict on each), or until a
 * second signal. What is left is counted as failed when the producer is
 * freed.
 */
static void ingest_flush(ingest *in)
{
    int64_t deadline_ms = ctr_time_mono_ms() +
                          in->cfg->kafka_delivery_timeout_ms + FLUSH_GRACE_MS;

    while (ctr_producer_outq_len(in->producer) > 0 && stop_requested < 2 &&
           ctr_time_mono_ms() < deadline_ms)
        (void)ctr_producer_flush(in->producer, POLL_WAIT_MS);
    int left = ctr_producer_outq_len(in->producer);
    if (left > 0)
        ctr_warn("giving up on %d events still undelivered", left);
}

/* Parses the options. Returns the index of the first file argument, or
 * -1 after --help, or -2 on a usage error (reported). */
static int ingest_parse_args(int argc, char **argv, int *dry_run)
{
    int i = 1;

    for (; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--") == 0)
            return i + 1;
        if (a[0] != '-' || strcmp(a, "-") == 0)
            break;
        if (strcmp(a, "--dry-run") == 0) {
            *dry_run = 1;
        } else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            return -1;
        } else {
            fprintf(stderr, "counter-ingest: unknown option %s\n", a);
            usage(stderr);
            return -2;
        }
    }
    return i;
}

/*
 * Checks that every named file can be opened before anything is produced:
 * a typo in the third file name should not leave a half-done backfill.
 */
static int ingest_check_files(int nfiles, char **files)
{
    for (int i = 0; i < nfiles; i++) {
        if (strcmp(files[i], "-") == 0)
            continue;
        FILE *f = fopen(files[i], "r");
        if (f == NULL) {
            fprintf(stderr, "counter-ingest: could not open %s: %s\n", files[i],
                    strerror(errno));
            return -1;
        }
        fclose(f);
    }
    return 0;
}

/* Long on purpose: start-up read top to bottom and torn down in reverse
 * (STYLE.md 11), every step in one place, in order. */
int main(int argc, char **argv)
{
    ctr_config *cfg = NULL;
    ingest *in = NULL;
    ingest_line *ln = NULL;
    char err[512];
    int rc = EXIT_USAGE, dry_run = 0;
    char *stdin_only[] = {"-"};

    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sigaddset(&sa.sa_mask, SIGINT);
    sigaddset(&sa.sa_mask, SIGTERM);
    /* No SA_RESTART: a signal must interrupt a read blocked on stdin. */
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    int first = ingest_parse_args(argc, argv, &dry_run);
    if (first == -1) {
        usage(stdout);
        return EXIT_ALL_DELIVERED;
    }
    if (first < 0)
        return EXIT_USAGE;
    int nfiles = argc - first;
    char **files = nfiles > 0 ? argv + first : stdin_only;
    if (nfiles == 0)
        nfiles = 1;
    if (ingest_check_files(nfiles, files) != 0)
        return EXIT_USAGE;

    cfg = ctr_config_load(NULL, err, sizeof(err));
    if (cfg == NULL) {
        fprintf(stderr, "counter-ingest: %s\n", err);
        return EXIT_USAGE;
    }
    ctr_log_init("counter-ingest", ctr_log_level_parse(cfg->log_level));

    in = calloc(1, sizeof(*in));
    ln = malloc(sizeof(*ln));
    if (in == NULL || ln == NULL) {
        ctr_error("out of memory");
        goto out;
    }
    in->cfg = cfg;
    in->dry_run = dry_run;
    for (size_t i = 0; i < INFLIGHT_MAX_EVENTS; i++) {
        in->slots[i].next_free = in->free_slots;
        in->free_slots = &in->slots[i];
    }
    if (!dry_run) {
        in->producer =
            ctr_producer_new(cfg, NULL, ingest_on_delivery, err, sizeof(err));
        if (in->producer == NULL) {
            ctr_error("could not set up kafka: %s", err);
            goto out;
        }
        ctr_info("producing to %s at %s", cfg->kafka_input_topic,
                 cfg->kafka_brokers);
    }

    for (int i = 0; i < nfiles && !stop_requested && !in->aborted; i++)
        ingest_source(in, files[i], ln);
    if (stop_requested)
        ctr_info("interrupted: no more lines are read");

    if (in->producer) {
        ingest_flush(in);
        /* Fires the callbacks of whatever is left, as failed; the slots
         * they point to live in `in`, freed below. */
        ctr_producer_free(in->producer);
        in->producer = NULL;
    }

    printf("{\"read\":%" PRIu64 ",\"invalid\":%" PRIu64
           ",\"delivered\":%" PRIu64 ",\"failed\":%" PRIu64 "}\n",
           in->read, in->invalid, in->delivered, in->failed);
    if (fflush(stdout) != 0) {
        ctr_error("could not write the counts: %s", strerror(errno));
        rc = EXIT_INCOMPLETE;
        goto out;
    }
    rc = in->invalid == 0 && in->failed == 0 && !in->aborted && !stop_requested
             ? EXIT_ALL_DELIVERED
             : EXIT_INCOMPLETE;
out:
    if (in)
        ctr_producer_free(in->producer);
    free(ln);
    free(in);
    ctr_config_free(cfg);
    return rc;
}

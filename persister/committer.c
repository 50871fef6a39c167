/*
 * committer.c - see committer.h.
 */
#include "persister/committer.h"

#include "common/timeutil.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

struct ps_committer {
    ps_sink *sink;
    const char *topic;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    /* under mu */
    int quit;
    int started;  /* handed over, not yet taken by the thread */
    int finished; /* result ready, not yet waited for */
    const ps_batch *batch;
    int64_t *expected;
    size_t max_parts;
    enum ps_sink_result result;
    double seconds;
    /* the caller's thread only */
    int busy;
};

static void *run(void *arg)
{
    ps_committer *c = arg;

    pthread_mutex_lock(&c->mu);
    for (;;) {
        while (!c->quit && !c->started)
            pthread_cond_wait(&c->cv, &c->mu);
        if (c->quit && !c->started)
            break;
        c->started = 0;
        pthread_mutex_unlock(&c->mu);

        int64_t t0 = ctr_time_mono_us();
        enum ps_sink_result r =
            ps_sink_commit(c->sink, c->topic, c->batch, c->expected);
        double seconds = (double)(ctr_time_mono_us() - t0) / 1e6;

        pthread_mutex_lock(&c->mu);
        c->result = r;
        c->seconds = seconds;
        c->finished = 1;
        pthread_cond_broadcast(&c->cv);
    }
    pthread_mutex_unlock(&c->mu);
    return NULL;
}

ps_committer *ps_committer_new(ps_sink *sink, const char *topic)
{
    ps_committer *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->sink = sink;
    c->topic = topic;
    c->max_parts = 64;
    c->expected = calloc(c->max_parts, sizeof(*c->expected));
    if (c->expected == NULL)
        goto fail;
    if (pthread_mutex_init(&c->mu, NULL) != 0)
        goto fail;
    if (pthread_cond_init(&c->cv, NULL) != 0) {
        pthread_mutex_destroy(&c->mu);
        goto fail;
    }
    if (pthread_create(&c->thread, NULL, run, c) != 0) {
        pthread_cond_destroy(&c->cv);
        pthread_mutex_destroy(&c->mu);
        goto fail;
    }
    return c;
fail:
    free(c->expected);
    free(c);
    return NULL;
}

void ps_committer_free(ps_committer *c)
{
    if (c == NULL)
        return;
    if (c->busy) {
        double ignored;
        (void)ps_committer_wait(c, &ignored);
    }
    pthread_mutex_lock(&c->mu);
    c->quit = 1;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
    pthread_join(c->thread, NULL);
    pthread_cond_destroy(&c->cv);
    pthread_mutex_destroy(&c->mu);
    free(c->expected);
    free(c);
}

void ps_committer_start(ps_committer *c, const ps_batch *b,
                        const int64_t *expected)
{
    size_t np = ps_batch_partitions(b);

    pthread_mutex_lock(&c->mu);
    if (np > c->max_parts) {
        /* grows only while the thread is idle, under the lock it reads
         * the pointer under */
        int64_t *grown = realloc(c->expected, np * sizeof(*grown));
        if (grown == NULL) {
            pthread_mutex_unlock(&c->mu);
            abort(); /* a few kilobytes; nothing sensible is left to do */
        }
        c->expected = grown;
        c->max_parts = np;
    }
    memcpy(c->expected, expected, np * sizeof(*expected));
    c->batch = b;
    c->finished = 0;
    c->started = 1;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
    c->busy = 1;
}

int ps_committer_busy(const ps_committer *c)
{
    return c->busy;
}

int ps_committer_done(ps_committer *c)
{
    pthread_mutex_lock(&c->mu);
    int done = c->finished;
    pthread_mutex_unlock(&c->mu);
    return done;
}

enum ps_sink_result ps_committer_wait(ps_committer *c, double *seconds)
{
    pthread_mutex_lock(&c->mu);
    while (!c->finished)
        pthread_cond_wait(&c->cv, &c->mu);
    c->finished = 0;
    enum ps_sink_result r = c->result;
    *seconds = c->seconds;
    c->batch = NULL;
    pthread_mutex_unlock(&c->mu);
    c->busy = 0;
    return r;
}

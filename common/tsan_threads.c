/*
 * tsan_threads.c - linked only into ThreadSanitizer builds.
 *
 * librdkafka starts its threads with C11 thrd_create(), which glibc
 * implements without going through pthread_create(); ThreadSanitizer (gcc
 * 12, clang 14) intercepts only the latter, so the threads run with no
 * sanitizer state and crash at their first allocation. Defining
 * thrd_create() in the executable interposes on glibc's for every library,
 * and routing it through pthread_create() lets the sanitizer see the
 * threads.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <threads.h>

typedef struct thrd_trampoline {
    thrd_start_t func;
    void *arg;
} thrd_trampoline;

static void *thrd_trampoline_run(void *p)
{
    thrd_trampoline t = *(thrd_trampoline *)p;
    free(p);
    return (void *)(intptr_t)t.func(t.arg);
}

int thrd_create(thrd_t *thr, thrd_start_t func, void *arg)
{
    thrd_trampoline *t = malloc(sizeof(*t));
    if (t == NULL)
        return thrd_nomem;
    t->func = func;
    t->arg = arg;
    if (pthread_create((pthread_t *)thr, NULL, thrd_trampoline_run, t) != 0) {
        free(t);
        return thrd_error;
    }
    return thrd_success;
}

/*
 * The same holds for C11 mutexes, condition variables and joins: glibc
 * implements them on its internal pthread entry points, which the sanitizer
 * does not see, so without these it would report every lock-protected
 * access inside librdkafka as a race. glibc's mtx_t and cnd_t have the
 * layout of pthread_mutex_t and pthread_cond_t.
 */
#include <errno.h>

int mtx_init(mtx_t *m, int type)
{
    pthread_mutexattr_t attr;
    pthread_mutexattr_init(&attr);
    if (type & mtx_recursive)
        pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_RECURSIVE);
    int rc = pthread_mutex_init((pthread_mutex_t *)m, &attr);
    pthread_mutexattr_destroy(&attr);
    return rc == 0 ? thrd_success : thrd_error;
}

int mtx_lock(mtx_t *m)
{
    return pthread_mutex_lock((pthread_mutex_t *)m) == 0 ? thrd_success
                                                         : thrd_error;
}

int mtx_trylock(mtx_t *m)
{
    int rc = pthread_mutex_trylock((pthread_mutex_t *)m);
    return rc == 0 ? thrd_success : rc == EBUSY ? thrd_busy : thrd_error;
}

int mtx_timedlock(mtx_t *restrict m, const struct timespec *restrict ts)
{
    int rc = pthread_mutex_timedlock((pthread_mutex_t *)m, ts);
    return rc == 0           ? thrd_success
           : rc == ETIMEDOUT ? thrd_timedout
                             : thrd_error;
}

int mtx_unlock(mtx_t *m)
{
    return pthread_mutex_unlock((pthread_mutex_t *)m) == 0 ? thrd_success
                                                           : thrd_error;
}

void mtx_destroy(mtx_t *m)
{
    pthread_mutex_destroy((pthread_mutex_t *)m);
}

int cnd_init(cnd_t *c)
{
    return pthread_cond_init((pthread_cond_t *)c, NULL) == 0 ? thrd_success
                                                             : thrd_error;
}

int cnd_signal(cnd_t *c)
{
    return pthread_cond_signal((pthread_cond_t *)c) == 0 ? thrd_success
                                                         : thrd_error;
}

int cnd_broadcast(cnd_t *c)
{
    return pthread_cond_broadcast((pthread_cond_t *)c) == 0 ? thrd_success
                                                            : thrd_error;
}

int cnd_wait(cnd_t *c, mtx_t *m)
{
    return pthread_cond_wait((pthread_cond_t *)c, (pthread_mutex_t *)m) == 0
               ? thrd_success
               : thrd_error;
}

int cnd_timedwait(cnd_t *restrict c, mtx_t *restrict m,
                  const struct timespec *restrict ts)
{
    int rc =
        pthread_cond_timedwait((pthread_cond_t *)c, (pthread_mutex_t *)m, ts);
    return rc == 0           ? thrd_success
           : rc == ETIMEDOUT ? thrd_timedout
                             : thrd_error;
}

void cnd_destroy(cnd_t *c)
{
    pthread_cond_destroy((pthread_cond_t *)c);
}

int thrd_join(thrd_t thr, int *res)
{
    void *ret = NULL;
    if (pthread_join((pthread_t)thr, &ret) != 0)
        return thrd_error;
    if (res)
        *res = (int)(intptr_t)ret;
    return thrd_success;
}

int thrd_detach(thrd_t thr)
{
    return pthread_detach((pthread_t)thr) == 0 ? thrd_success : thrd_error;
}

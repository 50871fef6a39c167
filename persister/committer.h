/*
 * committer.h - commits a batch on a thread of its own, so that the
 * persister reads and folds the next batch while PostgreSQL works on the
 * last one (draining a backlog, the two used to take turns).
 *
 * One commit at a time, through the caller's sink. The caller hands a
 * batch over, leaves it and the sink alone until it has waited for the
 * result, and may then use both again on its own thread: the hand-over and
 * the result pass through a mutex, which orders everything between them.
 */
#ifndef COUNTER_PERSISTER_COMMITTER_H
#define COUNTER_PERSISTER_COMMITTER_H

#include "persister/batch.h"
#include "persister/pg_writer.h"

#include <stddef.h>
#include <stdint.h>

typedef struct ps_committer ps_committer;

/* Starts the thread. NULL if it could not be had. */
ps_committer *ps_committer_new(ps_sink *sink, const char *topic)
    __attribute__((warn_unused_result));

/* Waits for a commit under way, then stops the thread. c may be NULL. */
void ps_committer_free(ps_committer *c);

/*
 * Starts committing b (ps_sink_commit with expected[i] for each of its
 * partitions). Only when no commit is under way.
 */
void ps_committer_start(ps_committer *c, const ps_batch *b,
                        const int64_t *expected);

/* Whether a commit was started and not yet waited for. */
int ps_committer_busy(const ps_committer *c);

/* Whether that commit has finished (ps_committer_wait would not block). */
int ps_committer_done(ps_committer *c);

/* Waits for the commit under way and returns its result and how long
 * PostgreSQL took (*seconds). */
enum ps_sink_result ps_committer_wait(ps_committer *c, double *seconds);

#endif

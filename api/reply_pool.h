/*
 * reply_pool.h - hiredis reply objects from a free list.
 *
 * hiredis builds every reply from calloc'd objects (and a malloc'd copy
 * of each string) and frees them after the callback: a 10-name batch GET
 * is an MGET answer of 21 objects, and their allocation was a tenth of
 * the api's instructions. These functions build the same redisReply
 * objects, with short strings inside the object, and keep freed objects
 * for the next reply. Replies keep hiredis's shape exactly, so code that
 * reads them does not change; they must be freed through the reader that
 * made them (hiredis's asynchronous context does so after the callback),
 * never with freeReplyObject.
 *
 * One free list per thread; at most API_REPLY_POOL_KEEP objects are kept.
 */
#ifndef COUNTER_API_REPLY_POOL_H
#define COUNTER_API_REPLY_POOL_H

#include <hiredis/hiredis.h>

enum { API_REPLY_POOL_KEEP = 4096 };

/* For redisReader.fn: set it on a context before it reads anything. */
extern redisReplyObjectFunctions api_reply_pool_functions;

/* Releases this thread's kept objects (at exit, for leak checkers). */
void api_reply_pool_drain(void);

#endif

/*
 * reply_pool.c - see reply_pool.h.
 */
#include "api/reply_pool.h"

#include <stdlib.h>
#include <string.h>

/* Strings up to this long live in the object: counter values, stamps,
 * statuses and most error texts. */
enum { INLINE_STR = 40 };

typedef struct pool_obj {
    redisReply r; /* first: the object is handed out as its redisReply */
    struct pool_obj *next;
    char text[INLINE_STR];
} pool_obj;

static _Thread_local pool_obj *free_list;
static _Thread_local size_t free_count;

static pool_obj *obj_new(const redisReadTask *task, int type)
{
    pool_obj *o = free_list;
    if (o != NULL) {
        free_list = o->next;
        free_count--;
    } else if ((o = malloc(sizeof(*o))) == NULL) {
        return NULL;
    }
    memset(&o->r, 0, sizeof(o->r));
    o->r.type = type;
    /* an element of an array is stored in its parent, as hiredis does */
    if (task->parent != NULL) {
        redisReply *parent = task->parent->obj;
        parent->element[task->idx] = &o->r;
    }
    return o;
}

static void obj_free(void *p)
{
    pool_obj *o = p;
    if (o == NULL)
        return;
    switch (o->r.type) {
    case REDIS_REPLY_ARRAY:
        for (size_t i = 0; i < o->r.elements; i++)
            obj_free(o->r.element[i]);
        free(o->r.element);
        break;
    case REDIS_REPLY_STRING:
    case REDIS_REPLY_STATUS:
    case REDIS_REPLY_ERROR:
        if (o->r.str != o->text)
            free(o->r.str);
        break;
    default: break;
    }
    if (free_count >= API_REPLY_POOL_KEEP) {
        free(o);
        return;
    }
    o->next = free_list;
    free_list = o;
    free_count++;
}

static void *create_string(const redisReadTask *task, char *str, size_t len)
{
    char *text = NULL;
    if (len >= INLINE_STR && (text = malloc(len + 1)) == NULL)
        return NULL;
    pool_obj *o = obj_new(task, task->type);
    if (o == NULL) {
        free(text);
        return NULL;
    }
    o->r.str = text ? text : o->text;
    memcpy(o->r.str, str, len);
    o->r.str[len] = '\0';
    o->r.len = len;
    return o;
}

static void *create_array(const redisReadTask *task, int elements)
{
    redisReply **element = NULL;
    if (elements > 0 &&
        (element = calloc((size_t)elements, sizeof(*element))) == NULL)
        return NULL;
    pool_obj *o = obj_new(task, REDIS_REPLY_ARRAY);
    if (o == NULL) {
        free(element);
        return NULL;
    }
    o->r.elements = elements > 0 ? (size_t)elements : 0;
    o->r.element = element;
    return o;
}

static void *create_integer(const redisReadTask *task, long long value)
{
    pool_obj *o = obj_new(task, REDIS_REPLY_INTEGER);
    if (o != NULL)
        o->r.integer = value;
    return o;
}

static void *create_nil(const redisReadTask *task)
{
    return obj_new(task, REDIS_REPLY_NIL);
}

redisReplyObjectFunctions api_reply_pool_functions = {
    create_string, create_array, create_integer, create_nil, obj_free};

void api_reply_pool_drain(void)
{
    while (free_list != NULL) {
        pool_obj *o = free_list;
        free_list = o->next;
        free(o);
    }
    free_count = 0;
}

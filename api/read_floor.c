/*
 * read_floor.c - see read_floor.h.
 */
#include "api/read_floor.h"

#include "common/name.h"

#include <stdlib.h>
#include <string.h>

/* 64k slots of ~168 bytes: 11 MB of address space, touched only as
 * counters are read. */
enum { FLOOR_SLOTS = 1 << 16 };

typedef struct floor_slot {
    char name[CTR_NAME_MAX + 1]; /* "" when free */
    char period[11];
    int64_t value;
    int64_t updated_ms;
} floor_slot;

struct api_floor {
    floor_slot *slots;
};

api_floor *api_floor_new(void)
{
    api_floor *f = calloc(1, sizeof(*f));
    if (f == NULL)
        return NULL;
    f->slots = calloc(FLOOR_SLOTS, sizeof(floor_slot));
    if (f->slots == NULL) {
        free(f);
        return NULL;
    }
    return f;
}

void api_floor_free(api_floor *f)
{
    if (f == NULL)
        return;
    free(f->slots);
    free(f);
}

static floor_slot *slot_of(const api_floor *f, const char *name)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (const unsigned char *p = (const unsigned char *)name; *p; p++)
        h = (h ^ *p) * 16777619u;
    return &f->slots[h & (FLOOR_SLOTS - 1)];
}

void api_floor_set(api_floor *f, const char *name, const char *period,
                   int64_t value, int64_t updated_ms)
{
    floor_slot *s = slot_of(f, name);
    strcpy(s->name, name);
    strcpy(s->period, period);
    s->value = value;
    s->updated_ms = updated_ms;
}

void api_floor_note(api_floor *f, const char *name, const char *period,
                    int64_t value, int64_t updated_ms)
{
    floor_slot *s = slot_of(f, name);
    if (strcmp(s->name, name) == 0 && strcmp(s->period, period) == 0 &&
        s->value >= value)
        return;
    /* a new counter, a new day, or a higher value */
    strcpy(s->name, name);
    strcpy(s->period, period);
    s->value = value;
    s->updated_ms = updated_ms;
}

int api_floor_raise(const api_floor *f, const char *name, const char *period,
                    int64_t *value, int64_t *updated_ms)
{
    const floor_slot *s = slot_of(f, name);
    if (strcmp(s->name, name) != 0 || strcmp(s->period, period) != 0 ||
        s->value <= *value)
        return 0;
    *value = s->value;
    *updated_ms = s->updated_ms;
    return 1;
}

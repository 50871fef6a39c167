/*
 * fuzz_event.c - ctr_event_decode on any Kafka message payload.
 *
 * Input: the payload, as librdkafka hands it over (not NUL-terminated).
 * Beyond "no crash": an accepted event holds only valid fields, and what
 * decodes must encode and decode to the same event; its encoding is no
 * longer than the input, and encoding that again gives the same bytes (the
 * encoding is canonical).
 */
#include "common/jsonparse.h"
#include "common/name.h"
#include "fuzz.h"
#include "ingest/event.h"

static int streq_or_null(const char *a, const char *b)
{
    return (a == NULL && b == NULL) || (a && b && strcmp(a, b) == 0);
}

static int same_event(const ctr_event *a, const ctr_event *b)
{
    return a->v == b->v && strcmp(a->id, b->id) == 0 &&
           strcmp(a->counter, b->counter) == 0 && a->delta == b->delta &&
           streq_or_null(a->user_id, b->user_id) && a->ts_ms == b->ts_ms &&
           streq_or_null(a->metadata, b->metadata);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ctr_event ev, again;
    char err[200] = "";
    size_t len1 = 0, len2 = 0;

    if (ctr_event_decode((const char *)data, size, &ev, err, sizeof(err)) !=
        0) {
        FUZZ_CHECK(err[0] != '\0');
        FUZZ_CHECK(ev.user_id == NULL && ev.metadata == NULL);
        return 0;
    }
    FUZZ_CHECK(ev.v == CTR_EVENT_VERSION);
    FUZZ_CHECK(ctr_event_id_valid(ev.id, strlen(ev.id)));
    FUZZ_CHECK(ctr_name_valid(ev.counter, strlen(ev.counter)));
    FUZZ_CHECK(ev.ts_ms > 0);
    if (ev.user_id)
        FUZZ_CHECK(ctr_user_id_valid(ev.user_id, strlen(ev.user_id)));
    if (ev.metadata) {
        struct json_object *m =
            ctr_json_parse(ev.metadata, strlen(ev.metadata));
        FUZZ_CHECK(m != NULL && json_object_is_type(m, json_type_object));
        json_object_put(m);
    }

    char *enc = ctr_event_encode(&ev, &len1);
    FUZZ_CHECK(enc != NULL && len1 == strlen(enc));
    /* Never longer than what came in: the applier re-publishes what it
     * decoded, and a record past CTR_EVENT_MAX_BYTES is one the persister
     * refuses, so PostgreSQL would miss what Redis counted. */
    FUZZ_CHECK(len1 <= size);
    if (ctr_event_decode(enc, len1, &again, err, sizeof(err)) != 0) {
        fprintf(stderr, "re-encoded event does not decode (%s): %s\n", err,
                enc);
        abort();
    }
    FUZZ_CHECK(same_event(&ev, &again));
    char *enc2 = ctr_event_encode(&again, &len2);
    FUZZ_CHECK(enc2 != NULL && len2 == len1 && memcmp(enc, enc2, len1) == 0);

    free(enc2);
    free(enc);
    ctr_event_clear(&again);
    ctr_event_clear(&ev);
    return 0;
}

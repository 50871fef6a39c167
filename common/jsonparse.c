/*
 * jsonparse.c - see jsonparse.h.
 */
#include "common/jsonparse.h"

#include <limits.h>

struct json_object *ctr_json_parse(const char *buf, size_t len)
{
    struct json_tokener *tok;
    struct json_object *root;

    if (len > INT_MAX)
        return NULL;
    tok = json_tokener_new();
    if (tok == NULL)
        return NULL;
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
    root = json_tokener_parse_ex(tok, buf, (int)len);
    if (root == NULL && json_tokener_get_error(tok) == json_tokener_continue)
        root = json_tokener_parse_ex(tok, "", 1); /* a bare number at EOF */
    if (root != NULL) {
        for (size_t i = json_tokener_get_parse_end(tok); i < len; i++) {
            char c = buf[i];
            if (c != ' ' && c != '\t' && c != '\n' && c != '\r') {
                json_object_put(root);
                root = NULL;
                break;
            }
        }
    }
    json_tokener_free(tok);
    return root;
}

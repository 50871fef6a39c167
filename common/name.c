/*
 * name.c - see name.h.
 */
#include "common/name.h"

bool ctr_name_valid(const char *s, size_t len)
{
    if (s == NULL || len == 0 || len > CTR_NAME_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                  (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-';
        if (!ok)
            return false;
    }
    return true;
}

bool ctr_user_id_valid(const char *s, size_t len)
{
    if (s == NULL || len == 0 || len > CTR_USER_ID_MAX)
        return false;
    for (size_t i = 0; i < len;) {
        unsigned char c = (unsigned char)s[i];
        size_t extra;
        if (c < 0x20 || c == 0x7f)
            return false;
        if (c < 0x80)
            extra = 0;
        else if ((c & 0xe0) == 0xc0 && c >= 0xc2)
            extra = 1;
        else if ((c & 0xf0) == 0xe0)
            extra = 2;
        else if ((c & 0xf8) == 0xf0 && c <= 0xf4)
            extra = 3;
        else
            return false;
        if (i + extra >= len)
            return false;
        for (size_t k = 1; k <= extra; k++)
            if (((unsigned char)s[i + k] & 0xc0) != 0x80)
                return false;
        /* no overlong forms, no surrogates, nothing past U+10FFFF:
         * PostgreSQL refuses them, which would stall the persister */
        unsigned char c1 = (unsigned char)s[i + 1];
        if ((c == 0xe0 && c1 < 0xa0) || (c == 0xed && c1 >= 0xa0) ||
            (c == 0xf0 && c1 < 0x90) || (c == 0xf4 && c1 >= 0x90))
            return false;
        i += extra + 1;
    }
    return true;
}

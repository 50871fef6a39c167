/*
 * http_client.c - see http_client.h.
 */
#include "ctl/http_client.h"

#include "common/strbuf.h"
#include "common/timeutil.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

enum {
    HEADERS_MAX = 64 * 1024,
    BODY_MAX = 64 * 1024 * 1024,
};

static void fail(char *errbuf, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void fail(char *errbuf, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(errbuf, errlen, fmt, ap);
    va_end(ap);
}

/* ------------------------------------------------------------------ url */

int ctl_url_parse(const char *url, ctl_url *out, char *errbuf, size_t errlen)
{
    const char *p, *auth_end, *port = NULL;
    size_t host_len;

    memset(out, 0, sizeof(*out));
    if (strncasecmp(url, "https://", 8) == 0) {
        fail(errbuf, errlen,
             "%s: https is not supported; give the api's own http:// "
             "address (TLS is terminated in front of it)",
             url);
        return -1;
    }
    if (strncasecmp(url, "http://", 7) != 0) {
        fail(errbuf, errlen, "%s: expected http://HOST[:PORT][/PATH]", url);
        return -1;
    }
    p = url + 7;
    auth_end = p + strcspn(p, "/?#");
    if (*auth_end == '?' || *auth_end == '#' || strchr(p, '@') != NULL) {
        fail(errbuf, errlen,
             "%s: expected http://HOST[:PORT][/PATH], without user, query "
             "or fragment",
             url);
        return -1;
    }
    if (*p == '[') {
        const char *close = memchr(p, ']', (size_t)(auth_end - p));
        if (close == NULL || (close + 1 != auth_end && close[1] != ':'))
            goto bad_host;
        host_len = (size_t)(close - p - 1);
        memcpy(out->host, p + 1, host_len < sizeof(out->host) ? host_len : 0);
        if (close + 1 != auth_end)
            port = close + 2;
    } else {
        const char *colon = memchr(p, ':', (size_t)(auth_end - p));
        host_len = (size_t)((colon ? colon : auth_end) - p);
        if (host_len < sizeof(out->host))
            memcpy(out->host, p, host_len);
        if (colon)
            port = colon + 1;
    }
    if (host_len == 0 || host_len >= sizeof(out->host))
        goto bad_host;
    for (const char *h = out->host; *h; h++)
        if (*h <= ' ' || *h == '%' || *h == 0x7f)
            goto bad_host;
    if (port) {
        size_t len = (size_t)(auth_end - port);
        long v = 0;
        for (size_t i = 0; i < len; i++) {
            if (port[i] < '0' || port[i] > '9' || v > 65535)
                goto bad_port;
            v = v * 10 + (port[i] - '0');
        }
        if (len == 0 || v < 1 || v > 65535)
            goto bad_port;
        snprintf(out->port, sizeof(out->port), "%ld", v);
    } else {
        snprintf(out->port, sizeof(out->port), "80");
    }
    size_t base_len = strlen(auth_end);
    while (base_len > 0 && auth_end[base_len - 1] == '/')
        base_len--;
    if (base_len >= sizeof(out->base)) {
        fail(errbuf, errlen, "%s: the path is too long", url);
        return -1;
    }
    for (size_t i = 0; i < base_len; i++)
        if ((unsigned char)auth_end[i] <= ' ' || auth_end[i] == 0x7f) {
            fail(errbuf, errlen,
                 "%s: the path holds a space or control "
                 "character",
                 url);
            return -1;
        }
    memcpy(out->base, auth_end, base_len);
    out->base[base_len] = '\0';
    return 0;
bad_host:
    fail(errbuf, errlen, "%s: the host is missing or malformed", url);
    return -1;
bad_port:
    fail(errbuf, errlen, "%s: the port must be a number from 1 to 65535", url);
    return -1;
}

/* --------------------------------------------------------------- socket */

static int remaining_ms(int64_t deadline_ms)
{
    int64_t left = deadline_ms - ctr_time_mono_ms();
    return left <= 0 ? 0 : left > 1000000 ? 1000000 : (int)left;
}

/* Polls fd for `events` until the deadline: 1 ready, 0 timed out, -1. */
static int wait_fd(int fd, short events, int64_t deadline_ms)
{
    for (;;) {
        struct pollfd pfd = {.fd = fd, .events = events};
        int r = poll(&pfd, 1, remaining_ms(deadline_ms));
        if (r > 0)
            return 1;
        if (r == 0)
            return 0;
        if (errno != EINTR)
            return -1;
    }
}

/* Connects to one address before the deadline. fd, or -1 with why. */
static int connect_one(const struct addrinfo *ai, int64_t deadline_ms,
                       char *why, size_t whylen)
{
    int fd = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
    int err = 0;
    socklen_t len = sizeof(err);

    if (fd < 0) {
        snprintf(why, whylen, "%s", strerror(errno));
        return -1;
    }
    if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) != 0 ||
        fcntl(fd, F_SETFD, FD_CLOEXEC) != 0)
        goto failed;
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
        return fd;
    if (errno != EINPROGRESS)
        goto failed;
    int r = wait_fd(fd, POLLOUT, deadline_ms);
    if (r == 0) {
        snprintf(why, whylen, "timed out");
        close(fd);
        return -1;
    }
    if (r < 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
        goto failed;
    if (err == 0)
        return fd;
    errno = err;
failed:
    snprintf(why, whylen, "%s", strerror(errno));
    close(fd);
    return -1;
}

static int connect_url(const ctl_url *url, int64_t deadline_ms, char *errbuf,
                       size_t errlen)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL;
    char why[256] = "no address";
    int fd = -1;

    int gai = getaddrinfo(url->host, url->port, &hints, &res);
    if (gai != 0) {
        fail(errbuf, errlen, "could not resolve %s: %s", url->host,
             gai_strerror(gai));
        return -1;
    }
    for (const struct addrinfo *ai = res; ai && fd < 0; ai = ai->ai_next)
        fd = connect_one(ai, deadline_ms, why, sizeof(why));
    freeaddrinfo(res);
    if (fd < 0)
        fail(errbuf, errlen, "could not connect to %s:%s: %s", url->host,
             url->port, why);
    return fd;
}

static int send_all(int fd, const char *p, size_t len, int64_t deadline_ms)
{
    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n > 0) {
            p += n;
            len -= (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) &&
            wait_fd(fd, POLLOUT, deadline_ms) == 1)
            continue;
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------- parsing */

/* The value of header `name` in the header section [p, end), or NULL;
 * *len gets its length without surrounding blanks. */
static const char *header_value(const char *p, const char *end,
                                const char *name, size_t *len)
{
    size_t name_len = strlen(name);
    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        const char *line_end = eol ? eol : end;
        if ((size_t)(line_end - p) > name_len && p[name_len] == ':' &&
            strncasecmp(p, name, name_len) == 0) {
            const char *v = p + name_len + 1;
            while (v < line_end && (*v == ' ' || *v == '\t'))
                v++;
            const char *ve = line_end;
            while (ve > v &&
                   (ve[-1] == '\r' || ve[-1] == ' ' || ve[-1] == '\t'))
                ve--;
            *len = (size_t)(ve - v);
            return v;
        }
        p = line_end + (eol ? 1 : 0);
    }
    return NULL;
}

/* A whole decimal number of up to 18 digits; -1 otherwise. */
static long long decimal(const char *s, size_t len)
{
    long long v = 0;
    if (len == 0 || len > 18)
        return -1;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    return v;
}

/* Decodes a chunked body [p, end) into out. 0, or -1 if incomplete or
 * malformed. */
static int unchunk(const char *p, const char *end, ctr_strbuf *out)
{
    for (;;) {
        size_t size = 0;
        int digits = 0;
        while (p < end) {
            int c = (unsigned char)*p, d;
            if (c >= '0' && c <= '9')
                d = c - '0';
            else if (c >= 'a' && c <= 'f')
                d = c - 'a' + 10;
            else if (c >= 'A' && c <= 'F')
                d = c - 'A' + 10;
            else
                break;
            if (size > (size_t)BODY_MAX)
                return -1;
            size = size * 16 + (size_t)d;
            digits++;
            p++;
        }
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        if (digits == 0 || eol == NULL)
            return -1;
        p = eol + 1; /* chunk extensions are ignored */
        if (size == 0)
            return 0; /* trailers, if any, are ignored */
        if ((size_t)(end - p) < size + 2 || out->len + size > BODY_MAX)
            return -1;
        ctr_strbuf_put(out, p, size);
        p += size;
        if (*p == '\r')
            p++;
        if (p >= end || *p != '\n')
            return -1;
        p++;
    }
}

/*
 * Parses a complete answer in raw[0..len) into resp. Returns 1 if the
 * answer is complete and parsed, 0 if more bytes are needed (eof: none will
 * come), -1 if malformed (why in errbuf).
 */
static int parse_answer(const char *raw, size_t len, int eof,
                        ctl_http_response *resp, char *errbuf, size_t errlen)
{
    const char *hend = NULL;
    for (size_t i = 0; i + 3 < len; i++)
        if (memcmp(raw + i, "\r\n\r\n", 4) == 0) {
            hend = raw + i + 2; /* keeps the last header line's CRLF */
            break;
        }
    if (hend == NULL) {
        if (len > HEADERS_MAX) {
            fail(errbuf, errlen, "the answer's headers exceed %d bytes",
                 HEADERS_MAX);
            return -1;
        }
        return eof ? -1 : 0;
    }
    const char *body = hend + 2, *end = raw + len;
    if (len < 12 || memcmp(raw, "HTTP/1.", 7) != 0 || raw[8] != ' ' ||
        decimal(raw + 9, 3) < 100 || (raw[12] != ' ' && raw[12] != '\r')) {
        fail(errbuf, errlen, "the answer is not HTTP/1.x");
        return -1;
    }
    const char *hp = memchr(raw, '\n', (size_t)(hend - raw)) + 1;
    size_t vlen;
    const char *v;
    ctr_strbuf out = {0};

    if ((v = header_value(hp, hend, "Transfer-Encoding", &vlen)) != NULL &&
        !(vlen == 8 && strncasecmp(v, "identity", 8) == 0)) {
        if (!(vlen == 7 && strncasecmp(v, "chunked", 7) == 0)) {
            fail(errbuf, errlen, "unsupported Transfer-Encoding %.*s",
                 (int)vlen, v);
            return -1;
        }
        if (unchunk(body, end, &out) != 0) {
            ctr_strbuf_clear(&out);
            return eof ? -1 : 0;
        }
    } else if ((v = header_value(hp, hend, "Content-Length", &vlen)) != NULL) {
        long long cl = decimal(v, vlen);
        if (cl < 0 || cl > BODY_MAX) {
            fail(errbuf, errlen, "bad Content-Length %.*s", (int)vlen, v);
            return -1;
        }
        if ((size_t)(end - body) < (size_t)cl)
            return eof ? -1 : 0;
        ctr_strbuf_put(&out, body, (size_t)cl);
    } else {
        if (!eof)
            return 0; /* the body runs to the end of the connection */
        ctr_strbuf_put(&out, body, (size_t)(end - body));
    }
    ctr_strbuf_put(&out, "", 0);
    if (out.failed || out.s == NULL) {
        ctr_strbuf_clear(&out);
        fail(errbuf, errlen, "out of memory");
        return -1;
    }
    memset(resp, 0, sizeof(*resp));
    resp->status = (int)decimal(raw + 9, 3);
    resp->body = out.s;
    resp->body_len = out.len;
    resp->retry_after_s = -1;
    if ((v = header_value(hp, hend, "Retry-After", &vlen)) != NULL) {
        long long s = decimal(v, vlen);
        resp->retry_after_s = s < 0 ? -1 : s > 3600 ? 3600 : (int)s;
    }
    v = header_value(hp, hend, "Idempotent-Replayed", &vlen);
    resp->replayed = v && vlen == 4 && strncasecmp(v, "true", 4) == 0;
    return 1;
}

/* ------------------------------------------------------------- request */

int ctl_http_request(const ctl_url *url, const char *method, const char *target,
                     const char *headers, const char *body, size_t body_len,
                     int timeout_ms, ctl_http_response *resp, char *errbuf,
                     size_t errlen)
{
    int64_t deadline_ms = ctr_time_mono_ms() + timeout_ms;
    ctr_strbuf req = {0}, raw = {0};
    int fd = -1, rc = CTL_HTTP_NO_ANSWER, eof = 0;
    char chunk[16384];

    memset(resp, 0, sizeof(*resp));
    if (errlen > 0)
        errbuf[0] = '\0';
    int ipv6 = strchr(url->host, ':') != NULL;
    ctr_strbuf_printf(&req, "%s %s%s HTTP/1.1\r\nHost: %s%s%s", method,
                      url->base, target, ipv6 ? "[" : "", url->host,
                      ipv6 ? "]" : "");
    if (strcmp(url->port, "80") != 0)
        ctr_strbuf_printf(&req, ":%s", url->port);
    ctr_strbuf_printf(&req,
                      "\r\nUser-Agent: counterctl\r\nAccept: "
                      "application/json\r\nConnection: close\r\n%s",
                      headers ? headers : "");
    if (body)
        ctr_strbuf_printf(&req,
                          "Content-Type: application/json\r\n"
                          "Content-Length: %zu\r\n",
                          body_len);
    ctr_strbuf_puts(&req, "\r\n");
    if (body)
        ctr_strbuf_put(&req, body, body_len);
    if (req.failed) {
        fail(errbuf, errlen, "out of memory");
        rc = CTL_HTTP_NOT_SENT;
        goto out;
    }

    fd = connect_url(url, deadline_ms, errbuf, errlen);
    if (fd < 0) {
        rc = CTL_HTTP_NOT_SENT;
        goto out;
    }
    if (send_all(fd, req.s, req.len, deadline_ms) != 0) {
        fail(errbuf, errlen, "sending to %s:%s: %s", url->host, url->port,
             errno ? strerror(errno) : "timed out");
        goto out;
    }
    for (;;) {
        int r = parse_answer(raw.s ? raw.s : "", raw.len, eof, resp, errbuf,
                             errlen);
        if (r == 1) {
            rc = CTL_HTTP_OK;
            break;
        }
        if (r < 0) {
            if (eof && raw.len == 0)
                fail(errbuf, errlen,
                     "%s:%s closed the connection without an answer", url->host,
                     url->port);
            else if (eof && errbuf[0] == '\0')
                fail(errbuf, errlen, "%s:%s cut the answer short", url->host,
                     url->port);
            break;
        }
        int w = wait_fd(fd, POLLIN, deadline_ms);
        if (w == 0) {
            fail(errbuf, errlen, "no answer from %s:%s within %d ms", url->host,
                 url->port, timeout_ms);
            break;
        }
        ssize_t n = w < 0 ? -1 : recv(fd, chunk, sizeof(chunk), 0);
        if (n < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (n < 0) {
            fail(errbuf, errlen, "reading from %s:%s: %s", url->host, url->port,
                 strerror(errno));
            break;
        }
        if (n == 0)
            eof = 1;
        else if (raw.len + (size_t)n > (size_t)BODY_MAX + HEADERS_MAX) {
            fail(errbuf, errlen, "the answer exceeds %d bytes", BODY_MAX);
            break;
        }
        ctr_strbuf_put(&raw, chunk, (size_t)n);
        if (raw.failed) {
            fail(errbuf, errlen, "out of memory");
            break;
        }
    }
out:
    if (fd >= 0)
        close(fd);
    ctr_strbuf_clear(&req);
    ctr_strbuf_clear(&raw);
    return rc;
}

void ctl_http_response_free(ctl_http_response *resp)
{
    free(resp->body);
    resp->body = NULL;
    resp->body_len = 0;
}

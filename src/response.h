/* One HTTP response as the client keeps it: status, body and the headers
 * the retry policy and the errors read (request id, Content-Type,
 * Retry-After, x-should-retry), whoever received it (libcurl or a Lua
 * transport). Plain C: no Lua, no libcurl (HTTP dates are parsed here). */
#ifndef OU_RESPONSE_H
#define OU_RESPONSE_H

#include <stddef.h>
#include <time.h>

#include "buf.h"

struct ou_response {
    long status;
    struct ou_buf body;
    char request_id[128];
    char content_type[128];
    double retry_after;      /* seconds, < 0 when the server gave none */
    int retry_after_from_ms; /* retry-after-ms was seen: it wins over Retry-After */
    int should_retry;        /* x-should-retry: -1 absent, 0 false, 1 true */
};

/* Clears r's header fields before a new response. */
void ou_response_reset(struct ou_response *r);

/* Records one response header (name without the colon; value untrimmed). */
void ou_response_header(struct ou_response *r, const char *name, size_t nlen, const char *value, size_t vlen);

/* Reads an HTTP date (RFC 9110: IMF-fixdate, RFC 850 or asctime form)
 * into *out. Returns 1, or 0 when text is not one. */
int ou_http_date(const char *text, time_t *out);

#endif

#include "request.h"

#include <stdio.h>
#include <string.h>

void ou_request_init(struct ou_request *r)
{
    memset(r, 0, sizeof *r);
    ou_response_reset(&r->resp);
}

void ou_request_start(struct ou_request *r)
{
    r->attempts = 0;
    r->connects = 0;
    r->wire_bytes = 0;
}

void ou_request_begin_attempt(struct ou_request *r)
{
    ou_buf_clear(&r->resp.body);
    ou_response_reset(&r->resp);
    r->resp.status = 0;
    r->too_large = r->out_of_memory = 0;
    r->reason[0] = '\0';
}

enum ou_outcome ou_request_status_outcome(const struct ou_request *r)
{
    return r->resp.status >= 200 && r->resp.status < 300 ? OU_OK : OU_FAIL_HTTP;
}

const char *ou_request_message(const struct ou_request *r, const struct ou_transfer_opts *opts,
                               enum ou_outcome outcome, char *out, size_t size)
{
    const char *detail = r->reason[0] ? r->reason : "no reason given";
    char suffix[48] = "";
    if (r->attempts > 1)
        snprintf(suffix, sizeof suffix, " after %d attempts", r->attempts);
    switch (outcome) {
    case OU_OK:
        snprintf(out, size, "ok");
        break;
    case OU_FAIL_HTTP:
        snprintf(out, size, "HTTP status %ld%s", r->resp.status, suffix);
        break;
    case OU_FAIL_WAIT_LONG:
        snprintf(out, size,
                 "HTTP status %ld: the server asked to retry after %.0f s, more than the %.0f s allowed",
                 r->resp.status, r->resp.retry_after, opts->retry_after_max);
        break;
    case OU_FAIL_TIMEOUT:
        snprintf(out, size, "timed out%s: %s", suffix, detail);
        break;
    case OU_FAIL_NETWORK:
        snprintf(out, size, "transfer failed%s: %s", suffix, detail);
        break;
    case OU_FAIL_TOO_LARGE:
        snprintf(out, size,
                 "response body exceeds max_response_bytes (%zu bytes, decompressed); transfer aborted",
                 opts->max_body);
        break;
    case OU_FAIL_NOMEM:
        snprintf(out, size, "out of memory while receiving the response");
        break;
    case OU_FAIL_TRANSPORT:
        snprintf(out, size, "%s", detail);
        break;
    }
    return out;
}

void ou_request_stats(const struct ou_request *r, struct ou_request_stats *s)
{
    s->attempts = r->attempts;
    memcpy(s->delays, r->delays, sizeof s->delays);
    s->connects = r->connects;
    s->wire_bytes = r->wire_bytes;
    s->body_bytes = r->resp.body.len;
    s->buffer_bytes = r->resp.body.cap + r->url.cap;
    s->status = r->resp.status;
    memcpy(s->request_id, r->resp.request_id, sizeof s->request_id);
}

void ou_request_free(struct ou_request *r)
{
    ou_buf_free(&r->resp.body);
    ou_buf_free(&r->url);
}

#include "outcome.h"

#include <stdio.h>
#include <string.h>

#include "decode.h"
#include "error.h"
#include "rules.h"

/* A run this long of the key's bytes is the key, cut: every string we keep
 * from a response has a cap (request_id and Content-Type at 127 bytes, the
 * error buffers) and a server may echo any part of it. */
#define OU_KEY_RUN 12

/* The length of the longest run of the key's bytes (any part of the key,
 * its start above all) that begins at s, n bytes left. */
static size_t key_run_at(const char *s, size_t n, const char *key, size_t klen)
{
    size_t best = 0;
    for (size_t j = 0; j < klen && klen - j > best; j++) {
        size_t m = 0;
        while (m < n && j + m < klen && s[m] == key[j + m])
            m++;
        if (m > best)
            best = m;
    }
    return best;
}

/* Replaces, in the string at the top, the key and every run of at least
 * OU_KEY_RUN bytes of it (the whole key when it is shorter) with
 * [redacted]. */
void ou_scrub_key(lua_State *L, const char *api_key)
{
    size_t klen = api_key ? strlen(api_key) : 0, n, i = 0, from = 0;
    size_t least = klen < OU_KEY_RUN ? klen : OU_KEY_RUN;
    const char *s = lua_tolstring(L, -1, &n);
    luaL_Buffer b;
    int found = 0;
    if (klen < 4 || !s)
        return;
    luaL_buffinit(L, &b);
    while (i < n) {
        size_t run = key_run_at(s + i, n - i, api_key, klen);
        if (run >= least) {
            luaL_addlstring(&b, s + from, i - from);
            luaL_addstring(&b, "[redacted]");
            i = from = i + run;
            found = 1;
        } else {
            i++;
        }
    }
    luaL_addlstring(&b, s + from, n - from);
    luaL_pushresult(&b);
    if (found)
        lua_remove(L, -2);
    else
        lua_pop(L, 1);
}

/* Scrubs every string field of the error table at the top: whatever a
 * response put there (message, type, code, param, request_id, a
 * Content-Type) passes this one place on its way out. */
static void scrub_error(lua_State *L, const char *api_key)
{
    int err = lua_gettop(L);
    lua_pushnil(L);
    while (lua_next(L, err)) {
        if (lua_type(L, -1) == LUA_TSTRING) {
            ou_scrub_key(L, api_key);
            lua_pushvalue(L, -2);
            lua_insert(L, -2);
            lua_rawset(L, err); /* an existing field: lua_next may go on */
        } else {
            lua_pop(L, 1);
        }
    }
}

/* Returns nil, err for the error at the top, scrubbed. */
int ou_outcome_error(lua_State *L, const char *api_key)
{
    scrub_error(L, api_key);
    return ou_error_return(L);
}

/* Copies envelope[key], a string, into the error at err (scrubbed on the
 * way out, with the rest). */
static void copy_field(lua_State *L, int err, int envelope, const char *key)
{
    lua_getfield(L, envelope, key);
    if (lua_type(L, -1) == LUA_TSTRING)
        lua_setfield(L, err, key);
    else
        lua_pop(L, 1);
}

/* The most of an error body read for its envelope: the envelope is small,
 * and a body the size cap refused may be huge. */
#define OU_ERROR_BODY_MAX ((size_t)64 * 1024)

/* Adds what the server said to the error at the top: request id, the
 * retry-after it asked for and, from the OpenAI error envelope of an HTTP
 * error status (the first 64 KiB of its body), message, type, code and
 * param. A 2xx body is never read for one. */
static void add_response_fields(lua_State *L, const struct ou_request *rec)
{
    const struct ou_response *r = &rec->resp;
    struct ou_decode_limits limits = {32, 4096, 0}; /* an envelope is a dozen values */
    struct ou_decode_error derr = {0, {0}, 0};
    int err = lua_gettop(L);
    size_t len = r->body.len < OU_ERROR_BODY_MAX ? r->body.len : OU_ERROR_BODY_MAX;
    if (r->status)
        ou_error_setint(L, "status", r->status);
    if (r->request_id[0])
        ou_error_setstring(L, "request_id", r->request_id);
    if (r->retry_after >= 0)
        ou_error_setnumber(L, "retry_after", r->retry_after);
    ou_error_setint(L, "attempts", rec->attempts);
    if (r->status < 400 || len == 0 || !ou_decode(L, r->body.data, len, &limits, &derr))
        return;
    if (lua_type(L, -1) == LUA_TTABLE) {
        lua_getfield(L, -1, "error");
        if (lua_type(L, -1) == LUA_TTABLE) {
            int envelope = lua_gettop(L);
            copy_field(L, err, envelope, "message");
            copy_field(L, err, envelope, "type");
            copy_field(L, err, envelope, "code");
            copy_field(L, err, envelope, "param");
        }
    }
    lua_settop(L, err);
}

int ou_outcome_fail(lua_State *L, const char *api_key, const struct ou_transfer_opts *opts,
                    const struct ou_request *rec, enum ou_outcome outcome)
{
    char message[OU_REASON_SIZE + 256];
    const char *kind = outcome == OU_FAIL_TIMEOUT                                  ? "timeout"
                       : (outcome == OU_FAIL_HTTP || outcome == OU_FAIL_WAIT_LONG) ? "http"
                       : outcome == OU_FAIL_TRANSPORT                              ? "transport"
                                                                                   : "network";
    ou_request_message(rec, opts, outcome, message, sizeof message);
    lua_pushstring(L, message);
    ou_scrub_key(L, api_key);
    ou_error_push(L, kind, lua_tostring(L, -1));
    lua_remove(L, -2);
    add_response_fields(L, rec);
    if (outcome == OU_FAIL_HTTP && rec->attempts > 1) {
        /* the server's own message replaced ours: keep the retry count */
        lua_getfield(L, -1, "message");
        lua_pushfstring(L, "%s (after %d attempts)", lua_tostring(L, -1), rec->attempts);
        lua_setfield(L, -3, "message");
        lua_pop(L, 1);
    }
    if (outcome == OU_FAIL_WAIT_LONG) {
        /* keep our explanation: the server's own text does not say we gave up */
        lua_pushstring(L, message);
        lua_setfield(L, -2, "message");
    }
    return ou_outcome_error(L, api_key);
}

/* The body of a 2xx answer must be a UsageResponse page, whichever
 * transport brought it: no hole where a bucket or a result belongs, and no
 * more values than its size allows (one per OU_PAGE_BYTES_PER_VALUE bytes
 * of max_response_bytes; real pages take 17 or more bytes a value, while a
 * flood of {} would cost some 60 times its bytes in Lua memory). */
#define OU_PAGE_BYTES_PER_VALUE 16
int ou_outcome_page(lua_State *L, const char *api_key, const struct ou_transfer_opts *opts,
                    const struct ou_request *rec)
{
    const struct ou_response *r = &rec->resp;
    struct ou_decode_limits limits = {OU_DECODE_MAX_DEPTH, 0, OU_DECODE_PAGE};
    struct ou_decode_error derr = {0, {0}, 0};
    char message[512];
    int is_json = r->content_type[0] == '\0' || strstr(r->content_type, "json") != NULL;
    if (rec->shape != OU_SHAPE_USAGE)
        limits.page = rec->shape == OU_SHAPE_LIST ? OU_DECODE_LIST : 0;
    limits.max_values = (int64_t)(opts->max_body / OU_PAGE_BYTES_PER_VALUE);
    if (limits.max_values < 1)
        limits.max_values = 1;
    if (!ou_decode(L, r->body.data ? r->body.data : "", r->body.len, &limits, &derr)) {
        if (derr.page_error) {
            ou_error_push(L, "api", derr.message);
            ou_error_setint(L, "offset", (int64_t)derr.offset);
            add_response_fields(L, rec);
            return ou_outcome_error(L, api_key);
        }
        snprintf(message, sizeof message, "%s at byte %zu of %zu%s%s%s", derr.message, derr.offset,
                 r->body.len, is_json ? "" : " (Content-Type was ", is_json ? "" : r->content_type,
                 is_json ? "" : ")");
        ou_error_push(L, "decode", message);
        ou_error_setint(L, "offset", (int64_t)derr.offset);
        add_response_fields(L, rec);
        return ou_outcome_error(L, api_key);
    }
    if (rec->shape == OU_SHAPE_OBJECT) {
        /* a JSON object, not an array (both decode to a table) */
        const char *text = r->body.data ? r->body.data : "";
        size_t at = 0, len = r->body.data ? r->body.len : 0;
        while (at < len && (text[at] == ' ' || text[at] == '\t' || text[at] == '\r' || text[at] == '\n'))
            at++;
        if (lua_type(L, -1) == LUA_TTABLE && at < len && text[at] == '{')
            return 1;
    }
    if (lua_type(L, -1) == LUA_TTABLE) {
        int has_more;
        lua_getfield(L, -1, "data");
        lua_getfield(L, -2, "has_more");
        /* a list that does not say whether it goes on cannot be walked to its end */
        has_more = rec->shape != OU_SHAPE_LIST || lua_type(L, -1) == LUA_TBOOLEAN;
        if (lua_type(L, -2) == LUA_TTABLE && has_more) {
            lua_pop(L, 2);
            return 1;
        }
        lua_pop(L, 2);
    }
    lua_pop(L, 1);
    if (rec->shape == OU_SHAPE_LIST)
        snprintf(
            message, sizeof message,
            "the response is not a list page (a \"data\" list and has_more true or false; Content-Type %s)",
            r->content_type[0] ? r->content_type : "absent");
    else if (rec->shape == OU_SHAPE_OBJECT)
        snprintf(message, sizeof message, "the response is not an object (Content-Type %s)",
                 r->content_type[0] ? r->content_type : "absent");
    else
        snprintf(message, sizeof message,
                 "the response is not a usage page (no \"data\" list; Content-Type %s)",
                 r->content_type[0] ? r->content_type : "absent");
    ou_error_push(L, "api", message);
    add_response_fields(L, rec);
    return ou_outcome_error(L, api_key);
}

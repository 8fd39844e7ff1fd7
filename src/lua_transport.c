#include "lua_transport.h"

#include <stdio.h>
#include <string.h>

#include "client.h"
#include "error.h"
#include "outcome.h"
#include "retry.h"

static void set_field_string(lua_State *L, const char *key, const char *value)
{
    if (!value)
        return;
    lua_pushstring(L, value);
    lua_setfield(L, -2, key);
}

static int record_gc(lua_State *L)
{
    ou_request_free(luaL_checkudata(L, 1, OU_REQUEST_MT));
    return 0;
}

/* client:transport_request(endpoint, params) -> req, record | nil, err:
 * validates and encodes now; req = {method, url, headers, timeout,
 * connect_timeout, max_response_bytes} is what the transport sends; record
 * (a userdata) is this request's own, which each transport_answer takes:
 * concurrent requests on one client (cosockets) never share one. */
static int client_transport_request(lua_State *L)
{
    struct ou_client *c = ou_client_check_open(L);
    const struct ou_transfer_opts *o = &c->transfer.opts;
    struct ou_request *rec;
    lua_settop(L, 3);
    if (!c->lua_transport)
        return luaL_error(L, "openai_usage: transport_request: this client has no transport");
    rec = lua_newuserdata(L, sizeof *rec);
    ou_request_init(rec);
    luaL_getmetatable(L, OU_REQUEST_MT);
    lua_setmetatable(L, -2);
    if (!ou_client_build_url(L, c, 2, &rec->url, &rec->shape))
        return ou_error_return(L);
    ou_request_start(rec);
    lua_createtable(L, 0, 7);
    lua_pushliteral(L, "GET");
    lua_setfield(L, -2, "method");
    lua_pushlstring(L, rec->url.data, rec->url.len);
    lua_setfield(L, -2, "url");
    /* the headers libcurl sends; Accept-Encoding only for a transport that
     * decompresses, since the decoder reads plain JSON */
    lua_createtable(L, 0, 6);
    lua_pushstring(L, c->bearer);
    lua_setfield(L, -2, "Authorization");
    set_field_string(L, "User-Agent", c->user_agent);
    set_field_string(L, "Accept", "application/json");
    set_field_string(L, "Accept-Encoding", c->transport_gzip ? "gzip" : NULL);
    set_field_string(L, "OpenAI-Organization", c->organization);
    set_field_string(L, "OpenAI-Project", c->project);
    lua_setfield(L, -2, "headers");
    lua_pushnumber(L, (lua_Number)o->timeout_ms / 1000);
    lua_setfield(L, -2, "timeout");
    lua_pushnumber(L, (lua_Number)o->connect_timeout_ms / 1000);
    lua_setfield(L, -2, "connect_timeout");
    /* a transport's low-speed limit: the silence that ends an attempt */
    ou_pushint64(L, OU_LOW_SPEED_TIME);
    lua_setfield(L, -2, "stall_timeout");
    ou_pushint64(L, (int64_t)o->max_body);
    lua_setfield(L, -2, "max_response_bytes");
    lua_insert(L, -2);
    return 2;
}

/* Keeps the reason for a failed attempt in errbuf, the key scrubbed first
 * (errbuf truncates: a cut key would no longer be found). Pops the string. */
static void keep_reason(lua_State *L, const struct ou_client *c, struct ou_request *rec)
{
    ou_scrub_key(L, c->api_key);
    snprintf(rec->reason, sizeof rec->reason, "%s", lua_tostring(L, -1));
    lua_pop(L, 1);
}

/* A transport that raised or answered something unusable: not retried.
 * fmt may hold one %s, for detail. */
static enum ou_outcome transport_fault(lua_State *L, const struct ou_client *c, struct ou_request *rec,
                                       const char *fmt, const char *detail)
{
    lua_pushfstring(L, fmt, detail ? detail : "");
    keep_reason(L, c, rec);
    return OU_FAIL_TRANSPORT;
}

/* Pushes what a Lua error value says: a string, a number, or a table's
 * message field (openai_usage errors and {kind, message} tables). */
static const char *error_text(lua_State *L, int idx)
{
    int type = lua_type(L, idx);
    if (type == LUA_TSTRING || type == LUA_TNUMBER) {
        lua_pushvalue(L, idx); /* a number becomes a string in the copy only */
    } else if (type == LUA_TTABLE) {
        lua_getfield(L, idx, "message");
        if (lua_type(L, -1) != LUA_TSTRING) {
            lua_pop(L, 1);
            lua_pushfstring(L, "(a table without a message)");
        }
    } else {
        lua_pushfstring(L, "(a %s)", luaL_typename(L, idx));
    }
    return lua_tostring(L, -1);
}

/* The answer's headers (a table at idx): name -> string, number or a list
 * of strings; names in any case. */
static enum ou_outcome take_headers(lua_State *L, const struct ou_client *c, struct ou_request *rec, int idx)
{
    struct ou_response *r = &rec->resp;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        size_t nlen, vlen;
        const char *name, *value;
        if (lua_type(L, -2) != LUA_TSTRING)
            return transport_fault(L, c, rec,
                                   "the transport returned a header name that is a %s; expected strings",
                                   luaL_typename(L, -2));
        name = lua_tolstring(L, -2, &nlen);
        if (lua_type(L, -1) == LUA_TSTRING || lua_type(L, -1) == LUA_TNUMBER) {
            lua_pushvalue(L, -1); /* tolstring on the copy: lua_next needs the original */
            value = lua_tolstring(L, -1, &vlen);
            ou_response_header(r, name, nlen, value, vlen);
            lua_pop(L, 1);
        } else if (lua_type(L, -1) == LUA_TTABLE) {
            for (int i = 1;; i++) {
                lua_rawgeti(L, -1, i);
                if (lua_isnil(L, -1)) {
                    lua_pop(L, 1);
                    break;
                }
                if (lua_type(L, -1) != LUA_TSTRING)
                    return transport_fault(
                        L, c, rec,
                        "the transport returned a header value list holding a %s; expected strings",
                        luaL_typename(L, -1));
                value = lua_tolstring(L, -1, &vlen);
                ou_response_header(r, name, nlen, value, vlen);
                lua_pop(L, 1);
            }
        } else {
            return transport_fault(L, c, rec,
                                   "the transport returned a header value that is a %s; expected a string",
                                   luaL_typename(L, -1));
        }
        lua_pop(L, 1);
    }
    return OU_OK;
}

/* Reads one attempt's result, as the driver's pcall gave it (stack: 3 its
 * ok, 4 status or nil, 5 headers or the error, 6 body), into the response.
 * *transient is set for a failure the retry policy may retry. */
static enum ou_outcome take_answer(lua_State *L, const struct ou_client *c, struct ou_request *rec,
                                   int *transient)
{
    const char *body;
    size_t len;
    int64_t status;
    enum ou_outcome outcome;
    if (!lua_toboolean(L, 3))
        return transport_fault(L, c, rec, "the transport raised an error: %s", error_text(L, 4));
    if (lua_isnil(L, 4)) {
        /* nil, err: the transport could not get an answer (refused, reset,
         * timed out): retried like libcurl's connection failures, unless
         * err = {retry = false} says it will not pass (TLS verification) */
        if (lua_isnil(L, 5))
            return transport_fault(L, c, rec, "the transport returned nil without an error", NULL);
        outcome = OU_FAIL_NETWORK;
        *transient = 1;
        if (lua_type(L, 5) == LUA_TTABLE) {
            lua_getfield(L, 5, "kind");
            if (lua_type(L, -1) == LUA_TSTRING && strcmp(lua_tostring(L, -1), "timeout") == 0)
                outcome = OU_FAIL_TIMEOUT;
            lua_getfield(L, 5, "retry");
            if (lua_type(L, -1) == LUA_TBOOLEAN && !lua_toboolean(L, -1))
                *transient = 0;
            lua_pop(L, 2);
        }
        error_text(L, 5);
        keep_reason(L, c, rec);
        return outcome;
    }
    if (lua_type(L, 4) != LUA_TNUMBER)
        return transport_fault(L, c, rec, "the transport returned a %s as the status; expected a number",
                               luaL_typename(L, 4));
    if (!ou_toint64(L, 4, &status) || status < 100 || status > 599)
        return transport_fault(L, c, rec,
                               "the transport returned status %s; expected an HTTP status 100..599",
                               error_text(L, 4));
    if (lua_type(L, 5) != LUA_TTABLE)
        return transport_fault(L, c, rec, "the transport returned a %s as the headers; expected a table",
                               luaL_typename(L, 5));
    if (lua_type(L, 6) != LUA_TSTRING)
        return transport_fault(L, c, rec, "the transport returned a %s as the body; expected a string",
                               luaL_typename(L, 6));
    rec->resp.status = (long)status;
    if ((outcome = take_headers(L, c, rec, 5)) != OU_OK)
        return outcome;
    body = lua_tolstring(L, 6, &len);
    rec->wire_bytes += (long long)len;
    if (len > c->transfer.opts.max_body)
        return OU_FAIL_TOO_LARGE;
    /* gzip's magic bytes: no JSON text starts so, and the decoder cannot inflate */
    if (len >= 2 && (unsigned char)body[0] == 0x1f && (unsigned char)body[1] == 0x8b)
        return transport_fault(
            L, c, rec,
            "the transport returned a gzip-compressed body; a transport that asks for gzip "
            "must decompress it (and say gzip = true)",
            NULL);
    if (!ou_buf_add(&rec->resp.body, body, len))
        return OU_FAIL_NOMEM;
    return ou_request_status_outcome(rec);
}

/* client:transport_answer(record, ok, status, headers, body) or
 * (record, ok, nil, err), ok being pcall's, record transport_request's ->
 * page | nil, err when the request is over, or false, delay: sleep delay
 * seconds, then attempt again. */
static int client_transport_answer(lua_State *L)
{
    struct ou_client *c = ou_client_check_open(L);
    struct ou_request *rec = luaL_checkudata(L, 2, OU_REQUEST_MT);
    enum ou_outcome outcome;
    int transient = 0;
    double delay = 0;
    lua_settop(L, 6);
    if (!c->lua_transport)
        return luaL_error(L, "openai_usage: transport_answer: this client has no transport");
    if (rec->attempts > OU_MAX_RETRIES)
        return luaL_argerror(L, 2, "a request that is over");
    rec->attempts++;
    ou_request_begin_attempt(rec);
    outcome = take_answer(L, c, rec, &transient);
    lua_settop(L, 6);
    if (ou_retry(&c->transfer.opts, &c->transfer.rng, rec, &outcome, transient, &delay)) {
        lua_pushboolean(L, 0);
        lua_pushnumber(L, (lua_Number)delay);
        return 2;
    }
    ou_client_publish(L, c, rec);
    if (outcome != OU_OK)
        return ou_outcome_fail(L, c->api_key, &c->transfer.opts, rec, outcome);
    return ou_outcome_page(L, c->api_key, &c->transfer.opts, rec);
}

static const luaL_Reg transport_methods[] = {
    {"transport_request", client_transport_request},
    {"transport_answer", client_transport_answer},
    {NULL, NULL},
};

void ou_lua_transport_open(lua_State *L)
{
    luaL_newmetatable(L, OU_REQUEST_MT);
    lua_pushcfunction(L, record_gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);
    luaL_getmetatable(L, OU_CLIENT_MT);
    lua_getfield(L, -1, "__index");
    ou_setfuncs(L, transport_methods);
    lua_pop(L, 2);
}

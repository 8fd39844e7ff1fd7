#include "client.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "decode.h"
#include "error.h"
#include "query.h"
#include "rules.h"
#include "transfer.h"

struct ou_client {
    struct ou_transfer transfer;
    char *base_url;
    char *api_key; /* kept only to scrub it from anything we report */
    enum ou_array_format array_format;
    struct ou_buf url;
    int open;
    /* A prefetch: the next page's transfer running on its own thread while
     * Lua works. Only that thread touches transfer and url until it is
     * joined; it makes no Lua call. */
    pthread_t thread;
    int running;         /* the thread exists and is not joined yet */
    int ready;           /* its outcome is unclaimed and still in transfer */
    unsigned long token; /* names the latest prefetch */
    enum ou_outcome outcome;
    atomic_int finished; /* set by the thread as its last act: poll reads it */
};

static void *prefetch_main(void *arg)
{
    struct ou_client *c = arg;
    c->outcome = ou_transfer_get(&c->transfer, c->url.data);
    atomic_store(&c->finished, 1);
    return NULL;
}

/* Waits for a background transfer (stopping it first when abort is set).
 * After this, the calling thread owns transfer and url again. */
static void join_prefetch(struct ou_client *c, int abort)
{
    if (!c->running)
        return;
    if (abort)
        atomic_store(&c->transfer.abort_requested, 1);
    pthread_join(c->thread, NULL);
    atomic_store(&c->transfer.abort_requested, 0);
    c->running = 0;
}

/* Every option core.new accepts; the Lua layer fills in the environment's
 * defaults before calling. */
static const char *const option_names[] = {
    "api_key",        "base_url",        "organization",       "project",
    "timeout",        "connect_timeout", "max_retries",        "user_agent",
    "ca_file",        "array_format",    "max_response_bytes", "low_speed_limit",
    "low_speed_time", "retry_backoff",   "retry_backoff_max",  "retry_after_max",
};
#define NOPTIONS (sizeof option_names / sizeof option_names[0])

static void client_release(struct ou_client *c)
{
    join_prefetch(c, 1);
    c->ready = 0;
    ou_transfer_release(&c->transfer);
    ou_buf_free(&c->url);
    if (c->api_key) {
        memset(c->api_key, 0, strlen(c->api_key));
        free(c->api_key);
    }
    free(c->base_url);
    c->api_key = c->base_url = NULL;
    c->open = 0;
}

static int client_gc(lua_State *L)
{
    client_release(luaL_checkudata(L, 1, OU_CLIENT_MT));
    return 0;
}

static struct ou_client *check_open(lua_State *L)
{
    struct ou_client *c = luaL_checkudata(L, 1, OU_CLIENT_MT);
    if (!c->open)
        luaL_error(L, "openai_usage: the client is closed");
    join_prefetch(c, 0);
    return c;
}

/* --- options ------------------------------------------------------------ */

static int option_names_valid(lua_State *L, int opts)
{
    lua_pushnil(L);
    while (lua_next(L, opts)) {
        const char *name, *near;
        size_t i;
        lua_pop(L, 1);
        if (lua_type(L, -1) != LUA_TSTRING)
            return ou_query_fail(L, NULL, "option names must be strings, got a %s", luaL_typename(L, -1));
        name = lua_tostring(L, -1);
        for (i = 0; i < NOPTIONS; i++)
            if (strcmp(name, option_names[i]) == 0)
                break;
        if (i < NOPTIONS)
            continue;
        near = ou_suggest(name, option_names, NOPTIONS);
        if (near)
            return ou_query_fail(L, name, "unknown option \"%s\"; did you mean \"%s\"?", name, near);
        return ou_query_fail(L, name, "unknown option \"%s\"", name);
    }
    return 1;
}

/* A string option that goes into a header: CR, LF or NUL would let it
 * forge headers, so it is refused; the message never shows the value. */
static int opt_header_string(lua_State *L, int opts, const char *name, const char **out)
{
    size_t len;
    const char *s;
    lua_getfield(L, opts, name);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        *out = NULL;
        return 1;
    }
    if (lua_type(L, -1) != LUA_TSTRING)
        return ou_query_fail(L, name, "%s: expected a string, got a %s", name, luaL_typename(L, -1));
    s = lua_tolstring(L, -1, &len);
    if (strlen(s) != len || strpbrk(s, "\r\n"))
        return ou_query_fail(L, name, "%s: must not contain CR, LF or NUL characters", name);
    lua_pop(L, 1); /* the string stays alive in the options table */
    *out = s;
    return 1;
}

static int opt_number(lua_State *L, int opts, const char *name, double dflt, double min, double max,
                      double *out)
{
    lua_getfield(L, opts, name);
    if (lua_isnil(L, -1)) {
        *out = dflt;
    } else if (lua_type(L, -1) != LUA_TNUMBER) {
        return ou_query_fail(L, name, "%s: expected a number, got a %s", name, luaL_typename(L, -1));
    } else {
        *out = (double)lua_tonumber(L, -1);
        if (!(*out >= min && *out <= max))
            return ou_query_fail(L, name, "%s: %g is out of range %g..%g", name, *out, min, max);
    }
    lua_pop(L, 1);
    return 1;
}

static int opt_integer(lua_State *L, int opts, const char *name, int64_t dflt, int64_t min, int64_t max,
                       int64_t *out)
{
    lua_getfield(L, opts, name);
    if (lua_isnil(L, -1)) {
        *out = dflt;
    } else if (!ou_toint64(L, -1, out)) {
        return ou_query_fail(L, name, "%s: expected an integer, got %s", name, luaL_typename(L, -1));
    } else if (*out < min || *out > max) {
        return ou_query_fail(L, name, "%s: %lld is out of range %lld..%lld", name, (long long)*out,
                             (long long)min, (long long)max);
    }
    lua_pop(L, 1);
    return 1;
}

static struct curl_slist *add_header(struct curl_slist *list, const char *name, const char *value, int *ok)
{
    char line[4096];
    struct curl_slist *grown;
    if (!*ok || !value)
        return list;
    if ((size_t)snprintf(line, sizeof line, "%s: %s", name, value) >= sizeof line) {
        *ok = 0;
        return list;
    }
    grown = curl_slist_append(list, line);
    memset(line, 0, sizeof line);
    if (!grown) {
        *ok = 0;
        return list;
    }
    return grown;
}

static char *dup_string(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}

int ou_client_new(lua_State *L)
{
    const char *api_key = NULL, *base_url = NULL, *organization = NULL, *project = NULL, *user_agent = NULL,
               *ca_file = NULL, *format = NULL;
    struct ou_transfer_opts topts;
    struct curl_slist *headers = NULL;
    struct ou_client *c;
    double timeout = 0, connect_timeout = 0, backoff = 0, backoff_max = 0, wait_max = 0;
    int64_t retries = 0, max_body = 0, low_limit = 0, low_time = 0;
    char default_agent[160], bearer[4096];
    int ok = 1;

    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    if (!option_names_valid(L, 1))
        return ou_error_return(L);
    /* libcurl loads with the first client, so that require stays cheap */
    if (!ou_curl_load(default_agent, sizeof default_agent)) {
        ou_error_push(L, "network", default_agent);
        return ou_error_return(L);
    }
    if (!opt_header_string(L, 1, "api_key", &api_key) || !opt_header_string(L, 1, "base_url", &base_url) ||
        !opt_header_string(L, 1, "organization", &organization) ||
        !opt_header_string(L, 1, "project", &project) ||
        !opt_header_string(L, 1, "user_agent", &user_agent) ||
        !opt_header_string(L, 1, "ca_file", &ca_file) || !opt_header_string(L, 1, "array_format", &format))
        return ou_error_return(L);
    if (!api_key || !*api_key) {
        ou_query_fail(L, "api_key", "api_key: required (an admin key; set OPENAI_ADMIN_KEY or pass api_key)");
        return ou_error_return(L);
    }
    if (!base_url)
        base_url = "https://api.openai.com/v1";
    if (strncmp(base_url, "http://", 7) != 0 && strncmp(base_url, "https://", 8) != 0) {
        ou_query_fail(L, "base_url", "base_url: \"%.80s\" must start with http:// or https://", base_url);
        return ou_error_return(L);
    }
    if (strchr(base_url, ' ') || strchr(base_url, '?') || strchr(base_url, '#')) {
        ou_query_fail(L, "base_url", "base_url: \"%.80s\" must not contain spaces, a query or a fragment",
                      base_url);
        return ou_error_return(L);
    }
    if (format && strcmp(format, "brackets") != 0 && strcmp(format, "repeat") != 0) {
        ou_query_fail(L, "array_format", "array_format: \"%.40s\" is not one of brackets, repeat", format);
        return ou_error_return(L);
    }
    if (!opt_number(L, 1, "timeout", 600, 0.001, 86400, &timeout) ||
        !opt_number(L, 1, "connect_timeout", 5, 0.001, 3600, &connect_timeout) ||
        !opt_integer(L, 1, "max_retries", 2, 0, OU_MAX_RETRIES, &retries) ||
        !opt_integer(L, 1, "max_response_bytes", 64 << 20, 1, (int64_t)1 << 40, &max_body) ||
        !opt_integer(L, 1, "low_speed_limit", 0, 0, (int64_t)1 << 30, &low_limit) ||
        !opt_integer(L, 1, "low_speed_time", 0, 0, 86400, &low_time) ||
        !opt_number(L, 1, "retry_backoff", 0.5, 0, 60, &backoff) ||
        !opt_number(L, 1, "retry_backoff_max", 8, 0, 600, &backoff_max) ||
        !opt_number(L, 1, "retry_after_max", 120, 0, 86400, &wait_max))
        return ou_error_return(L);

    topts.timeout_ms = (long)(timeout * 1000);
    topts.connect_timeout_ms = (long)(connect_timeout * 1000);
    topts.low_speed_limit = (long)low_limit;
    topts.low_speed_time = (long)low_time;
    topts.max_retries = (int)retries;
    topts.backoff_initial = backoff;
    topts.backoff_max = backoff_max;
    topts.retry_after_max = wait_max;
    topts.max_body = (size_t)max_body;

    if (!user_agent) {
        snprintf(default_agent, sizeof default_agent, "openai-usage-lua/%s libcurl/%s %s", OU_VERSION,
                 curl_version_info(CURLVERSION_NOW)->version, LUA_RELEASE);
        user_agent = default_agent;
    }

    c = lua_newuserdata(L, sizeof *c);
    memset(c, 0, sizeof *c);
    luaL_getmetatable(L, OU_CLIENT_MT);
    lua_setmetatable(L, -2);

    if ((size_t)snprintf(bearer, sizeof bearer, "Bearer %s", api_key) >= sizeof bearer) {
        ou_query_fail(L, "api_key", "api_key: longer than 4000 bytes");
        return ou_error_return(L);
    }
    headers = add_header(headers, "Authorization", bearer, &ok);
    memset(bearer, 0, sizeof bearer);
    headers = add_header(headers, "OpenAI-Organization", organization, &ok);
    headers = add_header(headers, "OpenAI-Project", project, &ok);
    headers = add_header(headers, "Accept", "application/json", &ok);
    /* the handle owns the list from here on, whatever happens next */
    if (!ou_transfer_init(&c->transfer, &topts, headers, user_agent, ca_file) || !ok) {
        ou_error_push(L, "invalid_argument", ok ? c->transfer.errbuf : "could not build the request headers");
        client_release(c);
        return ou_error_return(L);
    }
    c->base_url = dup_string(base_url);
    c->api_key = dup_string(api_key);
    if (!c->base_url || !c->api_key) {
        client_release(c);
        return luaL_error(L, "openai_usage: out of memory");
    }
    for (size_t n = strlen(c->base_url); n > 0 && c->base_url[n - 1] == '/'; n--)
        c->base_url[n - 1] = '\0';
    c->array_format = format && strcmp(format, "repeat") == 0 ? OU_ARRAY_REPEAT : OU_ARRAY_BRACKETS;
    c->open = 1;
    return 1;
}

/* --- requests ----------------------------------------------------------- */

/* Builds the full URL for endpoint (at idx) and params (at idx + 1) into
 * c->url. Returns 1, or 0 with an error pushed. */
static int build_url(lua_State *L, struct ou_client *c, int idx)
{
    const struct ou_endpoint_rule *ep = ou_query_endpoint(L, idx);
    if (!ep)
        return 0;
    ou_buf_clear(&c->url);
    if (!ou_buf_addstr(&c->url, c->base_url) || !ou_buf_addstr(&c->url, ep->path) ||
        !ou_buf_addchar(&c->url, '?'))
        luaL_error(L, "openai_usage: out of memory");
    if (!ou_query_encode(L, idx + 1, ep, c->array_format, &c->url))
        return 0;
    if (c->url.data[c->url.len - 1] == '?')
        c->url.len--;
    if (!ou_buf_cstr(&c->url))
        luaL_error(L, "openai_usage: out of memory");
    return 1;
}

/* Replaces every occurrence of the key in the string at the top. */
static void scrub_key(lua_State *L, const struct ou_client *c)
{
    size_t klen = c->api_key ? strlen(c->api_key) : 0;
    const char *s = lua_tostring(L, -1), *hit;
    luaL_Buffer b;
    if (klen < 4 || !s || !strstr(s, c->api_key))
        return;
    luaL_buffinit(L, &b);
    while ((hit = strstr(s, c->api_key))) {
        luaL_addlstring(&b, s, (size_t)(hit - s));
        luaL_addstring(&b, "[redacted]");
        s = hit + klen;
    }
    luaL_addstring(&b, s);
    luaL_pushresult(&b);
    lua_remove(L, -2);
}

/* Copies envelope[key], a string, into the error at err, scrubbed. */
static void copy_scrubbed(lua_State *L, const struct ou_client *c, int err, int envelope, const char *key)
{
    lua_getfield(L, envelope, key);
    if (lua_type(L, -1) == LUA_TSTRING) {
        scrub_key(L, c);
        lua_setfield(L, err, key);
    } else {
        lua_pop(L, 1);
    }
}

/* Adds what the server said to the error at the top: request id, the
 * retry-after it asked for and, from an OpenAI error envelope, message,
 * type, code and param. */
static void add_response_fields(lua_State *L, struct ou_client *c)
{
    const struct ou_response *r = &c->transfer.resp;
    struct ou_decode_error derr = {0, {0}};
    int err = lua_gettop(L);
    if (r->status)
        ou_error_setint(L, "status", r->status);
    if (r->request_id[0])
        ou_error_setstring(L, "request_id", r->request_id);
    if (r->retry_after >= 0)
        ou_error_setnumber(L, "retry_after", r->retry_after);
    ou_error_setint(L, "attempts", c->transfer.attempts);
    if (r->body.len == 0 || !ou_decode(L, r->body.data, r->body.len, 32, &derr))
        return;
    if (lua_type(L, -1) == LUA_TTABLE) {
        lua_getfield(L, -1, "error");
        if (lua_type(L, -1) == LUA_TTABLE) {
            int envelope = lua_gettop(L);
            copy_scrubbed(L, c, err, envelope, "message");
            copy_scrubbed(L, c, err, envelope, "type");
            copy_scrubbed(L, c, err, envelope, "code");
            copy_scrubbed(L, c, err, envelope, "param");
        }
    }
    lua_settop(L, err);
}

static int fail_outcome(lua_State *L, struct ou_client *c, enum ou_outcome outcome)
{
    char message[CURL_ERROR_SIZE + 256];
    const char *kind = outcome == OU_FAIL_TIMEOUT                                  ? "timeout"
                       : (outcome == OU_FAIL_HTTP || outcome == OU_FAIL_WAIT_LONG) ? "http"
                                                                                   : "network";
    ou_transfer_message(&c->transfer, outcome, message, sizeof message);
    lua_pushstring(L, message);
    scrub_key(L, c);
    ou_error_push(L, kind, lua_tostring(L, -1));
    lua_remove(L, -2);
    add_response_fields(L, c);
    if (outcome == OU_FAIL_HTTP && c->transfer.attempts > 1) {
        /* the server's own message replaced ours: keep the retry count */
        lua_getfield(L, -1, "message");
        lua_pushfstring(L, "%s (after %d attempts)", lua_tostring(L, -1), c->transfer.attempts);
        lua_setfield(L, -3, "message");
        lua_pop(L, 1);
    }
    if (outcome == OU_FAIL_WAIT_LONG) {
        /* keep our explanation: the server's own text does not say we gave up */
        lua_pushstring(L, message);
        lua_setfield(L, -2, "message");
    }
    return ou_error_return(L);
}

/* The body of a 2xx answer must be a UsageResponse page. */
static int decode_page(lua_State *L, struct ou_client *c)
{
    const struct ou_response *r = &c->transfer.resp;
    struct ou_decode_error derr = {0, {0}};
    char message[512];
    int is_json = r->content_type[0] == '\0' || strstr(r->content_type, "json") != NULL;
    if (!ou_decode(L, r->body.data ? r->body.data : "", r->body.len, OU_DECODE_MAX_DEPTH, &derr)) {
        snprintf(message, sizeof message, "%s at byte %zu of %zu%s%s%s", derr.message, derr.offset,
                 r->body.len, is_json ? "" : " (Content-Type was ", is_json ? "" : r->content_type,
                 is_json ? "" : ")");
        ou_error_push(L, "decode", message);
        ou_error_setint(L, "offset", (int64_t)derr.offset);
        add_response_fields(L, c);
        return ou_error_return(L);
    }
    if (lua_type(L, -1) == LUA_TTABLE) {
        lua_getfield(L, -1, "data");
        if (lua_type(L, -1) == LUA_TTABLE) {
            lua_pop(L, 1);
            return 1;
        }
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    snprintf(message, sizeof message, "the response is not a usage page (no \"data\" list; Content-Type %s)",
             r->content_type[0] ? r->content_type : "absent");
    ou_error_push(L, "api", message);
    add_response_fields(L, c);
    return ou_error_return(L);
}

/* client:request(endpoint, params) -> page | nil, err */
static int client_request(lua_State *L)
{
    struct ou_client *c = check_open(L);
    enum ou_outcome outcome;
    lua_settop(L, 3);
    c->ready = 0;
    if (!build_url(L, c, 2))
        return ou_error_return(L);
    outcome = ou_transfer_get(&c->transfer, c->url.data);
    if (outcome != OU_OK)
        return fail_outcome(L, c, outcome);
    return decode_page(L, c);
}

/* client:prefetch(endpoint, params) -> token | nil, err: validates now,
 * then starts the transfer on a thread and returns at once. */
static int client_prefetch(lua_State *L)
{
    struct ou_client *c = check_open(L);
    lua_settop(L, 3);
    c->ready = 0;
    if (!build_url(L, c, 2))
        return ou_error_return(L);
    c->token++;
    c->ready = 1;
    atomic_store(&c->finished, 0);
    if (pthread_create(&c->thread, NULL, prefetch_main, c) == 0)
        c->running = 1;
    else
        prefetch_main(c); /* no thread to be had: fetch now, still correct */
    lua_pushnumber(L, (lua_Number)c->token);
    return 1;
}

/* client:poll(token) -> true when that prefetch has finished (collect will
 * not wait), false while it is still on the wire. Never blocks: an event
 * loop (Neovim's vim.loop, say) calls it from a timer. A token that is no
 * longer current reads as finished, so collect can report it as gone. */
static int client_poll(lua_State *L)
{
    struct ou_client *c = luaL_checkudata(L, 1, OU_CLIENT_MT);
    lua_Number token = luaL_checknumber(L, 2);
    if (!c->open || !c->ready || (lua_Number)c->token != token || !c->running)
        lua_pushboolean(L, 1);
    else
        lua_pushboolean(L, atomic_load(&c->finished) != 0);
    return 1;
}

/* client:collect(token) -> page | nil, err, or false when that prefetch is
 * gone (another request reused the handle): the caller then requests. */
static int client_collect(lua_State *L)
{
    struct ou_client *c = check_open(L);
    if (!c->ready || (lua_Number)c->token != luaL_checknumber(L, 2)) {
        lua_pushboolean(L, 0);
        return 1;
    }
    c->ready = 0;
    if (c->outcome != OU_OK)
        return fail_outcome(L, c, c->outcome);
    return decode_page(L, c);
}

/* client:cancel() stops a prefetch nobody will collect (a loop left early). */
static int client_cancel(lua_State *L)
{
    struct ou_client *c = luaL_checkudata(L, 1, OU_CLIENT_MT);
    join_prefetch(c, 1);
    c->ready = 0;
    return 0;
}

/* client:url(endpoint, params) -> the URL a request would GET | nil, err */
static int client_url(lua_State *L)
{
    struct ou_client *c = check_open(L);
    lua_settop(L, 3);
    if (!build_url(L, c, 2))
        return ou_error_return(L);
    lua_pushlstring(L, c->url.data, c->url.len);
    return 1;
}

/* client:last_transfer() -> what the last request did: attempts, the
 * delays slept between them, connections opened, bytes on the wire. */
static int client_last_transfer(lua_State *L)
{
    struct ou_client *c = check_open(L);
    const struct ou_transfer *t = &c->transfer;
    lua_createtable(L, 0, 8);
    ou_pushint64(L, t->attempts);
    lua_setfield(L, -2, "attempts");
    lua_createtable(L, t->attempts > 0 ? t->attempts - 1 : 0, 0);
    for (int i = 0; i + 1 < t->attempts && i < OU_MAX_RETRIES; i++) {
        lua_pushnumber(L, (lua_Number)t->delays[i]);
        lua_rawseti(L, -2, i + 1);
    }
    lua_setfield(L, -2, "delays");
    ou_pushint64(L, t->connects);
    lua_setfield(L, -2, "connections");
    ou_pushint64(L, t->wire_bytes);
    lua_setfield(L, -2, "wire_bytes");
    ou_pushint64(L, (int64_t)t->resp.body.len);
    lua_setfield(L, -2, "body_bytes");
    /* what the client holds in C between requests: body and URL buffers */
    ou_pushint64(L, (int64_t)(t->resp.body.cap + c->url.cap));
    lua_setfield(L, -2, "buffer_bytes");
    ou_pushint64(L, t->resp.status);
    lua_setfield(L, -2, "status");
    if (t->resp.request_id[0]) {
        lua_pushstring(L, t->resp.request_id);
        lua_setfield(L, -2, "request_id");
    }
    return 1;
}

static int client_close(lua_State *L)
{
    client_release(luaL_checkudata(L, 1, OU_CLIENT_MT));
    return 0;
}

static int client_tostring(lua_State *L)
{
    struct ou_client *c = luaL_checkudata(L, 1, OU_CLIENT_MT);
    if (!c->open)
        lua_pushliteral(L, "openai_usage.client (closed)");
    else
        lua_pushfstring(L, "openai_usage.client (%s, api_key=<redacted>)", c->base_url);
    return 1;
}

static const luaL_Reg client_methods[] = {
    {"request", client_request},
    {"prefetch", client_prefetch},
    {"collect", client_collect},
    {"cancel", client_cancel},
    {"poll", client_poll},
    {"url", client_url},
    {"last_transfer", client_last_transfer},
    {"close", client_close},
    {NULL, NULL},
};

void ou_client_open(lua_State *L)
{
    luaL_newmetatable(L, OU_CLIENT_MT);
    lua_pushcfunction(L, client_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, client_gc);
    lua_setfield(L, -2, "__close");
    lua_pushcfunction(L, client_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pushliteral(L, OU_CLIENT_MT);
    lua_setfield(L, -2, "__name");
    ou_newlib(L, client_methods);
    lua_pushvalue(L, -1);
    lua_setfield(L, -3, "__index");
    lua_remove(L, -2);
}

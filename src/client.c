#include "client.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "decode.h"
#include "error.h"
#include "query.h"
#include "rules.h"
#include "request.h"
#include "retry.h"
#include "transfer.h"

struct ou_client {
    struct ou_transfer transfer;
    char *base_url;
    /* "Bearer <key>", the one copy of the key the client keeps (to scrub it
     * from anything we report, and for a Lua transport's headers); api_key
     * points into it. Wiped before it is freed. */
    char *bearer;
    const char *api_key;
    /* A Lua transport (the Lua layer holds the function and drives the
     * attempts): no libcurl handle; the headers it is given are built from
     * these on each request. */
    int lua_transport;
    int transport_gzip; /* the transport decompresses gzip: ask for it */
    char *user_agent, *organization, *project;
    enum ou_array_format array_format;
    /* the libcurl handle's record: the blocking request's, or the
     * prefetch's (a Lua transport's requests each have their own) */
    struct ou_request rec;
    struct ou_buf scratch; /* client:url()'s, never the record's */
    /* what the latest finished request did, client-wide; per coroutine in
     * the weak table at stats_ref (thread -> struct ou_request_stats) */
    struct ou_request_stats last;
    int stats_ref;
    int open;
    /* A prefetch: the next page's transfer running on its own thread while
     * Lua works. Only that thread touches transfer and rec until it is
     * joined; it makes no Lua call. */
    pthread_t thread;
    int running;         /* the thread exists and is not joined yet */
    int ready;           /* its outcome is unclaimed and still in transfer */
    unsigned long token; /* names the latest prefetch */
    enum ou_outcome outcome;
    atomic_int finished; /* set by the thread as its last act: poll reads it */
    pid_t pid;           /* the process the handles belong to (see adopt_after_fork) */
};

static void *prefetch_main(void *arg)
{
    struct ou_client *c = arg;
    c->outcome = ou_transfer_get(&c->transfer, &c->rec);
    atomic_store(&c->finished, 1);
    return NULL;
}

/* Waits for a background transfer (stopping it first when abort is set).
 * After this, the calling thread owns transfer and rec again. */
static void join_prefetch(struct ou_client *c, int abort)
{
    if (!c->running)
        return;
    if (abort)
        ou_transfer_abort(&c->transfer); /* wakes it: the join takes milliseconds */
    pthread_join(c->thread, NULL);
    atomic_store(&c->transfer.abort_requested, 0);
    c->running = 0;
}

/* A client used in a child of fork() (nginx's workers forked from a master
 * that made it, a script or an editor that forks): the prefetch thread does
 * not exist in this process, so it is never joined, and its unclaimed page
 * is gone; the transfer drops the inherited libcurl handles, whose socket
 * is the parent's too, and opens its own (ou_transfer_after_fork). Returns
 * 0, with the client closed, when no new handle could be made. */
static int adopt_after_fork(struct ou_client *c)
{
    int was_running = c->running;
    if (c->pid == getpid())
        return 1;
    c->pid = getpid();
    c->running = c->ready = 0;
    if (c->lua_transport || !c->transfer.easy)
        return 1;
    if (!ou_transfer_after_fork(&c->transfer, was_running ? &c->rec : NULL)) {
        c->open = 0;
        return 0;
    }
    return 1;
}

/* Every option core.new accepts; the Lua layer fills in the environment's
 * defaults before calling. */
static const char *const option_names[] = {
    "api_key",        "base_url",        "organization",       "project",
    "timeout",        "connect_timeout", "max_retries",        "user_agent",
    "ca_file",        "array_format",    "max_response_bytes", "low_speed_limit",
    "low_speed_time", "retry_backoff",   "retry_backoff_max",  "retry_after_max",
    "transport",
};
#define NOPTIONS (sizeof option_names / sizeof option_names[0])

static void client_release(lua_State *L, struct ou_client *c)
{
    if (c->open && c->pid != getpid())
        adopt_after_fork(c); /* never joins a thread of another process */
    join_prefetch(c, 1);
    c->ready = 0;
    ou_transfer_release(&c->transfer);
    ou_request_free(&c->rec);
    ou_buf_free(&c->scratch);
    luaL_unref(L, LUA_REGISTRYINDEX, c->stats_ref);
    c->stats_ref = LUA_NOREF;
    if (c->bearer) {
        ou_wipe(c->bearer, strlen(c->bearer));
        free(c->bearer);
    }
    free(c->base_url);
    free(c->user_agent);
    free(c->organization);
    free(c->project);
    c->bearer = c->base_url = c->user_agent = c->organization = c->project = NULL;
    c->api_key = NULL;
    c->open = 0;
}

static int client_gc(lua_State *L)
{
    client_release(L, luaL_checkudata(L, 1, OU_CLIENT_MT));
    return 0;
}

/* The client at 1, open, its handles this process's; a prefetch may still
 * be on the wire (for what needs neither the handle nor its record). */
static struct ou_client *check_usable(lua_State *L)
{
    struct ou_client *c = luaL_checkudata(L, 1, OU_CLIENT_MT);
    if (c->open && !adopt_after_fork(c))
        luaL_error(L, "openai_usage: could not make new libcurl handles after fork()");
    if (!c->open)
        luaL_error(L, "openai_usage: the client is closed");
    return c;
}

/* The same, with the handle and its record free: a prefetch is joined. */
static struct ou_client *check_open(lua_State *L)
{
    struct ou_client *c = check_usable(L);
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

/* transport: a function, or a table {request = fn, sleep = fn, gzip = bool}.
 * C only checks its shape and notes gzip; the Lua layer calls it. */
static int opt_transport(lua_State *L, int opts, int *has, int *gzip)
{
    static const char usage[] = "expected a function, or a table {request = fn, sleep = fn, gzip = boolean}";
    int type;
    *has = *gzip = 0;
    lua_getfield(L, opts, "transport");
    type = lua_type(L, -1);
    if (type == LUA_TFUNCTION) {
        *has = 1;
    } else if (type == LUA_TTABLE) {
        lua_getfield(L, -1, "request");
        if (lua_type(L, -1) != LUA_TFUNCTION)
            return ou_query_fail(L, "transport", "transport.request: expected a function, got a %s",
                                 luaL_typename(L, -1));
        lua_getfield(L, -2, "sleep");
        if (!lua_isnil(L, -1) && lua_type(L, -1) != LUA_TFUNCTION)
            return ou_query_fail(L, "transport", "transport.sleep: expected a function, got a %s",
                                 luaL_typename(L, -1));
        lua_getfield(L, -3, "gzip");
        if (!lua_isnil(L, -1) && lua_type(L, -1) != LUA_TBOOLEAN)
            return ou_query_fail(L, "transport", "transport.gzip: expected a boolean, got a %s",
                                 luaL_typename(L, -1));
        *gzip = lua_toboolean(L, -1);
        lua_pop(L, 3);
        *has = 1;
    } else if (type != LUA_TNIL) {
        return ou_query_fail(L, "transport", "transport: %s, got a %s", usage, luaL_typename(L, -1));
    }
    lua_pop(L, 1);
    return 1;
}

/* Options that only libcurl honours are refused with a transport rather
 * than silently ignored. */
static int curl_only_options_absent(lua_State *L, int opts)
{
    static const char *const names[] = {"ca_file", "low_speed_limit", "low_speed_time"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        lua_getfield(L, opts, names[i]);
        if (!lua_isnil(L, -1))
            return ou_query_fail(L, names[i],
                                 "%s: libcurl's option, not used with a transport (configure the transport)",
                                 names[i]);
        lua_pop(L, 1);
    }
    return 1;
}

static struct curl_slist *add_header(struct curl_slist *list, const char *name, const char *value, int *ok)
{
    char line[4200];
    struct curl_slist *grown;
    size_t nlen, vlen;
    if (!*ok || !value)
        return list;
    nlen = strlen(name), vlen = strlen(value);
    if (nlen + 2 + vlen >= sizeof line) {
        *ok = 0;
        return list;
    }
    /* built by hand: printf's own buffers would keep copies of the key */
    memcpy(line, name, nlen);
    memcpy(line + nlen, ": ", 3);
    memcpy(line + nlen + 2, value, vlen + 1);
    grown = curl_slist_append(list, line);
    ou_wipe(line, nlen + 2 + vlen);
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

/* "Bearer <key>" in one allocation, built without printf (whose buffers
 * would keep a copy). */
static char *new_bearer(const char *api_key)
{
    size_t n = strlen(api_key);
    char *bearer = malloc(n + 8);
    if (bearer) {
        memcpy(bearer, "Bearer ", 8);
        memcpy(bearer + 7, api_key, n + 1);
    }
    return bearer;
}

/* base_url's authority (after the scheme) holds user information: "user@"
 * or "user:password@". */
static int has_userinfo(const char *url)
{
    const char *authority = strstr(url, "://");
    authority = authority ? authority + 3 : url;
    return memchr(authority, '@', strcspn(authority, "/?#")) != NULL;
}

/* The last steps of core.new, whichever transport: the client (at the top)
 * keeps the base URL (the key is in c->bearer already). */
static int finish_new(lua_State *L, struct ou_client *c, const char *base_url, const char *format)
{
    c->base_url = dup_string(base_url);
    if (!c->base_url) {
        client_release(L, c);
        return luaL_error(L, "openai_usage: out of memory");
    }
    for (size_t n = strlen(c->base_url); n > 0 && c->base_url[n - 1] == '/'; n--)
        c->base_url[n - 1] = '\0';
    c->array_format = format && strcmp(format, "repeat") == 0 ? OU_ARRAY_REPEAT : OU_ARRAY_BRACKETS;
    c->pid = getpid();
    c->open = 1;
    return 1;
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
    char default_agent[160];
    int ok = 1, has_transport = 0, gzip = 0;

    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    if (!option_names_valid(L, 1) || !opt_transport(L, 1, &has_transport, &gzip) ||
        (has_transport && !curl_only_options_absent(L, 1)))
        return ou_error_return(L);
    /* libcurl loads with the first client, so that require stays cheap; a
     * client with a Lua transport never needs it */
    if (!has_transport && !ou_curl_load(default_agent, sizeof default_agent)) {
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
    /* before any message that shows base_url: this one must not show it */
    if (has_userinfo(base_url)) {
        ou_query_fail(L, "base_url",
                      "base_url: must not contain user information (user:password@ before the host); "
                      "the key goes in api_key");
        return ou_error_return(L);
    }
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
        !opt_integer(L, 1, "low_speed_limit", OU_LOW_SPEED_LIMIT, 0, (int64_t)1 << 30, &low_limit) ||
        !opt_integer(L, 1, "low_speed_time", OU_LOW_SPEED_TIME, 0, 86400, &low_time) ||
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

    if (!user_agent && has_transport) {
        snprintf(default_agent, sizeof default_agent, "openai-usage-lua/%s %s", OU_VERSION, LUA_RELEASE);
        user_agent = default_agent;
    } else if (!user_agent) {
        snprintf(default_agent, sizeof default_agent, "openai-usage-lua/%s libcurl/%s %s", OU_VERSION,
                 curl_version_info(CURLVERSION_NOW)->version, LUA_RELEASE);
        user_agent = default_agent;
    }

    c = lua_newuserdata(L, sizeof *c);
    memset(c, 0, sizeof *c);
    ou_request_init(&c->rec);
    c->stats_ref = LUA_NOREF;
    luaL_getmetatable(L, OU_CLIENT_MT);
    lua_setmetatable(L, -2);

    if (strlen(api_key) > 4000) {
        ou_query_fail(L, "api_key", "api_key: longer than 4000 bytes");
        return ou_error_return(L);
    }
    c->bearer = new_bearer(api_key);
    if (!c->bearer)
        return luaL_error(L, "openai_usage: out of memory");
    c->api_key = c->bearer + 7;

    if (has_transport) {
        ou_transfer_setup(&c->transfer, &topts);
        c->lua_transport = 1;
        c->transport_gzip = gzip;
        c->user_agent = dup_string(user_agent);
        c->organization = organization ? dup_string(organization) : NULL;
        c->project = project ? dup_string(project) : NULL;
        if (!c->user_agent || (organization && !c->organization) || (project && !c->project)) {
            client_release(L, c);
            return luaL_error(L, "openai_usage: out of memory");
        }
        return finish_new(L, c, base_url, format);
    }

    headers = add_header(headers, "Authorization", c->bearer, &ok);
    headers = add_header(headers, "OpenAI-Organization", organization, &ok);
    headers = add_header(headers, "OpenAI-Project", project, &ok);
    headers = add_header(headers, "Accept", "application/json", &ok);
    /* the handle owns the list from here on, whatever happens next */
    if (!ou_transfer_init(&c->transfer, &topts, headers, user_agent, ca_file) || !ok) {
        ou_error_push(L, "invalid_argument", ok ? c->transfer.errbuf : "could not build the request headers");
        client_release(L, c);
        return ou_error_return(L);
    }
    return finish_new(L, c, base_url, format);
}

/* --- requests ----------------------------------------------------------- */

/* Builds the full URL for endpoint (at idx) and params (at idx + 1) into
 * url. Returns 1, or 0 with an error pushed. */
static int build_url(lua_State *L, const struct ou_client *c, int idx, struct ou_buf *url)
{
    const struct ou_endpoint_rule *ep = ou_query_endpoint(L, idx);
    if (!ep)
        return 0;
    ou_buf_clear(url);
    if (!ou_buf_addstr(url, c->base_url) || !ou_buf_addstr(url, ep->path) || !ou_buf_addchar(url, '?'))
        luaL_error(L, "openai_usage: out of memory");
    if (!ou_query_encode(L, idx + 1, ep, c->array_format, url))
        return 0;
    if (url->data[url->len - 1] == '?')
        url->len--;
    if (!ou_buf_cstr(url))
        luaL_error(L, "openai_usage: out of memory");
    return 1;
}

/* Keeps what the request of rec did, now over, for last_transfer: the
 * client's latest, and the calling coroutine's own. */
static void publish(lua_State *L, struct ou_client *c, const struct ou_request *rec)
{
    struct ou_request_stats *mine;
    ou_request_stats(rec, &c->last);
    if (c->stats_ref == LUA_NOREF) {
        lua_newtable(L);
        lua_createtable(L, 0, 1);
        lua_pushliteral(L, "k");
        lua_setfield(L, -2, "__mode");
        lua_setmetatable(L, -2);
        c->stats_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, c->stats_ref);
    lua_pushthread(L);
    lua_rawget(L, -2);
    mine = lua_touserdata(L, -1);
    lua_pop(L, 1);
    if (!mine) {
        lua_pushthread(L);
        mine = lua_newuserdata(L, sizeof *mine);
        lua_rawset(L, -3);
    }
    *mine = c->last;
    lua_pop(L, 1);
}

/* The stats last_transfer reports to the calling coroutine: its own
 * latest request's, or the client's when it has made none. */
static const struct ou_request_stats *stats_for_caller(lua_State *L, const struct ou_client *c)
{
    const struct ou_request_stats *mine = NULL;
    if (c->stats_ref == LUA_NOREF)
        return &c->last;
    lua_rawgeti(L, LUA_REGISTRYINDEX, c->stats_ref);
    lua_pushthread(L);
    lua_rawget(L, -2);
    mine = lua_touserdata(L, -1);
    lua_pop(L, 2); /* the table holds the userdata: mine stays valid until the next Lua call */
    return mine ? mine : &c->last;
}

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
static void scrub_key(lua_State *L, const struct ou_client *c)
{
    size_t klen = c->api_key ? strlen(c->api_key) : 0, n, i = 0, from = 0;
    size_t least = klen < OU_KEY_RUN ? klen : OU_KEY_RUN;
    const char *s = lua_tolstring(L, -1, &n);
    luaL_Buffer b;
    int found = 0;
    if (klen < 4 || !s)
        return;
    luaL_buffinit(L, &b);
    while (i < n) {
        size_t run = key_run_at(s + i, n - i, c->api_key, klen);
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
static void scrub_error(lua_State *L, const struct ou_client *c)
{
    int err = lua_gettop(L);
    lua_pushnil(L);
    while (lua_next(L, err)) {
        if (lua_type(L, -1) == LUA_TSTRING) {
            scrub_key(L, c);
            lua_pushvalue(L, -2);
            lua_insert(L, -2);
            lua_rawset(L, err); /* an existing field: lua_next may go on */
        } else {
            lua_pop(L, 1);
        }
    }
}

/* Returns nil, err for the error at the top, scrubbed. */
static int client_error_return(lua_State *L, const struct ou_client *c)
{
    scrub_error(L, c);
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

static int fail_outcome(lua_State *L, struct ou_client *c, const struct ou_request *rec,
                        enum ou_outcome outcome)
{
    char message[OU_REASON_SIZE + 256];
    const char *kind = outcome == OU_FAIL_TIMEOUT                                  ? "timeout"
                       : (outcome == OU_FAIL_HTTP || outcome == OU_FAIL_WAIT_LONG) ? "http"
                       : outcome == OU_FAIL_TRANSPORT                              ? "transport"
                                                                                   : "network";
    ou_request_message(rec, &c->transfer.opts, outcome, message, sizeof message);
    lua_pushstring(L, message);
    scrub_key(L, c);
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
    return client_error_return(L, c);
}

/* The body of a 2xx answer must be a UsageResponse page, whichever
 * transport brought it: no hole where a bucket or a result belongs, and no
 * more values than its size allows (one per OU_PAGE_BYTES_PER_VALUE bytes
 * of max_response_bytes; real pages take 17 or more bytes a value, while a
 * flood of {} would cost some 60 times its bytes in Lua memory). */
#define OU_PAGE_BYTES_PER_VALUE 16
static int decode_page(lua_State *L, struct ou_client *c, const struct ou_request *rec)
{
    const struct ou_response *r = &rec->resp;
    struct ou_decode_limits limits = {OU_DECODE_MAX_DEPTH, 0, 1};
    struct ou_decode_error derr = {0, {0}, 0};
    char message[512];
    int is_json = r->content_type[0] == '\0' || strstr(r->content_type, "json") != NULL;
    limits.max_values = (int64_t)(c->transfer.opts.max_body / OU_PAGE_BYTES_PER_VALUE);
    if (limits.max_values < 1)
        limits.max_values = 1;
    if (!ou_decode(L, r->body.data ? r->body.data : "", r->body.len, &limits, &derr)) {
        if (derr.page_error) {
            ou_error_push(L, "api", derr.message);
            ou_error_setint(L, "offset", (int64_t)derr.offset);
            add_response_fields(L, rec);
            return client_error_return(L, c);
        }
        snprintf(message, sizeof message, "%s at byte %zu of %zu%s%s%s", derr.message, derr.offset,
                 r->body.len, is_json ? "" : " (Content-Type was ", is_json ? "" : r->content_type,
                 is_json ? "" : ")");
        ou_error_push(L, "decode", message);
        ou_error_setint(L, "offset", (int64_t)derr.offset);
        add_response_fields(L, rec);
        return client_error_return(L, c);
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
    add_response_fields(L, rec);
    return client_error_return(L, c);
}

/* A client with a Lua transport is driven from Lua (openai_usage.transport):
 * libcurl's entry points refuse it with this. */
static int needs_libcurl(lua_State *L, const char *what)
{
    ou_error_push(L, "invalid_argument", "");
    lua_pushfstring(L,
                    "%s: this client has a Lua transport, which cannot run on a background thread or from C; "
                    "use client:usage() and the iterators, which fetch sequentially",
                    what);
    lua_setfield(L, -2, "message");
    return ou_error_return(L);
}

/* client:request(endpoint, params) -> page | nil, err */
static int client_request(lua_State *L)
{
    struct ou_client *c = check_open(L);
    enum ou_outcome outcome;
    lua_settop(L, 3);
    if (c->lua_transport)
        return needs_libcurl(L, "request");
    c->ready = 0;
    if (!build_url(L, c, 2, &c->rec.url))
        return ou_error_return(L);
    outcome = ou_transfer_get(&c->transfer, &c->rec);
    publish(L, c, &c->rec);
    if (outcome != OU_OK)
        return fail_outcome(L, c, &c->rec, outcome);
    return decode_page(L, c, &c->rec);
}

/* client:prefetch(endpoint, params) -> token | nil, err: validates now,
 * then starts the transfer on a thread and returns at once. */
static int client_prefetch(lua_State *L)
{
    struct ou_client *c = check_open(L);
    lua_settop(L, 3);
    if (c->lua_transport)
        return needs_libcurl(L, "prefetch");
    c->ready = 0;
    if (!build_url(L, c, 2, &c->rec.url))
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
    if (c->open)
        adopt_after_fork(c);
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
    publish(L, c, &c->rec);
    if (c->outcome != OU_OK)
        return fail_outcome(L, c, &c->rec, c->outcome);
    return decode_page(L, c, &c->rec);
}

/* client:cancel() stops a prefetch nobody will collect (a loop left early). */
static int client_cancel(lua_State *L)
{
    struct ou_client *c = luaL_checkudata(L, 1, OU_CLIENT_MT);
    if (c->open)
        adopt_after_fork(c);
    join_prefetch(c, 1);
    c->ready = 0;
    return 0;
}

/* --- a Lua transport ----------------------------------------------------
 * openai_usage.transport drives one request: transport_request builds what
 * the transport sends, the transport makes an attempt (Lua, so it may yield:
 * cosockets, coroutines), transport_answer judges it here with the same
 * retry policy as libcurl's loop, and the driver sleeps with the transport's
 * sleep when told to try again. */

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
    struct ou_client *c = check_open(L);
    const struct ou_transfer_opts *o = &c->transfer.opts;
    struct ou_request *rec;
    lua_settop(L, 3);
    if (!c->lua_transport)
        return luaL_error(L, "openai_usage: transport_request: this client has no transport");
    rec = lua_newuserdata(L, sizeof *rec);
    ou_request_init(rec);
    luaL_getmetatable(L, OU_REQUEST_MT);
    lua_setmetatable(L, -2);
    if (!build_url(L, c, 2, &rec->url))
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
    scrub_key(L, c);
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
    struct ou_client *c = check_open(L);
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
    publish(L, c, rec);
    if (outcome != OU_OK)
        return fail_outcome(L, c, rec, outcome);
    return decode_page(L, c, rec);
}

/* client:url(endpoint, params) -> the URL a request would GET | nil, err.
 * Pure computation: it never waits for a prefetch on the wire. */
static int client_url(lua_State *L)
{
    struct ou_client *c = check_usable(L);
    lua_settop(L, 3);
    if (!build_url(L, c, 2, &c->scratch))
        return ou_error_return(L);
    lua_pushlstring(L, c->scratch.data, c->scratch.len);
    return 1;
}

/* client:last_transfer() -> what the last request the calling coroutine
 * finished did (the client's last, if that coroutine finished none):
 * attempts, the delays slept between them, connections opened, bytes on
 * the wire. Never waits for a prefetch on the wire. */
static int client_last_transfer(lua_State *L)
{
    struct ou_client *c = check_usable(L);
    struct ou_request_stats stats = *stats_for_caller(L, c);
    const struct ou_request_stats *t = &stats;
    lua_createtable(L, 0, 8);
    ou_pushint64(L, t->attempts);
    lua_setfield(L, -2, "attempts");
    lua_createtable(L, t->attempts > 0 ? t->attempts - 1 : 0, 0);
    for (int i = 0; i + 1 < t->attempts && i < OU_MAX_RETRIES; i++) {
        lua_pushnumber(L, (lua_Number)t->delays[i]);
        lua_rawseti(L, -2, i + 1);
    }
    lua_setfield(L, -2, "delays");
    if (!c->lua_transport) { /* a transport does not tell */
        ou_pushint64(L, t->connects);
        lua_setfield(L, -2, "connections");
    }
    ou_pushint64(L, t->wire_bytes);
    lua_setfield(L, -2, "wire_bytes");
    ou_pushint64(L, (int64_t)t->body_bytes);
    lua_setfield(L, -2, "body_bytes");
    /* what the request held in C: its body and URL buffers */
    ou_pushint64(L, (int64_t)t->buffer_bytes);
    lua_setfield(L, -2, "buffer_bytes");
    ou_pushint64(L, t->status);
    lua_setfield(L, -2, "status");
    if (t->request_id[0]) {
        lua_pushstring(L, t->request_id);
        scrub_key(L, c);
        lua_setfield(L, -2, "request_id");
    }
    return 1;
}

static int client_close(lua_State *L)
{
    client_release(L, luaL_checkudata(L, 1, OU_CLIENT_MT));
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
    {"transport_request", client_transport_request},
    {"transport_answer", client_transport_answer},
    {"url", client_url},
    {"last_transfer", client_last_transfer},
    {"close", client_close},
    {NULL, NULL},
};

void ou_client_open(lua_State *L)
{
    luaL_newmetatable(L, OU_REQUEST_MT);
    lua_pushcfunction(L, record_gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);
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

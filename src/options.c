/* core.new: reads and checks the options (names, types, ranges, header
 * safety), then builds the client with a libcurl handle or for a Lua
 * transport. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "buf.h"
#include "client.h"
#include "curl_api.h"
#include "error.h"
#include "query.h"
#include "rules.h"

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
        ou_client_release(L, c);
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
            ou_client_release(L, c);
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
        ou_client_release(L, c);
        return ou_error_return(L);
    }
    return finish_new(L, c, base_url, format);
}

#include "query.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "error.h"

#define MAX_PARAMS 32

int ou_query_fail(lua_State *L, const char *param, const char *fmt, ...)
{
    char message[512];
    va_list ap;
    va_start(ap, fmt);
    /* clang-tidy 14 misreads va_start here */
    vsnprintf(message, sizeof message, fmt, ap); // NOLINT
    va_end(ap);
    ou_error_push(L, "invalid_argument", message);
    ou_error_setstring(L, "param", param);
    return 0;
}

/* A short, quoted rendering of the value at idx for messages. */
static const char *show(lua_State *L, int idx, char *out, size_t size)
{
    size_t len;
    const char *s;
    switch (lua_type(L, idx)) {
    case LUA_TSTRING:
        s = lua_tolstring(L, idx, &len);
        if (len > 60)
            snprintf(out, size, "\"%.57s...\"", s);
        else
            snprintf(out, size, "\"%s\"", s);
        break;
    case LUA_TNUMBER:
        lua_pushvalue(L, idx);
        snprintf(out, size, "%s", lua_tostring(L, -1));
        lua_pop(L, 1);
        break;
    default:
        snprintf(out, size, "a %s", luaL_typename(L, idx));
    }
    return out;
}

/* "a, b, c" of a NULL-terminated list, for messages. */
static const char *join(const char *const *values, char *out, size_t size)
{
    size_t used = 0;
    out[0] = '\0';
    for (size_t i = 0; values[i] && used < size; i++)
        used += (size_t)snprintf(out + used, size - used, "%s%s", i ? ", " : "", values[i]);
    return out;
}

static const char *join_widths(const struct ou_endpoint_rule *ep, char *out, size_t size)
{
    const char *names[16];
    size_t n = ep->nwidths < 15 ? ep->nwidths : 15;
    for (size_t i = 0; i < n; i++)
        names[i] = ep->widths[i].width;
    names[n] = NULL;
    return join(names, out, size);
}

static int in_list(const char *const *values, const char *s)
{
    for (size_t i = 0; values[i]; i++)
        if (strcmp(values[i], s) == 0)
            return 1;
    return 0;
}

static int check_names(lua_State *L, int params, const struct ou_endpoint_rule *ep)
{
    const char *names[MAX_PARAMS];
    for (size_t i = 0; i < ep->nparams; i++)
        names[i] = ep->params[i].name;
    lua_pushnil(L);
    while (lua_next(L, params)) {
        const char *name, *near;
        size_t i;
        lua_pop(L, 1);
        if (lua_type(L, -1) != LUA_TSTRING) {
            char shown[96];
            show(L, -1, shown, sizeof shown);
            return ou_query_fail(L, NULL, "parameter names must be strings, got %s", shown);
        }
        name = lua_tostring(L, -1);
        for (i = 0; i < ep->nparams; i++)
            if (strcmp(name, names[i]) == 0)
                break;
        if (i < ep->nparams)
            continue;
        near = ou_suggest(name, names, ep->nparams);
        if (near)
            return ou_query_fail(L, name, "unknown parameter \"%s\" for %s; did you mean \"%s\"?", name,
                                 ep->name, near);
        return ou_query_fail(L, name, "unknown parameter \"%s\" for %s", name, ep->name);
    }
    return 1;
}

static int check_time(lua_State *L, int idx, const struct ou_param_rule *rule, int64_t *out)
{
    char shown[96];
    if (!ou_toint64(L, idx, out))
        return ou_query_fail(L, rule->name, "%s: expected an integer number of Unix seconds, got %s",
                             rule->name, show(L, idx, shown, sizeof shown));
    if (*out < 0)
        return ou_query_fail(L, rule->name, "%s: %lld is before 1970 (Unix seconds must be >= 0)", rule->name,
                             (long long)*out);
    return 1;
}

/* A value of an enumerated list (the string at idx; where names it, e.g.
 * "sizes[2]"): a strict set refuses any other value; an open one sends it as
 * given, unless it is a near miss of a described value (a typo such as
 * 1024x1O24), which is refused with that value. */
static int check_value(lua_State *L, int idx, const struct ou_param_rule *rule, const char *where)
{
    char shown[96], allowed[512];
    const char *value = lua_tostring(L, idx), *near;
    if (!rule->values || in_list(rule->values, value))
        return 1;
    if (!rule->open)
        return ou_query_fail(L, rule->name, "%s: %s is not one of %s", where,
                             show(L, idx, shown, sizeof shown), join(rule->values, allowed, sizeof allowed));
    near = ou_near_miss(value, rule->values);
    if (near)
        return ou_query_fail(L, rule->name, "%s: %s is not one of the described values; did you mean \"%s\"?",
                             where, show(L, idx, shown, sizeof shown), near);
    return 1;
}

/* A list is one string or a sequence 1..n (n >= 1) of non-empty strings. */
static int check_list(lua_State *L, int idx, const struct ou_param_rule *rule)
{
    char shown[96], where[80];
    size_t n, entries = 0;
    if (lua_type(L, idx) == LUA_TSTRING) {
        if (ou_rawlen(L, idx) == 0)
            return ou_query_fail(L, rule->name, "%s: empty string", rule->name);
        return check_value(L, idx, rule, rule->name);
    }
    if (lua_type(L, idx) != LUA_TTABLE)
        return ou_query_fail(L, rule->name, "%s: expected a string or a list of strings, got %s", rule->name,
                             show(L, idx, shown, sizeof shown));
    n = ou_rawlen(L, idx);
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        lua_pop(L, 1);
        entries++;
    }
    if (n == 0)
        return ou_query_fail(L, rule->name,
                             "%s: expected a non-empty list of strings (leave %s out to apply no filter)",
                             rule->name, rule->name);
    if (entries != n)
        return ou_query_fail(
            L, rule->name, "%s: expected a list (a sequence 1..n), got a table with other keys", rule->name);
    for (size_t i = 1; i <= n; i++) {
        lua_rawgeti(L, idx, (int)i);
        if (lua_type(L, -1) != LUA_TSTRING)
            return ou_query_fail(L, rule->name, "%s[%zu]: expected a string, got %s", rule->name, i,
                                 show(L, -1, shown, sizeof shown));
        if (ou_rawlen(L, -1) == 0)
            return ou_query_fail(L, rule->name, "%s[%zu]: empty string", rule->name, i);
        snprintf(where, sizeof where, "%s[%zu]", rule->name, i);
        if (!check_value(L, -1, rule, where))
            return 0;
        lua_pop(L, 1);
    }
    return 1;
}

/* A path parameter (project_id): a non-empty string of at most 256 bytes,
 * not "." or ".." (a URL's dot segments would move the request to another
 * path); any other byte is percent-encoded into the path. */
static int check_path(lua_State *L, int idx, const struct ou_param_rule *rule)
{
    char shown[96];
    size_t len;
    const char *s;
    if (lua_type(L, idx) != LUA_TSTRING)
        return ou_query_fail(L, rule->name, "%s: expected a string (an id such as proj_abc), got %s",
                             rule->name, show(L, idx, shown, sizeof shown));
    s = lua_tolstring(L, idx, &len);
    if (len == 0 || len > 256)
        return ou_query_fail(L, rule->name, "%s: expected an id of 1 to 256 bytes, got %zu bytes", rule->name,
                             len);
    if (strcmp(s, ".") == 0 || strcmp(s, "..") == 0)
        return ou_query_fail(L, rule->name, "%s: %s is a path segment, not an id", rule->name,
                             show(L, idx, shown, sizeof shown));
    return 1;
}

static const struct ou_param_rule *param_named(const struct ou_endpoint_rule *ep, const char *name, size_t n)
{
    for (size_t i = 0; i < ep->nparams; i++)
        if (strlen(ep->params[i].name) == n && memcmp(ep->params[i].name, name, n) == 0)
            return &ep->params[i];
    return NULL;
}

int ou_query_escape(struct ou_buf *out, const char *s, size_t n)
{
    static const char hex[] = "0123456789ABCDEF";
    if (!ou_buf_reserve(out, n * 3))
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
            c == '.' || c == '_' || c == '~') {
            out->data[out->len++] = (char)c;
        } else {
            out->data[out->len++] = '%';
            out->data[out->len++] = hex[c >> 4];
            out->data[out->len++] = hex[c & 15];
        }
    }
    return 1;
}

/* mark is where this query starts in out: the first pair has no '&'. */
static void add_pair(lua_State *L, struct ou_buf *out, size_t mark, const char *name, const char *suffix,
                     const char *value, size_t len)
{
    int ok = (out->len == mark || ou_buf_addchar(out, '&')) && ou_buf_addstr(out, name) &&
             ou_buf_addstr(out, suffix) && ou_buf_addchar(out, '=') && ou_query_escape(out, value, len);
    if (!ok)
        luaL_error(L, "openai_usage: out of memory encoding the query");
}

static void encode_value(lua_State *L, int idx, const struct ou_param_rule *rule, enum ou_array_format fmt,
                         struct ou_buf *out, size_t mark)
{
    char number[32];
    int64_t v = 0;
    size_t len;
    const char *s;
    const char *suffix = fmt == OU_ARRAY_BRACKETS ? "[]" : "";
    switch (rule->type) {
    case OU_PARAM_TIME:
    case OU_PARAM_LIMIT:
        ou_toint64(L, idx, &v);
        len = (size_t)snprintf(number, sizeof number, "%lld", (long long)v);
        add_pair(L, out, mark, rule->name, "", number, len);
        break;
    case OU_PARAM_WIDTH:
    case OU_PARAM_CURSOR:
        s = lua_tolstring(L, idx, &len);
        add_pair(L, out, mark, rule->name, "", s, len);
        break;
    case OU_PARAM_BOOL:
        s = lua_toboolean(L, idx) ? "true" : "false";
        add_pair(L, out, mark, rule->name, "", s, strlen(s));
        break;
    case OU_PARAM_STRING:
        s = lua_tolstring(L, idx, &len);
        add_pair(L, out, mark, rule->name, "", s, len);
        break;
    case OU_PARAM_PATH: /* in the path (ou_query_path), not the query */
        break;
    case OU_PARAM_LIST:
        if (lua_type(L, idx) == LUA_TSTRING) {
            s = lua_tolstring(L, idx, &len);
            add_pair(L, out, mark, rule->name, suffix, s, len);
            break;
        }
        for (size_t i = 1, n = ou_rawlen(L, idx); i <= n; i++) {
            lua_rawgeti(L, idx, (int)i);
            s = lua_tolstring(L, -1, &len);
            add_pair(L, out, mark, rule->name, suffix, s, len);
            lua_pop(L, 1);
        }
        break;
    }
}

int ou_query_encode(lua_State *L, int params_idx, const struct ou_endpoint_rule *ep, enum ou_array_format fmt,
                    struct ou_buf *out)
{
    const struct ou_width_rule *width = NULL;
    const struct ou_param_rule *start_rule = NULL;
    int64_t start = 0, end = 0;
    int has_start = 0, limit_at = 0, base;
    size_t mark;
    char shown[96], allowed[256];

    params_idx = ou_absindex(L, params_idx);
    if (lua_isnoneornil(L, params_idx)) {
        lua_newtable(L);
        lua_replace(L, params_idx);
    }
    if (lua_type(L, params_idx) != LUA_TTABLE)
        return ou_query_fail(L, NULL, "params: expected a table, got %s",
                             show(L, params_idx, shown, sizeof shown));
    if (!check_names(L, params_idx, ep))
        return 0;

    luaL_checkstack(L, (int)ep->nparams + 8, "openai_usage: too many parameters");
    base = lua_gettop(L);
    for (size_t i = 0; i < ep->nparams; i++) {
        const struct ou_param_rule *rule = &ep->params[i];
        int idx = base + (int)i + 1;
        int64_t v = 0;
        lua_getfield(L, params_idx, rule->name);
        if (lua_isnil(L, idx)) {
            if (rule->required)
                return ou_query_fail(L, rule->name, "%s: required (%s)", rule->name, rule->doc);
            continue;
        }
        switch (rule->type) {
        case OU_PARAM_TIME:
            if (!check_time(L, idx, rule, &v))
                return 0;
            if (!has_start) {
                start = v, has_start = 1, start_rule = rule;
            } else {
                end = v;
                if (end <= start)
                    return ou_query_fail(L, rule->name, "%s: %lld must be after %s %lld", rule->name,
                                         (long long)end, start_rule->name, (long long)start);
            }
            break;
        case OU_PARAM_WIDTH:
            if (lua_type(L, idx) != LUA_TSTRING || !(width = ou_width_find(ep, lua_tostring(L, idx))))
                return ou_query_fail(L, rule->name, "%s: %s is not one of %s", rule->name,
                                     show(L, idx, shown, sizeof shown),
                                     join_widths(ep, allowed, sizeof allowed));
            break;
        case OU_PARAM_LIMIT:
            if (!ou_toint64(L, idx, &v))
                return ou_query_fail(L, rule->name, "%s: expected an integer, got %s", rule->name,
                                     show(L, idx, shown, sizeof shown));
            limit_at = idx;
            break;
        case OU_PARAM_CURSOR:
            if (lua_type(L, idx) != LUA_TSTRING || ou_rawlen(L, idx) == 0)
                return ou_query_fail(
                    L, rule->name, "%s: expected a non-empty cursor string (%s), got %s", rule->name,
                    ep->shape == OU_SHAPE_USAGE ? "next_page" : "an object id, a page's last_id",
                    show(L, idx, shown, sizeof shown));
            break;
        case OU_PARAM_STRING:
            if (lua_type(L, idx) != LUA_TSTRING || ou_rawlen(L, idx) == 0)
                return ou_query_fail(L, rule->name, "%s: expected a non-empty string, got %s", rule->name,
                                     show(L, idx, shown, sizeof shown));
            if (!check_value(L, idx, rule, rule->name))
                return 0;
            break;
        case OU_PARAM_PATH:
            if (!check_path(L, idx, rule))
                return 0;
            break;
        case OU_PARAM_LIST:
            if (!check_list(L, idx, rule))
                return 0;
            break;
        case OU_PARAM_BOOL:
            if (lua_type(L, idx) != LUA_TBOOLEAN)
                return ou_query_fail(L, rule->name, "%s: expected true or false, got %s", rule->name,
                                     show(L, idx, shown, sizeof shown));
            break;
        }
    }
    if (limit_at && ep->shape != OU_SHAPE_USAGE) {
        int64_t limit = 0;
        ou_toint64(L, limit_at, &limit);
        if (limit < 1 || limit > ep->max_limit)
            return ou_query_fail(L, "limit", "limit: %lld is out of range 1..%d for %s", (long long)limit,
                                 ep->max_limit, ep->name);
    } else if (limit_at) {
        int64_t limit = 0;
        if (!width)
            width = ou_width_find(ep, ep->default_width);
        ou_toint64(L, limit_at, &limit);
        if (limit < 1 || limit > width->max_limit)
            return ou_query_fail(L, "limit", "limit: %lld is out of range 1..%d for bucket_width %s",
                                 (long long)limit, width->max_limit, width->width);
    }

    mark = out->len;
    for (size_t i = 0; i < ep->nparams; i++)
        if (!lua_isnil(L, base + (int)i + 1))
            encode_value(L, base + (int)i + 1, &ep->params[i], fmt, out, mark);
    lua_settop(L, base);
    return 1;
}

int ou_query_path(lua_State *L, int params_idx, const struct ou_endpoint_rule *ep, struct ou_buf *out)
{
    const char *p = ep->path, *open;
    params_idx = ou_absindex(L, params_idx);
    while ((open = strchr(p, '{'))) {
        const char *close = strchr(open, '}');
        const struct ou_param_rule *rule =
            close ? param_named(ep, open + 1, (size_t)(close - open - 1)) : NULL;
        size_t len;
        const char *value;
        if (!rule) /* the generator pairs each {name} with its rule */
            return luaL_error(L, "openai_usage: %s: no rule for a parameter of its path", ep->name);
        if (!ou_buf_add(out, p, (size_t)(open - p)))
            luaL_error(L, "openai_usage: out of memory");
        if (lua_type(L, params_idx) != LUA_TTABLE)
            return ou_query_fail(L, rule->name, "%s: required (%s)", rule->name, rule->doc);
        lua_getfield(L, params_idx, rule->name);
        if (lua_isnil(L, -1)) {
            lua_pop(L, 1);
            return ou_query_fail(L, rule->name, "%s: required (%s)", rule->name, rule->doc);
        }
        if (!check_path(L, lua_gettop(L), rule)) {
            lua_remove(L, -2);
            return 0;
        }
        value = lua_tolstring(L, -1, &len);
        if (!ou_query_escape(out, value, len))
            luaL_error(L, "openai_usage: out of memory");
        lua_pop(L, 1);
        p = close + 1;
    }
    if (!ou_buf_addstr(out, p))
        luaL_error(L, "openai_usage: out of memory");
    return 1;
}

const struct ou_endpoint_rule *ou_query_endpoint(lua_State *L, int idx)
{
    const char *names[64];
    const struct ou_endpoint_rule *ep;
    const char *name, *near;
    size_t n = ou_nendpoints < 64 ? ou_nendpoints : 64;
    char shown[96];
    if (lua_type(L, idx) != LUA_TSTRING) {
        ou_query_fail(L, "endpoint", "endpoint: expected a name such as \"images\", got %s",
                      show(L, idx, shown, sizeof shown));
        return NULL;
    }
    name = lua_tostring(L, idx);
    if ((ep = ou_endpoint_find(name)))
        return ep;
    for (size_t i = 0; i < n; i++)
        names[i] = ou_endpoints[i].name;
    near = ou_suggest(name, names, n);
    if (near)
        ou_query_fail(L, "endpoint", "endpoint: unknown usage endpoint \"%s\"; did you mean \"%s\"?", name,
                      near);
    else
        ou_query_fail(L, "endpoint", "endpoint: unknown usage endpoint \"%s\"", name);
    return NULL;
}

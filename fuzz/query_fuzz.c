/* libFuzzer harness: bytes pick an endpoint (a usage or a directory one) and
 * become a params table (names from its rules or made up, values of every Lua
 * type) for ou_query_path and ou_query_encode. Either it is refused with an
 * error naming a parameter, or the path it writes is the endpoint's with each
 * {parameter} an escaped id, and the query holds only unreserved characters,
 * percent escapes and the pair syntax. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <lualib.h>

#include "../src/error.h"
#include "../src/query.h"

struct input {
    const uint8_t *p, *end;
};

static unsigned take(struct input *in)
{
    return in->p < in->end ? *in->p++ : 0;
}

static void push_string(lua_State *L, struct input *in)
{
    size_t n = take(in) % 24;
    if (n > (size_t)(in->end - in->p))
        n = (size_t)(in->end - in->p);
    lua_pushlstring(L, (const char *)in->p, n);
    in->p += n;
}

static void push_value(lua_State *L, struct input *in, const struct ou_param_rule *rule)
{
    static const char *const samples[] = {"1m",      "1h",         "1d", "model", "size",
                                          "256x256", "image.edit", "x",  ""};
    unsigned kind = take(in) % 8;
    int64_t v;
    switch (kind) {
    case 0:
        v = (int64_t)((uint64_t)take(in) << 24 | (uint64_t)take(in) << 8 | take(in)) - 100;
        lua_pushinteger(L, (lua_Integer)v);
        break;
    case 1:
        lua_pushnumber(L, (lua_Number)take(in) / 3.0);
        break;
    case 2:
        push_string(L, in);
        break;
    case 3:
        lua_pushstring(L, samples[take(in) % (sizeof samples / sizeof samples[0])]);
        break;
    case 4: {
        unsigned n = take(in) % 5;
        lua_createtable(L, (int)n, 0);
        for (unsigned i = 1; i <= n; i++) {
            if (take(in) % 4) {
                size_t nvalues = 0;
                while (rule && rule->values && rule->values[nvalues])
                    nvalues++;
                lua_pushstring(L, nvalues ? rule->values[take(in) % nvalues] : "id");
            } else
                push_string(L, in);
            lua_rawseti(L, -2, (int)i);
        }
        break;
    }
    case 5:
        lua_pushboolean(L, (int)(take(in) & 1));
        break;
    case 6:
        lua_newtable(L);
        lua_pushinteger(L, 1);
        lua_setfield(L, -2, "x");
        break;
    default:
        lua_pushinteger(L, (lua_Integer)(take(in) % 40));
    }
}

static int encode(lua_State *L)
{
    struct input *in = lua_touserdata(L, 1);
    unsigned pick_ep = take(in) % (unsigned)(ou_nendpoints + ou_ndirectory);
    const struct ou_endpoint_rule *ep =
        pick_ep < ou_nendpoints ? &ou_endpoints[pick_ep] : &ou_directory[pick_ep - ou_nendpoints];
    struct ou_buf *out = lua_touserdata(L, 2);
    int ok, params;
    lua_newtable(L);
    while (in->p < in->end) {
        unsigned pick = take(in);
        const struct ou_param_rule *rule = pick % 16 < ep->nparams ? &ep->params[pick % 16] : NULL;
        if (rule)
            lua_pushstring(L, rule->name);
        else if (pick & 1)
            push_string(L, in);
        else
            lua_pushinteger(L, (lua_Integer)(pick % 3 + 1));
        push_value(L, in, rule);
        lua_rawset(L, -3);
    }
    params = lua_gettop(L);
    ok = ou_query_path(L, params, ep, out) && ou_buf_addchar(out, '?') &&
         ou_query_encode(L, params, ep, (in->end - in->p) % 2 ? OU_ARRAY_REPEAT : OU_ARRAY_BRACKETS, out);
    lua_pushlightuserdata(L, (void *)ep);
    lua_pushboolean(L, ok);
    return 3;
}

static int allowed(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           strchr("-._~%&=[]", c);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static lua_State *L;
    struct input in = {data, data + size};
    struct ou_buf out = {0};
    if (!L) {
        L = luaL_newstate();
        /* the error values take openai_usage.errors' metatable (the Lua half,
         * required from the checkout, as make fuzz runs from its root) */
        luaL_openlibs(L);
        if (luaL_dostring(L, "package.path = 'lua/?.lua;' .. package.path") != LUA_OK)
            abort();
        ou_error_open(L);
    }
    lua_pushcfunction(L, encode);
    lua_pushlightuserdata(L, &in);
    lua_pushlightuserdata(L, &out);
    if (lua_pcall(L, 2, 3, 0) != LUA_OK)
        abort();
    if (lua_toboolean(L, -1)) {
        const struct ou_endpoint_rule *ep = lua_touserdata(L, -2);
        const char *query = memchr(out.data, '?', out.len);
        size_t at = query ? (size_t)(query - out.data) : out.len;
        /* the path: the endpoint's up to its first {parameter}, then unreserved bytes, escapes and '/' */
        size_t fixed = strcspn(ep->path, "{");
        if (!query || at < fixed || memcmp(out.data, ep->path, fixed) != 0)
            abort();
        for (size_t i = fixed; i < at; i++)
            if (!allowed(out.data[i]) && out.data[i] != '/')
                abort();
        for (size_t i = at + 1; i < out.len; i++)
            if (!allowed(out.data[i]))
                abort();
        if (ep->shape == OU_SHAPE_USAGE && strncmp(query + 1, "start_time=", 11) != 0)
            abort(); /* start_time is required and always first */
    } else {
        /* a refusal is an invalid_argument error with a message */
        lua_getfield(L, -3, "kind");
        if (!lua_isstring(L, -1) || strcmp(lua_tostring(L, -1), "invalid_argument") != 0)
            abort();
        lua_pop(L, 1);
    }
    lua_settop(L, 0);
    ou_buf_free(&out);
    lua_gc(L, LUA_GCSTEP, 0);
    return 0;
}

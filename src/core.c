/* The Lua-facing module openai_usage.core: client objects, decode, errors. */
#include <stdio.h>
#include <string.h>

#include "compat.h"
#include "decode.h"
#include "error.h"

#define OU_VERSION "0.1.0"

/* core.decode(text [, max_depth]) -> value | nil, err */
static int core_decode(lua_State *L)
{
    size_t len;
    const char *text = luaL_checklstring(L, 1, &len);
    int max_depth = (int)luaL_optinteger(L, 2, OU_DECODE_MAX_DEPTH);
    struct ou_decode_error derr;
    if (ou_decode(L, text, len, max_depth, &derr))
        return 1;
    ou_error_push(L, "decode", derr.message);
    ou_error_setint(L, "offset", (int64_t)derr.offset);
    return ou_error_return(L);
}

static const luaL_Reg core_functions[] = {
    {"decode", core_decode},
    {"error", ou_error_new_lua},
    {NULL, NULL},
};

OU_EXPORT int luaopen_openai_usage_core(lua_State *L);
OU_EXPORT int luaopen_openai_usage_core(lua_State *L)
{
    ou_error_open(L);
    ou_newlib(L, core_functions);
    lua_pushliteral(L, OU_VERSION);
    lua_setfield(L, -2, "version");
    return 1;
}

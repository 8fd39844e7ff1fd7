#include "error.h"

#include <string.h>

void ou_error_push(lua_State *L, const char *kind, const char *message)
{
    lua_createtable(L, 0, 6);
    lua_pushstring(L, kind);
    lua_setfield(L, -2, "kind");
    lua_pushstring(L, message);
    lua_setfield(L, -2, "message");
    luaL_getmetatable(L, OU_ERROR_MT);
    lua_setmetatable(L, -2);
}

void ou_error_setstring(lua_State *L, const char *key, const char *value)
{
    if (!value)
        return;
    lua_pushstring(L, value);
    lua_setfield(L, -2, key);
}

void ou_error_setint(lua_State *L, const char *key, int64_t value)
{
    ou_pushint64(L, value);
    lua_setfield(L, -2, key);
}

void ou_error_setnumber(lua_State *L, const char *key, double value)
{
    lua_pushnumber(L, (lua_Number)value);
    lua_setfield(L, -2, key);
}

int ou_error_return(lua_State *L)
{
    lua_pushnil(L);
    lua_insert(L, -2);
    return 2;
}

/* core.error{kind=..., message=..., ...}: lets the Lua layer raise errors of
 * the same shape (a repeated cursor, a page with has_more and no cursor). */
int ou_error_new_lua(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_getfield(L, 1, "kind");
    if (lua_type(L, -1) != LUA_TSTRING)
        return luaL_argerror(L, 1, "error needs a string kind");
    lua_pop(L, 1);
    lua_settop(L, 1);
    luaL_getmetatable(L, OU_ERROR_MT);
    lua_setmetatable(L, 1);
    return 1;
}

void ou_error_open(lua_State *L)
{
    /* One error value for the whole library: the metatable of
     * openai_usage.errors, the pure-Lua module the report steps use too, so
     * there is one __tostring (and one escaping of what it prints). */
    lua_getglobal(L, "require");
    lua_pushliteral(L, "openai_usage.errors");
    if (lua_pcall(L, 1, 1, 0) != 0)
        lua_error(L); /* the Lua half of the module is not on the path */
    lua_getfield(L, -1, "metatable");
    if (lua_type(L, -1) != LUA_TTABLE)
        luaL_error(L, "openai_usage.errors has no metatable (a mismatched install?)");
    lua_setfield(L, LUA_REGISTRYINDEX, OU_ERROR_MT);
    lua_pop(L, 1);
}

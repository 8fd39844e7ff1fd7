#include "error.h"

#include <stdio.h>
#include <string.h>

static int error_tostring(lua_State *L)
{
    luaL_Buffer b;
    const char *kind, *message;
    luaL_checktype(L, 1, LUA_TTABLE);
    luaL_buffinit(L, &b);
    lua_getfield(L, 1, "kind");
    kind = lua_tostring(L, -1);
    lua_getfield(L, 1, "message");
    message = lua_tostring(L, -1);
    luaL_addstring(&b, "openai_usage: ");
    luaL_addstring(&b, kind ? kind : "error");
    lua_getfield(L, 1, "status");
    if (lua_type(L, -1) == LUA_TNUMBER) {
        int64_t status = 0;
        char num[32];
        ou_toint64(L, -1, &status);
        snprintf(num, sizeof num, " %lld", (long long)status);
        luaL_addstring(&b, num);
    }
    lua_pop(L, 1);
    lua_getfield(L, 1, "code");
    if (lua_type(L, -1) == LUA_TSTRING) {
        luaL_addstring(&b, " (");
        luaL_addstring(&b, lua_tostring(L, -1));
        luaL_addstring(&b, ")");
    }
    lua_pop(L, 1);
    luaL_addstring(&b, ": ");
    /* one line: fold any CR/LF a server put in its message */
    for (const char *p = message ? message : "unknown error"; *p; p++)
        luaL_addchar(&b, (*p == '\n' || *p == '\r') ? ' ' : *p);
    lua_getfield(L, 1, "request_id");
    if (lua_type(L, -1) == LUA_TSTRING) {
        luaL_addstring(&b, " [request_id ");
        luaL_addstring(&b, lua_tostring(L, -1));
        luaL_addstring(&b, "]");
    }
    lua_pop(L, 1);
    luaL_pushresult(&b);
    return 1;
}

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
    if (luaL_newmetatable(L, OU_ERROR_MT)) {
        lua_pushcfunction(L, error_tostring);
        lua_setfield(L, -2, "__tostring");
        lua_pushliteral(L, "openai_usage.error");
        lua_setfield(L, -2, "__name");
    }
    lua_pop(L, 1);
}

/* The few bridges between Lua 5.1/LuaJIT and 5.3/5.4. Nothing else in the
 * tree tests LUA_VERSION_NUM. */
#ifndef OU_COMPAT_H
#define OU_COMPAT_H

#include <stdint.h>

#include <lauxlib.h>
#include <lua.h>

#if defined(__GNUC__)
#define OU_EXPORT __attribute__((visibility("default")))
#else
#define OU_EXPORT
#endif

#if LUA_VERSION_NUM < 502
#define ou_rawlen(L, i) lua_objlen((L), (i))
#define ou_setfuncs(L, l) luaL_register((L), NULL, (l))
#define ou_newlib(L, l) (lua_newtable(L), luaL_register((L), NULL, (l)))
#define ou_absindex(L, i) ((i) > 0 || (i) <= LUA_REGISTRYINDEX ? (i) : lua_gettop(L) + (i) + 1)
#else
#define ou_rawlen(L, i) lua_rawlen((L), (i))
#define ou_setfuncs(L, l) luaL_setfuncs((L), (l), 0)
#define ou_newlib(L, l) luaL_newlib((L), (l))
#define ou_absindex(L, i) lua_absindex((L), (i))
#endif

/* Lua 5.3+ has a real integer subtype; on 5.1/LuaJIT a number is a double,
 * exact only up to 2^53 (documented in README). */
#if LUA_VERSION_NUM >= 503
static inline void ou_pushint64(lua_State *L, int64_t v)
{
    lua_pushinteger(L, (lua_Integer)v);
}
static inline int ou_isinteger(lua_State *L, int i)
{
    return lua_isinteger(L, i);
}
#else
static inline void ou_pushint64(lua_State *L, int64_t v)
{
    lua_pushnumber(L, (lua_Number)v);
}
static inline int ou_isinteger(lua_State *L, int i)
{
    lua_Number n;
    if (lua_type(L, i) != LUA_TNUMBER)
        return 0;
    n = lua_tonumber(L, i);
    return n == (lua_Number)(int64_t)n && n >= -9007199254740992.0 && n <= 9007199254740992.0;
}
#endif

/* Reads a number that holds a whole value into *out; 0 if it is not one. */
static inline int ou_toint64(lua_State *L, int i, int64_t *out)
{
    lua_Number n;
    if (lua_type(L, i) != LUA_TNUMBER)
        return 0;
#if LUA_VERSION_NUM >= 503
    if (lua_isinteger(L, i)) {
        *out = (int64_t)lua_tointeger(L, i);
        return 1;
    }
#endif
    n = lua_tonumber(L, i);
    if (!(n >= -9223372036854775808.0 && n < 9223372036854775808.0) || n != (lua_Number)(int64_t)n)
        return 0;
    *out = (int64_t)n;
    return 1;
}

#endif

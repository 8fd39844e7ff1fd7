/* A minimal Lua 5.4 interpreter (`lua_host SCRIPT ARGS...`, like `lua5.4
 * SCRIPT ARGS...`), for make check-tsan: built with ThreadSanitizer, it
 * carries the runtime itself, since preloading it into Debian's lua5.4 also
 * preloads it into every shell the suite starts, and sh crashes under it. */
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <stdio.h>

static int traceback(lua_State *L)
{
    luaL_traceback(L, L, lua_tostring(L, 1), 1);
    return 1;
}

int main(int argc, char **argv)
{
    lua_State *L;
    int status;
    if (argc < 2) {
        fprintf(stderr, "usage: lua_host SCRIPT [ARGS...]\n");
        return 2;
    }
    L = luaL_newstate();
    if (!L)
        return 1;
    luaL_openlibs(L);
    /* arg as lua.c makes it: arg[0] the script, arg[1..] its arguments */
    lua_createtable(L, argc - 2, 2);
    for (int i = 0; i < argc; i++) {
        lua_pushstring(L, argv[i]);
        lua_rawseti(L, -2, i - 1);
    }
    lua_setglobal(L, "arg");
    lua_pushcfunction(L, traceback);
    status = luaL_loadfile(L, argv[1]);
    if (status == LUA_OK) {
        for (int i = 2; i < argc; i++)
            lua_pushstring(L, argv[i]);
        status = lua_pcall(L, argc - 2, 0, 1);
    }
    if (status != LUA_OK)
        fprintf(stderr, "lua_host: %s\n", lua_tostring(L, -1));
    lua_close(L);
    return status == LUA_OK ? 0 : 1;
}

/* libFuzzer harness: any bytes through ou_decode. It must return a value or
 * an error whose offset lies within the input, leave the Lua stack as it
 * found it, and never crash, hang or leak (ASan/UBSan/LSan watch). */
#include <stdint.h>
#include <stdlib.h>

#include <lualib.h>

#include "../src/decode.h"

struct call {
    const uint8_t *data;
    size_t size;
    int ok;
    struct ou_decode_error err;
};

static int decode_in_protected_call(lua_State *L)
{
    struct call *c = lua_touserdata(L, 1);
    /* odd lengths as the client decodes a page (hole checks, a value
     * budget), even ones as usage.decode does any JSON */
    struct ou_decode_limits limits = {OU_DECODE_MAX_DEPTH, 0, 0};
    if (c->size % 2) {
        limits.max_values = 1 << 16;
        limits.page = 1;
    }
    c->ok = ou_decode(L, (const char *)c->data, c->size, &limits, &c->err);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static lua_State *L;
    static unsigned runs;
    struct call c = {data, size, 0, {0, {0}, 0}};
    int top;
    if (!L)
        L = luaL_newstate();
    top = lua_gettop(L);
    lua_pushcfunction(L, decode_in_protected_call);
    lua_pushlightuserdata(L, &c);
    if (lua_pcall(L, 1, 0, 0) != LUA_OK)
        abort(); /* only memory errors may raise, and there is memory */
    if (lua_gettop(L) != top)
        abort();
    if (!c.ok && (c.err.offset > size || c.err.message[0] == '\0'))
        abort();
    if (++runs % 256 == 0)
        lua_gc(L, LUA_GCCOLLECT, 0);
    return 0;
}

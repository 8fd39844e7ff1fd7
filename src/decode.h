/* JSON text -> Lua tables in one pass, shaped for UsageResponse pages. */
#ifndef OU_DECODE_H
#define OU_DECODE_H

#include <stddef.h>

#include "compat.h"

#define OU_DECODE_MAX_DEPTH 512
/* No depth limit above this is honoured: deeper recursion would risk the C stack. */
#define OU_DECODE_DEPTH_CEILING 4096

struct ou_decode_error {
    size_t offset;     /* 0-based byte offset in the text where decoding stopped */
    char message[256]; /* what was wrong, e.g. "expected ':' after object key" */
};

/* Decodes len bytes of JSON and pushes exactly one value (returns 1), or
 * pushes nothing, fills *err and returns 0. May raise a Lua memory error;
 * owns no C allocation across Lua calls, so that never leaks. */
int ou_decode(lua_State *L, const char *text, size_t len, int max_depth, struct ou_decode_error *err);

#endif

/* JSON text -> Lua tables in one pass, shaped for UsageResponse pages. */
#ifndef OU_DECODE_H
#define OU_DECODE_H

#include <stddef.h>
#include <stdint.h>

#include "compat.h"

#define OU_DECODE_MAX_DEPTH 512
/* The deepest nesting a caller may ask for. Containers are decoded without C
 * recursion (a frame a level, in a Lua-owned block past the first few), so
 * the C stack a decode takes does not grow with depth; the ceiling bounds
 * the Lua stack (one slot a level: Lua 5.1 and LuaJIT give a C function
 * 8000) and the frames' memory. */
#define OU_DECODE_DEPTH_CEILING 4096

/* What a table costs of a value budget: a Lua table's header weighs about
 * four values' slots, so a flood of {} is bounded like one of 0. */
#define OU_DECODE_TABLE_VALUES 4

#define OU_DECODE_PAGE 1
#define OU_DECODE_LIST 2

/* What a decode may make of the text. */
struct ou_decode_limits {
    int max_depth;      /* 1..OU_DECODE_DEPTH_CEILING; 0 for OU_DECODE_MAX_DEPTH */
    int64_t max_values; /* values it may create (strings, numbers, booleans;
                         * a table counts as OU_DECODE_TABLE_VALUES, and the
                         * slots it was presized with but never filled count
                         * too); 0 for no limit */
    int page;           /* OU_DECODE_PAGE: the text must be a UsageResponse page: a
                         * null where a bucket or a result belongs is an error
                         * (page_error); OU_DECODE_LIST: a directory list, whose
                         * "data" holds an object at every index; 0: any JSON */
};

struct ou_decode_error {
    size_t offset;     /* 0-based byte offset in the text where decoding stopped */
    char message[256]; /* what was wrong, e.g. "expected ':' after object key" */
    int page_error;    /* 1 when the text is JSON but not a usage page (a hole) */
};

/* Decodes len bytes of JSON and pushes exactly one value (returns 1), or
 * pushes nothing, fills *err and returns 0. May raise a Lua memory error;
 * owns no C allocation across Lua calls, so that never leaks. */
int ou_decode(lua_State *L, const char *text, size_t len, const struct ou_decode_limits *limits,
              struct ou_decode_error *err);

#endif

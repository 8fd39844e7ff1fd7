/* Decodes JSON nested to the depth ceiling on a thread whose stack is
 * 128 KiB (musl's default for a new thread), the way a host that runs Lua
 * on its own threads would; prints the depth decoded, or the error.
 *   decode_thread [STACK_KIB]   (spec/decode_spec.lua builds and runs it) */
#include <lauxlib.h>
#include <lualib.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../src/decode.h"

struct job {
    char *text;
    size_t len;
    int depth;
    char error[300];
};

static int decode_call(lua_State *L)
{
    struct job *job = lua_touserdata(L, 1);
    struct ou_decode_limits limits = {OU_DECODE_DEPTH_CEILING, 0, 0};
    struct ou_decode_error err = {0, {0}, 0};
    if (!ou_decode(L, job->text, job->len, &limits, &err)) {
        snprintf(job->error, sizeof job->error, "%s at byte %zu", err.message, err.offset);
        return 0;
    }
    /* count the levels: t[1][1]... */
    for (job->depth = 0; lua_type(L, -1) == LUA_TTABLE; job->depth++)
        lua_rawgeti(L, -1, 1);
    return 0;
}

static void *run(void *arg)
{
    struct job *job = arg;
    lua_State *L = luaL_newstate();
    if (!L)
        return NULL;
    lua_pushcfunction(L, decode_call);
    lua_pushlightuserdata(L, job);
    if (lua_pcall(L, 1, 0, 0) != 0)
        snprintf(job->error, sizeof job->error, "%s", lua_tostring(L, -1));
    lua_close(L);
    return NULL;
}

int main(int argc, char **argv)
{
    size_t kib = argc > 1 ? (size_t)atoi(argv[1]) : 128, n = OU_DECODE_DEPTH_CEILING;
    struct job job = {NULL, 2 * n, 0, {0}};
    pthread_attr_t attr;
    pthread_t thread;
    job.text = malloc(job.len);
    if (!job.text)
        return 2;
    memset(job.text, '[', n);
    memset(job.text + n, ']', n);
    pthread_attr_init(&attr);
    if (pthread_attr_setstacksize(&attr, kib * 1024) != 0 || pthread_create(&thread, &attr, run, &job) != 0)
        return 2;
    pthread_join(thread, NULL);
    free(job.text);
    if (job.error[0]) {
        printf("error: %s\n", job.error);
        return 1;
    }
    printf("%d\n", job.depth);
    return 0;
}

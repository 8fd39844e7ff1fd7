/* Two threads, each with a Lua state of its own, each requiring the module
 * and making a client and a request at the same moment: the first load of
 * libcurl races unless it is done once (pthread_once in src/curl_api.c).
 * spec/threads_spec.lua builds and runs it (under ThreadSanitizer in make
 * check-tsan). usage: two_states BASE_URL KEY START END; LUA_PATH and
 * LUA_CPATH find the module. Prints one line per thread; exits 0 when
 * both got their page. */
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

static const char *const chunk =
    "local base_url, key, start, stop = ...\n"
    "local usage = require 'openai_usage'\n"
    "local client = assert(usage.new { base_url = base_url, api_key = key, max_retries = 0 })\n"
    "local page = assert(client:images { start_time = tonumber(start), end_time = tonumber(stop) })\n"
    "local first = page.data[1].start_time\n"
    "client:close()\n"
    "return first\n";

static const char *args[4];
static pthread_barrier_t together;

struct outcome {
    char text[512];
    int ok;
};

static void *run(void *arg)
{
    struct outcome *out = arg;
    lua_State *L = luaL_newstate();
    if (!L) {
        snprintf(out->text, sizeof out->text, "no Lua state");
        return NULL;
    }
    luaL_openlibs(L);
    pthread_barrier_wait(&together); /* both start at once */
    if (luaL_loadstring(L, chunk) != 0) {
        snprintf(out->text, sizeof out->text, "load: %s", lua_tostring(L, -1));
    } else {
        for (int i = 0; i < 4; i++)
            lua_pushstring(L, args[i]);
        if (lua_pcall(L, 4, 1, 0) != 0) {
            snprintf(out->text, sizeof out->text, "error: %s", lua_tostring(L, -1));
        } else {
            snprintf(out->text, sizeof out->text, "page from %s", lua_tostring(L, -1));
            out->ok = strcmp(lua_tostring(L, -1), args[2]) == 0;
        }
    }
    lua_close(L);
    return NULL;
}

int main(int argc, char **argv)
{
    pthread_t threads[2];
    struct outcome outcomes[2];
    int ok = 1;
    if (argc != 5) {
        fprintf(stderr, "usage: two_states BASE_URL KEY START END\n");
        return 2;
    }
    for (int i = 0; i < 4; i++)
        args[i] = argv[i + 1];
    memset(outcomes, 0, sizeof outcomes);
    pthread_barrier_init(&together, NULL, 2);
    for (int i = 0; i < 2; i++)
        pthread_create(&threads[i], NULL, run, &outcomes[i]);
    for (int i = 0; i < 2; i++) {
        pthread_join(threads[i], NULL);
        printf("thread %d: %s\n", i + 1, outcomes[i].text);
        ok = ok && outcomes[i].ok;
    }
    pthread_barrier_destroy(&together);
    return ok ? 0 : 1;
}

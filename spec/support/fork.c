/* A tiny Lua module for the specs: fork(), waitpid with a deadline and
 * _exit, which plain Lua lacks. spec/support/process.lua compiles it. */
#include <errno.h>
#include <lauxlib.h>
#include <lua.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* fork() -> pid in the parent, 0 in the child */
static int l_fork(lua_State *L)
{
    pid_t pid = fork();
    if (pid < 0)
        return luaL_error(L, "fork: %s", "failed");
    lua_pushinteger(L, (lua_Integer)pid);
    return 1;
}

/* wait(pid, seconds) -> exit code, or nil, "timeout" (the child is then
 * killed) or nil, "signal N" */
static int l_wait(lua_State *L)
{
    pid_t pid = (pid_t)luaL_checkinteger(L, 1);
    double limit = luaL_checknumber(L, 2);
    struct timespec slice = {0, 10 * 1000 * 1000};
    int status;
    for (double waited = 0;; waited += 0.01) {
        pid_t got = waitpid(pid, &status, WNOHANG);
        if (got == pid)
            break;
        if (got < 0 && errno != EINTR)
            return luaL_error(L, "waitpid failed");
        if (waited > limit) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            lua_pushnil(L);
            lua_pushliteral(L, "timeout");
            return 2;
        }
        nanosleep(&slice, NULL);
    }
    if (WIFEXITED(status)) {
        lua_pushinteger(L, WEXITSTATUS(status));
        return 1;
    }
    lua_pushnil(L);
    lua_pushfstring(L, "signal %d", WIFSIGNALED(status) ? WTERMSIG(status) : -1);
    return 2;
}

/* _exit(code): ends a child without running the parent's atexit work */
static int l_exit(lua_State *L)
{
    _exit((int)luaL_optinteger(L, 1, 0));
    return 0;
}

int luaopen_ou_fork(lua_State *L);
int luaopen_ou_fork(lua_State *L)
{
    lua_newtable(L);
    lua_pushcfunction(L, l_fork);
    lua_setfield(L, -2, "fork");
    lua_pushcfunction(L, l_wait);
    lua_setfield(L, -2, "wait");
    lua_pushcfunction(L, l_exit);
    lua_setfield(L, -2, "_exit");
    return 1;
}

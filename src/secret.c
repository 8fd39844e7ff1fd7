/* Secrets from outside the process: see secret.h. */
#include "secret.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "retry.h"

extern char **environ;

static int fail(char *err, size_t errlen, int errnum, const char *fmt, ...)
{
    va_list ap;
    size_t n;
    va_start(ap, fmt);
    /* clang-tidy 14 misreads va_start here, as in query.c */
    vsnprintf(err, errlen, fmt, ap); // NOLINT
    va_end(ap);
    n = strlen(err);
    if (errnum && n < errlen)
        snprintf(err + n, errlen - n, ": %s", strerror(errnum));
    return 0;
}

int ou_secret_read_file(const char *path, size_t max, struct ou_secret_file *file, struct ou_buf *text,
                        char *err, size_t errlen)
{
    struct stat link, st;
    int fd, flags;
    memset(file, 0, sizeof *file);
    file->is_link = lstat(path, &link) == 0 && S_ISLNK(link.st_mode);
    /* O_NONBLOCK: a FIFO planted at the path must not hang the open */
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0)
        return fail(err, errlen, errno, "cannot open %s", path);
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return fail(err, errlen, e, "cannot stat %s", path);
    }
    file->regular = S_ISREG(st.st_mode);
    file->mode = (unsigned)(st.st_mode & 07777);
    file->uid = (long)st.st_uid;
    file->euid = (long)geteuid();
    if (!file->regular) {
        close(fd);
        return 1;
    }
    if ((unsigned long long)st.st_size > (unsigned long long)max) {
        close(fd);
        return fail(err, errlen, 0, "%s is larger than %zu bytes", path, max);
    }
    flags = fcntl(fd, F_GETFL);
    if (flags >= 0)
        (void)fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
    ou_buf_clear(text);
    /* room for the whole file at once: no realloc leaves a copy behind */
    if (!ou_buf_reserve(text, (size_t)st.st_size + 4096)) {
        close(fd);
        return fail(err, errlen, 0, "out of memory reading %s", path);
    }
    for (;;) {
        ssize_t n;
        if (!ou_buf_reserve(text, 4096)) {
            close(fd);
            return fail(err, errlen, 0, "out of memory reading %s", path);
        }
        n = read(fd, text->data + text->len, 4096);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            int e = errno;
            close(fd);
            return fail(err, errlen, e, "cannot read %s", path);
        }
        if (n == 0)
            break;
        text->len += (size_t)n;
        if (text->len > max) {
            close(fd);
            return fail(err, errlen, 0, "%s is larger than %zu bytes", path, max);
        }
    }
    close(fd);
    return 1;
}

/* Appends what fd (non-blocking) has to b (up to max bytes kept; the rest is
 * dropped). b's room was reserved up front, so a key is never left behind by
 * a realloc. Returns 1 when bytes were read, -1 when none are there now, 0
 * at its end or on an error. */
static int drain(int fd, struct ou_buf *b, size_t max)
{
    char chunk[4096];
    ssize_t n = read(fd, chunk, sizeof chunk);
    if (n < 0 && (errno == EINTR || errno == EAGAIN))
        return -1;
    if (n <= 0)
        return 0;
    if (b->len < max) {
        size_t keep = (size_t)n < max - b->len ? (size_t)n : max - b->len;
        memcpy(b->data + b->len, chunk, keep);
        b->len += keep;
    }
    ou_wipe(chunk, sizeof chunk);
    return 1;
}

static void close_pair(int fds[2])
{
    if (fds[0] >= 0)
        close(fds[0]);
    if (fds[1] >= 0)
        close(fds[1]);
    fds[0] = fds[1] = -1;
}

static int spawn(char *const argv[], int out[2], int errs[2], pid_t *pid, char *err, size_t errlen)
{
    posix_spawn_file_actions_t actions;
    int rc;
    if (posix_spawn_file_actions_init(&actions) != 0)
        return fail(err, errlen, errno, "cannot run %s", argv[0]);
    rc = posix_spawn_file_actions_adddup2(&actions, out[1], 1);
    if (rc == 0)
        rc = posix_spawn_file_actions_adddup2(&actions, errs[1], 2);
    if (rc == 0)
        rc = posix_spawnp(pid, argv[0], &actions, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&actions);
    if (rc != 0)
        return fail(err, errlen, rc, "cannot run %s", argv[0]);
    return 1;
}

/* Reads what is left in the pipes without waiting (the command has ended;
 * a process it left behind may hold them open). */
static void drain_rest(struct pollfd fds[2], struct ou_secret_run *run, size_t out_max, size_t err_max)
{
    while (fds[0].fd >= 0 && drain(fds[0].fd, &run->out, out_max) == 1)
        ;
    while (fds[1].fd >= 0 && drain(fds[1].fd, &run->errs, err_max) == 1)
        ;
}

int ou_secret_run(char *const argv[], size_t out_max, size_t err_max, double timeout,
                  struct ou_secret_run *run, char *err, size_t errlen)
{
    int out[2] = {-1, -1}, errs[2] = {-1, -1};
    struct pollfd fds[2];
    pid_t pid = -1;
    int wstatus = 0, reaped = 0;
    double deadline = timeout > 0 ? ou_monotonic() + timeout : 0;
    memset(run, 0, sizeof *run);
    if (!argv[0] || !argv[0][0])
        return fail(err, errlen, 0, "no command to run");
    if (!ou_buf_reserve(&run->out, out_max) || !ou_buf_reserve(&run->errs, err_max)) {
        ou_secret_run_free(run);
        return fail(err, errlen, 0, "out of memory");
    }
    if (pipe2(out, O_CLOEXEC) != 0 || pipe2(errs, O_CLOEXEC) != 0) {
        int e = errno;
        close_pair(out);
        close_pair(errs);
        ou_secret_run_free(run);
        return fail(err, errlen, e, "cannot run %s", argv[0]);
    }
    if (!spawn(argv, out, errs, &pid, err, errlen)) {
        close_pair(out);
        close_pair(errs);
        ou_secret_run_free(run);
        return 0;
    }
    close(out[1]);
    close(errs[1]);
    out[1] = errs[1] = -1;
    (void)fcntl(out[0], F_SETFL, O_NONBLOCK);
    (void)fcntl(errs[0], F_SETFL, O_NONBLOCK);
    fds[0].fd = out[0];
    fds[1].fd = errs[0];
    fds[0].events = fds[1].events = POLLIN;
    for (;;) {
        /* a poll of 100 ms at most, so a caught Ctrl-C or the deadline stops
         * the command, and its end is seen even when a process it started
         * keeps its stdout open */
        int ready = 0;
        pid_t ended;
        if (fds[0].fd >= 0 || fds[1].fd >= 0)
            ready = poll(fds, 2, 100);
        else
            ou_sleep(0.01, NULL);
        for (int i = 0; ready > 0 && i < 2; i++) {
            if (fds[i].fd >= 0 && fds[i].revents &&
                !drain(fds[i].fd, i == 0 ? &run->out : &run->errs, i == 0 ? out_max : err_max))
                fds[i].fd = -1;
        }
        ended = waitpid(pid, &wstatus, WNOHANG);
        if (ended == pid || (ended < 0 && errno != EINTR)) {
            /* reaped elsewhere (ECHILD): ended, its status unknown */
            if (ended < 0)
                wstatus = -1;
            reaped = 1;
            drain_rest(fds, run, out_max, err_max);
            break;
        }
        if (ou_interrupted() || (deadline > 0 && ou_monotonic() > deadline)) {
            run->interrupted = ou_interrupted();
            run->timed_out = !run->interrupted;
            kill(pid, SIGKILL);
            break;
        }
    }
    close_pair(out);
    close_pair(errs);
    while (!reaped && waitpid(pid, &wstatus, 0) < 0) {
        if (errno != EINTR) {
            wstatus = -1;
            break;
        }
    }
    /* -1: reaped elsewhere, neither exited nor signalled as far as we know */
    if (wstatus != -1 && WIFEXITED(wstatus)) {
        run->exited = 1;
        run->status = WEXITSTATUS(wstatus);
    } else if (wstatus != -1 && WIFSIGNALED(wstatus)) {
        run->signal = WTERMSIG(wstatus);
    }
    return 1;
}

void ou_secret_run_free(struct ou_secret_run *run)
{
    if (run->out.data)
        ou_wipe(run->out.data, run->out.cap);
    ou_buf_free(&run->out);
    ou_buf_free(&run->errs);
}

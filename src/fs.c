/* Files the library writes: see fs.h. Plain C over paths and bytes; the Lua
 * binding is in core.c. */
#include "fs.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* symlinks followed before giving up, as the kernel's own limit */
#define OU_FS_MAX_LINKS 40

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

/* Splits path into its directory (dir, "." when none) and last name. */
static int split_path(const char *path, char *dir, size_t dirlen, const char **base)
{
    const char *slash = strrchr(path, '/');
    size_t n;
    if (!slash) {
        *base = path;
        return snprintf(dir, dirlen, ".") < (int)dirlen;
    }
    *base = slash + 1;
    n = slash == path ? 1 : (size_t)(slash - path);
    if (n >= dirlen)
        return 0;
    memcpy(dir, path, n);
    dir[n] = '\0';
    return 1;
}

/* The file a write to path lands in: path itself, or the end of its chain of
 * symlinks (which may not exist yet, as with a shell's `>`). */
static int resolve_target(const char *path, char *out, size_t outlen, char *err, size_t errlen)
{
    char link[PATH_MAX], dir[PATH_MAX];
    const char *base;
    struct stat st;
    if (snprintf(out, outlen, "%s", path) >= (int)outlen)
        return fail(err, errlen, ENAMETOOLONG, "cannot write %s", path);
    for (int hops = 0; hops <= OU_FS_MAX_LINKS; hops++) {
        ssize_t n;
        if (lstat(out, &st) != 0 || !S_ISLNK(st.st_mode))
            return 1;
        n = readlink(out, link, sizeof link - 1);
        if (n < 0)
            return fail(err, errlen, errno, "cannot write %s", path);
        link[n] = '\0';
        if (link[0] == '/') {
            snprintf(out, outlen, "%s", link);
        } else {
            if (!split_path(out, dir, sizeof dir, &base) ||
                snprintf(out, outlen, "%s/%s", dir, link) >= (int)outlen)
                return fail(err, errlen, ENAMETOOLONG, "cannot write %s", path);
        }
    }
    return fail(err, errlen, ELOOP, "cannot write %s", path);
}

/* The process's umask, read without changing it where Linux tells it (the
 * umask(2) round trip briefly changes it for every thread). */
static mode_t current_umask(void)
{
    char line[128];
    mode_t mask;
    FILE *f = fopen("/proc/self/status", "re");
    if (f) {
        unsigned int value;
        while (fgets(line, sizeof line, f)) {
            if (sscanf(line, "Umask: %o", &value) == 1) {
                fclose(f);
                return (mode_t)value;
            }
        }
        fclose(f);
    }
    mask = umask(022);
    umask(mask);
    return mask;
}

/* Writes all of data to fd. A write past RLIMIT_FSIZE raises SIGXFSZ, which
 * would end the process: it is blocked for the write (which then fails with
 * EFBIG) and the pending signal taken back before it is unblocked. */
static int write_all(int fd, const char *data, size_t len)
{
    sigset_t xfsz, old;
    int saved = 0, result = 0;
    sigemptyset(&xfsz);
    sigaddset(&xfsz, SIGXFSZ);
    pthread_sigmask(SIG_BLOCK, &xfsz, &old);
    while (len > 0) {
        ssize_t n = write(fd, data, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            saved = n < 0 ? errno : EIO;
            result = -1;
            break;
        }
        data += n;
        len -= (size_t)n;
    }
    if (!sigismember(&old, SIGXFSZ)) {
        sigset_t pending;
        const struct timespec now = {0, 0};
        sigpending(&pending);
        if (sigismember(&pending, SIGXFSZ))
            sigtimedwait(&xfsz, NULL, &now);
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    errno = saved;
    return result;
}

/* A target that is a device or a FIFO (/dev/null, /dev/full) is written in
 * place, as `>` would: renaming over it would replace the device. */
static int write_in_place(const char *target, const char *data, size_t len, char *err, size_t errlen)
{
    int fd = open(target, O_WRONLY | O_TRUNC | O_NOCTTY | O_CLOEXEC);
    if (fd < 0)
        return fail(err, errlen, errno, "cannot open %s", target);
    if (write_all(fd, data, len) != 0) {
        int saved = errno;
        close(fd);
        return fail(err, errlen, saved, "cannot write %s", target);
    }
    if (close(fd) != 0)
        return fail(err, errlen, errno, "cannot write %s", target);
    return 1;
}

static void sync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        (void)fsync(fd);
        close(fd);
    }
}

int ou_fs_write(const char *path, const char *data, size_t len, enum ou_fs_access access, int sync, char *err,
                size_t errlen)
{
    char target[PATH_MAX], dir[PATH_MAX], tmp[PATH_MAX];
    const char *base;
    struct stat st;
    int exists, fd;
    mode_t mode;
    if (!resolve_target(path, target, sizeof target, err, errlen))
        return 0;
    exists = stat(target, &st) == 0;
    if (exists && S_ISDIR(st.st_mode))
        return fail(err, errlen, EISDIR, "cannot write %s", path);
    if (exists && !S_ISREG(st.st_mode))
        return write_in_place(target, data, len, err, errlen);
    if (!split_path(target, dir, sizeof dir, &base) ||
        snprintf(tmp, sizeof tmp, "%s/.%s.tmp-XXXXXX", dir, base) >= (int)sizeof tmp)
        return fail(err, errlen, ENAMETOOLONG, "cannot write %s", path);
    /* mkstemp: O_CREAT|O_EXCL (a planted symlink is never followed), 0600,
     * a name no other process can guess */
    fd = mkstemp(tmp);
    if (fd < 0)
        return fail(err, errlen, errno, "cannot create a temporary file in %s", dir);
    mode = exists ? (st.st_mode & 07777) : access == OU_FS_PRIVATE ? 0600 : (0666 & ~current_umask());
    if (exists && (st.st_uid != geteuid() || st.st_gid != getegid()))
        (void)!fchown(fd, st.st_uid, st.st_gid); /* best effort: only root may give a file away */
    if (fchmod(fd, mode) != 0 || write_all(fd, data, len) != 0 || (sync && fsync(fd) != 0)) {
        int saved = errno;
        close(fd);
        unlink(tmp);
        return fail(err, errlen, saved, "cannot write %s", path);
    }
    if (close(fd) != 0) {
        int saved = errno;
        unlink(tmp);
        return fail(err, errlen, saved, "cannot write %s", path);
    }
    if (rename(tmp, target) != 0) {
        int saved = errno;
        unlink(tmp);
        return fail(err, errlen, saved, "cannot replace %s", path);
    }
    if (sync)
        sync_dir(dir);
    return 1;
}

int ou_fs_mkdir_p(const char *path, mode_t mode, char *err, size_t errlen)
{
    char buf[PATH_MAX];
    size_t n = strlen(path);
    struct stat st;
    if (n == 0 || n >= sizeof buf)
        return fail(err, errlen, n ? ENAMETOOLONG : ENOENT, "cannot create %s", path);
    memcpy(buf, path, n + 1);
    for (char *p = buf + 1;; p++) {
        if (*p != '/' && *p != '\0')
            continue;
        char saved = *p;
        *p = '\0';
        if (mkdir(buf, mode) != 0 && errno != EEXIST)
            return fail(err, errlen, errno, "cannot create %s", buf);
        *p = saved;
        if (saved == '\0')
            break;
    }
    if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode))
        return fail(err, errlen, ENOTDIR, "cannot create %s", path);
    return 1;
}

int ou_fs_probe_dir(const char *dir, char *err, size_t errlen)
{
    char probe[PATH_MAX];
    int fd;
    if (snprintf(probe, sizeof probe, "%s/.openai-usage-probe-XXXXXX", dir) >= (int)sizeof probe)
        return fail(err, errlen, ENAMETOOLONG, "cannot write %s", dir);
    fd = mkstemp(probe);
    if (fd < 0)
        return fail(err, errlen, errno, "cannot write %s", dir);
    close(fd);
    unlink(probe);
    return 1;
}

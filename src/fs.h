/* Files the library writes (cache entries, the CLI's --out): created
 * exclusively and privately beside their target, then renamed into place. */
#ifndef OU_FS_H
#define OU_FS_H

#include <stddef.h>
#include <sys/types.h>

/* How a file that does not exist yet is created: 0600, or the mode a
 * shell's `>` gives (0666 & ~umask). An existing target keeps its mode. */
enum ou_fs_access { OU_FS_PRIVATE, OU_FS_DEFAULT };

/* Writes len bytes of data as path's whole content: a temporary file made
 * with mkstemp in the target's directory, written, fsync'ed when sync,
 * given the target's mode, renamed over it. A symlinked path writes its
 * target; a target that is not a regular file (a device, a FIFO) is written
 * in place. Returns 1, or 0 with a one-line message in err. */
int ou_fs_write(const char *path, const char *data, size_t len, enum ou_fs_access access, int sync, char *err,
                size_t errlen);

/* mkdir -p: creates each missing directory of path with mode. */
int ou_fs_mkdir_p(const char *path, mode_t mode, char *err, size_t errlen);

/* Whether a file can be created in dir: an exclusive private probe, removed. */
int ou_fs_probe_dir(const char *dir, char *err, size_t errlen);

#endif

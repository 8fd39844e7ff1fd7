/* Secrets from outside the process: a private file (the profiles, which may
 * hold keys) and the output of a command that prints a key (a profile's
 * key_command). Plain C over paths, descriptors and bytes; the Lua binding
 * is in core.c, the policy (which modes are private enough) in profiles.lua. */
#ifndef OU_SECRET_H
#define OU_SECRET_H

#include <stddef.h>

#include "buf.h"

/* What was opened: the facts of the descriptor the bytes are read from, so
 * a file swapped after the check is never the one read. */
struct ou_secret_file {
    int is_link;   /* the path itself is a symlink (the facts are its target's) */
    int regular;   /* a regular file (only then is it read) */
    unsigned mode; /* permission bits, 07777 */
    long uid;      /* its owner */
    long euid;     /* this process's effective user */
};

/* Opens path (following symlinks, never blocking on a FIFO), fstat's what was
 * opened and, when it is a regular file of at most max bytes, reads it whole
 * into text. Returns 1 (facts filled; text read when regular), or 0 with a
 * one-line message in err (cannot open, too large, a read error). */
int ou_secret_read_file(const char *path, size_t max, struct ou_secret_file *file, struct ou_buf *text,
                        char *err, size_t errlen);

/* How a command ended, and what it wrote. */
struct ou_secret_run {
    int exited;         /* exited: status holds its exit code */
    int status;         /* the exit code */
    int signal;         /* killed by this signal (0 when it exited) */
    int interrupted;    /* SIGINT was caught (core.catch_sigint) while it ran: it was killed */
    int timed_out;      /* it ran past the timeout: it was killed */
    struct ou_buf out;  /* its stdout, the first out_max bytes (the rest is read and dropped) */
    struct ou_buf errs; /* its stderr, the first err_max bytes */
};

/* Runs argv (argv[0] looked up in PATH) without a shell: stdin inherited,
 * stdout and stderr captured until it exits (what a process it leaves
 * behind writes later is not waited for), killed after timeout seconds (0:
 * never) or on a caught SIGINT. Returns 1 with run filled (release it with
 * ou_secret_run_free), or 0 with a one-line message in err when it could not
 * be started. */
int ou_secret_run(char *const argv[], size_t out_max, size_t err_max, double timeout,
                  struct ou_secret_run *run, char *err, size_t errlen);

/* Wipes (stdout may hold a key) and frees what a run captured; safe twice. */
void ou_secret_run_free(struct ou_secret_run *run);

#endif

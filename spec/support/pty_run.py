#!/usr/bin/env python3
"""Runs a command with its stderr on a pseudo-terminal, as a person's shell
would, and its stdout on a pipe; writes what each received to two files.
Exits with the command's exit code.
    pty_run.py STDOUT_FILE TTY_FILE -- command args...
"""
import os
import pty
import select
import subprocess
import sys


def main():
    out_path, tty_path, dash, *command = sys.argv[1:]
    assert dash == "--" and command, __doc__
    master, slave = pty.openpty()
    proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave)
    os.close(slave)
    tty, out = bytearray(), bytearray()
    streams = {master: tty, proc.stdout.fileno(): out}
    while streams:
        ready, _, _ = select.select(list(streams), [], [], 60)
        if not ready:
            proc.kill()
            break
        for fd in ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # EIO: the terminal's last writer is gone
                chunk = b""
            if chunk:
                streams[fd].extend(chunk)
            else:
                del streams[fd]
    code = proc.wait()
    with open(out_path, "wb") as f:
        f.write(out)
    with open(tty_path, "wb") as f:
        f.write(tty)
    sys.exit(code)


if __name__ == "__main__":
    main()

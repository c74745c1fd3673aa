"""One run per workdir: an exclusive lock on ``<workdir>/.jdistill.lock``.

Two runs on one workdir would interleave their checkpoints and metrics. The
lock is an ``fcntl.flock`` held for the life of the run (by process 0 of a
multi-process run) on a file that names its holder (pid, host, start time,
command line). The operating system releases it when the holder exits, however
it exits (``kill -9`` included), so a lock file left by a dead run is *stale*
and is simply taken over; a live holder makes the second run stop at once with
a :class:`WorkdirLockedError` naming it.

Where ``flock`` is not available (some network filesystems) the lock falls back
to the file's contents: a holder on this host whose pid is gone is stale and
taken over; a holder on another host cannot be checked, and the message says
how to break the lock by hand.
"""

from __future__ import annotations

import datetime
import errno
import json
import os
import socket
import sys

LOCK_NAME = ".jdistill.lock"


class WorkdirLockedError(RuntimeError):
    """Another live run holds the workdir."""


def _describe(holder: dict) -> str:
    if not holder:
        return "another process (its lock file is empty)"
    return (
        f"pid {holder.get('pid')} on {holder.get('host')}, started {holder.get('started')}"
        + (f": {holder.get('command')}" if holder.get("command") else "")
    )


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class WorkdirLock:
    """``acquire()`` / ``release()`` (or a context manager) for one workdir."""

    def __init__(self, workdir: str):
        self.workdir = workdir
        self.path = os.path.join(workdir, LOCK_NAME)
        self._fd: int | None = None

    def _read_holder(self, fd: int) -> dict:
        try:
            os.lseek(fd, 0, os.SEEK_SET)
            text = os.read(fd, 65536).decode("utf-8", "replace")
            return json.loads(text) if text.strip() else {}
        except (OSError, ValueError):
            return {}

    def acquire(self) -> "WorkdirLock":
        import fcntl

        os.makedirs(self.workdir, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                holder = self._read_holder(fd)
                os.close(fd)
                raise WorkdirLockedError(
                    f"The workdir {self.workdir} is in use by another jdistill run ({_describe(holder)}). Wait for "
                    "it to finish or stop it, or use another --workdir. (If no such run exists, delete "
                    f"{self.path}.)"
                ) from None
            self._fallback_check(fd)  # ENOLCK and the like: no flock on this filesystem
        previous = self._read_holder(fd)
        if previous and previous.get("pid") != os.getpid():
            from jdistill import console

            console.info(f"taking over the workdir lock of an ended run ({_describe(previous)})")
        holder = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": datetime.datetime.now().isoformat(timespec="seconds"),
            "command": " ".join(sys.argv)[:500],
        }
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, json.dumps(holder).encode())
        os.fsync(fd)
        self._fd = fd
        return self

    def _fallback_check(self, fd: int) -> None:
        holder = self._read_holder(fd)
        if not holder or holder.get("pid") == os.getpid():
            return
        same_host = holder.get("host") == socket.gethostname()
        if same_host and not _pid_alive(int(holder.get("pid", 0))):
            return  # stale: its process is gone
        os.close(fd)
        raise WorkdirLockedError(
            f"The workdir {self.workdir} is in use by another jdistill run ({_describe(holder)}); this filesystem "
            f"has no file locks, so if that run has ended, delete {self.path}. Otherwise use another --workdir."
        )

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)  # an empty lock file: nobody holds it
        except OSError:
            pass
        os.close(fd)  # closing releases the flock

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc_info):
        self.release()

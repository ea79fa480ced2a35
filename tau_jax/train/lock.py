"""One training process per workdir: `<workdir>/train.lock`, held for the whole run.

The lock is an exclusive `flock` on the file (the kernel drops it when its process dies, even by
kill -9), and the file names the holder (pid, host, process start, time) for the refusal message.
A file left behind by a dead process on this host is taken over with a warning. On a shared file
system without working `flock` across hosts, a lock file written by another host is never taken
over: its job may still be running, so the message says which file to delete once it is gone.
Multi-host jobs take one lock, on process 0 (`train.loop` agrees on the outcome across processes).
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import json
import logging
import os
import pathlib
import socket

log = logging.getLogger(__name__)

LOCK_FILE = "train.lock"


class WorkdirLocked(RuntimeError):
    """Another process trains in this workdir."""


def _process_start(pid: int) -> str | None:
    """The kernel's start time of `pid` (clock ticks since boot), to tell a reused pid apart."""
    try:
        return pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(holder: dict) -> bool:
    """Whether the process named by a lock file written on this host still runs."""
    pid = int(holder.get("pid", -1))
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    start = _process_start(pid)
    return start is None or holder.get("process_start") in (None, start)


def _in_use(holder: dict, path: pathlib.Path) -> WorkdirLocked:
    return WorkdirLocked(f"workdir {path.parent} is in use by another training process: "
                         f"{_describe(holder, path)}; wait for it to end or use another workdir.")


def _describe(holder: dict, path: pathlib.Path) -> str:
    return (f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}, started "
            f"{holder.get('started', '?')} (lock file {path})")


def _created_dirs(workdir: pathlib.Path) -> list[pathlib.Path]:
    """The missing folders `mkdir(parents=True)` would create for `workdir`, outermost first."""
    missing = []
    for p in [workdir, *workdir.parents]:
        if p.exists():
            break
        missing.append(p)
    return missing[::-1]


def _remove_if_empty(created: list[pathlib.Path]) -> None:
    """Remove the folders a refused run created, when nothing but empty folders is in them."""
    if not created:
        return
    for root, _, files in os.walk(created[0], topdown=False):
        if not files:
            with contextlib.suppress(OSError):
                os.rmdir(root)
    for p in reversed(created[1:]):
        with contextlib.suppress(OSError):
            p.rmdir()


@contextlib.contextmanager
def workdir_lock(workdir: str | os.PathLike):
    """Hold `<workdir>/train.lock` (creating the workdir) while the body runs.

    Raises WorkdirLocked, naming the holder, when another live process has it, and
    PermissionError when the workdir cannot be written. On leaving, the lock is released and
    folders this call created are removed again if the run left them empty (a refused run leaves
    nothing behind).
    """
    workdir = pathlib.Path(workdir)
    created = _created_dirs(workdir.absolute())
    path = workdir / LOCK_FILE
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        _remove_if_empty(created)
        raise PermissionError(f"Cannot write to workdir {workdir} ({e.strerror}); choose a "
                              "directory you can write to.") from None
    try:
        _acquire(fd, path)
    except BaseException:
        os.close(fd)
        _remove_if_empty(created)
        raise
    try:
        yield path
    finally:
        with contextlib.suppress(OSError):
            path.unlink()  # unlinked while held: a process that opened it before checks the inode
        os.close(fd)
        _remove_if_empty(created)


def _acquire(fd: int, path: pathlib.Path) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno not in (errno.EWOULDBLOCK, errno.EACCES):
            raise
        raise _in_use(_read(path), path) from None
    if os.fstat(fd).st_ino != _inode(path):  # the holder released and unlinked it meanwhile
        raise WorkdirLocked(f"workdir {path.parent} was being released by another training "
                            "process just now; run the command again.")
    holder = _read(path)
    if holder:
        if holder.get("host") != socket.gethostname():
            raise WorkdirLocked(
                f"workdir {path.parent} is locked by {_describe(holder, path)}, on another host "
                "whose process this host cannot check; delete the lock file if that job has "
                "ended.")
        if _alive(holder):  # a file system whose flock does not exclude (some network mounts)
            raise _in_use(holder, path)
        log.warning("Taking over the workdir lock left by %s: that process is gone.",
                    _describe(holder, path))
    pid = os.getpid()
    record = {"pid": pid, "host": socket.gethostname(), "process_start": _process_start(pid),
              "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(record).encode(), 0)
    os.fsync(fd)


def _inode(path: pathlib.Path) -> int | None:
    try:
        return path.stat().st_ino
    except FileNotFoundError:
        return None


def _read(path: pathlib.Path) -> dict:
    try:
        return json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return {}

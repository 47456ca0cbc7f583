"""DIR/emulator.pid, and the proof that it still names the emulator: a lock the daemon holds on it.

A pid alone outlives its process and may come to name another one (pids are reused): signalling
it would stop a stranger. The daemon writes the file under an exclusive flock that it holds until
it exits (the kernel drops it even on SIGKILL), so a pid file nobody holds a lock on is stale.
"""

from __future__ import annotations

import fcntl
import os
from dataclasses import dataclass
from pathlib import Path
from typing import IO

PID_FILE = "emulator.pid"


@dataclass(frozen=True)
class PidFile:
    pid: int | None  # the daemon's pid; None when no daemon holds the file
    stale_pid: int | None = None  # what a stale file named (the file is removed); -1 when unreadable


def claim(folder: Path) -> IO[str]:
    """(the daemon) Write DIR/emulator.pid locked for this process's life: keep the returned file open."""
    tmp = folder / f"{PID_FILE}.{os.getpid()}.tmp"
    handle = open(tmp, "w")
    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    os.replace(tmp, folder / PID_FILE)  # locked before it appears: a reader never sees it unlocked
    return handle


def release(folder: Path, handle: IO[str]) -> None:
    """(the daemon, stopping) Remove the pid file if it is still ours, then drop the lock."""
    _unlink_if_same(folder / PID_FILE, handle)
    handle.close()


def inspect(folder: Path) -> PidFile:
    """Who DIR/emulator.pid names: the live daemon, or a stale file (removed here), or nobody."""
    path = folder / PID_FILE
    try:
        handle = open(path)
    except FileNotFoundError:
        return PidFile(None)
    with handle:
        first = handle.read().split()[:1]
        pid = int(first[0]) if first and first[0].isdigit() else -1
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:  # the daemon holds it
            return PidFile(pid if pid > 0 else None)
        _unlink_if_same(path, handle)
        return PidFile(None, stale_pid=pid)


def _unlink_if_same(path: Path, handle: IO[str]) -> None:
    """Unlink `path` only if it is still the file `handle` has open (a new daemon may have replaced it)."""
    try:
        if os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino:
            path.unlink()
    except FileNotFoundError:
        pass

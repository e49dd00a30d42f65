"""One process per run dir: an OS lock on ``<run dir>/.lock`` for as long as the run's process lives.

The lock is ``filelock``'s (``flock`` on POSIX): the operating system frees it when its process ends, however it
ends, so a run killed with SIGKILL leaves no stale lock behind -- the next run on that dir takes it at once. A
second process on a busy dir fails at once with :class:`RunDirBusy` naming the dir and the holder (pid, host).
Only global rank 0 locks: the other ranks of a DDP run share rank 0's run dir. Sweep jobs have their own dirs.
"""

from __future__ import annotations

import os
import socket

from .errors import RunDirBusy
from .io import atomic_write_text
from .paths import RunPaths


def acquire(paths: RunPaths, rank: int = 0):
    """Lock ``paths.run_dir`` for this process (made if missing); returns the held lock (None on rank > 0)."""
    from filelock import FileLock, Timeout

    if rank != 0:
        return None
    paths.run_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(paths.lock), timeout=0, is_singleton=False)
    try:
        lock.acquire()
    except Timeout:
        raise RunDirBusy(f"{paths.run_dir} is in use by another sgft_lab process ({holder(paths)}); wait for it to "
                         "finish or stop it (a stopped process frees the dir at once), or set paths.output_dir "
                         "to run elsewhere") from None
    atomic_write_text(paths.lock_owner, f"pid {os.getpid()} on {socket.gethostname()}\n")
    return lock


def holder(paths: RunPaths) -> str:
    """Who holds the lock, as its owner file says (``pid N on HOST``)."""
    try:
        return paths.lock_owner.read_text(encoding="utf-8").strip() or "pid unknown"
    except OSError:
        return "pid unknown"


def release(lock) -> None:
    if lock is not None:
        lock.release()

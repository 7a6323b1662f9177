"""Durable steps: fsync, and the test hook that kills a write between any two of them."""

from __future__ import annotations

import os
import signal
from pathlib import Path

__all__ = ["step", "fsync_file", "fsync_dir"]

_steps_taken = 0


def step() -> None:
    """A durable step of a write (a file written, synced, renamed or deleted).

    Test hook: with ``LATENTSEARCH_CRASH_AFTER=N`` in the environment the process kills
    itself with SIGKILL after N steps, so tests can interrupt a write at every point.
    """
    global _steps_taken
    limit = os.environ.get("LATENTSEARCH_CRASH_AFTER")
    if limit is None:
        return
    _steps_taken += 1
    if _steps_taken > int(limit):
        os.kill(os.getpid(), signal.SIGKILL)


def fsync_file(path: Path) -> None:
    step()
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

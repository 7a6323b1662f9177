"""The writer lock: one writer at a time per collection, an advisory flock on ``.lock``."""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from latentsearch.errors import CollectionLocked

__all__ = ["LOCK", "writer_lock"]

LOCK = ".lock"



@contextmanager
def writer_lock(folder: Path, wait: float = 0.0) -> Iterator[None]:
    """Hold the collection's advisory writer lock; wait up to ``wait`` seconds for it."""
    import fcntl  # here, not at the top: `import latentsearch` works where fcntl does not

    fd = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + max(0.0, wait)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise CollectionLocked(
                        f"collection {folder.name} is locked by another writer; "
                        "retry later or pass --wait SECONDS"
                    ) from None
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)

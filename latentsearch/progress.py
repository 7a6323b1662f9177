"""Progress lines for long work, on stderr (``quiet`` silences them)."""

from __future__ import annotations

import sys

__all__ = ["say"]


def say(message: str, quiet: bool) -> None:
    """One progress line on stderr, unless ``quiet``."""
    if not quiet:
        print(message, file=sys.stderr, flush=True)

"""Progress bars and log lines for long work; the library itself never prints.

What the library did is logged, one line each, through the ``latentsearch`` logger
(:func:`say`; warnings through :func:`warn`). Long loops are wrapped in :func:`bar`, a tqdm
bar with rate and ETA on stderr, drawn only once the command line turned bars on with
:func:`configure` (stderr is a terminal and neither ``--quiet`` nor ``--json`` was given).

In Python nothing shows until you configure logging, e.g.
``logging.basicConfig(level=logging.INFO)`` (warnings reach stderr either way, through
Python's last-resort handler). ``quiet=True`` on a library call turns its lines into debug
records and its bars off.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, Iterable

__all__ = ["logger", "say", "warn", "bar", "configure"]

logger = logging.getLogger("latentsearch")

_bars = False  # set by configure(): the CLI on a terminal


def say(message: str, quiet: bool = False) -> None:
    """One line of what is going on (INFO; DEBUG when ``quiet``)."""
    logger.log(logging.DEBUG if quiet else logging.INFO, message)


def warn(message: str) -> None:
    logger.warning(message)


def bar(iterable: Iterable | None = None, *, total: int | None = None, desc: str | None = None,
        unit: str = "it", quiet: bool = False) -> Any:
    """``iterable`` wrapped in a progress bar (or a bar to ``update()`` by hand when it is
    None); a silent pass-through unless bars are on and not ``quiet``."""
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, unit=unit, file=sys.stderr, leave=False,
                dynamic_ncols=True, disable=quiet or not _bars, mininterval=0.5)


class _StderrHandler(logging.Handler):
    """Log lines on the stderr of the moment (click's test runner swaps it), through
    tqdm.write while bars are on so a line never lands inside a bar."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
            if _bars:
                from tqdm import tqdm

                tqdm.write(line, file=sys.stderr)
            else:
                sys.stderr.write(line + "\n")
                sys.stderr.flush()
        except Exception:  # logging must never break the work it reports on
            self.handleError(record)


def configure(*, quiet: bool = False, bars: bool | None = None) -> None:
    """The command line's logging: lines on stderr (warnings only when ``quiet``), bars when
    stderr is a terminal (``bars`` overrides) and not ``quiet``."""
    global _bars
    for handler in [h for h in logger.handlers if isinstance(h, _StderrHandler)]:
        logger.removeHandler(handler)
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING if quiet else logging.INFO)
    logger.propagate = False
    _bars = (sys.stderr.isatty() if bars is None else bars) and not quiet

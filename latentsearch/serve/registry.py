"""The collections a server serves: one :class:`Collection` per name, kept fresh.

One Collection object is safe for every thread, so each served name has exactly one, opened
on first use. Other processes may change a collection (``latentsearch add``, a rebuild) or
build a new one under the root: at most every ``reload_every`` seconds per collection a
request stats its manifest.json (one ``os.stat``) and, when the file changed, reloads the
collection (a new snapshot; searches already running finish on the old one). When no names
were given, every collection folder under the root is served, including ones built later.

A sharded collection is one served name: its parent's and every shard's manifest.json are
looked at, so an add committed to a shard by another process is picked up too. With a
``cluster`` (``serve --ray``) each shard of a sharded collection is held by a Ray actor and
queries fan out to them; unsharded collections are always served from this process.

Names are checked with :func:`latentsearch.storage.paths.check_name` before any path is
made from them; a bad name answers like an unknown one, and a folder that links out of the
root is not served.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from latentsearch.collection import Collection, ShardedCollection, list_collections
from latentsearch.collection.sharded import is_sharded
from latentsearch.errors import CollectionNotFound, InvalidInput, LatentSearchError
from latentsearch.report.evaluate import evaluate
from latentsearch.serve.responses import logger
from latentsearch.storage.manifest import MANIFEST, SHARDED, inside, parse_manifest
from latentsearch.storage.paths import check_name, resolve_root

__all__ = ["Registry", "RELOAD_EVERY"]

#: seconds between two looks at a collection's manifest.json
RELOAD_EVERY = 0.5


Served = Collection | ShardedCollection


def _stat_one(path: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


def _stat_key(folder: Path) -> tuple | None:
    """What changes when a collection's manifest.json is replaced (it is renamed into
    place); for a sharded collection, the parent's and every shard's. None: no manifest."""
    parent = _stat_one(folder / MANIFEST)
    if parent is None:
        return None
    try:
        m = parse_manifest(folder)
        shards = [s["name"] for s in m.get("shards", [])] if m.get("kind") == SHARDED else []
        return (parent, *(_stat_one(inside(folder, name) / MANIFEST) for name in shards))
    except (LatentSearchError, TypeError, KeyError):  # opening it will say what is wrong
        return (parent,)


@dataclass
class _Entry:
    col: Served
    stat: tuple | None
    checked: float
    lock: threading.Lock = field(default_factory=threading.Lock)


class Registry:
    """The served collections under ``root`` (all of them, or only ``names``)."""

    def __init__(self, root: str | os.PathLike | None, names: Sequence[str] | None = None, *,
                 reload_every: float = RELOAD_EVERY, cluster: Any = None):
        self.root = resolve_root(root)
        self.cluster = cluster  # latentsearch.scale.cluster.Cluster: shards in Ray actors
        self.reload_every = float(reload_every)
        self.fixed: tuple[str, ...] | None = None
        if names:
            for name in names:
                check_name(name)
                if self._folder(name) is None:
                    raise CollectionNotFound(f"no collection {name!r} under {self.root}")
            self.fixed = tuple(dict.fromkeys(names))
        self._entries: dict[str, _Entry] = {}
        self._opening = threading.Lock()
        self._reports: dict[str, tuple[int, dict[str, Any]]] = {}
        self._evaluating: dict[str, threading.Lock] = {}

    # -- names ---------------------------------------------------------------------------

    def _folder(self, name: str) -> Path | None:
        """The folder of a served collection called ``name``, or None (never a path outside
        the root: the name is checked first, and links out of the root are refused)."""
        try:
            check_name(name)
        except InvalidInput:
            return None
        if self.fixed is not None and name not in self.fixed:
            return None
        folder = self.root / name
        if not (folder / MANIFEST).is_file():
            return None
        if not _inside(folder, self.root):  # a link out of the root, as the CLI refuses
            return None
        return folder

    def names(self) -> list[str]:
        """The served names, sorted (a folder built under the root since is included)."""
        if self.fixed is not None:
            return sorted(n for n in self.fixed if self._folder(n) is not None)
        try:
            found = [p.name for p in self.root.iterdir() if not p.name.startswith(".")]
        except OSError:
            return []
        return sorted(n for n in found if self._folder(n) is not None)

    def rows(self) -> list[dict[str, Any]]:
        """A summary per served collection, read from its manifest (no collection is opened):
        name, modality, count, dim, metric, index; or name and error when unreadable."""
        served = set(self.names())
        return [row for row in list_collections(self.root) if row["name"] in served]

    # -- collections ---------------------------------------------------------------------

    def get(self, name: str) -> Served:
        """The Collection served as ``name``, opened on first use and reloaded when its
        manifest changed on disk; CollectionNotFound for any name not served."""
        entry = self._entries.get(name)
        if entry is None:
            return self._open(name)
        now = time.monotonic()
        if now - entry.checked >= self.reload_every and entry.lock.acquire(blocking=False):
            try:  # one thread looks; the others serve the snapshot they have meanwhile
                self._refresh(name, entry, now)
            finally:
                entry.lock.release()
        return entry.col

    def _open_folder(self, folder: Path) -> Served:
        if is_sharded(folder):
            return ShardedCollection(folder, cluster=self.cluster)
        return Collection(folder)

    def _open(self, name: str) -> Served:
        with self._opening:
            entry = self._entries.get(name)
            if entry is not None:
                return entry.col
            folder = self._folder(name)
            if folder is None:
                raise CollectionNotFound(f"no collection {name!r}")
            stat = _stat_key(folder)
            col = self._open_folder(folder)
            self._entries[name] = _Entry(col, stat, time.monotonic())
            return col

    def _refresh(self, name: str, entry: _Entry, now: float) -> None:
        entry.checked = now
        folder = self._folder(name)
        stat = None if folder is None else _stat_key(folder)
        if stat is None:  # removed (or no longer served): forget it
            with self._opening:
                if self._entries.get(name) is entry:
                    del self._entries[name]
            raise CollectionNotFound(f"no collection {name!r}")
        if stat == entry.stat:
            return
        created = entry.col.manifest.get("created")
        try:
            if is_sharded(folder) != isinstance(entry.col, ShardedCollection):
                entry.col = self._open_folder(folder)  # rebuilt as the other kind
            else:
                entry.col.reload()
                if entry.col.manifest.get("created") != created:
                    entry.col = self._open_folder(folder)  # rebuilt: a new encoder too
        except LatentSearchError as exc:  # keep serving the last good generation
            logger.warning("collection %s changed on disk but cannot be reloaded: %s", name, exc)
        entry.stat = stat

    # -- the claim -----------------------------------------------------------------------

    def report(self, name: str, generation: int) -> dict[str, Any] | None:
        """The evaluate report of ``name`` at ``generation``, if computed already."""
        cached = self._reports.get(name)
        return cached[1] if cached is not None and cached[0] == generation else None

    def evaluate(self, name: str) -> dict[str, Any]:
        """``evaluate(col).to_dict()``, computed once per generation and kept."""
        col = self.get(name)
        generation = col.generation
        with self._opening:
            lock = self._evaluating.setdefault(name, threading.Lock())
        with lock:  # one computation per collection at a time; the others wait for it
            cached = self.report(name, generation)
            if cached is None:
                cached = evaluate(col).to_dict()
                self._reports[name] = (generation, cached)
            return cached


def _inside(folder: Path, root: Path) -> bool:
    try:
        folder.resolve().relative_to(root.resolve())
    except (ValueError, OSError):
        return False
    return True

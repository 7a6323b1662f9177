"""The collection store: where collections live, the manifest, crash-safe writes, the lock.

A collection is a folder::

    manifest.json    format_version, settings, count, next_id, and every file with its sha256
    vectors.npy      float32 (n, dim), the source of truth (unit rows for metric cosine)
    ids.npy          int64 (n,), ascending, stable for the life of the collection
    index.faiss      the FAISS index (IVF keeps the ids itself, others are IDMap-wrapped)
    records.sqlite   id, label, source, text, extra (JSON)
    encoder/         the encoder's own files (model.keras, vocabulary, ...)
    delta-NNNNNN-*   delta segments: the vectors, ids, records (and images) of recent adds,
                     listed in the manifest's ``deltas`` (see ``_collection``)
    removed-NNNNNN.npy  ids removed from the main segment but still in its files and index

Writes are crash-safe. A fresh build is written whole into a hidden sibling folder, fsynced,
and renamed into place. A later write (add, remove, compact) writes what it changes as new
files - a delta segment, or main parts under generation names (``vectors-000002.npy``) -
inside a staging folder, fsyncs and renames them in, then replaces manifest.json atomically
(the commit point), and only then deletes the files the new manifest no longer names. A crash before the manifest is replaced leaves the old
collection intact plus stray files that the next writer deletes.

One writer at a time holds an advisory ``flock`` on ``.lock`` (released by the kernel when a
process dies, so a killed writer never leaves a stale lock). Readers take no lock.
Nothing here unpickles: arrays load with ``allow_pickle=False``, the rest is JSON and SQLite.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import sqlite3
import time
import uuid
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ._errors import (
    CollectionExists,
    CollectionLocked,
    CollectionNotFound,
    CorruptCollection,
    InvalidInput,
    UnsupportedFormat,
)

FORMAT_VERSION = 2  # the newest this code reads; see format_version()
MANIFEST = "manifest.json"
LOCK = ".lock"
_DELTA_RE = re.compile(r"^delta-[0-9]{6,}$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_REQUIRED = {
    "format_version": int,
    "modality": str,
    "encoder": dict,
    "dim": int,
    "metric": str,
    "index": dict,
    "count": int,
    "next_id": int,
    "generation": int,
    "files": dict,
}


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


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def resolve_root(root: str | os.PathLike | None) -> Path:
    """``root``, else ``$LATENTSEARCH_ROOT``, else ``./indexes``."""
    return Path(root or os.environ.get("LATENTSEARCH_ROOT") or "indexes")


def check_name(name: str) -> str:
    """A collection name must be a plain folder name: no separators, no leading dot."""
    if not isinstance(name, str) or not _NAME_RE.match(name) or name in (".", ".."):
        raise InvalidInput(
            f"invalid collection name {name!r}: use letters, digits, '.', '_' or '-', "
            "starting with a letter or digit (no paths)"
        )
    return name


def locate(name_or_path: str | os.PathLike, root: str | os.PathLike | None = None) -> Path:
    """The folder of an existing collection: a name under the root, or a path to a folder."""
    text = os.fspath(name_or_path)
    root_path = resolve_root(root)
    candidates = []
    if _NAME_RE.match(text):
        candidates.append(root_path / text)
    if os.sep in text or text.startswith(".") or not candidates:
        candidates.append(Path(text))
    for i, folder in enumerate(candidates):
        if (folder / MANIFEST).is_file():
            if i == 0 and _NAME_RE.match(text) and not _within(folder, root_path):
                raise InvalidInput(
                    f"collection {text!r} is a link out of the root {root_path}; "
                    "open it by its real path instead"
                )
            return folder
    raise CollectionNotFound(
        f"no collection {text!r} (looked in {', '.join(str(c) for c in candidates)}); "
        "`latentsearch list` shows what exists"
    )


def _within(folder: Path, root: Path) -> bool:
    try:
        folder.resolve().relative_to(root.resolve())
    except ValueError:
        return False
    return True


# -- reading -------------------------------------------------------------------------------


def read_manifest(folder: Path) -> dict[str, Any]:
    """Parse and check manifest.json: types, format_version. Does not read the other files."""
    path = folder / MANIFEST
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise CollectionNotFound(f"no collection at {folder} (manifest.json missing)") from None
    try:
        manifest = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CorruptCollection(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(manifest, dict):
        raise CorruptCollection(f"{path} must hold a JSON object")
    version = manifest.get("format_version")
    if isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION:
        raise UnsupportedFormat(
            f"{folder} was written with format_version {version}; this latentsearch reads "
            f"up to {FORMAT_VERSION}: upgrade latentsearch"
        )
    for key, kind in _REQUIRED.items():
        value = manifest.get(key)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise CorruptCollection(
                f"{path}: field {key!r} must be {kind.__name__}, got {type(value).__name__}"
            )
    for part, entry in manifest["files"].items():
        if not (
            isinstance(entry, dict)
            and isinstance(entry.get("path"), str)
            and isinstance(entry.get("sha256"), str)
        ):
            raise CorruptCollection(f"{path}: files[{part!r}] must have 'path' and 'sha256'")
        _inside(folder, entry["path"])
    deltas = manifest.setdefault("deltas", [])
    if not (
        isinstance(deltas, list)
        and all(
            isinstance(d, dict) and isinstance(d.get("name"), str) and _DELTA_RE.match(d["name"])
            and type(d.get("count")) is int and d["count"] > 0
            for d in deltas
        )
        and sum(d["count"] for d in deltas) <= manifest["count"]
    ):
        raise CorruptCollection(f"{path}: field 'deltas' must list segments with a name and count")
    return manifest


def format_version(manifest: dict[str, Any]) -> int:
    """2 when the collection has delta segments or a removed-ids list (a reader of version 1
    would miss them), else 1."""
    return 2 if manifest.get("deltas") or "removed" in manifest["files"] else 1


def _inside(folder: Path, rel: str) -> Path:
    """``folder/rel``, refusing names that escape the folder (absolute, '..', symlinks out)."""
    candidate = folder / rel
    if Path(rel).is_absolute() or ".." in Path(rel).parts:
        raise CorruptCollection(f"manifest names a file outside the collection: {rel!r}")
    if candidate.is_symlink():
        raise CorruptCollection(f"{candidate} is a symlink; collections hold plain files only")
    return candidate


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify(folder: Path, manifest: dict[str, Any]) -> None:
    """Check every file the manifest names exists and matches its sha256.

    Files are hashed in parallel threads (hashlib releases the GIL), so opening a large
    collection costs about the time to hash its largest file.
    """
    from concurrent.futures import ThreadPoolExecutor

    paths = [_inside(folder, entry["path"]) for entry in manifest["files"].values()]

    def digest(path: Path) -> str | None:
        try:
            return sha256_file(path)
        except FileNotFoundError:
            return None

    with ThreadPoolExecutor(max_workers=min(4, max(1, len(paths)))) as pool:
        digests = list(pool.map(digest, paths))
    for path, got, entry in zip(paths, digests, manifest["files"].values()):
        if got is None:
            raise CorruptCollection(f"{path} is missing (collection {folder.name})")
        if got != entry["sha256"]:
            raise CorruptCollection(
                f"{path} fails its checksum: the file is damaged or was changed outside "
                "latentsearch"
            )


def file_path(folder: Path, manifest: dict[str, Any], part: str) -> Path:
    try:
        return _inside(folder, manifest["files"][part]["path"])
    except KeyError:
        raise CorruptCollection(f"{folder / MANIFEST} names no {part!r} file") from None


def load_array(path: Path, *, mmap: bool = True) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except FileNotFoundError:
        raise CorruptCollection(f"{path} is missing") from None
    except ValueError as exc:  # pickled or malformed header
        raise CorruptCollection(f"{path} is not a plain .npy array: {exc}") from None


def open_records(path: Path) -> sqlite3.Connection:
    """Read-only connection; ``immutable`` because a committed records file never changes."""
    uri = path.resolve().as_uri() + "?mode=ro&immutable=1"
    try:
        con = sqlite3.connect(uri, uri=True, check_same_thread=False)
        con.execute("SELECT count(*) FROM records").fetchone()
    except sqlite3.DatabaseError as exc:
        raise CorruptCollection(f"{path} is not a readable records database: {exc}") from None
    return con


# -- writing -------------------------------------------------------------------------------

RECORDS_SCHEMA = """
CREATE TABLE records (
    id     INTEGER PRIMARY KEY,
    label  TEXT,
    source TEXT,
    text   TEXT,
    extra  TEXT
);
CREATE INDEX records_label ON records(label);
"""


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


def generation_name(part_file: str, generation: int) -> str:
    """``vectors.npy`` for generation 1, ``vectors-000007.npy`` for generation 7."""
    stem, dot, ext = part_file.partition(".")
    return part_file if generation <= 1 else f"{stem}-{generation:06d}{dot}{ext}"


class Staging:
    """A hidden folder where one write prepares its files before they are renamed in."""

    def __init__(self, parent: Path, prefix: str):
        self.dir = parent / f".{prefix}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.dir.mkdir(parents=True)
        self.written: dict[str, Path] = {}

    def path(self, rel: str) -> Path:
        p = self.dir / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def save_array(self, rel: str, array: np.ndarray) -> Path:
        p = self.path(rel)
        with open(p, "wb") as fh:
            np.save(fh, np.ascontiguousarray(array), allow_pickle=False)
        return p

    def write_records(self, rel: str, rows, base: Path | None = None, delete_ids=None) -> Path:
        """records.sqlite: a copy of ``base`` (if any) with ``rows`` inserted / ids deleted."""
        p = self.path(rel)
        if base is not None:
            shutil.copyfile(base, p)
        con = sqlite3.connect(p)
        try:
            if base is None:
                con.executescript(RECORDS_SCHEMA)
            if delete_ids is not None and len(delete_ids):
                con.executemany("DELETE FROM records WHERE id = ?", ((int(i),) for i in delete_ids))
            if rows:
                con.executemany(
                    "INSERT INTO records (id, label, source, text, extra) VALUES (?, ?, ?, ?, ?)",
                    rows,
                )
            con.commit()
        finally:
            con.close()
        return p

    def entries(self, names: dict[str, str]) -> dict[str, dict[str, Any]]:
        """Manifest ``files`` entries for ``{part: relative path}``, fsyncing each file."""
        out = {}
        for part, rel in names.items():
            p = self.dir / rel
            fsync_file(p)
            out[part] = {"path": rel, "sha256": sha256_file(p), "bytes": p.stat().st_size}
        return out

    def discard(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def clear_stale_builds(root: Path, name: str) -> None:
    """Delete hidden build folders for ``name`` left by builders that no longer run."""
    for path in root.glob(f".{name}.tmp-*"):
        try:
            pid = int(path.name[len(name) + 6 :].split("-")[0])
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
        except (ValueError, PermissionError):
            continue


def write_manifest(path: Path, manifest: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(manifest, fh, indent=2, sort_keys=True)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    step()
    os.replace(tmp, path)
    fsync_dir(path.parent)
    step()


def publish_new(staging: Staging, target: Path, *, overwrite: bool) -> None:
    """Rename a fully written staging folder into place as a new collection."""
    for sub in [staging.dir, *[p for p in staging.dir.rglob("*") if p.is_dir()]]:
        fsync_dir(sub)
    if target.exists():
        if not overwrite:
            staging.discard()
            raise CollectionExists(
                f"collection {target} already exists; pass --overwrite (overwrite=True) "
                "or choose another --name"
            )
        with writer_lock(target):
            old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
            step()
            os.rename(target, old)
            step()
            os.rename(staging.dir, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        step()
        try:
            os.rename(staging.dir, target)
        except OSError:
            staging.discard()
            raise CollectionExists(f"collection {target} was created by another process") from None
    fsync_dir(target.parent)


def commit(folder: Path, staging: Staging, manifest: dict[str, Any]) -> None:
    """Rename staged files in, replace the manifest (the commit point), drop unnamed files."""
    for entry in manifest["files"].values():
        src = staging.dir / entry["path"]
        if src.exists():
            dst = folder / entry["path"]
            dst.parent.mkdir(parents=True, exist_ok=True)
            step()
            os.replace(src, dst)
    fsync_dir(folder)
    write_manifest(folder / MANIFEST, manifest)
    staging.discard()
    collect_garbage(folder, manifest)


def collect_garbage(folder: Path, manifest: dict[str, Any]) -> None:
    """Delete files and staging folders the manifest does not name (left by crashes)."""
    keep = {MANIFEST, LOCK} | {e["path"] for e in manifest["files"].values()}
    for path in sorted(folder.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        rel = path.relative_to(folder).as_posix()
        if rel in keep or any(k.startswith(rel + "/") for k in keep):
            continue
        step()
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


@contextmanager
def writer_lock(folder: Path, wait: float = 0.0) -> Iterator[None]:
    """Hold the collection's advisory writer lock; wait up to ``wait`` seconds for it."""
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

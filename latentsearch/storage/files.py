"""The files of a collection: checksums, staging a write, committing it, cleaning up."""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from latentsearch.errors import CollectionExists, CorruptCollection
from latentsearch.storage.durable import fsync_dir, fsync_file, step
from latentsearch.storage.lock import LOCK, writer_lock
from latentsearch.storage.manifest import MANIFEST, inside, write_manifest
from latentsearch.storage.records import write_records
from latentsearch.io.arrays import load_npy

__all__ = ["sha256_file", "verify", "load_array", "generation_name", "Staging", "staging",
           "clear_stale_builds", "publish_new", "commit", "collect_garbage"]


def sha256_file(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def verify(folder: Path, manifest: dict[str, Any]) -> None:
    """Check every file the manifest names exists and matches its sha256.

    Files are hashed in parallel threads (hashlib releases the GIL), so opening a large
    collection costs about the time to hash its largest file.
    """
    from concurrent.futures import ThreadPoolExecutor

    paths = [inside(folder, entry["path"]) for entry in manifest["files"].values()]

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


def load_array(path: Path, *, mmap: bool = True) -> np.ndarray:
    """A collection's array file (memory-mapped by default); CorruptCollection if unreadable."""
    return load_npy(path, mmap=mmap, stored=True)


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
        return write_records(self.path(rel), rows, base, delete_ids)

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


@contextmanager
def staging(parent: Path, prefix: str) -> Iterator[Staging]:
    """A :class:`Staging` folder for one write, removed when the block ends: after a commit
    it is already empty, after an error it holds the half-written files."""
    staged = Staging(parent, prefix)
    try:
        yield staged
    finally:
        staged.discard()


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


def publish_new(staged: Staging, target: Path, *, overwrite: bool) -> None:
    """Rename a fully written staging folder into place as a new collection."""
    for sub in [staged.dir, *[p for p in staged.dir.rglob("*") if p.is_dir()]]:
        fsync_dir(sub)
    if target.exists():
        if not overwrite:
            staged.discard()
            raise CollectionExists(
                f"collection {target} already exists; pass --overwrite (overwrite=True) "
                "or choose another --name"
            )
        with writer_lock(target):
            old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
            step()
            os.rename(target, old)
            step()
            os.rename(staged.dir, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        step()
        try:
            os.rename(staged.dir, target)
        except OSError:
            staged.discard()
            raise CollectionExists(f"collection {target} was created by another process") from None
    fsync_dir(target.parent)


def commit(folder: Path, staged: Staging, manifest: dict[str, Any]) -> None:
    """Rename staged files in, replace the manifest (the commit point), drop unnamed files."""
    for entry in manifest["files"].values():
        src = staged.dir / entry["path"]
        if src.exists():
            dst = folder / entry["path"]
            dst.parent.mkdir(parents=True, exist_ok=True)
            step()
            os.replace(src, dst)
    fsync_dir(folder)
    write_manifest(folder / MANIFEST, manifest)
    staged.discard()
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

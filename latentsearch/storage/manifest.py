"""manifest.json: reading and checking it (types, format_version, file names), writing it atomically."""

from __future__ import annotations

import json
import os
import re
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from latentsearch.errors import CollectionNotFound, CorruptCollection, UnsupportedFormat
from latentsearch.storage.durable import fsync_dir, step

__all__ = ["FORMAT_VERSION", "MANIFEST", "now", "read_manifest", "format_version", "inside",
           "file_path", "write_manifest"]

FORMAT_VERSION = 2  # the newest this code reads; see format_version()

MANIFEST = "manifest.json"

_DELTA_RE = re.compile(r"^delta-[0-9]{6,}$")

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



def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


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
        inside(folder, entry["path"])
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


def inside(folder: Path, rel: str) -> Path:
    """``folder/rel``, refusing names that escape the folder (absolute, '..', symlinks out)."""
    candidate = folder / rel
    if Path(rel).is_absolute() or ".." in Path(rel).parts:
        raise CorruptCollection(f"manifest names a file outside the collection: {rel!r}")
    if candidate.is_symlink():
        raise CorruptCollection(f"{candidate} is a symlink; collections hold plain files only")
    return candidate


def file_path(folder: Path, manifest: dict[str, Any], part: str) -> Path:
    try:
        return inside(folder, manifest["files"][part]["path"])
    except KeyError:
        raise CorruptCollection(f"{folder / MANIFEST} names no {part!r} file") from None


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

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

__all__ = ["FORMAT_VERSION", "MANIFEST", "SHARDED", "now", "parse_manifest", "read_manifest",
           "read_sharded_manifest", "format_version", "inside", "file_path", "write_manifest"]

FORMAT_VERSION = 2  # the newest this code reads; see format_version()

MANIFEST = "manifest.json"

_DELTA_RE = re.compile(r"^delta-[0-9]{6,}$")

SHARDED = "sharded"  # the "kind" of a sharded collection's parent manifest

_SHARDED_REQUIRED = {
    "format_version": int,
    "kind": str,
    "shards": list,
    "modality": str,
    "encoder": dict,
    "dim": int,
    "metric": str,
}

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


def parse_manifest(folder: Path) -> dict[str, Any]:
    """manifest.json as a JSON object, its format_version checked (any kind of collection)."""
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
    return manifest


def read_manifest(folder: Path) -> dict[str, Any]:
    """Parse and check manifest.json: types, format_version. Does not read the other files."""
    path = folder / MANIFEST
    manifest = parse_manifest(folder)
    if manifest.get("kind") == SHARDED:
        raise CorruptCollection(f"{folder} is the parent of a sharded collection, not one "
                                "collection: open it with latentsearch.open")
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


def read_sharded_manifest(folder: Path) -> dict[str, Any]:
    """Parse and check a sharded collection's parent manifest.json (kind "sharded"): its
    fields' types, and shards named inside the folder with ascending ``first_id``."""
    path = folder / MANIFEST
    manifest = parse_manifest(folder)
    if manifest.get("kind") != SHARDED:
        raise CorruptCollection(f"{path} is not a sharded collection's manifest")
    for key, kind in _SHARDED_REQUIRED.items():
        value = manifest.get(key)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise CorruptCollection(
                f"{path}: field {key!r} must be {kind.__name__}, got {type(value).__name__}"
            )
    shards = manifest["shards"]
    previous = -1
    for shard in shards:
        if not (isinstance(shard, dict) and isinstance(shard.get("name"), str) and shard["name"]
                and type(shard.get("first_id")) is int and shard["first_id"] > previous):
            raise CorruptCollection(f"{path}: field 'shards' must list shards with a name "
                                    "and ascending first_id")
        inside(folder, shard["name"])  # no absolute path, no '..', no symlink
        if Path(shard["name"]).name != shard["name"] or shard["name"] == ".":
            raise CorruptCollection(f"{path}: shard {shard['name']!r} is not a folder of its own")
        previous = shard["first_id"]
    if not shards or len({s["name"] for s in shards}) != len(shards):
        raise CorruptCollection(f"{path}: field 'shards' must name one or more distinct shards")
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

"""One committed generation of a collection, loaded: everything a search reads.

A :class:`Snapshot` is built off to the side from the files one manifest names and never
changes afterwards. The collection publishes the next one with a single assignment after each
commit, and every search takes the current snapshot once, so no search sees two generations.

Segments: the *main* segment is what the FAISS index holds (vectors, ids, records, images);
each add appends a small *delta* segment, searched exactly beside the index (see
``latentsearch.collection.writer``). Ids ascend across segments, main first, so an id's row
is one binary search away. Segments whose files did not change are shared with the previous
snapshot (committed files never change), so loading after an add reads only the new delta.

Files close when the last snapshot holding them is gone, that is when the last search that
took it has returned: the FAISS index, the memory maps and the read-only SQLite connections
are freed with their last reference (CPython reference counting; snapshots hold no cycles).
"""

from __future__ import annotations

import bisect
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from latentsearch import index as _index
from latentsearch.errors import CorruptCollection, InvalidInput, UnknownId
from latentsearch.storage.files import load_array, verify
from latentsearch.storage.manifest import file_path, read_manifest
from latentsearch.storage.records import all_rows, fetch, open_records, select_ids

__all__ = ["MainSegment", "DeltaSegment", "Snapshot", "load_snapshot", "MAIN_PARTS"]

MAIN_PARTS = ("vectors", "ids", "index", "records", "images")


def _entries(files: dict[str, Any], keys: Iterable[str]) -> dict[str, Any]:
    return {k: files[k] for k in keys if k in files}


def _delta_entries(files: dict[str, Any], name: str) -> dict[str, Any]:
    return {k: e for k, e in files.items() if k.startswith(name + "/")}


@dataclass(frozen=True, eq=False)
class MainSegment:
    """The indexed segment: ``vectors`` (a view of the memory-mapped file), their ``ids``
    (ascending), the FAISS ``index`` with its tuned parameters applied, the records
    database, the images (image collections) and the manifest entries it was read from."""

    files: dict[str, Any]
    index_entry: dict[str, Any]
    vectors: np.ndarray
    ids: np.ndarray
    index: Any
    records: Any
    images: np.ndarray | None
    ids_are_rows: bool  # ids are 0..n-1: an id is its own row

    def vectors_of(self, ids: np.ndarray) -> np.ndarray:
        """Vectors of ids the index returned (held, not removed): the re-rank's fast path."""
        if self.ids_are_rows:
            return self.vectors[ids]
        return self.vectors[np.searchsorted(self.ids, ids)]


@dataclass(frozen=True, eq=False)
class DeltaSegment:
    """One delta segment (a recent add), small enough to hold in memory."""

    name: str
    files: dict[str, Any]
    vectors: np.ndarray
    ids: np.ndarray
    images: np.ndarray | None
    records: Any


@dataclass(frozen=True, eq=False)
class Snapshot:
    """One generation: the main segment, the deltas, and the ids removed from main.

    ``stored_ids`` is the id of every stored row, main first (removed ones included: the
    row of an id); ``live_ids`` every id a search may return, ascending. The ``delta_*``
    arrays are the delta segments' rows, concatenated for the exact search beside the index.
    """

    folder: Path
    manifest: dict[str, Any]
    main: MainSegment
    deltas: tuple[DeltaSegment, ...]
    removed: np.ndarray
    live_main: np.ndarray
    stored_ids: np.ndarray
    live_ids: np.ndarray
    delta_vectors: np.ndarray
    delta_ids: np.ndarray
    delta_images: np.ndarray | None

    # -- what it holds ---------------------------------------------------------------------

    @property
    def generation(self) -> int:
        return int(self.manifest["generation"])

    @property
    def count(self) -> int:
        return int(self.manifest["count"])

    @property
    def dim(self) -> int:
        return int(self.manifest["dim"])

    @property
    def metric(self) -> str:
        return self.manifest["metric"]

    @property
    def main_rows(self) -> int:
        """Rows of the main segment, removed ones included (the index holds them all)."""
        return len(self.main.ids)

    @property
    def record_databases(self) -> list[Any]:
        return [self.main.records, *(d.records for d in self.deltas)]

    # -- rows and records ------------------------------------------------------------------

    def rows(self, ids: Iterable[int]) -> np.ndarray:
        """Row positions of ``ids`` over all segments; UnknownId for any not held."""
        wanted = np.asarray(ids if isinstance(ids, np.ndarray) else list(ids), dtype=np.int64)
        wanted = wanted.reshape(-1)
        stored = self.stored_ids
        rows = np.minimum(np.searchsorted(stored, wanted), max(len(stored) - 1, 0))
        held = stored[rows] == wanted if len(stored) else np.zeros(len(wanted), bool)
        if len(self.removed):
            held &= ~np.isin(wanted, self.removed)
        if not held.all():
            missing = int(wanted[np.flatnonzero(~held)[0]])
            raise UnknownId(f"collection {self.folder.name} has no item with id {missing}")
        return rows

    def take(self, main: np.ndarray, delta: np.ndarray | None, rows: np.ndarray) -> np.ndarray:
        """Rows of a main-segment array, continued by the deltas' array."""
        if delta is None or not len(delta):
            return np.asarray(main[rows])
        out = np.empty((len(rows), *main.shape[1:]), main.dtype)
        in_main = rows < self.main_rows
        out[in_main] = main[rows[in_main]]
        out[~in_main] = delta[rows[~in_main] - self.main_rows]
        return out

    def vectors(self, ids: Iterable[int] | None = None) -> np.ndarray:
        """Stored vectors of ``ids``, or of every live item."""
        if ids is None:
            if len(self.removed):
                return self.take(self.main.vectors, self.delta_vectors, self.rows(self.live_ids))
            return np.concatenate([self.main.vectors, self.delta_vectors])
        return self.take(self.main.vectors, self.delta_vectors, self.rows(ids))

    def images(self, ids: Iterable[int]) -> np.ndarray:
        if self.main.images is None:
            raise InvalidInput(f"collection {self.folder.name} keeps no images")
        return self.take(self.main.images, self.delta_images, self.rows(ids))

    def records(self, ids: Sequence[int], *, extra: bool = False) -> dict[int, tuple]:
        """(label, source, text) by id, each from the segment holding it (and the extra
        fields as a dict, with ``extra``)."""
        if isinstance(ids, np.ndarray):
            ids = ids.tolist()
        out: dict[int, tuple] = {}
        if not self.deltas or not ids or max(ids) < int(self.deltas[0].ids[0]):
            fetch(self.main.records, ids, out, extra=extra)
            return out
        starts = [int(d.ids[0]) for d in self.deltas]
        groups: dict[int, list[int]] = {}
        for i in ids:
            groups.setdefault(bisect.bisect_right(starts, i), []).append(i)
        databases = self.record_databases
        for segment, part in groups.items():
            fetch(databases[segment], part, out, extra=extra)
        return out

    def allowed(self, where: dict[str, Any] | None) -> np.ndarray | None:
        """The live ids matching ``where`` (ascending), or None for no filter."""
        if not where:
            return None
        found = np.array(select_ids(self.record_databases, where), dtype=np.int64)
        return found[~np.isin(found, self.removed)] if len(self.removed) else found

    def delta_rows(self) -> list[tuple]:
        """Every record row (id, label, source, text, extra) of the delta segments."""
        return [row for d in self.deltas for row in all_rows(d.records)]


# -- loading -------------------------------------------------------------------------------


def load_snapshot(folder: Path, *, check: bool = True, previous: Snapshot | None = None,
                  written: dict[str, Any] | None = None) -> Snapshot:
    """The newest committed generation under ``folder``.

    ``check``: verify the checksums of files not already held by ``previous`` or just
    ``written`` (and hashed) by this process. Returns ``previous`` itself when the manifest
    did not change."""
    for attempt in range(3):  # a writer may commit between reading the manifest and files
        manifest = read_manifest(folder)
        if previous is not None and manifest == previous.manifest:
            return previous
        try:
            return _load(folder, manifest, check, previous, written or {})
        except CorruptCollection:
            if attempt == 2 or read_manifest(folder) == manifest:
                raise
    raise AssertionError("unreachable")


def _load(folder: Path, manifest: dict[str, Any], check: bool, previous: Snapshot | None,
          written: dict[str, Any]) -> Snapshot:
    files = manifest["files"]
    main = previous.main if previous is not None else None
    if main is not None and (main.files != _entries(files, MAIN_PARTS)
                             or main.index_entry != manifest["index"]):
        main = None
    kept = {d.name: d for d in previous.deltas} if previous is not None else {}
    kept = {name: d for name, d in kept.items() if d.files == _delta_entries(files, name)}
    if check:
        held = dict(written)
        if previous is not None:  # e.g. the encoder's files, the removed-ids list
            held.update({k: e for k, e in previous.manifest["files"].items()
                         if k not in MAIN_PARTS and not k.startswith("delta-")})
        for segment in [main, *kept.values()]:
            held.update(segment.files if segment is not None else {})
        verify(folder, {"files": {k: e for k, e in files.items() if held.get(k) != e}})

    removed = _removed_ids(folder, manifest)
    main_rows = manifest["count"] - sum(d["count"] for d in manifest["deltas"]) + len(removed)
    if main is None:
        main = _open_main(folder, manifest, main_rows)
    elif len(main.ids) != main_rows:
        raise CorruptCollection(f"{folder}: the manifest's count does not match ids.npy")
    pixels = None if main.images is None else main.images.shape[1:]
    deltas = tuple(kept.get(d["name"]) or _open_delta(folder, manifest, d, pixels)
                   for d in manifest["deltas"])
    _check_ascending(folder, main, deltas, checked_main=previous is not None
                     and main is previous.main)

    if previous is not None and main is previous.main and np.array_equal(removed, previous.removed):
        live_main = previous.live_main
    else:
        pos = np.minimum(np.searchsorted(main.ids, removed), max(len(main.ids) - 1, 0))
        if len(removed) and not (main.ids[pos] == removed).all():
            raise CorruptCollection(f"{folder}: removed ids that the main segment does not hold")
        live_main = main.ids[~np.isin(main.ids, removed)] if len(removed) else main.ids
    delta_ids = [d.ids for d in deltas]
    delta_images = None
    if main.images is not None:
        delta_images = (np.concatenate([d.images for d in deltas]) if deltas
                        else np.asarray(main.images[:0]))
    return Snapshot(
        folder=folder,
        manifest=manifest,
        main=main,
        deltas=deltas,
        removed=removed,
        live_main=live_main,
        stored_ids=np.concatenate([main.ids, *delta_ids]) if deltas else main.ids,
        live_ids=np.concatenate([live_main, *delta_ids]) if deltas else live_main,
        delta_vectors=(np.concatenate([d.vectors for d in deltas]) if deltas
                       else np.empty((0, manifest["dim"]), np.float32)),
        delta_ids=np.concatenate(delta_ids) if deltas else np.empty(0, np.int64),
        delta_images=delta_images,
    )


def _removed_ids(folder: Path, manifest: dict[str, Any]) -> np.ndarray:
    if "removed" not in manifest["files"]:
        return np.empty(0, np.int64)
    removed = load_array(file_path(folder, manifest, "removed"), mmap=False)
    if removed.ndim != 1 or removed.dtype != np.int64 or not len(removed) or (
            len(removed) > 1 and not (np.diff(removed) > 0).all()):
        raise CorruptCollection(f"{folder}: the removed ids file is malformed")
    return removed


def _check_ascending(folder: Path, main: MainSegment, deltas: tuple[DeltaSegment, ...],
                     checked_main: bool) -> None:
    """Ids ascend within and across segments. A main segment reused from the previous
    snapshot was checked when it was opened: a reload after an add costs in proportion to
    the deltas, not to the collection."""
    previous = None
    for i, ids in enumerate([main.ids, *[d.ids for d in deltas]]):
        unsorted = (i > 0 or not checked_main) and len(ids) > 1 and not (np.diff(ids) > 0).all()
        overlaps = previous is not None and len(ids) > 0 and ids[0] <= previous
        if unsorted or overlaps:
            raise CorruptCollection(f"{folder}: ids are not ascending across segments")
        previous = ids[-1] if len(ids) else previous


def _open_main(folder: Path, manifest: dict[str, Any], n: int) -> MainSegment:
    """The main segment's files: vectors (memory-mapped), ids, FAISS index, records, images."""
    dim = manifest["dim"]
    vectors = load_array(file_path(folder, manifest, "vectors"))
    ids = load_array(file_path(folder, manifest, "ids"), mmap=False)
    if vectors.shape != (n, dim) or vectors.dtype != np.float32:
        raise CorruptCollection(
            f"{folder}: vectors are {vectors.shape} {vectors.dtype}, manifest says ({n}, {dim})")
    if ids.shape != (n,) or ids.dtype != np.int64:
        raise CorruptCollection(f"{folder}: ids.npy does not match the manifest")
    index = _read_index(file_path(folder, manifest, "index"), n, dim)
    _index.apply(index, manifest["index"].get("params", {}))  # before anyone can search it
    images = None
    if "images" in manifest["files"]:
        images = load_array(file_path(folder, manifest, "images"))
        if images.ndim != 4 or len(images) != n or images.dtype != np.uint8:
            raise CorruptCollection(f"{folder}: images.npy does not match the manifest")
    return _closing(MainSegment(
        files=_entries(manifest["files"], MAIN_PARTS),
        index_entry=manifest["index"],
        vectors=np.asarray(vectors),  # a plain view of the memory map: faster row lookups
        ids=ids,
        index=index,
        records=open_records(file_path(folder, manifest, "records")),
        images=images,
        ids_are_rows=bool(len(ids) and ids[0] == 0 and ids[-1] == len(ids) - 1),
    ))


def _closing(segment):
    """``segment``, whose records database closes when the segment is freed (when the
    last snapshot holding it is gone)."""
    weakref.finalize(segment, segment.records.close)
    return segment


def _read_index(path: Path, n: int, dim: int):
    import faiss

    try:
        # IVFPQ: FAISS would rebuild an nlist x M x 256 float table on read (not stored in
        # the file; 65 MB for a 25 MB index at 1M x 32), breaking the memory target;
        # searching without it kept the tuned recall and speed here.
        index = faiss.read_index(str(path), faiss.IO_FLAG_SKIP_PRECOMPUTE_TABLE)
    except RuntimeError as exc:
        raise CorruptCollection(f"{path} is not a readable FAISS index: {exc}") from None
    if index.ntotal != n or index.d != dim:
        raise CorruptCollection(f"{path} holds {index.ntotal} vectors, manifest says {n}")
    return index


def _open_delta(folder: Path, manifest: dict[str, Any], delta: dict[str, Any],
                pixels: tuple | None) -> DeltaSegment:
    """A delta segment's files, checked against the manifest (``pixels``: the image shape,
    None for collections without images)."""
    name, n, dim = delta["name"], delta["count"], manifest["dim"]

    def path(part: str) -> Path:
        return file_path(folder, manifest, f"{name}/{part}")

    vectors = load_array(path("vectors"), mmap=False)
    ids = load_array(path("ids"), mmap=False)
    if vectors.shape != (n, dim) or vectors.dtype != np.float32:
        raise CorruptCollection(f"{folder}: delta {name} vectors do not match the manifest")
    if ids.shape != (n,) or ids.dtype != np.int64:
        raise CorruptCollection(f"{folder}: delta {name} ids do not match the manifest")
    images = None
    if pixels is not None:
        images = load_array(path("images"), mmap=False)
        if images.shape != (n, *pixels) or images.dtype != np.uint8:
            raise CorruptCollection(f"{folder}: delta {name} images do not match the manifest")
    return _closing(DeltaSegment(name, _delta_entries(manifest["files"], name), vectors, ids,
                                 images, open_records(path("records"))))

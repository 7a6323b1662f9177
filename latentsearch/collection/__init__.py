"""Collections: opening, building, searching and changing them.

A :class:`Collection` is a read view of one committed generation of a collection folder
(see ``_store``): vectors memory-mapped, ids, the FAISS index, and the records database.
The encoder is loaded only when an image or text must be encoded, so searching by id or by
vector never imports TensorFlow. Writes (``add``, ``remove``, ``compact``) take the writer
lock, build the next generation, commit it, and reload the view.

Segments: the *main* segment is what the FAISS index holds (vectors.npy, ids.npy,
records.sqlite, images.npy). Each ``add`` appends a *delta* segment holding only its batch,
searched exactly and merged with the index's answer; ids ascend across segments (main
first), so an id's row is found by one binary search over them all. See DELTA_LIMIT.
"""

from __future__ import annotations

import bisect
import json
import os
import re
import sqlite3
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from latentsearch import index as _index
from latentsearch.index import tune as _tuning
from latentsearch.storage.files import Staging, clear_stale_builds, commit, generation_name, load_array, publish_new, verify
from latentsearch.storage.lock import writer_lock
from latentsearch.storage.manifest import MANIFEST, file_path, format_version, now, read_manifest, write_manifest
from latentsearch.storage.paths import check_name, locate, resolve_root
from latentsearch.storage.records import open_records
from latentsearch import encoders as _encoders
from latentsearch.errors import (
    CollectionExists,
    CorruptCollection,
    DimensionMismatch,
    EncoderError,
    InvalidInput,
    UnknownId,
)
from latentsearch.version import __version__
from latentsearch.types import Hit, label_text
from latentsearch.encoders.vectors import VectorEncoder, as_vectors

__all__ = ["Collection", "open_collection", "build_vectors", "create", "list_collections"]

_WHERE_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_COLUMNS = ("id", "label", "source", "text")
Record = tuple[str | None, str | None, str | None, dict | None]  # label, source, text, extra


_MAIN_PARTS = ("vectors", "ids", "index", "records", "images")
# Adds go to small append-only delta segments (their vectors, ids, records and images, no
# index), searched exactly beside the main index: an add then writes only its own batch.
# The deltas are folded into the main files (a compaction, which rewrites them: O(n)) when
# they would hold more than DELTA_LIMIT items - 10,000 x 32-d in deltas added about 60
# microseconds to a single query here (benchmarks/RESULTS.md, section 6) - and on compact().
# At most MAX_DELTAS segments exist; beyond that the deltas merge into one (O(delta)).
# Removing items of the main segment lists their ids in removed-NNNNNN.npy (the index keeps
# them, searches skip them through an id selector) until more than REMOVED_LIMIT, or a
# quarter of the main segment, would be listed: then a compaction purges them.
DELTA_LIMIT = 10_000
MAX_DELTAS = 8
REMOVED_LIMIT = 10_000


@dataclass(frozen=True)
class _Segment:
    """One delta segment, loaded: small enough to hold in memory."""

    name: str
    vectors: np.ndarray
    ids: np.ndarray
    images: np.ndarray | None
    records: sqlite3.Connection


def _delta_key(name: str, part: str) -> str:
    return f"{name}/{part}"


def _open_delta(folder: Path, manifest: dict[str, Any], delta: dict[str, Any],
                pixels: tuple | None) -> _Segment:
    """A delta segment's files, checked against the manifest (``pixels``: the main
    segment's image shape, None for collections without images)."""
    name, n, dim = delta["name"], delta["count"], manifest["dim"]
    path = lambda part: file_path(folder, manifest, _delta_key(name, part))  # noqa: E731
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
    return _Segment(name, vectors, ids, images, open_records(path("records")))


def _progress(message: str, quiet: bool) -> None:
    if not quiet:
        print(message, file=sys.stderr, flush=True)


def _labels_as_text(labels, n: int) -> list[str | None]:
    if labels is None:
        return [None] * n
    labels = list(labels)
    if len(labels) != n:
        raise InvalidInput(f"got {len(labels)} labels for {n} items")
    return [None if lab is None else label_text(lab) for lab in labels]


class Collection:
    """A collection opened for reading (and, through the writer lock, for changes).

    Many threads may search one Collection at once (FAISS searches and the read-only
    SQLite connections are safe to share). Changing it (``add``, ``remove``, ``compact``,
    ``reload``) swaps its state attribute by attribute: do not search the same object from
    another thread meanwhile - give the writer its own Collection (processes are always
    safe: a reader sees one committed generation)."""

    def __init__(self, path: Path, *, verify: bool = True):
        self.path = Path(path)
        self._verify = verify
        self._encoder: _encoders.Encoder | None = None
        self._load()

    # -- loading ---------------------------------------------------------------------------

    def _load(self, *, reuse: bool = True, written: dict | None = None) -> None:
        """Open the newest generation. ``written``: manifest file entries this process has
        just written and hashed itself (no need to hash them again)."""
        for attempt in range(3):  # a writer may commit between reading the manifest and files
            manifest = read_manifest(self.path)
            if reuse and manifest == getattr(self, "manifest", None):
                return  # nothing changed
            try:
                self._load_generation(manifest, reuse=reuse, written=written or {})
                return
            except CorruptCollection:
                if attempt == 2 or read_manifest(self.path) == manifest:
                    raise
        raise AssertionError("unreachable")

    def _load_generation(self, manifest: dict[str, Any], *, reuse: bool, written: dict) -> None:
        """Open the files ``manifest`` names; files already open under the same name and
        checksum are kept (committed files never change), so a reload after an add reads
        and verifies only the new delta segment."""
        files = manifest["files"]
        old = getattr(self, "manifest", None) if reuse else None
        same_main = old is not None and all(
            files.get(p) == old["files"].get(p) for p in _MAIN_PARTS
        ) and old["index"] == manifest["index"]
        if self._verify:
            fresh = {k: e for k, e in files.items()
                     if written.get(k) != e
                     and not (old is not None and old["files"].get(k) == e
                              and (same_main or k not in _MAIN_PARTS))}
            verify(self.path, {"files": fresh})
        removed = np.empty(0, np.int64)
        if "removed" in files:
            removed = load_array(file_path(self.path, manifest, "removed"), mmap=False)
            if removed.ndim != 1 or removed.dtype != np.int64 or not len(removed) or (
                    len(removed) > 1 and not (np.diff(removed) > 0).all()):
                raise CorruptCollection(f"{self.path}: the removed ids file is malformed")
        main_count = manifest["count"] - sum(d["count"] for d in manifest["deltas"]) + len(removed)
        if same_main:
            main = (self._vectors, self._main_ids, self._index, self._records, self._main_images)
            if len(self._main_ids) != main_count:
                raise CorruptCollection(f"{self.path}: the manifest's count does not match ids.npy")
        else:
            main = self._open_main(manifest, main_count)
        kept = getattr(self, "_deltas", {}) if old is not None else {}
        deltas = {}
        for d in manifest["deltas"]:  # a segment is kept only if its files are the same
            seg = kept.get(d["name"])
            same = seg is not None and all(
                files.get(k) == old["files"].get(k) for k in files if k.startswith(d["name"] + "/"))
            pixels = None if main[4] is None else main[4].shape[1:]
            deltas[d["name"]] = seg if same else _open_delta(self.path, manifest, d, pixels)
        # ids ascend within and across segments; a reused main was checked when opened, so
        # a reload after an add costs in proportion to the deltas, not to the collection
        previous = None
        for i, seg_ids in enumerate([main[1], *[s.ids for s in deltas.values()]]):
            if ((i > 0 or not same_main) and len(seg_ids) > 1 and not (np.diff(seg_ids) > 0).all()
                    or previous is not None and len(seg_ids) and seg_ids[0] <= previous):
                raise CorruptCollection(f"{self.path}: ids are not ascending across segments")
            previous = seg_ids[-1] if len(seg_ids) else previous
        delta_ids = [s.ids for s in deltas.values()]
        all_ids = np.concatenate([main[1], *delta_ids]) if delta_ids else main[1]
        if same_main and np.array_equal(removed, self._removed):
            live_main = self._live_main
        else:
            pos = np.minimum(np.searchsorted(main[1], removed), max(len(main[1]) - 1, 0))
            if len(removed) and not (main[1][pos] == removed).all():
                raise CorruptCollection(f"{self.path}: removed ids that the main segment does not hold")
            live_main = main[1][~np.isin(main[1], removed)] if len(removed) else main[1]
        for con in self._unused_connections(main[3], deltas):
            con.close()
        self.manifest = manifest
        self._vectors, self._main_ids, self._index, self._records, self._main_images = main
        self._main_array = np.asarray(self._vectors)  # a plain view of the memory map
        ids_ = self._main_ids  # ascending and unique: 0..n-1 means an id is its row
        self._main_ids_are_rows = bool(len(ids_) and ids_[0] == 0 and ids_[-1] == len(ids_) - 1)
        self._deltas = deltas
        self._row_ids = all_ids  # every stored row, main first: the row of an id
        self._removed = removed
        self._live_main = live_main
        self._ids = np.concatenate([live_main, *delta_ids]) if delta_ids else live_main  # live
        self._n_main = main_count
        segs = list(deltas.values())
        self._dvecs = (np.concatenate([s.vectors for s in segs]) if segs
                       else np.empty((0, manifest["dim"]), np.float32))
        self._dids = all_ids[main_count:]
        self._dimages = None
        if self._main_images is not None:
            self._dimages = (np.concatenate([s.images for s in segs]) if segs
                             else np.asarray(self._main_images[:0]))
        self._record_dbs = [(int(s.ids[0]), s.records) for s in segs]
        if not same_main:
            _index.apply(self._index, manifest["index"].get("params", {}))

    def _unused_connections(self, main_records, deltas) -> list:
        out = []
        if getattr(self, "_records", None) is not None and self._records is not main_records:
            out.append(self._records)
        live = {id(s.records) for s in deltas.values()}
        out += [s.records for s in getattr(self, "_deltas", {}).values() if id(s.records) not in live]
        return out

    def _open_main(self, manifest: dict[str, Any], n: int) -> tuple:
        """The main segment: vectors (memory-mapped), ids, FAISS index, records, images."""
        dim = manifest["dim"]
        vectors = load_array(file_path(self.path, manifest, "vectors"))
        ids = load_array(file_path(self.path, manifest, "ids"), mmap=False)
        if vectors.shape != (n, dim) or vectors.dtype != np.float32:
            raise CorruptCollection(
                f"{self.path}: vectors are {vectors.shape} {vectors.dtype}, manifest says ({n}, {dim})"
            )
        if ids.shape != (n,) or ids.dtype != np.int64:
            raise CorruptCollection(f"{self.path}: ids.npy does not match the manifest")
        index_path = file_path(self.path, manifest, "index")
        import faiss

        try:
            # IVFPQ: FAISS would rebuild an nlist x M x 256 float table on read (not stored
            # in the file; 65 MB for a 25 MB index at 1M x 32), breaking the memory target;
            # searching without it kept the tuned recall and speed here.
            index = faiss.read_index(str(index_path), faiss.IO_FLAG_SKIP_PRECOMPUTE_TABLE)
        except RuntimeError as exc:
            raise CorruptCollection(f"{index_path} is not a readable FAISS index: {exc}") from None
        if index.ntotal != n or index.d != dim:
            raise CorruptCollection(f"{index_path} holds {index.ntotal} vectors, manifest says {n}")
        images = None
        if "images" in manifest["files"]:
            images = load_array(file_path(self.path, manifest, "images"))
            if images.ndim != 4 or len(images) != n or images.dtype != np.uint8:
                raise CorruptCollection(f"{self.path}: images.npy does not match the manifest")
        records = open_records(file_path(self.path, manifest, "records"))
        return vectors, ids, index, records, images

    def reload(self) -> "Collection":
        """Re-read the collection from disk (after another process changed it)."""
        self._load()
        return self

    # -- what it holds ---------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def dim(self) -> int:
        return int(self.manifest["dim"])

    @property
    def metric(self) -> str:
        return self.manifest["metric"]

    @property
    def modality(self) -> str:
        return self.manifest["modality"]

    @property
    def info(self) -> dict[str, Any]:
        """A summary of the manifest: what a user wants to know about the collection."""
        m = self.manifest
        return {
            "name": self.name,
            "path": str(self.path),
            "modality": m["modality"],
            "count": m["count"],
            "dim": m["dim"],
            "metric": m["metric"],
            "index": m["index"],
            "encoder": m["encoder"],
            "next_id": m["next_id"],
            "deltas": {"segments": len(m["deltas"]), "items": len(self._dids)},
            "removed_pending": len(self._removed),
            "format_version": m["format_version"],
            "created": m.get("created"),
            "updated": m.get("updated"),
            "bytes": sum(int(e.get("bytes", 0)) for e in m["files"].values()),
        }

    def __len__(self) -> int:
        return int(self.manifest["count"])

    def __repr__(self) -> str:
        return f"<Collection {self.name!r}: {len(self)} x {self.dim} {self.modality}, {self.metric}>"

    def ids(self) -> np.ndarray:
        """Every live id, ascending."""
        return np.array(self._ids)

    def _rows(self, ids: Iterable[int]) -> np.ndarray:
        """Row positions of ``ids`` (ids are kept ascending); UnknownId for any not held."""
        wanted = np.asarray(ids if isinstance(ids, np.ndarray) else list(ids), dtype=np.int64)
        wanted = wanted.reshape(-1)
        stored = self._row_ids
        rows = np.minimum(np.searchsorted(stored, wanted), max(len(stored) - 1, 0))
        held = stored[rows] == wanted if len(stored) else np.zeros(len(wanted), bool)
        if len(self._removed):
            held &= ~np.isin(wanted, self._removed)
        if not held.all():
            missing = int(wanted[np.flatnonzero(~held)[0]])
            raise UnknownId(f"collection {self.name} has no item with id {missing}")
        return rows

    def _take(self, main: np.ndarray, delta: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Rows of the main array, continued by the delta segments' array."""
        if delta is None or not len(delta):
            return np.asarray(main[rows])
        out = np.empty((len(rows), *main.shape[1:]), main.dtype)
        in_main = rows < self._n_main
        out[in_main] = main[rows[in_main]]
        out[~in_main] = delta[rows[~in_main] - self._n_main]
        return out

    def _main_vectors(self, ids: np.ndarray) -> np.ndarray:
        """Vectors of ids the main index returned (held, not removed): the re-rank's fast path,
        without the checks of :meth:`vectors`."""
        if self._main_ids_are_rows:
            return self._main_array[ids]
        return self._main_array[np.searchsorted(self._main_ids, ids)]

    def vectors(self, ids: Iterable[int] | None = None) -> np.ndarray:
        """Stored vectors (unit rows for metric cosine) for ``ids``, or all of them."""
        if ids is None:
            if len(self._removed):
                return self._take(self._vectors, self._dvecs, self._rows(self._ids))
            return np.concatenate([self._vectors, self._dvecs])
        return self._take(self._vectors, self._dvecs, self._rows(ids))

    def images(self, ids: Iterable[int]) -> np.ndarray:
        """The stored images (uint8, at the collection's size) of ``ids``.

        Image collections keep each item's pixels, as encoded, in images.npy: grids show
        them and ``evaluate`` compares the latents against them.
        """
        if self._main_images is None:
            raise InvalidInput(f"collection {self.name} keeps no images")
        return self._take(self._main_images, self._dimages, self._rows(ids))

    def get(self, ids: Iterable[int] | int) -> list[Hit]:
        """The stored records of ``ids``, as hits at distance 0.0."""
        wanted = [int(ids)] if np.isscalar(ids) else [int(i) for i in ids]
        self._rows(wanted)
        found = self._fetch(wanted)
        return [Hit(i, 0.0, *found[i]) for i in wanted]

    def _fetch(self, ids: Sequence[int]) -> dict[int, tuple]:
        """Records (label, source, text) by id, from the segment holding each id."""
        out: dict[int, tuple] = {}
        if isinstance(ids, np.ndarray):
            ids = ids.tolist()
        for con, part in self._by_segment(ids):
            for start in range(0, len(part), 900):  # under SQLite's parameter limit
                chunk = part[start : start + 900]
                marks = ",".join("?" * len(chunk))
                for row in con.execute(
                    f"SELECT id, label, source, text FROM records WHERE id IN ({marks})", chunk
                ):
                    out[row[0]] = row[1:]
        return out

    def _by_segment(self, ids: list[int]) -> list[tuple[sqlite3.Connection, list[int]]]:
        """``ids`` grouped by the records database that holds them (ids ascend by segment)."""
        if not self._record_dbs or not ids or max(ids) < self._record_dbs[0][0]:
            return [(self._records, ids)]
        starts = [first for first, _ in self._record_dbs]
        cons = [self._records] + [con for _, con in self._record_dbs]
        groups: dict[int, list[int]] = {}
        for i in ids:
            groups.setdefault(bisect.bisect_right(starts, i), []).append(i)
        return [(cons[s], part) for s, part in groups.items()]

    # -- encoding --------------------------------------------------------------------------

    @property
    def encoder(self) -> _encoders.Encoder:
        """The stored encoder, loaded on first use."""
        if self._encoder is None:
            self._encoder = _encoders.load(self.path / "encoder", self.manifest["encoder"])
        return self._encoder

    def encode(self, items: Any) -> np.ndarray:
        """Encode items with the stored encoder: float32 (n, dim); no index involved."""
        out = np.asarray(self.encoder.encode(items), dtype=np.float32)
        if out.ndim != 2 or out.shape[1] != self.dim:
            raise EncoderError(f"encoder returned shape {out.shape}, expected (n, {self.dim})")
        return out

    def _query_vectors(self, queries: Any, batch: bool) -> np.ndarray:
        """Turn queries (vectors, images or strings) into search-ready float32 rows."""
        if isinstance(queries, str):
            if batch:
                raise InvalidInput("search_batch takes a list of queries, not one string")
            vecs = self._encode_queries(queries, "text")  # one string: errors say "query"
        elif isinstance(queries, (list, tuple)) and queries and all(isinstance(q, str) for q in queries):
            vecs = self._encode_queries(list(queries), "text")
        else:
            arr = np.asarray(queries)
            if arr.dtype == object:
                raise InvalidInput("queries must be vectors, images or strings")
            # One query is a 1-D vector (or a (1, dim) row); a batch is (n, dim).
            # Image collections hand anything else to the encoder as images.
            as_vector = arr.ndim == (2 if batch else 1) or (not batch and arr.shape[:1] == (1,)
                                                           and arr.ndim == 2)
            if self.modality == "image" and not (as_vector and arr.shape[-1] == self.dim):
                vecs = self._encode_queries(arr if batch else arr[None], "image")
            elif not as_vector:
                shape = "(n, dim)" if batch else f"({self.dim},)"
                raise DimensionMismatch(f"a vector query must have shape {shape}, got {arr.shape}")
            else:
                vecs = arr
        vecs = as_vectors(vecs, self.dim)
        return _index.normalise(vecs) if self.metric == "cosine" else vecs

    def _encode_queries(self, items: Any, kind: str) -> np.ndarray:
        if self.modality != kind:
            raise EncoderError(
                f"collection {self.name} holds {self.modality}; it cannot be queried by {kind}"
            )
        return self.encode(items)

    # -- searching -------------------------------------------------------------------------

    def _allowed(self, where: dict[str, Any] | None) -> np.ndarray | None:
        if not where:
            return None
        clauses, values = [], []
        for key, value in where.items():
            if not isinstance(key, str) or not _WHERE_KEY.match(key):
                raise InvalidInput(f"invalid where key {key!r}")
            if key in _COLUMNS:
                column = key
            else:
                column = f"json_extract(extra, '$.{key}')"
            if value is None:
                clauses.append(f"{column} IS NULL")
            else:
                clauses.append(f"{column} = ?")
                values.append(value if key == "id" else str(value))
        sql = "SELECT id FROM records WHERE " + " AND ".join(clauses) + " ORDER BY id"
        rows = []
        try:
            for con in [self._records, *(con for _, con in self._record_dbs)]:
                rows += con.execute(sql, values).fetchall()
        except sqlite3.Error as exc:
            raise InvalidInput(f"cannot filter by {where}: {exc}") from None
        found = np.array([r[0] for r in rows], dtype=np.int64)
        return found[~np.isin(found, self._removed)] if len(self._removed) else found

    def _search_vectors(
        self, vecs: np.ndarray, k: int, where: dict | None, exclude: Sequence[int] | None = None,
        *, recall: float | None = None, exact: bool = False,
    ) -> list[list[Hit]]:
        if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
            raise InvalidInput(f"k must be a positive integer, got {k!r}")
        params, typed = self._point(recall)
        allowed = self._allowed(where)
        pool = len(self) if allowed is None else len(allowed)
        extra = 1 if exclude is not None else 0
        k_eff = min(int(k) + extra, pool)
        if k_eff == 0:
            return [[] for _ in vecs]
        D, I = self._search_main(vecs, k_eff, allowed, params, typed, exact)
        if len(self._dids):
            D, I = self._with_deltas(vecs, D, I, k_eff, allowed)
        id_rows = I.tolist()
        dist_rows = self._distances(D).tolist()
        records = self._fetch(sorted({i for row in id_rows for i in row if i >= 0}))
        out = []
        for q, (dist_row, id_row) in enumerate(zip(dist_rows, id_rows)):
            skip = -1 if exclude is None else exclude[q]
            hits = [Hit(i, d, *records[i]) for d, i in zip(dist_row, id_row) if i >= 0 and i != skip]
            out.append(hits[:k])
        return out

    @property
    def target_recall(self) -> float:
        """The recall@10 the index was tuned to at build time (held-out queries)."""
        return float(self.manifest["index"].get("target_recall", _tuning.DEFAULT_RECALL))

    def _point(self, recall: float | None) -> tuple[dict[str, Any], bool]:
        """Search parameters for a query-time ``recall`` (a point of the tuned curve), and
        whether they differ from the defaults applied to the index."""
        entry = self.manifest["index"]
        params = entry.get("params", {})
        if recall is None:
            return params, False
        recall = _check_recall(recall)
        curve = entry.get("curve")
        if not curve:
            if _index.knob(self._index)[0] is None and "rerank" not in params:
                return params, False  # exact index: every recall is met
            raise InvalidInput(
                f"collection {self.name} has no tuned recall curve (built before recall= "
                "existed); rebuild it to choose a recall at query time")
        return _tuning.pick(curve, recall)["params"], True

    def _search_main(self, vecs: np.ndarray, k: int, allowed: np.ndarray | None,
                     params: dict[str, Any], typed: bool = False, exact: bool = False):
        """Raw scores and ids from the main index (at most ``k`` per query)."""
        live_main = self._ids[: self._n_main - len(self._removed)]
        if allowed is not None and len(self._dids):
            allowed = allowed[allowed < self._dids[0]]
        k = min(k, len(live_main) if allowed is None else len(allowed))
        if k == 0:
            return np.empty((len(vecs), 0), np.float32), np.empty((len(vecs), 0), np.int64)
        if exact:
            return self._exact_main(vecs, k, allowed)
        D, I = _index.search(
            self._index, vecs, k, params, vectors_of=self._main_vectors, metric=self.metric,
            allowed=allowed, excluded=self._removed if allowed is None else None, typed=typed,
        )
        short = (I < 0).any(axis=1)
        if short.any():  # an approximate index under a filter may return too few: go exact
            D[short], I[short] = self._exact_main(vecs[short], k, allowed)
        return D, I

    def _exact_main(self, vecs: np.ndarray, k: int, allowed: np.ndarray | None):
        """Brute force over the main segment's live vectors (or the ``allowed`` ids)."""
        if allowed is not None:
            return _index.exact_search(self._vectors[self._rows(allowed)], allowed, vecs, k,
                                       self.metric)
        # over the memory-mapped file in chunks, then without the removed ids
        wide = k + len(self._removed)
        D, I = _index.exact_search(self._vectors, self._main_ids, vecs, wide, self.metric)
        if len(self._removed):
            order = np.argsort(np.isin(I, self._removed), axis=1, kind="stable")
            D, I = np.take_along_axis(D, order, 1), np.take_along_axis(I, order, 1)
        return D[:, :k], I[:, :k]

    def _with_deltas(self, vecs, D, I, k: int, allowed: np.ndarray | None):
        """Merge exact search over the delta segments into the main results (best ``k``)."""
        dvecs, dids = self._dvecs, self._dids
        if allowed is not None:
            keep = np.isin(dids, allowed)
            dvecs, dids = dvecs[keep], dids[keep]
        if not len(dids):
            return D, I
        D2, I2 = _index.exact_search(dvecs, dids, vecs, min(k, len(dids)), self.metric)
        return _index.merge_best([D, D2], [I, I2], k, self.metric)

    def _distances(self, raw: np.ndarray) -> np.ndarray:
        """FAISS scores as reported distances: Euclidean for l2, 1 - cosine for cosine."""
        if self.metric == "l2":
            return np.sqrt(np.maximum(raw, 0.0, dtype=np.float64))
        return np.maximum(1.0 - raw.astype(np.float64), 0.0)

    def search(self, query: Any, k: int = 10, where: dict[str, Any] | None = None, *,
               recall: float | None = None, exact: bool = False) -> list[Hit]:
        """Nearest items to one query: a vector, an image array, or a string.

        ``recall``: the recall@10 wanted, chosen from the curve tuned at build time (default:
        the build's target); ``exact=True``: brute force over the stored vectors. Distances
        are exact either way."""
        vecs = self._query_vectors(query, batch=False)
        return self._search_vectors(vecs, k, where, recall=recall, exact=exact)[0]

    def search_batch(
        self, queries: Any, k: int = 10, where: dict[str, Any] | None = None, *,
        recall: float | None = None, exact: bool = False,
    ) -> list[list[Hit]]:
        """Nearest items for each of many queries (vectors (n, dim), images, or strings)."""
        vecs = self._query_vectors(queries, batch=True)
        return self._search_vectors(vecs, k, where, recall=recall, exact=exact)

    def neighbors(self, item_id: int, k: int = 10, where: dict[str, Any] | None = None, *,
                  recall: float | None = None, exact: bool = False) -> list[Hit]:
        """Nearest items to a stored item, the item itself excluded."""
        vec = self.vectors([int(item_id)])
        return self._search_vectors(vec, k, where, exclude=[int(item_id)], recall=recall,
                                    exact=exact)[0]

    # -- changing --------------------------------------------------------------------------

    def add(
        self,
        items: Any,
        labels: Sequence[Any] | None = None,
        *,
        sources: Sequence[str | None] | None = None,
        wait: float = 0.0,
        quiet: bool = True,
    ) -> np.ndarray:
        """Encode ``items`` with the stored encoder and append them; returns their new ids."""
        images = None
        if self.modality == "text" and isinstance(items, str):
            items = [items]
        if self.modality == "image":
            from latentsearch.io.images import conform_images

            cfg = self.manifest["encoder"]["config"]
            images = conform_images(items, size=int(cfg["size"]), channels=int(cfg["channels"]))
            vecs = self.encode(images)
        elif self.modality == "text":
            vecs = self.encode(items)
        else:
            vecs = as_vectors(items, self.dim)
        n = len(vecs)
        texts = list(items) if self.modality == "text" else [None] * n
        records = list(zip(_labels_as_text(labels, n), sources or [None] * n, texts, [None] * n))
        return self.add_vectors(vecs, records, images=images, wait=wait, quiet=quiet)

    def add_source(self, source: str, labels: Sequence[Any] | None = None, *,
                   wait: float = 0.0, quiet: bool = True) -> np.ndarray:
        """Load ``source`` the way ``build`` does for this modality and append its items."""
        from latentsearch import pipelines as _sources

        vecs, records, images = _sources.encode_source(self, source, labels)
        return self.add_vectors(vecs, records, images=images, wait=wait, quiet=quiet)

    def add_vectors(self, vecs: np.ndarray, records: Sequence[Record], *,
                    images: np.ndarray | None = None, wait: float = 0.0,
                    quiet: bool = True) -> np.ndarray:
        """Append already-encoded vectors with their records (label, source, text, extra).

        Image collections also take the items' pixels (``images``, as the encoder saw them).
        """
        vecs = as_vectors(vecs, self.dim)
        if len(records) != len(vecs):
            raise InvalidInput(f"got {len(records)} records for {len(vecs)} vectors")
        if self._main_images is None:
            if images is not None:
                raise InvalidInput(f"collection {self.name} keeps no images; pass images=None")
        else:
            shape = self._main_images.shape[1:]
            images = None if images is None else np.asarray(images)
            if images is None or len(images) != len(vecs):
                raise InvalidInput("an image collection needs the images of the vectors it adds")
            if images.dtype != np.uint8 or images.shape[1:] != shape:
                raise InvalidInput(f"images must be uint8 {shape} like the collection's, got "
                                   f"{images.dtype} {images.shape[1:]}")
        if self.metric == "cosine":
            vecs = _index.normalise(vecs)
        if len(vecs) == 0:
            return np.empty(0, dtype=np.int64)
        with writer_lock(self.path, wait):
            self._load()  # the newest generation, under the lock
            start = self.manifest["next_id"]
            new_ids = np.arange(start, start + len(vecs), dtype=np.int64)
            rows = [_record_row(i, r) for i, r in zip(new_ids, records)]
            if (len(self._dids) + len(vecs) > DELTA_LIMIT
                    or self._outgrown(len(self) + len(vecs))):
                self._compact(added=(vecs, new_ids, rows, images), quiet=quiet)
            else:
                self._append(vecs, new_ids, rows, images)
        return new_ids

    def remove(self, ids: Iterable[int], *, wait: float = 0.0, quiet: bool = True) -> int:
        """Remove items by id (unknown ids are an error); returns how many were removed.

        Ids in delta segments are dropped by rewriting the deltas; ids in the main segment
        are listed as removed (hidden from every answer; the index still holds them) until
        the next compaction, which happens here when more than REMOVED_LIMIT ids, or a
        quarter of the main segment, would be listed.
        """
        gone = np.unique(np.asarray(list(ids) if not isinstance(ids, np.ndarray) else ids, dtype=np.int64))
        if len(gone) == 0:
            return 0
        with writer_lock(self.path, wait):
            self._load()
            self._rows(gone)
            in_delta = np.isin(gone, self._dids)
            in_main = gone[~in_delta]
            listed = len(self._removed) + len(in_main)
            if listed > min(REMOVED_LIMIT, self._n_main // 4):
                self._compact(delete=gone, quiet=quiet)
            else:
                self._append(np.empty((0, self.dim), np.float32), np.empty(0, np.int64), [],
                             None, drop=gone[in_delta] if in_delta.any() else None,
                             removed=in_main)
        return len(gone)

    def compact(self, *, wait: float = 0.0, quiet: bool = True) -> None:
        """Fold the delta segments into the main index and files (done automatically when
        they grow past ``DELTA_LIMIT`` items) and purge removed items from the index."""
        with writer_lock(self.path, wait):
            self._load()
            if len(self._dids) or len(self._removed):
                self._compact(quiet=quiet)

    def _outgrown(self, n: int) -> bool:
        """True when the main index is Flat only because it was too small for the asked
        spec (say ``ivf`` on 30 vectors, or ``auto`` below 10,000), and ``n`` is enough."""
        m = self.manifest["index"]
        return m["factory"] == "Flat" and _index.plan(m["spec"], n, self.dim).factory != "Flat"

    def _delta_rows(self) -> list[tuple]:
        """Every stored record row (id, label, source, text, extra) of the delta segments."""
        sql = "SELECT id, label, source, text, extra FROM records ORDER BY id"
        return [row for seg in self._deltas.values() for row in seg.records.execute(sql)]

    def _append(self, vecs, ids, rows, images, drop: np.ndarray | None = None,
                removed: np.ndarray | None = None) -> None:
        """Commit a new delta segment and/or ids ``removed`` from the main segment (caller
        holds the lock); cost in proportion to them, not to the collection.

        With more than MAX_DELTAS segments, or delta ids to ``drop``, the delta segments are
        rewritten as one (cost in proportion to the deltas, at most DELTA_LIMIT items)."""
        m = self.manifest
        gen = m["generation"] + 1
        name = f"delta-{gen:06d}"
        deltas = list(m["deltas"])
        merge = drop is not None or (len(ids) > 0 and len(deltas) >= MAX_DELTAS)
        if merge:
            keep = np.ones(len(self._dids), bool) if drop is None else ~np.isin(self._dids, drop)
            vecs = np.concatenate([self._dvecs[keep], vecs])
            ids = np.concatenate([self._dids[keep], ids])
            gone = set() if drop is None else set(drop.tolist())
            rows = [r for r in self._delta_rows() if r[0] not in gone] + list(rows)
            if self._dimages is not None:
                images = self._dimages[keep] if images is None else np.concatenate(
                    [self._dimages[keep], images])
            deltas = []
        files = {k: v for k, v in m["files"].items() if not (merge and k.startswith("delta-"))}
        staging = Staging(self.path, "write")
        try:
            if len(ids):
                arrays = {"vectors": vecs, "ids": ids}
                if images is not None:
                    arrays["images"] = images
                for part, array in arrays.items():
                    staging.save_array(f"{name}-{part}.npy", array)
                staging.write_records(f"{name}-records.sqlite", list(rows))
                names = {_delta_key(name, p): f"{name}-{p}.npy" for p in arrays}
                names[_delta_key(name, "records")] = f"{name}-records.sqlite"
                files.update(staging.entries(names))
                deltas.append({"name": name, "count": len(ids)})
            n_removed = 0 if removed is None else len(removed)
            if n_removed:
                listed = f"removed-{gen:06d}.npy"
                staging.save_array(listed, np.union1d(self._removed, removed).astype(np.int64))
                files.update(staging.entries({"removed": listed}))
            count = m["count"] + (len(ids) - len(self._dids) if merge else len(ids)) - n_removed
            new = dict(m, files=files, deltas=deltas, generation=gen, count=count,
                       updated=now())
            new["format_version"] = format_version(new)
            if drop is None and len(ids):
                new["next_id"] = int(ids[-1]) + 1
            commit(self.path, staging, new)
        except BaseException:
            staging.discard()
            raise
        self._load(written=files)

    def _compact(self, *, added=None, delete: np.ndarray | None = None, quiet: bool = True) -> None:
        """Write the next generation with every delta (and ``added``) folded into the main
        index and files, minus ``delete`` (caller holds the lock). Rewrites every file: O(n)."""
        vecs, ids = [self._dvecs], [self._dids]
        rows = self._delta_rows()
        images = None if self._main_images is None else [self._dimages]
        if added is not None:
            vecs.append(added[0])
            ids.append(added[1])
            rows += added[2]
            if images is not None:
                images.append(added[3])
        new_vecs, new_ids = np.concatenate(vecs), np.concatenate(ids)
        all_vecs = np.concatenate([self._vectors, new_vecs])
        all_ids = np.concatenate([self._main_ids, new_ids])
        all_images = None if images is None else np.concatenate([self._main_images, *images])
        if len(self._removed):
            delete = self._removed if delete is None else np.union1d(self._removed, delete)
        if delete is not None:
            keep = ~np.isin(all_ids, delete)
            all_vecs, all_ids = all_vecs[keep], all_ids[keep]
            all_images = None if all_images is None else all_images[keep]
            fresh = ~np.isin(new_ids, delete)
            new_vecs, new_ids = new_vecs[fresh], new_ids[fresh]
            gone = set(delete.tolist())
            rows = [r for r in rows if r[0] not in gone]
            delete = delete[np.isin(delete, self._main_ids)]  # the rest was never indexed
        next_id = int(added[1][-1]) + 1 if added is not None else None
        self._write(all_vecs, all_ids, all_images, rows=rows, added=(new_vecs, new_ids),
                    delete=delete, next_id=next_id, quiet=quiet)

    def _write(self, vectors, ids, images, *, rows=(), added=None, delete=None,
               next_id: int | None = None, quiet=True) -> None:
        """Write the next main generation (caller holds the lock) and reload."""
        m = self.manifest
        gen = m["generation"] + 1
        entry = dict(m["index"])
        index = self._index
        rebuild = self._outgrown(len(vectors))
        if not rebuild and delete is not None and len(delete):  # first: HNSW cannot remove
            rebuild = not _index.try_remove(index, delete)
        if not rebuild and added is not None and len(added[1]):
            _index.add(index, *added)
        if rebuild:
            _progress(f"rebuilding index {entry['spec']} for {len(vectors)} vectors", quiet)
            index, entry = _build_and_tune(entry["spec"], vectors, ids, self.metric,
                                           self.target_recall, quiet)
        staging = Staging(self.path, "write")
        try:
            names = {
                "vectors": generation_name("vectors.npy", gen),
                "ids": generation_name("ids.npy", gen),
                "index": generation_name("index.faiss", gen),
                "records": generation_name("records.sqlite", gen),
            }
            if images is not None:
                names["images"] = generation_name("images.npy", gen)
                staging.save_array(names["images"], images)
            staging.save_array(names["vectors"], vectors)
            staging.save_array(names["ids"], ids)
            _write_index(index, staging.path(names["index"]))
            staging.write_records(
                names["records"], list(rows),
                base=file_path(self.path, m, "records"), delete_ids=delete,
            )
            files = {k: v for k, v in m["files"].items()
                     if k not in names and k != "removed" and not k.startswith("delta-")}
            files.update(staging.entries(names))
            new = dict(m, files=files, deltas=[], generation=gen, count=len(ids),
                       updated=now())
            new["format_version"] = format_version(new)
            new["index"] = entry
            if next_id is not None:
                new["next_id"] = next_id
            commit(self.path, staging, new)
        except BaseException:
            staging.discard()
            # the in-memory index may hold the uncommitted change; the files were verified
            self._load(reuse=False, written=m["files"])
            raise
        self._load(reuse=False, written=files)


BATCH = 100_000


def _write_vectors(path: Path, vectors, dim: int, metric: str, quiet: bool) -> np.ndarray:
    """Check, normalise (cosine) and write ``vectors`` to ``path`` batch by batch.

    Returns the written file memory-mapped: the index is built from it.
    """
    n = len(vectors)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, dim))
    for start in range(0, n, BATCH):
        try:
            batch = as_vectors(vectors[start : start + BATCH], dim)
        except InvalidInput as exc:
            raise type(exc)(_shift_row(str(exc), start)) from None
        if metric == "cosine":
            try:
                batch = _index.normalise(batch)
            except InvalidInput as exc:
                raise InvalidInput(_shift_row(str(exc), start)) from None
        out[start : start + len(batch)] = batch
        if n > BATCH:
            _progress(f"vectors {min(start + BATCH, n):,}/{n:,} checked and written", quiet)
    out.flush()
    del out
    return np.load(path, mmap_mode="r", allow_pickle=False)


def _shift_row(message: str, offset: int) -> str:
    """Row numbers in a batch's error message, made global."""
    return re.sub(r"row (\d+)", lambda m: f"row {int(m.group(1)) + offset}", message)


def _record_row(item_id: int, record: Record) -> tuple:
    label, source, text, extra = record
    return (int(item_id), label, source, text, json.dumps(extra) if extra else None)


def _write_index(index, path: Path) -> None:
    import faiss

    faiss.write_index(index, str(path))


def _build_and_tune(spec: str, vectors: np.ndarray, ids: np.ndarray, metric: str,
                    target: float, quiet: bool = True) -> tuple[Any, dict[str, Any]]:
    """The index for ``spec`` (``auto`` chosen by measurement) and its manifest entry."""
    if spec.strip().lower() != "auto":
        return _tuning.build_tuned(_index.plan(spec, len(vectors), vectors.shape[1]),
                                   vectors, ids, metric, target)
    if len(vectors) >= _index.AUTO_FLAT_BELOW:
        _progress(f"auto: measuring candidate indexes at recall {target}", quiet)
    choice, (index, entry) = _tuning.choose(vectors, ids, metric, target)
    entry = dict(entry, spec=spec, choice=choice)
    entry.pop("qps_at_target", None)  # in the choice's candidates
    return index, entry


# -- building and opening ------------------------------------------------------------------


def create(
    name: str,
    *,
    encoder: _encoders.Encoder,
    vectors: np.ndarray,
    records: Sequence[Record],
    root: str | os.PathLike | None = None,
    index: str = "auto",
    metric: str = "l2",
    overwrite: bool = False,
    quiet: bool = True,
    extra: dict[str, Any] | None = None,
    images: np.ndarray | None = None,
    recall: float = _tuning.DEFAULT_RECALL,
) -> Collection:
    """Write a new collection from encoded vectors, their records and the encoder.

    ``recall`` is the recall@10 the index is tuned to on held-out queries (``_tuning``).

    ``vectors`` may be a memory-mapped array: it is checked, normalised and written in
    batches of ``BATCH`` rows, and the index is built from the written file, so memory
    grows with the batch and the index, not with a second copy of the corpus.
    ``images`` (uint8 (n, H, W, C)), for image collections, are kept as images.npy.
    """
    check_name(name)
    if metric not in _index.METRICS:
        raise InvalidInput(f"unknown metric {metric!r}; use one of: {', '.join(_index.METRICS)}")
    if not hasattr(vectors, "shape"):
        vectors = as_vectors(vectors, encoder.dim) if len(vectors) else np.zeros((0, encoder.dim))
    if vectors.ndim != 2 or (len(vectors) and vectors.shape[1] != encoder.dim):
        raise DimensionMismatch(f"vectors must be (n, {encoder.dim}), got shape {vectors.shape}")
    if len(records) != len(vectors):
        raise InvalidInput(f"got {len(records)} records for {len(vectors)} vectors")
    if images is not None and len(images) != len(vectors):
        raise InvalidInput(f"got {len(images)} images for {len(vectors)} vectors")
    root_path = resolve_root(root)
    target = root_path / name
    if target.exists() and not overwrite:
        raise CollectionExists(
            f"collection {target} already exists; pass --overwrite (overwrite=True) or choose another --name"
        )
    root_path.mkdir(parents=True, exist_ok=True)
    clear_stale_builds(root_path, name)
    n, dim = len(vectors), encoder.dim
    ids = np.arange(n, dtype=np.int64)
    tuned_to = _check_recall(recall)
    staging = Staging(root_path, name)
    try:
        names = {"vectors": "vectors.npy", "ids": "ids.npy", "index": "index.faiss",
                 "records": "records.sqlite"}
        stored = _write_vectors(staging.path(names["vectors"]), vectors, dim, metric, quiet)
        t0 = time.perf_counter()
        built, entry = _build_and_tune(index, stored, ids, metric, tuned_to, quiet)
        params = entry["params"]
        _progress(
            f"index {entry['factory']} over {n} vectors in {time.perf_counter() - t0:.1f}s"
            + (f", tuned {params}" if params else ""),
            quiet,
        )
        if images is not None:
            names["images"] = "images.npy"
            staging.save_array(names["images"], images)
        staging.save_array(names["ids"], ids)
        _write_index(built, staging.path(names["index"]))
        staging.write_records(names["records"], [_record_row(i, r) for i, r in zip(ids, records)])
        enc_dir = staging.path("encoder/.keep").parent
        for rel in encoder.save(enc_dir):
            names[f"encoder/{rel}"] = f"encoder/{rel}"
        stamp = now()

        manifest = {
            "format_version": 1,
            "deltas": [],
            "latentsearch_version": __version__,
            "modality": encoder.modality,
            "encoder": {"name": encoder.name, "config": encoder.config()},
            "dim": encoder.dim,
            "metric": metric,
            "index": entry,
            "count": n,
            "next_id": n,
            "generation": 1,
            "created": stamp,
            "updated": stamp,
            "files": staging.entries(names),
            **(extra or {}),
        }
        write_manifest(staging.dir / MANIFEST, manifest)
        publish_new(staging, target, overwrite=overwrite)
    except BaseException:
        staging.discard()
        raise
    return Collection(target)


def build_vectors(
    vectors: Any,
    labels: Sequence[Any] | None = None,
    *,
    name: str,
    root: str | os.PathLike | None = None,
    index: str = "auto",
    metric: str = "l2",
    overwrite: bool = False,
    quiet: bool = True,
    recall: float = _tuning.DEFAULT_RECALL,
) -> Collection:
    """Build a collection from vectors made elsewhere (an array (n, dim) or a .npy path).

    ``index``: a spec (``auto``, ``flat``, ``ivf``, ``ivffs``, ``hnsw``, ``ivfpq``) or a FAISS
    factory string; ``recall``: the recall@10 it is tuned to (held-out queries)."""
    if isinstance(vectors, (str, os.PathLike)):
        vectors = load_npy(Path(vectors), mmap=True)  # read batch by batch, not all at once
    if not (isinstance(vectors, np.ndarray) and vectors.ndim == 2 and vectors.shape[1] > 0
            and vectors.dtype.kind in "fiu"):
        vectors = as_vectors(vectors)
    n = len(vectors)
    records = [(lab, None, None, None) for lab in _labels_as_text(labels, n)]
    return create(name, encoder=VectorEncoder(vectors.shape[1]), vectors=vectors,
                  records=records, root=root, index=index, metric=metric,
                  overwrite=overwrite, quiet=quiet, recall=recall)


def _check_recall(recall: Any) -> float:
    if isinstance(recall, bool) or not isinstance(recall, (int, float, np.floating)) \
            or not 0.0 < float(recall) <= 1.0:
        raise InvalidInput(f"recall must be a number in (0, 1], got {recall!r}")
    return float(recall)


def load_npy(path: Path, *, mmap: bool = False) -> np.ndarray:
    """A user's .npy file, refusing pickled objects (memory-mapped if ``mmap``)."""
    try:
        return np.load(path, allow_pickle=False, mmap_mode="r" if mmap else None)
    except FileNotFoundError:
        raise InvalidInput(f"no such file: {path}") from None
    except (ValueError, OSError) as exc:
        raise InvalidInput(f"{path} is not a plain .npy array: {str(exc).splitlines()[0]}") from None


def open_collection(
    name: str | os.PathLike, root: str | os.PathLike | None = None, *, verify: bool = True
) -> Collection:
    """Open a collection by name under the root, or by path to its folder."""
    return Collection(locate(name, root), verify=verify)


def list_collections(root: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """A summary per collection folder under the root (unreadable ones say why)."""
    root_path = resolve_root(root)
    out = []
    if not root_path.is_dir():
        return out
    for folder in sorted(p for p in root_path.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if not (folder / MANIFEST).exists():
            continue
        try:
            m = read_manifest(folder)
            out.append({"name": folder.name, "modality": m["modality"], "count": m["count"],
                        "dim": m["dim"], "metric": m["metric"], "index": m["index"]["factory"]})
        except Exception as exc:  # listing must not stop at one broken collection
            out.append({"name": folder.name, "error": str(exc)})
    return out

"""Collections: opening, building, searching and changing them.

A :class:`Collection` is a read view of one committed generation of a collection folder
(see ``_store``): vectors memory-mapped, ids, the FAISS index, and the records database.
The encoder is loaded only when an image or text must be encoded, so searching by id or by
vector never imports TensorFlow. Writes (``add``, ``remove``) take the writer lock, build
the next generation, commit it, and reload the view.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from . import _index, _store
from . import encoders as _encoders
from ._errors import (
    CorruptCollection,
    DimensionMismatch,
    EncoderError,
    InvalidInput,
    UnknownId,
)
from ._hit import Hit, label_text
from .encoders._vectors import VectorEncoder, as_vectors

__all__ = ["Collection", "open_collection", "build_vectors", "create", "list_collections"]

_WHERE_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_COLUMNS = ("id", "label", "source", "text")
Record = tuple[str | None, str | None, str | None, dict | None]  # label, source, text, extra


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
    """A collection opened for reading (and, through the writer lock, for changes)."""

    def __init__(self, path: Path, *, verify: bool = True):
        self.path = Path(path)
        self._verify = verify
        self._encoder: _encoders.Encoder | None = None
        self._load()

    # -- loading ---------------------------------------------------------------------------

    def _load(self) -> None:
        for attempt in range(3):  # a writer may commit between reading the manifest and files
            manifest = _store.read_manifest(self.path)
            try:
                self._load_generation(manifest)
                return
            except CorruptCollection:
                if attempt == 2 or _store.read_manifest(self.path) == manifest:
                    raise
        raise AssertionError("unreachable")

    def _load_generation(self, manifest: dict[str, Any]) -> None:
        if self._verify:
            _store.verify(self.path, manifest)
        vectors = _store.load_array(_store.file_path(self.path, manifest, "vectors"))
        ids = _store.load_array(_store.file_path(self.path, manifest, "ids"), mmap=False)
        n, dim = manifest["count"], manifest["dim"]
        if vectors.shape != (n, dim) or vectors.dtype != np.float32:
            raise CorruptCollection(
                f"{self.path}: vectors are {vectors.shape} {vectors.dtype}, manifest says ({n}, {dim})"
            )
        if ids.shape != (n,) or ids.dtype != np.int64:
            raise CorruptCollection(f"{self.path}: ids.npy does not match the manifest")
        index_path = _store.file_path(self.path, manifest, "index")
        import faiss

        try:
            index = faiss.read_index(str(index_path))
        except RuntimeError as exc:
            raise CorruptCollection(f"{index_path} is not a readable FAISS index: {exc}") from None
        _index.drop_precomputed_tables(index)
        if index.ntotal != n or index.d != dim:
            raise CorruptCollection(f"{index_path} holds {index.ntotal} vectors, manifest says {n}")
        images = None
        if "images" in manifest["files"]:
            images = _store.load_array(_store.file_path(self.path, manifest, "images"))
            if images.ndim != 4 or len(images) != n or images.dtype != np.uint8:
                raise CorruptCollection(f"{self.path}: images.npy does not match the manifest")
        records = _store.open_records(_store.file_path(self.path, manifest, "records"))
        old = getattr(self, "_records", None)
        if old is not None:
            old.close()
        self.manifest = manifest
        self._vectors = vectors
        self._ids = ids
        self._index = index
        self._records = records
        self._images = images
        _index.apply(index, manifest["index"].get("params", {}))

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
        rows = np.minimum(np.searchsorted(self._ids, wanted), max(len(self._ids) - 1, 0))
        held = self._ids[rows] == wanted if len(self._ids) else np.zeros(len(wanted), bool)
        if not held.all():
            missing = int(wanted[np.flatnonzero(~held)[0]])
            raise UnknownId(f"collection {self.name} has no item with id {missing}")
        return rows

    def vectors(self, ids: Iterable[int] | None = None) -> np.ndarray:
        """Stored vectors (unit rows for metric cosine) for ``ids``, or all of them."""
        if ids is None:
            return np.array(self._vectors)
        return np.asarray(self._vectors[self._rows(ids)])

    def images(self, ids: Iterable[int]) -> np.ndarray:
        """The stored images (uint8, at the collection's size) of ``ids``.

        Image collections keep each item's pixels, as encoded, in images.npy: grids show
        them and ``evaluate`` compares the latents against them.
        """
        if self._images is None:
            raise InvalidInput(f"collection {self.name} keeps no images")
        return np.asarray(self._images[self._rows(ids)])

    def get(self, ids: Iterable[int] | int) -> list[Hit]:
        """The stored records of ``ids``, as hits at distance 0.0."""
        wanted = [int(ids)] if np.isscalar(ids) else [int(i) for i in ids]
        self._rows(wanted)
        found = self._fetch(wanted)
        return [Hit(i, 0.0, *found[i]) for i in wanted]

    def _fetch(self, ids: Sequence[int]) -> dict[int, tuple]:
        """Records (label, source, text) by id, in chunks under SQLite's parameter limit."""
        out: dict[int, tuple] = {}
        if isinstance(ids, np.ndarray):
            ids = ids.tolist()
        for start in range(0, len(ids), 900):
            chunk = ids[start : start + 900]
            marks = ",".join("?" * len(chunk))
            for row in self._records.execute(
                f"SELECT id, label, source, text FROM records WHERE id IN ({marks})", chunk
            ):
                out[row[0]] = row[1:]
        return out

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
        try:
            rows = self._records.execute(sql, values).fetchall()
        except sqlite3.Error as exc:
            raise InvalidInput(f"cannot filter by {where}: {exc}") from None
        return np.array([r[0] for r in rows], dtype=np.int64)

    def _search_vectors(
        self, vecs: np.ndarray, k: int, where: dict | None, exclude: Sequence[int] | None = None
    ) -> list[list[Hit]]:
        if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
            raise InvalidInput(f"k must be a positive integer, got {k!r}")
        allowed = self._allowed(where)
        pool = len(self) if allowed is None else len(allowed)
        extra = 1 if exclude is not None else 0
        k_eff = min(int(k) + extra, pool)
        if k_eff == 0:
            return [[] for _ in vecs]
        params = self.manifest["index"].get("params", {})
        D, I = _index.search(
            self._index, vecs, k_eff, params,
            vectors_of=self.vectors, metric=self.metric, allowed=allowed,
        )
        short = (I < 0).any(axis=1)
        if short.any():  # an approximate index under a filter may return too few: go exact
            sub_ids = self._ids if allowed is None else allowed
            sub_vecs = self._vectors[self._rows(sub_ids)] if allowed is not None else self._vectors
            D2, I2 = _index.exact_search(sub_vecs, sub_ids, vecs[short], k_eff, self.metric)
            D[short], I[short] = D2, I2
        id_rows = I.tolist()
        dist_rows = self._distances(D).tolist()
        records = self._fetch(sorted({i for row in id_rows for i in row if i >= 0}))
        out = []
        for q, (dist_row, id_row) in enumerate(zip(dist_rows, id_rows)):
            skip = -1 if exclude is None else exclude[q]
            hits = [Hit(i, d, *records[i]) for d, i in zip(dist_row, id_row) if i >= 0 and i != skip]
            out.append(hits[:k])
        return out

    def _distances(self, raw: np.ndarray) -> np.ndarray:
        """FAISS scores as reported distances: Euclidean for l2, 1 - cosine for cosine."""
        if self.metric == "l2":
            return np.sqrt(np.maximum(raw, 0.0, dtype=np.float64))
        return np.maximum(1.0 - raw.astype(np.float64), 0.0)

    def search(self, query: Any, k: int = 10, where: dict[str, Any] | None = None) -> list[Hit]:
        """Nearest items to one query: a vector, an image array, or a string."""
        return self._search_vectors(self._query_vectors(query, batch=False), k, where)[0]

    def search_batch(
        self, queries: Any, k: int = 10, where: dict[str, Any] | None = None
    ) -> list[list[Hit]]:
        """Nearest items for each of many queries (vectors (n, dim), images, or strings)."""
        return self._search_vectors(self._query_vectors(queries, batch=True), k, where)

    def neighbors(self, item_id: int, k: int = 10, where: dict[str, Any] | None = None) -> list[Hit]:
        """Nearest items to a stored item, the item itself excluded."""
        vec = self.vectors([int(item_id)])
        return self._search_vectors(vec, k, where, exclude=[int(item_id)])[0]

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
            from ._images import conform_images

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
        from . import _sources

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
        if (self._images is not None) and (images is None or len(images) != len(vecs)):
            raise InvalidInput("an image collection needs the images of the vectors it adds")
        if self.metric == "cosine":
            vecs = _index.normalise(vecs)
        if len(vecs) == 0:
            return np.empty(0, dtype=np.int64)
        with _store.writer_lock(self.path, wait):
            self._load()  # the newest generation, under the lock
            m = self.manifest
            new_ids = np.arange(m["next_id"], m["next_id"] + len(vecs), dtype=np.int64)
            all_vecs = np.concatenate([np.asarray(self._vectors), vecs])
            all_ids = np.concatenate([self._ids, new_ids])
            rows = [_record_row(i, r) for i, r in zip(new_ids, records)]
            all_images = None
            if self._images is not None:
                all_images = np.concatenate([np.asarray(self._images), images])
            self._write(all_vecs, all_ids, all_images, rows=rows, added=(vecs, new_ids),
                        quiet=quiet)
        return new_ids

    def remove(self, ids: Iterable[int], *, wait: float = 0.0, quiet: bool = True) -> int:
        """Remove items by id (unknown ids are an error); returns how many were removed."""
        gone = np.unique(np.asarray(list(ids) if not isinstance(ids, np.ndarray) else ids, dtype=np.int64))
        if len(gone) == 0:
            return 0
        with _store.writer_lock(self.path, wait):
            self._load()
            self._rows(gone)
            keep = ~np.isin(self._ids, gone)
            images = None if self._images is None else np.asarray(self._images)[keep]
            self._write(np.asarray(self._vectors)[keep], self._ids[keep], images, delete=gone,
                        quiet=quiet)
        return len(gone)

    def _write(self, vectors, ids, images, *, rows=(), added=None, delete=None, quiet=True) -> None:
        """Write the next generation (caller holds the lock) and reload."""
        m = self.manifest
        gen = m["generation"] + 1
        plan = _index.IndexPlan(m["index"]["spec"], m["index"]["factory"], m["index"].get("params", {}))
        wanted = _index.plan(plan.spec, len(vectors), self.dim)
        index, params = self._index, dict(plan.params)
        rebuild = plan.factory != wanted.factory and plan.factory == "Flat"
        if not rebuild and added is not None:
            _index.add(index, *added)
        elif not rebuild and delete is not None:
            rebuild = not _index.try_remove(index, delete)
        if rebuild:
            plan = wanted
            _progress(f"rebuilding index {plan.factory} for {len(vectors)} vectors", quiet)
            index, params = _build_and_tune(plan, vectors, ids, self.metric)
        staging = _store.Staging(self.path, "write")
        try:
            names = {
                "vectors": _store.generation_name("vectors.npy", gen),
                "ids": _store.generation_name("ids.npy", gen),
                "index": _store.generation_name("index.faiss", gen),
                "records": _store.generation_name("records.sqlite", gen),
            }
            if images is not None:
                names["images"] = _store.generation_name("images.npy", gen)
                staging.save_array(names["images"], images)
            staging.save_array(names["vectors"], vectors)
            staging.save_array(names["ids"], ids)
            _write_index(index, staging.path(names["index"]))
            staging.write_records(
                names["records"], list(rows),
                base=_store.file_path(self.path, m, "records"), delete_ids=delete,
            )
            files = {k: v for k, v in m["files"].items() if k not in names}
            files.update(staging.entries(names))
            new = dict(m, files=files, generation=gen, count=len(ids), updated=_store.now())
            new["index"] = {"spec": plan.spec, "factory": plan.factory, "params": params}
            if added is not None:
                new["next_id"] = int(added[1][-1]) + 1
            _store.commit(self.path, staging, new)
        except BaseException:
            staging.discard()
            self._load()  # the in-memory index may hold the uncommitted change
            raise
        self._load()


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


def _build_and_tune(plan: _index.IndexPlan, vectors: np.ndarray, ids: np.ndarray, metric: str):
    index = _index.build(plan.factory, vectors.shape[1], metric, vectors, ids)
    rows_of = lambda wanted: vectors[np.searchsorted(ids, wanted)]  # noqa: E731
    params = _index.tune(index, vectors, ids, metric, plan.params, vectors_of=rows_of)
    _index.apply(index, params)
    return index, params


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
) -> Collection:
    """Write a new collection from encoded vectors, their records and the encoder.

    ``vectors`` may be a memory-mapped array: it is checked, normalised and written in
    batches of ``BATCH`` rows, and the index is built from the written file, so memory
    grows with the batch and the index, not with a second copy of the corpus.
    ``images`` (uint8 (n, H, W, C)), for image collections, are kept as images.npy.
    """
    _store.check_name(name)
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
    root_path = _store.resolve_root(root)
    target = root_path / name
    if target.exists() and not overwrite:
        raise _store.CollectionExists(
            f"collection {target} already exists; pass --overwrite (overwrite=True) or choose another --name"
        )
    root_path.mkdir(parents=True, exist_ok=True)
    _store.clear_stale_builds(root_path, name)
    n, dim = len(vectors), encoder.dim
    ids = np.arange(n, dtype=np.int64)
    plan = _index.plan(index, n, dim)
    staging = _store.Staging(root_path, name)
    try:
        names = {"vectors": "vectors.npy", "ids": "ids.npy", "index": "index.faiss",
                 "records": "records.sqlite"}
        stored = _write_vectors(staging.path(names["vectors"]), vectors, dim, metric, quiet)
        t0 = time.perf_counter()
        built, params = _build_and_tune(plan, stored, ids, metric)
        _progress(
            f"index {plan.factory} over {n} vectors in {time.perf_counter() - t0:.1f}s"
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
        stamp = _store.now()
        from . import __version__

        manifest = {
            "format_version": _store.FORMAT_VERSION,
            "latentsearch_version": __version__,
            "modality": encoder.modality,
            "encoder": {"name": encoder.name, "config": encoder.config()},
            "dim": encoder.dim,
            "metric": metric,
            "index": {"spec": plan.spec, "factory": plan.factory, "params": params},
            "count": n,
            "next_id": n,
            "generation": 1,
            "created": stamp,
            "updated": stamp,
            "files": staging.entries(names),
            **(extra or {}),
        }
        _store.write_manifest(staging.dir / _store.MANIFEST, manifest)
        _store.publish_new(staging, target, overwrite=overwrite)
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
) -> Collection:
    """Build a collection from vectors made elsewhere (an array (n, dim) or a .npy path)."""
    if isinstance(vectors, (str, os.PathLike)):
        vectors = load_npy(Path(vectors), mmap=True)  # read batch by batch, not all at once
    if not (isinstance(vectors, np.ndarray) and vectors.ndim == 2 and vectors.shape[1] > 0
            and vectors.dtype.kind in "fiu"):
        vectors = as_vectors(vectors)
    n = len(vectors)
    records = [(lab, None, None, None) for lab in _labels_as_text(labels, n)]
    return create(name, encoder=VectorEncoder(vectors.shape[1]), vectors=vectors,
                  records=records, root=root, index=index, metric=metric,
                  overwrite=overwrite, quiet=quiet)


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
    return Collection(_store.locate(name, root), verify=verify)


def list_collections(root: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """A summary per collection folder under the root (unreadable ones say why)."""
    root_path = _store.resolve_root(root)
    out = []
    if not root_path.is_dir():
        return out
    for folder in sorted(p for p in root_path.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if not (folder / _store.MANIFEST).exists():
            continue
        try:
            m = _store.read_manifest(folder)
            out.append({"name": folder.name, "modality": m["modality"], "count": m["count"],
                        "dim": m["dim"], "metric": m["metric"], "index": m["index"]["factory"]})
        except Exception as exc:  # listing must not stop at one broken collection
            out.append({"name": folder.name, "error": str(exc)})
    return out

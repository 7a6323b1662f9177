"""The Collection: one object that every thread may search while one thread writes.

A :class:`Collection` holds the current :class:`Snapshot` (one committed generation) and
replaces it with one assignment. Each search takes the current snapshot once, so it sees one
generation from start to end. Writes (``add``, ``remove``, ``compact``) queue on a lock of
the object (threads) and then on the collection's writer lock (processes), load the newest
generation, commit the next one (``writer``), and only then publish its snapshot, built from
the committed files. The encoder is loaded on first use, so searching by id or by vector
never imports TensorFlow.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from latentsearch import encoders as _encoders
from latentsearch import index as _index
from latentsearch.collection import reader, writer
from latentsearch.collection.snapshot import Snapshot, load_snapshot
from latentsearch.encoders.vectors import as_vectors
from latentsearch.errors import DimensionMismatch, EncoderError, InvalidInput
from latentsearch.index.tune import DEFAULT_RECALL
from latentsearch.storage.lock import writer_lock
from latentsearch.storage.manifest import MANIFEST, read_manifest
from latentsearch.storage.paths import locate, resolve_root
from latentsearch.storage.records import record_row
from latentsearch.types import Hit, Record, RecordFields, labels_as_text

__all__ = ["Collection", "open_collection", "list_collections"]


class Collection:
    """A collection opened for searching and, through the writer lock, for changes.

    Thread-safe: any number of threads may search one Collection while others add,
    remove, compact or reload it; writes from several threads run one after another.
    Other processes see a write once it is committed (``reload`` picks it up)."""

    def __init__(self, path: str | os.PathLike, *, verify: bool = True):
        self.path = Path(path)
        self._verify = verify
        self._encoder: _encoders.Encoder | None = None
        self._lock = threading.RLock()  # writers and reloads of this object, one at a time
        self._snapshot: Snapshot = load_snapshot(self.path, check=verify)

    # -- generations -----------------------------------------------------------------------

    @property
    def snapshot(self) -> Snapshot:
        """The current generation, as searches see it (immutable)."""
        return self._snapshot

    @property
    def generation(self) -> int:
        """The committed generation this object currently serves."""
        return self._snapshot.generation

    @property
    def manifest(self) -> dict[str, Any]:
        return self._snapshot.manifest

    def reload(self) -> "Collection":
        """Serve the newest committed generation (after another process changed it)."""
        with self._lock:
            self._snapshot = load_snapshot(self.path, check=self._verify, previous=self._snapshot)
        return self

    def _write(self, change: Callable[[Snapshot], dict | None], wait: float) -> None:
        """Run ``change`` on the newest generation under both locks, then publish the
        snapshot of what it committed (``change`` returns the file entries it wrote)."""
        with self._lock, writer_lock(self.path, wait):
            snap = load_snapshot(self.path, check=self._verify, previous=self._snapshot)
            self._snapshot = snap  # a committed generation: safe to serve
            written = change(snap)
            if written is not None:
                self._snapshot = load_snapshot(self.path, check=self._verify, previous=snap,
                                               written=written)

    # -- what it holds ---------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def dim(self) -> int:
        return self._snapshot.dim

    @property
    def metric(self) -> str:
        return self._snapshot.metric

    @property
    def modality(self) -> str:
        return self._snapshot.manifest["modality"]

    @property
    def target_recall(self) -> float:
        """The recall@10 the index was tuned to at build time (held-out queries)."""
        return float(self.manifest["index"].get("target_recall", DEFAULT_RECALL))

    @property
    def info(self) -> dict[str, Any]:
        """A summary of the manifest: what a user wants to know about the collection."""
        snap = self._snapshot
        m = snap.manifest
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
            "generation": m["generation"],
            "deltas": {"segments": len(m["deltas"]), "items": len(snap.delta_ids)},
            "removed_pending": len(snap.removed),
            "format_version": m["format_version"],
            "created": m.get("created"),
            "updated": m.get("updated"),
            "bytes": sum(int(e.get("bytes", 0)) for e in m["files"].values()),
        }

    def __len__(self) -> int:
        return self._snapshot.count

    def __repr__(self) -> str:
        return f"<Collection {self.name!r}: {len(self)} x {self.dim} {self.modality}, {self.metric}>"

    def ids(self) -> np.ndarray:
        """Every live id, ascending."""
        return np.array(self._snapshot.live_ids)

    def vectors(self, ids: Iterable[int] | None = None) -> np.ndarray:
        """Stored vectors (unit rows for metric cosine) for ``ids``, or all of them."""
        return self._snapshot.vectors(ids)

    def images(self, ids: Iterable[int]) -> np.ndarray:
        """The stored images (uint8, at the collection's size) of ``ids``.

        Image collections keep each item's pixels, as encoded, in images.npy: grids show
        them and ``evaluate`` compares the latents against them.
        """
        return self._snapshot.images(ids)

    def get(self, ids: Iterable[int] | int) -> list[Record]:
        """The stored records of ``ids``, in the order asked (unknown ids are an error)."""
        snap = self._snapshot
        wanted = [int(ids)] if np.isscalar(ids) else [int(i) for i in ids]
        snap.rows(wanted)
        found = snap.records(wanted, extra=True)
        return [Record(i, *found[i]) for i in wanted]

    # -- encoding --------------------------------------------------------------------------

    @property
    def encoder(self) -> _encoders.Encoder:
        """The stored encoder, loaded on first use."""
        if self._encoder is None:
            with self._lock:
                if self._encoder is None:
                    self._encoder = _encoders.load(self.path / "encoder", self.manifest["encoder"])
        return self._encoder

    def encode(self, items: Any) -> np.ndarray:
        """Encode items with the stored encoder: float32 (n, dim); no index involved."""
        out = np.asarray(self.encoder.encode(items), dtype=np.float32)
        if out.ndim != 2 or out.shape[1] != self.dim:
            raise EncoderError(f"encoder returned shape {out.shape}, expected (n, {self.dim})")
        return out

    def _query_vectors(self, snap: Snapshot, queries: Any, batch: bool,
                       kind: str | None = None) -> np.ndarray:
        """Turn queries into search-ready float32 rows. ``kind`` ("vector", "image" or
        "text") says what they are; None guesses: strings are text, and image collections
        encode anything that is not a vector of their dimension as images."""
        dim, modality = snap.dim, snap.manifest["modality"]
        if kind == "text" or (kind is None and _is_text(queries)):
            if isinstance(queries, str):
                if batch:
                    raise InvalidInput("search_batch takes a list of queries, not one string")
                vecs = self._encode_queries(queries, "text", modality)  # errors say "query"
            elif _is_text(queries) and (batch or kind is None):
                vecs = self._encode_queries(list(queries), "text", modality)
            else:
                raise InvalidInput("text= takes a string" if not batch
                                   else "text= takes a list of strings")
        else:
            arr = np.asarray(queries)
            if arr.dtype == object:
                raise InvalidInput("queries must be vectors, images or strings")
            # One query is a 1-D vector (or a (1, dim) row); a batch is (n, dim).
            one_row = arr.ndim == 2 and arr.shape[:1] == (1,)
            as_vector = arr.ndim == (2 if batch else 1) or (not batch and one_row)
            if kind is None:
                guess_image = modality == "image" and not (as_vector and arr.shape[-1] == dim)
                kind = "image" if guess_image else "vector"
            if kind == "image":
                vecs = self._encode_queries(arr if batch else arr[None], "image", modality)
            elif not as_vector:
                shape = "(n, dim)" if batch else f"({dim},)"
                raise DimensionMismatch(f"a vector query must have shape {shape}, got {arr.shape}")
            else:
                vecs = arr  # a wrong dimension is as_vectors' DimensionMismatch
        vecs = as_vectors(vecs, dim)
        return _index.normalise(vecs) if snap.metric == "cosine" else vecs

    def _encode_queries(self, items: Any, kind: str, modality: str) -> np.ndarray:
        if modality != kind:
            raise EncoderError(
                f"collection {self.name} holds {modality}; it cannot be queried by {kind}"
            )
        return self.encode(items)

    # -- searching -------------------------------------------------------------------------

    def search(self, query: Any = None, k: int = 10, where: dict[str, Any] | None = None, *,
               vector: Any = None, image: Any = None, text: str | None = None,
               recall: float | None = None, exact: bool = False) -> list[Hit]:
        """Nearest items to one query: a vector, an image array, or a string.

        Positional ``query`` is guessed (a string is text; on an image collection anything
        but a vector of its dimension is an image); ``vector=``, ``image=`` or ``text=``
        says which, so a vector of the wrong dimension is a DimensionMismatch, never an
        image. ``recall``: the recall@10 wanted, chosen from the curve tuned at build time
        (default: the build's target); ``exact=True``: brute force over the stored vectors.
        Distances are exact either way."""
        snap = self._snapshot  # one generation for the whole call
        given, kind = _one_query(query, vector=vector, image=image, text=text)
        vecs = self._query_vectors(snap, given, batch=False, kind=kind)
        return reader.search_vectors(snap, vecs, k, where, recall=recall, exact=exact)[0]

    def search_batch(
        self, queries: Any = None, k: int = 10, where: dict[str, Any] | None = None, *,
        vector: Any = None, image: Any = None, text: Sequence[str] | None = None,
        recall: float | None = None, exact: bool = False,
    ) -> list[list[Hit]]:
        """Nearest items for each of many queries: vectors (n, dim), images (n, H, W[, C])
        or a list of strings; ``vector=``, ``image=`` or ``text=`` say which, as in
        :meth:`search`."""
        snap = self._snapshot
        given, kind = _one_query(queries, vector=vector, image=image, text=text)
        vecs = self._query_vectors(snap, given, batch=True, kind=kind)
        return reader.search_vectors(snap, vecs, k, where, recall=recall, exact=exact)

    def neighbors(self, item_id: int, k: int = 10, where: dict[str, Any] | None = None, *,
                  recall: float | None = None, exact: bool = False) -> list[Hit]:
        """Nearest items to a stored item, the item itself excluded."""
        snap = self._snapshot  # the item's vector and the search from one generation
        vec = snap.vectors([int(item_id)])
        return reader.search_vectors(snap, vec, k, where, exclude=[int(item_id)],
                                     recall=recall, exact=exact)[0]

    def nearest(self, vectors: Any, k: int = 10, *, exclude: Sequence[int] | None = None,
                where: dict[str, Any] | None = None, recall: float | None = None,
                exact: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest items to each of ``vectors`` (n, dim) as arrays, for bulk work
        that needs no records (``knn``): distances float64 (n, k) as Hits report them and
        ids int64 (n, k), padded with inf / -1 when fewer than ``k`` items qualify;
        ``exclude[q]`` is an id left out of row q (a stored item's own id). One snapshot
        for the whole call; vectors are prepared as :meth:`search_batch` prepares them,
        except that for cosine rows already of unit length (to float32 rounding, as stored
        vectors are) are searched as given: dividing by a norm of 1 +- 1e-7 moves scores
        enough to reorder near-ties, and ``nearest(stored vectors, exclude=their ids)``
        must answer what :meth:`neighbors` answers."""
        snap = self._snapshot
        vecs = self._query_vectors(snap, vectors, batch=True, kind="vector")
        if snap.metric == "cosine" and len(vecs):
            given = as_vectors(vectors, snap.dim)
            unit = np.abs(np.linalg.norm(given, axis=1) - 1.0) <= 1e-6  # stored: <= 2e-7
            vecs[unit] = given[unit]
        if exclude is not None and len(exclude) != len(vecs):
            raise InvalidInput(f"exclude has {len(exclude)} ids for {len(vecs)} vectors")
        return reader.nearest_arrays(snap, vecs, k, where, exclude, recall=recall, exact=exact)

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
            images = self.encoder.conform(items)  # the build's size, colour and fit
            vecs = self.encode(images)
        elif self.modality == "text":
            vecs = self.encode(items)
        else:
            vecs = as_vectors(items, self.dim)
        n = len(vecs)
        texts = list(items) if self.modality == "text" else [None] * n
        records = list(zip(labels_as_text(labels, n), sources or [None] * n, texts, [None] * n))
        return self.add_vectors(vecs, records, images=images, wait=wait, quiet=quiet)

    def add_vectors(self, vecs: np.ndarray, records: Sequence[RecordFields], *,
                    images: np.ndarray | None = None, wait: float = 0.0,
                    quiet: bool = True) -> np.ndarray:
        """Append already-encoded vectors with their records (label, source, text, extra).

        Image collections also take the items' pixels (``images``, as the encoder saw them).
        """
        vecs = as_vectors(vecs, self.dim)
        if len(records) != len(vecs):
            raise InvalidInput(f"got {len(records)} records for {len(vecs)} vectors")
        kept = self._snapshot.main.images
        if kept is None:
            if images is not None:
                raise InvalidInput(f"collection {self.name} keeps no images; pass images=None")
        else:
            shape = kept.shape[1:]
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
        new_ids: list[np.ndarray] = []

        def change(snap: Snapshot) -> dict:
            start = snap.manifest["next_id"]
            ids = np.arange(start, start + len(vecs), dtype=np.int64)
            rows = [record_row(i, r) for i, r in zip(ids, records)]
            new_ids.append(ids)
            return writer.add(snap, writer.Batch(vecs, ids, rows, images), quiet=quiet)

        self._write(change, wait)
        return new_ids[0]

    def remove(self, ids: Iterable[int], *, wait: float = 0.0, quiet: bool = True) -> int:
        """Remove items by id (unknown ids are an error); returns how many were removed.

        Ids in delta segments are dropped by rewriting the deltas; ids in the main segment
        are listed as removed (hidden from every answer; the index still holds them) until
        the next compaction, which happens here when more than REMOVED_LIMIT ids, or a
        quarter of the main segment, would be listed.
        """
        gone = np.unique(np.asarray(list(ids) if not isinstance(ids, np.ndarray) else ids,
                                    dtype=np.int64))
        if len(gone) == 0:
            return 0
        self._write(lambda snap: writer.remove(snap, gone, quiet=quiet), wait)
        return len(gone)

    def compact(self, *, wait: float = 0.0, quiet: bool = True) -> None:
        """Fold the delta segments into the main index and files (done automatically when
        they grow past ``DELTA_LIMIT`` items) and purge removed items from the index."""
        def change(snap: Snapshot) -> dict | None:
            if len(snap.delta_ids) or len(snap.removed):
                return writer.compact(snap, quiet=quiet)
            return None

        self._write(change, wait)


def _is_text(queries: Any) -> bool:
    """A string, or a non-empty list/tuple of strings."""
    return isinstance(queries, str) or (isinstance(queries, (list, tuple)) and bool(queries)
                                        and all(isinstance(q, str) for q in queries))


def _one_query(query: Any, **named: Any) -> tuple[Any, str | None]:
    """The one query given (positional, or one of vector=/image=/text=) and its kind (None:
    positional, to be guessed)."""
    given = [(kind, value) for kind, value in named.items() if value is not None]
    if not given and query is not None:
        return query, None  # the common case, kept short
    if query is not None:
        given.insert(0, (None, query))
    if len(given) != 1:
        raise InvalidInput("give one query: positional, or one of vector=, image=, text=")
    kind, value = given[0]
    return value, kind


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

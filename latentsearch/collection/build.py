"""Building a new collection from encoded vectors, their records and the encoder."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from latentsearch import index as _index
from latentsearch.collection.collection import Collection
from latentsearch.collection.reader import check_recall
from latentsearch.collection.writer import build_and_tune, write_index
from latentsearch.encoders.base import Encoder
from latentsearch.encoders.vectors import as_vectors
from latentsearch.errors import CollectionExists, DimensionMismatch, InvalidInput
from latentsearch.index.building import Fill
from latentsearch.index.tune import DEFAULT_RECALL
from latentsearch.io.arrays import load_npy
from latentsearch.progress import say
from latentsearch.storage.files import clear_stale_builds, publish_new, staging
from latentsearch.storage.manifest import MANIFEST, now, write_manifest
from latentsearch.storage.paths import check_name, resolve_root
from latentsearch.storage.records import record_row
from latentsearch.types import RecordFields
from latentsearch.version import __version__

__all__ = ["create", "check_new", "check_inputs", "BATCH"]

BATCH = 100_000  # rows checked, normalised and written at a time


def create(
    name: str,
    *,
    encoder: Encoder,
    vectors: np.ndarray,
    records: Sequence[RecordFields],
    root: str | os.PathLike | None = None,
    index: str = "auto",
    metric: str = "l2",
    overwrite: bool = False,
    quiet: bool = True,
    extra: dict[str, Any] | None = None,
    images: np.ndarray | None = None,
    recall: float = DEFAULT_RECALL,
    first_id: int = 0,
    fill: Fill | None = None,
) -> Collection:
    """Write a new collection from encoded vectors, their records and the encoder.

    ``recall`` is the recall@10 the index is tuned to on held-out queries
    (``latentsearch.index.tune``). ``vectors`` may be a memory-mapped array: it is checked,
    normalised and written in batches of ``BATCH`` rows, and the index is built from the
    written file, so memory grows with the batch and the index, not with a second copy of the
    corpus. ``images`` (uint8 (n, H, W, C)), for image collections, are kept as images.npy.
    Items get the ids ``first_id, first_id + 1, ...`` (a shard's ids follow the shard
    before it). ``fill`` fills the trained index's lists (``latentsearch.index.building``;
    a ``--ray`` build fills them on the cluster); None fills them here.
    """
    target = check_new(name, root, overwrite)
    vectors = check_inputs(encoder, vectors, records, images, metric)
    root_path = target.parent
    root_path.mkdir(parents=True, exist_ok=True)
    clear_stale_builds(root_path, name)
    n, dim = len(vectors), encoder.dim
    ids = np.arange(first_id, first_id + n, dtype=np.int64)
    tuned_to = check_recall(recall)
    with staging(root_path, name) as staged:
        names = {"vectors": "vectors.npy", "ids": "ids.npy", "index": "index.faiss",
                 "records": "records.sqlite"}
        stored = _write_vectors(staged.path(names["vectors"]), vectors, dim, metric, quiet)
        t0 = time.perf_counter()
        built, entry = build_and_tune(index, stored, ids, metric, tuned_to, quiet, fill=fill)
        params = entry["params"]
        say(f"index {entry['factory']} over {n} vectors in {time.perf_counter() - t0:.1f}s"
            + (f", tuned {params}" if params else ""), quiet)
        if images is not None:
            names["images"] = "images.npy"
            staged.save_array(names["images"], images)
        staged.save_array(names["ids"], ids)
        write_index(built, staged.path(names["index"]))
        staged.write_records(names["records"], [record_row(i, r) for i, r in zip(ids, records)])
        for rel in encoder.save(staged.path("encoder/.keep").parent):
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
            "next_id": first_id + n,
            "generation": 1,
            "created": stamp,
            "updated": stamp,
            "files": staged.entries(names),
            **(extra or {}),
        }
        write_manifest(staged.dir / MANIFEST, manifest)
        publish_new(staged, target, overwrite=overwrite)
    return Collection(target)


def check_new(name: str, root: str | os.PathLike | None = None,
              overwrite: bool = False) -> Path:
    """The folder a new collection ``name`` goes to. Builds call it before loading or
    training anything, so a taken name fails at once (CollectionExists) unless
    ``overwrite``."""
    check_name(name)
    target = resolve_root(root) / name
    if target.exists() and not overwrite:
        raise CollectionExists(f"collection {name} already exists at {target}; pass "
                               "overwrite=True to replace it, or choose another name")
    return target


def check_inputs(encoder: Encoder, vectors: Any, records: Sequence[RecordFields],
                 images: np.ndarray | None, metric: str) -> np.ndarray:
    """``vectors`` as an array (n, encoder.dim) with one record (and image) per row, and a
    known ``metric``; the typed error otherwise. Rows are checked when written."""
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
    return vectors


def _write_vectors(path: Path, vectors, dim: int, metric: str, quiet: bool) -> np.ndarray:
    """Check, normalise (cosine) and write ``vectors`` to ``path`` batch by batch.

    Returns the written file memory-mapped: the index is built from it.
    """
    n = len(vectors)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, dim))
    for start in range(0, n, BATCH):
        batch = as_vectors(vectors[start : start + BATCH], dim, first_row=start)
        if metric == "cosine":
            batch = _index.normalise(batch, first_row=start)
        out[start : start + len(batch)] = batch
        if n > BATCH:
            say(f"vectors {min(start + BATCH, n):,}/{n:,} checked and written", quiet)
    out.flush()
    del out
    return load_npy(path, mmap=True)


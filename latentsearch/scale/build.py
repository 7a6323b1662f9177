"""A build split over a Ray cluster: partitions encoded on the workers, index lists filled
in parallel, one commit by the driver.

A folder of images is first decoded on the workers, a partition of files each, into
``part-NNNNN-images.npy`` in a scratch folder beside the collection (shared storage); the
driver lays the parts end to end (``images.npy``, the same rows in the same order as a
one-process read) and trains the encoder on a seeded sample of them (``TRAIN_SAMPLE``; every
item when there are fewer, as a one-process build does). Images held by the driver (a .npy
source, mnist) are written there as they are. The encoder is saved beside them, and each
worker loads its numpy copy (no TensorFlow on a worker), encodes its rows of ``images.npy``
(or its texts) and writes ``part-NNNNN-vectors.npy``. The driver lays those end to end and
hands them to :func:`latentsearch.collection.build.create` with
:func:`cluster_fill`: the index is trained once, on the driver, on the seeded sample a
one-process build takes, and its lists are filled by the workers, each from its rows of
the staged vectors file, then merged in row order. Nothing reaches the collection's name
until every partition is in: ``create`` commits once, and the scratch folder is removed
whatever happens.

Ray Core tasks rather than Ray Data: a partition here is a few thousand items whose order
fixes the ids, its output two .npy files on shared storage; one task per partition keeps
that order explicit, retries a lost partition alone, and needs no pandas or Arrow blocks.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from latentsearch.io.arrays import load_npy
from latentsearch.scale.cluster import Cluster, fault_point

__all__ = ["TRAIN_SAMPLE", "PART_ITEMS", "FILL_PARTS_PER_WORKER", "Part", "Encoded",
           "encode_part", "decode_on_cluster", "encode_on_cluster", "cluster_fill", "fill_part",
           "train_rows"]

#: items the encoder is trained on, at most: a seeded sample of the source. It bounds the
#: driver's memory (100,000 28x28 images are 78 MB) and the training time, which grows
#: with the sample; sources this size or smaller train on every item.
TRAIN_SAMPLE = {"image": 100_000, "text": 200_000}
#: items per partition (one task each): several per worker, so a retry repeats little
PART_ITEMS = {"image": 5_000, "text": 20_000}
#: partitions of the index fill per worker
FILL_PARTS_PER_WORKER = 2


def train_rows(n: int, modality: str, seed: int = 0) -> np.ndarray | None:
    """Rows of the seeded sample an encoder is trained on (ascending), or None for all
    ``n`` items (``n`` no more than ``TRAIN_SAMPLE``)."""
    limit = TRAIN_SAMPLE[modality]
    if n <= limit:
        return None
    return np.sort(np.random.default_rng(seed).choice(n, limit, replace=False))


@dataclass(frozen=True)
class Part:
    """One partition: image files of a folder to decode (``encoder`` None: decode only),
    or rows ``start:stop`` of an images .npy on shared storage, or texts, to encode."""

    index: int
    scratch: str  # folder on shared storage where the part's arrays go
    encoder: str | None  # folder of the saved encoder; None: decode the files only
    spec: dict[str, Any]  # the manifest's encoder entry {"name", "config"}
    files: list[str] | None = None  # image files (folder sources) ...
    root: str | None = None  # ... of this folder
    array: str | None = None  # or images decoded before: this .npy's rows start:stop
    start: int = 0
    stop: int = 0
    items: Any = None  # or the texts themselves

    @property
    def size(self) -> int:
        if self.files is not None:
            return len(self.files)
        return len(self.items) if self.array is None else self.stop - self.start


@dataclass
class Encoded:
    """What a worker sends back: its count and records; the arrays stay in the scratch folder."""

    index: int
    count: int
    labels: list[str | None] = field(default_factory=list)
    sources: list[str | None] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


def _part_path(scratch: str | Path, index: int, what: str) -> Path:
    return Path(scratch) / f"part-{index:05d}-{what}.npy"


def encode_part(part: Part) -> Encoded:
    """Runs on a worker: decode one partition's files (writing their images), or encode
    its images or texts (writing their vectors)."""
    from latentsearch import encoders

    fault_point(f"{'decode' if part.encoder is None else 'encode'}-{part.index}")
    if part.files is not None:
        from latentsearch.io.images import color_channels, decode_files, image_options

        opts = image_options(part.spec["config"])
        data = decode_files([Path(f) for f in part.files], Path(part.root),
                            size=opts["size"], channels=color_channels(opts["color"]),
                            fit=opts["fit"], resample=opts["resample"])
        _save(_part_path(part.scratch, part.index, "images"), data.images)
        return Encoded(part.index, len(data), data.labels, data.sources, data.skipped)
    enc = encoders.load(Path(part.encoder), part.spec)
    if part.array is not None:
        items: Any = np.asarray(load_npy(Path(part.array), mmap=True)[part.start : part.stop])
    else:
        items = list(part.items)
    n = len(items)
    vectors = (np.asarray(enc.encode(items), dtype=np.float32) if n
               else np.zeros((0, enc.dim), np.float32))
    _save(_part_path(part.scratch, part.index, "vectors"), vectors)
    return Encoded(part.index, n)


def _save(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    with open(tmp, "wb") as fh:  # a retried part overwrites a dead worker's half file
        np.save(fh, np.ascontiguousarray(array), allow_pickle=False)
    os.replace(tmp, path)


def decode_on_cluster(cluster: Cluster, parts: Sequence[Part], *, pixels: tuple[int, ...],
                      quiet: bool = False) -> tuple[np.ndarray, list[Encoded]]:
    """Decode the image files of ``parts`` on the cluster: every part's images end to end
    (memory-mapped ``images.npy`` in the scratch folder), and what each part read."""
    done = cluster.map(encode_part, list(parts), desc="decoding on the cluster", unit="file",
                       sizes=[p.size for p in parts], quiet=quiet)
    n = sum(e.count for e in done)
    return _concatenate(Path(parts[0].scratch), done, "images", pixels, np.uint8, n), done


def encode_on_cluster(cluster: Cluster, parts: Sequence[Part], *, dim: int,
                      quiet: bool = False) -> np.ndarray:
    """Encode ``parts`` on the cluster: the vectors of every part end to end, memory-mapped
    from the scratch folder."""
    done = cluster.map(encode_part, list(parts), desc="encoding on the cluster", unit="item",
                       sizes=[p.size for p in parts], quiet=quiet)
    scratch = Path(parts[0].scratch) if parts else None
    return _concatenate(scratch, done, "vectors", (dim,), np.float32, sum(e.count for e in done))


def _concatenate(scratch: Path | None, done: list[Encoded], what: str, shape: tuple[int, ...],
                 dtype: Any, n: int) -> np.ndarray:
    if scratch is None:
        return np.zeros((0, *shape), dtype)
    out = np.lib.format.open_memmap(scratch / f"{what}.npy", mode="w+", dtype=dtype,
                                    shape=(n, *shape))
    row = 0
    for e in done:
        path = _part_path(scratch, e.index, what)
        part = load_npy(path, mmap=True)
        if part.shape != (e.count, *shape):
            raise RuntimeError(f"{path} holds {part.shape}, expected {(e.count, *shape)}")
        out[row : row + e.count] = part
        row += e.count
        del part
        path.unlink()
    out.flush()
    del out
    return load_npy(scratch / f"{what}.npy", mmap=True)


# -- the index --------------------------------------------------------------------------


@dataclass(frozen=True)
class FillPart:
    """Rows ``start:stop`` of the staged vectors file, added to a copy of the trained index."""

    index: int
    trained: np.ndarray  # the empty trained index, serialised by FAISS
    vectors: str  # the staged vectors file (shared storage)
    start: int
    stop: int
    ids: np.ndarray
    skip: np.ndarray  # rows (of the whole file) left out: held out for tuning


def fill_part(job: FillPart) -> np.ndarray:
    """Runs on a worker: the trained index holding rows ``start:stop``, serialised."""
    import faiss

    from latentsearch.index.building import add

    fault_point(f"fill-{job.index}")
    index = faiss.deserialize_index(job.trained)
    vectors = load_npy(Path(job.vectors), mmap=True)
    skip = job.skip - job.start
    add(index, vectors[job.start : job.stop], job.ids, skip=skip if len(skip) else None)
    return faiss.serialize_index(index)


def cluster_fill(cluster: Cluster, quiet: bool = False):
    """A ``fill`` for :func:`latentsearch.index.building.build` that fills the lists on
    ``cluster``: IVF and flat indexes are filled a partition per task and merged in row
    order (the same lists, in the same order, as adding every row here). Filled here:
    HNSW (its graph cannot be merged); fast-scan IVF, whose merged blocks FAISS 1.x gets
    wrong for later adds (seen here: after merging two halves, adding 100 vectors changed
    13% of the top-10 answers against the same adds to a one-process index, while answers
    right after the merge were equal); and vectors that are not a file the workers can read."""

    def fill(index, vectors: np.ndarray, ids: np.ndarray, skip: np.ndarray | None):
        import faiss

        from latentsearch.index.building import add

        path = getattr(vectors, "filename", None)
        n = len(vectors)
        parts = min(max(1, cluster.workers * FILL_PARTS_PER_WORKER), max(1, n // 10_000))
        if path is None or parts < 2 or not _mergeable(index):
            add(index, vectors, ids, skip=skip)
            return index
        trained = faiss.serialize_index(index)
        skip = np.empty(0, np.int64) if skip is None else np.asarray(skip, np.int64)
        bounds = np.linspace(0, n, parts + 1).astype(int)
        jobs = [FillPart(i, trained, str(path), int(a), int(b),
                         np.asarray(ids[a:b], np.int64), skip[(skip >= a) & (skip < b)])
                for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:]))]
        filled = cluster.map(fill_part, jobs, desc="filling the index on the cluster",
                             unit="vector", sizes=[j.stop - j.start for j in jobs], quiet=quiet)
        merged = faiss.deserialize_index(filled[0])
        for blob in filled[1:]:
            merged.merge_from(faiss.deserialize_index(blob), 0)
        return merged

    return fill


def _mergeable(index) -> bool:
    """IVF with plain inverted lists, or flat (see :func:`cluster_fill`)."""
    import faiss

    from latentsearch.index.backends import HNSW, IVF, backend_of

    backend = backend_of(index)
    if isinstance(backend, HNSW):
        return False
    if isinstance(backend, IVF):
        return not isinstance(faiss.downcast_index(backend.inner), faiss.IndexIVFFastScan)
    return True

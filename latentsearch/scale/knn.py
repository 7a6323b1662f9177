"""Bulk neighbours: every item's k nearest other items, written to one file (the kNN graph
used for de-duplication and clustering), in one process or split over a Ray cluster.

The answer for item ``i`` is what ``col.neighbors(i, k)`` gives (itself excluded), searched
in batches through :meth:`Collection.nearest`. With a cluster the live ids are cut into
ranges, a few per worker; each worker opens the collection by its folder (shared storage),
answers its range batch by batch and sends back its rows' arrays; the driver lays them end
to end in id order and writes the file, the same file a one-process run writes.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from latentsearch.errors import ClusterError, InvalidInput
from latentsearch.progress import bar, say
from latentsearch.storage.durable import fsync_file

__all__ = ["knn", "check_out", "knn_part", "KnnJob", "SUFFIXES", "BATCH", "JOBS_PER_WORKER",
           "MIN_JOB", "PARQUET_ROWS"]

SUFFIXES = (".npy", ".parquet")
BATCH = 10_000  # queries searched at a time: memory ~ BATCH x (dim + 3k) x 8 bytes
JOBS_PER_WORKER = 4  # ranges per worker: a slow or retried task delays little
MIN_JOB = 1_000  # items per range at least (each task opens the collection once)
PARQUET_ROWS = 1_000_000  # rows per parquet row group

_opened: dict[str, Any] = {}  # per worker process: collections by folder, reused by its tasks


@dataclass(frozen=True)
class KnnJob:
    """The live ids ``first <= id < stop`` (``count`` of them) of the collection at ``path``,
    as the driver saw it (``stamp``)."""

    index: int
    path: str
    first: int
    stop: int
    count: int
    stamp: str  # the driver's generation (see _stamp): the worker must search the same
    k: int
    batch: int


def knn(col: Any, out: str | os.PathLike, k: int = 10, *, cluster: Any = None,
        batch: int = BATCH, quiet: bool = True) -> Path:
    """Write every live item's ``k`` nearest other items to ``out`` and return its path.

    ``out`` ending in ``.npy``: one structured array, a row per item in id order, fields
    ``id`` int64, ``neighbors`` int64 (k,), ``distances`` float32 (k,) (``np.load`` with
    ``allow_pickle=False``). ``.parquet`` (needs pyarrow): columns ``id`` int64,
    ``neighbors`` list<int64>, ``distances`` list<float32>. Neighbours are nearest first,
    distances as ``neighbors`` reports them; an item with fewer than ``k`` others (``k``
    >= the collection's size) has its missing neighbours as id -1, distance inf.

    The file is written to a temporary name beside ``out`` and renamed when complete, so
    an error leaves nothing. Memory: the driver holds every row (n x (8 + 12 k) bytes) until
    the file is written; one process (no ``cluster``) searches ``batch`` items at a
    time. With ``cluster`` (:class:`latentsearch.scale.cluster.Cluster`) each worker holds
    the opened collection (its index in memory, vectors memory-mapped), one batch of
    queries, and its range's answers until the task returns them; the collection's folder
    must be on storage every node sees.
    """
    out = check_out(out)
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
        raise InvalidInput(f"k must be a positive integer, got {k!r}")
    if not isinstance(batch, (int, np.integer)) or isinstance(batch, bool) or batch < 1:
        raise InvalidInput(f"batch must be a positive integer, got {batch!r}")
    k, batch = int(k), int(batch)
    ids = np.asarray(col.ids(), dtype=np.int64)
    rows = np.empty(len(ids), _row_type(k))
    rows["id"] = ids
    if cluster is None:
        _run_here(col, rows, batch, quiet)
    else:
        _run_on(cluster, col, rows, batch, quiet)
    _write(out, rows)
    say(f"wrote the {k} nearest of {len(ids)} items to {out}", quiet)
    return out


def check_out(out: str | os.PathLike) -> Path:
    """``out`` as a path knn can write (a .npy or .parquet file in an existing folder,
    pyarrow installed for .parquet), or InvalidInput: checked before any work."""
    out = Path(out)
    suffix = out.suffix.lower()
    if suffix not in SUFFIXES:
        raise InvalidInput(f"knn writes a .npy or .parquet file, not {out.name!r}")
    if suffix == ".parquet":
        _pyarrow()
    if not out.parent.is_dir():
        raise InvalidInput(f"cannot write {out}: folder {out.parent} does not exist")
    if out.is_dir():
        raise InvalidInput(f"cannot write {out}: it is a folder")
    return out


def _row_type(k: int) -> np.dtype:
    return np.dtype([("id", "<i8"), ("neighbors", "<i8", (k,)), ("distances", "<f4", (k,))])


def _answer(col: Any, rows: np.ndarray) -> None:
    """Fill ``rows`` (the structured rows of some stored items) with their neighbours,
    the items themselves excluded."""
    chunk = rows["id"]
    d, i = col.nearest(col.vectors(chunk), rows.dtype["neighbors"].shape[0], exclude=chunk)
    rows["distances"], rows["neighbors"] = d, i


def _run_here(col: Any, rows: np.ndarray, batch: int, quiet: bool) -> None:
    with bar(total=len(rows), desc="knn", unit="item", quiet=quiet) as progress:
        for start in range(0, len(rows), batch):
            part = rows[start : start + batch]
            _answer(col, part)
            progress.update(len(part))


def _run_on(cluster: Any, col: Any, rows: np.ndarray, batch: int, quiet: bool) -> None:
    ids, n, k = rows["id"], len(rows), rows.dtype["neighbors"].shape[0]
    parts = max(1, min(cluster.workers * JOBS_PER_WORKER, -(-n // MIN_JOB)))
    bounds = np.linspace(0, n, parts + 1).astype(int)
    stamp = _stamp(col)
    jobs = []
    for j, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
        if a < b:
            stop = int(ids[b]) if b < n else int(ids[-1]) + 1
            jobs.append(KnnJob(j, str(Path(col.path).resolve()), int(ids[a]), stop,
                               int(b - a), stamp, k, batch))
    done = cluster.map(knn_part, jobs, desc="knn on the cluster", unit="item",
                       sizes=[job.count for job in jobs], quiet=quiet)
    row = 0
    for part in done:
        if not np.array_equal(part["id"], ids[row : row + len(part)]):
            raise ClusterError(f"collection {col.name} changed while knn ran; run it again")
        rows[row : row + len(part)] = part
        row += len(part)
    if row != n:
        raise ClusterError(f"collection {col.name} changed while knn ran; run it again")


def _stamp(col: Any) -> str:
    """What names one committed generation of one collection: its number (a sharded
    collection's sums its shards'), when it was created (a rebuild under the same name
    counts again from the start) and its manifest's files with their checksums."""
    m = col.manifest
    doc = [col.generation, m.get("created"), m.get("files")]
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()


def knn_part(job: KnnJob) -> np.ndarray:
    """Runs on a worker: the rows (structured, as written) of the live ids in ``job``'s
    range. The collection is opened once per worker process (its tasks reuse it), without
    re-checking its checksums: the driver checked them when it opened the generation that
    ``stamp`` names, and a worker that finds another one refuses to answer."""
    from latentsearch.collection import open_collection

    col = _opened.get(job.path)
    if col is None:
        _opened.clear()  # one collection held per worker: the last one asked for
        col = _opened[job.path] = open_collection(job.path, verify=False)
    elif _stamp(col) != job.stamp:
        col.reload()
    if _stamp(col) != job.stamp:
        raise ClusterError(f"collection {col.name} changed while knn ran; run it again")
    ids = col.ids()
    ids = ids[(ids >= job.first) & (ids < job.stop)]
    if len(ids) != job.count:
        raise ClusterError(f"collection {col.name} changed while knn ran; run it again")
    rows = np.empty(len(ids), _row_type(job.k))
    rows["id"] = ids
    for start in range(0, len(rows), job.batch):
        _answer(col, rows[start : start + job.batch])
    return rows


# -- the file ------------------------------------------------------------------------------


def _pyarrow():
    try:
        import pyarrow
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        raise InvalidInput("knn --out FILE.parquet needs pyarrow: "
                           "pip install 'latentsearch[ray]'") from None
    return pyarrow


def _write(out: Path, rows: np.ndarray) -> None:
    """``out`` written whole under a temporary name in its folder, then renamed over it."""
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        if out.suffix.lower() == ".npy":
            with open(tmp, "wb") as fh:
                np.save(fh, rows, allow_pickle=False)
        else:
            _write_parquet(tmp, rows)
        fsync_file(tmp)
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _write_parquet(path: Path, rows: np.ndarray) -> None:
    """Row groups of ``PARQUET_ROWS`` rows: list offsets stay int32, memory one group."""
    chunk = PARQUET_ROWS
    pa = _pyarrow()
    import pyarrow.parquet as pq

    k = rows.dtype["neighbors"].shape[0]
    schema = pa.schema([("id", pa.int64()), ("neighbors", pa.list_(pa.int64())),
                        ("distances", pa.list_(pa.float32()))])
    with pq.ParquetWriter(path, schema) as writer:
        for start in range(0, max(len(rows), 1), chunk):
            part = rows[start : start + chunk]
            offsets = pa.array(np.arange(0, (len(part) + 1) * k, k, dtype=np.int32))
            nbrs = pa.array(np.ascontiguousarray(part["neighbors"]).reshape(-1), pa.int64())
            dist = pa.array(np.ascontiguousarray(part["distances"]).reshape(-1), pa.float32())
            writer.write_table(pa.table({
                "id": pa.array(np.ascontiguousarray(part["id"]), pa.int64()),
                "neighbors": pa.ListArray.from_arrays(offsets, nbrs),
                "distances": pa.ListArray.from_arrays(offsets, dist),
            }, schema=schema))

"""Sharded collections: N ordinary collections under one parent, searched as one.

Layout::

    root/NAME/manifest.json   {"kind": "sharded", "shards": [{"name": "shard-000",
                               "first_id": 0}, ...], modality, dim, metric, encoder, ...}
    root/NAME/shard-000/      an ordinary collection: its own manifest, files, checksums,
    root/NAME/shard-001/      lock, deltas and removed ids; each opens alone with ls.open
    ...

The parent manifest is written once, at build, and never changes: every later change
(adds, removals, compactions) is a commit of one shard, under that shard's own lock.

Choices:

- **Contiguous id ranges.** Shard i holds rows ``bounds[i]:bounds[i+1]`` of the source
  (an even ``np.linspace`` split) under the ids an unsharded build gives them
  (``create(first_id=bounds[i])``): ids are disjoint, ascend across shards, and an id's
  shard is one binary search over the shards' ``first_id``.
- **Adds go to the last shard**, whose ids continue above every shard's, so the ranges
  stay disjoint and ascending; a removal goes to the shard whose range holds the id.
- **Search fans out** to every shard; each returns its best k, merged per query by
  (distance, id) and cut to k - the same top-k merge as the main index with its delta
  segments. Queries are encoded once, here, with the encoder stored in shard 0.
- **Each shard is tuned alone** (its own index, recall curve and ``recall=`` points).
  With exact (flat) shards the merged answers equal an unsharded flat build's; with
  approximate shards (ivf, hnsw, ...) each shard meets the recall target over its own
  part, so sharded IVF answers can differ from unsharded IVF ones (usually by finding a
  little more: every shard is probed).
- **One class, two places.** :class:`ShardedCollection` holds a list of shard objects
  with the same few methods (:class:`ShardActor`: a shard's Collection behind plain
  methods) and a place that opens and calls them: in this process (``ls.open``), or as
  Ray actors (``latentsearch serve --ray``: calls to all shards are sent, then awaited
  together). The merge, routing and checks are the same code either way.
- **Builds** (:func:`create_sharded`) stage the whole parent in one hidden folder: the
  source's vectors (and images) are written there as .npy scratch files and the encoder
  saved once, each shard is built from its rows by :func:`build_shard` (one after another
  here, or as Ray tasks reading the scratch files from shared storage), the scratch is
  deleted, the parent manifest written and the folder renamed into place - a failed shard
  leaves nothing under the name.
"""

from __future__ import annotations

import os
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from latentsearch import encoders as _encoders
from latentsearch.collection import reader
from latentsearch.collection.build import BATCH, check_inputs, check_new, create
from latentsearch.collection.collection import Collection
from latentsearch.collection.collection import list_collections as list_unsharded
from latentsearch.collection.collection import open_collection as open_unsharded
from latentsearch.collection.reader import check_recall
from latentsearch.encoders.base import Encoder
from latentsearch.encoders.vectors import as_vectors
from latentsearch.errors import (
    CorruptCollection, InvalidInput, LatentSearchError, UnknownId)
from latentsearch.index.tune import DEFAULT_RECALL
from latentsearch.io.arrays import load_npy
from latentsearch.progress import bar, say
from latentsearch.storage.files import clear_stale_builds, publish_new, staging
from latentsearch.storage.manifest import (
    MANIFEST, SHARDED, inside, now, parse_manifest, read_manifest, read_sharded_manifest,
    write_manifest)
from latentsearch.storage.paths import locate, resolve_root
from latentsearch.types import Hit, Record, RecordFields
from latentsearch.version import __version__

__all__ = ["ShardedCollection", "ShardActor", "ShardJob", "create_sharded", "build_shard",
           "open_collection", "list_collections", "is_sharded", "summary", "shard_name"]

Run = Callable[..., list]  # Cluster.map's shape: run(fn, jobs, desc=, sizes=, quiet=)


def shard_name(i: int) -> str:
    return f"shard-{i:03d}"


def is_sharded(folder: str | os.PathLike) -> bool:
    """Whether ``folder``'s manifest.json is a sharded collection's parent."""
    return parse_manifest(Path(folder)).get("kind") == SHARDED


# -- opening and listing (what ``latentsearch.collection`` exports) -----------------------
# Here rather than in collection.py, which this module imports: the package keeps no
# import cycles (tests/test_imports.py). collection.py's own two open and list only
# ordinary collections.


def open_collection(
    name: str | os.PathLike, root: str | os.PathLike | None = None, *, verify: bool = True,
) -> "Collection | ShardedCollection":
    """Open a collection by name under the root, or by path to its folder; a sharded
    collection's parent opens as a :class:`ShardedCollection`."""
    folder = locate(name, root)
    if is_sharded(folder):
        return ShardedCollection(folder, verify=verify)
    return open_unsharded(folder, verify=verify)


def list_collections(root: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """A summary per collection folder under the root (unreadable ones say why); a sharded
    one with its count summed over the shards and index ``sharded(N)``."""
    root_path = resolve_root(root)
    out = []
    for row in list_unsharded(root):
        folder = root_path / row["name"]
        if "error" in row:  # a sharded parent is no ordinary collection's manifest
            try:
                if is_sharded(folder):
                    row = summary(folder)
            except Exception as exc:  # listing must not stop at one broken collection
                row = {"name": row["name"], "error": str(exc)}
        out.append(row)
    return out


# -- building ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ShardJob:
    """One shard to build: rows ``start:stop`` of the scratch files in ``folder``."""

    name: str
    folder: str  # the parent's staging folder: scratch files in, the shard built into it
    start: int  # the shard's first row, and its first id
    stop: int
    encoder: dict[str, Any]  # the manifest's encoder entry {"name", "config"}
    records: list  # the shard's records (label, source, text, extra)
    index: str
    metric: str
    recall: float
    images: bool  # images.npy is there
    extra: dict[str, Any] | None = None
    quiet: bool = True


def build_shard(job: ShardJob) -> dict[str, Any]:
    """Build one shard with ``create`` (here, or on a Ray worker) from its rows of the
    scratch files; returns its name, first id and count."""
    folder = Path(job.folder)
    encoder = _encoders.load(folder / "encoder", job.encoder)
    vectors = load_npy(folder / "vectors.npy", mmap=True, stored=True)[job.start:job.stop]
    images = None
    if job.images:
        images = load_npy(folder / "images.npy", mmap=True, stored=True)[job.start:job.stop]
    col = create(job.name, encoder=encoder, vectors=vectors, records=job.records, root=folder,
                 index=job.index, metric=job.metric, quiet=job.quiet, extra=job.extra,
                 images=images, recall=job.recall, first_id=job.start)
    return {"name": job.name, "first_id": job.start, "count": len(col)}


def _run_here(fn: Callable[[Any], Any], jobs: Sequence[Any], *, desc: str,
              sizes: Sequence[int] | None = None, quiet: bool = True, **_: Any) -> list:
    """``Cluster.map`` without a cluster: the jobs one after another, one bar."""
    sizes = list(sizes) if sizes is not None else [1] * len(jobs)
    out = []
    with bar(total=sum(sizes), desc=desc, unit="item", quiet=quiet) as progress:
        for job, size in zip(jobs, sizes):
            out.append(fn(job))
            progress.update(size)
    return out


def create_sharded(
    name: str,
    *,
    shards: int,
    run: Run | None = None,
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
) -> "ShardedCollection":
    """Write ``shards`` collections under one parent ``name`` (see the module docstring).

    ``run``: ``Cluster.map`` to build the shards as Ray tasks (``build_shard`` over
    ``ShardJob``s); None builds them here, one after another. The other arguments are
    ``create``'s."""
    target = check_new(name, root, overwrite)
    if isinstance(shards, bool) or not isinstance(shards, int) or shards < 1:
        raise InvalidInput(f"shards must be a positive integer, got {shards!r}")
    recall = check_recall(recall)
    vectors = check_inputs(encoder, vectors, records, images, metric)
    n = len(vectors)
    if shards > n:
        raise InvalidInput(f"cannot split {n} items into {shards} shards: every shard needs "
                           "at least one item")
    bounds = np.linspace(0, n, shards + 1).astype(np.int64)
    root_path = target.parent
    root_path.mkdir(parents=True, exist_ok=True)
    clear_stale_builds(root_path, name)
    with staging(root_path, name) as staged:
        _write_scratch(staged.dir, vectors, images, encoder.dim, quiet)
        encoder.save(staged.path("encoder/.keep").parent)
        spec = {"name": encoder.name, "config": encoder.config()}
        jobs = [ShardJob(shard_name(i), str(staged.dir), int(a), int(b), spec,
                         list(records[int(a):int(b)]), index, metric, recall,
                         images is not None, extra, quiet)
                for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:]))]
        say(f"building {name} as {shards} shards of about {n // shards:,} items", quiet)
        built = (run or _run_here)(build_shard, jobs, desc=f"{name}: shards",
                                   sizes=[j.stop - j.start for j in jobs], quiet=quiet)
        for scratch in ("vectors.npy", "images.npy"):
            (staged.dir / scratch).unlink(missing_ok=True)
        shutil.rmtree(staged.dir / "encoder", ignore_errors=True)
        stamp = now()
        manifest = {
            "format_version": 1,
            "kind": SHARDED,
            "shards": [{"name": b["name"], "first_id": b["first_id"]} for b in built],
            "latentsearch_version": __version__,
            "modality": encoder.modality,
            "encoder": spec,
            "dim": encoder.dim,
            "metric": metric,
            "index": {"spec": index, "factory": f"sharded({shards})", "target_recall": recall},
            "created": stamp,
            **(extra or {}),
        }
        write_manifest(staged.dir / MANIFEST, manifest)
        publish_new(staged, target, overwrite=overwrite)
    return ShardedCollection(target)


def _write_scratch(folder: Path, vectors, images, dim: int, quiet: bool) -> None:
    """The source's vectors as float32 vectors.npy (checked batch by batch: an error names
    the source's row) and its images as images.npy, for the shard builds to read."""
    n = len(vectors)
    out = np.lib.format.open_memmap(folder / "vectors.npy", mode="w+", dtype=np.float32,
                                    shape=(n, dim))
    for start in range(0, n, BATCH):
        out[start:start + BATCH] = as_vectors(vectors[start:start + BATCH], dim, first_row=start)
    out.flush()
    del out
    if images is not None:
        out = np.lib.format.open_memmap(folder / "images.npy", mode="w+", dtype=np.uint8,
                                        shape=tuple(images.shape))
        for start in range(0, n, BATCH):
            out[start:start + BATCH] = images[start:start + BATCH]
        out.flush()
        del out
    say(f"{n:,} vectors staged for the shards", quiet)


# -- the shards ----------------------------------------------------------------------------


class ShardActor:
    """One shard: its :class:`Collection` behind the few plain methods a
    :class:`ShardedCollection` calls. Used as it is in this process, and as a Ray actor
    (``serve --ray``: ``Cluster.actor(ShardActor, path)``), so both share one code path.
    Vectors given to ``search`` are search-ready (prepared once by the ShardedCollection);
    ``nearest`` takes them as ``Collection.nearest`` does."""

    def __init__(self, path: str | os.PathLike, verify: bool = True, defer_errors: bool = False):
        self._col: Collection | None = None
        self._error: LatentSearchError | None = None
        try:
            self._col = Collection(path, verify=verify)
        except LatentSearchError as exc:
            if not defer_errors:
                raise
            self._error = exc  # an actor dying in __init__ would hide why; every call says

    @property
    def col(self) -> Collection:
        if self._col is None:
            raise self._error  # type: ignore[misc]
        return self._col

    def state(self) -> dict[str, Any]:
        """What the parent keeps between calls: count, generation, ids' range."""
        snap = self.col.snapshot
        return {"count": snap.count, "generation": snap.generation,
                "next_id": int(snap.manifest["next_id"]),
                "first": int(snap.stored_ids[0]) if len(snap.stored_ids) else None,
                "modality": snap.manifest["modality"], "dim": snap.dim, "metric": snap.metric}

    def info(self) -> dict[str, Any]:
        return self.col.info

    def search(self, vecs: np.ndarray, k: int, where: dict[str, Any] | None,
               exclude: Sequence[int] | None, recall: float | None,
               exact: bool) -> list[list[Hit]]:
        return reader.search_vectors(self.col.snapshot, vecs, k, where, exclude,
                                     recall=recall, exact=exact)

    def nearest(self, vectors: Any, k: int, exclude: Any, where: dict[str, Any] | None,
                recall: float | None, exact: bool) -> tuple[np.ndarray, np.ndarray]:
        """``Collection.nearest`` (vectors as the caller gave them: it prepares them)."""
        return self.col.nearest(vectors, k, exclude=exclude, where=where, recall=recall,
                                exact=exact)

    def ids(self) -> np.ndarray:
        return self.col.ids()

    def vectors(self, ids: Sequence[int] | None) -> np.ndarray:
        return self.col.vectors(ids)

    def images(self, ids: Sequence[int]) -> np.ndarray:
        return self.col.images(ids)

    def get(self, ids: Sequence[int]) -> list[Record]:
        return self.col.get(ids)

    def check(self, ids: Sequence[int]) -> None:
        """UnknownId unless every one of ``ids`` is a live item of this shard."""
        self.col.snapshot.rows(ids)

    def add_vectors(self, vecs: np.ndarray, records: Sequence[RecordFields],
                    images: np.ndarray | None, wait: float, quiet: bool) -> np.ndarray:
        return self.col.add_vectors(vecs, records, images=images, wait=wait, quiet=quiet)

    def remove(self, ids: Sequence[int], wait: float, quiet: bool) -> int:
        return self.col.remove(ids, wait=wait, quiet=quiet)

    def compact(self, wait: float, quiet: bool) -> None:
        self.col.compact(wait=wait, quiet=quiet)

    def reload(self) -> None:
        self.col.reload()


@dataclass(frozen=True, eq=False)
class _Layout:
    """What the parent manifest lists, opened: replaced as a whole by a reload."""

    manifest: dict[str, Any]
    shards: list  # ShardActor objects, or their Ray actor handles
    first_ids: np.ndarray
    paths: list[Path]
    view: Any  # dim, metric, manifest: what Collection's query preparation reads


class _Here:
    """Shards in this process: ShardActor objects, called one after another."""

    def open(self, path: Path, verify: bool) -> ShardActor:
        return ShardActor(path, verify)

    def call(self, calls: list[tuple[Any, str, tuple]]) -> list:
        return [getattr(shard, method)(*args) for shard, method, args in calls]


class _OnCluster:
    """Shards as Ray actors (placed by Ray): every call is sent, then all are awaited."""

    def __init__(self, cluster: Any):
        self.cluster = cluster

    def open(self, path: Path, verify: bool) -> Any:
        # a Collection is thread-safe: an actor answers several searches at once
        return self.cluster.actor(ShardActor, str(path), verify, True, concurrency=8)

    def call(self, calls: list[tuple[Any, str, tuple]]) -> list:
        return self.cluster.get([getattr(shard, method).remote(*args)
                                 for shard, method, args in calls])


# -- the collection ------------------------------------------------------------------------


class ShardedCollection:
    """A sharded collection (see the module docstring), with the Collection API: search,
    neighbors, nearest, get, vectors, images, ids, add, remove, compact, reload, info.

    ``cluster`` (``latentsearch.scale.cluster.Cluster``): hold each shard in a Ray actor
    instead of this process. Thread-safe as Collection is: searches read each shard's
    current snapshot; writes go to one shard at a time under this object's lock."""

    def __init__(self, path: str | os.PathLike, *, verify: bool = True, cluster: Any = None):
        self.path = Path(path)
        self._verify = verify
        self._place = _Here() if cluster is None else _OnCluster(cluster)
        self._lock = threading.RLock()
        self._encoder: Encoder | None = None
        self._open(read_sharded_manifest(self.path))

    def _open(self, manifest: dict[str, Any]) -> None:
        """Open every shard the parent ``manifest`` lists and check it against it."""
        paths = []
        for shard in manifest["shards"]:
            folder = inside(self.path, shard["name"])
            if not (folder / MANIFEST).is_file():
                raise CorruptCollection(f"{self.path}: shard {shard['name']} is missing")
            paths.append(folder)
        shards = [self._place.open(p, self._verify) for p in paths]
        first_ids = np.array([s["first_id"] for s in manifest["shards"]], dtype=np.int64)
        states = self._place.call([(s, "state", ()) for s in shards])
        _check_shards(self.path, manifest, states)
        view = SimpleNamespace(dim=manifest["dim"], metric=manifest["metric"], manifest=manifest)
        self._states = states
        self._layout = _Layout(manifest, shards, first_ids, paths, view)  # one assignment:
        # a search running meanwhile sees the old shards or the new ones, never a mix

    @property
    def _manifest(self) -> dict[str, Any]:
        return self._layout.manifest

    @property
    def _shards(self) -> list:
        return self._layout.shards

    # -- calling the shards ----------------------------------------------------------------

    def _all(self, method: str, *args: Any) -> list:
        """``method(*args)`` on every shard, in shard order."""
        return self._place.call([(s, method, args) for s in self._layout.shards])

    def _some(self, method: str, args_of: dict[int, tuple],
              layout: "_Layout | None" = None) -> dict[int, Any]:
        """``method(*args_of[i])`` on shard i (of ``layout``, else the current) for each i."""
        shards = (layout or self._layout).shards
        got = self._place.call([(shards[i], method, args) for i, args in args_of.items()])
        return dict(zip(args_of, got))

    def _refresh(self) -> None:
        self._states = self._all("state")

    def _route(self, ids: Iterable[int] | np.ndarray,
               layout: "_Layout") -> tuple[np.ndarray, np.ndarray]:
        """``ids`` as int64 and the shard whose id range holds each (UnknownId below all)."""
        wanted = np.asarray(ids if isinstance(ids, np.ndarray) else list(ids), dtype=np.int64)
        wanted = wanted.reshape(-1)
        shard = np.searchsorted(layout.first_ids, wanted, side="right") - 1
        if len(wanted) and shard.min() < 0:
            bad = int(wanted[np.flatnonzero(shard < 0)[0]])
            raise UnknownId(f"collection {self.name} has no item with id {bad}")
        return wanted, shard

    def _gather(self, method: str, ids: Iterable[int]) -> np.ndarray:
        """Rows of ``method`` (vectors, images) for ``ids``, each from its shard, in order."""
        layout = self._layout
        wanted, shard = self._route(ids, layout)
        if not len(wanted):  # shard 0 answers for the empty array's shape
            return self._some(method, {0: ([],)}, layout)[0]
        parts = self._some(method, {int(i): (wanted[shard == i].tolist(),)
                                    for i in np.unique(shard)}, layout)
        first = next(iter(parts.values()))
        out = np.empty((len(wanted), *first.shape[1:]), first.dtype)
        for i, rows in parts.items():
            out[shard == i] = rows
        return out

    # -- what it holds ---------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def manifest(self) -> dict[str, Any]:
        """The parent's manifest (written at build, never changed)."""
        return self._manifest

    @property
    def dim(self) -> int:
        return int(self._manifest["dim"])

    @property
    def metric(self) -> str:
        return self._manifest["metric"]

    @property
    def modality(self) -> str:
        return self._manifest["modality"]

    @property
    def shard_paths(self) -> list[Path]:
        """Each shard's folder: an ordinary collection."""
        return list(self._layout.paths)

    @property
    def on_cluster(self) -> bool:
        """Whether the shards are held by Ray actors (``serve --ray``), not this process."""
        return isinstance(self._place, _OnCluster)

    @property
    def generation(self) -> int:
        """The sum of the shards' generations: it grows with every commit to any shard."""
        return sum(s["generation"] for s in self._states)

    @property
    def target_recall(self) -> float:
        return float(self._manifest.get("index", {}).get("target_recall", DEFAULT_RECALL))

    @property
    def info(self) -> dict[str, Any]:
        """``Collection.info``'s fields summed over the shards, with kind "sharded" and one
        entry per shard (name, first id, count, index, generation)."""
        m = self._manifest
        infos = self._all("info")
        return {
            "name": self.name,
            "path": str(self.path),
            "kind": SHARDED,
            "modality": m["modality"],
            "count": sum(i["count"] for i in infos),
            "dim": m["dim"],
            "metric": m["metric"],
            "index": dict(m.get("index", {}), factory=f"sharded({len(infos)})"),
            "encoder": m["encoder"],
            "next_id": infos[-1]["next_id"],
            "generation": sum(i["generation"] for i in infos),
            "deltas": {"segments": sum(i["deltas"]["segments"] for i in infos),
                       "items": sum(i["deltas"]["items"] for i in infos)},
            "removed_pending": sum(i["removed_pending"] for i in infos),
            "format_version": m["format_version"],
            "created": m.get("created"),
            "updated": max((i.get("updated") or "" for i in infos), default="") or None,
            "bytes": sum(i["bytes"] for i in infos),
            "shards": [{"name": s["name"], "first_id": s["first_id"], "count": i["count"],
                        "next_id": i["next_id"], "generation": i["generation"],
                        "index": i["index"]["factory"],
                        "deltas": i["deltas"], "removed_pending": i["removed_pending"]}
                       for s, i in zip(m["shards"], infos)],
        }

    def __len__(self) -> int:
        return sum(s["count"] for s in self._states)

    def __repr__(self) -> str:
        return (f"<ShardedCollection {self.name!r}: {len(self)} x {self.dim} {self.modality}, "
                f"{self.metric}, {len(self._shards)} shards>")

    def ids(self) -> np.ndarray:
        """Every live id, ascending (shard after shard)."""
        return np.concatenate(self._all("ids")).astype(np.int64, copy=False)

    def vectors(self, ids: Iterable[int] | None = None) -> np.ndarray:
        """Stored vectors (unit rows for metric cosine) of ``ids``, or of every live item."""
        if ids is None:
            return np.concatenate(self._all("vectors", None))
        return self._gather("vectors", ids)

    def images(self, ids: Iterable[int]) -> np.ndarray:
        """The stored images of ``ids`` (image collections)."""
        return self._gather("images", ids)

    def get(self, ids: Iterable[int] | int) -> list[Record]:
        """The stored records of ``ids``, in the order asked (unknown ids are an error)."""
        wanted = [int(ids)] if np.isscalar(ids) else [int(i) for i in ids]
        layout = self._layout
        arr, shard = self._route(wanted, layout)
        parts = self._some("get", {int(i): (arr[shard == i].tolist(),)
                                   for i in np.unique(shard)}, layout)
        found = {r.id: r for records in parts.values() for r in records}
        return [found[i] for i in wanted]

    # -- encoding --------------------------------------------------------------------------

    @property
    def encoder(self) -> Encoder:
        """The stored encoder (shard 0's), loaded here on first use."""
        if self._encoder is None:
            with self._lock:
                if self._encoder is None:
                    self._encoder = _encoders.load(self._layout.paths[0] / "encoder",
                                                   self._manifest["encoder"])
        return self._encoder

    # The Collection's own query preparation and encoding, on this object: they read only
    # name, dim, metric, modality and encoder (the layout's ``view`` stands in for a
    # snapshot), so
    # a query is guessed, checked and normalised exactly as for an unsharded collection.
    encode = Collection.encode
    _encode_queries = Collection._encode_queries
    _query_vectors = Collection._query_vectors

    def _prepare(self, queries: Any, batch: bool, kind: str | None) -> np.ndarray:
        return self._query_vectors(self._layout.view, queries, batch=batch, kind=kind)

    # -- searching -------------------------------------------------------------------------

    def _search(self, vecs: np.ndarray, k: int, where: dict[str, Any] | None,
                exclude: Sequence[int] | None, recall: float | None,
                exact: bool) -> list[list[Hit]]:
        """Every shard's best ``k`` per query, merged by (distance, id)."""
        parts = self._all("search", vecs, k, where, exclude, recall, exact)
        return [sorted((h for part in parts for h in part[q]),
                       key=lambda h: (h.distance, h.id))[:k] for q in range(len(vecs))]

    def search(self, query: Any = None, k: int = 10, where: dict[str, Any] | None = None, *,
               vector: Any = None, image: Any = None, text: str | None = None,
               recall: float | None = None, exact: bool = False) -> list[Hit]:
        """Nearest items to one query, over every shard (as ``Collection.search``)."""
        given, kind = _given(query, vector=vector, image=image, text=text)
        vecs = self._prepare(given, batch=False, kind=kind)
        return self._search(vecs, k, where, None, recall, exact)[0]

    def search_batch(
        self, queries: Any = None, k: int = 10, where: dict[str, Any] | None = None, *,
        vector: Any = None, image: Any = None, text: Sequence[str] | None = None,
        recall: float | None = None, exact: bool = False,
    ) -> list[list[Hit]]:
        """Nearest items for each of many queries (as ``Collection.search_batch``)."""
        given, kind = _given(queries, vector=vector, image=image, text=text)
        vecs = self._prepare(given, batch=True, kind=kind)
        return self._search(vecs, k, where, None, recall, exact)

    def neighbors(self, item_id: int, k: int = 10, where: dict[str, Any] | None = None, *,
                  recall: float | None = None, exact: bool = False) -> list[Hit]:
        """Nearest items to a stored item, the item itself excluded."""
        vec = self.vectors([int(item_id)])
        return self._search(vec, k, where, [int(item_id)], recall, exact)[0]

    def nearest(self, vectors: Any, k: int = 10, *, exclude: Any = None,
                where: dict[str, Any] | None = None, recall: float | None = None,
                exact: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest items to each vector as two (q, k) arrays, distances (float64)
        and ids (int64), padded with inf / -1; ``exclude[q]``: an id left out of row q.
        Each shard's ``Collection.nearest`` prepares the vectors (as for an unsharded
        collection, so ``nearest(vectors(ids), exclude=ids)`` answers as ``neighbors``)."""
        vectors = np.asarray(vectors)
        if exclude is not None:
            exclude = np.asarray(exclude, dtype=np.int64).reshape(-1)
        parts = self._all("nearest", vectors, k, exclude, where, recall, exact)
        return _merge([p[0] for p in parts], [p[1] for p in parts], int(k))

    # -- changing --------------------------------------------------------------------------

    add = Collection.add  # encodes here, then add_vectors below (reads modality, encoder)

    def add_vectors(self, vecs: np.ndarray, records: Sequence[RecordFields], *,
                    images: np.ndarray | None = None, wait: float = 0.0,
                    quiet: bool = True) -> np.ndarray:
        """Append encoded vectors to the last shard: their ids continue above every
        shard's."""
        with self._lock:
            last = len(self._shards) - 1
            ids = self._some("add_vectors", {last: (vecs, records, images, wait, quiet)})[last]
            self._refresh()
        return ids

    def remove(self, ids: Iterable[int], *, wait: float = 0.0, quiet: bool = True) -> int:
        """Remove items by id, each from the shard holding it; an id no shard holds is an
        UnknownId and nothing is removed."""
        gone = np.unique(np.asarray(list(ids) if not isinstance(ids, np.ndarray) else ids,
                                    dtype=np.int64))
        if len(gone) == 0:
            return 0
        with self._lock:
            gone, shard = self._route(gone, self._layout)  # the lock keeps it current
            groups = {int(i): gone[shard == i].tolist() for i in np.unique(shard)}
            self._some("check", {i: (part,) for i, part in groups.items()})
            done = self._some("remove", {i: (part, wait, quiet) for i, part in groups.items()})
            self._refresh()
        return sum(done.values())

    def compact(self, *, wait: float = 0.0, quiet: bool = True) -> None:
        """Compact every shard (see ``Collection.compact``)."""
        with self._lock:
            self._all("compact", wait, quiet)
            self._refresh()

    def reload(self) -> "ShardedCollection":
        """Serve every shard's newest committed generation; reopen all of them when the
        parent was rebuilt."""
        with self._lock:
            manifest = read_sharded_manifest(self.path)
            if manifest != self._manifest:
                self._encoder = None
                self._open(manifest)
            else:
                self._all("reload")
                self._refresh()
        return self


def _given(query: Any, **named: Any) -> tuple[Any, str | None]:
    """The one query given (positional, or one of vector=/image=/text=) and its kind, as
    ``Collection.search`` reads its arguments."""
    given = [(kind, value) for kind, value in named.items() if value is not None]
    if query is not None:
        given.insert(0, (None, query))
    if len(given) != 1:
        raise InvalidInput("give one query: positional, or one of vector=, image=, text=")
    return given[0][1], given[0][0]


def _merge(D_parts: list[np.ndarray], I_parts: list[np.ndarray],
           k: int) -> tuple[np.ndarray, np.ndarray]:
    """The best ``k`` per row of the shards' (distances, ids), by (distance, id)."""
    D = np.concatenate(D_parts, axis=1)
    I = np.concatenate(I_parts, axis=1)
    D = np.where(I < 0, np.inf, D)
    order = np.lexsort((np.where(I < 0, np.iinfo(np.int64).max, I), D), axis=1)[:, :k]
    return np.take_along_axis(D, order, 1), np.take_along_axis(I, order, 1)


def _check_shards(folder: Path, manifest: dict[str, Any], states: list[dict]) -> None:
    """The shards hold what the parent says: its modality, dim and metric, and ids inside
    their ranges (a shard's ids below the next shard's first id)."""
    listed = manifest["shards"]
    for i, (shard, state) in enumerate(zip(listed, states)):
        for key in ("modality", "dim", "metric"):
            if state[key] != manifest[key]:
                raise CorruptCollection(f"{folder}: shard {shard['name']} has {key} "
                                        f"{state[key]!r}, the parent {manifest[key]!r}")
        below = listed[i + 1]["first_id"] if i + 1 < len(listed) else None
        if (state["first"] is not None and state["first"] < shard["first_id"]) or (
                below is not None and state["next_id"] > below):
            raise CorruptCollection(f"{folder}: shard {shard['name']} holds ids outside its "
                                    "range")


def summary(folder: Path) -> dict[str, Any]:
    """``list_collections``' row for a sharded collection: counts summed over the shards'
    manifests (no shard is opened)."""
    m = read_sharded_manifest(folder)
    count = 0
    for shard in m["shards"]:
        count += read_manifest(inside(folder, shard["name"]))["count"]
    return {"name": folder.name, "modality": m["modality"], "count": count, "dim": m["dim"],
            "metric": m["metric"], "index": f"sharded({len(m['shards'])})"}

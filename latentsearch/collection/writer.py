"""Writing the next generation: adds as delta segments, removals, compaction.

Each function takes the newest :class:`Snapshot` (the caller holds the writer lock), writes
what changes into a staging folder, commits it (``latentsearch.storage.files.commit``) and
returns the manifest's file entries it wrote, so the caller can load the next snapshot
without hashing them again. Nothing here changes the snapshot it was given: a compaction
adds to and removes from a *copy* of the live FAISS index, so searches running on the
current snapshot are never disturbed, and a failed write leaves it as it was.

Adds go to small append-only delta segments (their vectors, ids, records and images, no
index), searched exactly beside the main index: an add then writes only its own batch. The
deltas are folded into the main files (a compaction, which rewrites them: O(n)) when they
would hold more than DELTA_LIMIT items - 10,000 x 32-d in deltas added about 60 microseconds
to a single query here (benchmarks/RESULTS.md, section 6) - and on ``compact()``. At most
MAX_DELTAS segments exist; beyond that the deltas are rewritten as one (O(delta)). Removing
items of the main segment lists their ids in removed-NNNNNN.npy (the index keeps them,
searches skip them through an id selector) until more than REMOVED_LIMIT, or a quarter of
the main segment, would be listed: then a compaction purges them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from latentsearch import index as _index
from latentsearch.collection.snapshot import Snapshot
from latentsearch.index import tune as _tuning
from latentsearch.progress import say
from latentsearch.storage.files import Staging, commit, generation_name, staging
from latentsearch.storage.manifest import file_path, format_version, now

__all__ = ["Batch", "add", "remove", "compact", "build_and_tune", "write_index",
           "DELTA_LIMIT", "MAX_DELTAS", "REMOVED_LIMIT"]

DELTA_LIMIT = 10_000
MAX_DELTAS = 8
REMOVED_LIMIT = 10_000

Entries = dict[str, Any]  # manifest ``files`` entries


@dataclass(frozen=True)
class Batch:
    """Items to write together: vectors, their ids (ascending), record rows, images."""

    vectors: np.ndarray
    ids: np.ndarray
    rows: list[tuple]
    images: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def then(self, other: "Batch") -> "Batch":
        """This batch followed by ``other``."""
        images = None if self.images is None else np.concatenate([self.images, other.images])
        return Batch(np.concatenate([self.vectors, other.vectors]),
                     np.concatenate([self.ids, other.ids]), self.rows + other.rows, images)

    def without(self, ids: np.ndarray) -> "Batch":
        keep = ~np.isin(self.ids, ids)
        gone = set(ids.tolist())
        return Batch(self.vectors[keep], self.ids[keep],
                     [r for r in self.rows if r[0] not in gone],
                     None if self.images is None else self.images[keep])


def _pending(snap: Snapshot) -> Batch:
    """Everything the delta segments hold, as one batch."""
    return Batch(snap.delta_vectors, snap.delta_ids, snap.delta_rows(), snap.delta_images)


def _outgrown(snap: Snapshot, n: int) -> bool:
    """True when the main index is Flat only because it was too small for the asked spec
    (say ``ivf`` on 30 vectors, or ``auto`` below 10,000), and ``n`` vectors are enough."""
    entry = snap.manifest["index"]
    return entry["factory"] == "Flat" and _index.plan(entry["spec"], n, snap.dim).factory != "Flat"


# -- the three changes ---------------------------------------------------------------------


def add(snap: Snapshot, batch: Batch, *, quiet: bool = True) -> Entries:
    """Commit ``batch`` (new ids above every stored one) as a delta segment, or compact."""
    if len(snap.delta_ids) + len(batch) > DELTA_LIMIT or _outgrown(snap, snap.count + len(batch)):
        return compact(snap, added=batch, quiet=quiet)
    if len(snap.deltas) >= MAX_DELTAS:
        return _write_deltas(snap, _pending(snap).then(batch), replace=True)
    return _write_deltas(snap, batch)


def remove(snap: Snapshot, ids: np.ndarray, *, quiet: bool = True) -> Entries:
    """Commit the removal of ``ids`` (unique, all held): rewrite the deltas without the
    ones they hold, list the main segment's as removed, or compact past the limits."""
    snap.rows(ids)  # UnknownId for an id not held
    in_delta = np.isin(ids, snap.delta_ids)
    from_main = ids[~in_delta]
    if len(snap.removed) + len(from_main) > min(REMOVED_LIMIT, snap.main_rows // 4):
        return compact(snap, delete=ids, quiet=quiet)
    if in_delta.any():
        return _write_deltas(snap, _pending(snap).without(ids[in_delta]), replace=True,
                             removed=from_main)
    return _write_deltas(snap, None, removed=from_main)


def compact(snap: Snapshot, *, added: Batch | None = None, delete: np.ndarray | None = None,
            quiet: bool = True) -> Entries:
    """Commit a main segment holding every live item (the deltas and ``added`` folded in,
    ``delete`` and the listed removed ids purged). Rewrites every main file: O(n)."""
    fresh = _pending(snap) if added is None else _pending(snap).then(added)
    gone = np.union1d(snap.removed, delete if delete is not None else np.empty(0, np.int64))
    gone = gone.astype(np.int64)
    vectors = np.concatenate([snap.main.vectors, fresh.vectors])
    ids = np.concatenate([snap.main.ids, fresh.ids])
    images = None if snap.main.images is None else np.concatenate([snap.main.images, fresh.images])
    if len(gone):
        keep = ~np.isin(ids, gone)
        vectors, ids = vectors[keep], ids[keep]
        images = None if images is None else images[keep]
        fresh = fresh.without(gone)
        gone = gone[np.isin(gone, snap.main.ids)]  # the rest was never in the index
    next_id = snap.manifest["next_id"] if added is None else int(added.ids[-1]) + 1
    say(f"compacting {snap.folder.name}: {len(fresh):,} new items into the index, "
        f"{len(gone):,} removed ones out of it", quiet)
    return _write_main(snap, vectors, ids, images, fresh, gone, next_id, quiet)


# -- writing -------------------------------------------------------------------------------


def _write_deltas(snap: Snapshot, batch: Batch | None, *, replace: bool = False,
                  removed: np.ndarray | None = None) -> Entries:
    """Commit ``batch`` as a new delta segment (after the current ones, or instead of them
    with ``replace``) and list ``removed`` main ids as removed. Cost in proportion to them."""
    m = snap.manifest
    gen = m["generation"] + 1
    files = {k: e for k, e in m["files"].items() if not (replace and k.startswith("delta-"))}
    deltas = [] if replace else list(m["deltas"])
    count = m["count"] - (len(snap.delta_ids) if replace else 0)
    next_id = m["next_id"]
    with staging(snap.folder, "write") as staged:
        if batch is not None and len(batch):
            name = f"delta-{gen:06d}"
            files.update(_stage_segment(staged, name, batch))
            deltas.append({"name": name, "count": len(batch)})
            count += len(batch)
            next_id = max(next_id, int(batch.ids[-1]) + 1)
        if removed is not None and len(removed):
            listed = f"removed-{gen:06d}.npy"
            staged.save_array(listed, np.union1d(snap.removed, removed).astype(np.int64))
            files.update(staged.entries({"removed": listed}))
            count -= len(removed)
        new = dict(m, files=files, deltas=deltas, generation=gen, count=count,
                   next_id=next_id, updated=now())
        new["format_version"] = format_version(new)
        commit(snap.folder, staged, new)
    return files


def _stage_segment(staged: Staging, name: str, batch: Batch) -> Entries:
    arrays = {"vectors": batch.vectors, "ids": batch.ids}
    if batch.images is not None:
        arrays["images"] = batch.images
    names = {}
    for part, array in arrays.items():
        names[f"{name}/{part}"] = staged.save_array(f"{name}-{part}.npy", array).name
    staged.write_records(f"{name}-records.sqlite", batch.rows)
    names[f"{name}/records"] = f"{name}-records.sqlite"
    return staged.entries(names)


def _write_main(snap: Snapshot, vectors: np.ndarray, ids: np.ndarray, images, fresh: Batch,
                gone: np.ndarray, next_id: int, quiet: bool) -> Entries:
    """Commit the next main generation: ``vectors``/``ids``/``images`` as its files, the
    index updated with ``fresh`` (new rows) and without ``gone`` (ids it held)."""
    m = snap.manifest
    gen = m["generation"] + 1
    entry = dict(m["index"])
    rebuild = _outgrown(snap, len(vectors))
    index = None
    if not rebuild:
        index = _index.copy(snap.main.index)  # the live index is never changed
        if len(gone):  # first: HNSW cannot remove, and is rebuilt
            rebuild = not _index.try_remove(index, gone)
        if not rebuild and len(fresh):
            _index.add(index, fresh.vectors, fresh.ids)
    if rebuild:
        say(f"rebuilding index {entry['spec']} for {len(vectors)} vectors", quiet)
        target = float(entry.get("target_recall", _tuning.DEFAULT_RECALL))
        index, entry = build_and_tune(entry["spec"], vectors, ids, snap.metric, target, quiet)
    names = {part: generation_name(f"{part}.{ext}", gen) for part, ext in
             [("vectors", "npy"), ("ids", "npy"), ("index", "faiss"), ("records", "sqlite")]}
    with staging(snap.folder, "write") as staged:
        if images is not None:
            names["images"] = generation_name("images.npy", gen)
            staged.save_array(names["images"], images)
        staged.save_array(names["vectors"], vectors)
        staged.save_array(names["ids"], ids)
        write_index(index, staged.path(names["index"]))
        staged.write_records(names["records"], fresh.rows,
                             base=file_path(snap.folder, m, "records"), delete_ids=gone)
        files = {k: e for k, e in m["files"].items()
                 if k not in names and k != "removed" and not k.startswith("delta-")}
        files.update(staged.entries(names))
        new = dict(m, files=files, deltas=[], generation=gen, count=len(ids), index=entry,
                   next_id=next_id, updated=now())
        new["format_version"] = format_version(new)
        commit(snap.folder, staged, new)
    return files


def write_index(index, path) -> None:
    import faiss

    faiss.write_index(index, str(path))


def build_and_tune(spec: str, vectors: np.ndarray, ids: np.ndarray, metric: str,
                   target: float, quiet: bool = True, *, fill=None) -> tuple[Any, dict[str, Any]]:
    """The index for ``spec`` (``auto`` chosen by measurement) and its manifest entry;
    ``fill`` fills trained indexes (see ``latentsearch.index.building.build``)."""
    if spec.strip().lower() != "auto":
        return _tuning.build_tuned(_index.plan(spec, len(vectors), vectors.shape[1]),
                                   vectors, ids, metric, target, fill=fill)
    if len(vectors) >= _index.AUTO_FLAT_BELOW:
        say(f"auto: measuring candidate indexes at recall {target}", quiet)
    choice, (index, entry) = _tuning.choose(vectors, ids, metric, target, fill=fill)
    entry = dict(entry, spec=spec, choice=choice)
    entry.pop("qps_at_target", None)  # in the choice's candidates
    return index, entry

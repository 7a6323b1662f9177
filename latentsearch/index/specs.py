"""Index specs: what to build for n vectors of a dimension, and what it will cost.

Pure arithmetic on the spec table of :mod:`latentsearch.index` (no FAISS import): the
planner, the nlist rules, the sub-quantizer counts, the memory estimate and the training
sizes, so that ``auto`` can rule candidates out before building anything.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from latentsearch.errors import IndexSpecError, InvalidInput

__all__ = ["METRICS", "AUTO_FLAT_BELOW", "DEFAULT_BUDGET", "EF_STEPS", "NPROBE_STEPS",
           "MIN_POINTS_PER_CENTROID", "PQ_MIN_TRAIN", "TRAIN_PER_LIST", "TRAIN_LIMIT",
           "IndexPlan", "plan", "memory_budget", "nlist", "fs_subquantizers", "pq_subquantizers",
           "index_bytes", "is_lossy", "min_train_size", "train_size"]

METRICS = ("l2", "cosine")
AUTO_FLAT_BELOW = 10_000
DEFAULT_BUDGET = 4 << 30
EF_STEPS = (10, 12, 16, 20, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 256, 320, 384,
            512, 768, 1024)
NPROBE_STEPS = (1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 14, 16, 20, 24, 28, 32, 40, 48, 56, 64, 80, 96,
                112, 128, 160, 192, 224, 256, 320, 384, 448, 512, 640, 768, 1024)
# FAISS's k-means refuses fewer training points than this per centroid.
MIN_POINTS_PER_CENTROID = 39
# PQ needs 256 centroids per sub-quantizer (16 for fast-scan): below ~10k vectors it trains
# badly, so those specs are built as Flat until the collection is larger.
PQ_MIN_TRAIN = 10_000
# k-means trains on up to this many points per list (FAISS's own cap is 256): fewer gave
# visibly unbalanced lists (imbalance 1.51 at 50 per list vs 1.35 at 100, 1M x 32).
TRAIN_PER_LIST = 256
TRAIN_LIMIT = 262_144


@dataclass
class IndexPlan:
    """What to build: the asked spec, the FAISS factory string, and search parameters."""

    spec: str
    factory: str
    params: dict[str, Any] = field(default_factory=dict)


def memory_budget() -> int:
    """The bytes ``auto``'s candidates may take (``$LATENTSEARCH_MEMORY_BUDGET``, default 4 GiB)."""
    raw = os.environ.get("LATENTSEARCH_MEMORY_BUDGET")
    if not raw:
        return DEFAULT_BUDGET
    try:
        return int(float(raw))
    except ValueError:
        raise InvalidInput(f"LATENTSEARCH_MEMORY_BUDGET must be a number of bytes, got {raw!r}")


def nlist(n: int, per_sqrt: float = 4.0) -> int:
    """IVF lists for ``n`` vectors: ``per_sqrt * sqrt(n)``, as many as FAISS can train."""
    return int(max(1, min(round(per_sqrt * np.sqrt(n)), n // MIN_POINTS_PER_CENTROID)))


def fs_subquantizers(dim: int) -> int:
    """Fast-scan sub-quantizers: one per dimension up to 64 (4 bits each), an even count."""
    for m in (dim, dim // 2, dim // 4, dim // 8):
        if 2 <= m <= 64 and m % 2 == 0 and dim % m == 0:
            return m
    return 0


def pq_subquantizers(dim: int) -> int:
    """``ivfpq``'s sub-quantizers (8 bits each): half the dimension where it divides."""
    for m in (dim // 2, dim // 4, dim // 8, 1):
        if m >= 1 and dim % m == 0:
            return m
    return 1


def index_bytes(spec: str, n: int, dim: int) -> int:
    """Rough resident size of a spec's index (codes, ids, centroids, graph links)."""
    if spec == "ivf":
        return n * (4 * dim + 8) + nlist(n) * 4 * dim
    if spec == "ivffs":
        return n * (fs_subquantizers(dim) // 2 + 8) + nlist(n, 1.0) * 4 * dim
    if spec == "hnsw":
        return n * (4 * dim + 8 + 32 * 2 * 4 + 16)
    if spec == "ivfpq":
        return n * (pq_subquantizers(dim) + 8) + nlist(n) * 4 * dim
    return n * (4 * dim + 8)


def plan(spec: str, n: int, dim: int) -> IndexPlan:
    """Resolve ``spec`` for ``n`` vectors of ``dim`` into a factory string (without IDMap)."""
    spec = (spec or "auto").strip()
    name = spec.lower()
    if name == "auto":  # the real choice is measured by tune.choose; this is its default
        if n < AUTO_FLAT_BELOW:
            return IndexPlan(spec, "Flat")
        chosen = plan("ivffs" if fs_subquantizers(dim) else "ivf", n, dim)
        return IndexPlan(spec, chosen.factory, chosen.params)
    if name == "flat":
        return IndexPlan(spec, "Flat")
    if name == "hnsw":
        return IndexPlan(spec, "HNSW32")
    if name == "ivf":
        lists = nlist(n)
        return IndexPlan(spec, f"IVF{lists},Flat" if n >= MIN_POINTS_PER_CENTROID else "Flat")
    if name == "ivffs":
        m = fs_subquantizers(dim)
        if not m:
            raise IndexSpecError(f"ivffs needs an even dimension with an even divisor <= 64, got {dim}")
        if n < PQ_MIN_TRAIN:  # 16 centroids per sub-quantizer train well from a few thousand points
            return IndexPlan(spec, "Flat")
        return IndexPlan(spec, f"IVF{nlist(n, 1.0)},PQ{m}x4fs", {"rerank": 4})
    if name == "ivfpq":
        if n < PQ_MIN_TRAIN:
            return IndexPlan(spec, "Flat")
        return IndexPlan(spec, f"IVF{nlist(n)},PQ{pq_subquantizers(dim)}np", {"rerank": 4})
    if "idmap" in name:
        raise IndexSpecError("index spec must not contain IDMap: ids are mapped by latentsearch")
    return IndexPlan(spec, spec, {"rerank": 1} if is_lossy(spec) else {})


def is_lossy(factory: str) -> bool:
    """Whether the index stores compressed codes, so its distances are approximations.

    Lossy indexes are searched with an exact re-rank from the stored vectors (``rerank``
    >= 1), so reported distances are always exact.
    """
    return re.search(r"PQ|SQ|LSH|RaBitQ|RQ|ITQ", factory) is not None


def min_train_size(factory: str) -> int:
    """Vectors needed before ``factory`` can be trained; 0 for indexes needing no training."""
    m = re.search(r"IVF(\d+)", factory)
    need = MIN_POINTS_PER_CENTROID * int(m.group(1)) if m else 0
    if re.search(r"PQ\d+", factory):
        need = max(need, PQ_MIN_TRAIN)
    return need


def train_size(factory: str, n: int) -> int:
    """How many of ``n`` vectors train ``factory``: enough per list, bounded in all."""
    m = re.search(r"IVF(\d+)", factory)
    if not m:
        return min(n, TRAIN_LIMIT)
    lists = int(m.group(1))
    return min(n, max(min_train_size(factory), min(TRAIN_PER_LIST * lists, TRAIN_LIMIT)))

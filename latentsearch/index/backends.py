"""One small class per kind of FAISS index: what differs between them, in one place.

The kinds differ in a few things only: whether the index keeps our ids itself (IVF) or
needs ``IndexIDMap``, the search knob a tuner sweeps (``nprobe``, ``efSearch``, none), the
typed ``SearchParameters`` that carry that knob and an id selector for one call, list
balance, and the coarse quantizer's share of a query's distances. :func:`backend_of` is the
one dispatch on the FAISS type; everything else asks the backend it returns.

A backend is a view over a live index, made per call (it is cheap: two references).
"""

from __future__ import annotations

from typing import Any

from latentsearch.index.specs import EF_STEPS, NPROBE_STEPS

__all__ = ["Backend", "Flat", "IVF", "HNSW", "backend_of", "apply", "search_params", "knob",
           "imbalance"]


class Backend:
    """What every index does: no knob, plain parameters, no lists, our ids under IDMap."""

    __slots__ = ("index", "inner")
    keeps_ids = False  # True: the index stores our int64 ids itself (no IndexIDMap)

    def __init__(self, index, inner) -> None:
        self.index = index  # the index as given, kept alive while the view is in use
        self.inner = inner  # the index doing the work (under IndexIDMap), downcast

    def apply(self, params: dict[str, Any]) -> None:
        """Set this kind's tuned default in ``params`` on the index (nothing to set here)."""

    def search_params(self, params: dict[str, Any], selector=None):
        """Typed FAISS search parameters for one call: ``params``' knob, and ``selector``."""
        import faiss

        return _with(faiss.SearchParameters(), selector)

    def knob(self) -> tuple[str | None, list[int]]:
        """The search parameter a tuner sweeps, and the values to try."""
        return None, []

    def imbalance(self) -> float | None:
        """FAISS's imbalance factor of the lists (1.0 = all the same size); None: no lists."""
        return None

    def coarse_distances(self) -> int:
        """Distances a query spends choosing where to look, beyond FAISS's counters."""
        return 0


class Flat(Backend):
    """``Flat`` and every other index without a knob (``PQ16``, ``LSH``, ...), under IDMap."""

    __slots__ = ()


class IVF(Backend):
    """Inverted lists (``IVF,Flat``, IVF-PQ, fast-scan, ``IVF,SQ8``...): nprobe lists per query."""

    __slots__ = ()
    keeps_ids = True  # IDMap would break remove_ids: it assumes the sub-index compacts like Flat

    def apply(self, params: dict[str, Any]) -> None:
        if "nprobe" in params:
            self.inner.nprobe = int(params["nprobe"])

    def search_params(self, params: dict[str, Any], selector=None):
        import faiss

        p = faiss.SearchParametersIVF()
        p.nprobe = int(params.get("nprobe", self.inner.nprobe))
        return _with(p, selector)

    def knob(self) -> tuple[str | None, list[int]]:
        lists = self.inner.nlist
        return "nprobe", [s for s in NPROBE_STEPS if s < lists] + [lists]

    def imbalance(self) -> float | None:
        if self.inner.ntotal == 0:
            return None
        return round(float(self.inner.invlists.imbalance_factor()), 3)

    def coarse_distances(self) -> int:
        return int(self.inner.nlist)  # the query against every centroid


class HNSW(Backend):
    """Graph indexes (``HNSW32``, ``HNSW16,SQ8``...): efSearch candidates per query."""

    __slots__ = ()

    def apply(self, params: dict[str, Any]) -> None:
        if "efSearch" in params:
            self.inner.hnsw.efSearch = int(params["efSearch"])

    def search_params(self, params: dict[str, Any], selector=None):
        import faiss

        p = faiss.SearchParametersHNSW()
        p.efSearch = int(params.get("efSearch", self.inner.hnsw.efSearch))
        return _with(p, selector)

    def knob(self) -> tuple[str | None, list[int]]:
        return "efSearch", list(EF_STEPS)


def _with(p, selector):
    if selector is not None:
        p.sel = selector
    return p


def backend_of(index) -> Backend:
    """The backend of ``index``: by the type of the index under IndexIDMap, or of the index
    itself (IVF keeps its own ids). The one place that asks FAISS for a type."""
    import faiss

    inner = faiss.downcast_index(index)
    if isinstance(inner, faiss.IndexIDMap):
        inner = faiss.downcast_index(inner.index)
    if isinstance(inner, faiss.IndexIVF):
        return IVF(index, inner)
    if isinstance(inner, faiss.IndexHNSW):
        return HNSW(index, inner)
    return Flat(index, inner)


def apply(index, params: dict[str, Any]) -> None:
    """Set tuned search parameters (efSearch, nprobe) on a loaded index."""
    backend_of(index).apply(params)


def search_params(index, params: dict[str, Any], selector=None):
    """Typed FAISS search parameters for ``index``'s kind, carrying ``selector``."""
    return backend_of(index).search_params(params, selector)


def knob(index) -> tuple[str | None, list[int]]:
    """The search parameter a tuner sweeps for this index, and the values to try."""
    return backend_of(index).knob()


def imbalance(index) -> float | None:
    """FAISS's imbalance factor of an IVF index's lists (1.0 = all lists the same size)."""
    return backend_of(index).imbalance()

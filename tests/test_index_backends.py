"""The index kinds (latentsearch.index.backends) and copying an index (index.copy).

Each kind owns its search knob, its typed search parameters and its list balance; the one
dispatch is ``backend_of``. ``copy`` must give an index that answers the same and that can
be changed without touching the original (the collection's writer changes copies only).
"""

from __future__ import annotations

import gc

import faiss
import numpy as np
import pytest

from latentsearch import index as _index
from latentsearch.index import backends
from latentsearch.index.specs import EF_STEPS, NPROBE_STEPS

N, DIM = 12_000, 32

# every kind we build: exact, IVF Flat, IVF-PQ, IVF-PQ fast-scan, HNSW, and an IVF and a
# non-IVF factory string
FACTORIES = {
    "Flat": backends.Flat,
    "IVF64,Flat": backends.IVF,
    "IVF64,PQ16np": backends.IVF,
    "IVF64,PQ32x4fs": backends.IVF,
    "HNSW32": backends.HNSW,
    "IVF64,SQ8": backends.IVF,
    "HNSW16,SQ8": backends.HNSW,
    "PQ8": backends.Flat,
}


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((N, DIM), dtype=np.float32)
    ids = np.arange(N, dtype=np.int64) * 7 + 1  # not row numbers
    return x, ids, x[:40] + 0.05


@pytest.fixture(scope="module")
def built(data):
    x, ids, _ = data
    return {f: _index.build(f, DIM, "l2", x, ids) for f in FACTORIES}


@pytest.mark.parametrize("factory", list(FACTORIES))
def test_backend_of_dispatches_on_the_inner_type(built, factory):
    backend = backends.backend_of(built[factory])
    assert type(backend) is FACTORIES[factory]
    # IVF keeps our ids itself; everything else is under IndexIDMap
    outer = faiss.downcast_index(built[factory])
    assert isinstance(outer, faiss.IndexIDMap) is (not backend.keeps_ids)


@pytest.mark.parametrize("factory", list(FACTORIES))
def test_copy_answers_the_same_and_is_independent(data, built, factory):
    x, ids, q = data
    index = built[factory]
    _index.apply(index, {"nprobe": 8, "efSearch": 48})
    twin = _index.copy(index)
    assert twin.ntotal == index.ntotal == N
    assert type(backends.backend_of(twin)) is FACTORIES[factory]
    # the tuned parameters come along: no apply() needed on the copy
    p0, p1 = _index.search_params(index, {}), _index.search_params(twin, {})
    for knob in ("nprobe", "efSearch"):
        assert getattr(p0, knob, None) == getattr(p1, knob, None)
    d0, i0 = _index.search(index, q, 10, {})
    d1, i1 = _index.search(twin, q, 10, {})
    np.testing.assert_array_equal(i0, i1)
    np.testing.assert_array_equal(d0, d1)

    _index.add(twin, x[:100] + 1.0, np.arange(100, dtype=np.int64) + 10**9)
    assert twin.ntotal == N + 100 and index.ntotal == N
    if _index.try_remove(twin, ids[:50]):
        assert index.ntotal == N
    np.testing.assert_array_equal(_index.search(index, q, 10, {})[1], i0)
    # a copy outlives what it was copied from
    again = _index.copy(twin)
    del twin
    gc.collect()
    assert again.ntotal >= N and _index.search(again, q, 10, {})[1].shape == (len(q), 10)


def test_copy_keeps_ivfpq_without_its_precomputed_table(data, built):
    """The collection reads IVF-PQ without FAISS's precomputed table (memory); a copy of
    such an index must not build it back."""
    _, _, q = data
    index = built["IVF64,PQ16np"]
    assert faiss.downcast_index(index).precomputed_table.size() > 0  # built: has it
    read = faiss.deserialize_index(faiss.serialize_index(index), faiss.IO_FLAG_SKIP_PRECOMPUTE_TABLE)
    twin = _index.copy(read)  # keep it: a downcast view does not own the index
    assert faiss.downcast_index(twin).precomputed_table.size() == 0
    np.testing.assert_array_equal(_index.search(twin, q, 5, {"nprobe": 8}, typed=True)[1],
                                  _index.search(read, q, 5, {"nprobe": 8}, typed=True)[1])


def test_copy_falls_back_to_serialisation_where_faiss_cannot_clone(data):
    x, ids, q = data
    index = _index.build("ITQ16,LSH", DIM, "l2", x, ids)  # clone_index refuses ITQ
    with pytest.raises(RuntimeError):
        faiss.clone_index(index)
    twin = _index.copy(index)
    np.testing.assert_array_equal(_index.search(twin, q, 5, {})[1], _index.search(index, q, 5, {})[1])
    _index.add(twin, x[:10], np.arange(10, dtype=np.int64) + 10**9)
    assert index.ntotal == N and twin.ntotal == N + 10


def test_ivf_apply_knob_and_typed_parameters(built):
    index = built["IVF64,Flat"]
    ivf = faiss.downcast_index(index)
    _index.apply(index, {"nprobe": 5, "efSearch": 99, "rerank": 3})  # other keys ignored
    assert ivf.nprobe == 5
    name, steps = _index.knob(index)
    assert name == "nprobe"
    assert steps == [s for s in NPROBE_STEPS if s < 64] + [64]
    p = _index.search_params(index, {"nprobe": 9})
    assert isinstance(p, faiss.SearchParametersIVF) and p.nprobe == 9 and p.sel is None
    assert _index.search_params(index, {}).nprobe == 5  # the applied default
    sel = faiss.IDSelectorRange(0, 100)
    assert _index.search_params(index, {}, sel).sel is not None
    assert ivf.nprobe == 5  # typed parameters leave the index alone
    assert backends.backend_of(index).coarse_distances() == 64
    assert 1.0 <= _index.imbalance(index) < 3.0


@pytest.mark.parametrize("factory", ["IVF64,PQ16np", "IVF64,PQ32x4fs"])
def test_ivf_kinds_under_pq_share_the_ivf_backend(built, factory):
    index = built[factory]
    _index.apply(index, {"nprobe": 7})
    assert faiss.extract_index_ivf(index).nprobe == 7
    assert _index.knob(index)[0] == "nprobe"
    assert _index.search_params(index, {"nprobe": 3}).nprobe == 3


def test_hnsw_apply_knob_and_typed_parameters(built):
    index = built["HNSW32"]
    hnsw = faiss.downcast_index(faiss.downcast_index(index).index)
    _index.apply(index, {"efSearch": 40, "nprobe": 3})
    assert hnsw.hnsw.efSearch == 40
    assert _index.knob(index) == ("efSearch", list(EF_STEPS))
    p = _index.search_params(index, {"efSearch": 128})
    assert isinstance(p, faiss.SearchParametersHNSW) and p.efSearch == 128
    assert _index.search_params(index, {}).efSearch == 40
    assert hnsw.hnsw.efSearch == 40
    assert _index.imbalance(index) is None
    assert backends.backend_of(index).coarse_distances() == 0


@pytest.mark.parametrize("factory", ["Flat", "PQ8"])
def test_flat_has_no_knob_and_plain_parameters(built, factory):
    index = built[factory]
    _index.apply(index, {"efSearch": 40, "nprobe": 3})  # nothing to set, and no error
    assert _index.knob(index) == (None, [])
    p = _index.search_params(index, {"nprobe": 3})
    assert type(p) is faiss.SearchParameters
    assert _index.imbalance(index) is None
    assert backends.backend_of(index).coarse_distances() == 0


def test_distances_per_query_counts_the_coarse_quantizer(data, built):
    _, _, q = data
    ivf = _index.distances_per_query(built["IVF64,Flat"], q, {"nprobe": 4}, 10)
    # 4 of 64 lists of ~190 vectors each, plus the 64 centroids
    assert 64 < ivf < 64 + 4 * 3 * N / 64
    assert _index.distances_per_query(built["Flat"], q, {}, 10) == 0.0  # FAISS counts none for Flat


def test_filtered_search_uses_the_kinds_parameters(data, built):
    x, ids, q = data
    for factory in ("IVF64,Flat", "HNSW32", "Flat"):
        index = built[factory]
        allowed = ids[::3]
        _, found = _index.search(index, q, 10, {"nprobe": 64, "efSearch": 256}, allowed=allowed)
        assert np.isin(found[found >= 0], allowed).all()
        _, found = _index.search(index, q, 10, {"nprobe": 64, "efSearch": 256}, excluded=ids[:6000])
        assert not np.isin(found[found >= 0], ids[:6000]).any()

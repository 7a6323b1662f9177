"""Property tests: any sequence of add / remove / search / reopen / compact matches a plain
numpy model, with the default delta-segment limits and with tiny ones (so that segments
merge and compact within a few steps)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import latentsearch as ls
from latentsearch.collection import writer as _collection

DIM = 4
vectors = st.lists(
    st.lists(st.floats(-100, 100, allow_nan=False, width=32), min_size=DIM, max_size=DIM),
    min_size=1, max_size=6,
)
start_vectors = st.lists(  # large enough that a main segment can list removed ids
    st.lists(st.floats(-100, 100, allow_nan=False, width=32), min_size=DIM, max_size=DIM),
    min_size=4, max_size=24,
)
ops = st.lists(
    st.one_of(
        st.tuples(st.just("add"), vectors),
        st.tuples(st.just("remove"), st.integers(0, 30)),
        st.tuples(st.just("search"), st.lists(st.floats(-100, 100, width=32), min_size=DIM, max_size=DIM)),
        st.tuples(st.just("reopen"), st.none()),
        st.tuples(st.just("compact"), st.none()),
    ),
    max_size=16,
)


class Model:
    """What a collection should hold: ids -> vectors, and the next id to give."""

    def __init__(self, x: np.ndarray):
        self.rows = {i: row for i, row in enumerate(x)}
        self.next_id = len(x)

    def search(self, q: np.ndarray, k: int) -> list[tuple[int, float]]:
        dist = sorted((float(np.sqrt(((v - q) ** 2).sum())), i) for i, v in self.rows.items())
        return [(i, d) for d, i in dist[:k]]


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(start=start_vectors, steps=ops, spec=st.sampled_from(["flat", "hnsw", "ivf"]),
       limits=st.sampled_from([(_collection.DELTA_LIMIT, _collection.MAX_DELTAS,
                                _collection.REMOVED_LIMIT), (7, 2, 3)]))
def test_collection_matches_numpy_model(start, steps, spec, limits):
    root = Path(tempfile.mkdtemp())
    saved = _collection.DELTA_LIMIT, _collection.MAX_DELTAS, _collection.REMOVED_LIMIT
    _collection.DELTA_LIMIT, _collection.MAX_DELTAS, _collection.REMOVED_LIMIT = limits
    try:
        x = np.asarray(start, dtype=np.float32)
        col = ls.build_vectors(x, name="p", root=root, index=spec)
        model = Model(x)
        for op, arg in steps:
            if op == "add":
                new = np.asarray(arg, dtype=np.float32)
                ids = col.add(new)
                assert ids.tolist() == list(range(model.next_id, model.next_id + len(new)))
                for i, row in zip(ids, new):
                    model.rows[int(i)] = row
                model.next_id += len(new)
            elif op == "remove":
                if arg in model.rows:
                    col.remove([arg])
                    del model.rows[arg]
                else:
                    try:
                        col.remove([arg])
                        raise AssertionError("removing an unknown id must fail")
                    except ls.UnknownId:
                        pass
            elif op == "search":
                q = np.asarray(arg, dtype=np.float32)
                for k in (3, len(model.rows) + 2):  # the nearest, and everything held
                    got = [(h.id, h.distance) for h in col.search(q, k=k)]
                    want = model.search(q, k)
                    assert len(got) == len(want)
                    # same distances (ties may order ids differently)
                    np.testing.assert_allclose([d for _, d in got], [d for _, d in want],
                                               rtol=1e-4, atol=1e-3)
                assert {i for i, _ in got} == set(model.rows)
            elif op == "compact":
                col.compact()
                assert col.info["deltas"]["items"] == 0 and col.info["removed_pending"] == 0
            else:
                col = ls.open("p", root)
            assert len(col) == len(model.rows)
            assert col.ids().tolist() == sorted(model.rows)
        if model.rows:
            ids = sorted(model.rows)
            np.testing.assert_array_equal(col.vectors(ids), np.stack([model.rows[i] for i in ids]))
    finally:
        _collection.DELTA_LIMIT, _collection.MAX_DELTAS, _collection.REMOVED_LIMIT = saved
        shutil.rmtree(root, ignore_errors=True)

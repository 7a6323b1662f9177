"""Edge cases of the store and the API: each gets a clear LatentSearchError or a right answer."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

import latentsearch as ls
from latentsearch.storage import files as storage_files, lock as storage_lock, manifest as storage_manifest
from conftest import clustered


def files_of(path):
    return sorted(p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file())


def test_empty_collection_answers_nothing_then_grows(root):
    col = ls.build_vectors(np.zeros((0, 8), np.float32), name="e")
    assert len(col) == 0 and col.ids().tolist() == []
    assert col.search(np.ones(8), k=5) == []
    assert col.search_batch(np.ones((3, 8)), k=5) == [[], [], []]
    assert col.add(np.ones((2, 8))).tolist() == [0, 1]
    assert [h.id for h in ls.open("e").search(np.ones(8), k=5)] == [0, 1]


def test_one_vector_and_k_larger_than_count(root):
    col = ls.build_vectors(np.ones((1, 4)), labels=["only"], name="one")
    hits = col.search(np.ones(4), k=50)
    assert [(h.id, h.label) for h in hits] == [(0, "only")] and hits[0].distance == 0.0
    assert col.neighbors(0, k=5) == []
    x, _ = clustered(30, dim=4)
    col2 = ls.build_vectors(x, name="few")
    assert len(col2.search(x[0], k=100)) == 30
    assert len(col2.neighbors(0, k=100)) == 29


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_or_inf_refused_everywhere(root, bad):
    x = np.ones((5, 4), np.float32)
    x[2, 1] = bad
    with pytest.raises(ls.InvalidInput, match="NaN or inf"):
        ls.build_vectors(x, name="nan")
    assert not (root / "nan").exists()
    col = ls.build_vectors(np.ones((5, 4)), name="ok")
    before = files_of(col.path)
    with pytest.raises(ls.InvalidInput, match="NaN or inf"):
        col.add(x)
    with pytest.raises(ls.InvalidInput):
        col.search(x[2])
    assert files_of(col.path) == before and len(ls.open("ok")) == 5


def test_query_of_wrong_dimension(root):
    col = ls.build_vectors(np.ones((5, 4)), name="d")
    with pytest.raises(ls.DimensionMismatch, match="dimension 3, the collection has 4"):
        col.search(np.ones(3))
    with pytest.raises(ls.DimensionMismatch):
        col.search_batch(np.ones((2, 5)))
    with pytest.raises(ls.DimensionMismatch):
        col.add(np.ones((2, 5)))
    assert isinstance(ls.DimensionMismatch("x"), ValueError)


def test_unknown_id(root):
    col = ls.build_vectors(np.eye(4), name="u")
    col.remove([2])
    for call in (lambda: col.neighbors(99), lambda: col.get([2]), lambda: col.vectors([7]),
                 lambda: col.remove([2])):
        with pytest.raises(ls.UnknownId, match="no item with id"):
            call()
    assert str(ls.UnknownId("no item")) == "no item"  # not KeyError's quoted repr


def test_get_vectors_ids_and_removed_ids_never_reused(root):
    x, labels = clustered(50, dim=4)
    col = ls.build_vectors(x, labels, name="g")
    assert [h.label for h in col.get([3, 1])] == [str(labels[3]), str(labels[1])]
    np.testing.assert_array_equal(col.vectors([4]), x[4:5])
    col.remove([49, 48])
    assert col.add(x[:1]).tolist() == [50]
    assert col.ids()[-3:].tolist() == [46, 47, 50]


def test_missing_file_is_a_clear_error(root):
    col = ls.build_vectors(np.eye(4), name="m")
    (col.path / "index.faiss").unlink()
    with pytest.raises(ls.CorruptCollection, match="index.faiss is missing"):
        ls.open("m")


@pytest.mark.parametrize("part", ["vectors.npy", "ids.npy", "index.faiss", "records.sqlite"])
def test_corrupted_file_fails_its_checksum(root, part):
    col = ls.build_vectors(np.eye(4), name="c")
    path = col.path / part
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ls.CorruptCollection, match="fails its checksum"):
        ls.open("c")


def test_truncated_or_mistyped_manifest(root):
    col = ls.build_vectors(np.eye(4), name="t")
    manifest = col.path / "manifest.json"
    text = manifest.read_text()
    manifest.write_text(text[: len(text) // 2])
    with pytest.raises(ls.CorruptCollection, match="not valid JSON"):
        ls.open("t")
    doc = json.loads(text)
    doc["count"] = "four"
    manifest.write_text(json.dumps(doc))
    with pytest.raises(ls.CorruptCollection, match="'count' must be int"):
        ls.open("t")


def test_newer_format_version_is_refused(root):
    col = ls.build_vectors(np.eye(4), name="n")
    doc = json.loads((col.path / "manifest.json").read_text())
    doc["format_version"] = storage_manifest.FORMAT_VERSION + 1
    (col.path / "manifest.json").write_text(json.dumps(doc))
    with pytest.raises(ls.UnsupportedFormat, match="upgrade latentsearch"):
        ls.open("n")


def test_not_found_exists_and_bad_names(root):
    with pytest.raises(ls.CollectionNotFound) as info:
        ls.open("nothing-here")
    assert isinstance(info.value, FileNotFoundError)
    ls.build_vectors(np.eye(4), name="x")
    with pytest.raises(ls.CollectionExists):
        ls.build_vectors(np.eye(4), name="x")
    assert len(ls.build_vectors(np.ones((2, 4)), name="x", overwrite=True)) == 2
    for bad in ("../x", "/tmp/x", "a/b", ".hidden", ""):
        with pytest.raises(ls.InvalidInput, match="invalid collection name"):
            ls.build_vectors(np.eye(4), name=bad)


def test_open_by_path(root):
    col = ls.build_vectors(np.eye(4), name="p")
    assert len(ls.open(str(col.path))) == 4


def test_bad_index_spec_and_metric_leave_nothing(root):
    with pytest.raises(ls.IndexSpecError, match="FAISS cannot build"):
        ls.build_vectors(np.eye(4), name="s", index="NoSuchIndex")
    with pytest.raises(ls.InvalidInput, match="unknown metric"):
        ls.build_vectors(np.eye(4), name="s", metric="manhattan")
    assert not root.exists() or list(root.iterdir()) == []


def test_labels_must_match_count(root):
    with pytest.raises(ls.InvalidInput, match="3 labels for 4 items"):
        ls.build_vectors(np.eye(4), labels=[1, 2, 3], name="l")


def test_cosine_refuses_zero_vector(root):
    with pytest.raises(ls.InvalidInput, match="all zeros"):
        ls.build_vectors(np.zeros((2, 4)), name="z", metric="cosine")


def test_where_uses_bound_parameters(root):
    col = ls.build_vectors(np.eye(4), labels=["a", "b", "a", "c"], name="w")
    assert [h.id for h in col.search(np.eye(4)[0], k=4, where={"label": "a"})] == [0, 2]
    assert col.search(np.eye(4)[0], k=4, where={"label": "a' OR '1'='1"}) == []
    with pytest.raises(ls.InvalidInput, match="invalid where key"):
        col.search(np.eye(4)[0], where={"label; DROP TABLE records": "a"})
    assert len(ls.open("w")) == 4


def test_failed_write_leaves_the_collection_as_it_was(root, monkeypatch):
    x, _ = clustered(100, dim=4)
    col = ls.build_vectors(x, name="f")
    before = files_of(col.path)

    def boom(*args, **kwargs):
        raise OSError("disk full")

    with monkeypatch.context() as patch:
        patch.setattr(storage_files, "write_manifest", boom)
        with pytest.raises(OSError, match="disk full"):
            col.add(x[:5])
    again = ls.open("f")
    assert len(again) == 100 and again.ids()[-1] == 99
    again.add(x[:5])  # the next writer clears what the failed one left behind
    assert len(ls.open("f")) == 105
    assert not [f for f in files_of(col.path) if "tmp" in f]
    assert before  # the build wrote files


def test_second_writer_is_told_the_collection_is_locked(root):
    col = ls.build_vectors(np.eye(4), name="k")
    with storage_lock.writer_lock(col.path):
        with pytest.raises(ls.CollectionLocked, match="locked by another writer"):
            col.add(np.ones((1, 4)), wait=0.2)
    assert col.add(np.ones((1, 4))).tolist() == [4]


def test_reader_sees_committed_state_only(root):
    x, _ = clustered(200, dim=4)
    col = ls.build_vectors(x, name="r")
    reader = ls.open("r")
    col.add(x[:10])
    assert len(reader) == 200  # its generation is unchanged until it reloads
    assert reader.search(x[0], k=1)[0].id == 0
    assert len(reader.reload()) == 210


def test_pickled_npy_is_refused(root, tmp_path):
    path = tmp_path / "obj.npy"
    np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ls.InvalidInput, match="not a plain .npy"):
        ls.build_vectors(str(path), name="p")


def test_no_tensorflow_for_vector_collections(root):
    import sys

    col = ls.build_vectors(np.eye(4), name="tf")
    col.neighbors(0)
    if "tensorflow" in sys.modules and not os.environ.get("LATENTSEARCH_TF_LOADED_OK"):
        # other tests in this process may have trained an encoder; check in a clean process
        import subprocess

        code = (
            "import sys, latentsearch as ls, numpy as np;"
            f"c = ls.open({str(col.path)!r}); c.neighbors(0); c.search(np.ones(4));"
            "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules"
        )
        subprocess.run([sys.executable, "-c", code], check=True)
    else:
        assert "tensorflow" not in sys.modules


def test_failed_add_does_not_leak_into_the_open_collection(root, monkeypatch):
    x, _ = clustered(100, dim=4)
    col = ls.build_vectors(x, name="leak")
    with monkeypatch.context() as patch:
        patch.setattr(storage_files, "write_manifest", lambda *a, **k: (_ for _ in ()).throw(OSError("full")))
        with pytest.raises(OSError):
            col.add(x[:5] + 100)
    assert len(col) == 100
    assert all(h.id < 100 for h in col.search(x[0] + 100, k=3))


def test_exact_search_in_chunks_equals_one_pass():
    from latentsearch import index as _index

    x, _ = clustered(3000, dim=8)
    ids = np.arange(3000) * 3
    q = x[:25] + 0.01
    for metric in ("l2", "cosine"):
        base = _index.normalise(x) if metric == "cosine" else x
        whole = _index.exact_search(base, ids, q, 10, metric)
        chunked = _index.exact_search(base, ids, q, 10, metric, chunk=701)
        np.testing.assert_array_equal(whole[1], chunked[1])
        np.testing.assert_allclose(whole[0], chunked[0], rtol=1e-6)


def test_build_from_a_memory_mapped_file_in_batches(root, tmp_path, monkeypatch):
    from latentsearch.collection import build as _collection

    monkeypatch.setattr(_collection, "BATCH", 128)
    x, labels = clustered(1000, dim=8)
    x[700, 3] = np.nan
    np.save(tmp_path / "v.npy", x)
    with pytest.raises(ls.InvalidInput, match="row 700"):
        ls.build_vectors(str(tmp_path / "v.npy"), name="mm")
    assert not root.exists() or not any(root.iterdir())
    x[700, 3] = 0.0
    np.save(tmp_path / "v.npy", x.astype(np.float64))
    col = ls.build_vectors(str(tmp_path / "v.npy"), labels, name="mm", metric="cosine")
    np.testing.assert_allclose(col.vectors([5])[0], x[5] / np.linalg.norm(x[5]), rtol=1e-6)
    assert col.search(x[900], k=1)[0].id == 900


def test_rerank_equals_exact_search_where_recall_is_one():
    """Re-ranked candidates give exactly the exact answer when the candidates hold it."""
    from latentsearch import index as _index

    x, _ = clustered(2000, dim=8)
    ids = np.arange(2000) * 5
    q = x[:30] + 0.02
    for metric in ("l2", "cosine"):
        base = _index.normalise(x) if metric == "cosine" else x
        qq = _index.normalise(q) if metric == "cosine" else q
        d_exact, i_exact = _index.exact_search(base, ids, qq, 10, metric)
        _, cand = _index.exact_search(base, ids, qq, 40, metric)  # holds the true 10
        cand = cand[:, ::-1].copy()  # in the worst order
        cand[:, :3] = -1  # and with gaps
        d, i = _index.rerank_exact(qq, cand, 10, lambda w: base[np.searchsorted(ids, w)], metric)
        np.testing.assert_array_equal(i, i_exact)
        np.testing.assert_allclose(d, d_exact, rtol=1e-4, atol=1e-5)


def test_ivfpq_opens_without_the_precomputed_table(root):
    """FAISS rebuilds IVFPQ's nlist x M x 256 table on read unless told not to: 2.7x the
    index's own size at 1M, which broke the memory target (benchmarks/RESULTS.md)."""
    import faiss

    x, _ = clustered(12_000)
    col = ls.build_vectors(x, name="pq", index="ivfpq")
    ivf = faiss.downcast_index(faiss.extract_index_ivf(col.snapshot.main.index))
    assert isinstance(ivf, faiss.IndexIVFPQ) and ivf.precomputed_table.size() == 0
    assert col.search(x[5], k=1)[0].id == 5

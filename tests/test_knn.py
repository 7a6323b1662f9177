"""Bulk neighbours (``latentsearch knn``, ``latentsearch.scale.knn``): every row is what
``neighbors`` answers for that item, on collections with delta segments and removals."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from click.testing import CliRunner

import latentsearch as ls
from conftest import clustered
from latentsearch.cli import main
from latentsearch.errors import InvalidInput
from latentsearch.scale import knn as knn_module
from latentsearch.scale.knn import knn


def changed_collection(root, index: str, metric: str = "l2", n: int = 3000):
    """A seeded collection whose last 400 items were added (delta segments), with removed ids in
    the main segment (listed, still in the index) and in a delta."""
    x, labels = clustered(n, dim=16, seed=3)
    main_n = n - 400
    col = ls.build_vectors(x[:main_n], labels[:main_n], name=f"c-{index}-{metric}", root=root,
                           index=index, metric=metric, quiet=True)
    col.add_vectors(x[main_n : main_n + 200], [(str(v), None, None, None)
                                                for v in labels[main_n : main_n + 200]])
    col.add(x[main_n + 200 :], labels[main_n + 200 :])
    col.remove(removed_ids(n))
    assert col.info["deltas"]["items"] == 398 and col.info["removed_pending"] == 3
    return col


def removed_ids(n: int) -> list[int]:
    main_n = n - 400
    return [0, 17, main_n // 2, main_n + 5, n - 1]  # three in the main segment, two added


def assert_like_neighbors(col, rows: np.ndarray, k: int) -> None:
    """Each row is ``col.neighbors(id, k)``: same ids in order, distances to 1e-5, and the
    places past the answer padded with -1 / inf."""
    assert rows["id"].tolist() == col.ids().tolist()
    for row in rows:
        hits = col.neighbors(int(row["id"]), k)
        m = len(hits)
        assert row["neighbors"][:m].tolist() == [h.id for h in hits]
        np.testing.assert_allclose(row["distances"][:m], [h.distance for h in hits],
                                   rtol=0, atol=1e-5)
        assert (row["neighbors"][m:] == -1).all() and np.isinf(row["distances"][m:]).all()


@pytest.mark.parametrize("index,metric", [("flat", "l2"), ("ivf", "l2"), ("flat", "cosine")])
def test_knn_equals_neighbors_for_every_item(root, tmp_path, index, metric):
    col = changed_collection(root, index, metric)
    out = knn(col, tmp_path / "g.npy", k=10, batch=700)  # several batches, a short last one
    rows = np.load(out, allow_pickle=False)
    assert rows.dtype.names == ("id", "neighbors", "distances")
    assert rows.dtype["neighbors"] == np.dtype(("<i8", (10,)))
    assert rows.dtype["distances"] == np.dtype(("<f4", (10,)))
    assert len(rows) == len(col) == 3000 - 5
    assert not np.isin(rows["neighbors"], removed_ids(3000)).any()
    assert (rows["neighbors"] != rows["id"][:, None]).all()  # never itself
    assert_like_neighbors(col, rows, 10)


def test_parquet_holds_the_same_rows_as_npy(root, tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    col = changed_collection(root, "flat", n=1200)
    rows = np.load(knn(col, tmp_path / "g.npy", k=6), allow_pickle=False)
    table = pq.read_table(knn(col, tmp_path / "g.parquet", k=6))
    assert str(table.schema.field("id").type) == "int64"
    assert str(table.schema.field("neighbors").type) == "list<element: int64>"
    assert str(table.schema.field("distances").type) == "list<element: float>"
    assert table.column("id").to_pylist() == rows["id"].tolist()
    assert table.column("neighbors").to_pylist() == rows["neighbors"].tolist()
    got = np.array(table.column("distances").to_pylist(), dtype=np.float32)
    assert np.array_equal(got, rows["distances"])


def test_parquet_row_groups_join_up(root, tmp_path, monkeypatch):
    pq = pytest.importorskip("pyarrow.parquet")
    col = changed_collection(root, "flat", n=1200)
    rows = np.load(knn(col, tmp_path / "g.npy", k=3), allow_pickle=False)
    monkeypatch.setattr(knn_module, "PARQUET_ROWS", 250)
    f = pq.ParquetFile(knn(col, tmp_path / "g.parquet", k=3))
    assert f.metadata.num_row_groups == -(-len(rows) // 250)
    table = f.read()
    assert table.column("neighbors").to_pylist() == rows["neighbors"].tolist()


def test_k_past_the_collection_pads_with_minus_one_and_inf(root, tmp_path):
    x, _ = clustered(6, dim=4, seed=5)
    col = ls.build_vectors(x[:4], name="tiny", root=root, index="flat", quiet=True)
    col.add(x[4:])  # a delta
    col.remove([1])
    rows = np.load(knn(col, tmp_path / "t.npy", k=8), allow_pickle=False)
    assert rows["id"].tolist() == [0, 2, 3, 4, 5]
    assert ((rows["neighbors"] >= 0).sum(axis=1) == 4).all()  # every other live item
    assert (rows["neighbors"][:, 4:] == -1).all() and np.isinf(rows["distances"][:, 4:]).all()
    assert_like_neighbors(col, rows, 8)


def test_nearest_gives_padded_arrays_like_search_batch(root):
    col = changed_collection(root, "flat", n=1200)
    ids = col.ids()[::97]
    vecs = col.vectors(ids)
    D, I = col.nearest(vecs, 5)
    assert D.dtype == np.float64 and I.dtype == np.int64 and D.shape == I.shape == (len(ids), 5)
    assert I[:, 0].tolist() == ids.tolist()  # each stored vector finds itself first
    hits = col.search_batch(vector=vecs, k=5)
    assert I.tolist() == [[h.id for h in row] for row in hits]
    assert D.tolist() == [[h.distance for h in row] for row in hits]
    D, I = col.nearest(vecs, 5, exclude=ids)
    assert (I != ids[:, None]).all()
    with pytest.raises(InvalidInput, match="exclude has 1 ids for"):
        col.nearest(vecs, 5, exclude=ids[:1])
    D, I = col.nearest(vecs[:2], 5000, where={"label": "3"})
    found = I >= 0
    assert 0 < found.sum(axis=1).max() < 5000 and np.isinf(D[~found]).all()


def test_bad_input_is_refused_before_any_work(root, tmp_path, monkeypatch):
    col = changed_collection(root, "flat", n=1200)
    monkeypatch.setattr(col, "ids", lambda: pytest.fail("work started"))
    with pytest.raises(InvalidInput, match="a .npy or .parquet file"):
        knn(col, tmp_path / "g.csv")
    with pytest.raises(InvalidInput, match="does not exist"):
        knn(col, tmp_path / "no" / "g.npy")
    with pytest.raises(InvalidInput, match="k must be a positive integer"):
        knn(col, tmp_path / "g.npy", k=0)
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # as if not installed
    with pytest.raises(InvalidInput, match=r"pip install 'latentsearch\[ray\]'"):
        knn(col, tmp_path / "g.parquet")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["indexes"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(root, tmp_path, monkeypatch):
    col = changed_collection(root, "flat", n=1200)
    out = tmp_path / "g.npy"
    out.write_bytes(b"before")

    def broken_save(fh, *args, **kwargs):
        fh.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(knn_module.np, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        knn(col, out)
    assert out.read_bytes() == b"before"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.npy", "indexes"]


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_cli_writes_the_file_and_says_so(root, tmp_path):
    col = changed_collection(root, "flat", n=1200)
    r = run("knn", col.name, "--out", tmp_path / "g.npy", "-k", 4)
    assert r.exit_code == 0, r.output
    assert r.stdout == f"wrote the 4 nearest of 1195 items in {col.name} to {tmp_path / 'g.npy'}\n"
    rows = np.load(tmp_path / "g.npy", allow_pickle=False)
    assert_like_neighbors(col, rows, 4)
    r = run("knn", col.name, "--out", tmp_path / "g.parquet", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout) == {"collection": col.name, "items": 1195, "k": 10,
                                    "out": str(tmp_path / "g.parquet")}


def test_cli_bad_suffix_is_one_line_and_leaves_no_file(root, tmp_path):
    col = changed_collection(root, "flat", n=1200)
    r = run("knn", col.name, "--out", tmp_path / "g.csv")
    assert r.exit_code == 1
    assert r.stderr == "error: knn writes a .npy or .parquet file, not 'g.csv'\n"
    assert r.stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["indexes"]


def test_a_sharded_collection_gives_what_its_neighbors_give(root, tmp_path):
    x, labels = clustered(1500, dim=16, seed=4)
    col = ls.build_vectors(x, labels, name="sh", root=root, index="flat", shards=3, quiet=True)
    assert type(col).__name__ == "ShardedCollection"
    col.remove([3, 700, 1499])  # from the first, second and last shard
    rows = np.load(knn(col, tmp_path / "s.npy", k=6), allow_pickle=False)
    assert len(rows) == 1497
    assert_like_neighbors(col, rows, 6)

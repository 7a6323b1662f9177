"""Sharded collections (``--shards N``) in one process: the same answers as the unsharded
build of the same vectors (flat), ids across shards, writes routed to the right shard,
info and list, a corrupt parent refused, a failed build leaving nothing, the CLI, and the
recall of approximate (ivf) shards against brute force."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

import latentsearch as ls
from conftest import clustered
from latentsearch.cli import main
from latentsearch.collection import Collection, ShardedCollection
from latentsearch.errors import CollectionExists, CorruptCollection, IndexSpecError, UnknownId
from latentsearch.index import exact_search, recall_at

N, DIM = 3000, 16


@pytest.fixture(scope="module")
def data():
    x, labels = clustered(N, dim=DIM, seed=3)
    return x, labels, x[::97] + np.float32(0.05)  # queries near stored items


@pytest.fixture
def pair(root, data):
    """The same seeded vectors built flat twice: unsharded, and as 3 shards."""
    x, labels, _ = data
    one = ls.build_vectors(x, labels, name="one", root=root, index="flat")
    three = ls.build_vectors(x, labels, name="three", root=root, index="flat", shards=3)
    return one, three


def same_hits(a, b):
    assert [h.id for h in a] == [h.id for h in b]
    assert [h.label for h in a] == [h.label for h in b]
    np.testing.assert_allclose([h.distance for h in a], [h.distance for h in b], atol=1e-5)


def test_flat_shards_answer_as_the_unsharded_build(pair, data):
    one, three = pair
    x, labels, queries = data
    assert isinstance(three, ShardedCollection) and isinstance(one, Collection)
    for a, b in zip(one.search_batch(queries, k=10), three.search_batch(queries, k=10)):
        same_hits(a, b)
    for item in (0, 999, 1000, 1500, 2999):
        same_hits(one.neighbors(item, k=7), three.neighbors(item, k=7))
        assert item not in [h.id for h in three.neighbors(item, k=7)]
    where = {"label": int(labels[42])}
    for q in queries[:5]:
        hits = three.search(q, k=20, where=where)
        same_hits(one.search(q, k=20, where=where), hits)
        assert {h.label for h in hits} == {str(labels[42])}
    same_hits(one.search(queries[3], k=5, exact=True), three.search(queries[3], k=5))
    assert three.get([2999, 0, 1234]) == one.get([2999, 0, 1234])
    np.testing.assert_array_equal(three.vectors([5, 2500, 1000]), one.vectors([5, 2500, 1000]))
    D1, I1 = one.nearest(x[:20], k=5, exclude=np.arange(20))
    D3, I3 = three.nearest(x[:20], k=5, exclude=np.arange(20))
    np.testing.assert_array_equal(I1, I3)
    np.testing.assert_allclose(D1, D3, atol=1e-5)


def test_ids_follow_the_rows_and_each_shard_is_a_collection(pair, data):
    _, three = pair
    x = data[0]
    np.testing.assert_array_equal(three.ids(), np.arange(N))
    np.testing.assert_array_equal(three.vectors(), x)
    assert len(three) == N and three.dim == DIM and three.metric == "l2"
    starts = [s["first_id"] for s in three.manifest["shards"]]
    assert starts == [0, 1000, 2000]
    for path, start, stop in zip(three.shard_paths, starts, [*starts[1:], N]):
        shard = ls.open(path)
        assert type(shard) is Collection
        np.testing.assert_array_equal(shard.ids(), np.arange(start, stop))
        np.testing.assert_array_equal(shard.vectors(), x[start:stop])


def test_adds_go_to_the_last_shard_and_removes_to_the_holder(pair, data, root):
    one, three = pair
    x = data[0]
    new = x[:3] + np.float32(0.01)
    records = [("added", None, None, None)] * 3
    ids = three.add_vectors(new, records)
    np.testing.assert_array_equal(ids, [N, N + 1, N + 2])
    np.testing.assert_array_equal(ls.open(three.shard_paths[2]).ids()[-3:], ids)
    assert len(ls.open(three.shard_paths[1])) == 1000
    assert three.search(new[1], k=1)[0].id == N + 1
    assert three.get([N + 2])[0].label == "added"

    assert three.remove([1500]) == 1
    assert 1500 not in three.ids() and len(three) == N + 2
    assert all(h.id != 1500 for h in three.search(x[1500], k=10))
    assert len(ls.open(three.shard_paths[1])) == 999
    with pytest.raises(UnknownId):
        three.get([1500])
    with pytest.raises(UnknownId):
        three.remove([7, 10**9])  # one unknown: nothing removed
    with pytest.raises(UnknownId):
        three.remove([-1])
    assert 7 in three.ids()

    # another process's view (a fresh open) sees the same, and reload picks up a change
    fresh = ls.open("three", root)
    assert len(fresh) == N + 2 and fresh.get([N])[0].label == "added"
    three.remove([8])
    assert 8 in fresh.ids() and 8 not in fresh.reload().ids()
    assert fresh.generation == three.generation
    three.compact()
    assert three.info["removed_pending"] == 0 and three.info["deltas"]["items"] == 0
    assert len(three) == N + 1


def test_info_and_list(pair, root):
    _, three = pair
    info = three.info
    assert info["kind"] == "sharded" and info["count"] == N
    assert info["index"]["factory"] == "sharded(3)" and info["index"]["spec"] == "flat"
    assert [s["count"] for s in info["shards"]] == [1000, 1000, 1000]
    assert [s["first_id"] for s in info["shards"]] == [0, 1000, 2000]
    assert {s["index"] for s in info["shards"]} == {"Flat"}
    rows = {r["name"]: r for r in ls.list_collections(root)}
    assert rows["three"] == {"name": "three", "modality": "vectors", "count": N, "dim": DIM,
                             "metric": "l2", "index": "sharded(3)"}
    assert rows["one"]["index"] == "Flat"


def _rewrite(folder, change):
    path = folder / "manifest.json"
    m = json.loads(path.read_text())
    change(m)
    path.write_text(json.dumps(m))


def test_a_corrupt_parent_is_refused(root, data):
    x, labels, _ = data
    col = ls.build_vectors(x[:300], labels[:300], name="s", root=root, index="flat", shards=3)
    folder = col.path
    original = (folder / "manifest.json").read_text()
    cases = {
        "escapes": lambda m: m["shards"][1].update(name="../x"),
        "absolute": lambda m: m["shards"][1].update(name="/tmp"),
        "nested": lambda m: m["shards"][1].update(name="shard-001/encoder"),
        "unordered": lambda m: m["shards"][1].update(first_id=0),
        "no shards": lambda m: m.update(shards=[]),
        "dim": lambda m: m.update(dim=DIM + 1),
        "range": lambda m: m["shards"][1].update(first_id=150),
    }
    for what, change in cases.items():
        _rewrite(folder, change)
        with pytest.raises(CorruptCollection):
            ls.open(folder)
        (folder / "manifest.json").write_text(original)
    shutil.rmtree(folder / "shard-001")
    with pytest.raises(CorruptCollection, match="shard-001 is missing"):
        ls.open("s", root)
    row = {r["name"]: r for r in ls.list_collections(root)}["s"]
    assert "error" in row
    with pytest.raises(CorruptCollection, match="sharded"):
        Collection(folder)  # the parent is no ordinary collection


def test_a_failed_shard_build_leaves_nothing(root, data):
    x, labels, _ = data
    with pytest.raises(IndexSpecError):
        ls.build_vectors(x, labels, name="bad", root=root, index="NoSuchIndex42", shards=3)
    assert not [p for p in root.iterdir() if "bad" in p.name]
    ls.build_vectors(x[:50], name="taken", root=root, index="flat")
    with pytest.raises(CollectionExists):
        ls.build_vectors(x, name="taken", root=root, index="flat", shards=2)
    col = ls.build_vectors(x, name="taken", root=root, index="flat", shards=2, overwrite=True)
    assert isinstance(ls.open("taken", root), ShardedCollection) and len(col) == N
    assert sorted(p.name for p in root.iterdir()) == ["taken"]


def test_ivf_shards_keep_their_recall(root, data):
    x, _, _ = data
    queries = clustered(200, dim=DIM, seed=3)[0] + np.float32(0.1)  # new points, same centres
    col = ls.build_vectors(x, name="ivf", root=root, index="ivf", shards=3)
    assert {s["index"].split(",")[0][:3] for s in col.info["shards"]} == {"IVF"}
    found = np.array([[h.id for h in hits] for hits in col.search_batch(queries, k=10)])
    _, truth = exact_search(x, np.arange(N), queries, 10, "l2")
    assert recall_at(found, truth) >= 0.9


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_the_cli_builds_queries_and_changes_a_sharded_collection(tmp_path, root, data):
    x, labels, _ = data
    np.save(tmp_path / "emb.npy", x)
    (tmp_path / "labels.txt").write_text("\n".join(f"c{v}" for v in labels) + "\n")
    r = run("build", "vectors", tmp_path / "emb.npy", "--labels", tmp_path / "labels.txt",
            "--name", "emb", "--index", "flat", "--shards", 3, "-q")
    assert r.exit_code == 0, r.output
    plain = ls.build_vectors(x, [f"c{v}" for v in labels], name="plain", root=root,
                             index="flat")

    r = run("query", "emb", "--id", 5, "-k", 4, "--json")
    assert r.exit_code == 0, r.output
    hits = json.loads(r.stdout)["hits"]
    assert [h["id"] for h in hits] == [h.id for h in plain.neighbors(5, k=4)]
    r = run("query", "emb", "--id", 5, "-k", 50, "--where", f"label=c{labels[5]}", "--json")
    assert {h["label"] for h in json.loads(r.stdout)["hits"]} == {f"c{labels[5]}"}

    r = run("info", "emb")
    assert r.exit_code == 0, r.output
    assert "sharded(3)" in r.output and f"count: {N} items" in r.output
    assert json.loads(run("info", "emb", "--json").stdout)["kind"] == "sharded"
    r = run("list", "--json")
    assert {row["name"]: row["index"] for row in json.loads(r.stdout)}["emb"] == "sharded(3)"

    np.save(tmp_path / "more.npy", x[:2] + np.float32(0.01))
    r = run("add", "emb", tmp_path / "more.npy", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["ids"] == [N, N + 1]
    r = run("remove", "emb", "--id", 1200, "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["count"] == N + 1
    r = run("remove", "emb", "--id", 1200)
    assert r.exit_code == 1 and r.stderr.startswith("error: ") and "1200" in r.stderr
    r = run("compact", "emb", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["count"] == N + 1


def test_an_image_collection_keeps_its_images_in_the_shards(root):
    digits = np.load(ls.__path__[0] + "/data/mnist_5k.npz")
    pixels, labels = digits["x"][:240], digits["y"][:240]
    col = ls.build_images(pixels, labels=labels, name="digits", root=root, encoder="dense",
                          epochs=1, index="flat", shards=2, quiet=True)
    assert isinstance(col, ShardedCollection) and col.modality == "image"
    assert not list(col.path.glob("*.npy")) and not (col.path / "encoder").exists()  # scratch
    shown = col.images([239, 0, 120])
    np.testing.assert_array_equal(shown[..., 0], pixels[[239, 0, 120]])
    hits = col.search(image=pixels[130], k=3)  # encoded here, searched in both shards
    assert hits[0].id == 130 and hits[0].distance < 1e-4
    np.testing.assert_allclose(col.encode(pixels[130:131]), col.vectors([130]), atol=1e-5)
    ids = col.add(pixels[:2], labels=["x", "y"])
    np.testing.assert_array_equal(ids, [240, 241])
    np.testing.assert_array_equal(col.images(ids)[..., 0], pixels[:2])
    assert [r.label for r in col.get(ids)] == ["x", "y"]


def test_reload_follows_a_rebuild_and_the_server_a_change_of_kind(root, data):
    x, labels, _ = data
    held = ls.build_vectors(x[:300], name="r", root=root, index="flat", shards=2)
    ls.build_vectors(x[:600], name="r", root=root, index="flat", shards=3, overwrite=True)
    assert len(held.reload()) == 600 and len(held.shard_paths) == 3
    same_hits(held.neighbors(450, k=5), ls.open("r", root).neighbors(450, k=5))

    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from latentsearch.serve.app import create_app

    ls.build_vectors(x[:200], name="srv", root=root, index="flat")
    client = TestClient(create_app(root, reload_every=0.0))
    assert client.get("/collections/srv").json()["count"] == 200
    ls.build_vectors(x[:900], name="srv", root=root, index="flat", shards=3, overwrite=True)
    info = client.get("/collections/srv").json()
    assert info["count"] == 900 and info["kind"] == "sharded"
    ls.open("srv", root).add_vectors(x[:1] + np.float32(0.01), [("late", None, None, None)])
    r = client.post("/collections/srv/search", json={"id": 0, "k": 1})
    assert r.json()["hits"][0]["id"] == 900  # a shard's commit by another object, seen


def test_cosine_shards_and_nearest_of_stored_rows(root, data):
    x, labels, queries = data
    one = ls.build_vectors(x, labels, name="c1", root=root, index="flat", metric="cosine")
    four = ls.build_vectors(x, labels, name="c4", root=root, index="flat", metric="cosine",
                            shards=4)
    for a, b in zip(one.search_batch(queries, k=6), four.search_batch(queries, k=6)):
        same_hits(a, b)
    ids = np.array([0, 749, 750, 1800, 2999])
    D, I = four.nearest(four.vectors(ids), k=6, exclude=ids)
    for row, item in enumerate(ids):
        hits = four.neighbors(int(item), k=6)
        assert I[row].tolist() == [h.id for h in hits]
        np.testing.assert_allclose(D[row], [h.distance for h in hits], atol=1e-6)
    D, I = four.nearest(x[:2], k=N + 5)  # more than there are: padded
    assert (I[:, N:] == -1).all() and np.isinf(D[:, N:]).all() and (I[:, :N] >= 0).all()


def test_knn_of_a_sharded_collection_is_the_unsharded_one(pair, tmp_path):
    from latentsearch.scale.knn import knn

    one, three = pair
    a = np.load(knn(one, tmp_path / "one.npy", k=5), allow_pickle=False)
    b = np.load(knn(three, tmp_path / "three.npy", k=5), allow_pickle=False)
    np.testing.assert_array_equal(a["id"], b["id"])
    np.testing.assert_array_equal(a["neighbors"], b["neighbors"])
    np.testing.assert_allclose(a["distances"], b["distances"], atol=1e-5)

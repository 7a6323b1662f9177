"""``serve --ray``: the shards of a sharded collection in Ray actors answer as the same
collection in one process; and shards built as Ray tasks equal shards built here."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

import latentsearch as ls  # noqa: E402
from conftest import clustered  # noqa: E402
from latentsearch.collection import ShardedCollection  # noqa: E402
from latentsearch.scale import cluster as cluster_module  # noqa: E402
from latentsearch.serve.app import create_app  # noqa: E402

pytestmark = pytest.mark.ray

N, DIM = 1500, 8


@pytest.fixture
def cluster(ray_cluster):
    return cluster_module.connect("auto")  # the fixture's Ray, left running


@pytest.fixture
def data():
    x, labels = clustered(N, dim=DIM, seed=5)
    return x, [f"c{v}" for v in labels]


def hit_rows(hits):
    return [(h.id, h.label) for h in hits], [h.distance for h in hits]


def same(answer, hits):
    """An HTTP answer's hits are the in-process Hits: ids, labels, distances."""
    assert [(h["id"], h["label"]) for h in answer] == hit_rows(hits)[0]
    np.testing.assert_allclose([h["distance"] for h in answer], hit_rows(hits)[1], atol=1e-6)


def test_served_shards_in_actors_answer_as_in_process(root, cluster, data):
    x, labels = data
    ls.build_vectors(x, labels, name="big", root=root, index="flat", shards=3)
    ls.build_vectors(x[:100], name="small", root=root, index="flat")
    client = TestClient(create_app(root, reload_every=0.0, cluster=cluster))
    served = client.app.state.registry.get("big")
    assert isinstance(served, ShardedCollection) and served.on_cluster
    assert not isinstance(client.app.state.registry.get("small"), ShardedCollection)
    here = ls.open("big", root)
    assert not here.on_cluster

    q = x[17] + np.float32(0.02)
    r = client.post("/collections/big/search", json={"vector": q.tolist(), "k": 8})
    assert r.status_code == 200, r.text
    same(r.json()["hits"], here.search(q, k=8))
    batch = x[::300] + np.float32(0.03)
    r = client.post("/collections/big/search", json={"vectors": batch.tolist(), "k": 5})
    for answer, hits in zip(r.json()["batches"], here.search_batch(batch, k=5), strict=True):
        same(answer, hits)
    for item in (3, 700, 1499):
        r = client.post("/collections/big/search", json={"id": item, "k": 6})
        same(r.json()["hits"], here.neighbors(item, k=6))
    where = {"label": labels[42]}
    r = client.post("/collections/big/search", json={"id": 42, "k": 30, "where": where})
    same(r.json()["hits"], here.neighbors(42, k=30, where=where))
    assert {h["label"] for h in r.json()["hits"]} == {labels[42]}
    r = client.post("/collections/big/search", json={"id": 42, "k": 4, "exact": True,
                                                       "recall": 0.99})
    same(r.json()["hits"], here.neighbors(42, k=4, exact=True, recall=0.99))

    assert client.get("/collections/big/items/1200").json()["label"] == labels[1200]
    assert client.get("/collections/big/items/99999").status_code == 404
    assert client.get("/collections/big").json()["count"] == N
    row = {c["name"]: c for c in client.get("/collections").json()["collections"]}["big"]
    assert row["index"] == "sharded(3)" and row["count"] == N

    # writes go through the actors; an in-process open sees them committed
    r = client.post("/collections/big/items", json={"vectors": [(x[5] + 0.01).tolist()],
                                                   "labels": ["new"]})
    assert r.json() == {"ids": [N]}
    r = client.request("DELETE", "/collections/big/items", json={"ids": [800]})
    assert r.json() == {"removed": 1}
    assert client.request("DELETE", "/collections/big/items", json={"ids": [800]}).status_code \
        == 404
    here.reload()
    assert len(here) == N and 800 not in here.ids() and here.get([N])[0].label == "new"
    r = client.post("/collections/big/search", json={"id": 5, "k": 10})
    same(r.json()["hits"], here.neighbors(5, k=10))
    assert N in [h["id"] for h in r.json()["hits"]]

    # another process's add to a shard is picked up (the registry watches shard manifests)
    here.add_vectors(x[6:7] + np.float32(0.01), [("other", None, None, None)])
    r = client.post("/collections/big/search", json={"id": 6, "k": 3})
    assert r.json()["hits"][0]["id"] == N + 1
    same(r.json()["hits"], here.neighbors(6, k=3))


def test_shards_built_as_ray_tasks_equal_shards_built_here(root, cluster, data, monkeypatch):
    x, labels = data
    jobs = []
    real_map = cluster_module.Cluster.map

    def spy(self, fn, parts, **kwargs):
        jobs.extend(parts)
        return real_map(self, fn, parts, **kwargs)

    monkeypatch.setattr(cluster_module.Cluster, "map", spy)
    there = ls.build_vectors(x, labels, name="there", root=root, index="ivf", shards=2,
                             ray="local")
    assert [(j.name, j.start, j.stop) for j in jobs] == [("shard-000", 0, 750),
                                                          ("shard-001", 750, N)]
    here = ls.build_vectors(x, labels, name="here", root=root, index="ivf", shards=2)
    assert len(jobs) == 2  # the one-process build ran no tasks
    np.testing.assert_array_equal(there.ids(), here.ids())
    np.testing.assert_allclose(there.vectors(), here.vectors(), atol=1e-6)
    assert there.get(range(0, N, 149)) == here.get(range(0, N, 149))
    assert [s["index"] for s in there.info["shards"]] == [s["index"] for s in here.info["shards"]]
    queries = x[::50] + np.float32(0.05)
    for a, b in zip(there.search_batch(queries, k=10), here.search_batch(queries, k=10)):
        assert [h.id for h in a] == [h.id for h in b]
        np.testing.assert_allclose([h.distance for h in a], [h.distance for h in b], atol=1e-5)
    assert not [p for p in root.iterdir() if p.name.startswith(".")]


def test_a_damaged_shard_in_an_actor_says_why(root, cluster, data):
    from latentsearch.errors import CorruptCollection

    x, _ = data
    col = ls.build_vectors(x[:300], name="hurt", root=root, index="flat", shards=2)
    ids = col.shard_paths[1] / "ids.npy"
    damaged = bytearray(ids.read_bytes())
    damaged[-1] ^= 1
    ids.write_bytes(bytes(damaged))
    with pytest.raises(CorruptCollection, match="shard-001/ids.npy fails its checksum"):
        ShardedCollection(col.path, cluster=cluster)

"""``knn`` split over a local Ray cluster writes the file a one-process run writes."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

import latentsearch as ls
from conftest import clustered
from latentsearch.cli import main
from latentsearch.errors import ClusterError
from latentsearch.scale import knn as knn_module
from latentsearch.scale.knn import knn
from test_knn import assert_like_neighbors, changed_collection

pytestmark = pytest.mark.ray


@pytest.fixture
def cluster(ray_cluster):
    from latentsearch.scale.cluster import connect

    return connect("auto")  # the fixture's Ray, left running


@pytest.mark.parametrize("index", ["flat", "ivf"])
def test_knn_on_the_cluster_equals_one_process(root, tmp_path, cluster, index, monkeypatch):
    col = changed_collection(root, index)
    here = np.load(knn(col, tmp_path / "here.npy", k=7), allow_pickle=False)
    jobs = []
    real_map = cluster.map

    def spy(fn, parts, **kwargs):
        jobs.extend(parts)
        return real_map(fn, parts, **kwargs)

    monkeypatch.setattr(cluster, "map", spy)
    there = np.load(knn(col, tmp_path / "there.npy", k=7, cluster=cluster, batch=400),
                    allow_pickle=False)
    assert len(jobs) == 3  # 2,995 items in ranges of at least MIN_JOB
    assert sum(j.count for j in jobs) == len(col)
    assert there.dtype == here.dtype and np.array_equal(there, here)
    assert_like_neighbors(col, there, 7)


def test_a_worker_seeing_another_generation_refuses(root, tmp_path, cluster, monkeypatch):
    col = changed_collection(root, "flat", n=1200)
    stale = knn_module._stamp(col)
    col.remove([5])  # committed: the workers open the newer generation
    monkeypatch.setattr(knn_module, "_stamp", lambda c: stale if c is col else "?")
    with pytest.raises(ClusterError, match="changed while knn ran"):
        knn(col, tmp_path / "g.npy", cluster=cluster)
    assert not (tmp_path / "g.npy").exists()


def test_cli_knn_with_ray_local_reuses_the_running_ray(root, tmp_path, ray_cluster):
    import ray

    col = changed_collection(root, "ivf", n=1200)
    r = CliRunner().invoke(main, ["knn", col.name, "--out", str(tmp_path / "x.npy"),
                                  "--ray", "local", "-k", 5])
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith(f"wrote the 5 nearest of 1195 items in {col.name}")
    assert ray.is_initialized()  # the fixture's cluster was used, not stopped
    rows = np.load(tmp_path / "x.npy", allow_pickle=False)
    assert np.array_equal(rows, np.load(knn(col, tmp_path / "y.npy", k=5), allow_pickle=False))


def test_a_sharded_collection_on_the_cluster_equals_one_process(root, tmp_path, cluster):
    x, labels = clustered(3000, dim=16, seed=4)
    col = ls.build_vectors(x, labels, name="sh", root=root, index="ivf", shards=3, quiet=True)
    col.remove([3, 1500])
    here = np.load(knn(col, tmp_path / "here.npy", k=6), allow_pickle=False)
    there = np.load(knn(col, tmp_path / "there.npy", k=6, cluster=cluster), allow_pickle=False)
    assert np.array_equal(there, here)

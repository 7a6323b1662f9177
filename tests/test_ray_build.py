"""``--ray`` builds and adds on a local Ray cluster equal the one-process ones; a worker that
dies is retried, a part that fails leaves nothing behind (issue 16)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import latentsearch as ls
from latentsearch.cli import main
from latentsearch.scale import build as scale_build

pytestmark = pytest.mark.ray


def _same_collection(a: ls.Collection, b: ls.Collection, queries: np.ndarray) -> None:
    """Same ids, vectors (1e-5), records and answers."""
    assert np.array_equal(a.ids(), b.ids())
    np.testing.assert_allclose(a.vectors(), b.vectors(), atol=1e-5)
    ids = a.ids().tolist()
    assert a.get(ids) == b.get(ids)
    assert a.manifest["index"]["factory"] == b.manifest["index"]["factory"]
    assert a.manifest["index"]["params"] == b.manifest["index"]["params"]
    for ha, hb in zip(a.search_batch(queries, k=10), b.search_batch(queries, k=10)):
        np.testing.assert_allclose([h.distance for h in ha], [h.distance for h in hb], atol=1e-5)
        for x, y in zip(ha, hb):
            # the same item, or two items at the same distance swapped by float rounding
            assert x.id == y.id or abs(x.distance - y.distance) <= 1e-5, (x, y)
        assert sum(x.id != y.id for x, y in zip(ha, hb)) <= 2


def _leftovers(root) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.name.startswith("."))


@pytest.fixture(scope="module")
def vectors_file(tmp_path_factory):
    """30,000 x 16 clustered vectors: enough for an IVF index filled in three parts."""
    rng = np.random.default_rng(7)
    centres = rng.normal(size=(40, 16)) * 4
    x = (centres[rng.integers(0, 40, 30_000)] + rng.normal(size=(30_000, 16))).astype(np.float32)
    path = tmp_path_factory.mktemp("vectors") / "emb.npy"
    np.save(path, x)
    return path, x


@pytest.mark.parametrize("spec", ["ivf", "flat", "ivfpq"])
def test_vectors_build_on_ray_equals_one_process(ray_cluster, root, vectors_file, spec):
    path, x = vectors_file
    here = ls.build_vectors(path, name="here", index=spec)
    there = ls.build_vectors(path, name="there", index=spec, ray="local")
    _same_collection(here, there, x[:300])
    assert _leftovers(root) == []


def test_fill_is_split_and_merged_in_row_order(ray_cluster, vectors_file):
    """The lists filled on the workers hold the same ids in the same order as one add."""
    import faiss

    from latentsearch.index.building import add, build
    from latentsearch.scale.cluster import connect

    path, x = vectors_file
    stored = np.load(path, mmap_mode="r")
    ids = np.arange(len(x), dtype=np.int64)
    skip = np.array([5, 17_000, 29_999])
    here = build("IVF64,Flat", 16, "l2", stored, ids, skip=skip)
    there = build("IVF64,Flat", 16, "l2", stored, ids, skip=skip,
                  fill=scale_build.cluster_fill(connect("local")))
    assert there.ntotal == here.ntotal == len(x) - len(skip)
    a, b = faiss.extract_index_ivf(here).invlists, faiss.extract_index_ivf(there).invlists
    for lst in range(64):
        n = a.list_size(lst)
        assert b.list_size(lst) == n
        got = faiss.rev_swig_ptr(b.get_ids(lst), n)
        assert np.array_equal(faiss.rev_swig_ptr(a.get_ids(lst), n), got)
    add(here, x[skip], skip)  # what tuning does after: the merged index takes adds alike
    add(there, x[skip], skip)
    assert np.array_equal(here.search(x[:50], 10)[1], there.search(x[:50], 10)[1])


def test_image_build_on_ray_equals_one_process(ray_cluster, root, monkeypatch):
    monkeypatch.setitem(scale_build.PART_ITEMS, "image", 1_500)  # mnist's 5,000 in 4 parts
    here = ls.build_images("mnist", name="here", epochs=1, quiet=True)
    there = ls.build_images("mnist", name="there", epochs=1, quiet=True, ray="local")
    _same_collection(here, there, here.vectors(list(range(0, 5000, 50))))
    assert np.array_equal(here.images([0, 4999]), there.images([0, 4999]))


@pytest.fixture
def photo_folder(tmp_path):
    """40 small PNGs in two labelled subfolders, and one file that is not an image."""
    rng = np.random.default_rng(3)
    folder = tmp_path / "photos"
    for label in ("cats", "dogs"):
        (folder / label).mkdir(parents=True)
        for i in range(20):
            shade = 40 if label == "cats" else 200
            pixels = np.clip(rng.normal(shade, 30, (20, 24)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / label / f"{i:02d}.png")
    (folder / "dogs" / "broken.png").write_bytes(b"\x89PNG not really")
    return folder


def test_folder_build_on_ray_decodes_on_workers(ray_cluster, root, photo_folder, monkeypatch,
                                               caplog):
    monkeypatch.setitem(scale_build.PART_ITEMS, "image", 7)  # 41 files in 6 parts
    here = ls.build_images(photo_folder, name="here", epochs=1, size=16, quiet=True)
    caplog.clear()
    (ray_cluster / "kill-decode-3").touch()  # and one decoding worker dies on the way
    there = ls.build_images(photo_folder, name="there", epochs=1, size=16, quiet=True,
                            ray="local")
    assert not (ray_cluster / "kill-decode-3").exists()
    assert len(there) == 40
    assert "broken.png" in caplog.text  # the skipped file is reported as a one-process read does
    _same_collection(here, there, here.vectors(list(range(40))))
    assert {r.label for r in there.get(list(range(40)))} == {"cats", "dogs"}


def test_text_build_on_ray_equals_one_process(ray_cluster, root, monkeypatch):
    monkeypatch.setitem(scale_build.PART_ITEMS, "text", 70)  # news' 300 articles in 5 parts
    here = ls.build_text("news", name="here", epochs=1, quiet=True)
    there = ls.build_text("news", name="there", epochs=1, quiet=True, ray="local")
    _same_collection(here, there, here.vectors(list(range(0, 300, 7))))


def test_add_on_ray_equals_one_process_add(ray_cluster, root, photo_folder, monkeypatch):
    from latentsearch.pipelines import add_source

    monkeypatch.setitem(scale_build.PART_ITEMS, "image", 9)
    base = np.clip(np.random.default_rng(1).normal(120, 40, (30, 16, 16)), 0, 255)
    here = ls.build_images(base.astype(np.uint8), name="here", epochs=1, size=16, quiet=True)
    there = ls.build_images(base.astype(np.uint8), name="there", epochs=1, size=16, quiet=True)
    new_here = add_source(here, photo_folder)
    new_there = add_source(there, photo_folder, ray="local")
    assert np.array_equal(new_here, new_there)
    assert there.generation == here.generation  # one commit for the whole add
    _same_collection(here, there, here.vectors(new_here[:10]))
    assert _leftovers(root) == []


def test_killed_worker_is_retried_and_the_build_completes(ray_cluster, root, monkeypatch):
    monkeypatch.setitem(scale_build.PART_ITEMS, "text", 70)
    (ray_cluster / "kill-encode-2").touch()  # the worker encoding part 2 SIGKILLs itself once
    there = ls.build_text("news", name="there", epochs=1, quiet=True, ray="local")
    assert not (ray_cluster / "kill-encode-2").exists()  # it did die, and the retry ran
    here = ls.build_text("news", name="here", epochs=1, quiet=True)
    _same_collection(here, there, here.vectors(list(range(0, 300, 11))))


def test_killed_fill_worker_is_retried(ray_cluster, root, vectors_file):
    path, x = vectors_file
    (ray_cluster / "kill-fill-1").touch()
    there = ls.build_vectors(path, name="there", index="ivf", ray="local")
    assert not (ray_cluster / "kill-fill-1").exists()
    _same_collection(ls.build_vectors(path, name="here", index="ivf"), there, x[:100])


def test_failing_part_commits_nothing(ray_cluster, root, vectors_file, monkeypatch):
    path, _ = vectors_file
    fault = ray_cluster / "fail-fill-2"
    fault.touch()
    try:
        with pytest.raises(ls.ClusterError, match="fault injected at fill-2"):
            ls.build_vectors(path, name="broken", index="ivf", ray="local")
    finally:
        fault.unlink()
    assert not (root / "broken").exists()
    assert _leftovers(root) == []  # no staging folder, no scratch parts


def test_a_workers_own_error_reaches_the_caller_as_itself(ray_cluster):
    from latentsearch.io.images import color_channels
    from latentsearch.scale.cluster import connect

    cluster = connect("local")
    assert cluster.map(color_channels, ["gray", "rgb"], desc="channels") == [1, 3]
    with pytest.raises(ls.InvalidInput, match="color must be 'gray' or 'rgb', got 'purple'"):
        cluster.map(color_channels, ["gray", "purple"], desc="channels")


def test_a_folder_with_nothing_readable_adds_nothing(ray_cluster, root, monkeypatch):
    monkeypatch.setitem(scale_build.PART_ITEMS, "image", 2)
    col = ls.build_images(np.zeros((12, 8, 8), np.uint8) + 50, name="imgs", epochs=1, size=8,
                          quiet=True)
    empty = root.parent / "empty"
    empty.mkdir()
    (empty / "a.png").write_bytes(b"no image")
    from latentsearch.pipelines import add_source

    with pytest.raises(ls.InvalidInput, match="could be read"):
        add_source(col, empty, ray="local")
    assert len(col.reload()) == 12


def test_cli_build_with_ray(ray_cluster, root, vectors_file):
    path, _ = vectors_file
    result = CliRunner().invoke(main, ["build", "vectors", str(path), "--name", "cli",
                                       "--index", "ivf", "--ray", "local", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["count"] == 30_000


def test_unreachable_cluster_is_one_line_and_writes_nothing(tmp_path, vectors_file):
    """In a fresh process (in this one the fixture's Ray would be reused): a port nothing
    answers on fails at once, before anything is read or written."""
    import subprocess
    import sys

    path, _ = vectors_file
    run = subprocess.run(
        [sys.executable, "-c", "from latentsearch.cli import main; main()", "build", "vectors",
         str(path), "--name", "far", "--root", str(tmp_path / "idx"), "--ray", "127.0.0.1:9"],
        capture_output=True, text=True, timeout=120)
    assert run.returncode == 1
    assert run.stderr.strip().splitlines() == [
        "error: cannot connect to the Ray cluster at '127.0.0.1:9': nothing answers at "
        "127.0.0.1:9 (Connection refused) (start one with `ray start --head`, or use --ray "
        "local)"]
    assert not (tmp_path / "idx" / "far").exists()


def test_add_on_ray_to_a_sharded_collection(ray_cluster, root, photo_folder, monkeypatch):
    """The encoder for the workers comes from the collection object: a sharded parent has
    no encoder folder of its own."""
    from latentsearch.pipelines import add_source

    monkeypatch.setitem(scale_build.PART_ITEMS, "image", 9)
    base = np.clip(np.random.default_rng(2).normal(120, 40, (30, 16, 16)), 0, 255)
    col = ls.build_images(base.astype(np.uint8), name="sharded", epochs=1, size=16,
                          quiet=True, shards=2, index="flat")
    ids = add_source(col, photo_folder, ray="local")
    assert len(ids) == 40 and int(ids[0]) == 30
    assert len(ls.open("sharded")) == 70
    hits = col.neighbors(int(ids[0]), k=3)
    np.testing.assert_allclose(col.vectors(ids[:1]), col.encode(col.images(ids[:1])), atol=1e-5)
    assert hits and all(h.id != ids[0] for h in hits)


def test_workers_encode_without_tensorflow(ray_cluster, root, tmp_path):
    """A worker loads the numpy copy of the encoder: TensorFlow never enters its process."""
    import ray

    from latentsearch.scale.build import Part

    images = np.random.default_rng(4).integers(0, 255, (20, 12, 12), dtype=np.uint8)
    col = ls.build_images(images, name="tiny", epochs=1, size=12, quiet=True)
    part = Part(0, str(tmp_path), str(col.path / "encoder"), col.manifest["encoder"],
                items=col.images(list(range(20))))

    def probe(job):  # a closure: pickled by value, run in a worker process
        import sys

        from latentsearch.scale.build import encode_part

        done = encode_part(job)
        return done.count, "tensorflow" in sys.modules, "keras" in sys.modules

    assert ray.get(ray.remote(probe).remote(part)) == (20, False, False)
    np.testing.assert_allclose(np.load(tmp_path / "part-00000-vectors.npy"), col.vectors(),
                               atol=1e-5)

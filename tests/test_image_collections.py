"""Image collections end to end: build, reopen, query by image and by id, add, grid, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

import latentsearch as ls
from latentsearch.io.png import encode_png
from latentsearch.cli import main


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """300 real digits from the built-in sample, as an .npz with labels, and a PNG folder."""
    from latentsearch.io.images import load_image_source

    data = load_image_source("mnist", limit=300)
    base = tmp_path_factory.mktemp("digits")
    np.savez(base / "digits.npz", x=data.images[..., 0], y=np.array([int(l) for l in data.labels]))
    folder = base / "folder"
    for i in range(0, 300, 10):
        sub = folder / data.labels[i]
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"{i}.png").write_bytes(encode_png(data.images[i][..., 0]))
    return base, data


@pytest.fixture(scope="module")
def built(digits, tmp_path_factory):
    base, _ = digits
    root = tmp_path_factory.mktemp("root")
    col = ls.build_images(str(base / "digits.npz"), name="d", root=root, epochs=2, quiet=True)
    return root, col


@pytest.mark.slow
def test_build_reopen_and_query_by_image(built, digits):
    root, col = built
    _, data = digits
    assert len(col) == 300 and col.dim == 32 and col.modality == "image"
    assert col.info["encoder"]["name"] == "conv"
    again = ls.open("d", root)
    img = data.images[42]
    hit = again.search(img, k=1)[0]
    assert hit.id == 42 and hit.distance < 1e-4 and hit.label == data.labels[42]
    np.testing.assert_array_equal(again.images([42])[0], img)
    np.testing.assert_allclose(again.encode(img), again.vectors([42]), atol=1e-5)
    # a 2-D gray image and a float image in [0, 1] are the same query
    assert again.search(img[..., 0] / 255.0, k=1)[0].id == 42


@pytest.mark.slow
def test_query_by_image_of_another_size_is_resized(built, digits):
    _, col = built
    _, data = digits
    big = np.kron(data.images[7][..., 0], np.ones((2, 2), np.uint8))  # 56 x 56
    assert col.search(big, k=1)[0].id == 7
    rgb = np.repeat(data.images[7], 3, axis=-1)
    assert col.search(rgb, k=1)[0].id == 7
    with pytest.raises(ls.DimensionMismatch):
        col.search(np.zeros((5, 28, 28, 7), np.uint8)[0])


@pytest.mark.slow
def test_add_images_and_labels(built, digits, tmp_path):
    import shutil

    root, col = built
    _, data = digits
    path = tmp_path / "copy"
    shutil.copytree(col.path, path)
    c = ls.open(str(path))
    ids = c.add(data.images[:3], labels=["a", "b", "c"])
    assert ids.tolist() == [300, 301, 302]
    assert c.search(data.images[1], k=2)[0].id in (1, 301)
    assert [h.label for h in c.get(ids)] == ["a", "b", "c"]
    np.testing.assert_array_equal(c.images([301])[0], data.images[1])
    # the three live in a delta segment; removing there, then from the main segment (its
    # id listed as removed), then a compaction keeps every image with its id
    assert c.info["deltas"] == {"segments": 1, "items": 3}
    c.remove([300])
    np.testing.assert_array_equal(c.images([4, 301, 302]), data.images[[4, 1, 2]])
    c.remove([3])
    assert c.info["removed_pending"] == 1 and len(c) == 301
    np.testing.assert_array_equal(c.images([4, 301, 302]), data.images[[4, 1, 2]])
    c.compact()
    assert c.info["deltas"]["items"] == 0 and c.info["removed_pending"] == 0 and len(c) == 301
    again = ls.open(str(path))
    np.testing.assert_array_equal(again.images([4, 301, 302]), data.images[[4, 1, 2]])
    assert again.search(data.images[2], k=2)[0].id in (2, 302)


@pytest.mark.slow
def test_folder_source_with_labels_from_subfolders(digits, tmp_path):
    base, data = digits
    col = ls.build_images(str(base / "folder"), name="f", root=tmp_path, epochs=1, quiet=True)
    assert len(col) == 30
    hits = col.get(col.ids())
    assert {h.label for h in hits} == set(data.labels[::10])
    assert all(h.source and h.source.endswith(".png") for h in hits)


@pytest.mark.slow
def test_cli_image_query_grid_and_json(built, digits, tmp_path):
    root, col = built
    _, data = digits
    q = tmp_path / "q.png"
    q.write_bytes(encode_png(data.images[3][..., 0]))
    grid = tmp_path / "grid.png"
    r = CliRunner().invoke(main, ["query", "d", "--root", str(root), "--image", str(q), "-k", "4",
                                  "--grid", str(grid), "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["hits"][0]["id"] == 3 and len(doc["hits"]) == 4
    assert grid.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    r = CliRunner().invoke(main, ["query", "d", "--root", str(root), "--id", "3", "--grid",
                                  str(tmp_path / "g2.png")])
    assert r.exit_code == 0 and (tmp_path / "g2.png").exists()
    r = CliRunner().invoke(main, ["query", "d", "--root", str(root), "--text", "hello"])
    assert r.exit_code == 1 and "cannot be queried by text" in r.stderr


@pytest.mark.slow
def test_cli_add_an_image_source_with_the_stored_encoder(built, digits, tmp_path):
    import shutil

    root, col = built
    base, data = digits
    copy = tmp_path / "indexes"
    shutil.copytree(col.path, copy / "d")
    r = CliRunner().invoke(main, ["add", "d", str(base / "folder"), "--root", str(copy)])
    assert r.exit_code == 0, r.output
    assert "added 30 items" in r.output and "ids 300..329" in r.output
    c = ls.open("d", copy)
    assert c.get([300])[0].label == data.labels[0] and c.get([300])[0].source.endswith("0.png")
    assert c.search(data.images[10], k=2)[1].id in (10, 301)


@pytest.mark.slow
def test_evaluate_image_collection_has_raw_and_pca_baselines(built):
    _, col = built
    report = ls.evaluate(col, k=5, sample=100)
    assert set(report.baselines) == {"chance", "raw", "pca"}
    assert report.agreement > report.baselines["chance"]["agreement"]

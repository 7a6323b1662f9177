"""Regression tests for the rough edges a new user tripped on (issue #14, section 5).

Each test is named for the edge it pins: what happened before, and what happens now.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import click
import numpy as np
import pytest
from click.testing import CliRunner

import latentsearch as ls
from conftest import clustered
from latentsearch.cli import main

PNG_HEAD = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32  # enough of a PNG for its signature


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture
def emb(tmp_path, root):
    """A vector collection of 60 clustered 8-d vectors (labels c0..), and its .npy file."""
    x, labels = clustered(60, dim=8)
    np.save(tmp_path / "emb.npy", x)
    col = ls.build_vectors(x, labels=[f"c{v}" for v in labels], name="emb")
    return col, x, tmp_path / "emb.npy"


@pytest.fixture(scope="module")
def digits():
    """40 real digits (uint8 (40, 28, 28)) and their labels."""
    from latentsearch.io.images import load_image_source

    data = load_image_source("mnist", limit=40)
    return data.images[..., 0], data.labels


@pytest.fixture(scope="module")
def image_col(digits, tmp_path_factory):
    """A small image collection built from an array (one epoch)."""
    images, labels = digits
    root = tmp_path_factory.mktemp("images")
    col = ls.build_images(images, labels=labels, name="digits", root=root, epochs=1, quiet=True)
    return root, col


# -- query --vector always means a vector ---------------------------------------------------


@pytest.mark.slow
def test_query_vector_of_wrong_dimension_is_dimension_mismatch_not_an_image(image_col, tmp_path):
    """Before: a 28*28 or 5-d --vector on an image collection went to the image encoder
    (TensorFlow, then a confusing error or an answer). Now: one line, DimensionMismatch, and
    TensorFlow is never imported."""
    root, col = image_col
    bad = tmp_path / "bad.npy"
    np.save(bad, np.ones(28 * 28, np.float32))
    code = (
        "import sys\n"
        "from latentsearch.cli import main\n"
        f"try:\n    main(['query', 'digits', '--root', {str(root)!r}, '--vector', {str(bad)!r}])\n"
        "except SystemExit as e:\n    assert e.code == 1, e.code\n"
        "assert 'tensorflow' not in sys.modules\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stderr == "error: vectors have dimension 784, the collection has 32\n"
    with pytest.raises(ls.DimensionMismatch):
        col.search(vector=np.ones(28 * 28, np.float32))
    good = tmp_path / "good.npy"
    np.save(good, col.vectors([5]))  # (1, 32): one row is one vector
    r = run("query", "digits", "--root", root, "--vector", good, "-k", 1, "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["hits"][0]["id"] == 5


@pytest.mark.slow
def test_search_takes_vector_image_or_text_by_keyword(image_col, digits):
    """Explicit vector= / image= / text= beside the positional form (which still guesses)."""
    _, col = image_col
    images, _ = digits
    vec = col.vectors([3])[0]
    assert col.search(vector=vec, k=1)[0].id == 3
    assert col.search(image=images[3], k=1)[0].id == 3
    assert col.search(images[3], k=1)[0].id == 3  # positional: guessed an image
    assert col.search(vec, k=1)[0].id == 3  # positional: guessed a vector
    assert [h[0].id for h in col.search_batch(vector=col.vectors([1, 2]), k=1)] == [1, 2]
    assert [h[0].id for h in col.search_batch(image=images[[1, 2]], k=1)] == [1, 2]
    with pytest.raises(ls.EncoderError, match="cannot be queried by text"):
        col.search(text="a digit")
    with pytest.raises(ls.InvalidInput, match="give one query"):
        col.search(vec, vector=vec)
    with pytest.raises(ls.InvalidInput, match="give one query"):
        col.search()


def test_search_keywords_on_a_vector_collection(emb):
    col, x, _ = emb
    assert col.search(vector=x[4], k=1)[0].id == 4
    assert col.search_batch(vector=x[:3], k=1)[2][0].id == 2
    with pytest.raises(ls.DimensionMismatch):
        col.search(vector=x[4][:5])
    with pytest.raises(ls.DimensionMismatch, match=r"shape \(8,\)"):
        col.search(vector=x[:2])  # two vectors are not one query
    with pytest.raises(ls.EncoderError, match="cannot be queried by image"):
        col.search(image=np.zeros((28, 28), np.uint8))
    with pytest.raises(ls.EncoderError, match="cannot be queried by text"):
        col.search_batch(text=["a", "b"])
    with pytest.raises(ls.InvalidInput, match="text= takes a string"):
        col.search(text=["a"])


# -- build with a taken name fails before any training --------------------------------------


def _no_work(*args, **kwargs):
    raise AssertionError("a taken name must fail before loading or training")


def test_build_with_existing_name_fails_before_training(root, monkeypatch, tmp_path):
    """Before: build images / build text trained for a minute, then failed. Now: at once, in
    the API's words (overwrite=True) from Python and the CLI's (--overwrite) on the CLI."""
    import latentsearch.collection.build as build_mod
    import latentsearch.io.images as images_mod
    import latentsearch.io.texts as texts_mod

    ls.build_vectors(np.ones((3, 4)), name="taken")
    monkeypatch.setattr(images_mod, "load_image_source", _no_work)
    monkeypatch.setattr(texts_mod, "load_text_source", _no_work)
    monkeypatch.setattr(build_mod, "load_npy", _no_work)
    npy = tmp_path / "v.npy"
    np.save(npy, np.ones((3, 4)))
    attempts = [
        lambda: ls.build_images("mnist", name="taken"),
        lambda: ls.build_images(np.zeros((4, 28, 28), np.uint8), name="taken"),
        lambda: ls.build_text("news", name="taken"),
        lambda: ls.build_vectors(str(npy), name="taken"),
    ]
    for attempt in attempts:
        with pytest.raises(ls.CollectionExists) as err:
            attempt()
        assert "overwrite=True" in str(err.value) and "--overwrite" not in str(err.value)
    for args in (["images", "mnist"], ["text", "news"], ["vectors", npy]):
        r = run("build", *args, "--name", "taken", "-q")
        assert r.exit_code == 1
        assert r.stderr.startswith("error: collection taken already exists at ")
        assert "--overwrite" in r.stderr and "overwrite=True" not in r.stderr
        assert r.stderr.count("\n") == 1


# -- an (H, W, C) .npy is one image; build_images takes an array ----------------------------


def test_npy_of_one_hwc_image_is_one_image_not_h_images(tmp_path):
    """Before: a (28, 28, 3) .npy became 28 images of 28x3 pixels. Now: one image."""
    from latentsearch.io.images import load_image_source

    rng = np.random.default_rng(0)
    for shape, n in (((28, 28, 3), 1), ((32, 24, 1), 1), ((20, 20, 4), 1), ((5, 28, 28), 5)):
        path = tmp_path / "x.npy"
        np.save(path, rng.integers(0, 255, shape, dtype=np.uint8))
        data = load_image_source(path, size=16, color="rgb")
        assert data.images.shape == (n, 16, 16, 3), shape


@pytest.mark.slow
def test_build_images_accepts_an_array(image_col, digits):
    """Before: build_images took only a source name or path. Now: an array, as build_vectors."""
    root, col = image_col
    images, labels = digits
    assert len(col) == len(images) and col.modality == "image"
    assert [r.label for r in col.get([0, 1])] == list(labels[:2])
    assert col.manifest["source"] == "array (40, 28, 28)"
    np.testing.assert_array_equal(col.images([0])[0][..., 0], images[0])
    with pytest.raises(ls.InvalidInput, match="needs name="):
        ls.build_images(images, root=root)


# -- add NAME image.png on a vector collection ----------------------------------------------


def test_add_image_file_to_vector_collection_says_what_is_wrong(emb, tmp_path):
    """Before: 'Cannot load file containing pickled data'. Now: the collection holds
    vectors, add takes a .npy of (n, dim), and the file is a PNG image."""
    from latentsearch.pipelines import add_source

    col, *_ = emb
    png = tmp_path / "photo.png"
    png.write_bytes(PNG_HEAD)
    r = run("add", "emb", png)
    assert r.exit_code == 1
    assert r.stderr == (f"error: collection emb holds vectors: add takes a .npy array of shape "
                        f"(n, 8); {png} is a PNG image\n")
    assert "pickle" not in r.stderr
    with pytest.raises(ls.InvalidInput, match="is a PNG image"):
        add_source(col, png)
    r = run("query", "emb", "--vector", png)
    assert r.exit_code == 1 and "is a PNG image" in r.stderr and "pickle" not in r.stderr


# -- get returns records; the package's public names ----------------------------------------


def test_get_returns_records_not_hits_at_distance_zero(emb):
    """Before: Hit objects with a made-up distance 0.0. Now: Record (id, label, source, text,
    extra), frozen; extra holds the item's other fields."""
    col, x, _ = emb
    (new,) = col.add_vectors(x[:1], [("new", "a.txt", "some text", {"year": 2021})])
    got = col.get([new, 0])
    assert all(isinstance(r, ls.Record) for r in got)
    assert not hasattr(got[0], "distance")
    assert got[0] == ls.Record(int(new), "new", "a.txt", "some text", {"year": 2021})
    assert got[1].extra == {} and got[1].label == col.search(x[0], k=1)[0].label
    assert got[0].to_dict() == {"id": int(new), "label": "new", "source": "a.txt",
                                "text": "some text", "extra": {"year": 2021}}
    with pytest.raises(dataclasses.FrozenInstanceError):
        got[0].label = "other"
    assert isinstance(col.get(3)[0], ls.Record)  # one id
    with pytest.raises(ls.UnknownId):
        col.get([10_000])


def test_open_not_in_all_and_annotations_not_public():
    """`from latentsearch import *` must not shadow the builtin open; `ls.annotations` (from
    a `from __future__` import) is not an API."""
    assert "open" not in ls.__all__ and callable(ls.open)
    assert not hasattr(ls, "annotations")
    assert "Record" in ls.__all__ and "Hit" in ls.__all__
    assert all(hasattr(ls, name) for name in ls.__all__)
    namespace: dict = {}
    exec("from latentsearch import *", namespace)
    assert "open" not in namespace and "annotations" not in namespace


# -- list, info, --json, plurals ------------------------------------------------------------


def test_list_says_which_root_it_looked_in(tmp_path):
    empty = tmp_path / "nothing-here"
    r = run("list", "--root", empty)
    assert r.exit_code == 0 and str(empty.resolve()) in r.output and "no collections" in r.output
    ls.build_vectors(np.ones((1, 4)), name="one", root=empty)
    r = run("list", "--root", empty)
    assert r.output.splitlines()[0] == f"1 collection in {empty.resolve()}:"


def test_info_prints_readable_fields_not_json_blobs(emb):
    col, x, _ = emb
    col.add(x[:2])
    col.remove([5])
    r = run("info", "emb")
    assert r.exit_code == 0
    assert "{" not in r.output, r.output  # no JSON blobs
    fields = {line.split(":", 1)[0].strip(): line.split(":", 1)[1].strip()
              for line in r.output.splitlines()}
    assert fields["count"] == "61 items (next id 62)"
    assert fields["dim"] == "8" and fields["metric"] == "l2"
    assert fields["index"].startswith("Flat")
    assert fields["recall target"].startswith("0.95")
    assert fields["encoder"] == "none: vectors made elsewhere"
    assert fields["deltas"].startswith("1 segment, 2 items")
    assert fields["removed"].startswith("1 item hidden")
    assert fields["size"].endswith("on disk")
    assert {"created", "updated", "generation", "path"} <= set(fields)
    info = json.loads(run("info", "emb", "--json").stdout)
    assert info["count"] == 61 and isinstance(info["index"], dict)


def test_json_on_every_command_that_prints_a_result(emb, tmp_path):
    """Each prints one JSON document on stdout and nothing else there."""
    _, x, npy = emb
    np.save(tmp_path / "more.npy", x[:2])
    np.save(tmp_path / "q.npy", x[7])
    commands = [
        ["build", "vectors", npy, "--name", "e2"],
        ["query", "e2", "--vector", tmp_path / "q.npy", "-k", 2],
        ["add", "e2", tmp_path / "more.npy"],
        ["remove", "e2", "--id", 0],
        ["compact", "e2"],
        ["info", "e2"],
        ["list"],
        ["evaluate", "emb", "-k", 3, "--sample", 20],
    ]
    docs = []
    for args in commands:
        r = run(*args, "--json")
        assert r.exit_code == 0, (args, r.output)
        docs.append(json.loads(r.stdout))
    built, hits, added, removed, compacted, info, listed, report = docs
    assert built["name"] == "e2" and built["count"] == 60
    assert hits["hits"][0]["id"] == 7
    assert added == {"collection": "e2", "added": 2, "ids": [60, 61], "count": 62}
    assert removed == {"collection": "e2", "removed": 1, "count": 61}
    assert compacted["folded"] == 2 and compacted["purged"] == 1 and compacted["count"] == 61
    assert info["count"] == 61 and {r["name"] for r in listed} == {"emb", "e2"}
    assert report["k"] == 3


def test_one_item_two_items(emb, tmp_path):
    """Before: 'added 1 items', 'removed 1 items'. Now: singular and plural."""
    col, x, _ = emb
    np.save(tmp_path / "one.npy", x[:1])
    r = run("add", "emb", tmp_path / "one.npy")
    assert r.stdout == "added 1 item to emb (ids 60..60); now 61 items\n"
    r = run("remove", "emb", "--id", 60)
    assert r.stdout == "removed 1 item from emb; now 60 items\n"
    r = run("remove", "emb", "--id", 1, "--id", 2)
    assert r.stdout == "removed 2 items from emb; now 58 items\n"
    r = run("compact", "emb")
    assert r.stdout == ("compacted emb: 0 delta items folded into Flat, 2 removed items purged; "
                        "now 58 items\n")
    one = ls.build_vectors(np.ones((1, 4)), name="single")
    r = run("info", "single")
    assert "count: 1 item (next id 1)" in r.stdout and len(one) == 1


# -- every --help has an example ------------------------------------------------------------


def _commands(group: click.Group, path: tuple[str, ...] = ()):
    """Every command and group under ``group``, with the words that reach it."""
    yield path, group
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            yield from _commands(command, path + (name,))
        else:
            yield path + (name,), command


def test_every_help_has_an_example():
    """The README promises an example in every --help; this walks every command and group."""
    seen = []
    for path, command in _commands(main):
        r = run(*path, "--help")
        assert r.exit_code == 0 and "Example" in r.output, path
        lines = r.output.split("Example", 1)[1].splitlines()[1:]
        assert any(line.strip().startswith("latentsearch ") for line in lines), path
        seen.append(" ".join(path))
    assert {"build vectors", "build images", "build text", "query", "add", "remove", "info",
            "list", "compact", "evaluate", "demo"} <= set(seen)


def test_every_command_that_prints_a_result_takes_json():
    # demo prints a guided tour and serve a URL, not a result
    for path, command in _commands(main):
        if isinstance(command, click.Group) or path[-1] in ("demo", "serve"):
            continue
        assert "--json" in {o for p in command.params for o in p.opts}, path

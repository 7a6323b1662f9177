"""Hostile and broken input: a clear error, and nothing changed on disk."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

import latentsearch as ls
from latentsearch.pipelines import add_source
from latentsearch.storage.files import sha256_file


def snapshot(path):
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*"))
            if p.is_file()}


def test_truncated_vectors_caught_by_checksum_before_numpy(root):
    col = ls.build_vectors(np.eye(4), name="t")
    path = col.path / "vectors.npy"
    path.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(ls.CorruptCollection, match="vectors.npy fails its checksum"):
        ls.open("t")


def test_manifest_naming_a_file_outside_the_collection(root, tmp_path):
    col = ls.build_vectors(np.eye(4), name="m")
    doc = json.loads((col.path / "manifest.json").read_text())
    doc["files"]["vectors"]["path"] = "../../elsewhere.npy"
    (col.path / "manifest.json").write_text(json.dumps(doc))
    with pytest.raises(ls.CorruptCollection, match="outside the collection"):
        ls.open("m")


def test_a_file_replaced_by_a_symlink_is_refused(root, tmp_path):
    col = ls.build_vectors(np.eye(4), name="s")
    outside = tmp_path / "outside.npy"
    outside.write_bytes((col.path / "vectors.npy").read_bytes())
    (col.path / "vectors.npy").unlink()
    (col.path / "vectors.npy").symlink_to(outside)
    with pytest.raises(ls.CorruptCollection, match="symlink"):
        ls.open("s")


def test_a_collection_name_linking_out_of_the_root_is_refused(root, tmp_path):
    elsewhere = ls.build_vectors(np.eye(4), name="real", root=tmp_path / "other")
    root.mkdir(parents=True, exist_ok=True)
    (root / "evil").symlink_to(elsewhere.path)
    with pytest.raises(ls.InvalidInput, match="link out of the root"):
        ls.open("evil")
    assert len(ls.open(str(elsewhere.path))) == 4  # an explicit path is the user's choice


def test_manifest_with_wrong_types(root):
    col = ls.build_vectors(np.eye(4), name="w")
    good = json.loads((col.path / "manifest.json").read_text())
    for key, bad in (("dim", "4"), ("files", []), ("format_version", True), ("index", None)):
        doc = dict(good, **{key: bad})
        (col.path / "manifest.json").write_text(json.dumps(doc))
        with pytest.raises(ls.CorruptCollection, match=key):
            ls.open("w")
    (col.path / "manifest.json").write_text("[1, 2]")
    with pytest.raises(ls.CorruptCollection, match="JSON object"):
        ls.open("w")


def test_manifest_lying_about_the_shape(root):
    col = ls.build_vectors(np.eye(4), name="l")
    doc = json.loads((col.path / "manifest.json").read_text())
    doc["count"] = 5
    (col.path / "manifest.json").write_text(json.dumps(doc))
    with pytest.raises(ls.CorruptCollection, match="manifest says"):
        ls.open("l")


def test_pickled_vectors_inside_a_collection_never_unpickle(root):
    col = ls.build_vectors(np.eye(4), name="p")
    path = col.path / "vectors.npy"
    np.save(path, np.array([{"boom": 1}], dtype=object), allow_pickle=True)
    doc = json.loads((col.path / "manifest.json").read_text())
    doc["files"]["vectors"]["sha256"] = sha256_file(path)  # an attacker fixes the sum
    (col.path / "manifest.json").write_text(json.dumps(doc))
    with pytest.raises(ls.CorruptCollection, match="not a plain .npy"):
        ls.open("p")


def test_bad_add_changes_nothing_on_disk(root, tmp_path):
    col = ls.build_vectors(np.eye(4), labels=list("abcd"), name="n")
    before = snapshot(col.path)
    bad = tmp_path / "bad.npy"
    np.save(bad, np.array([[1.0, np.nan, 0, 0]], np.float32))
    for call in (lambda: add_source(col, str(bad)), lambda: col.add(np.ones((2, 3))),
                 lambda: col.add(np.ones((2, 4)), labels=["x"]), lambda: col.remove([99])):
        with pytest.raises(ls.LatentSearchError):
            call()
    after = snapshot(col.path)
    after.pop(".lock", None)
    before.pop(".lock", None)
    assert after == before


def test_where_injection_reads_only_bound_values(root):
    col = ls.build_vectors(np.eye(4), labels=list("abcd"), name="q")
    for value in ("a' OR 1=1 --", "a\"; DROP TABLE records; --", "%", "*"):
        assert col.search(np.eye(4)[0], k=4, where={"label": value}) == []
    with pytest.raises(ls.InvalidInput):
        col.search(np.eye(4)[0], where={"label) OR (1": "a"})
    assert len(ls.open("q").get([0, 1, 2, 3])) == 4
    assert os.path.exists(col.path / "records.sqlite")


@pytest.fixture(scope="module")
def image_collection(tmp_path_factory):
    """A small image collection (dense encoder, one epoch) to tamper with."""
    root = tmp_path_factory.mktemp("img") / "indexes"
    x = (np.random.default_rng(0).random((120, 28, 28)) * 255).astype(np.uint8)
    src = root.parent / "digits.npy"
    np.save(src, x)
    col = ls.build_images(str(src), name="base", root=root, encoder="dense", epochs=1, quiet=True)
    return col.path


def _copy(path, tmp_path):
    import shutil

    dst = tmp_path / "indexes" / "img"
    shutil.copytree(path, dst)
    return dst


@pytest.mark.slow
def test_bit_flipped_model_caught_before_keras(image_collection, tmp_path):
    path = _copy(image_collection, tmp_path)
    model = path / "encoder" / "model.keras"
    data = bytearray(model.read_bytes())
    data[len(data) // 3] ^= 0x01
    model.write_bytes(bytes(data))
    with pytest.raises(ls.CorruptCollection, match="model.keras fails its checksum"):
        ls.open(str(path))


@pytest.mark.slow
def test_model_with_a_lambda_layer_never_runs(image_collection, tmp_path):
    import keras

    path = _copy(image_collection, tmp_path)
    marker = tmp_path / "pwned"
    inputs = keras.Input((28, 28, 1))
    flat = keras.layers.Flatten()(inputs)
    # the lambda writes a marker file if it is ever called; a literal path, no closure
    code = eval(f"lambda t: t[:, :32] * 0 + float(bool(open({str(marker)!r}, 'w')))")
    out = keras.layers.Lambda(code, output_shape=(32,))(flat)
    evil = keras.Model(inputs, out)
    model = path / "encoder" / "model.keras"
    evil.save(model)
    marker.unlink(missing_ok=True)
    doc = json.loads((path / "manifest.json").read_text())
    doc["files"]["encoder/model.keras"]["sha256"] = sha256_file(model)  # sum fixed too
    (path / "manifest.json").write_text(json.dumps(doc))
    col = ls.open(str(path))  # opening never touches the model
    with pytest.raises(ls.EncoderError, match="cannot load encoder model.*(safe_mode|Lambda)"):
        col.search(np.zeros((28, 28), np.uint8))
    assert not marker.exists()

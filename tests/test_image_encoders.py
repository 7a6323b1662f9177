"""The image autoencoders: fit, encode, save/load round trip, wrong-size and wrong-channel input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from latentsearch import encoders
from latentsearch.errors import DimensionMismatch, EncoderError, InvalidInput
from latentsearch.io.images import load_image_source
from latentsearch.encoders.image import ConvAutoencoder, DenseAutoencoder


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    return load_image_source("mnist", limit=200).images


@pytest.fixture(scope="module")
def conv(digits) -> ConvAutoencoder:
    return ConvAutoencoder.fit(digits, latent_dim=8, epochs=1, seed=0, quiet=True)


def test_module_import_does_not_import_tensorflow():
    code = (
        "import sys, latentsearch.encoders.image, latentsearch.io.images; "
        "print('tensorflow' in sys.modules or 'keras' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_registry_resolves_image_encoders():
    assert encoders.get("conv") is ConvAutoencoder
    assert encoders.get("dense") is DenseAutoencoder
    assert ConvAutoencoder.modality == DenseAutoencoder.modality == "image"


def test_conv_fit_config(conv: ConvAutoencoder):
    cfg = conv.config()
    json.dumps(cfg)  # JSON-able
    assert conv.dim == 8
    assert cfg["size"] == 28 and cfg["channels"] == 1 and cfg["latent_dim"] == 8
    assert cfg["recommended_metric"] in ("l2", "cosine")
    assert cfg["epochs_run"] == 1 and cfg["n_val"] == 20 and cfg["n_train"] == 180
    assert cfg["train_loss"] > 0 and cfg["val_loss"] > 0 and cfg["train_seconds"] > 0


def test_conv_encode_shapes_and_inputs(conv: ConvAutoencoder, digits):
    z = conv.encode(digits[:10])
    assert z.shape == (10, 8) and z.dtype == np.float32
    if conv.config()["recommended_metric"] == "cosine":
        np.testing.assert_allclose(np.linalg.norm(z, axis=1), 1.0, atol=1e-4)
    # one image, 2-D or 3-D, uint8 or float in [0, 1], gives the same row
    np.testing.assert_allclose(conv.encode(digits[3, :, :, 0]), z[3:4], atol=1e-5)
    np.testing.assert_allclose(conv.encode(digits[3]), z[3:4], atol=1e-5)
    np.testing.assert_allclose(conv.encode(digits[3] / 255.0), z[3:4], atol=1e-4)
    # a batch given as (N, H, W)
    np.testing.assert_allclose(conv.encode(digits[:10, :, :, 0]), z, atol=1e-5)


def test_encode_resizes_and_converts(conv: ConvAutoencoder, digits):
    import tensorflow as tf

    big = tf.image.resize(digits[:4].astype(np.float32), (56, 56)).numpy().astype(np.uint8)
    z_big = conv.encode(big)
    assert z_big.shape == (4, 8)
    rgb = np.repeat(digits[:4], 3, axis=-1)
    np.testing.assert_allclose(conv.encode(rgb), conv.encode(digits[:4]), atol=1e-4)
    with pytest.raises(DimensionMismatch, match="channels"):
        conv.encode(np.zeros((2, 28, 28, 5), np.uint8))
    with pytest.raises(DimensionMismatch):
        conv.encode(np.zeros(784, np.uint8))
    with pytest.raises(InvalidInput):
        conv.encode(np.full((28, 28), np.nan))


def test_save_load_round_trip(conv: ConvAutoencoder, digits, tmp_path: Path):
    names = conv.save(tmp_path)
    assert names == ["model.keras", "forward.json", "forward.npz"]
    assert all((tmp_path / n).is_file() for n in names)
    cfg = json.loads(json.dumps(conv.config()))
    again = encoders.load(tmp_path, {"name": "conv", "config": cfg})
    assert isinstance(again, ConvAutoencoder) and again.dim == conv.dim
    np.testing.assert_array_equal(again.encode(digits[:50]), conv.encode(digits[:50]))
    # the saved model is the encoder half only
    assert again.model.output_shape == (None, 8)


def test_load_refuses_mismatched_config(conv: ConvAutoencoder, tmp_path: Path):
    conv.save(tmp_path)
    bad = dict(conv.config(), size=32)
    with pytest.raises(EncoderError, match="manifest"):
        ConvAutoencoder.load(tmp_path, bad)
    with pytest.raises(EncoderError, match="missing"):
        ConvAutoencoder.load(tmp_path / "nowhere", conv.config())


def test_dense_fit_progress_is_logged_never_printed(digits, capfd, caplog, tmp_path: Path):
    with caplog.at_level("INFO", logger="latentsearch"):
        enc = DenseAutoencoder.fit(digits[:100], latent_dim=16, epochs=2, seed=1)
    out, err = capfd.readouterr()
    assert out == "" and "epoch" not in err  # the library never prints
    lines = [r.getMessage() for r in caplog.records if r.name == "latentsearch"]
    assert any("dense epoch 1/2" in line for line in lines)
    assert any("dense epoch 2/2" in line for line in lines)
    assert enc.dim == 16 and enc.config()["recommended_metric"] == "l2"
    enc.save(tmp_path)
    again = DenseAutoencoder.load(tmp_path, enc.config())
    np.testing.assert_array_equal(again.encode(digits[:20]), enc.encode(digits[:20]))


@pytest.mark.slow
def test_fit_is_seeded(digits):
    a = DenseAutoencoder.fit(digits[:60], latent_dim=4, epochs=1, seed=3, quiet=True)
    b = DenseAutoencoder.fit(digits[:60], latent_dim=4, epochs=1, seed=3, quiet=True)
    np.testing.assert_allclose(a.encode(digits[:10]), b.encode(digits[:10]), atol=1e-5)


@pytest.mark.slow
def test_fit_rgb_odd_size():
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (40, 30, 30, 3), dtype=np.uint8)
    enc = ConvAutoencoder.fit(imgs, latent_dim=4, epochs=1, quiet=True)
    assert enc.encode(imgs[:3]).shape == (3, 4)
    assert enc.config()["channels"] == 3 and enc.config()["color"] == "rgb"
    # a gray query for an rgb encoder is converted
    assert enc.encode(imgs[0, :, :, 0]).shape == (1, 4)


def test_fit_refuses_bad_input():
    with pytest.raises(DimensionMismatch):
        ConvAutoencoder.fit(np.zeros((10, 28, 20, 1), np.uint8), quiet=True)
    with pytest.raises(InvalidInput):
        ConvAutoencoder.fit(np.zeros((1, 28, 28, 1), np.uint8), quiet=True)
    with pytest.raises(InvalidInput):
        DenseAutoencoder.fit(np.zeros((10, 28, 28, 1), np.uint8), epochs=0, quiet=True)


def test_image_file_query_finds_itself(conv: ConvAutoencoder, digits, tmp_path: Path):
    from latentsearch.io.images import read_image_file
    from latentsearch.io.png import encode_png

    (tmp_path / "q.png").write_bytes(encode_png(digits[42]))
    z_all = conv.encode(digits)
    z_q = conv.encode(read_image_file(tmp_path / "q.png", size=28, color="gray"))
    dist = np.linalg.norm(z_all - z_q, axis=1)
    assert int(np.argmin(dist)) == 42 and dist[42] < 1e-5


# ------------------------------------------------------------------ the numpy forward pass


def _keras_out(enc, images) -> np.ndarray:
    """The Keras model's own output (``predict``), the reference for the numpy pass."""
    x = enc.preprocess(images)
    return enc.model.predict(x, batch_size=64, verbose=0)


def test_numpy_forward_equals_keras_conv_saved_and_loaded(conv, digits, tmp_path: Path):
    assert conv.forward is not None
    want = _keras_out(conv, digits)
    got = conv.encode(digits)  # 200 rows: the numpy pass
    assert np.abs(got - want).max() <= 1e-5
    conv.save(tmp_path)
    again = ConvAutoencoder.load(tmp_path, conv.config())
    assert again.forward is not None and again._model is None  # Keras not loaded
    np.testing.assert_array_equal(again.encode(digits), got)
    assert np.abs(again.encode(digits) - _keras_out(again, digits)).max() <= 1e-5  # the saved model


def test_numpy_forward_equals_keras_dense(digits, tmp_path: Path):
    enc = DenseAutoencoder.fit(digits[:100], latent_dim=16, epochs=1, seed=2, quiet=True)
    assert enc.forward is not None
    kinds = [layer["kind"] for layer in enc.forward.spec["layers"]]
    assert kinds == ["Flatten", "Dense"]
    assert np.abs(enc.encode(digits) - _keras_out(enc, digits)).max() <= 1e-5
    enc.save(tmp_path)
    again = DenseAutoencoder.load(tmp_path, enc.config())
    assert again._model is None
    assert np.abs(again.encode(digits) - _keras_out(again, digits)).max() <= 1e-5


@pytest.mark.parametrize("side", [30, 20])
def test_numpy_forward_equals_keras_conv_other_sizes(side, tmp_path: Path):
    rng = np.random.default_rng(side)
    imgs = rng.integers(0, 256, (40, side, side, 3), dtype=np.uint8)
    enc = ConvAutoencoder.fit(imgs, latent_dim=4, epochs=1, quiet=True)
    kinds = [layer["kind"] for layer in enc.forward.spec["layers"]]
    assert (kinds[0] == "ZeroPadding2D") == (side % 4 != 0)
    assert np.abs(enc.encode(imgs) - _keras_out(enc, imgs)).max() <= 1e-5
    enc.save(tmp_path)
    again = ConvAutoencoder.load(tmp_path, enc.config())
    assert np.abs(again.encode(imgs) - _keras_out(again, imgs)).max() <= 1e-5


def test_numpy_forward_padding_batchnorm_and_valid_conv():
    """Odd sides (TF 'same' padding puts the extra pixel after), BatchNormalization with
    non-trivial statistics, a 'valid' conv, no bias: each as Keras computes it."""
    import keras

    from latentsearch.encoders.image import export_forward

    keras.utils.set_random_seed(5)
    layers = keras.layers
    inp = keras.Input((15, 13, 2))
    x = layers.ZeroPadding2D(((1, 2), (0, 1)))(inp)
    x = layers.Conv2D(6, 3, strides=2, padding="same", use_bias=False)(x)
    bn = layers.BatchNormalization(epsilon=1e-3)
    x = layers.Activation("relu")(bn(x))
    x = layers.Conv2D(5, (3, 2), strides=(1, 2), padding="valid", activation="relu")(x)
    x = layers.Conv2D(4, 5, strides=3, padding="same")(x)
    x = layers.Dense(7, activation="relu")(layers.Flatten()(x))
    z = layers.UnitNormalization()(layers.Dense(3)(x))
    model = keras.Model(inp, z)
    rng = np.random.default_rng(0)
    bn.moving_mean.assign(rng.normal(size=6).astype(np.float32))
    bn.moving_variance.assign(rng.uniform(0.2, 2.0, 6).astype(np.float32))
    bn.gamma.assign(rng.normal(size=6).astype(np.float32))
    bn.beta.assign(rng.normal(size=6).astype(np.float32))
    forward = export_forward(model)
    assert forward is not None and forward.input_shape == (15, 13, 2) and forward.output_dim == 3
    x = rng.random((9, 15, 13, 2), dtype=np.float32)
    assert np.abs(forward(x) - model.predict(x, verbose=0)).max() <= 1e-5


def test_unsupported_layers_are_not_exported(digits, tmp_path: Path):
    import keras

    from latentsearch.encoders.image import export_forward

    inp = keras.Input((28, 28, 1))
    pooled = keras.layers.MaxPooling2D()(inp)
    out = keras.layers.Dense(4)(keras.layers.Flatten()(pooled))
    assert export_forward(keras.Model(inp, out)) is None
    # a branch (two paths added) is refused even though each layer is known
    flat = keras.layers.Flatten()(inp)
    a, b = keras.layers.Dense(4)(flat), keras.layers.Dense(4)(flat)
    assert export_forward(keras.Model(inp, keras.layers.Add()([a, b]))) is None
    # such a model stays on Keras: saved without forward files, and still encodes
    enc = DenseAutoencoder(keras.Model(inp, out), {"size": 28, "channels": 1, "latent_dim": 4})
    assert enc.forward is None and enc.save(tmp_path) == ["model.keras"]
    again = DenseAutoencoder.load(tmp_path, enc.config())
    assert again.forward is None and again.encode(digits[:3]).shape == (3, 4)


def test_stale_forward_files_give_way_to_the_model(conv, digits, tmp_path: Path):
    """forward.json names the model.keras it was exported from: another model.keras wins."""
    conv.save(tmp_path)
    other = ConvAutoencoder.fit(digits, latent_dim=8, epochs=1, seed=7, quiet=True)
    other.model.save(tmp_path / "model.keras")
    again = ConvAutoencoder.load(tmp_path, conv.config())
    assert again.forward is None
    np.testing.assert_allclose(again.encode(digits[:20]), other.encode(digits[:20]), atol=1e-5)


def test_malformed_forward_files_are_an_encoder_error(conv, tmp_path: Path):
    conv.save(tmp_path)
    doc = json.loads((tmp_path / "forward.json").read_text())
    doc["layers"][0]["kind"] = "Lambda"
    (tmp_path / "forward.json").write_text(json.dumps(doc))
    with pytest.raises(EncoderError, match="forward files"):
        ConvAutoencoder.load(tmp_path, conv.config())
    conv.save(tmp_path)
    weights = dict(np.load(tmp_path / "forward.npz"))
    key = next(k for k, v in weights.items() if k.endswith("kernel") and v.ndim == 2)
    weights[key] = weights[key][:-1]  # the Dense kernel no longer fits the flattened input
    np.savez(tmp_path / "forward.npz", **weights)
    with pytest.raises(EncoderError, match="forward files"):
        ConvAutoencoder.load(tmp_path, conv.config())


def test_large_batches_agree_whichever_path(conv, digits):
    from latentsearch.encoders.image import KERAS_MIN_BATCH

    big = np.concatenate([digits] * 6)  # 1,200 rows: Keras when TensorFlow is imported
    assert len(big) >= KERAS_MIN_BATCH
    np.testing.assert_allclose(conv.encode(big)[:200], conv.encode(digits), atol=1e-5)


_NO_TF_QUERY = """
import sys
import numpy as np
import latentsearch as ls
from latentsearch.io.images import read_image_file
{load}
img = read_image_file({png!r}, size=28, color="gray")
assert img.shape == (28, 28, 1)
{query}
print(sorted(m for m in ("tensorflow", "keras") if m in sys.modules))
"""


def _run(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def image_collection(digits, tmp_path_factory):
    import latentsearch as ls
    from latentsearch.io.png import encode_png

    base = tmp_path_factory.mktemp("nt")
    np.save(base / "d.npy", digits[:120, :, :, 0])
    ls.build_images(str(base / "d.npy"), name="d", root=base / "root", epochs=1, quiet=True)
    (base / "q.png").write_bytes(encode_png(digits[5]))
    return base


def test_saved_encoder_and_png_query_without_tensorflow(image_collection):
    """Reading the saved encoder, a PNG, and encoding it: numpy only."""
    base = image_collection
    load = (
        "import json\n"
        "from latentsearch.encoders.image import ConvAutoencoder\n"
        f"m = json.load(open({str(base / 'root' / 'd' / 'manifest.json')!r}))\n"
        f"enc = ConvAutoencoder.load({str(base / 'root' / 'd' / 'encoder')!r}, m['encoder']['config'])"
    )
    query = "assert enc.encode(img).shape == (1, 32); enc.encode(np.zeros((3, 28, 28), np.uint8))"
    assert _run(_NO_TF_QUERY.format(load=load, png=str(base / "q.png"), query=query)) == "[]"


def test_collection_search_by_image_without_tensorflow(image_collection, digits):
    """A fresh process opens the collection, reads a PNG and searches by it and by a uint8
    image, and never imports TensorFlow or Keras."""
    base = image_collection
    load = f"col = ls.open('d', {str(base / 'root')!r})"
    query = (
        "assert col.search(img, k=1)[0].id == 5\n"
        "assert col.search(np.asarray(col.images([7])[0], np.uint8), k=1)[0].id == 7"
    )
    assert _run(_NO_TF_QUERY.format(load=load, png=str(base / "q.png"), query=query)) == "[]"

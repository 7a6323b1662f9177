"""The image autoencoders: fit, encode, save/load round trip, wrong-size and wrong-channel input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from latentsearch import encoders
from latentsearch._errors import DimensionMismatch, EncoderError, InvalidInput
from latentsearch._images import load_image_source
from latentsearch.encoders._image import ConvAutoencoder, DenseAutoencoder


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    return load_image_source("mnist", limit=200).images


@pytest.fixture(scope="module")
def conv(digits) -> ConvAutoencoder:
    return ConvAutoencoder.fit(digits, latent_dim=8, epochs=1, seed=0, quiet=True)


def test_module_import_does_not_import_tensorflow():
    code = (
        "import sys, latentsearch.encoders._image, latentsearch._images; "
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
    assert names == ["model.keras"] and (tmp_path / "model.keras").is_file()
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


def test_dense_fit_progress_on_stderr_only(digits, capfd, tmp_path: Path):
    enc = DenseAutoencoder.fit(digits[:100], latent_dim=16, epochs=2, seed=1)
    out, err = capfd.readouterr()
    assert out == ""
    assert "dense epoch 1/2" in err and "dense epoch 2/2" in err
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
    from latentsearch._images import encode_png, read_image_file

    (tmp_path / "q.png").write_bytes(encode_png(digits[42]))
    z_all = conv.encode(digits)
    z_q = conv.encode(read_image_file(tmp_path / "q.png", size=28, color="gray"))
    dist = np.linalg.norm(z_all - z_q, axis=1)
    assert int(np.argmin(dist)) == 42 and dist[42] < 1e-5

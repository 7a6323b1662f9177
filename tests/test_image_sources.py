"""Image sources (mnist, folders, .npy/.npz), image files, and the grid writer.

Files are read by Pillow; the PNGs of every colour type and filter written here by hand are
checked against libpng (TensorFlow's decoder) and against the array path."""

from __future__ import annotations

import io
import logging
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from latentsearch.errors import DimensionMismatch, InvalidInput
from latentsearch.io.images import (ImageSet, conform_images, load_image_source, open_image,
                                    read_image_file)
from latentsearch.io.pixels import to_uint8
from latentsearch.io.png import encode_png
from latentsearch.report.pictures import write_grid


class Warnings(logging.Handler):
    """The warnings the library logs (the 'latentsearch' logger), whatever handlers the CLI
    tests left on it."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


@pytest.fixture
def logged():
    handler = Warnings()
    logger = logging.getLogger("latentsearch")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


def read_png(data: bytes) -> np.ndarray:
    """The pixels of PNG bytes, read by Pillow (an 8-bit gray or RGB PNG)."""
    img = Image.open(io.BytesIO(data))
    assert img.format == "PNG" and img.mode in ("L", "RGB"), img.mode
    return np.asarray(img)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR declares width x height but whose data is tiny (a 'bomb' header)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    chunk = lambda k, b: struct.pack(">I", len(b)) + k + b + struct.pack(">I", zlib.crc32(k + b))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def digit_like(seed: int, side: int = 20) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = np.zeros((side, side), np.uint8)
    r0, c0 = rng.integers(2, side // 2, size=2)
    img[r0 : r0 + side // 3, c0 : c0 + 3] = 255
    return img


@pytest.fixture
def photo_folder(tmp_path: Path) -> Path:
    root = tmp_path / "photos"
    for label in ("cats", "dogs"):
        (root / label).mkdir(parents=True)
        for i in range(3):
            (root / label / f"{i}.png").write_bytes(encode_png(digit_like(i + (10 if label == "dogs" else 0))))
    rgb = np.zeros((32, 24, 3), np.uint8)
    rgb[..., 0] = 200
    (root / "top.png").write_bytes(encode_png(rgb))
    (root / "dogs" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not really a png")
    (root / "notes.txt").write_text("not an image")
    return root


# ------------------------------------------------------------------ sources


def test_mnist_limit_keeps_every_class():
    s = load_image_source("mnist", limit=100)
    assert isinstance(s, ImageSet)
    assert s.images.shape == (100, 28, 28, 1) and s.images.dtype == np.uint8
    assert sorted(set(s.labels)) == [str(d) for d in range(10)]
    assert s.sources == [None] * 100 and s.skipped == []


def test_mnist_resized_rgb():
    s = load_image_source("mnist", size=16, color="rgb", limit=12)
    assert s.images.shape == (12, 16, 16, 3)
    assert (s.images[..., 0] == s.images[..., 1]).all()


def test_mnist_full_offline_is_clear(monkeypatch):
    import keras

    def offline():
        raise OSError("network is unreachable")

    monkeypatch.setattr(keras.datasets.mnist, "load_data", offline)
    with pytest.raises(InvalidInput, match="internet.*'mnist'"):
        load_image_source("mnist-full")


def test_folder_labels_skips_and_warns(photo_folder: Path, logged):
    s = load_image_source(photo_folder, size=28, color="gray")
    assert s.images.shape == (7, 28, 28, 1)
    assert s.labels == ["cats"] * 3 + ["dogs"] * 3 + [None]
    assert s.sources[0].endswith("cats/0.png") and s.sources[-1].endswith("top.png")
    # the text file is listed too (it used to be dropped without a word)
    assert [Path(p).name for p, _ in s.skipped] == ["notes.txt", "broken.png"]
    assert s.skipped[0][1] == "not an image file (.txt)"
    assert "skipped 2 file(s)" in logged.text and "broken.png" in logged.text
    # the red top-level image became gray of the right luminance
    assert abs(int(s.images[-1].mean()) - round(200 * 0.2989)) <= 1


def test_folder_rgb_and_limit(photo_folder: Path):
    s = load_image_source(photo_folder, size=12, color="rgb", limit=4)
    assert s.images.shape == (4, 12, 12, 3)


def test_empty_folder_is_clear(tmp_path: Path):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(InvalidInput, match="no image files"):
        load_image_source(tmp_path / "empty")


def test_folder_with_only_unreadable_files(tmp_path: Path, logged):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "a.jpg").write_bytes(b"garbage")
    with pytest.raises(InvalidInput, match="could be read"):
        load_image_source(tmp_path / "bad")
    assert "a.jpg" in logged.text


def test_missing_source(tmp_path: Path):
    with pytest.raises(InvalidInput, match="not found"):
        load_image_source(tmp_path / "nope")


def test_npy_float_and_uint8(tmp_path: Path):
    x = np.random.default_rng(0).random((5, 20, 20)).astype(np.float32)
    np.save(tmp_path / "a.npy", x)
    s = load_image_source(tmp_path / "a.npy", size=20)
    assert s.images.shape == (5, 20, 20, 1)
    np.testing.assert_allclose(s.images[..., 0], np.rint(x * 255), atol=1)
    assert s.labels == [None] * 5
    np.save(tmp_path / "b.npy", (x * 255).astype(np.uint8)[..., None])
    assert load_image_source(tmp_path / "b.npy", size=10).images.shape == (5, 10, 10, 1)


def test_npy_bad_shape_and_range(tmp_path: Path):
    np.save(tmp_path / "flat.npy", np.zeros((5, 784)))
    with pytest.raises(DimensionMismatch, match=r"\(N, H, W\)"):
        load_image_source(tmp_path / "flat.npy")
    np.save(tmp_path / "big.npy", np.full((2, 8, 8), 1000.0))
    with pytest.raises(InvalidInput, match="0..255"):
        load_image_source(tmp_path / "big.npy")


def test_npz_with_labels(tmp_path: Path):
    x = np.zeros((4, 28, 28, 3), np.uint8)
    np.savez(tmp_path / "d.npz", images=x, labels=np.array(["a", "b", "a", "c"]))
    s = load_image_source(tmp_path / "d.npz")
    assert s.images.shape == (4, 28, 28, 1) and s.labels == ["a", "b", "a", "c"]
    np.savez(tmp_path / "e.npz", x=x[..., 0], y=np.array([1, 2, 3, 4]))
    assert load_image_source(tmp_path / "e.npz", color="rgb").labels == ["1", "2", "3", "4"]
    np.savez(tmp_path / "only.npz", whatever=x)
    assert len(load_image_source(tmp_path / "only.npz")) == 4


def test_pickled_npy_refused(tmp_path: Path):
    class Boom:
        def __reduce__(self):
            return (sys.exit, ("pickle ran",))

    arr = np.empty(1, dtype=object)
    arr[0] = Boom()
    np.save(tmp_path / "evil.npy", arr, allow_pickle=True)
    with pytest.raises(InvalidInput, match="pickled"):
        load_image_source(tmp_path / "evil.npy")


def test_huge_png_header_refused_before_decoding(tmp_path: Path, logged):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_header_only(60_000, 60_000))
    # past twice Pillow's own limit: its DecompressionBombError, as our message
    with pytest.raises(InvalidInput, match="3,600,000,000 pixels.*decompression bomb"):
        read_image_file(bomb)
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "bomb.png").write_bytes(png_header_only(20_000, 10))
    (tmp_path / "dir" / "ok.png").write_bytes(encode_png(digit_like(1)))
    s = load_image_source(tmp_path / "dir")
    assert len(s) == 1 and "20000x10" in s.skipped[0][1]
    assert "bomb.png" in logged.text


def test_image_file_formats_and_errors(tmp_path: Path):
    img = np.stack([digit_like(3, 40)] * 3, axis=-1)
    Image.fromarray(img).save(tmp_path / "q.jpg", quality=95)
    (tmp_path / "q.png").write_bytes(encode_png(img))
    for name in ("q.jpg", "q.png"):
        out = read_image_file(tmp_path / name, size=28, color="gray")
        assert out.shape == (28, 28, 1) and out.dtype == np.uint8 and out.max() > 150
    assert read_image_file(tmp_path / "q.png", size=28, color="rgb").shape == (28, 28, 3)
    with pytest.raises(InvalidInput, match="not found"):
        read_image_file(tmp_path / "missing.png")
    (tmp_path / "bad.png").write_bytes(b"nope")
    with pytest.raises(InvalidInput, match="not a readable image"):
        read_image_file(tmp_path / "bad.png")


def test_conform_shapes():
    one = np.zeros((28, 28), np.uint8)
    assert conform_images(one, size=28, channels=1).shape == (1, 28, 28, 1)
    assert conform_images(np.zeros((28, 28, 3)), size=28, channels=1).shape == (1, 28, 28, 1)
    assert conform_images(np.zeros((5, 28, 28)), size=28, channels=3).shape == (5, 28, 28, 3)
    assert conform_images([np.zeros((10, 10)), np.zeros((30, 30))], size=28, channels=1).shape == (2, 28, 28, 1)
    with pytest.raises(DimensionMismatch, match="channels"):
        conform_images(np.zeros((2, 28, 28, 7)), size=28, channels=1)
    with pytest.raises(DimensionMismatch):
        conform_images(np.zeros(5), size=28, channels=1)
    with pytest.raises(InvalidInput, match="NaN"):
        to_uint8(np.array([np.nan]))


# ------------------------------------------------------------------ PNG output


def test_encode_png_roundtrip_gray_and_rgb():
    rng = np.random.default_rng(1)
    for shape in ((7, 5), (6, 9, 3)):
        img = rng.integers(0, 256, shape, dtype=np.uint8)
        pixels = read_png(encode_png(img))
        assert pixels.shape == shape
        np.testing.assert_array_equal(pixels, img)
    np.testing.assert_array_equal(read_png(encode_png(img[..., :1])), img[..., 0])  # (H, W, 1)
    with pytest.raises(DimensionMismatch):
        encode_png(np.zeros((4, 4, 2), np.uint8))


def test_grid_picture_opens(tmp_path: Path):
    tiles = [np.full((28, 28, 1), 40 * i, np.uint8) for i in range(6)]
    captions = ["query"] + [[f"#{i}", str(i), f"d=0.{i}3"] for i in range(1, 6)]
    out = write_grid(tmp_path / "grid.png", tiles, captions, title="mnist k=5")
    pixels = read_png(out.read_bytes())
    assert pixels.ndim == 3 and pixels.shape[1] > 6 * 28 * 4 and pixels.shape[0] > 28 * 4
    assert pixels[0, 0].tolist() == [255, 255, 255]  # white background
    assert (pixels == 0).all(axis=-1).any()  # the dark first neighbour tile
    assert (pixels.astype(int).sum(-1) < 150).any()  # dark ink of the captions
    with pytest.raises(InvalidInput):
        write_grid(tmp_path / "x.png", tiles, captions[:2])


@pytest.mark.slow
def test_tensorflow_import_is_quiet(tmp_path: Path):
    import subprocess

    (tmp_path / "a.png").write_bytes(encode_png(digit_like(0)))
    code = (
        "import sys; from latentsearch.io.images import read_image_file; "
        f"print(read_image_file({str(tmp_path / 'a.png')!r}).shape)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.strip() == "(28, 28, 1)"
    assert out.stderr == ""


def test_truncated_headers_are_skipped_not_crashing(tmp_path: Path):
    (tmp_path / "t").mkdir()
    good = encode_png(digit_like(2))
    (tmp_path / "t" / "short.png").write_bytes(good[:20])
    (tmp_path / "t" / "short.gif").write_bytes(b"GIF89a\x01")
    (tmp_path / "t" / "short.jpg").write_bytes(b"\xff\xd8\xff\xe0\x00")
    (tmp_path / "t" / "short.bmp").write_bytes(b"BM\x00")
    (tmp_path / "t" / "ok.png").write_bytes(good)
    s = load_image_source(tmp_path / "t")
    assert len(s) == 1 and len(s.skipped) == 4


def test_jpeg_and_gif_and_bmp_headers(tmp_path: Path):
    img = np.zeros((30, 50, 3), np.uint8)
    Image.fromarray(img).save(tmp_path / "a.jpg")
    with open_image(tmp_path / "a.jpg") as opened:  # the header only: nothing decoded yet
        assert (opened.format, opened.size) == ("JPEG", (50, 30))
    def declaring(fmt: str, at: int, layout: str, *size: int) -> bytes:
        """A small real file of ``fmt`` whose header is rewritten to declare ``size``."""
        out = io.BytesIO()
        Image.fromarray(np.zeros((7, 9), np.uint8)).save(out, format=fmt)
        data = bytearray(out.getvalue())
        data[at : at + struct.calcsize(layout)] = struct.pack(layout, *size)
        return bytes(data)

    (tmp_path / "a.gif").write_bytes(declaring("GIF", 6, "<HH", 20_000, 7))
    with pytest.raises(InvalidInput, match="20000x7"):
        read_image_file(tmp_path / "a.gif")
    # 144M pixels: past Pillow's warning limit (89M), its warning silenced, our size refused
    (tmp_path / "a.bmp").write_bytes(declaring("BMP", 18, "<ii", 12_000, -12_000))
    with pytest.raises(InvalidInput, match="12000x12000"):
        read_image_file(tmp_path / "a.bmp")


def test_real_bmp_decodes(tmp_path: Path):
    h, w = 9, 6
    img = np.zeros((h, w, 3), np.uint8)
    img[2:7, 2:4] = 255
    row_bytes = (w * 3 + 3) // 4 * 4
    rows = b"".join(
        img[r, :, ::-1].tobytes() + b"\0" * (row_bytes - w * 3) for r in range(h - 1, -1, -1)
    )
    header = struct.pack("<IiiHHIIiiII", 40, w, h, 1, 24, 0, len(rows), 2835, 2835, 0, 0)
    data = b"BM" + struct.pack("<IHHI", 14 + 40 + len(rows), 0, 0, 54) + header + rows
    (tmp_path / "d.bmp").write_bytes(data)
    out = read_image_file(tmp_path / "d.bmp", size=9, color="gray")
    assert out.shape == (9, 9, 1) and out.max() > 200 and out[0, 0, 0] == 0


# ------------------------------------------------------------------ PNG input, every variant

_BPP = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}


def _paeth(a, b, c):
    p = a + b - c
    pa, pb, pc = np.abs(p - a), np.abs(p - b), np.abs(p - c)
    return np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))


def write_filtered_png(samples: np.ndarray, ctype: int, filters: list[int], *, plte: bytes | None = None,
                       trns: bytes | None = None, depth: int = 8, interlace: int = 0) -> bytes:
    """An 8-bit PNG of ``samples`` (h, w * channels), row y filtered with filters[y % len]."""
    h, stride = samples.shape
    bpp = _BPP[ctype]
    prior = np.zeros(stride, np.int32)
    lines = []
    for y in range(h):
        f = filters[y % len(filters)]
        cur = samples[y].astype(np.int32)
        left = np.concatenate([np.zeros(bpp, np.int32), cur[:-bpp]])
        up_left = np.concatenate([np.zeros(bpp, np.int32), prior[:-bpp]])
        pred = {0: 0, 1: left, 2: prior, 3: (left + prior) // 2, 4: _paeth(left, prior, up_left)}[f]
        lines.append(bytes([f]) + ((cur - pred) % 256).astype(np.uint8).tobytes())
        prior = cur
    chunk = lambda k, b: struct.pack(">I", len(b)) + k + b + struct.pack(">I", zlib.crc32(k + b))
    ihdr = struct.pack(">IIBBBBB", stride // bpp, h, depth, ctype, 0, 0, interlace)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
        + (chunk(b"PLTE", plte) if plte is not None else b"")
        + (chunk(b"tRNS", trns) if trns is not None else b"")
        + chunk(b"IDAT", zlib.compress(b"".join(lines)))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("ctype", [0, 2, 3, 4, 6])
def test_png_files_read_as_libpng_decodes_them_every_colour_type_and_filter(ctype, tmp_path: Path):
    """Pillow's pixels of every colour type and row filter equal libpng's (TensorFlow's
    decoder) put through the array path: a file and its pixels as an array give one image."""
    import tensorflow as tf

    rng = np.random.default_rng(ctype)
    h = w = 13
    for filters in ([0], [1], [2], [3], [4], [0, 1, 2, 3, 4], [4, 3, 2, 1]):
        for trns in ((None, bytes([0, 128, 255])) if ctype == 3 else (None,)):
            if ctype == 3:
                samples = rng.integers(0, 7, (h, w), dtype=np.uint8)
                plte = rng.integers(0, 256, 21, dtype=np.uint8).tobytes()
            else:
                samples = rng.integers(0, 256, (h, w * _BPP[ctype]), dtype=np.uint8)
                samples[3:6] = samples[2]  # smooth runs as well as noise
                plte = None
            data = write_filtered_png(samples, ctype, filters, plte=plte, trns=trns)
            (tmp_path / "f.png").write_bytes(data)
            libpng = tf.io.decode_image(data, expand_animations=False).numpy()
            for color, channels in (("rgb", 3), ("gray", 1)):
                got = read_image_file(tmp_path / "f.png", size=13, color=color)
                want = conform_images(libpng, size=13, channels=channels)[0]
                assert got.dtype == np.uint8 and got.shape == want.shape, (ctype, filters, trns)
                np.testing.assert_array_equal(got, want, err_msg=f"{ctype} {filters} {trns} {color}")


def test_png_variants_read_or_refused_clearly(tmp_path: Path):
    import tensorflow as tf

    rng = np.random.default_rng(4)
    deep = rng.integers(0, 65536, (20, 20, 1), dtype=np.uint16)
    data16 = tf.io.encode_png(deep).numpy()
    (tmp_path / "deep.png").write_bytes(data16)
    out = read_image_file(tmp_path / "deep.png", size=20, color="gray")
    np.testing.assert_array_equal(out, tf.io.decode_image(data16).numpy())  # the high byte, as before
    samples = rng.integers(0, 256, (6, 6), dtype=np.uint8)
    (tmp_path / "trns.png").write_bytes(write_filtered_png(samples, 0, [0], trns=b"\0\0"))
    assert read_image_file(tmp_path / "trns.png", size=6).shape == (6, 6, 1)  # gray + tRNS
    good = write_filtered_png(samples, 0, [1])
    broken = bytearray(good)
    broken[-20] ^= 0xFF  # inside the IDAT: its CRC fails
    for name, data in (("crc.png", bytes(broken)), ("cut.png", good[: len(good) // 2]),
                       ("sig.png", b"\x89PNG\r\n\x1a\n")):
        (tmp_path / name).write_bytes(data)
        with pytest.raises(InvalidInput, match=f"{name}: not a readable image"):
            read_image_file(tmp_path / name, size=6)


def test_png_query_reads_without_tensorflow(tmp_path: Path):
    import subprocess

    img = np.stack([digit_like(5, 28)] * 3, axis=-1)
    (tmp_path / "g.png").write_bytes(encode_png(img[..., 0]))
    (tmp_path / "c.png").write_bytes(encode_png(img))
    code = (
        "import sys; from latentsearch.io.images import read_image_file; "
        f"a = read_image_file({str(tmp_path / 'g.png')!r}, size=28, color='gray'); "
        f"b = read_image_file({str(tmp_path / 'c.png')!r}, size=28, color='gray'); "
        f"c = read_image_file({str(tmp_path / 'g.png')!r}, size=28, color='rgb'); "
        "print(a.shape, b.shape, c.shape, (a == b).all(), "
        "sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.strip() == "(28, 28, 1) (28, 28, 1) (28, 28, 3) True []"

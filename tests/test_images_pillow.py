"""Images through Pillow: every format a photo folder holds, EXIF orientation, colour modes,
fit, the bomb guard, and queries by JPEG without TensorFlow (issue #14)."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import latentsearch as ls
from latentsearch.errors import InvalidInput
from latentsearch.io.images import (IMAGE_EXTENSIONS, conform_images, image_options,
                                    load_image_source, read_image_file)
from latentsearch.io.pixels import fit_array, gray_of

REPO = Path(__file__).resolve().parents[1]
SIDE = 48  # the pictures drawn here; the collection is 16x16


def picture(seed: int, side: int = SIDE) -> np.ndarray:
    """An RGB picture that no other seed resembles: a few bright blocks on a dark ground, and
    an asymmetric mark (so a rotation changes it)."""
    rng = np.random.default_rng(seed)
    img = np.full((side, side, 3), 20, np.uint8)
    for _ in range(3):
        r, c = rng.integers(0, side - side // 3, size=2)
        img[r : r + side // 3, c : c + side // 4] = rng.integers(90, 256, size=3)
    img[: side // 6, : side // 2] = (250, 250, 250)  # a bar along the top-left
    return img


def save(img: np.ndarray | Image.Image, path: Path, **options) -> Path:
    (img if isinstance(img, Image.Image) else Image.fromarray(img)).save(path, **options)
    return path


class Logged(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def warnings_logged():
    handler = Logged()
    logging.getLogger("latentsearch").addHandler(handler)
    try:
        yield handler
    finally:
        logging.getLogger("latentsearch").removeHandler(handler)


def rotated_jpeg(upright: np.ndarray, path: Path) -> Path:
    """A JPEG stored sideways with EXIF orientation 6 ("rotate 90 clockwise to view"), as a
    phone writes a photo taken in portrait."""
    stored = Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    return save(stored, path, quality=95, exif=exif.tobytes())


@pytest.fixture(scope="module")
def mixed_folder(tmp_path_factory) -> Path:
    """One folder, two labelled subfolders, every format, and files that are not images."""
    root = tmp_path_factory.mktemp("mixed") / "photos"
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    save(picture(1), root / "a" / "one.png")
    save(picture(2), root / "a" / "two.jpg", quality=95)
    save(picture(3), root / "a" / "three.jpeg", quality=95)
    save(picture(4), root / "a" / "four.bmp")
    save(picture(5), root / "a" / "five.webp", quality=95)
    save(picture(6), root / "a" / "six.tif")
    save(picture(7), root / "a" / "seven.TIFF")  # suffixes are case-blind
    frames = [Image.fromarray(picture(8)), Image.fromarray(picture(80))]
    frames[0].save(root / "b" / "animated.gif", save_all=True, append_images=frames[1:],
                   duration=100, loop=0)
    save(Image.fromarray(picture(9)).convert("CMYK"), root / "b" / "cmyk.jpg", quality=95)
    deep = (picture(10)[..., 0].astype(np.uint16) * 257)  # 16-bit gray
    save(Image.fromarray(deep), root / "b" / "deep.png")
    save(picture(11), root / "b" / "upright.jpg", quality=95)
    rotated_jpeg(picture(11), root / "b" / "sideways.jpg")
    rgba = np.dstack([picture(12), np.full((SIDE, SIDE), 255, np.uint8)])
    rgba[:, : SIDE // 4, 3] = 0  # a transparent strip on the left
    save(rgba, root / "b" / "alpha.png")
    save(Image.fromarray(picture(13)).convert("P", palette=Image.Palette.ADAPTIVE),
         root / "b" / "palette.png")
    (root / "b" / "notes.txt").write_text("not a picture")
    (root / "b" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a real jpeg")
    (root / ".hidden").mkdir()
    save(picture(14), root / ".hidden" / "ignored.png")
    return root


READABLE = ["a/five.webp", "a/four.bmp", "a/one.png", "a/seven.TIFF", "a/six.tif",
            "a/three.jpeg", "a/two.jpg", "b/alpha.png", "b/animated.gif", "b/cmyk.jpg",
            "b/deep.png", "b/palette.png", "b/sideways.jpg", "b/upright.jpg"]


def test_every_readable_format_in_a_folder_is_read(mixed_folder: Path, warnings_logged):
    s = load_image_source(mixed_folder, size=16, color="rgb")
    got = sorted(str(Path(p).relative_to(mixed_folder)) for p in s.sources)
    assert got == READABLE
    assert s.images.shape == (len(READABLE), 16, 16, 3)
    assert s.labels == ["a" if p.startswith(str(mixed_folder / "a")) else "b" for p in s.sources]
    assert {".webp", ".tif", ".tiff"} <= set(IMAGE_EXTENSIONS)


def test_non_image_and_broken_files_are_named_in_the_warning_never_dropped(mixed_folder: Path,
                                                                          warnings_logged):
    s = load_image_source(mixed_folder, size=16)
    reasons = {Path(p).name: why for p, why in s.skipped}
    assert set(reasons) == {"notes.txt", "broken.jpg"}
    assert reasons["notes.txt"] == "not an image file (.txt)"
    assert reasons["broken.jpg"].startswith("not a readable image (")
    (text,) = warnings_logged.lines
    assert "skipped 2 file(s)" in text and "notes.txt" in text and "broken.jpg" in text
    assert "1 hidden file(s)" in text  # counted, never looked at
    assert "tensorflow" not in text.lower() and "op" not in text.split()


def test_formats_decode_to_the_pixels_drawn(mixed_folder: Path):
    want = lambda seed: conform_images(picture(seed), size=SIDE, channels=3)[0]  # noqa: E731
    read = lambda name: read_image_file(mixed_folder / name, size=SIDE, color="rgb")  # noqa: E731
    for name, seed, tol in (("a/one.png", 1, 0), ("a/four.bmp", 4, 0), ("a/six.tif", 6, 0),
                            ("a/two.jpg", 2, 40), ("a/five.webp", 5, 40), ("b/cmyk.jpg", 9, 60)):
        diff = np.abs(read(name).astype(int) - want(seed)).mean()
        assert diff <= tol / 10, (name, diff)
    # the GIF's first frame, not its second
    gif = read("b/animated.gif").astype(int)
    assert np.abs(gif - want(8)).mean() < np.abs(gif - want(80)).mean() / 4


def test_16_bit_png_keeps_its_high_byte(mixed_folder: Path):
    out = read_image_file(mixed_folder / "b" / "deep.png", size=SIDE, color="gray")
    np.testing.assert_array_equal(out[..., 0], picture(10)[..., 0])  # (v * 257) >> 8 == v


def test_transparency_is_composited_on_white(mixed_folder: Path):
    out = read_image_file(mixed_folder / "b" / "alpha.png", size=SIDE, color="rgb")
    assert (out[:, : SIDE // 4] == 255).all()  # the transparent strip
    np.testing.assert_array_equal(out[:, SIDE // 4 :], picture(12)[:, SIDE // 4 :])
    rgba = np.dstack([picture(12), np.full((SIDE, SIDE), 255, np.uint8)])
    rgba[:, : SIDE // 4, 3] = 0
    np.testing.assert_array_equal(conform_images(rgba, size=SIDE, channels=3)[0], out)  # arrays too


def test_gray_is_the_601_luma_for_files_and_arrays_alike(mixed_folder: Path):
    rgb = picture(1)
    from_file = read_image_file(mixed_folder / "a" / "one.png", size=SIDE, color="gray")
    from_array = conform_images(rgb, size=SIDE, channels=1)[0]
    np.testing.assert_array_equal(from_file, from_array)
    np.testing.assert_array_equal(from_file[..., 0], np.asarray(Image.fromarray(rgb).convert("L")))
    assert gray_of(np.array([[200, 0, 0]], np.uint8))[0] == 60  # 0.299 * 200


def test_exif_rotated_photo_is_read_upright(mixed_folder: Path):
    upright = read_image_file(mixed_folder / "b" / "upright.jpg", size=SIDE, color="rgb")
    sideways = read_image_file(mixed_folder / "b" / "sideways.jpg", size=SIDE, color="rgb")
    assert np.abs(upright.astype(int) - sideways).mean() < 4
    raw = np.asarray(Image.open(mixed_folder / "b" / "sideways.jpg").convert("RGB"))
    assert np.abs(raw.astype(int) - upright).mean() > 20  # as stored, it is on its side


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data:UserWarning")  # Pillow's, as in a user's run
def test_photo_with_damaged_exif_is_read_as_stored(tmp_path: Path):
    junk = b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\x00\x05\x01\x12\x00\x03\xff\xff\xff\xff"
    save(picture(15), tmp_path / "odd.jpg", quality=95, exif=junk)
    out = read_image_file(tmp_path / "odd.jpg", size=SIDE, color="rgb")
    assert np.abs(out.astype(int) - picture(15)).mean() < 4


def test_fit_crop_pad_stretch():
    wide = np.zeros((20, 40, 1), np.uint8)
    wide[:, :10] = 255  # white on the left quarter
    wide[:, 30:] = 128  # grey on the right quarter
    crop = fit_array(wide, 10, "crop")  # the centre 20x20: columns 10..29, black
    assert crop.shape == (10, 10, 1) and crop[:, 1:-1].max() == 0
    assert crop.max() < 64  # the filter reaches just past the box at its edges
    pad = fit_array(wide, 10, "pad")  # 10x5 inside, black bars above and below
    assert pad[0].max() == 0 and pad[-1].max() == 0 and pad[5, 0, 0] > 200
    stretch = fit_array(wide, 10, "stretch")  # everything, squeezed
    assert stretch[:, 0].min() > 200 and abs(int(stretch[5, -1, 0]) - 128) < 5
    with pytest.raises(InvalidInput, match="fit must be one of crop, pad, stretch"):
        fit_array(wide, 10, "zoom")


def test_a_large_jpeg_is_read_through_a_draft(tmp_path: Path):
    big = np.kron(picture(21), np.ones((25, 33, 1), np.uint8))[:1200, :1600]  # 1600 x 1200
    save(big, tmp_path / "big.jpg", quality=90)
    small = read_image_file(tmp_path / "big.jpg", size=28, color="rgb")
    centre = big[:, 200:1400]  # what crop keeps
    want = conform_images(centre, size=28, channels=3)[0]
    assert small.shape == (28, 28, 3) and np.abs(small.astype(int) - want).mean() < 6


def test_bomb_guard_reads_only_the_header(tmp_path: Path):
    # a real PNG whose header says 12,000 x 6,000 (72M pixels), with 16 pixels of data:
    # refused from the header alone (decoding would fail on the missing data instead)
    out = io.BytesIO()
    Image.new("L", (4, 4)).save(out, format="PNG")
    data = bytearray(out.getvalue())
    data[16:24] = (12_000).to_bytes(4, "big") + (6_000).to_bytes(4, "big")
    data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, "big")  # the IHDR's CRC
    (tmp_path / "bomb.png").write_bytes(bytes(data))
    with pytest.raises(InvalidInput, match=r"12000x6000 pixels, more than the 10000x10000"):
        read_image_file(tmp_path / "bomb.png")


# ------------------------------------------------------------------ a tiny collection


@pytest.fixture(scope="module")
def photos(mixed_folder: Path, tmp_path_factory) -> tuple[Path, Path]:
    """A 16x16 rgb collection of the mixed folder, trained for one epoch."""
    root = tmp_path_factory.mktemp("root")
    ls.build_images(mixed_folder, name="photos", root=root, size=16, color="rgb",
                    encoder="dense", epochs=1, quiet=True)
    return root, mixed_folder


def test_build_records_fit_and_resample_in_the_encoder_config(photos):
    root, _ = photos
    cfg = ls.open("photos", root).manifest["encoder"]["config"]
    assert cfg["fit"] == "crop" and cfg["resample"] == "bilinear"
    assert image_options(cfg) == {"size": 16, "color": "rgb", "fit": "crop", "resample": "bilinear"}
    # configs written before fit existed were resized both ways: they keep doing so
    old = {k: v for k, v in cfg.items() if k not in ("fit", "resample")}
    assert image_options(old)["fit"] == "stretch"


def test_exif_rotated_jpeg_finds_its_upright_twin_first(photos):
    root, folder = photos
    col = ls.open("photos", root)
    from latentsearch.pipelines import read_query_image

    hits = col.search(read_query_image(col, folder / "b" / "sideways.jpg"), k=2)
    sources = [Path(h.source).name for h in hits]
    assert set(sources) == {"sideways.jpg", "upright.jpg"}, sources


_JPEG_QUERY = """
import sys
import latentsearch as ls
from latentsearch.pipelines import read_query_image
col = ls.open({name!r}, {root!r})
hits = col.search(read_query_image(col, {jpeg!r}), k=3)
assert hits and hits[0].source.endswith("two.jpg"), [h.source for h in hits]
assert "tensorflow" not in sys.modules and "keras" not in sys.modules, "TensorFlow was imported"
print("ok")
"""


def test_query_by_jpeg_never_imports_tensorflow(photos):
    root, folder = photos
    code = _JPEG_QUERY.format(name="photos", root=str(root), jpeg=str(folder / "a" / "two.jpg"))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


def test_cli_query_by_a_large_webp_without_tensorflow(photos, tmp_path: Path):
    root, _ = photos
    big = np.kron(picture(2), np.ones((20, 20, 1), np.uint8))  # 960 x 960
    save(big, tmp_path / "big.webp", quality=90)
    code = ("import sys; from latentsearch.cli import main\n"
            "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
            "print('TF' if 'tensorflow' in sys.modules else 'no TF', file=sys.stderr)")
    out = subprocess.run([sys.executable, "-c", code, "query", "photos", "--root", str(root),
                          "--image", str(tmp_path / "big.webp"), "-k", "3", "--json"],
                         capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stderr.strip().endswith("no TF")
    assert len(json.loads(out.stdout)["hits"]) == 3


def test_build_images_fit_option_reaches_the_config(tmp_path: Path):
    folder = tmp_path / "wide"
    folder.mkdir()
    for i in range(4):
        save(np.kron(picture(30 + i), np.ones((1, 2, 1), np.uint8)), folder / f"{i}.png")  # 96x48
    from click.testing import CliRunner

    from latentsearch.cli import main

    r = CliRunner().invoke(main, ["build", "images", str(folder), "--root", str(tmp_path / "r"),
                                  "--size", "8", "--fit", "pad", "--encoder", "dense",
                                  "--epochs", "1", "--quiet"])
    assert r.exit_code == 0, r.output
    col = ls.open("wide", tmp_path / "r")
    assert col.manifest["encoder"]["config"]["fit"] == "pad"
    stored = col.images([0])[0]
    assert stored[:2].max() == 0 and stored[-2:].max() == 0  # the pad bars above and below
    r = CliRunner().invoke(main, ["build", "images", str(folder), "--fit", "zoom"])
    assert r.exit_code == 2 and "zoom" in r.output

"""Image sources and picture output.

* :func:`load_image_source` turns a SOURCE of ``build images`` into uint8 images of one size
  and colour mode, with labels and source paths: ``mnist`` (the 5,000 digits shipped in the
  package), ``mnist-full`` (``keras.datasets.mnist``, needs the internet), a folder of
  .png/.jpg/.jpeg/.bmp/.gif files (labels = names of the immediate subfolders), or a
  .npy/.npz array of shape (N, H, W[, C]).
* :func:`read_image_file` reads one image for ``query --image``; 8-bit non-interlaced PNGs
  are decoded with zlib + numpy (:func:`decode_png`), anything else by TensorFlow.
* :func:`conform_images` brings arrays of any size / channel count / value range to the
  size and colour an encoder was trained on (resize, rgb<->gray), or refuses clearly.
* :func:`write_grid_png` writes the query and its neighbours as one PNG, captions under each
  tile, drawn with a small embedded bitmap font and encoded with numpy + zlib (no new
  dependency).

Only numpy is imported at module import; TensorFlow (decoding other formats, resizing) only
when needed: a PNG query of the collection's size never imports it.
Image headers are checked for absurd dimensions *before* anything is decoded.
"""

from __future__ import annotations

import struct
import sys
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from latentsearch.errors import DimensionMismatch, InvalidInput
from latentsearch.types import label_text
from latentsearch.encoders.tf import import_keras, import_tensorflow

__all__ = [
    "ImageSet",
    "IMAGE_EXTENSIONS",
    "MAX_SIDE",
    "load_image_source",
    "read_image_file",
    "conform_images",
    "to_uint8",
    "write_grid_png",
    "encode_png",
]

#: file name endings read from a folder (case-insensitive)
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
#: largest width or height accepted from an image header (decompression-bomb guard)
MAX_SIDE = 10_000
#: largest width * height accepted
MAX_PIXELS = 50_000_000

_COLORS = {"gray": 1, "grey": 1, "rgb": 3}
_GRAY_WEIGHTS = np.array([0.2989, 0.5870, 0.1140], dtype=np.float32)  # as tf.image.rgb_to_grayscale


@dataclass
class ImageSet:
    """Images of one size and colour mode, with what is known about each."""

    images: np.ndarray  # uint8 (N, size, size, C)
    labels: list[str | None]
    sources: list[str | None]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)

    def __len__(self) -> int:
        return int(self.images.shape[0])


# --------------------------------------------------------------------------- helpers


def _channels(color: str) -> int:
    try:
        return _COLORS[str(color).lower()]
    except KeyError:
        raise InvalidInput(f"color must be 'gray' or 'rgb', got {color!r}") from None


def _check_size(size: int) -> int:
    try:
        size = int(size)
    except (TypeError, ValueError):
        raise InvalidInput(f"size must be an integer, got {size!r}") from None
    if not 4 <= size <= 1024:
        raise InvalidInput(f"size must be between 4 and 1024 pixels, got {size}")
    return size


def to_uint8(arr: Any, what: str = "images") -> np.ndarray:
    """Pixel values as uint8: uint8 as is; floats in [0, 1] are scaled by 255; other
    numbers must lie in 0..255. NaN/inf and out-of-range values are refused."""
    try:
        arr = np.asarray(arr)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"{what} must be a numeric array: {exc}") from None
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == bool:
        return arr.astype(np.uint8) * 255
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise InvalidInput(f"{what} must be numeric pixel values, got dtype {arr.dtype}")
    if arr.size == 0:
        return arr.astype(np.uint8)
    if np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise InvalidInput(f"{what} contain NaN or inf")
        lo, hi = float(arr.min()), float(arr.max())
        if lo < 0 or hi > 255:
            raise InvalidInput(
                f"{what} values must lie in [0, 1] or 0..255, found {lo:g}..{hi:g}"
            )
        scale = 255.0 if hi <= 1.0 else 1.0
        return np.clip(np.rint(arr.astype(np.float32) * scale), 0, 255).astype(np.uint8)
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0 or hi > 255:
        raise InvalidInput(f"{what} values must lie in 0..255, found {lo}..{hi}")
    return arr.astype(np.uint8)


def _convert_channels(batch: np.ndarray, channels: int) -> np.ndarray:
    """(N, H, W, C) with C in 1..4 to ``channels`` (1 gray or 3 rgb); alpha is dropped."""
    c = batch.shape[-1]
    if c == channels:
        return batch
    if c == 2:  # gray + alpha
        batch, c = batch[..., :1], 1
    elif c == 4:  # rgba
        batch, c = batch[..., :3], 3
    if c == channels:
        return batch
    if c == 1 and channels == 3:
        return np.repeat(batch, 3, axis=-1)
    if c == 3 and channels == 1:
        gray = batch.astype(np.float32) @ _GRAY_WEIGHTS
        return np.clip(np.rint(gray), 0, 255).astype(np.uint8)[..., None]
    raise DimensionMismatch(
        f"images have {batch.shape[-1]} channels; only 1 (gray), 2, 3 (rgb) or 4 (rgba) "
        f"can be converted to {channels}"
    )


def _resize(batch: np.ndarray, size: int) -> np.ndarray:
    """uint8 (N, H, W, C) -> uint8 (N, size, size, C) with TensorFlow's bilinear resize
    (antialiased when shrinking)."""
    if batch.shape[1] == size and batch.shape[2] == size:
        return batch
    tf = import_tensorflow()

    out = []
    step = 1024
    for start in range(0, len(batch), step):
        part = tf.image.resize(
            batch[start : start + step].astype(np.float32), (size, size), antialias=True
        ).numpy()
        out.append(np.clip(np.rint(part), 0, 255).astype(np.uint8))
    if not out:
        return np.zeros((0, size, size, batch.shape[-1]), np.uint8)
    return np.concatenate(out)


def conform_images(items: Any, *, size: int, channels: int, what: str = "images") -> np.ndarray:
    """One image (H, W) / (H, W, C) or a batch (N, H, W) / (N, H, W, C) as uint8
    (N, size, size, channels): values converted to uint8, resized, rgb<->gray converted.

    A 3-D array is read as one (H, W, C) image when its last axis is 1-4 long and differs
    from the one before it, else as a batch of (N, H, W) gray images. A list of images of
    different sizes is accepted too. Anything else is a :class:`DimensionMismatch`.
    """
    if isinstance(items, (list, tuple)) and items:
        shapes = {np.shape(x) for x in items}
        if len(shapes) > 1:  # images of different sizes: one at a time
            return np.concatenate(
                [conform_images(x, size=size, channels=channels, what=what) for x in items]
            )
    arr = to_uint8(items, what)
    if arr.ndim == 2:
        arr = arr[None, :, :, None]
    elif arr.ndim == 3:
        if arr.shape[-1] in (1, 2, 3, 4) and arr.shape[-1] != arr.shape[-2]:
            arr = arr[None]
        else:
            arr = arr[..., None]
    elif arr.ndim != 4:
        raise DimensionMismatch(
            f"{what} must be one image (H, W) or (H, W, C), or a batch (N, H, W) or "
            f"(N, H, W, C); got an array of shape {arr.shape}"
        )
    if arr.shape[0] == 0:
        raise InvalidInput(f"no {what} given (empty array)")
    if arr.shape[-1] not in (1, 2, 3, 4):
        raise DimensionMismatch(
            f"{what} have {arr.shape[-1]} channels (shape {arr.shape}); expected 1 (gray), "
            f"3 (rgb) or 4 (rgba) in the last axis"
        )
    if min(arr.shape[1], arr.shape[2]) < 1 or max(arr.shape[1], arr.shape[2]) > MAX_SIDE:
        raise DimensionMismatch(f"{what} of {arr.shape[1]}x{arr.shape[2]} pixels cannot be used")
    arr = _convert_channels(arr, channels)
    return np.ascontiguousarray(_resize(arr, size))


# --------------------------------------------------------------------------- headers


def image_header_size(path: Path) -> tuple[str, int, int] | None:
    """(format, width, height) read from the first bytes of a PNG/GIF/BMP/JPEG file, without
    decoding it; None when the header is not recognised."""
    with open(path, "rb") as f:
        head = f.read(32)
        if head[:8] == _PNG_SIGNATURE and head[12:16] == b"IHDR" and len(head) >= 24:
            w, h = struct.unpack(">II", head[16:24])
            return "png", w, h
        if head[:6] in (b"GIF87a", b"GIF89a") and len(head) >= 10:
            w, h = struct.unpack("<HH", head[6:10])
            return "gif", w, h
        if head[:2] == b"BM" and len(head) >= 26:
            (hdr,) = struct.unpack("<I", head[14:18])
            if hdr == 12:
                w, h = struct.unpack("<HH", head[18:22])
            else:
                w, h = struct.unpack("<ii", head[18:26])
            return "bmp", abs(w), abs(h)
        if head[:2] == b"\xff\xd8":
            return _jpeg_size(f)
    return None


_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg_size(f) -> tuple[str, int, int] | None:
    """Walk the JPEG marker segments up to the first start-of-frame."""
    f.seek(2)
    for _ in range(10_000):
        b = f.read(1)
        while b and b != b"\xff":
            b = f.read(1)
        while b == b"\xff":
            b = f.read(1)
        if not b:
            return None
        marker = b[0]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            continue
        if marker in (0xD9, 0xDA):  # end of image / start of scan before any frame
            return None
        seg = f.read(2)
        if len(seg) < 2:
            return None
        (length,) = struct.unpack(">H", seg)
        if length < 2:
            return None
        if marker in _SOF:
            data = f.read(5)
            if len(data) < 5:
                return None
            h, w = struct.unpack(">HH", data[1:5])
            return "jpeg", w, h
        f.seek(length - 2, 1)
    return None


# --------------------------------------------------------------------------- PNG input

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: channels per pixel of each 8-bit PNG colour type (3, palette, is expanded to RGB / RGBA)
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
#: bytes of rows filtered with Average or Paeth (undone byte by byte in Python) above which
#: a PNG is left to TensorFlow's decoder (~0.1 s of Python)
PNG_PYTHON_FILTER_BYTES = 1 << 17


def decode_png(data: bytes) -> np.ndarray | None:
    """uint8 (H, W, C) pixels of an 8-bit, non-interlaced PNG (gray, gray+alpha, RGB, RGBA,
    or palette, which becomes RGB, or RGBA with a tRNS chunk), decoded with zlib and numpy as
    ``tf.io.decode_image`` decodes it; None for anything else (other bit depths,
    interlacing, transparency chunks on non-palette images, damaged or truncated data, very
    large images filtered with Average/Paeth), which is then left to TensorFlow."""
    try:
        return _decode_png(data)
    except (ValueError, struct.error, zlib.error, IndexError):
        return None


def _decode_png(data: bytes) -> np.ndarray | None:
    if data[:8] != _PNG_SIGNATURE:
        return None
    pos, end = 8, len(data)
    ihdr = plte = trns = None
    idat: list[bytes] = []
    while pos + 12 <= end:
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + length]
        if len(body) != length or pos + 12 + length > end:
            return None
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        if zlib.crc32(body, zlib.crc32(kind)) & 0xFFFFFFFF != crc:
            return None
        pos += 12 + length
        if kind == b"IHDR":
            ihdr = body
        elif kind == b"PLTE":
            plte = body
        elif kind == b"tRNS":
            trns = body
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
        elif not (kind[0] & 0x20):  # an unknown critical chunk
            return None
    else:
        return None  # no IEND
    if ihdr is None or len(ihdr) != 13 or not idat:
        return None
    w, h, depth, ctype, comp, filt, interlace = struct.unpack(">IIBBBBB", ihdr)
    if depth != 8 or ctype not in _PNG_CHANNELS or comp or filt or interlace:
        return None
    if not (1 <= w <= MAX_SIDE and 1 <= h <= MAX_SIDE and w * h <= MAX_PIXELS):
        return None
    if trns is not None and ctype != 3:
        return None
    bpp = _PNG_CHANNELS[ctype]
    stride = w * bpp
    want = h * (stride + 1)
    inflate = zlib.decompressobj()
    raw = inflate.decompress(b"".join(idat), want)
    if len(raw) != want:
        return None
    rows = np.frombuffer(raw, np.uint8).reshape(h, stride + 1)
    filters = rows[:, 0]
    if filters.max() > 4:
        return None
    slow = int(np.count_nonzero(filters >= 3)) * stride
    if slow > PNG_PYTHON_FILTER_BYTES:
        return None
    pixels = _unfilter(rows[:, 1:], filters, bpp)
    if ctype == 3:
        if plte is None or len(plte) % 3 or not 3 <= len(plte) <= 768:
            return None
        n = len(plte) // 3
        index = pixels.reshape(h, w)
        if int(index.max()) >= n:
            return None
        palette = np.frombuffer(plte, np.uint8).reshape(n, 3)
        if trns is not None:
            alpha = np.full((n, 1), 255, np.uint8)
            a = np.frombuffer(trns[:n], np.uint8)
            alpha[: len(a), 0] = a
            palette = np.concatenate([palette, alpha], axis=1)
        return palette[index]
    return pixels.reshape(h, w, bpp)


def _unfilter(filtered: np.ndarray, filters: np.ndarray, bpp: int) -> np.ndarray:
    """Undo the PNG row filters (None, Sub, Up, Average, Paeth); uint8 (h, stride)."""
    h, stride = filtered.shape
    out = np.empty((h, stride), np.uint8)
    prior = np.zeros(stride, np.uint8)
    for y in range(h):
        line, kind = filtered[y], int(filters[y])
        if kind == 0:
            cur = line
        elif kind == 1:  # Sub: a running sum, per channel, modulo 256
            cur = np.cumsum(line.reshape(-1, bpp), axis=0, dtype=np.uint8).reshape(-1)
        elif kind == 2:  # Up
            cur = line + prior
        else:  # Average / Paeth depend on the byte just decoded: byte by byte
            cur = np.frombuffer(_unfilter_slow(line.tobytes(), prior.tobytes(), kind, bpp), np.uint8)
        out[y] = cur
        prior = out[y]
    return out


def _unfilter_slow(line: bytes, prior: bytes, kind: int, bpp: int) -> bytearray:
    cur = bytearray(line)
    n = len(cur)
    if kind == 3:  # Average
        for i in range(n):
            left = cur[i - bpp] if i >= bpp else 0
            cur[i] = (cur[i] + ((left + prior[i]) >> 1)) & 0xFF
        return cur
    for i in range(n):  # Paeth
        if i >= bpp:
            a, c = cur[i - bpp], prior[i - bpp]
        else:
            a = c = 0
        b = prior[i]
        p = a + b - c
        pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
        if pa <= pb and pa <= pc:
            pred = a
        elif pb <= pc:
            pred = b
        else:
            pred = c
        cur[i] = (cur[i] + pred) & 0xFF
    return cur


def _decode_file(path: Path, size: int, channels: int) -> np.ndarray:
    """uint8 (size, size, channels) from an image file; raises InvalidInput with the reason."""
    try:
        info = image_header_size(path)
    except OSError as exc:
        raise InvalidInput(f"cannot read {path}: {exc.strerror or exc}") from None
    if info is not None:
        fmt, w, h = info
        if w > MAX_SIDE or h > MAX_SIDE or w * h > MAX_PIXELS:
            raise InvalidInput(
                f"{path}: the {fmt.upper()} header declares {w}x{h} pixels, more than the "
                f"{MAX_SIDE}x{MAX_SIDE} accepted; not decoded"
            )
        if w == 0 or h == 0:
            raise InvalidInput(f"{path}: the {fmt.upper()} header declares an empty image")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InvalidInput(f"cannot read {path}: {exc.strerror or exc}") from None
    img = decode_png(data)  # the common case, without TensorFlow
    if img is not None:
        return conform_images(img[None], size=size, channels=channels, what=str(path))[0]
    tf = import_tensorflow()

    try:
        img = tf.io.decode_image(data, expand_animations=False).numpy()
    except Exception as exc:  # tf.errors.* for corrupt or unsupported data
        msg = str(getattr(exc, "message", "") or exc).strip().splitlines()
        reason = msg[0] if msg else type(exc).__name__
        raise InvalidInput(f"{path}: not a readable image ({reason[:120]})") from None
    if img.dtype != np.uint8:
        img = (img.astype(np.float32) / 257.0).round().astype(np.uint8)
    return conform_images(img[None], size=size, channels=channels, what=str(path))[0]


def read_image_file(path: str | Path, *, size: int = 28, color: str = "gray") -> np.ndarray:
    """One image file as uint8 (size, size, C), for ``query --image``."""
    path = Path(path)
    size, channels = _check_size(size), _channels(color)
    if not path.exists():
        raise InvalidInput(f"image file not found: {path}")
    if path.is_dir():
        raise InvalidInput(f"{path} is a folder, not an image file")
    return _decode_file(path, size, channels)


# --------------------------------------------------------------------------- sources


def _data_dir() -> Path:
    return Path(__file__).resolve().parent.parent / "data"


def _limit(n: int, limit: int | None) -> int:
    if limit is None:
        return n
    limit = int(limit)
    if limit < 1:
        raise InvalidInput(f"limit must be at least 1, got {limit}")
    return min(n, limit)


def _mnist(size: int, channels: int, limit: int | None) -> ImageSet:
    with np.load(_data_dir() / "mnist_5k.npz", allow_pickle=False) as d:
        x, y = d["x"], d["y"]
    n = _limit(len(x), limit)
    if n < len(x):  # the sample is sorted by label: take evenly spaced items, every class
        keep = np.unique(np.round(np.linspace(0, len(x) - 1, n)).astype(np.int64))
        x, y = x[keep], y[keep]
    images = conform_images(x[..., None], size=size, channels=channels)
    return ImageSet(images, [str(int(v)) for v in y], [None] * len(y))


def _mnist_full(size: int, channels: int, limit: int | None) -> ImageSet:
    try:
        keras = import_keras()
        (xa, ya), (xb, yb) = keras.datasets.mnist.load_data()
    except Exception as exc:
        raise InvalidInput(
            "mnist-full downloads MNIST through keras.datasets.mnist and needs the internet "
            f"(it failed: {type(exc).__name__}: {str(exc)[:120]}); offline, use the built-in "
            "sample 'mnist' (5,000 digits shipped in the package)"
        ) from None
    x, y = np.concatenate([xa, xb]), np.concatenate([ya, yb])
    n = _limit(len(x), limit)
    x, y = x[:n], y[:n]
    images = conform_images(x[..., None], size=size, channels=channels)
    return ImageSet(images, [str(int(v)) for v in y], [None] * n)


def _folder(root: Path, size: int, channels: int, limit: int | None) -> ImageSet:
    files = sorted(
        p
        for p in root.rglob("*")
        if p.suffix.lower() in IMAGE_EXTENSIONS
        and p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )
    if not files:
        raise InvalidInput(
            f"no image files in folder {root} (looked for "
            f"{', '.join(IMAGE_EXTENSIONS)}, in subfolders too)"
        )
    images, labels, sources, skipped = [], [], [], []
    n_max = _limit(len(files), limit)
    for p in files:
        if len(images) >= n_max:
            break
        try:
            images.append(_decode_file(p, size, channels))
        except InvalidInput as exc:
            reason = str(exc)
            prefix = f"{p}: "
            skipped.append((str(p), reason[len(prefix):] if reason.startswith(prefix) else reason))
            continue
        rel = p.relative_to(root).parts
        labels.append(rel[0] if len(rel) > 1 else None)
        sources.append(str(p))
    if skipped:
        lines = "\n".join(f"  {path}: {why}" for path, why in skipped)
        print(
            f"warning: skipped {len(skipped)} unreadable image file(s) in {root}:\n{lines}",
            file=sys.stderr,
        )
    if not images:
        raise InvalidInput(
            f"none of the {len(files)} image file(s) in {root} could be read "
            f"(first problem: {skipped[0][0]}: {skipped[0][1]})"
        )
    return ImageSet(np.stack(images), labels, sources, skipped)


def _array_file(path: Path, size: int, channels: int, limit: int | None) -> ImageSet:
    labels = None
    loaded = load_npy(path)
    try:
        if isinstance(loaded, np.lib.npyio.NpzFile):
            with loaded:
                keys = list(loaded.files)
                key = next((k for k in ("x", "images") if k in keys), None)
                if key is None:
                    if len(keys) != 1:
                        raise InvalidInput(
                            f"{path} holds arrays {keys}; name the images 'x' or 'images'"
                        )
                    key = keys[0]
                x = loaded[key]
                lkey = next((k for k in ("y", "labels") if k in keys and k != key), None)
                if lkey is not None:
                    labels = loaded[lkey]
        else:
            x = loaded
    except ValueError as exc:
        if "pickle" in str(exc).lower():
            raise InvalidInput(f"{path} holds pickled Python objects, which are never loaded") from None
        raise InvalidInput(f"{path}: {exc}") from None
    if x.ndim not in (3, 4):
        raise DimensionMismatch(
            f"{path}: images must be an array of shape (N, H, W) or (N, H, W, C), got {x.shape}"
        )
    if x.ndim == 3:
        x = x[..., None]
    if len(x) == 0:
        raise InvalidInput(f"{path} holds no images (shape {x.shape})")
    n = _limit(len(x), limit)
    x = x[:n]
    label_list: list[str | None]
    if labels is not None:
        labels = np.asarray(labels).reshape(-1)
        if len(labels) < n:
            raise InvalidInput(f"{path}: {len(labels)} labels for {len(x)} images")
        label_list = [label_text(v) for v in labels[:n]]
    else:
        label_list = [None] * n
    images = conform_images(x, size=size, channels=channels, what=f"images in {path}")
    return ImageSet(images, label_list, [None] * n)


def load_image_source(
    source: str | Path,
    *,
    size: int = 28,
    color: str = "gray",
    limit: int | None = None,
) -> ImageSet:
    """Images from a SOURCE of ``build images``, as uint8 (N, size, size, C).

    ``mnist``: the built-in 5,000 digits (with ``limit``, evenly spaced items so every class
    stays in); ``mnist-full``: keras.datasets.mnist, train then test (needs the internet);
    a folder of images (recursive; label = immediate subfolder, None at the top level;
    unreadable files are skipped and listed in a warning on stderr and in ``skipped``);
    a .npy / .npz file (N, H, W[, C]); .npz takes "x" or "images" (or its only array) and
    labels from "y" or "labels".
    """
    size, channels = _check_size(size), _channels(color)
    text = str(source)
    if text == "mnist":
        return _mnist(size, channels, limit)
    if text == "mnist-full":
        return _mnist_full(size, channels, limit)
    path = Path(source)
    if not path.exists():
        raise InvalidInput(
            f"image source {text!r} not found: give 'mnist', 'mnist-full', a folder of images, "
            "or a .npy/.npz file"
        )
    if path.is_dir():
        return _folder(path, size, channels, limit)
    suffix = path.suffix.lower()
    if suffix in (".npy", ".npz"):
        return _array_file(path, size, channels, limit)
    if suffix in IMAGE_EXTENSIONS:
        img = read_image_file(path, size=size, color=color)
        return ImageSet(img[None], [None], [str(path)])
    raise InvalidInput(
        f"cannot read images from {path}: expected a folder, a .npy/.npz file or an image file"
    )


# --------------------------------------------------------------------------- PNG output

# 5x7 bitmap font: each glyph is 7 rows of 5 pixels ('#' = ink). Lowercase letters are drawn
# with the uppercase glyphs, except the 'd' of "d=" (distance in captions).
_GLYPHS: dict[str, tuple[str, ...]] = {
    "0": (".###.", "#...#", "#..##", "#.#.#", "##..#", "#...#", ".###."),
    "1": ("..#..", ".##..", "..#..", "..#..", "..#..", "..#..", ".###."),
    "2": (".###.", "#...#", "....#", "...#.", "..#..", ".#...", "#####"),
    "3": ("#####", "...#.", "..#..", "...#.", "....#", "#...#", ".###."),
    "4": ("...#.", "..##.", ".#.#.", "#..#.", "#####", "...#.", "...#."),
    "5": ("#####", "#....", "####.", "....#", "....#", "#...#", ".###."),
    "6": ("..##.", ".#...", "#....", "####.", "#...#", "#...#", ".###."),
    "7": ("#####", "....#", "...#.", "..#..", ".#...", ".#...", ".#..."),
    "8": (".###.", "#...#", "#...#", ".###.", "#...#", "#...#", ".###."),
    "9": (".###.", "#...#", "#...#", ".####", "....#", "...#.", ".##.."),
    "A": (".###.", "#...#", "#...#", "#####", "#...#", "#...#", "#...#"),
    "B": ("####.", "#...#", "#...#", "####.", "#...#", "#...#", "####."),
    "C": (".###.", "#...#", "#....", "#....", "#....", "#...#", ".###."),
    "D": ("###..", "#..#.", "#...#", "#...#", "#...#", "#..#.", "###.."),
    "E": ("#####", "#....", "#....", "####.", "#....", "#....", "#####"),
    "F": ("#####", "#....", "#....", "####.", "#....", "#....", "#...."),
    "G": (".###.", "#...#", "#....", "#.###", "#...#", "#...#", ".####"),
    "H": ("#...#", "#...#", "#...#", "#####", "#...#", "#...#", "#...#"),
    "I": (".###.", "..#..", "..#..", "..#..", "..#..", "..#..", ".###."),
    "J": ("..###", "...#.", "...#.", "...#.", "...#.", "#..#.", ".##.."),
    "K": ("#...#", "#..#.", "#.#..", "##...", "#.#..", "#..#.", "#...#"),
    "L": ("#....", "#....", "#....", "#....", "#....", "#....", "#####"),
    "M": ("#...#", "##.##", "#.#.#", "#.#.#", "#...#", "#...#", "#...#"),
    "N": ("#...#", "#...#", "##..#", "#.#.#", "#..##", "#...#", "#...#"),
    "O": (".###.", "#...#", "#...#", "#...#", "#...#", "#...#", ".###."),
    "P": ("####.", "#...#", "#...#", "####.", "#....", "#....", "#...."),
    "Q": (".###.", "#...#", "#...#", "#...#", "#.#.#", "#..#.", ".##.#"),
    "R": ("####.", "#...#", "#...#", "####.", "#.#..", "#..#.", "#...#"),
    "S": (".####", "#....", "#....", ".###.", "....#", "....#", "####."),
    "T": ("#####", "..#..", "..#..", "..#..", "..#..", "..#..", "..#.."),
    "U": ("#...#", "#...#", "#...#", "#...#", "#...#", "#...#", ".###."),
    "V": ("#...#", "#...#", "#...#", "#...#", "#...#", ".#.#.", "..#.."),
    "W": ("#...#", "#...#", "#...#", "#.#.#", "#.#.#", "#.#.#", ".#.#."),
    "X": ("#...#", "#...#", ".#.#.", "..#..", ".#.#.", "#...#", "#...#"),
    "Y": ("#...#", "#...#", ".#.#.", "..#..", "..#..", "..#..", "..#.."),
    "Z": ("#####", "....#", "...#.", "..#..", ".#...", "#....", "#####"),
    "d": ("....#", "....#", ".##.#", "#..##", "#...#", "#...#", ".####"),
    ".": (".....", ".....", ".....", ".....", ".....", ".##..", ".##.."),
    ",": (".....", ".....", ".....", ".....", ".##..", "..#..", ".#..."),
    "=": (".....", ".....", "#####", ".....", "#####", ".....", "....."),
    "#": (".#.#.", ".#.#.", "#####", ".#.#.", "#####", ".#.#.", ".#.#."),
    ":": (".....", ".##..", ".##..", ".....", ".##..", ".##..", "....."),
    "-": (".....", ".....", ".....", "#####", ".....", ".....", "....."),
    "+": (".....", "..#..", "..#..", "#####", "..#..", "..#..", "....."),
    "_": (".....", ".....", ".....", ".....", ".....", ".....", "#####"),
    "/": ("....#", "....#", "...#.", "..#..", ".#...", "#....", "#...."),
    "(": ("...#.", "..#..", ".#...", ".#...", ".#...", "..#..", "...#."),
    ")": (".#...", "..#..", "...#.", "...#.", "...#.", "..#..", ".#..."),
    "@": (".###.", "#...#", "#.###", "#.#.#", "#.###", "#....", ".###."),
    " ": (".....",) * 7,
    "?": (".###.", "#...#", "....#", "...#.", "..#..", ".....", "..#.."),
}
_FONT = {
    ch: np.array([[c == "#" for c in row] for row in rows], dtype=bool)
    for ch, rows in _GLYPHS.items()
}
_GW, _GH = 5, 7  # glyph size in font pixels; advance is _GW + 1


def _glyph(ch: str, following: str = "") -> np.ndarray:
    if ch == "d" and following == "=":  # "d=0.43": the distance keeps its lowercase d
        return _FONT["d"]
    return _FONT.get(ch.upper(), _FONT["?"])


def _text_width(text: str, scale: int) -> int:
    return max(0, len(text) * (_GW + 1) - 1) * scale


def _draw_text(canvas: np.ndarray, text: str, x: int, y: int, scale: int,
               color: tuple[int, int, int] = (0, 0, 0)) -> None:
    for i, ch in enumerate(text):
        g = np.kron(_glyph(ch, text[i + 1 : i + 2]), np.ones((scale, scale), dtype=bool))
        x0 = x + i * (_GW + 1) * scale
        region = canvas[y : y + g.shape[0], x0 : x0 + g.shape[1]]
        if region.shape[:2] != g.shape:
            g = g[: region.shape[0], : region.shape[1]]
        region[g] = color


def _wrap(text: str, max_chars: int) -> list[str]:
    """Split on spaces into lines of at most ``max_chars`` (long words are cut)."""
    lines: list[str] = []
    cur = ""
    for word in text.split():
        while len(word) > max_chars:
            if cur:
                lines.append(cur)
                cur = ""
            lines.append(word[:max_chars])
            word = word[max_chars:]
        if not cur:
            cur = word
        elif len(cur) + 1 + len(word) <= max_chars:
            cur += " " + word
        else:
            lines.append(cur)
            cur = word
    if cur:
        lines.append(cur)
    return lines or [""]


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def encode_png(rgb: np.ndarray) -> bytes:
    """uint8 (H, W, 3) or (H, W) as PNG bytes (8-bit RGB or gray, no filtering, zlib level 9)."""
    img = np.ascontiguousarray(to_uint8(rgb, "picture"))
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[..., 0]
    if img.ndim == 2:
        color_type = 0
    elif img.ndim == 3 and img.shape[2] == 3:
        color_type = 2
    else:
        raise DimensionMismatch(f"a PNG needs (H, W) or (H, W, 3) pixels, got {img.shape}")
    h, w = img.shape[:2]
    rows = img.reshape(h, -1)
    raw = np.concatenate([np.zeros((h, 1), np.uint8), rows], axis=1).tobytes()
    ihdr = struct.pack(">IIBBBBB", w, h, 8, color_type, 0, 0, 0)
    return (
        _PNG_SIGNATURE
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", zlib.compress(raw, 9))
        + _png_chunk(b"IEND", b"")
    )


def write_grid_png(
    path: str | Path,
    tiles: Sequence[np.ndarray],
    captions: Sequence[str],
    *,
    title: str | None = None,
    columns: int = 6,
) -> Path:
    """Write ``tiles`` (uint8 (H, W) or (H, W, C); the query first, then its neighbours) as one
    PNG: tiles upscaled with nearest-neighbour, up to ``columns`` a row, a caption under
    each (wrapped on spaces), an optional title on top, white background; the first tile
    framed in blue. Returns the path written."""
    if not tiles:
        raise InvalidInput("no tiles to draw")
    if len(captions) != len(tiles):
        raise InvalidInput(f"{len(captions)} captions for {len(tiles)} tiles")
    rgb_tiles = []
    for t in tiles:
        t = to_uint8(t, "tile")
        if t.ndim == 2:
            t = t[..., None]
        if t.ndim != 3 or t.shape[2] not in (1, 2, 3, 4):
            raise DimensionMismatch(f"a tile must be (H, W) or (H, W, C), got {t.shape}")
        rgb_tiles.append(_convert_channels(t[None], 3)[0])
    th = max(t.shape[0] for t in rgb_tiles)
    tw = max(t.shape[1] for t in rgb_tiles)
    scale = max(1, int(np.ceil(120 / max(th, tw)))) if max(th, tw) < 120 else 1
    cell_w, cell_h = tw * scale, th * scale
    font = 2
    cell_w = max(cell_w, 10 * (_GW + 1) * font)  # room for ~10 characters a line
    max_chars = max(1, (cell_w + font) // ((_GW + 1) * font))
    wrapped = [_wrap(str(c), max_chars) for c in captions]
    line_h = (_GH + 3) * font
    cap_h = max(len(w) for w in wrapped) * line_h + 2 * font
    pad, gap = 12, 12
    ncol = max(1, min(columns, len(tiles)))
    nrow = int(np.ceil(len(tiles) / ncol))
    title_lines = []
    if title:
        width_chars = (ncol * cell_w + (ncol - 1) * gap) // ((_GW + 1) * font)
        title_lines = _wrap(title, max(1, width_chars))
    title_h = len(title_lines) * line_h + (pad // 2 if title_lines else 0)
    W = 2 * pad + ncol * cell_w + (ncol - 1) * gap
    H = 2 * pad + title_h + nrow * (cell_h + 4 + cap_h) + (nrow - 1) * gap
    canvas = np.full((H, W, 3), 255, np.uint8)
    for i, line in enumerate(title_lines):
        _draw_text(canvas, line, pad, pad + i * line_h, font)
    for i, (t, lines) in enumerate(zip(rgb_tiles, wrapped)):
        r, c = divmod(i, ncol)
        x0 = pad + c * (cell_w + gap)
        y0 = pad + title_h + r * (cell_h + 4 + cap_h + gap)
        big = np.repeat(np.repeat(t, scale, axis=0), scale, axis=1)
        ox = x0 + (cell_w - big.shape[1]) // 2
        oy = y0 + (cell_h - big.shape[0]) // 2
        canvas[oy : oy + big.shape[0], ox : ox + big.shape[1]] = big
        frame = (40, 90, 220) if i == 0 else (160, 160, 160)
        b = 3 if i == 0 else 1
        canvas[oy - b : oy, ox - b : ox + big.shape[1] + b] = frame
        canvas[oy + big.shape[0] : oy + big.shape[0] + b, ox - b : ox + big.shape[1] + b] = frame
        canvas[oy - b : oy + big.shape[0] + b, ox - b : ox] = frame
        canvas[oy - b : oy + big.shape[0] + b, ox + big.shape[1] : ox + big.shape[1] + b] = frame
        for j, line in enumerate(lines):
            lx = x0 + (cell_w - _text_width(line, font)) // 2
            _draw_text(canvas, line, max(x0, lx), y0 + cell_h + 4 + font + j * line_h, font)
    path = Path(path)
    try:
        path.write_bytes(encode_png(canvas))
    except OSError as exc:
        raise InvalidInput(f"cannot write {path}: {exc.strerror or exc}") from None
    return path

"""Image files without an imaging library: header sizes, and the PNG codec.

* :func:`image_header_size` reads width and height from the first bytes of a PNG, GIF, BMP
  or JPEG file, so absurd dimensions are refused *before* anything is decoded.
* :func:`decode_png` decodes 8-bit non-interlaced PNGs with zlib + numpy (the common case,
  without importing TensorFlow); anything else returns None and is left to TensorFlow.
* :func:`encode_png` writes 8-bit gray or RGB PNGs with numpy + zlib.

numpy and the standard library only.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np

from latentsearch.errors import DimensionMismatch
from latentsearch.io.pixels import to_uint8

__all__ = [
    "MAX_SIDE",
    "MAX_PIXELS",
    "PNG_SIGNATURE",
    "PNG_PYTHON_FILTER_BYTES",
    "image_header_size",
    "decode_png",
    "encode_png",
]

#: largest width or height accepted from an image header (decompression-bomb guard)
MAX_SIDE = 10_000
#: largest width * height accepted
MAX_PIXELS = 50_000_000

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: channels per pixel of each 8-bit PNG colour type (3, palette, is expanded to RGB / RGBA)
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
#: bytes of rows filtered with Average or Paeth (undone byte by byte in Python) above which
#: a PNG is left to TensorFlow's decoder (~0.1 s of Python)
PNG_PYTHON_FILTER_BYTES = 1 << 17


# --------------------------------------------------------------------------- headers


def image_header_size(path: Path) -> tuple[str, int, int] | None:
    """(format, width, height) read from the first bytes of a PNG/GIF/BMP/JPEG file, without
    decoding it; None when the header is not recognised."""
    with open(path, "rb") as f:
        head = f.read(32)
        if head[:8] == PNG_SIGNATURE and head[12:16] == b"IHDR" and len(head) >= 24:
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


def _jpeg_size(f: BinaryIO) -> tuple[str, int, int] | None:
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
    if data[:8] != PNG_SIGNATURE:
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


# --------------------------------------------------------------------------- PNG output


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
        PNG_SIGNATURE
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", zlib.compress(raw, 9))
        + _png_chunk(b"IEND", b"")
    )


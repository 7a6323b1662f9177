"""The pictures: the query grid of ``query --grid`` and the plot of ``evaluate --plot``.

Drawn with numpy alone (a 5x7 bitmap font, dots, bars) and written with the PNG encoder of
:mod:`latentsearch.io.png`, so pictures add no dependency.

* :func:`write_query_grid` / :func:`write_grid_png`: the query and its neighbours as tiles,
  a caption under each, the query framed in blue.
* :func:`write_report_png`: the latents projected on their first two principal components,
  one colour per label, beside the share of same-label neighbours in each distance band,
  with chance drawn as a dashed line.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from latentsearch.errors import DimensionMismatch, InvalidInput
from latentsearch.io.pixels import convert_channels, to_uint8
from latentsearch.io.png import encode_png
from latentsearch.report.evaluate import CURVE_K, Report, pca
from latentsearch.types import Hit

if TYPE_CHECKING:  # annotations only
    from latentsearch.collection import Collection

__all__ = ["write_grid_png", "write_query_grid", "write_report_png"]


# --------------------------------------------------------------------------- bitmap font

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



# --------------------------------------------------------------------------- query grid


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
        rgb_tiles.append(convert_channels(t[None], 3)[0])
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


def write_query_grid(
    col: Collection, path: str | os.PathLike, hits: list[Hit], *,
    query_tile: np.ndarray | None = None, query_id: int | None = None,
) -> Path:
    """Write the query (an image, or a stored item by id) and ``hits`` as tiles in one PNG."""
    if col.modality != "image":
        raise InvalidInput(f"--grid draws images; collection {col.name} holds {col.modality}")
    if query_tile is None:
        if query_id is None:
            raise InvalidInput("--grid needs a query image or a stored item (--id)")
        query_tile = col.images([query_id])[0]
        label = col.get([query_id])[0].label
        first = f"query #{query_id}" + (f" L={label}" if label is not None else "")
    else:
        first = "query"
    tiles = [query_tile, *col.images([h.id for h in hits])]
    captions = [first] + [
        f"#{h.id} d={h.distance:.3f}" + (f" L={h.label}" if h.label is not None else "")
        for h in hits
    ]
    title = f"{col.name}: {len(hits)} nearest ({col.metric})"
    return write_grid_png(path, tiles, captions, title=title)


# --------------------------------------------------------------------------- evaluate plot

# Tableau-10 palette, then grey for the rest.
_PALETTE = np.array([
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
], dtype=np.uint8)
_OTHER = np.array((190, 190, 190), dtype=np.uint8)
_PLOT_SCALE = 2
_LINE = 9 * _PLOT_SCALE


def _dot(canvas: np.ndarray, x: int, y: int, color: np.ndarray, r: int = 2) -> None:
    canvas[max(0, y - r): y + r + 1, max(0, x - r): x + r + 1] = color


def _frame(canvas: np.ndarray, x0: int, y0: int, x1: int, y1: int,
           color: tuple[int, int, int] = (90, 90, 90)) -> None:
    canvas[y0, x0:x1 + 1] = color
    canvas[y1, x0:x1 + 1] = color
    canvas[y0:y1 + 1, x0] = color
    canvas[y0:y1 + 1, x1] = color


def write_report_png(path: str | os.PathLike, report: Report, vectors: np.ndarray,
                     labels: list[str | None], *, max_points: int = 3000, seed: int = 0) -> Path:
    """Draw the two panels for ``report`` and write them as one PNG; ``labels`` are aligned
    with ``vectors`` (None: unlabelled, drawn grey)."""
    rng = np.random.default_rng(seed)
    rows = rng.choice(len(vectors), min(max_points, len(vectors)), replace=False)
    xy = pca(np.asarray(vectors, dtype=np.float64)[rows], 2)  # the first two components
    labs = [labels[r] for r in rows]
    names = sorted({lab for lab in labs if lab is not None}, key=_natural)
    colors = {name: (_PALETTE[i] if i < len(_PALETTE) else _OTHER) for i, name in enumerate(names)}

    side, pad, legend_w, chart_w = 520, 40, 130, 520
    W = pad + side + legend_w + pad + chart_w + pad
    H = pad + _LINE * 2 + side + pad + _LINE * 2
    canvas = np.full((H, W, 3), 255, np.uint8)
    _draw_text(canvas, f"{report.collection}: latents (PCA 2-D) and agreement by distance",
               pad, pad // 2, _PLOT_SCALE)

    # scatter
    x0, y0 = pad, pad + _LINE * 2
    _frame(canvas, x0, y0, x0 + side, y0 + side)
    lo, hi = xy.min(0), xy.max(0)
    span = np.where(hi - lo == 0, 1, hi - lo)
    pix = ((xy - lo) / span * (side - 16) + 8).astype(int)
    for (px, py), lab in zip(pix, labs):
        _dot(canvas, x0 + px, y0 + side - py, colors.get(lab, _OTHER))
    _draw_text(canvas, "PC 1", x0 + side // 2 - 12, y0 + side + 6, _PLOT_SCALE, (90, 90, 90))
    lx = x0 + side + 14
    for i, name in enumerate(names[:24]):
        ly = y0 + 4 + i * _LINE
        canvas[ly: ly + 10, lx: lx + 10] = colors[name]
        _draw_text(canvas, str(name)[:12], lx + 16, ly - 2, _PLOT_SCALE)
    if len(names) > 24:
        _draw_text(canvas, f"+{len(names) - 24} more", lx, y0 + 4 + 24 * _LINE, _PLOT_SCALE)

    # agreement by distance band
    cx0 = pad + side + legend_w + pad
    cy0, cy1 = y0, y0 + side
    _frame(canvas, cx0, cy0, cx0 + chart_w, cy1)
    bands = report.agreement_by_distance
    if bands:
        bw = (chart_w - 20) // len(bands)
        for i, band in enumerate(bands):
            h = int(round(band["agreement"] * (side - 20)))
            bx = cx0 + 10 + i * bw
            canvas[cy1 - h: cy1, bx + 3: bx + bw - 3] = _PALETTE[0]
            txt = f"{band['agreement']:.2f}"
            _draw_text(canvas, txt, bx + (bw - _text_width(txt, 1)) // 2, cy1 - h - 10, 1)
            tick = f"{band['max_distance']:.2g}"
            _draw_text(canvas, tick, bx + (bw - _text_width(tick, 1)) // 2, cy1 + 6, 1, (90, 90, 90))
        chance = report.baselines.get("chance", {}).get("agreement")
        if chance is not None:
            cy = cy1 - int(round(chance * (side - 20)))
            for dx in range(cx0 + 1, cx0 + chart_w, 10):
                canvas[cy: cy + 2, dx: dx + 5] = _PALETTE[3]
            _draw_text(canvas, "chance", cx0 + 6, cy - 12, 1, _PALETTE[3])
        _draw_text(canvas, f"same-label share of the {CURVE_K} nearest of each query, by distance band",
                   cx0, y0 - _LINE + 2, 1)
        _draw_text(canvas, "distance up to, nearest band first", cx0 + 10, cy1 + 20, _PLOT_SCALE, (90, 90, 90))
    footer = f"agreement@{report.k} {report.agreement}" if report.agreement is not None else ""
    for name, row in report.baselines.items():
        footer += f"   {name} {row['agreement']}"
    _draw_text(canvas, footer, pad, H - pad // 2 - 8, _PLOT_SCALE)
    path = Path(path)
    path.write_bytes(encode_png(canvas))
    return path


def _natural(text: str) -> tuple[int, int | str]:
    return (0, int(text)) if text.isdigit() else (1, text)

"""``evaluate --plot``: the latent space in 2-D coloured by label, and agreement by distance.

Drawn with numpy alone (dots, bars, a bitmap font and a zlib PNG writer), so plotting adds
no dependency. Left panel: the latents projected on their first two principal components,
one colour per label, with a legend. Right panel: the share of same-label neighbours in
each distance band, nearest first, with chance drawn as a dashed line.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from latentsearch.report.evaluate import CURVE_K, _pca
from latentsearch.io.images import _draw_text, _text_width, encode_png

# Tableau-10 palette, then grey for the rest.
PALETTE = np.array([
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
], dtype=np.uint8)
OTHER = np.array((190, 190, 190), dtype=np.uint8)
FONT = 2
LINE = 9 * FONT


def _dot(canvas: np.ndarray, x: int, y: int, color, r: int = 2) -> None:
    canvas[max(0, y - r): y + r + 1, max(0, x - r): x + r + 1] = color


def _frame(canvas, x0, y0, x1, y1, color=(90, 90, 90)) -> None:
    canvas[y0, x0:x1 + 1] = color
    canvas[y1, x0:x1 + 1] = color
    canvas[y0:y1 + 1, x0] = color
    canvas[y0:y1 + 1, x1] = color


def write_report_png(path: str | os.PathLike, report, vectors: np.ndarray,
                     labels: list[str | None], *, max_points: int = 3000, seed: int = 0) -> Path:
    """Draw the two panels for ``report`` (an evaluate Report) and write them as one PNG."""
    rng = np.random.default_rng(seed)
    rows = rng.choice(len(vectors), min(max_points, len(vectors)), replace=False)
    xy = _pca(np.asarray(vectors, dtype=np.float64)[rows], 2)  # the first two components
    labs = [labels[r] for r in rows]
    names = sorted({lab for lab in labs if lab is not None}, key=_natural)
    colors = {name: (PALETTE[i] if i < len(PALETTE) else OTHER) for i, name in enumerate(names)}

    side, pad, legend_w, chart_w = 520, 40, 130, 520
    W = pad + side + legend_w + pad + chart_w + pad
    H = pad + LINE * 2 + side + pad + LINE * 2
    canvas = np.full((H, W, 3), 255, np.uint8)
    _draw_text(canvas, f"{report.collection}: latents (PCA 2-D) and agreement by distance",
               pad, pad // 2, FONT)

    # scatter
    x0, y0 = pad, pad + LINE * 2
    _frame(canvas, x0, y0, x0 + side, y0 + side)
    lo, hi = xy.min(0), xy.max(0)
    span = np.where(hi - lo == 0, 1, hi - lo)
    pix = ((xy - lo) / span * (side - 16) + 8).astype(int)
    for (px, py), lab in zip(pix, labs):
        _dot(canvas, x0 + px, y0 + side - py, colors.get(lab, OTHER))
    _draw_text(canvas, "PC 1", x0 + side // 2 - 12, y0 + side + 6, FONT, (90, 90, 90))
    lx = x0 + side + 14
    for i, name in enumerate(names[:24]):
        ly = y0 + 4 + i * LINE
        canvas[ly: ly + 10, lx: lx + 10] = colors[name]
        _draw_text(canvas, str(name)[:12], lx + 16, ly - 2, FONT)
    if len(names) > 24:
        _draw_text(canvas, f"+{len(names) - 24} more", lx, y0 + 4 + 24 * LINE, FONT)

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
            canvas[cy1 - h: cy1, bx + 3: bx + bw - 3] = PALETTE[0]
            txt = f"{band['agreement']:.2f}"
            _draw_text(canvas, txt, bx + (bw - _text_width(txt, 1)) // 2, cy1 - h - 10, 1)
            tick = f"{band['max_distance']:.2g}"
            _draw_text(canvas, tick, bx + (bw - _text_width(tick, 1)) // 2, cy1 + 6, 1, (90, 90, 90))
        chance = report.baselines.get("chance", {}).get("agreement")
        if chance is not None:
            cy = cy1 - int(round(chance * (side - 20)))
            for dx in range(cx0 + 1, cx0 + chart_w, 10):
                canvas[cy: cy + 2, dx: dx + 5] = PALETTE[3]
            _draw_text(canvas, "chance", cx0 + 6, cy - 12, 1, PALETTE[3])
        _draw_text(canvas, f"same-label share of the {CURVE_K} nearest of each query, by distance band",
                   cx0, y0 - LINE + 2, 1)
        _draw_text(canvas, "distance up to, nearest band first", cx0 + 10, cy1 + 20, FONT, (90, 90, 90))
    footer = f"agreement@{report.k} {report.agreement}" if report.agreement is not None else ""
    for name, row in report.baselines.items():
        footer += f"   {name} {row['agreement']}"
    _draw_text(canvas, footer, pad, H - pad // 2 - 8, FONT)
    path = Path(path)
    path.write_bytes(encode_png(canvas))
    return path


def _natural(text: str):
    return (0, int(text)) if text.isdigit() else (1, text)

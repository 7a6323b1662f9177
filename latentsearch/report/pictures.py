"""The pictures: the query grid of ``query --grid`` and the plot of ``evaluate --plot``.

* :func:`write_query_grid` / :func:`write_grid`: the query and its neighbours as tiles, drawn
  with Pillow (``ImageDraw`` and the TrueType font Pillow ships): the query framed in blue,
  each neighbour framed green when it carries the query's label and red when not, a caption
  ``#id  label  d=0.093`` under each on one or two lines, wrapped between words.
* :func:`write_report_png`: matplotlib (the Agg canvas, imported only here): a t-SNE map of
  the latents coloured by label (PCA of 32-d latents is colour soup; t-SNE keeps the classes
  the agreement says are separate visibly apart), beside the share of same-label
  neighbours in each distance band with chance as a named line.

Both write PNG, or JPEG / WebP when the path ends in .jpg / .jpeg / .webp; any other suffix
is refused before anything is drawn.
"""

from __future__ import annotations

import math
import os
import re
import textwrap
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from latentsearch.errors import DimensionMismatch, InvalidInput
from latentsearch.io.pixels import convert_channels, to_uint8
from latentsearch.io.png import picture_format, save_picture
from latentsearch.report.evaluate import CURVE_K, Report
from latentsearch.types import Hit

if TYPE_CHECKING:  # annotations only
    from latentsearch.collection import Collection

__all__ = ["write_grid", "write_query_grid", "report_figure", "write_report_png",
           "check_plot_path", "natural_key", "wrap_words", "MAP_POINTS", "PLOT_EXTRA"]

#: what ``evaluate --plot`` needs beyond the engine (the ``plot`` extra)
PLOT_EXTRA = ("matplotlib", "sklearn")
#: the most latents drawn on the map (a seeded sample beyond): t-SNE time grows with them
MAP_POINTS = 2500

# --------------------------------------------------------------------------- query grid

_INK = (33, 33, 33)
_MUTED = (110, 110, 110)
_QUERY = (40, 90, 220)
_SAME = (46, 160, 67)
_OTHER = (214, 60, 50)
_PLAIN = (170, 170, 170)
#: tiles are shown at least this many pixels a side (whole-factor nearest-neighbour zoom)
_TILE_MIN = 140
#: and at most this many (larger images are shrunk)
_TILE_MAX = 192
_CAPTION_SIZES = (18, 17, 16, 15)  # then long labels are shortened
_ELLIPSIS = "\u2026"


def _tile_image(pixels: np.ndarray) -> Image.Image:
    """uint8 (H, W) / (H, W, C) as an RGB Pillow image of a readable size."""
    t = to_uint8(pixels, "tile")
    if t.ndim == 2:
        t = t[..., None]
    if t.ndim != 3 or t.shape[2] not in (1, 2, 3, 4):
        raise DimensionMismatch(f"a tile must be (H, W) or (H, W, C), got {t.shape}")
    img = Image.fromarray(convert_channels(t[None], 3)[0])
    side = max(img.size)
    if side < _TILE_MIN:
        factor = math.ceil(_TILE_MIN / side)
        return img.resize((img.width * factor, img.height * factor), Image.Resampling.NEAREST)
    if side > _TILE_MAX:
        scale = _TILE_MAX / side
        return img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))),
                          Image.Resampling.LANCZOS)
    return img


def wrap_words(text: str, font: ImageFont.FreeTypeFont, width: int) -> list[str]:
    """``text`` in lines no wider than ``width`` pixels, broken only between words (a word
    wider than the line stays whole on its own line)."""
    if font.getlength(text) <= width:
        return [text]
    for chars in range(len(text), 0, -1):
        lines = textwrap.wrap(text, chars, break_long_words=False, break_on_hyphens=False)
        if all(font.getlength(line) <= width for line in lines) or chars == 1:
            return lines
    return [text]


def _caption_lines(fields: Sequence[str], font: ImageFont.FreeTypeFont, width: int,
                   max_lines: int = 2) -> list[str] | None:
    """The caption fields (joined by two spaces) wrapped to ``max_lines``; None if they do not
    fit."""
    lines = wrap_words("  ".join(f for f in fields if f), font, width)
    if len(lines) <= max_lines and all(font.getlength(line) <= width for line in lines):
        return lines
    return None


def _elided(fields: list[str], middle: int, font: ImageFont.FreeTypeFont,
            width: int) -> list[str]:
    """Shorten ``fields[middle]`` (the label) from its end, marked with an ellipsis, until
    the caption fits on two lines; the id and the distance stay whole."""
    label = fields[middle]
    for cut in range(len(label) - 1, 0, -1):
        trial = fields[:middle] + [label[:cut].rstrip() + _ELLIPSIS] + fields[middle + 1:]
        lines = _caption_lines(trial, font, width)
        if lines is not None:
            return lines
    return wrap_words("  ".join(f for i, f in enumerate(fields) if i != middle), font, width)[:2]


def write_grid(
    path: str | os.PathLike,
    tiles: Sequence[np.ndarray],
    captions: Sequence[Sequence[str] | str],
    *,
    title: str | None = None,
    subtitle: str | None = None,
    frames: Sequence[tuple[int, int, int] | None] | None = None,
    columns: int | None = None,
) -> Path:
    """Write ``tiles`` (uint8 (H, W) or (H, W, C); the query first, then its neighbours) as
    one picture: the query on the left, the neighbours in rows of ``columns`` beside it,
    each with its caption (a string, or fields such as ``["#12", "7", "d=0.093"]``; a long
    middle field is shortened with an ellipsis to keep two lines), an optional title and
    subtitle above, and a coloured frame per tile (``frames``; the query's defaults to blue).
    Returns the path written."""
    picture_format(path)  # refuse the suffix before drawing
    if not tiles:
        raise InvalidInput("no tiles to draw")
    if len(captions) != len(tiles):
        raise InvalidInput(f"{len(captions)} captions for {len(tiles)} tiles")
    fields = [[c] if isinstance(c, str) else [str(f) for f in c] for c in captions]
    frames = list(frames) if frames is not None else [None] * len(tiles)
    frames[0] = frames[0] or _QUERY
    images = [_tile_image(t) for t in tiles]
    cell_w = max(max(img.width for img in images), 150)
    tile_h = max(img.height for img in images)

    font = None
    for size in _CAPTION_SIZES:  # the largest size at which every caption fits two lines
        font = ImageFont.load_default(size=size)
        if all(_caption_lines(f, font, cell_w) is not None for f in fields):
            break
    wrapped = [_caption_lines(f, font, cell_w) or _elided(f, len(f) // 2, font, cell_w)
               for f in fields]
    ascent, descent = font.getmetrics()
    line_h = ascent + descent + 2
    cell_h = tile_h + 8 + 2 * line_h

    n = len(images) - 1
    ncol = columns or min(max(n, 1), max(4, math.ceil(math.sqrt(2 * max(n, 1)))))
    nrow = max(1, math.ceil(n / ncol))
    pad, gap, split = 24, 16, 40
    title_font = ImageFont.load_default(size=26)
    sub_font = ImageFont.load_default(size=17)
    width = 2 * pad + cell_w + split + ncol * cell_w + (ncol - 1) * gap
    head = []
    for text, f, color in ((title, title_font, _INK), (subtitle, sub_font, _MUTED)):
        if text:
            head += [(line, f, color) for line in wrap_words(text, f, width - 2 * pad)]
    head_h = sum(sum(f.getmetrics()) + 6 for _, f, _ in head) + (12 if head else 0)
    height = 2 * pad + head_h + nrow * cell_h + (nrow - 1) * gap

    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    y = pad
    for line, f, color in head:
        draw.text((pad, y), line, font=f, fill=color)
        y += sum(f.getmetrics()) + 6
    top = pad + head_h

    def place(i: int, x0: int, y0: int) -> None:
        img = images[i]
        ox, oy = x0 + (cell_w - img.width) // 2, y0 + (tile_h - img.height) // 2
        canvas.paste(img, (ox, oy))
        color = frames[i] or _PLAIN
        b = 1 if frames[i] is None else 3
        draw.rectangle((ox - b, oy - b, ox + img.width + b - 1, oy + img.height + b - 1),
                       outline=color, width=b)
        for j, line in enumerate(wrapped[i]):
            lx = x0 + (cell_w - font.getlength(line)) / 2
            draw.text((lx, y0 + tile_h + 8 + j * line_h), line, font=font,
                      fill=_INK if j == 0 else _MUTED)

    place(0, pad, top)
    sx = pad + cell_w + split // 2
    draw.line((sx, top, sx, height - pad), fill=(220, 220, 220), width=1)
    for i in range(1, len(images)):
        r, c = divmod(i - 1, ncol)
        place(i, pad + cell_w + split + c * (cell_w + gap), top + r * (cell_h + gap))
    return save_picture(canvas, path)


def write_query_grid(
    col: Collection, path: str | os.PathLike, hits: list[Hit], *,
    query_tile: np.ndarray | None = None, query_id: int | None = None,
    query_name: str | None = None,
) -> Path:
    """Write the query (an image, or a stored item by id) and ``hits`` as one picture."""
    picture_format(path)
    if col.modality != "image":
        raise InvalidInput(f"--grid draws images; collection {col.name} holds {col.modality}")
    label = None
    if query_tile is None:
        if query_id is None:
            raise InvalidInput("--grid needs a query image or a stored item (--id)")
        query_tile = col.images([query_id])[0]
        label = col.get([query_id])[0].label
        first = ["query", f"#{query_id}", label or ""]
        asked = f"item #{query_id}" + (f" (label {label})" if label is not None else "")
    else:
        first = ["query", query_name or ""]
        asked = query_name or "the query image"
    tiles = [query_tile, *col.images([h.id for h in hits])]
    captions = [first] + [[f"#{h.id}", h.label or "", f"d={h.distance:.3f}"] for h in hits]
    frames: list[tuple[int, int, int] | None] = [_QUERY]
    for h in hits:
        if label is None or h.label is None:
            frames.append(None)
        else:
            frames.append(_SAME if h.label == label else _OTHER)
    title = f"{col.name}: the {len(hits)} nearest to {asked}"
    subtitle = f"{col.metric} distance d, nearest first"
    if label is not None:
        same = sum(h.label == label for h in hits)
        subtitle += f"; {same} of {len(hits)} carry the query's label (green frame)"
        if same < len(hits):
            subtitle += f", {len(hits) - same} another (red)"
    return write_grid(path, tiles, captions, title=title, subtitle=subtitle, frames=frames)


# --------------------------------------------------------------------------- evaluate plot


def natural_key(text: str) -> tuple:
    """Sort key putting numbers in numeric order: "2" before "10", "class-2" before
    "class-10", numeric labels before the others."""
    try:
        return (0, float(text), "")
    except ValueError:
        parts = re.split(r"(\d+)", text)
        return (1, 0.0, tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in parts))


def check_plot_path(path: str | os.PathLike) -> str:
    """The picture format of ``path`` when a plot can be written there: its suffix is one
    :func:`~latentsearch.io.png.picture_format` knows and the ``plot`` extra is installed
    (checked without importing it); InvalidInput otherwise."""
    import importlib.util

    fmt = picture_format(path)
    missing = [m for m in PLOT_EXTRA if importlib.util.find_spec(m) is None]
    if missing:
        raise InvalidInput(
            f"--plot needs matplotlib and scikit-learn ({', '.join(missing)} not installed): "
            "pip install 'latentsearch[plot]'"
        )
    return fmt


def _tsne(points: np.ndarray, seed: int) -> np.ndarray:
    """A 2-D t-SNE map of ``points`` (scikit-learn, from the ``plot`` extra), on one thread:
    on a busy 2-core machine its OpenMP threads took 4x the CPU time of one (35 s against
    8 s for 2,500 latents of mnist)."""
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    n = len(points)
    if n < 5:  # too few for t-SNE: the first two coordinates
        out = np.zeros((n, 2))
        out[:, : min(2, points.shape[1])] = points[:, :2]
        return out
    perplexity = float(min(30.0, (n - 1) / 3))
    tsne = TSNE(2, perplexity=perplexity, init="pca", learning_rate="auto", random_state=seed,
                n_jobs=1)
    with threadpool_limits(1):
        return tsne.fit_transform(points.astype(np.float32))


def _palette(names: list[str], counts: Counter) -> dict[str, tuple]:
    """A colour per label: the 20 most frequent get distinct colours, the rest one grey."""
    from matplotlib import colormaps

    coloured = sorted(sorted(names, key=lambda s: -counts[s])[:20], key=natural_key)
    cmap = colormaps["tab10" if len(coloured) <= 10 else "tab20"]
    return {name: cmap(i) for i, name in enumerate(coloured)}


def _draw_map(ax, xy: np.ndarray, labs: list[str | None], n: int, dim: int) -> None:
    """The latent map: one colour per label, each label's name at its median point."""
    counts = Counter(lab for lab in labs if lab is not None)
    colours = _palette(list(counts), counts)
    dot = float(np.clip(12_000 / max(len(labs), 1), 5, 30))
    grey = [i for i, lab in enumerate(labs) if lab not in colours]
    if grey:
        others = len({labs[i] for i in grey if labs[i] is not None})
        name = "unlabelled" if others == 0 else f"{others} other labels"
        ax.scatter(xy[grey, 0], xy[grey, 1], s=dot, color="0.75", linewidths=0, label=name)
    for name, colour in colours.items():
        idx = [i for i, lab in enumerate(labs) if lab == name]
        ax.scatter(xy[idx, 0], xy[idx, 1], s=dot, color=colour, linewidths=0, label=name)
        if len(colours) <= 12:  # names on the map while they do not hide it
            cx, cy = np.median(xy[idx], axis=0)
            ax.annotate(name, (cx, cy), ha="center", va="center", fontsize=11,
                        fontweight="bold", color="black",
                        bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": colour,
                              "alpha": 0.75})
    ax.set_title(f"t-SNE map of {len(labs):,} of the {n:,} latents ({dim}-d),\n"
                 "one colour per label", fontsize=11)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlabel("t-SNE 1 (neighbourhoods kept, distances between clusters not)")
    ax.set_ylabel("t-SNE 2")
    if colours or grey:  # beside the map, in two columns past 12 labels
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0),
                  ncol=1 if len(colours) <= 12 else 2, fontsize=9,
                  markerscale=max(1.0, 18 / dot), frameon=False, title="label",
                  handletextpad=0.2, columnspacing=0.8)


def _draw_bands(ax, report: Report, curve_k: int) -> None:
    """Agreement by distance band, chance as a named line, the agreement@k figures."""
    bands = report.agreement_by_distance
    if not bands:
        ax.set_axis_off()
        why = report.notes[0] if report.notes else "no labels"
        ax.text(0.5, 0.5, f"{why}\n\nrecall@{report.k} of the index against exact search: "
                f"{report.recall_vs_exact:.3f}", ha="center", va="center", wrap=True,
                fontsize=11, transform=ax.transAxes)
        return
    x = np.arange(1, len(bands) + 1)
    share = [b["agreement"] for b in bands]
    ax.bar(x, share, color="#3b75af", width=0.72, label="latents: same-label share")
    for xi, s in zip(x, share):
        ax.text(xi, s + 0.015, f"{s:.2f}", ha="center", fontsize=9)
    chance = report.baselines.get("chance", {}).get("agreement")
    if chance is not None:
        ax.axhline(chance, color="#d62728", linestyle="--", linewidth=1.6,
                   label=f"chance (from label frequencies): {chance:.2f}")
    ax.set_xticks(x, [f"{b['max_distance']:.2g}" for b in bands], fontsize=9)
    ax.set_ylim(0, 1.08)
    ax.legend(loc="upper right", fontsize=9, frameon=True)
    ax.set_xlabel(f"distance to the neighbour: upper edge of each band\n"
                  f"(each band holds 1/{len(bands)} of the query-neighbour pairs)")
    ax.set_ylabel("share of neighbours with the query's label")
    ax.set_title(f"{report.n_queries:,} queries x their {curve_k:,} nearest,\n"
                 f"in {len(bands)} distance bands, nearest first", fontsize=11)
    names = {"raw": "raw input", "pca": "PCA of raw input", "chance": "chance"}
    summary = [f"agreement@{report.k}: latents {report.agreement:.3f}"]
    order = sorted(report.baselines, key=lambda k: k == "chance")  # chance last
    summary += [f"{names.get(k, k)} {report.baselines[k]['agreement']:.3f}" for k in order]
    ax.text(0.97, 0.62, "\n".join(summary), transform=ax.transAxes, fontsize=10, ha="right",
            va="top", multialignment="left",
            bbox={"boxstyle": "round", "fc": "white", "ec": "0.8"})


def report_figure(report: Report, vectors: np.ndarray, labels: list[str | None], *,
                  max_points: int = MAP_POINTS, seed: int = 0):
    """The matplotlib Figure of ``evaluate --plot`` (on an Agg canvas, no pyplot): the latent
    map of a seeded sample of ``max_points`` beside the agreement by distance band."""
    check_plot_path("plot.png")  # the extra is installed
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # Agg: no display, no pyplot
    from matplotlib.figure import Figure

    vectors = np.asarray(vectors, dtype=np.float32)
    n, dim = vectors.shape
    rows = np.sort(np.random.default_rng(seed).choice(n, min(max_points, n), replace=False))
    xy = _tsne(vectors[rows], seed)

    fig = Figure(figsize=(14, 6.2), dpi=130, layout="constrained")
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2, width_ratios=[1.15, 1])
    fig.suptitle(f"{report.collection}: do closer latents mean the same label?",
                 fontsize=15, fontweight="bold")
    _draw_map(left, xy, [labels[r] for r in rows], n, dim)
    # the curve's real neighbour count: CURVE_K, or every other item of a small collection
    _draw_bands(right, report, max(report.k, min(CURVE_K, n - 1)))
    return fig


def write_report_png(path: str | os.PathLike, report: Report, vectors: np.ndarray,
                     labels: list[str | None], *, max_points: int = MAP_POINTS,
                     seed: int = 0) -> Path:
    """Draw :func:`report_figure` and write it as a picture (PNG, or JPEG / WebP by the
    suffix); ``labels`` are aligned with ``vectors`` (None: unlabelled, grey)."""
    fmt = check_plot_path(path)
    fig = report_figure(report, vectors, labels, max_points=max_points, seed=seed)
    path = Path(path)
    try:
        fig.savefig(path, format=fmt.lower(), facecolor="white")
    except OSError as exc:
        raise InvalidInput(f"cannot write {path}: {exc.strerror or exc}") from None
    return path

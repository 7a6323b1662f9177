"""``latentsearch demo``: the whole story on the built-in samples, offline, in a few minutes.

Builds ``mnist`` (5,000 digits) and ``news`` (300 articles) under the root unless they exist,
runs two queries on each, evaluates ``mnist`` against its baselines, and writes a neighbour
grid and the evaluation plot under ``<root>/demo/``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable

from latentsearch.storage.paths import resolve_root
from latentsearch.collection import Collection, open_collection
from latentsearch.errors import CollectionNotFound, CorruptCollection, InvalidInput
from latentsearch.report.evaluate import evaluate
from latentsearch.types import hits_table

__all__ = ["IMAGE_QUERIES", "TEXT_QUERIES", "run_demo"]

#: items of the built-in mnist whose neighbours are shown
IMAGE_QUERIES = (7, 4321)
#: sentences the built-in news is queried with
TEXT_QUERIES = ("bushfires near Sydney", "cricket test match at the MCG")


def _existing(name: str, root: Path, rebuild: bool) -> Collection | None:
    if rebuild:
        return None
    try:
        return open_collection(name, root)
    except (CollectionNotFound, CorruptCollection):
        return None


def _ensure(build: Callable[..., Collection], name: str, step: str, what: str, root: Path,
            rebuild: bool, epochs: int | None, echo: Callable[[str], None]) -> Collection:
    """The built-in sample ``name``, built unless it exists (or ``rebuild``)."""
    col = _existing(name, root, rebuild)
    if col is not None:
        echo(f"{step} {name} exists (use --rebuild to train again)\n")
        return col
    echo(f"{step} building {name}: {what} (progress on stderr)")
    t0 = time.perf_counter()
    col = build(name, name=name, root=root, epochs=epochs, overwrite=True)
    echo(f"      built in {time.perf_counter() - t0:.0f}s\n")
    return col


def run_demo(root: str | os.PathLike | None = None, rebuild: bool = False, epochs: int | None = None,
             echo: Callable[[str], None] = print) -> dict[str, Path]:
    """Run the demo; returns the paths of the two pictures it wrote."""
    from latentsearch.pipelines import build_images, build_text

    root_path = resolve_root(root)
    out_dir = root_path / "demo"
    t_start = time.perf_counter()

    echo(f"latentsearch demo: collections under {root_path}\n")
    mnist = _ensure(build_images, "mnist", "[1/4]",
                    "5,000 digits -> conv autoencoder -> 32-d latents", root_path, rebuild,
                    epochs, echo)
    news = _ensure(build_text, "news", "[2/4]",
                   "300 articles -> trained word embeddings -> pooled vectors", root_path,
                   rebuild, epochs, echo)

    echo("[3/4] queries: the nearest items should be the same digit / the same story")
    out_dir.mkdir(parents=True, exist_ok=True)
    grid = out_dir / "mnist_neighbours.png"
    from latentsearch.report.pictures import write_query_grid

    for item in IMAGE_QUERIES:
        item = item if item < len(mnist) else int(mnist.ids()[len(mnist) // 2])
        label = mnist.get([item])[0].label
        hits = mnist.neighbors(item, k=8)
        same = sum(h.label == label for h in hits)
        echo(f"\n  mnist: neighbours of item {item} (a {label}): {same} of {len(hits)} are {label}s")
        for line in hits_table(hits, indent="  "):
            echo(line)
        if item == IMAGE_QUERIES[0]:
            write_query_grid(mnist, grid, hits, query_id=item)
    for text in TEXT_QUERIES:
        echo(f'\n  news: "{text}"')
        for line in hits_table(news.search(text, k=5), indent="  "):
            echo(line)

    echo("\n[4/4] does closeness mean similarity? evaluate mnist (1,000 seeded queries)\n")
    report = evaluate(mnist, k=10, sample=1000)
    echo(report.table())
    plot = out_dir / "mnist_evaluate.png"
    from latentsearch.report.pictures import check_plot_path, write_report_png

    echo(f"\npictures:\n  {grid}   (item {IMAGE_QUERIES[0]} and its 8 nearest digits)")
    try:
        check_plot_path(plot)  # the plot extra (matplotlib, scikit-learn) is optional
    except InvalidInput as exc:
        plot = None
        echo(f"  (no evaluate plot: {exc})")
    else:
        write_report_png(plot, report, mnist.vectors(), [h.label for h in mnist.get(mnist.ids())])
        echo(f"  {plot}   (the latent map, and agreement by distance)")
    echo(f"\ndone in {time.perf_counter() - t_start:.0f}s")
    return {"grid": grid, "plot": plot}

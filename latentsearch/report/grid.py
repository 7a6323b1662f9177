"""``query --grid``: the query and its neighbours as one PNG, distance and label under each."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from latentsearch.errors import InvalidInput
from latentsearch.types import Hit


def write_query_grid(
    col, path: str | os.PathLike, hits: list[Hit], *,
    query_tile: np.ndarray | None = None, query_id: int | None = None,
) -> Path:
    """Write the query (an image, or a stored item by id) and ``hits`` as tiles in one PNG."""
    from latentsearch.io.images import write_grid_png

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

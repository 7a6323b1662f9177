"""What the engine hands back and takes in: search hits, record fields, label text."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Iterable

import numpy as np

from latentsearch.errors import InvalidInput

__all__ = ["Hit", "Record", "RecordFields", "hits_table", "label_text", "labels_as_text"]

# The stored fields of one item as a builder hands them over, beside its vector: label,
# source file, text, extra (a dict stored as JSON). Labels are text.
RecordFields = tuple[str | None, str | None, str | None, dict | None]


@dataclass(frozen=True, slots=True)
class Hit:
    """One result: a stored item and its distance to the query.

    ``distance`` is Euclidean for metric ``l2`` and ``1 - cosine similarity`` for ``cosine``.
    ``text`` is None for images and vectors; ``source`` is the file an item came from, when
    it came from one.
    """

    id: int
    distance: float
    label: str | None = None
    source: str | None = None
    text: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Record:
    """One stored item as ``Collection.get`` returns it: what was kept beside its vector.

    No distance: nothing was searched. ``extra`` holds the item's other fields (a CSV
    column, a JSONL key, ``source_id``); it is empty when there are none.
    """

    id: int
    label: str | None = None
    source: str | None = None
    text: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, hash=False)  # hashable by the rest

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "label": self.label, "source": self.source, "text": self.text,
                "extra": dict(self.extra)}


def hits_table(hits: list[Hit], indent: str = "") -> list[str]:
    """Hits as terminal lines: rank, id, distance, label, the first 80 characters of the text
    (or the source file). What ``query`` and the demo print."""
    if not hits:
        return [f"{indent}no results"]
    lines = [f"{indent}{'rank':>4}  {'id':>8}  {'distance':>9}  {'label':<10}  text/source"]
    for rank, h in enumerate(hits, 1):
        what = " ".join((h.text if h.text is not None else (h.source or "")).split())
        if len(what) > 80:
            what = what[:79] + "…"
        label = "" if h.label is None else h.label
        lines.append(f"{indent}{rank:>4}  {h.id:>8}  {h.distance:>9.4f}  {label:<10.10}  {what}")
    return lines


def label_text(value: Any) -> str:
    """A label as stored: text; bytes decoded, whole floats without ".0" (3.0 -> "3")."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, (np.floating, float)) and float(value).is_integer():
        return str(int(value))
    return str(value.item() if hasattr(value, "item") else value)


def labels_as_text(labels: Iterable[Any] | None, n: int) -> list[str | None]:
    """``n`` labels as stored (see :func:`label_text`); None when there are none."""
    if labels is None:
        return [None] * n
    labels = list(labels)
    if len(labels) != n:
        raise InvalidInput(f"got {len(labels)} labels for {n} items")
    return [None if lab is None else label_text(lab) for lab in labels]

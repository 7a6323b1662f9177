"""Search results as small frozen records."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Hit:
    """One result: a stored item and its distance to the query.

    ``distance`` is Euclidean for metric ``l2`` and ``1 - cosine similarity`` for ``cosine``;
    0.0 for records returned by ``Collection.get``. ``text`` is None for images and vectors;
    ``source`` is the file an item came from, when it came from one.
    """

    id: int
    distance: float
    label: str | None = None
    source: str | None = None
    text: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

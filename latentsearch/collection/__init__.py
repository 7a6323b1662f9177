"""Collections: opening, building, searching and changing them.

``collection`` holds the :class:`Collection` (the object users hold), ``snapshot`` one
loaded generation (what every search reads), ``reader`` the search over a snapshot,
``writer`` the next generation (adds, removals, compaction) and ``build`` a new collection.
"""

from __future__ import annotations

from latentsearch.collection.build import build_vectors, create
from latentsearch.collection.collection import Collection, list_collections, open_collection

__all__ = ["Collection", "open_collection", "build_vectors", "create", "list_collections"]

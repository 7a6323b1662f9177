"""Collections: opening, building, searching and changing them.

``collection`` holds the :class:`Collection` (the object users hold), ``snapshot`` one
loaded generation (what every search reads), ``reader`` the search over a snapshot,
``writer`` the next generation (adds, removals, compaction), ``build`` a new collection and
``sharded`` a sharded one (N collections under one parent, searched as one). The package's
``open_collection`` and ``list_collections`` are sharded's: they take both kinds.
"""

from __future__ import annotations

from latentsearch.collection.build import create
from latentsearch.collection.collection import Collection
from latentsearch.collection.sharded import (
    ShardedCollection, create_sharded, list_collections, open_collection)

__all__ = ["Collection", "ShardedCollection", "open_collection", "create",
           "create_sharded", "list_collections"]

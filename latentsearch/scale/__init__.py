"""Scale-out on Ray (the optional ``ray`` extra): distributed builds, bulk neighbours.

``cluster`` is the one module that imports Ray; ``build`` splits a build into partitions
encoded on the workers and fills the index's lists in parallel; ``knn`` writes every item's
k nearest neighbours. Sharded collections live in :mod:`latentsearch.collection.sharded`.
Nothing here is imported unless ``--ray``, ``--shards`` or ``knn`` is used.
"""

"""The index layer: index specs, building and filtered search over FAISS.

Results carry the collection's stable int64 ids whatever the index type: IVF indexes store
them natively, every other index is wrapped in ``IndexIDMap``. Specs:

==========  ==============================================================================
``flat``    exact search (``Flat``)
``hnsw``    graph index ``HNSW32``; efSearch tuned
``ivf``     ``IVF{nlist},Flat`` with nlist ~ 4*sqrt(n); nprobe tuned
``ivffs``   ``IVF{nlist},PQ{dim}x4fs`` (FAISS fast-scan: 4-bit codes scanned with SIMD) with
            nlist ~ sqrt(n), and an exact re-rank of ``rerank x k`` candidates from the
            stored vectors; nprobe and rerank tuned
``ivfpq``   ``IVF{nlist},PQ{dim/2}np`` and the same exact re-rank; nprobe and rerank tuned
``auto``    chosen by measurement at build time (see ``tune``): flat below 10,000
            vectors, else the fastest of ivf / ivffs / hnsw at the target recall that fits
            the memory budget (``$LATENTSEARCH_MEMORY_BUDGET`` in bytes, default 4 GiB)
other       any FAISS ``index_factory`` string, e.g. ``IVF256,SQ8`` or ``HNSW16``
==========  ==============================================================================

Tuning (``tune``) measures recall on held-out queries and stores a recall curve in the
manifest. An approximate spec asked for on too few vectors to train (e.g. IVF on 50
vectors) is built as ``Flat`` and rebuilt with the asked spec once the collection is large
enough.

Modules: ``specs`` (what to build, and its size), ``backends`` (one class per index kind:
the search knob, typed parameters, list balance), ``building`` (build, add, remove, copy),
``searching`` (filtered, typed, re-ranked search), ``exact`` (brute force, re-rank, the one
top-k merge, recall), ``faiss_ops`` (metric, normalising, the OpenMP guard), ``tune``
(choosing and tuning by measurement). This package re-exports what the collection uses.

Metrics: ``l2`` (FAISS squared L2; reported distances are Euclidean) and ``cosine`` (vectors
are unit-normalised on both sides and searched by inner product; distance = 1 - cosine).
"""

from __future__ import annotations

from latentsearch.index.backends import apply, imbalance, knob, search_params
from latentsearch.index.building import add, build, copy, try_remove
from latentsearch.index.exact import (best_of, drop_own, exact_scores, exact_search, merge_best,
                                      recall_at, rerank_exact)
from latentsearch.index.faiss_ops import faiss_metric, normalise
from latentsearch.index.searching import distances_per_query, search
from latentsearch.index.specs import (AUTO_FLAT_BELOW, EF_STEPS, METRICS, IndexPlan, fs_subquantizers,
                                      index_bytes, is_lossy, memory_budget, min_train_size, plan)

__all__ = ["METRICS", "AUTO_FLAT_BELOW", "EF_STEPS", "IndexPlan", "plan", "build", "add",
           "try_remove", "copy", "apply", "search", "search_params", "exact_search",
           "exact_scores", "best_of", "rerank_exact", "merge_best", "knob", "imbalance",
           "distances_per_query", "recall_at", "drop_own", "normalise", "index_bytes",
           "fs_subquantizers", "memory_budget", "is_lossy", "min_train_size", "faiss_metric"]

"""Seeded clustered vectors for the search benchmarks, and small timing helpers.

The data: a mixture of ``centres`` anisotropic gaussians in ``dim`` dimensions. Centres are
N(0, 1) per coordinate; each cluster has its own spread (uniform 0.5..1.5) and every cluster
shares a decaying per-coordinate scale (0.97 ** j), so the data has a moderate intrinsic
dimension like real embeddings and neighbours are found inside overlapping-enough clusters
that an approximate index has real work to do. The mixture is fixed by ``seed``; the
collection, the held-out queries and the vectors that ``add`` appends are separate draws
(``stream`` 1, 2, 3) from that same mixture, so queries are never stored items.
"""

from __future__ import annotations

import time

import numpy as np

DIM = 32
CENTRES = 1000


class Mixture:
    def __init__(self, dim: int = DIM, centres: int = CENTRES, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.dim = dim
        self.centres = rng.standard_normal((centres, dim)).astype(np.float32)
        self.spread = rng.uniform(0.5, 1.5, centres).astype(np.float32)
        self.scales = (0.97 ** np.arange(dim)).astype(np.float32)
        w = rng.gamma(2.0, 1.0, centres)
        self.weights = w / w.sum()
        self.seed = seed

    def sample(self, n: int, stream: int, chunk: int = 200_000) -> np.ndarray:
        """``n`` float32 vectors from draw ``stream`` (same n and stream: same vectors)."""
        rng = np.random.default_rng([self.seed, stream])
        out = np.empty((n, self.dim), dtype=np.float32)
        for start in range(0, n, chunk):
            m = min(chunk, n - start)
            which = rng.choice(len(self.centres), m, p=self.weights)
            noise = rng.standard_normal((m, self.dim), dtype=np.float32)
            noise *= self.scales
            noise *= self.spread[which, None]
            out[start : start + m] = self.centres[which] + noise
        return out


def exact_top(x: np.ndarray, queries: np.ndarray, k: int = 10) -> np.ndarray:
    """Exact L2 top-k row numbers of ``queries`` in ``x`` (FAISS brute force)."""
    import faiss

    _, rows = faiss.knn(np.ascontiguousarray(queries), np.ascontiguousarray(x), k)
    return rows


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean share of each query's true top-k found among its returned ids."""
    k = truth.shape[1]
    hits = 0
    for f, t in zip(found, truth):
        hits += len(np.intersect1d(f[f >= 0], t))
    return hits / (k * len(truth))


class Timer:
    def __enter__(self):
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.s = time.perf_counter() - self.t0
        return False


def median(values) -> float:
    return float(np.median(np.asarray(values, dtype=np.float64))) if len(values) else float("nan")


def pct(values, q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if len(values) else float("nan")


def write_section(path, name: str, text: str) -> None:
    """Replace (or append) the block between ``<!-- NAME -->`` and ``<!-- /NAME -->`` in
    ``path``, so scripts that each own a section of RESULTS.md leave the others alone."""
    from pathlib import Path

    path = Path(path)
    start, end = f"<!-- {name} -->", f"<!-- /{name} -->"
    old = path.read_text() if path.exists() else ""
    block = f"{start}\n{text.rstrip()}\n{end}"
    if start in old and end in old:
        head, rest = old.split(start, 1)
        new = head + block + rest.split(end, 1)[1]
    else:
        new = old.rstrip() + "\n\n" + block + "\n"
    path.write_text(new)


def kept_sections(path) -> str:
    """Every ``<!-- NAME -->`` block of ``path``, for a script that rewrites the rest."""
    import re
    from pathlib import Path

    path = Path(path)
    if not path.exists():
        return ""
    found = re.findall(r"(<!-- ([\w-]+) -->.*?<!-- /\2 -->)", path.read_text(), flags=re.S)
    return "\n\n".join(block for block, _ in found)

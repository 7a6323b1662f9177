"""Image quality and speed on the built-in MNIST sample: ``python -m benchmarks.images``.

Trains the ``conv`` (default) and ``dense`` encoders with their default settings on the
5,000 built-in digits (timing each), then prints label agreement@10 — every item queries
the other 4,999 with exact search, agreement = mean share of the 10 neighbours that have
the query's label — for:

* conv and dense latents, searched with each encoder's recommended metric,
* raw pixels (exact L2), PCA to the latent dimension (numpy SVD, exact L2),
* chance (sum of squared label frequencies),

and the encoding throughput of ``encoder.encode`` against a bare Keras ``model.predict``
on the same model and batch size. Writes nothing; uses numpy, the encoders and evaluate's measures.

Options: ``--epochs E`` (both encoders), ``--seed S``, ``--k K``, ``--skip-dense``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np

from latentsearch.report.evaluate import exact_neighbours, label_agreement, pca
from latentsearch.io.images import load_image_source
from latentsearch.index import normalise
from latentsearch.encoders.image import ENCODE_BATCH, ConvAutoencoder, DenseAutoencoder


def agreement_at_k(vectors: np.ndarray, labels: np.ndarray, k: int = 10, metric: str = "l2") -> float:
    """Mean share of each item's k nearest other items (exact search) sharing its label:
    ``evaluate``'s own measure, with every item as a query."""
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    if metric == "cosine":
        x = normalise(x)
    rows = np.arange(len(x))
    return label_agreement(exact_neighbours(x, rows, k, metric), np.asarray(labels), rows)[0]


def throughput(encoder, images: np.ndarray, repeats: int = 3) -> tuple[float, float]:
    """(items/s of encoder.encode on uint8 images, items/s of model.predict on the float input)."""
    x_float = encoder.preprocess(images)
    encoder.encode(images[:ENCODE_BATCH * 2])  # warm up both paths
    encoder.model.predict(x_float[: ENCODE_BATCH * 2], batch_size=ENCODE_BATCH, verbose=0)
    best_enc = best_pred = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        encoder.encode(images)
        best_enc = min(best_enc, time.perf_counter() - t)
        t = time.perf_counter()
        encoder.model.predict(x_float, batch_size=ENCODE_BATCH, verbose=0)
        best_pred = min(best_pred, time.perf_counter() - t)
    return len(images) / best_enc, len(images) / best_pred


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=None, help="epochs for both (default: each encoder's own)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--skip-dense", action="store_true")
    args = ap.parse_args(argv)

    data = load_image_source("mnist")
    images, labels = data.images, np.array(data.labels)
    k = args.k
    print(f"built-in mnist: {len(images)} digits {images.shape[1:]}, agreement@{k}, "
          f"each item queries the other {len(images) - 1} (exact search)", flush=True)

    rows: list[tuple[str, float, str]] = []
    trained = {}
    kinds = [ConvAutoencoder] + ([] if args.skip_dense else [DenseAutoencoder])
    for cls in kinds:
        t = time.perf_counter()
        enc = cls.fit(images, epochs=args.epochs, seed=args.seed, quiet=True)
        fit_s = time.perf_counter() - t
        cfg = enc.config()
        z = enc.encode(images)
        metric = cfg["recommended_metric"]
        rows.append((f"{cls.name} latents ({enc.dim}-d, {metric})", agreement_at_k(z, labels, k, metric),
                     f"fit {fit_s:.1f}s (training {cfg['train_seconds']:.1f}s, {cfg['epochs_run']} epochs, "
                     f"val loss {cfg['val_loss']:.4f})"))
        trained[cls.name] = enc
        print(f"  trained {cls.name}: {rows[-1][2]}", file=sys.stderr, flush=True)

    pixels = images.reshape(len(images), -1).astype(np.float32) / 255.0
    dim = trained["conv"].dim
    rows.append(("raw pixels (784-d, l2)", agreement_at_k(pixels, labels, k), ""))
    rows.append((f"PCA-{dim} (l2)", agreement_at_k(pca(pixels, dim), labels, k), ""))
    _, counts = np.unique(labels, return_counts=True)
    freq = counts / counts.sum()
    rows.append(("chance", float(np.sum(freq**2)), "sum of squared label frequencies"))

    width = max(len(r[0]) for r in rows)
    print(f"\n{'representation':<{width}}  agreement@{k}  notes")
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:12.4f}  {note}")

    print(f"\nencoding throughput (batch {ENCODE_BATCH}, {len(images)} images, best of 3)")
    for name, enc in trained.items():
        ours, bare = throughput(enc, images)
        print(f"{name:<6} encode {ours:9.0f} img/s   bare model.predict {bare:9.0f} img/s   "
              f"ratio {ours / bare:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""From a user's source (vectors, a built-in sample, a file or a folder) to a collection.

``build_vectors`` indexes vectors made elsewhere; ``build_images`` and ``build_text`` load a source, train the encoder on it, encode every
item and hand vectors plus records to ``latentsearch.collection.create``.
``encode_source`` and ``add_source`` do the same for ``add NAME SOURCE`` with the
collection's stored encoder. TensorFlow is imported by the encoder modules only, when they
train or encode.
"""

from __future__ import annotations

import os
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from latentsearch import encoders as _encoders
from latentsearch.collection.build import check_new, create
from latentsearch.encoders.vectors import VectorEncoder, as_vectors
from latentsearch.index.tune import DEFAULT_RECALL
from latentsearch.scale.cluster import on_cluster
from latentsearch.collection.collection import Collection
from latentsearch.io.arrays import load_npy
from latentsearch.progress import say as _say
from latentsearch.collection.sharded import create_sharded
from latentsearch.scale.build import (
    PART_ITEMS, Part, cluster_fill, decode_on_cluster, encode_on_cluster, train_rows)
from latentsearch.storage.files import staging
from latentsearch.types import RecordFields, label_text, labels_as_text
from latentsearch.errors import EncoderError, InvalidInput
from latentsearch.encoders.tf import import_tensorflow

__all__ = ["build_vectors", "build_images", "build_text", "encode_source", "add_source", "load_labels",
           "default_name", "read_query_image", "read_vectors_file"]

# what a file is, by its first bytes, when it is not the .npy array it should be
_SIGNATURES = ((b"\x89PNG", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"),
               (b"GIF8", "a GIF image"), (b"BM", "a BMP image"), (b"II*\x00", "a TIFF image"),
               (b"MM\x00*", "a TIFF image"), (b"PK\x03\x04", "a zip archive (.npz?)"))


def load_labels(path: str | os.PathLike) -> list[str]:
    """Labels from a .npy array or a text file with one label a line."""
    p = Path(path)
    if p.suffix == ".npy":
        return [label_text(x) for x in load_npy(p).reshape(-1)]
    from latentsearch.io.texts import read_text  # strict UTF-8, BOM dropped, NUL refused, lines named

    return read_text(p, str(p)).splitlines()


def read_query_image(col: Collection, path: str | os.PathLike) -> np.ndarray:
    """An image file as ``col``'s encoder takes it (its size and colour), for ``query --image``."""
    from latentsearch.io.images import image_options, read_image_file

    cfg = col.manifest["encoder"]["config"]
    if col.modality != "image":
        raise EncoderError(f"collection {col.name} holds {col.modality}; it cannot be queried by image")
    return read_image_file(path, **image_options(cfg))  # size, colour, fit as built


def store(name: str, *, shards: int = 1, cluster=None, quiet: bool = True,
          **create_args: Any):
    """``create``, or with ``shards`` > 1 a sharded collection (``collection.sharded``);
    with a ``cluster`` (``latentsearch.scale.cluster``) the index lists, or the shards,
    are built on it."""
    if isinstance(shards, bool) or not isinstance(shards, int) or shards < 1:
        raise InvalidInput(f"shards must be a positive integer, got {shards!r}")
    if shards > 1:
        return create_sharded(name, shards=shards, quiet=quiet,
                              run=None if cluster is None else cluster.map, **create_args)
    fill = None if cluster is None else cluster_fill(cluster, quiet=quiet)
    return create(name, quiet=quiet, fill=fill, **create_args)


def build_vectors(
    vectors: Any,
    labels: Sequence[Any] | None = None,
    *,
    name: str,
    root: str | os.PathLike | None = None,
    index: str = "auto",
    metric: str = "l2",
    overwrite: bool = False,
    quiet: bool = True,
    recall: float = DEFAULT_RECALL,
    shards: int = 1,
    ray: str | None = None,
):
    """Build a collection from vectors made elsewhere (an array (n, dim) or a .npy path).

    ``index``: a spec (``auto``, ``flat``, ``ivf``, ``ivffs``, ``hnsw``, ``ivfpq``) or a FAISS
    factory string; ``recall``: the recall@10 it is tuned to (held-out queries).
    ``shards``: split into that many collections under one parent (``collection.sharded``);
    ``ray``: a Ray cluster's address (``auto``, ``local``) to fill the index, or build the
    shards, on (``latentsearch.scale``)."""
    check_new(name, root, overwrite)  # before reading a large file
    if isinstance(vectors, (str, os.PathLike)):
        vectors = load_npy(Path(vectors), mmap=True)  # read batch by batch, not all at once
    if not (isinstance(vectors, np.ndarray) and vectors.ndim == 2 and vectors.shape[1] > 0
            and vectors.dtype.kind in "fiu"):
        vectors = as_vectors(vectors)
    records = [(lab, None, None, None) for lab in labels_as_text(labels, len(vectors))]
    with on_cluster(ray) as cluster:
        return store(name, shards=shards, cluster=cluster, encoder=VectorEncoder(vectors.shape[1]),
                     vectors=vectors, records=records, root=root, index=index, metric=metric,
                     overwrite=overwrite, quiet=quiet, recall=recall)


def build_images(
    source: str | os.PathLike | np.ndarray,
    *,
    labels: Sequence[Any] | None = None,
    name: str | None = None,
    root: str | os.PathLike | None = None,
    encoder: str = "conv",
    latent_dim: int = 32,
    size: int = 28,
    color: str = "gray",
    fit: str = "crop",
    epochs: int | None = None,
    index: str = "auto",
    metric: str | None = None,
    seed: int = 0,
    overwrite: bool = False,
    quiet: bool = False,
    recall: float = 0.95,
    shards: int = 1,
    ray: str | None = None,
):
    """Train an image autoencoder on ``source`` and index every image's latent vector.

    ``source``: ``"mnist"`` (5,000 digits shipped in the package), ``"mnist-full"`` (Keras'
    download), a folder of images (subfolder names become labels), a .npy/.npz file, or an
    array of images (N, H, W[, C]) as ``build_vectors`` takes vectors (``name`` required).
    ``labels``, one per image, replace the source's own. ``metric`` defaults to the one the
    encoder recommends for its latents. A taken ``name`` fails before anything is loaded.
    ``fit``: how non-square images become square (``crop`` the centre, ``pad`` with black,
    ``stretch``), kept in the encoder's config so queries are made square the same way.
    The encoder trains on at most ``TRAIN_SAMPLE["image"]`` images (a seeded sample).
    ``shards`` and ``ray`` as for :func:`latentsearch.build_vectors`; with ``ray`` the
    images are also read, decoded and encoded on the cluster (``latentsearch.scale.build``).
    """
    from latentsearch.io.images import ImageSet, conform_images, load_image_source

    is_array = isinstance(source, np.ndarray)
    if is_array and not name:
        raise InvalidInput("build_images(array) needs name=: an array has no file name")
    source = source if is_array else os.fspath(source)
    name = name or default_name(source)
    target = check_new(name, root, overwrite)  # before a minute of training, not after
    cls = _encoders.get(encoder)
    if cls.modality != "image":
        raise InvalidInput(f"encoder {encoder!r} is not an image encoder (use conv or dense)")
    if color not in ("gray", "rgb"):
        raise InvalidInput(f"color must be 'gray' or 'rgb', got {color!r}")
    with on_cluster(ray) as cluster, _scratch(cluster, target.parent, name) as scratch:
        if is_array:
            images = conform_images(source, size=size, channels=1 if color == "gray" else 3,
                                    fit=fit)
            data = ImageSet(images, [None] * len(images), [None] * len(images))
            source = f"array {tuple(source.shape)}"  # what the manifest says it was built from
        elif cluster is not None and Path(source).is_dir():
            spec = {"config": {"size": size, "color": color, "fit": fit}}
            data = _decode_folder(cluster, scratch, spec, Path(source), quiet)
        else:
            _say(f"loading images from {source}", quiet)
            data = load_image_source(source, size=size, color=color, fit=fit)
        if labels is not None:
            data.labels = labels_as_text(labels, len(data.images))
        rows = train_rows(len(data.images), "image", seed)
        sample = data.images if rows is None else data.images[rows]
        _say(f"{len(data.images)} images of {size}x{size} {color}; training {encoder} "
             f"autoencoder on {len(sample)}", quiet)
        import_tensorflow()  # training needs it; imported once, without its start-up chatter
        t0 = time.perf_counter()
        enc = cls.fit(sample, latent_dim=latent_dim, epochs=epochs, seed=seed, quiet=quiet,
                      fit=fit)
        _say(f"trained in {time.perf_counter() - t0:.1f}s", quiet)
        metric = metric or enc.config().get("recommended_metric", "l2")
        if cluster is None:
            vectors = enc.encode(data.images)
        else:
            vectors = _encode_images(cluster, scratch, _saved_encoder(scratch, enc),
                                     data.images, enc.dim, quiet)
        return store(name, shards=shards, cluster=cluster, encoder=enc, vectors=vectors,
                     records=_image_records(data.labels, data.sources), root=root,
                     index=index, metric=metric, overwrite=overwrite, quiet=quiet,
                     extra={"source": source}, images=data.images, recall=recall)


def _scratch(cluster, parent: Path, prefix: str):
    """A staging folder on shared storage for a cluster's partitions (None without one)."""
    return nullcontext() if cluster is None else staging(parent, prefix)


def _saved_encoder(scratch, enc) -> tuple[str, dict[str, Any]]:
    folder = scratch.path("encoder/.keep").parent
    enc.save(folder)
    return str(folder), {"name": enc.name, "config": enc.config()}


def _decode_folder(cluster, scratch, spec: dict[str, Any], root: Path, quiet: bool):
    """A folder's images decoded on the cluster, a partition of files per task, as the
    ImageSet a one-process read gives (images memory-mapped from the scratch folder; the
    files skipped warned about the same way). ``spec``: the image settings, as an
    encoder's config holds them."""
    from latentsearch.io.images import ImageSet, image_options, list_folder, report_skipped

    opts = image_options(spec["config"])
    files, others, hidden = list_folder(root)
    _say(f"decoding {len(files)} image files from {root} on the cluster", quiet)
    step = PART_ITEMS["image"]
    parts = [Part(i, str(scratch.dir), None, spec, files=[str(f) for f in files[a : a + step]],
                  root=str(root)) for i, a in enumerate(range(0, len(files), step))]
    pixels = (opts["size"], opts["size"], 1 if opts["color"] == "gray" else 3)
    images, done = decode_on_cluster(cluster, parts, pixels=pixels, quiet=quiet)
    skipped = report_skipped(root, len(files), others, hidden,
                             [s for e in done for s in e.skipped], len(images))
    return ImageSet(images, [lab for e in done for lab in e.labels],
                    [src for e in done for src in e.sources], skipped)


def _encode_images(cluster, scratch, encoder: tuple[str, dict], images: np.ndarray, dim: int,
                   quiet: bool) -> np.ndarray:
    """``images`` encoded on the cluster, rows of an images .npy in the scratch folder per
    task (written there first when they are held here)."""
    path = Path(getattr(images, "filename", None) or scratch.save_array("images.npy", images))
    step = PART_ITEMS["image"]
    parts = [Part(i, str(scratch.dir), *encoder, array=str(path), start=a,
                  stop=min(a + step, len(images)))
             for i, a in enumerate(range(0, len(images), step))]
    return encode_on_cluster(cluster, parts, dim=dim, quiet=quiet)


def _row_parts(scratch, encoder: tuple[str, dict], items: Sequence[Any], step: int) -> list[Part]:
    """Partitions of texts held here, ``step`` each; ``encoder``: its saved folder and spec."""
    return [Part(i, str(scratch.dir), *encoder, items=items[a : a + step])
            for i, a in enumerate(range(0, len(items), step))]


def build_text(
    source: str | os.PathLike,
    *,
    name: str | None = None,
    root: str | os.PathLike | None = None,
    dim: int | None = None,
    epochs: int | None = None,
    train_extra: str | os.PathLike | None = None,
    index: str = "auto",
    metric: str = "cosine",
    seed: int = 0,
    overwrite: bool = False,
    quiet: bool = False,
    prior: str | None = "wordnet",
    recall: float = 0.95,
    shards: int = 1,
    ray: str | None = None,
):
    """Train word embeddings on ``source`` (plus ``train_extra``) and index pooled vectors.

    ``source``: ``"news"`` (300 articles shipped in the package), a .txt file (one item a
    line), or a .jsonl/.csv file with a ``text`` field and optional ``label`` and ``id``.
    ``prior``: ``"wordnet"`` starts from the shipped English prior and adapts it to the
    texts; None learns from the texts alone (other languages, private jargon).
    The embeddings train on at most ``TRAIN_SAMPLE["text"]`` texts (a seeded sample).
    ``shards`` and ``ray`` as for :func:`latentsearch.build_vectors`; with ``ray`` the texts
    are also tokenised and encoded on the cluster.
    """
    from latentsearch.io.texts import load_text_source, read_texts_file

    source = os.fspath(source)
    name = name or default_name(source)
    target = check_new(name, root, overwrite)  # before training, not after
    cls = _encoders.get("text")
    with on_cluster(ray) as cluster:
        data = load_text_source(source)
        extra_texts = read_texts_file(train_extra) if train_extra else None
        rows = train_rows(len(data.texts), "text", seed)
        sample = data.texts if rows is None else [data.texts[i] for i in rows]
        _say(f"{len(data.texts)} texts from {source}; training text encoder on {len(sample)}",
             quiet)
        import_tensorflow()
        t0 = time.perf_counter()
        enc = cls.fit(sample, dim=dim, epochs=epochs, seed=seed, quiet=quiet,
                      extra_texts=extra_texts, prior=prior)
        _say(f"trained in {time.perf_counter() - t0:.1f}s", quiet)
        records = _text_records(data, data.labels)
        with _scratch(cluster, target.parent, name) as scratch:
            if cluster is None:
                vectors = enc.encode(data.texts)
            else:
                parts = _row_parts(scratch, _saved_encoder(scratch, enc), data.texts,
                                   PART_ITEMS["text"])
                vectors = encode_on_cluster(cluster, parts, dim=enc.dim, quiet=quiet)
            return store(name, shards=shards, cluster=cluster, encoder=enc, vectors=vectors,
                         records=records, root=root, index=index, metric=metric,
                         overwrite=overwrite, quiet=quiet, extra={"source": source},
                         recall=recall)


def encode_source(
    col: Collection, source: str | os.PathLike, labels: Sequence[Any] | str | None = None,
) -> tuple[np.ndarray, list[RecordFields], np.ndarray | None]:
    """Load ``source`` as ``build`` would for ``col``'s modality and encode it.

    Returns the vectors, their records, and (image collections) the images as encoded.
    """
    source = os.fspath(source)
    if isinstance(labels, (str, os.PathLike)):
        labels = load_labels(labels)
    if col.modality == "vectors":
        vecs = read_vectors_file(source, f"collection {col.name} holds vectors: add takes a "
                                         f".npy array of shape (n, {col.dim})")
        n = len(vecs)
        return vecs, [(lab, None, None, None) for lab in labels_as_text(labels, n)], None
    if col.modality == "image":
        from latentsearch.io.images import image_options, load_image_source

        data = load_image_source(source, **image_options(col.manifest["encoder"]["config"]))
        vecs = col.encode(data.images)
        labs = labels_as_text(labels, len(vecs)) if labels is not None else data.labels
        return vecs, _image_records(labs, data.sources), data.images
    from latentsearch.io.texts import load_text_source

    data = load_text_source(source)
    vecs = col.encode(data.texts)
    labs = labels_as_text(labels, len(vecs)) if labels is not None else data.labels
    return vecs, _text_records(data, labs), None


def add_source(col: Collection, source: str | os.PathLike,
               labels: Sequence[Any] | str | None = None, *, wait: float = 0.0,
               quiet: bool = True, ray: str | None = None) -> np.ndarray:
    """Load ``source`` the way ``build`` does for ``col``'s modality and append its items
    (``latentsearch add NAME SOURCE``); returns their new ids. With ``ray`` (a cluster's
    address) the items are read, decoded and encoded on the cluster with the collection's
    stored encoder; this process commits them once, as one add."""
    if ray is None or col.modality == "vectors":  # vectors: nothing to encode
        vecs, records, images = encode_source(col, source, labels)
        return col.add_vectors(vecs, records, images=images, wait=wait, quiet=quiet)
    # the scratch folder beside the collection, not in it: a commit there clears strays
    with on_cluster(ray) as cluster, staging(col.path.parent, col.name) as scratch:
        vecs, records, images = _encode_on(cluster, scratch, col, os.fspath(source), labels,
                                           quiet)
        return col.add_vectors(vecs, records, images=images, wait=wait, quiet=quiet)


def _encode_on(cluster, scratch, col: Collection, source: str, labels, quiet: bool):
    """``encode_source`` with the decoding and encoding done on ``cluster``."""
    if isinstance(labels, (str, os.PathLike)):
        labels = load_labels(labels)
    saved = _saved_encoder(scratch, col.encoder)  # a copy: a sharded parent has no encoder/
    spec = col.manifest["encoder"]
    if col.modality == "image":
        from latentsearch.io.images import image_options, load_image_source

        if Path(source).is_dir():
            data = _decode_folder(cluster, scratch, spec, Path(source), quiet)
        else:
            data = load_image_source(source, **image_options(spec["config"]))
        vecs = _encode_images(cluster, scratch, saved, data.images, col.dim, quiet)
        labs = labels_as_text(labels, len(vecs)) if labels is not None else data.labels
        return vecs, _image_records(labs, data.sources), data.images
    from latentsearch.io.texts import load_text_source

    data = load_text_source(source)
    parts = _row_parts(scratch, saved, data.texts, PART_ITEMS["text"])
    vecs = encode_on_cluster(cluster, parts, dim=col.dim, quiet=quiet)
    labs = labels_as_text(labels, len(vecs)) if labels is not None else data.labels
    return vecs, _text_records(data, labs), None


def _image_records(labels, sources) -> list[RecordFields]:
    return [(label, src, None, None) for label, src in zip(labels, sources)]


def _text_records(data, labels) -> list[RecordFields]:
    """Records of a TextSet: the text itself; in ``extra``, the source's other fields (CSV
    columns, JSONL keys) and its own id as ``source_id`` (``id`` is the engine's)."""
    return [
        (label, src, text, {**(fields or {}), "source_id": sid} if sid is not None else fields)
        for text, label, src, sid, fields in zip(data.texts, labels, data.sources, data.ids,
                                                 data.fields)
    ]


def read_vectors_file(path: str | os.PathLike, wanted: str) -> np.ndarray:
    """The array of a .npy file given as vectors (``add`` on a vector collection, ``query
    --vector``). Any other file is an InvalidInput saying ``wanted`` and what the file is
    (an image, a zip), not numpy's "pickled data"."""
    p = Path(path)
    try:
        with p.open("rb") as f:
            head = f.read(12)
    except FileNotFoundError:
        raise InvalidInput(f"{wanted}; no such file: {p}") from None
    except OSError as exc:
        raise InvalidInput(f"{wanted}; cannot read {p}: {exc.strerror or exc}") from None
    if not head.startswith(b"\x93NUMPY"):
        what = next((kind for magic, kind in _SIGNATURES if head.startswith(magic)), None)
        if what is None and head[:4] == b"RIFF" and head[8:12] == b"WEBP":
            what = "a WebP image"
        raise InvalidInput(f"{wanted}; {p} is {what or 'not a .npy file'}")
    return load_npy(p)


def default_name(source: str) -> str:
    """A collection's name when none is given: the source's file name without its suffix."""
    stem = Path(source).name
    for suffix in (".npz", ".npy", ".txt", ".jsonl", ".csv"):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
    return stem or "collection"

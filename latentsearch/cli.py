"""The ``latentsearch`` command line: parse arguments, call the library, print the result.

Any :class:`LatentSearchError` becomes one line ``error: ...`` on stderr and exit status 1;
usage errors are click's own (status 2). ``--json`` prints one JSON document on stdout and
nothing else there; progress goes to stderr. TensorFlow is imported by the library only
when an encoder is trained or used, so ``--help`` and ``query --id`` stay fast.
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Any, Callable

import click

import latentsearch as ls
from latentsearch.errors import CollectionExists, InvalidInput, LatentSearchError
from latentsearch.index import METRICS

__all__ = ["main"]

ROOT = click.option(
    "--root", type=click.Path(file_okay=False), default=None,
    help="Folder holding collections (default: $LATENTSEARCH_ROOT, else ./indexes).",
)
INDEX = click.option("--index", "index_spec", default="auto", show_default=True,
                     help="auto (chosen by measurement), flat, hnsw, ivf, ivffs, ivfpq, or a "
                          "FAISS index_factory string.")
RECALL = click.option("--recall", "recall", type=click.FloatRange(0.0, 1.0, min_open=True),
                      default=0.95, show_default=True,
                      help="recall@10 the index is tuned to, measured on held-out queries.")


def _silence(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
    """--quiet (and --json): no progress lines or bars on stderr; warnings still show."""
    if value:
        from latentsearch.progress import configure

        configure(quiet=True)
    return value


QUIET = click.option("--quiet", "-q", is_flag=True, callback=_silence, expose_value=True,
                     help="No progress on stderr.")
OVERWRITE = click.option("--overwrite", is_flag=True, help="Replace an existing collection of that name.")
WAIT = click.option("--wait", type=float, default=0.0, show_default=True,
                    help="Seconds to wait for another writer's lock before giving up.")
RAY = click.option("--ray", "ray", metavar="ADDRESS", default=None,
                   help="Run on a Ray cluster: auto (RAY_ADDRESS, or `ray start` here), local "
                        "(start one in this process), or host:port. Needs the ray extra.")
SHARDS = click.option("--shards", type=click.IntRange(1, 4096), default=1, show_default=True,
                      help="Split into this many collections under one parent (for an index "
                           "too big for one machine); searched together.")
JSON = click.option("--json", "as_json", is_flag=True, callback=_silence,
                    help="Print one JSON document on stdout and nothing else there (no progress).")


class _Group(click.Group):
    """Maps library errors to one line and exit status 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except LatentSearchError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(1)


def _echo_json(doc: Any) -> None:
    click.echo(json.dumps(doc, indent=2, ensure_ascii=False))


def _items(n: int, noun: str = "item") -> str:
    """``1 item``, ``2 items`` (numbers as before: no thousands separator for scripts)."""
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _cli_words(command: Callable[..., None]) -> Callable[..., None]:
    """A build command whose taken-name error speaks the command line's words (the library's
    says ``overwrite=True``)."""
    @functools.wraps(command)
    def run(**params: Any) -> None:
        try:
            command(**params)
        except CollectionExists:
            from latentsearch.pipelines import default_name
            from latentsearch.storage.paths import resolve_root

            name = params["name"] or default_name(params.get("file") or params["source"])
            raise CollectionExists(
                f"collection {name} already exists at {resolve_root(params['root']) / name}; "
                "pass --overwrite to replace it, or choose another --name") from None
    return run


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(ls.__version__, prog_name="latentsearch")
def main() -> None:
    """Vector similarity search over latents learned from your own images and sentences.

    \b
    Example:
      latentsearch build images mnist
      latentsearch query mnist --id 7 -k 5
    """
    from latentsearch.progress import configure

    configure()  # the library's log lines on stderr; bars when stderr is a terminal


# -- build ---------------------------------------------------------------------------------


@main.group(cls=_Group)
def build() -> None:
    """Build a collection from images, text or vectors.

    \b
    Example:
      latentsearch build images mnist
      latentsearch build text notes.txt --name notes
      latentsearch build vectors emb.npy --labels labels.txt
    """


@build.command("vectors")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--labels", type=click.Path(dir_okay=False), help=".npy or a text file, one label a line.")
@click.option("--name", help="Collection name (default: the file's stem).")
@ROOT
@INDEX
@RECALL
@click.option("--metric", type=click.Choice(METRICS), default="l2", show_default=True)
@SHARDS
@RAY
@OVERWRITE
@QUIET
@JSON
@_cli_words
def build_vectors_cmd(file: str, labels: str | None, name: str | None, root: str | None,
                      index_spec: str, recall: float, metric: str, shards: int, ray: str | None,
                      overwrite: bool, quiet: bool, as_json: bool) -> None:
    """Index vectors made elsewhere: an (n, dim) float array in a .npy file.

    \b
    Example:
      latentsearch build vectors emb.npy --labels labels.txt --name emb
      latentsearch build vectors emb.npy --recall 0.99
      latentsearch build vectors emb.npy --ray auto --shards 4
    """
    from latentsearch.pipelines import default_name, load_labels

    labs = load_labels(labels) if labels else None
    col = ls.build_vectors(file, labs, name=name or default_name(file), root=root,
                           index=index_spec, metric=metric, overwrite=overwrite, quiet=quiet,
                           recall=recall, shards=shards, ray=ray)
    _built(col, as_json)


@build.command("images")
@click.argument("source")
@click.option("--name", help="Collection name (default: the source's name).")
@ROOT
@click.option("--encoder", type=click.Choice(["conv", "dense"]), default="conv", show_default=True)
@click.option("--latent-dim", type=click.IntRange(1, 4096), default=32, show_default=True)
@click.option("--size", type=click.IntRange(4, 1024), default=28, show_default=True,
              help="Images are resized to SIZE x SIZE.")
@click.option("--color", type=click.Choice(["gray", "rgb"]), default="gray", show_default=True)
@click.option("--fit", type=click.Choice(["crop", "pad", "stretch"]), default="crop",
              show_default=True,
              help="How non-square images become square: crop the centre, pad with black, or "
                   "stretch. Queries are made square the same way.")
@click.option("--epochs", type=click.IntRange(1, 10_000), default=None,
              help="Training epochs (default: the encoder's, with early stopping).")
@INDEX
@RECALL
@click.option("--metric", type=click.Choice(METRICS), default=None,
              help="Default: what the encoder recommends for its latents.")
@click.option("--seed", type=int, default=0, show_default=True)
@SHARDS
@RAY
@OVERWRITE
@QUIET
@JSON
@_cli_words
def build_images_cmd(source: str, name: str | None, root: str | None, encoder: str,
                     latent_dim: int, size: int, color: str, fit: str, epochs: int | None,
                     index_spec: str, recall: float, metric: str | None, seed: int,
                     shards: int, ray: str | None, overwrite: bool, quiet: bool,
                     as_json: bool) -> None:
    """Train an image autoencoder on SOURCE and index the latents.

    SOURCE: mnist (built-in 5,000 digits), mnist-full (needs the internet), a folder of
    .png/.jpg/.jpeg/.bmp/.gif/.webp/.tif images (subfolder names become labels; other
    files are listed as skipped), or a .npy/.npz array.

    \b
    Example:
      latentsearch build images ./photos --name photos --color rgb --size 64
      latentsearch build images ./photos --name photos --fit pad
      latentsearch build images /shared/photos --name photos --ray auto
    """
    col = ls.build_images(source, name=name, root=root, encoder=encoder, latent_dim=latent_dim,
                          size=size, color=color, fit=fit, epochs=epochs, index=index_spec,
                          metric=metric, seed=seed, overwrite=overwrite, quiet=quiet,
                          recall=recall, shards=shards, ray=ray)
    _built(col, as_json)


@build.command("text")
@click.argument("source")
@click.option("--name", help="Collection name (default: the source's name).")
@ROOT
@click.option("--dim", type=click.IntRange(2, 4096), default=None,
              help="Embedding dimension (default: the encoder's; with the prior, the most "
                   "dimensions, 2048).")
@click.option("--epochs", type=click.IntRange(1, 10_000), default=None)
@click.option("--train-extra", type=click.Path(dir_okay=False),
              help="More text to train the embeddings on (not indexed).")
@click.option("--prior", type=click.Choice(["wordnet", "none"]), default="wordnet",
              show_default=True,
              help="Start from the shipped English prior (WordNet 3.0), or learn from the "
                   "collection alone (none: other languages, private jargon).")
@INDEX
@RECALL
@click.option("--metric", type=click.Choice(METRICS), default="cosine", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@SHARDS
@RAY
@OVERWRITE
@QUIET
@JSON
@_cli_words
def build_text_cmd(source: str, name: str | None, root: str | None, dim: int | None,
                   epochs: int | None, train_extra: str | None, prior: str, index_spec: str,
                   recall: float, metric: str, seed: int, shards: int, ray: str | None,
                   overwrite: bool, quiet: bool, as_json: bool) -> None:
    """Train word embeddings on SOURCE and index pooled sentence vectors.

    SOURCE: news (built-in 300 articles), a .txt file (one item a line), or a .jsonl/.csv
    file with a `text` field and optional `label` and `id`.

    \b
    Example:
      latentsearch build text notes.txt --name notes
      latentsearch build text notizen.txt --prior none
      latentsearch build text corpus.jsonl --ray auto --shards 8
    """
    col = ls.build_text(source, name=name, root=root, dim=dim, epochs=epochs,
                        train_extra=train_extra, index=index_spec, metric=metric, seed=seed,
                        overwrite=overwrite, quiet=quiet, recall=recall,
                        prior=None if prior == "none" else prior, shards=shards, ray=ray)
    _built(col, as_json)


def _built(col: ls.Collection, as_json: bool) -> None:
    if as_json:
        _echo_json(col.info)
        return
    shards = col.manifest.get("shards")
    kind = (f"index {col.manifest['index']['factory']}" if shards is None
            else f"{len(shards)} shards")
    click.echo(f"built {col.name}: {_items(len(col))}, {col.dim}-d, {col.metric}, {kind} "
               f"at {col.path}")


# -- query ---------------------------------------------------------------------------------


def _parse_where(pairs: tuple[str, ...]) -> dict[str, Any] | None:
    """The ``--where`` arguments as one filter (latentsearch.filters): ANDed, checked now."""
    from latentsearch.filters import where_from_cli

    return where_from_cli(pairs)


@main.command()
@click.argument("name")
@ROOT
@click.option("--id", "item_id", type=int, help="Neighbours of a stored item (itself excluded).")
@click.option("--image", type=click.Path(dir_okay=False), help="Query by an image file.")
@click.option("--text", help="Query by a sentence.")
@click.option("--vector", type=click.Path(dir_okay=False),
              help="Query by one vector in a .npy file (always a vector: a wrong dimension is "
                   "an error).")
@click.option("-k", "k", type=click.IntRange(1, 100_000), default=10, show_default=True)
@click.option("--where", multiple=True, metavar="FILTER",
              help="Only items whose fields match: KEY=V, KEY!=V, KEY>V, KEY>=V, KEY<V, KEY<=V, "
                   "KEY=in:A,B (one of), KEY!=in:A,B (none of), or one JSON object "
                   "('{\"$or\": [{\"label\": 3}, {\"year\": {\"$lt\": 1990}}]}'). Values "
                   "that read as numbers compare as numbers (CSV cells too). Repeat to AND. "
                   "Fields: id (the engine's), label, source, text, source_id (the file's own "
                   "id) and every CSV column or JSONL key. E.g. --where label=3 "
                   "--where 'year>=2020' --where 'lang=in:en,fr'.")
@JSON
@click.option("--grid", type=click.Path(dir_okay=False),
              help="Write query and neighbours as one picture (.png, .jpg or .webp).")
@click.option("--recall", "recall", type=click.FloatRange(0.0, 1.0, min_open=True), default=None,
              help="recall@10 wanted: a point of the curve tuned at build time (no rebuild).")
@click.option("--exact", is_flag=True, help="Brute force over the stored vectors.")
def query(name: str, root: str | None, item_id: int | None, image: str | None, text: str | None,
          vector: str | None, k: int, where: tuple[str, ...], as_json: bool, grid: str | None,
          recall: float | None, exact: bool) -> None:
    """Find the nearest items to a stored item, an image, a sentence or a vector.

    \b
    Examples:
      latentsearch query mnist --id 7 -k 5
      latentsearch query news --text "bushfires near Sydney" -k 5
      latentsearch query mnist --image digit.png --grid out.png
      latentsearch query emb --id 3 --recall 0.99
      latentsearch query notes --text "late trains" --where 'year>=2020' --where lang=en
    """
    given = [x is not None for x in (item_id, image, text, vector)]
    if sum(given) != 1:
        raise click.UsageError("give exactly one of --id, --image, --text, --vector")
    if grid:
        from latentsearch.io.png import picture_format

        picture_format(grid)  # a suffix it cannot write is refused before the query
    col = ls.open(name, root)
    filt = _parse_where(where)
    knobs = {"recall": recall, "exact": exact}
    query_tile = None
    if item_id is not None:
        hits = col.neighbors(item_id, k=k, where=filt, **knobs)
        described: dict[str, Any] = {"id": item_id}
    elif image is not None:
        from latentsearch.pipelines import read_query_image

        query_tile = read_query_image(col, image)
        hits = col.search(image=query_tile, k=k, where=filt, **knobs)
        described = {"image": image}
    elif text is not None:
        hits = col.search(text=text, k=k, where=filt, **knobs)
        described = {"text": text}
    else:
        from latentsearch.pipelines import read_vectors_file

        vec = read_vectors_file(vector, f"--vector takes a .npy file of one vector ({col.dim},)")
        if vec.ndim == 2 and 1 in vec.shape:  # a (1, dim) row or a (dim, 1) column
            vec = vec.reshape(-1)
        hits = col.search(vector=vec, k=k, where=filt, **knobs)  # never guessed to be an image
        described = {"vector": vector}
    described.update({"collection": col.name, "k": k, "where": filt, "recall": recall,
                      "exact": exact})
    if grid:
        from latentsearch.report.pictures import write_query_grid

        write_query_grid(col, grid, hits, query_tile=query_tile, query_id=item_id,
                         query_name=Path(image).name if image else None)
        click.echo(f"wrote {grid}", err=True)
    if as_json:
        _echo_json({"query": described, "hits": [h.to_dict() for h in hits]})
        return
    from latentsearch.types import hits_table

    click.echo("\n".join(hits_table(hits)))


@main.command()
@click.argument("name")
@click.option("--out", "out", type=click.Path(dir_okay=False), required=True,
              help="File to write: .npy (one structured array) or .parquet (needs pyarrow).")
@click.option("-k", "k", type=click.IntRange(1, 10_000), default=10, show_default=True)
@click.option("--ray", "ray", metavar="ADDRESS", default=None,
              help="Split the work over a Ray cluster: auto (RAY_ADDRESS, or `ray start` "
                   "here), local (start one in this process), or host:port. Needs the ray extra.")
@ROOT
@QUIET
@JSON
def knn(name: str, out: str, k: int, ray: str | None, root: str | None, quiet: bool,
        as_json: bool) -> None:
    """Write every item's k nearest other items (the kNN graph) to one file.

    Row per item in id order: id, its neighbours nearest first, their distances; an item
    with fewer than k others gets id -1 / distance inf for the missing ones.

    \b
    Examples:
      latentsearch knn emb --out emb-knn.parquet -k 20
      latentsearch knn photos --out /shared/photos-knn.npy --ray auto
    """
    from latentsearch.scale.cluster import on_cluster
    from latentsearch.scale.knn import check_out, knn as write_knn

    check_out(out)  # a file it cannot write is refused before the collection or the cluster
    col = ls.open(name, root)
    with on_cluster(ray) as cluster:
        path = write_knn(col, out, k, cluster=cluster, quiet=quiet)
    if as_json:
        _echo_json({"collection": col.name, "items": len(col), "k": k, "out": str(path)})
        return
    click.echo(f"wrote the {k} nearest of {_items(len(col))} in {col.name} to {path}")


# -- changing ------------------------------------------------------------------------------


@main.command()
@click.argument("name")
@click.argument("source")
@ROOT
@click.option("--labels", type=click.Path(dir_okay=False), help="Labels for the new items.")
@WAIT
@RAY
@QUIET
@JSON
def add(name: str, source: str, root: str | None, labels: str | None, wait: float,
        ray: str | None, quiet: bool, as_json: bool) -> None:
    """Encode SOURCE with the stored encoder and append it; ids continue from the last.

    \b
    Example:
      latentsearch add emb more.npy --labels more_labels.txt
      latentsearch add photos /shared/new-photos --ray auto
    """
    col = ls.open(name, root)
    from latentsearch.pipelines import add_source

    ids = add_source(col, source, labels, wait=wait, quiet=quiet, ray=ray)
    if as_json:
        _echo_json({"collection": col.name, "added": len(ids), "ids": ids.tolist(),
                    "count": len(col)})
        return
    span = f"ids {ids[0]}..{ids[-1]}" if len(ids) else "nothing"
    click.echo(f"added {_items(len(ids))} to {col.name} ({span}); now {_items(len(col))}")


@main.command()
@click.argument("name")
@click.option("--id", "ids", type=int, multiple=True, required=True, help="Id to remove (repeat).")
@ROOT
@WAIT
@JSON
def remove(name: str, ids: tuple[int, ...], root: str | None, wait: float, as_json: bool) -> None:
    """Remove items by id; removed ids are never reused.

    The index keeps the removed items (hidden from every answer) until a compaction
    (`latentsearch compact`, or automatic past 10,000 removed), so a remove costs little.

    \b
    Example:
      latentsearch remove emb --id 3 --id 17
    """
    col = ls.open(name, root)
    n = col.remove(ids, wait=wait)
    if as_json:
        _echo_json({"collection": col.name, "removed": n, "count": len(col)})
        return
    click.echo(f"removed {_items(n)} from {col.name}; now {_items(len(col))}")


@main.command()
@click.argument("name")
@ROOT
@WAIT
@QUIET
@JSON
def compact(name: str, root: str | None, wait: float, quiet: bool, as_json: bool) -> None:
    """Fold recent adds into the main index and purge removed items from it.

    Adds are appended as small delta segments searched exactly beside the index, and
    removed items are hidden from answers until the index is rewritten; both happen
    automatically past 10,000 items. Compacting rewrites every file.

    \b
    Example:
      latentsearch compact emb
    """
    col = ls.open(name, root)
    pending, removed = col.info["deltas"]["items"], col.info["removed_pending"]
    col.compact(wait=wait, quiet=quiet)
    factory = col.manifest["index"]["factory"]
    if as_json:
        _echo_json({"collection": col.name, "folded": pending, "purged": removed,
                    "index": factory, "count": len(col)})
        return
    click.echo(f"compacted {col.name}: {_items(pending, 'delta item')} folded into {factory}, "
               f"{_items(removed, 'removed item')} purged; now {_items(len(col))}")


# -- looking -------------------------------------------------------------------------------


@main.command()
@click.argument("name")
@ROOT
@JSON
def info(name: str, root: str | None, as_json: bool) -> None:
    """Show what a collection holds: size, dimension, metric, index, encoder.

    \b
    Example:
      latentsearch info mnist
    """
    data = ls.open(name, root).info
    if as_json:
        _echo_json(data)
        return
    click.echo("\n".join(_info_lines(data)))


def _info_lines(data: dict[str, Any]) -> list[str]:
    """``Collection.info`` as a person reads it: one labelled line per fact (``--json`` has
    every field as stored)."""
    deltas, removed = data["deltas"], data["removed_pending"]
    entry = data["index"]
    head = [
        ("name", data["name"]),
        ("path", data["path"]),
        ("modality", data["modality"]),
        ("count", f"{_items(data['count'])} (next id {data['next_id']})"),
        ("dim", data["dim"]),
        ("metric", data["metric"]),
    ]
    tail = [
        ("recall target", f"{entry.get('target_recall', 0.95)} (recall@10, held-out queries)"),
        ("encoder", _encoder_text(data["encoder"])),
        ("deltas", f"{_items(deltas['segments'], 'segment')}, {_items(deltas['items'])}"
                   + (" (searched exactly beside the index until compacted)"
                      if deltas["items"] else "")),
        ("removed", _items(removed)
         + (" hidden, purged at the next compaction" if removed else "")),
        ("size", f"{_size(data['bytes'])} on disk"),
        ("created", data.get("created") or "?"),
        ("updated", data.get("updated") or "?"),
        ("generation", f"{data['generation']} (format {data['format_version']})"),
    ]
    return ([f"{key:>15}: {value}" for key, value in head] + _index_lines(entry)
            + [f"{key:>15}: {value}" for key, value in tail])


def _encoder_text(encoder: dict[str, Any]) -> str:
    """The encoder's name and the few settings a user asks about."""
    cfg = encoder.get("config", {})
    name = encoder.get("name", "?")
    if name == "vectors":
        return "none: vectors made elsewhere"
    if "latent_dim" in cfg:  # an image autoencoder
        size, fit = cfg.get("size", "?"), cfg.get("fit")
        text = (f"{name} autoencoder: {size}x{size} {cfg.get('color', '')} images -> "
                f"{cfg['latent_dim']}-d" + (f", fit {fit}" if fit else ""))
        if "epochs_run" in cfg:
            text += (f"; trained {_items(cfg['epochs_run'], 'epoch')} on "
                     f"{_items(cfg.get('n_train', 0), 'image')}")
        return text
    if name == "text":
        text = (f"pooled word embeddings, {cfg.get('dim', '?')}-d, vocabulary of "
                f"{_items(cfg.get('vocab_size', 0), 'word')}, prior {cfg.get('prior') or 'none'}")
        if "train_texts" in cfg:
            text += f"; trained on {_items(cfg['train_texts'], 'text')}"
        return text
    return name


def _size(n: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:,} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def _index_lines(entry: dict[str, Any]) -> list[str]:
    """The manifest's index entry as a few readable lines for `info`."""
    params = {k: v for k, v in entry.get("params", {}).items() if k != "tuned_recall"}
    shown = ", ".join(f"{k}={v}" for k, v in params.items())
    lines = [f"{'index':>15}: {entry['factory']} (spec {entry['spec']}"
             + (f"; {shown}" if shown else "") + ")"]
    if "tuned_recall" in entry.get("params", {}):
        lines.append(f"{'tuned':>15}: recall@10 {entry['params']['tuned_recall']:.3f} on "
                     f"{entry.get('holdout', '?')} held-out queries (target "
                     f"{entry.get('target_recall', 0.95)})")
    if entry.get("imbalance"):
        lines.append(f"{'imbalance':>15}: {entry['imbalance']}")
    curve = entry.get("curve") or []
    if curve:
        shown = ", ".join(f"{p['recall']:.3f}" for p in curve)
        lines.append(f"{'curve':>15}: {len(curve)} points, recall {shown}")
    for c in (entry.get("choice") or {}).get("candidates", []):
        mark = "  <- chosen" if c["spec"] == entry["choice"]["chosen"] else ""
        lines.append(f"{'candidate':>15}: {c['spec']:<6} {c['qps']:>9,} q/s at recall "
                     f"{c['recall']:.3f}, built in {c['build_s']} s{mark}")
    for spec, why in (entry.get("choice") or {}).get("left_out", {}).items():
        lines.append(f"{'left out':>15}: {spec}: {why}")
    return lines


@main.command("list")
@ROOT
@JSON
def list_cmd(root: str | None, as_json: bool) -> None:
    """List the collections under the root.

    \b
    Example:
      latentsearch list --root ./indexes
    """
    from latentsearch.storage.paths import resolve_root

    rows = ls.list_collections(root)
    if as_json:
        _echo_json(rows)
        return
    where = resolve_root(root).resolve()
    if not rows:
        click.echo(f"no collections in {where} (another folder: --root or $LATENTSEARCH_ROOT)")
        return
    click.echo(f"{_items(len(rows), 'collection')} in {where}:")
    for row in rows:
        if "error" in row:
            click.echo(f"{row['name']:<20} unreadable: {row['error']}")
        else:
            click.echo(f"{row['name']:<20} {row['modality']:<8} {row['count']:>9} x {row['dim']:<4} "
                       f"{row['metric']:<6} {row['index']}")


# -- the claim -----------------------------------------------------------------------------


@main.command()
@click.argument("name")
@ROOT
@click.option("-k", "k", type=click.IntRange(1, 1000), default=10, show_default=True)
@click.option("--sample", type=click.IntRange(1, 1_000_000), default=1000, show_default=True,
              help="How many items (seeded) query the collection.")
@click.option("--seed", type=int, default=0, show_default=True)
@JSON
@click.option("--plot", type=click.Path(dir_okay=False),
              help="Write the latent map and the agreement curve as a picture (.png, .jpg or "
                   ".webp; needs the plot extra).")
def evaluate(name: str, root: str | None, k: int, sample: int, seed: int, as_json: bool,
             plot: str | None) -> None:
    """Measure whether closer vectors mean same-label items, beside baselines.

    \b
    Example:
      latentsearch evaluate mnist --plot mnist.png
    """
    if plot:
        from latentsearch.report.pictures import check_plot_path

        check_plot_path(plot)  # suffix and matplotlib, before the evaluation runs
    col = ls.open(name, root)
    report = ls.evaluate(col, k=k, sample=sample, seed=seed)
    if plot:
        from latentsearch.report.pictures import write_report_png

        labels = [h.label for h in col.get(col.ids())]
        write_report_png(plot, report, col.vectors(), labels)
    if as_json:
        _echo_json(report.to_dict())
    else:
        click.echo(report.table())
    if plot:
        click.echo(f"wrote {plot}", err=True)


@main.command()
@ROOT
@click.option("--rebuild", is_flag=True, help="Rebuild the sample collections even if they exist.")
@click.option("--epochs", type=click.IntRange(1, 10_000), default=None, envvar="LATENTSEARCH_DEMO_EPOCHS",
              help="Training epochs for both encoders (default: theirs). For a quick look: 2.")
def demo(root: str | None, rebuild: bool, epochs: int | None) -> None:
    """Build the two built-in samples, query them, and show the claim with numbers and pictures.

    \b
    Example:
      latentsearch demo --root ./indexes
    """
    from latentsearch.report.demo import run_demo

    run_demo(root=root, rebuild=rebuild, epochs=epochs, echo=click.echo)



# -- serving -------------------------------------------------------------------------------


@main.command()
@click.argument("names", nargs=-1)
@ROOT
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; any other than 127.0.0.1, localhost or ::1 needs --token.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True,
              help="TCP port (0: a free one, printed).")
@click.option("--token", envvar="LATENTSEARCH_TOKEN", default=None, metavar="T",
              help="Every request but /health and the page needs 'Authorization: Bearer T' "
                   "(default: $LATENTSEARCH_TOKEN).")
@click.option("--read-only", is_flag=True, help="Refuse adds and removals (403).")
@click.option("--max-body", type=click.IntRange(1, None), default=20_000_000, show_default=True,
              metavar="BYTES", help="Largest request body (413 above).")
@click.option("--cors", multiple=True, metavar="ORIGIN",
              help="Let pages from ORIGIN call the API (repeat for more; default: none).")
@click.option("--ray", "ray", metavar="ADDRESS", default=None,
              help="Hold each shard of a sharded collection in a Ray actor on this cluster "
                   "(auto, local, or an address); unsharded collections stay in this process.")
def serve(names: tuple[str, ...], root: str | None, host: str, port: int, token: str | None,
          read_only: bool, max_body: int, cors: tuple[str, ...], ray: str | None) -> None:
    """Serve collections over HTTP (JSON API, OpenAPI at /docs) and a page to browse them at /.

    Serves the NAMES given, or every collection under the root (also those built later);
    collections changed on disk by other processes are reloaded.

    \b
    Example:
      latentsearch serve                      # http://127.0.0.1:8000/
      latentsearch serve mnist news --read-only
      latentsearch serve --host 0.0.0.0 --token "$(openssl rand -hex 16)"
      latentsearch serve big --ray auto       # big's shards in actors on the cluster
    """
    try:
        from latentsearch.serve.app import create_app
        from latentsearch.serve import server
    except ImportError as exc:
        raise InvalidInput(f"serve needs the serve extra: pip install 'latentsearch[serve]' "
                           f"({exc})") from None
    from latentsearch.scale.cluster import on_cluster

    server.check_exposure(host, token)
    with on_cluster(ray) as cluster:
        app = create_app(root, list(names) or None, token=token or None, read_only=read_only,
                         max_body=max_body, cors=list(cors) or None, cluster=cluster)
        sock = server.bind(host, port)
        count = len(app.state.registry.names())

        def announce(url: str) -> None:
            click.echo(f"serving {count} collection{'' if count == 1 else 's'} at {url}"
                       + (" (shards on the Ray cluster)" if cluster is not None else ""))

        server.run(app, sock, announce=announce)

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

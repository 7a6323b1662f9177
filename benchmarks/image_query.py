"""Cold image queries: ``python -m benchmarks.image_query``.

    python -m benchmarks.image_query                  # writes the image-query section of RESULTS.md
    python -m benchmarks.image_query --runs 3 --no-write            # a quick look

What a user waits for: ``latentsearch query NAME --image FILE -k 10 --json`` in a fresh
process each time (interpreter start, imports, opening the collection, reading and encoding
the image, the search), for

* a 1600 x 1200 JPEG (a phone-sized photo, quality 90), which Pillow decodes through
  ``draft`` at 1/8 scale and centre-crops and resizes to the collection's size, against
* a PNG already of the collection's size (28 x 28 gray): no resize at all.

Each file is queried by ``--runs`` fresh processes, interleaved (JPEG, PNG, JPEG, ...) so a
change of the machine's load falls on both; the figures are medians of wall time and of
peak resident memory (the child's ``ru_maxrss``). Then one more run of each under
``python -X importtime`` lists the TensorFlow / Keras modules imported (none expected) and
the slowest imports. Target (issue #14): the JPEG within 1.5x of the PNG, without
TensorFlow. The collection (the built-in mnist, conv, 1 epoch: the encoder's quality does
not matter here) is built once under ``--work`` and reused.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np

from benchmarks._data import median, write_section

REPO = Path(__file__).resolve().parents[1]

#: runs the CLI in this process and reports its peak memory on stderr as it exits (VmHWM:
#: ru_maxrss would carry over this benchmark's own peak through fork and exec)
_CHILD = (
    "import atexit, re, runpy, sys\n"
    "peak = lambda: re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1)\n"
    "atexit.register(lambda: print('MAXRSS', peak(), file=sys.stderr))\n"
    "sys.argv = ['latentsearch'] + sys.argv[1:]\n"
    "runpy.run_module('latentsearch', run_name='__main__')\n"
)


def photo(side_w: int = 1600, side_h: int = 1200, seed: int = 0) -> np.ndarray:
    """A photo-like RGB picture: a digit of the sample, enlarged and tinted, over a smooth
    gradient with sensor noise (JPEG has real work to do)."""
    from latentsearch.io.images import load_image_source

    digit = load_image_source("mnist", limit=10).images[3, :, :, 0].astype(np.float32)
    rng = np.random.default_rng(seed)
    from PIL import Image

    big = np.asarray(Image.fromarray(digit.astype(np.uint8)).resize((side_h, side_h),
                                                                     Image.Resampling.BICUBIC))
    y, x = np.mgrid[0:side_h, 0:side_w].astype(np.float32)
    ground = 40 + 50 * (x / side_w) + 30 * (y / side_h)
    img = np.repeat(ground[..., None], 3, axis=-1)
    left = (side_w - side_h) // 2
    img[:, left : left + side_h] += big[..., None] * np.array([0.8, 0.7, 0.6], np.float32)
    img += rng.normal(0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def prepare(work: Path) -> tuple[Path, Path, Path]:
    """(root, the JPEG, the PNG): the collection built once, the two query files."""
    import latentsearch as ls
    from PIL import Image

    root = work / "root"
    try:
        col = ls.open("mnist", root)
    except ls.CollectionNotFound:
        print("building mnist (conv, 1 epoch) under", root, flush=True)
        col = ls.build_images("mnist", root=root, epochs=1, quiet=True)
    img = photo()
    jpeg = work / "photo.jpg"
    Image.fromarray(img).save(jpeg, quality=90)
    png = work / "query.png"
    side = int(col.manifest["encoder"]["config"]["size"])
    Image.fromarray(img).convert("L").resize((side, side), Image.Resampling.BILINEAR).save(png)
    return root, jpeg, png


def cold_query(root: Path, path: Path) -> tuple[float, float]:
    """(seconds, peak MB) of one fresh ``latentsearch query mnist --image PATH`` process."""
    args = [sys.executable, "-c", _CHILD, "query", "mnist", "--root", str(root), "--image",
            str(path), "-k", "10", "--json"]
    t = time.perf_counter()
    out = subprocess.run(args, capture_output=True, text=True, cwd=REPO)
    seconds = time.perf_counter() - t
    if out.returncode:
        raise SystemExit(f"query failed: {out.stderr[-2000:]}")
    rss_kb = int(re.search(r"MAXRSS (\d+)", out.stderr).group(1))
    return seconds, rss_kb / 1024


def import_profile(root: Path, path: Path) -> tuple[list[str], list[tuple[float, str]]]:
    """(TensorFlow / Keras modules imported, the 8 slowest imports by cumulative ms) of one
    query under ``python -X importtime``."""
    args = [sys.executable, "-X", "importtime", "-m", "latentsearch", "query", "mnist",
            "--root", str(root), "--image", str(path), "-k", "10", "--json"]
    out = subprocess.run(args, capture_output=True, text=True, cwd=REPO)
    rows = []
    for line in out.stderr.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)", line)
        if m:
            rows.append((int(m.group(2)) / 1000, len(m.group(3)), m.group(4)))
    heavy = [name for _, _, name in rows if name.split(".")[0] in ("tensorflow", "keras")]
    top = sorted(((ms, name) for ms, depth, name in rows if depth <= 1), reverse=True)[:8]
    return heavy, top


def read_time(root: Path, path: Path, repeats: int = 20) -> float:
    """Median ms of reading ``path`` as the collection takes it, in this process (warm)."""
    import latentsearch as ls
    from latentsearch.pipelines import read_query_image

    col = ls.open("mnist", root)
    read_query_image(col, path)
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        read_query_image(col, path)
        out.append((time.perf_counter() - t) * 1000)
    return median(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.image_query",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5, help="fresh processes per file")
    ap.add_argument("--work", default="/tmp/bench-image-query",
                    help="where the collection and the query files go")
    ap.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    args = ap.parse_args(argv)
    work = Path(args.work).resolve()
    if REPO in work.parents or work == REPO:
        ap.error("--work must be outside the repository")
    work.mkdir(parents=True, exist_ok=True)
    root, jpeg, png = prepare(work)

    times: dict[str, list[float]] = {"jpeg": [], "png": []}
    rss: dict[str, list[float]] = {"jpeg": [], "png": []}
    cold_query(root, png)  # the first run after a build also pays the page cache
    for i in range(args.runs):
        for kind, path in (("jpeg", jpeg), ("png", png)):
            s, mb = cold_query(root, path)
            times[kind].append(s)
            rss[kind].append(mb)
            print(f"  run {i + 1} {kind}: {s:.3f} s, {mb:.0f} MB", flush=True)
    heavy, top = import_profile(root, jpeg)
    read_ms = {"jpeg": read_time(root, jpeg), "png": read_time(root, png)}

    t_jpeg, t_png = median(times["jpeg"]), median(times["png"])
    ratio = t_jpeg / t_png
    lines = [
        "### Cold image queries (`python -m benchmarks.image_query`)",
        "",
        f"`latentsearch query mnist --image FILE -k 10 --json`, a fresh process each time, "
        f"median of {args.runs} interleaved runs; the collection is the built-in mnist "
        "(28 x 28 gray, conv encoder).",
        "",
        "| query file | wall time | peak memory | reading the file (warm, in-process) |",
        "| --- | ---: | ---: | ---: |",
        f"| 1600 x 1200 JPEG (quality 90) | {t_jpeg:.3f} s | {median(rss['jpeg']):.0f} MB "
        f"| {read_ms['jpeg']:.1f} ms |",
        f"| 28 x 28 PNG (the collection's size) | {t_png:.3f} s | {median(rss['png']):.0f} MB "
        f"| {read_ms['png']:.2f} ms |",
        "",
        f"JPEG / PNG: **{ratio:.2f}x** (target: within 1.5x). TensorFlow / Keras modules "
        f"imported by the JPEG query (`python -X importtime`): "
        f"**{len(heavy)}**{' (' + ', '.join(heavy[:5]) + ')' if heavy else ''}. Before Pillow, "
        "a JPEG query imported TensorFlow to decode and resize: 3-6 s and ~600 MB (issue #14).",
        "",
        "Slowest imports of that query (cumulative ms): "
        + ", ".join(f"{name} {ms:.0f}" for ms, name in top) + ".",
    ]
    text = "\n".join(lines)
    print("\n" + text)
    if not args.no_write:
        write_section(Path(__file__).parent / "RESULTS.md", "image-query", text)
    return 0 if ratio <= 1.5 and not heavy else 1


if __name__ == "__main__":
    sys.exit(main())

"""Scale-out on a local Ray cluster beside one process: ``python -m benchmarks.scale``.

    python -m benchmarks.scale                          # ~20 min here; writes the scale section
    python -m benchmarks.scale --n 100000 --no-write    # a quick look (~6 min)

Every row runs in a fresh subprocess of this script (so a peak RSS is that row's own): the
one-process call, or the same call after ``ray.init(num_cpus=1)`` / ``num_cpus=2`` inside that
subprocess (its driver then holds Ray's core worker too; the Ray system processes it starts -
GCS, raylet, agents - are measured apart). The rows, side by side:

1. ``build_vectors`` of 1M x 32 hard vectors (``benchmarks._data.Mixture``, seed 0, stream 1,
   from a .npy), index ``ivf`` and ``auto``: build s, the index fill (tasks, and the driver's
   merge), the top-10 ids of 1,000 held-out queries (stream 2) against the one-process build.
2. ``build_images`` of the 5,000 built-in mnist digits (2 epochs), and of the same digits as
   PNG files in a folder (where the workers decode): decode, TF import, train, encode and
   index phases, answers (the one-process build's first 1,000 vectors as queries) and the
   vectors' max abs difference.
3. ``latentsearch.scale.knn.knn`` of the one-process 1M ivf collection, k=10: s, equal output.

Memory: the driver's ``ru_maxrss``; Ray workers and system processes sampled from /proc over
the driver's descendants every 0.2 s, with the workers' CPU seconds (the split). The machine
is shared: before a row the script waits (``--wait-max``, 60 s) for the 1-minute load to fall
below 1, and records the load at the start and end of every row. Writes the "scale" section
of benchmarks/RESULTS.md; ``--render results.json`` rewrites it from a run's saved figures.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from benchmarks._data import Mixture, write_section

IMAGE_PART = 1_250  # images per partition here (PART_ITEMS' 5,000 would make mnist one task)
EPOCHS, K = 2, 10
RUNS = {0: "one process", 1: "ray 1 worker", 2: "ray 2 workers"}


def load1() -> float:
    return round(os.getloadavg()[0], 2)


# -- memory and CPU of the processes a row starts (/proc) -----------------------------------


def _stat(pid: int | str) -> list[str]:
    return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()  # [0] is field 3, state


def _descendants(root: int) -> list[int]:
    kids: dict[int, list[int]] = {}
    for d in filter(str.isdigit, os.listdir("/proc")):
        try:
            kids.setdefault(int(_stat(d)[1]), []).append(int(d))
        except (OSError, IndexError, ValueError):
            continue
    out, todo = [], [root]
    while todo:
        children = kids.get(todo.pop(), [])
        out += children
        todo += children
    return out


def _proc(pid: int) -> tuple[str, float, float] | None:
    """(command line, RSS MB, CPU s) of ``pid``, None once it is gone."""
    try:
        cmd = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode(errors="replace")
        rss = next(int(ln.split()[1]) for ln in open(f"/proc/{pid}/status") if ln.startswith("VmRSS:"))
        f = _stat(pid)
        return cmd, rss / 1024, (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, StopIteration, IndexError, ValueError):
        return None


class Sampler(threading.Thread):
    """Peak RSS and CPU s per Ray worker process; peak summed RSS of the other descendants."""

    def __init__(self):
        super().__init__(daemon=True)
        self.stop, self.lock = threading.Event(), threading.Lock()
        self.peak, self.cpu, self.base, self.system = {}, {}, {}, 0.0

    def sample(self) -> None:
        system = 0.0
        with self.lock:
            for pid in _descendants(os.getpid()):
                cmd, rss, cpu = _proc(pid) or ("", 0.0, 0.0)
                if cmd.startswith("ray::") or "default_worker.py" in cmd:
                    self.peak[pid], self.cpu[pid] = max(self.peak.get(pid, 0.0), rss), cpu
                else:
                    system += rss
            self.system = max(self.system, system)

    def mark(self) -> None:  # the measured call starts: CPU counts from here
        self.sample()
        self.base = dict(self.cpu)

    def run(self) -> None:
        while not self.stop.wait(0.2):
            self.sample()

    def report(self) -> dict:
        self.sample()
        self.stop.set()
        used = [c - self.base.get(pid, 0.0) for pid, c in self.cpu.items()]
        return {"worker_mb": max(self.peak.values(), default=0.0), "system_mb": self.system,
                "worker_cpu": sorted((round(c, 1) for c in used if c >= 0.1), reverse=True),
                "worker_procs": len(self.cpu)}


# -- one row, in its own process --------------------------------------------------------------


def _warm(i: int) -> int:
    """A worker task importing what the real ones import (pickled by value from __main__)."""
    import faiss  # noqa: F401

    import latentsearch.scale.build  # noqa: F401

    time.sleep(0.5)  # long enough that each worker takes one
    return os.getpid()


def _timing_patches(phases: dict, starts: dict, events: list) -> None:
    """Wrap the phases' seams to time them (behaviour unchanged); log lines to ``events``."""
    import logging

    import latentsearch.index.tune as tune
    import latentsearch.io.images as images
    import latentsearch.pipelines as pipelines
    from latentsearch.index import building
    from latentsearch.scale.cluster import Cluster

    def timed(fn, key):
        def wrapper(*a, **kw):
            t = time.perf_counter()
            starts.setdefault(key, t)
            try:
                return fn(*a, **kw)
            finally:
                phases[key] = phases.get(key, 0.0) + time.perf_counter() - t
        return wrapper

    def build(factory, *a, fill=None, **kw):  # the fill: here (add) or on the cluster
        inner = fill or (lambda index, v, i, skip: building.add(index, v, i, skip=skip) or index)
        return orig_build(factory, *a, fill=timed(inner, f"fill {factory}"), **kw)

    orig_build, orig_map, tune.build = tune.build, Cluster.map, build
    Cluster.map = lambda self, fn, jobs, **kw: timed(orig_map, f"map {kw['desc']}")(self, fn, jobs, **kw)
    for mod, name, key in ((pipelines, "store", "index+write"), (pipelines, "import_tensorflow", "tf import"),
                           (pipelines, "_decode_folder", "decode"), (images, "load_image_source", "decode")):
        setattr(mod, name, timed(getattr(mod, name), key))

    class Events(logging.Handler):
        def emit(self, record):
            events.append((time.perf_counter(), record.getMessage()))

    logging.getLogger("latentsearch").setLevel(logging.DEBUG)
    logging.getLogger("latentsearch").addHandler(Events())


def run_row(spec: dict) -> dict:
    """One row's call, measured, in this (fresh) process."""
    import logging

    import latentsearch as ls
    import latentsearch.scale.build as scale_build
    from latentsearch.scale.cluster import connect
    from latentsearch.scale.knn import knn

    scale_build.PART_ITEMS["image"] = IMAGE_PART
    phases, starts, events = {}, {}, []
    _timing_patches(phases, starts, events)
    sampler = Sampler()
    sampler.start()
    out: dict = {"load_start": load1()}
    workers, ray = spec["workers"], None
    if workers:
        import ray

        rss0, t = _proc(os.getpid())[1], time.perf_counter()
        ray.init(num_cpus=workers, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
        connect("local").map(_warm, list(range(workers)), desc="warm", quiet=True)
        out.update(ray_start_s=time.perf_counter() - t, driver_ray_mb=_proc(os.getpid())[1] - rss0)
        phases.clear()
        starts.clear()
    col = ls.open("c", spec["root"]) if spec["kind"] == "knn" else None
    sampler.mark()
    where, cpu0, t = "local" if workers else None, os.times(), time.perf_counter()
    if spec["kind"] == "vectors":
        ls.build_vectors(spec["source"], name="c", root=spec["root"], index=spec["index"], ray=where)
    elif spec["kind"] == "images":
        ls.build_images(spec["source"], name="c", root=spec["root"], epochs=EPOCHS, quiet=True, ray=where)
    else:
        knn(col, spec["out"], K, cluster=connect("local") if workers else None)
    out["s"], cpu1 = time.perf_counter() - t, os.times()
    out["driver_cpu"] = cpu1.user + cpu1.system - cpu0.user - cpu0.system
    out["driver_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out.update(sampler.report(), phases=phases)
    trained = [(ts, m) for ts, m in events if m.startswith("trained in")]
    if trained:  # train s from its log line; encode s: from then to the index
        out["train_s"] = float(trained[0][1].split()[2].rstrip("s"))
        out["encode_s"] = starts["index+write"] - trained[0][0]
    if ray is not None:
        ray.shutdown()
    out["load_end"] = load1()
    return out


# -- the driver of the benchmark -----------------------------------------------------------


def row(spec: dict, work: Path, wait_max: float) -> dict:
    waited = 0.0
    while load1() > 1.0 and waited < wait_max:
        time.sleep(5)
        waited += 5
    logf, result = work / f"row-{spec['label']}.log", work / f"row-{spec['label']}.json"
    with open(logf, "wb") as err:
        done = subprocess.run([sys.executable, "-m", "benchmarks.scale", "--row", json.dumps(spec), "--result",
                               str(result)], stdout=err, stderr=err, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    if done.returncode:
        raise RuntimeError(f"row {spec['label']} failed:\n{logf.read_text()[-3000:]}")
    got = dict(json.loads(result.read_text()), **spec, waited=waited)
    print(f"[{time.strftime('%H:%M:%S')}] {spec['label']}: {got['s']:.1f} s, load {got['load_start']} -> "
          f"{got['load_end']}", file=sys.stderr, flush=True)
    return got


def compare(spec: dict, ref: dict, queries: np.ndarray | None) -> dict:
    """``spec``'s collection against ``ref``'s: top-10 ids per query (differing rows with the
    same distances are ties in another order), and the vectors' max abs difference."""
    import latentsearch as ls

    a, b = ls.open("c", ref["root"]), ls.open("c", spec["root"])
    q = queries if queries is not None else a.vectors(a.ids()[:1000])
    (da, ia), (db, ib) = a.nearest(q, K), b.nearest(q, K)
    same = np.all(ia == ib, axis=1)
    got = {"differ": int((~same).sum()), "factory": b.manifest["index"]["factory"],
           "ties": int(np.sum(~same & np.all(np.isclose(da, db, rtol=1e-5, atol=1e-6), axis=1)))}
    if queries is None and np.array_equal(a.ids(), b.ids()):
        got["max_diff"] = float(np.abs(a.vectors() - b.vectors()).max())
    return got


def write_pngs(folder: Path) -> None:
    from PIL import Image

    from latentsearch.io.images import load_image_source

    data = load_image_source("mnist")
    for i, (img, lab) in enumerate(zip(data.images, data.labels)):
        (folder / str(lab)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(img[..., 0]).save(folder / str(lab) / f"{i:05d}.png")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--work", type=Path, default=None, help="folder for data and collections (default: temp)")
    ap.add_argument("--wait-max", type=float, default=60.0, help="s to wait for the load to fall below 1")
    ap.add_argument("--no-write", action="store_true", help="print the section, leave RESULTS.md")
    ap.add_argument("--render", type=Path, help="rewrite the section from a run's results.json")
    ap.add_argument("--only", help="rows of one kind only, e.g. images-folder (prints, never writes)")
    ap.add_argument("--row", help=argparse.SUPPRESS)
    ap.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.row:  # one row, in this fresh process: its figures to --result
        args.result.write_text(json.dumps(run_row(json.loads(args.row))))
        return 0
    if args.render:
        run = json.loads(args.render.read_text())
    else:
        run = {"started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "n": args.n, "git": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()}
        t_all, work = time.perf_counter(), args.work or Path(tempfile.mkdtemp(prefix="scale-bench-"))
        run["results"] = measure(args.n, work, args.wait_max, args.only)
        run["minutes"] = (time.perf_counter() - t_all) / 60
        (work / "results.json").write_text(json.dumps(run, indent=1))
        if args.work is None:
            shutil.copy(work / "results.json", Path(tempfile.gettempdir()) / "scale-results.json")
            shutil.rmtree(work, ignore_errors=True)
    text = report(run)
    print(text)
    if not (args.no_write or args.only):
        write_section(Path(__file__).with_name("RESULTS.md"), "scale", text)
    return 0


def measure(n: int, work: Path, wait_max: float, only: str | None = None) -> list[dict]:
    work.mkdir(parents=True, exist_ok=True)
    mix = Mixture(seed=0)
    np.save(work / "vectors.npy", mix.sample(n if only in (None, "vectors-ivf", "vectors-auto", "knn-knn") else 1000, 1))
    queries = mix.sample(1000, 2)
    write_pngs(work / "digits")
    specs = [dict(kind="vectors", what=ix, index=ix, workers=w, source=str(work / "vectors.npy"))
             for ix in ("ivf", "auto") for w in (0, 1, 2)]
    specs += [dict(kind="images", what="mnist", source="mnist", workers=w) for w in (0, 1, 2)]
    specs += [dict(kind="images", what="folder", source=str(work / "digits"), workers=w) for w in (0, 2)]
    specs += [dict(kind="knn", what="knn", workers=w, out=str(work / f"knn-{w}.npy")) for w in (0, 1, 2)]
    if only:
        specs = [s for s in specs if f"{s['kind']}-{s['what']}" == only]
    results, refs = [], {}
    for spec in specs:
        spec.update(label=f"{spec['kind']}-{spec['what']}-{spec['workers']}", run=RUNS[spec["workers"]])
        spec["root"] = refs[("vectors", "ivf")]["root"] if spec["kind"] == "knn" else str(work / spec["label"])
        got = row(spec, work, wait_max)
        ref = refs.setdefault((spec["kind"], spec["what"]), got)
        if spec["kind"] == "knn":
            got["equal"] = bool(np.array_equal(np.load(ref["out"])["neighbors"], np.load(spec["out"])["neighbors"]))
        else:
            got.update(compare(spec, ref, queries if spec["kind"] == "vectors" else None))
        got["ratio"] = got["s"] / ref["s"]
        results.append(got)
    return results


# -- the section ------------------------------------------------------------------------------


def _f(x, fmt: str = "{:.1f}") -> str:
    return "-" if x is None else fmt.format(x)


def _phase(r: dict, prefix: str) -> float:
    return sum(v for k, v in r["phases"].items() if k.startswith(prefix))


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + ["| " + " | ".join(r) + " |" for r in rows]


MEM = ["ray start s", "driver peak RSS MB (Ray's part)", "largest worker peak RSS MB", "Ray system processes MB",
       "driver CPU s", "worker CPU s (per process)", "load 1-min start -> end"]
FILL_TASKS, ENCODE_TASKS = "map filling the index on the cluster", "map encoding on the cluster"


def _common(r: dict) -> list[str]:
    cpu = " + ".join(f"{c:.1f}" for c in r["worker_cpu"]) or "0"
    return [_f(r.get("ray_start_s")), f"{r['driver_mb']:.0f}" + (f" ({r['driver_ray_mb']:.0f})" if r["workers"] else ""),
            _f(r["worker_mb"] or None, "{:.0f}"), _f(r["system_mb"] or None, "{:.0f}"), f"{r['driver_cpu']:.1f}",
            f"{cpu} ({r['worker_procs']} procs)" if r["workers"] else "-",
            f"{r['load_start']} -> {r['load_end']}" + (f" (waited {r['waited']:.0f} s)" if r["waited"] else "")]


def _equal(r: dict) -> str:
    d = r["differ"]
    return "1000/1000" if d == 0 else f"{1000 - d}/1000 ({r['ties']} of the {d} others: same distances, ties)"


def report(run: dict) -> str:
    n, results = run["n"], run["results"]
    of = lambda kind: [r for r in results if r["kind"] == kind]  # noqa: E731
    vec = [[r["index"], r["run"], f"`{r['factory']}`", f"{r['s']:.1f}", f"{n / r['s']:,.0f}", f"{r['ratio']:.2f}",
            f"{_phase(r, 'fill '):.1f}", _f(r["phases"].get(FILL_TASKS)), *_common(r), _equal(r)] for r in of("vectors")]
    img = [["mnist (built-in)" if r["what"] == "mnist" else "folder of PNGs", r["run"],
            _f(r["phases"].get("decode"), "{:.2f}"), _f(r["phases"].get("tf import")), _f(r.get("train_s")),
            _f(r.get("encode_s"), "{:.2f}"), _f(r["phases"].get("index+write"), "{:.2f}"), f"{r['s']:.1f}",
            f"{5000 / r['s']:,.0f}", f"{r['ratio']:.2f}", *_common(r), _equal(r), _f(r.get("max_diff"), "{:.1e}")]
           for r in of("images")]
    nn = [[r["run"], f"{r['s']:.1f}", f"{n / r['s']:,.0f}", f"{r['ratio']:.2f}", _f(r["phases"].get(
        "map knn on the cluster")), *_common(r), "yes" if r["equal"] else "NO"] for r in of("knn")]
    command = "python -m benchmarks.scale" + ("" if n == 1_000_000 else f" --n {n}")
    return "\n".join([
        "## Scale-out on Ray (`python -m benchmarks.scale`)", "",
        f"Run {run['started']} (git {run['git']}), 2 cores, load average (1-minute) {results[0]['load_start']} at "
        f"the start and {results[-1]['load_end']} at the end (each row's in its load column; the machine is "
        f"shared); `{command}`, {run['minutes']:.1f} min in all.",
        "Every row is a fresh process: the one-process call, or the same call after `ray.init(num_cpus=1|2)` in "
        "that process (`ray=\"local\"` reuses it) and one warm-up task per worker (ray start s = init + workers "
        "importing faiss and latentsearch; not in the row's s). Peak RSS: the driver's `ru_maxrss` (Ray's part: "
        "its RSS growth over `ray.init`); workers, and Ray's system processes (GCS, raylet, agents; summed), "
        "sampled from /proc every 0.2 s. CPU s: during the measured call only, a worker's per process (the split). "
        f"Images: partitions of {IMAGE_PART:,} (`PART_ITEMS` set here; its 5,000 would make the digits one task).",
        "", f"### `build_vectors` of {n:,} x 32 hard vectors (Mixture seed 0, from a .npy; answers: top-10 ids of "
        "1,000 held-out queries, against the one-process build)", "",
        *_table(["index", "run", "factory", "build s", "items/s", "time / one process", "index fill s",
                 "of it, tasks s", *MEM, "answers equal"], vec), "",
        f"### `build_images` of the 5,000 built-in mnist digits, conv, {EPOCHS} epochs (answers: top-10 ids for "
        "the one-process build's first 1,000 vectors)", "",
        *_table(["source", "run", "load / decode s (driver)", "TF import s", "train s", "encode s", "index + write s",
                 "build s", "items/s", "time / one process", *MEM, "answers equal", "vectors max abs diff"], img), "",
        f"### `knn` of the one-process {n:,} `ivf` collection, k={K}, to .npy", "",
        *_table(["run", "knn s", "items/s", "time / one process", "tasks s", *MEM, "neighbours equal"], nn), "",
        "### Per-item costs on this machine (µs per item; for sizing the plan)", "",
        *_table(["cost", "µs/item", "from"], [[a, f"{b:,.1f}", c] for a, b, c in per_item(results, n)])]) + "\n"


def per_item(results: list[dict], n: int) -> list[tuple[str, float, str]]:
    by, cpu = {r["label"]: r for r in results}, lambda r: sum(r["worker_cpu"])
    wall = lambda key: lambda r: r["phases"].get(key)  # noqa: E731
    rows = [("decode a 28x28 PNG (read, decode, resize)", "images-folder-0", wall("decode"), 5000, "folder, one process"),
            ("train the conv encoder, per item and epoch", "images-mnist-0", lambda r: r.get("train_s"), 5000 * EPOCHS,
             "mnist, one process"),
            ("encode (Keras, on the driver)", "images-mnist-0", lambda r: r.get("encode_s"), 5000, "mnist, one process"),
            ("encode on 1 worker (numpy copy), wall of the tasks", "images-mnist-1", wall(ENCODE_TASKS), 5000, "mnist, ray 1"),
            ("encode on the workers, CPU summed over them", "images-mnist-2", cpu, 5000, "mnist, ray 2"),
            ("decode + encode on the workers, CPU summed", "images-folder-2", cpu, 5000, "folder, ray 2"),
            ("decode + encode on 2 workers, wall of the tasks", "images-folder-2", wall(ENCODE_TASKS), 5000, "folder, ray 2"),
            ("IVF fill (add to the lists), one process", "vectors-ivf-0", lambda r: _phase(r, "fill "), n, "ivf"),
            ("IVF fill on 2 workers, wall of the tasks", "vectors-ivf-2", wall(FILL_TASKS), n, "ivf, ray 2"),
            ("IVF merge on the driver (deserialise, merge_from)", "vectors-ivf-2",
             lambda r: _phase(r, "fill ") - r["phases"].get(FILL_TASKS, 0.0), n, "ivf, ray 2"),
            ("whole `ivf` build (train, fill, tune, write, checksums)", "vectors-ivf-0", lambda r: r["s"], n, "one process"),
            ("whole `auto` build (every candidate built and timed)", "vectors-auto-0", lambda r: r["s"], n, "one process"),
            ("knn k=10, one process (FAISS on 2 threads), wall", "knn-knn-0", lambda r: r["s"], n, "one process"),
            ("knn k=10, CPU summed over 2 workers (1 thread each)", "knn-knn-2", cpu, n, "ray 2"),
            ("knn k=10 on 2 workers, wall", "knn-knn-2", lambda r: r["s"], n, "ray 2")]
    return [(name, value(by[label]) / per * 1e6, src) for name, label, value, per, src in rows
            if label in by and value(by[label]) is not None]


if __name__ == "__main__":
    raise SystemExit(main())

"""latentsearch beside the libraries a user would pick instead, on data where ANN is hard.

    pip install -e ".[bench]"          # hnswlib, usearch (chromadb, lancedb: optional)
    python -m benchmarks.peers                       # 100k and 1M, writes benchmarks/RESULTS.md
    python -m benchmarks.peers --sizes 100000 --no-write
    python -m benchmarks.peers --vectors sts_vectors.npy --section peers-real   # real latents

Real latents as measured in RESULTS.md: every distinct sentence of ../shared/data/stsb_*.tsv
(columns 6 and 7, whitespace folded, first occurrence order) one a line in sts.txt, then
``latentsearch build text sts.txt --name sts`` and
``np.save("sts_vectors.npy", latentsearch.open("sts").vectors())``.

The data (the speed issue's recipe): 1,000 centres ``default_rng(12345).standard_normal((1000,
32))``, points ``centre + standard_normal`` (no scaling), so the clusters overlap heavily; 1,000
queries drawn the same way from another stream, never stored; exact L2 top-10 as truth.

Every system runs in its own fresh process (one after another, same data files), so its peak
memory is its own: build, then a sweep of its search parameter (a recall/q/s curve), each point
timed as the best of ``REPS`` batch searches of the 1,000 queries, plus the median latency of
200 single queries at the point nearest recall 0.95. Batch searches use both cores in every
system. latentsearch is measured through its public API (`build_vectors`, `search_batch` with
``recall=``), records and Hit objects included; its sweep is the curve stored at build time.

The ratio table: at recall R (0.95, 0.99), our q/s at the cheapest point reaching R over the
fastest peer's q/s at the cheapest point of its own that reaches R.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPS = 3
K = 10
TARGETS = (0.95, 0.99)
PEERS = ("faiss-hnsw", "hnswlib-m16", "hnswlib-m32", "usearch", "faiss-ivf", "chroma", "lancedb")
SYSTEMS = ("latentsearch",) + PEERS
SLOW = {"chroma": 100_000, "lancedb": 100_000}
BANDWIDTH = 0.0  # GB/s, measured by the driver  # measured up to this size only (build time)


def overlapping(n: int, stream: int, seed: int = 12345) -> np.ndarray:
    centres = np.random.default_rng(seed).standard_normal((1000, 32)).astype(np.float32)
    rng = np.random.default_rng([seed, stream])
    out = np.empty((n, 32), np.float32)
    for start in range(0, n, 200_000):
        m = min(200_000, n - start)
        out[start : start + m] = centres[rng.integers(0, 1000, m)] + rng.standard_normal((m, 32), dtype=np.float32)
    return out


def _peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(np.intersect1d(f[f >= 0], t)) for f, t in zip(found, truth)]) / K)


def _best_time(fn, reps: int = REPS) -> tuple[object, float]:
    best, out = np.inf, None
    for _ in range(reps):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return out, best


def bandwidth_gbs() -> float:
    """Memory read bandwidth of this machine with both cores (numpy sums of a 256 MB array in
    two threads; numpy releases the GIL): the ceiling for a search that streams its index."""
    import threading

    a = np.ones(64 * 2**20, np.float32)
    a.sum()
    best = 0.0
    for _ in range(3):
        threads = [threading.Thread(target=lambda: [a.sum() for _ in range(3)]) for _ in range(2)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        best = max(best, 6 * a.nbytes / (time.perf_counter() - t0) / 1e9)
    return best


def bytes_per_query(entry: dict, dim: int) -> float | None:
    """What one search at the default point reads: the coarse centroids, the codes of the
    probed lists, and the re-ranked vectors (from FAISS's counters at build)."""
    import re

    d = entry.get("distances")
    m = re.match(r"IVF(\d+),PQ(\d+)x4fs", entry.get("factory", ""))
    if d is None or not m:
        return None
    nlist, sub = int(m.group(1)), int(m.group(2))
    rerank = entry["params"].get("rerank", 0)
    return nlist * dim * 4 + (d - nlist) * sub / 2 + rerank * K * dim * 4


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


# -- one system per process -----------------------------------------------------------------


def _system(name: str, x: np.ndarray, q: np.ndarray, tmp: Path):
    """(build seconds, disk bytes, [(label, batch_fn, single_fn)]) for one system."""
    n, dim = x.shape
    t0 = time.perf_counter()
    if name == "latentsearch":
        import latentsearch as ls

        col = ls.build_vectors(x, name="peers", root=tmp, index="auto", quiet=True)
        build = time.perf_counter() - t0
        entry = col.info["index"]
        wanted = [None] + sorted({p["recall"] for p in entry.get("curve", [])})
        points = []
        for r in wanted:
            params = entry["params"] if r is None else next(
                p["params"] for p in entry["curve"] if p["recall"] == r)
            label = f"{entry['factory']} {params}" + (" (default)" if r is None else "")

            def batch(r=r):
                return np.array([[h.id for h in hits] for hits in col.search_batch(q, k=K, recall=r)])

            def single(v, r=r):
                return col.search(v, k=K, recall=r)
            points.append((label, batch, single))
        return build, _dir_bytes(col.path), points, {"choice": entry.get("choice"),
                                                     "imbalance": entry.get("imbalance"),
                                                     "bytes_per_query": bytes_per_query(entry, dim)}
    if name in ("faiss-hnsw", "faiss-ivf"):
        import faiss

        faiss.omp_set_num_threads(2)
        if name == "faiss-hnsw":
            index = faiss.IndexHNSWFlat(dim, 32)
            index.add(x)
            knob, values = "efSearch", (16, 24, 32, 48, 64, 96, 128, 192, 256, 384)
        else:
            nlist = int(4 * np.sqrt(n))
            index = faiss.index_factory(dim, f"IVF{nlist},Flat")
            index.train(x[: min(n, 64 * nlist)])
            index.add(x)
            knob, values = "nprobe", (8, 16, 24, 32, 48, 64, 96, 128, 192, 256)
        build = time.perf_counter() - t0
        faiss.write_index(index, str(tmp / "index.faiss"))
        points = []
        for v in values:
            p = faiss.SearchParametersHNSW() if knob == "efSearch" else faiss.SearchParametersIVF()
            setattr(p, knob, v)

            def batch(p=p):
                return index.search(q, K, params=p)[1]

            def single(vec, p=p):
                faiss.omp_set_num_threads(1)
                try:
                    return index.search(vec[None], K, params=p)
                finally:
                    faiss.omp_set_num_threads(2)
            points.append((f"{'HNSW32' if knob == 'efSearch' else f'IVF{nlist},Flat'} {knob} {v}", batch, single))
        return build, (tmp / "index.faiss").stat().st_size, points, {}
    if name.startswith("hnswlib"):
        import hnswlib

        m = 16 if name.endswith("16") else 32
        index = hnswlib.Index(space="l2", dim=dim)
        index.init_index(max_elements=n, M=m, ef_construction=200, random_seed=1)
        index.add_items(x, np.arange(n), num_threads=2)
        build = time.perf_counter() - t0
        index.save_index(str(tmp / "h.bin"))
        points = []
        for ef in (10, 16, 24, 32, 48, 64, 96, 128, 192, 256):
            def batch(ef=ef):
                index.set_ef(ef)
                return index.knn_query(q, k=K, num_threads=2)[0]

            def single(vec, ef=ef):
                index.set_ef(ef)
                return index.knn_query(vec[None], k=K, num_threads=1)
            points.append((f"M{m} ef {ef}", batch, single))
        return build, (tmp / "h.bin").stat().st_size, points, {}
    if name == "usearch":
        from usearch.index import Index

        index = Index(ndim=dim, metric="l2sq", dtype="f32")
        index.add(np.arange(n), x, threads=2)
        build = time.perf_counter() - t0
        index.save(str(tmp / "u.usearch"))
        points = []
        for ef in (16, 24, 32, 48, 64, 96, 128, 192, 256, 384):
            def batch(ef=ef):
                index.expansion_search = ef
                return index.search(q, K, threads=2).keys.astype(np.int64)

            def single(vec, ef=ef):
                index.expansion_search = ef
                return index.search(vec, K, threads=1)
            points.append((f"expansion {ef}", batch, single))
        return build, (tmp / "u.usearch").stat().st_size, points, {}
    if name == "chroma":
        import chromadb

        client = chromadb.PersistentClient(path=str(tmp / "chroma"))
        col = client.create_collection("peers", configuration={"hnsw": {"space": "l2"}})
        for s in range(0, n, 5000):
            col.add(ids=[str(i) for i in range(s, min(n, s + 5000))], embeddings=x[s : s + 5000])
        build = time.perf_counter() - t0
        # one point: changing ef_search through col.modify() had no visible effect here

        def batch():
            res = col.query(query_embeddings=q, n_results=K)
            return np.array([[int(i) for i in row] for row in res["ids"]])

        def single(vec):
            return col.query(query_embeddings=vec[None], n_results=K)
        points = [("default HNSW (ef_search 100)", batch, single)]
        return build, _dir_bytes(tmp / "chroma"), points, {}
    if name == "lancedb":
        import lancedb
        import pyarrow as pa

        db = lancedb.connect(str(tmp / "lance"))
        table = db.create_table("p", pa.table({"id": np.arange(n), "vector": list(x)}))
        table.create_index(metric="l2", num_partitions=int(np.sqrt(n)), num_sub_vectors=16)
        build = time.perf_counter() - t0
        points = []
        for nprobes in (10, 20, 40, 80):
            def batch(nprobes=nprobes):
                return np.array([table.search(v).nprobes(nprobes).refine_factor(4).limit(K)
                                 .to_arrow()["id"].to_numpy() for v in q])

            def single(vec, nprobes=nprobes):
                return table.search(vec).nprobes(nprobes).refine_factor(4).limit(K).to_arrow()
            points.append((f"IVF_PQ nprobes {nprobes} refine 4", batch, single))
        return build, _dir_bytes(tmp / "lance"), points, {}
    raise ValueError(name)


def worker(name: str, data: Path) -> dict:
    x = np.load(data / "x.npy")
    q = np.load(data / "q.npy")
    truth = np.load(data / "truth.npy")
    base_rss = _rss_mb()
    with tempfile.TemporaryDirectory() as tmp:
        build, disk, points, extra = _system(name, x, q, Path(tmp))
        rows = []
        for label, batch, single in points:
            found, secs = _best_time(batch)
            rows.append({"point": label, "recall": round(_recall(np.asarray(found), truth), 4),
                         "qps": round(len(q) / secs)})
        near = min(range(len(rows)), key=lambda i: abs(rows[i]["recall"] - 0.95))
        lat = []
        for v in q[:200]:
            t0 = time.perf_counter()
            points[near][2](v)
            lat.append(time.perf_counter() - t0)
        return {"system": name, "n": len(x), "build_s": round(build, 2), "disk_mb": round(disk / 2**20, 1),
                "peak_rss_mb": round(_peak_rss_mb() - base_rss, 1), "curve": rows,
                "single_p50_us": round(float(np.median(lat)) * 1e6), "single_at": rows[near]["point"],
                **extra}


# -- the driver -----------------------------------------------------------------------------


def _available(name: str) -> bool:
    module = {"faiss-hnsw": "faiss", "faiss-ivf": "faiss", "hnswlib-m16": "hnswlib",
              "hnswlib-m32": "hnswlib", "usearch": "usearch", "chroma": "chromadb",
              "lancedb": "lancedb", "latentsearch": "latentsearch"}[name]
    import importlib.util

    return importlib.util.find_spec(module) is not None


def best_at(curve: list[dict], r: float) -> dict | None:
    """The cheapest point reaching recall ``r``: the fastest among those that reach it."""
    reaching = [p for p in curve if p["recall"] >= r]
    return max(reaching, key=lambda p: p["qps"]) if reaching else None


def tables(results: list[dict], real: bool = False) -> str:
    out = []
    for n in sorted({r["n"] for r in results}):
        here = [r for r in results if r["n"] == n and "curve" in r]
        what = "real vectors" if real else "x 32, overlapping clusters (hard)"
        out.append(f"\n### {n:,} {what}, 1,000 held-out queries\n")
        out.append("| system | build s | disk MB | peak RSS MB | single p50 µs (at) | q/s at 0.95 (point) | q/s at 0.99 (point) | best recall |")
        out.append("| --- | --- | --- | --- | --- | --- | --- | --- |")
        for r in here:
            cells = []
            for t in TARGETS:
                b = best_at(r["curve"], t)
                cells.append(f"{b['qps']:,} ({b['point']}, {b['recall']:.3f})" if b else "not reached")
            top = max(p["recall"] for p in r["curve"])
            out.append(f"| {r['system']} | {r['build_s']} | {r['disk_mb']} | {r['peak_rss_mb']} | "
                       f"{r['single_p50_us']} ({r['single_at']}) | {cells[0]} | {cells[1]} | {top:.3f} |")
        ours = next((r for r in here if r["system"] == "latentsearch"), None)
        if ours:
            out.append("\n| recall | latentsearch q/s | fastest peer | its q/s | ratio |")
            out.append("| --- | --- | --- | --- | --- |")
            for t in TARGETS:
                mine = best_at(ours["curve"], t)
                rivals = [(r["system"], best_at(r["curve"], t)) for r in here if r["system"] != "latentsearch"]
                rivals = [(s, b) for s, b in rivals if b]
                if not mine or not rivals:
                    out.append(f"| {t} | {'not reached' if not mine else mine['qps']} | - | - | - |")
                    continue
                who, theirs = max(rivals, key=lambda sb: sb[1]["qps"])
                out.append(f"| {t} | {mine['qps']:,} | {who} | {theirs['qps']:,} | {mine['qps'] / theirs['qps']:.2f}x |")
        skipped = [r for r in results if r["n"] == n and "curve" not in r]
        for r in skipped:
            out.append(f"\n{r['system']}: {r['skipped']}")
        if ours and ours.get("choice"):
            c = ours["choice"]
            out.append(f"\n`auto` chose **{c['chosen']}** (imbalance {ours.get('imbalance')}); candidates "
                       "measured at build: " + "; ".join(
                           f"{x['spec']} {x['factory']} {x['qps']:,} q/s at {x['recall']:.3f} "
                           f"(built and tuned in {x['build_s']} s)" for x in c["candidates"])
                       + "".join(f"; {k} left out: {v}" for k, v in c.get("left_out", {}).items()))
        if ours and ours.get("bytes_per_query") and BANDWIDTH:
            b = ours["bytes_per_query"]
            out.append(f"\nThe machine's limit: a search at the default point reads about {b / 1024:,.0f} KB "
                       f"(centroids, probed 4-bit codes, re-ranked vectors); at the {BANDWIDTH:.1f} GB/s "
                       f"this machine reads memory with both cores, that is at most {BANDWIDTH * 1e9 / b:,.0f} q/s "
                       "if every byte came from memory (the 1M index is small enough to sit partly in cache).")
        out.append("\nFull curves: " + "; ".join(
            f"**{r['system']}** " + ", ".join(f"{p['recall']:.3f}@{p['qps']:,}" for p in r["curve"]) for r in here))
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="100000,1000000")
    ap.add_argument("--systems", default=",".join(SYSTEMS))
    ap.add_argument("--json", default="benchmarks/peers.json")
    ap.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    ap.add_argument("--vectors", help="a real (n, dim) .npy instead: its last 1,000 rows query the rest")
    ap.add_argument("--section", default="peers", help="the RESULTS.md section to write")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, Path(args.data))))
        return 0
    global BANDWIDTH
    BANDWIDTH = bandwidth_gbs()
    results = []
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    sizes = [int(s) for s in args.sizes.split(",")] if not args.vectors else [0]
    for n in sizes:
        with tempfile.TemporaryDirectory() as d:
            data = Path(d)
            if args.vectors:
                real = np.load(args.vectors, allow_pickle=False).astype(np.float32)
                x, q = np.ascontiguousarray(real[:-1000]), np.ascontiguousarray(real[-1000:])
                n = len(x)
            else:
                x, q = overlapping(n, 1), overlapping(1000, 2)
            import faiss

            truth = faiss.knn(q, x, K)[1]  # l2 for every system
            for name, arr in (("x", x), ("q", q), ("truth", truth)):
                np.save(data / f"{name}.npy", arr)
            del x
            for name in args.systems.split(","):
                if not _available(name):
                    results.append({"system": name, "n": n, "skipped": "not installed (pip install -e '.[bench]')"})
                    continue
                if n > SLOW.get(name, n):
                    results.append({"system": name, "n": n, "skipped": f"measured up to {SLOW[name]:,} only (slow build)"})
                    continue
                print(f"{n:,}: {name} ...", file=sys.stderr, flush=True)
                proc = subprocess.run([sys.executable, "-m", "benchmarks.peers", "--worker", name, "--data", str(data)],
                                      capture_output=True, text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
                if proc.returncode:
                    tail = (proc.stderr.strip().splitlines() or ["?"])[-1][:200]
                    results.append({"system": name, "n": n, "skipped": f"failed: {tail}"})
                    print(f"  failed: {tail}", file=sys.stderr)
                    continue
                results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
                r = results[-1]
                print(f"  build {r['build_s']}s, " + ", ".join(f"{p['recall']:.3f}@{p['qps']}" for p in r["curve"]),
                      file=sys.stderr, flush=True)
    what = f"--vectors {args.vectors}" if args.vectors else f"--sizes {args.sizes}"
    text = (f"Run {started}, {os.cpu_count()} cores; `python -m benchmarks.peers {what}`.\n"
            + tables(results, real=bool(args.vectors)))
    print(text)
    if not args.no_write:
        Path(args.json).write_text(json.dumps(results, indent=1))
        from benchmarks._data import write_section

        title = ("Search on real latents, beside the peers" if args.vectors
                 else "Search on hard data, beside the peers (`python -m benchmarks.peers`)")
        write_section(Path("benchmarks/RESULTS.md"), args.section, f"## {title}\n\n" + text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

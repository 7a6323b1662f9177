"""Search speed and scale, the engine beside raw FAISS: ``python -m benchmarks.run``.

For each size (default 100,000 and 1,000,000 seeded clustered 32-d vectors; ``--quick``:
10,000 and 100,000) this builds one collection per index spec (flat, hnsw, ivf, ivfpq,
auto) with ``latentsearch.build_vectors`` and measures, in the same process and interleaved
with raw FAISS run on the collection's own index.faiss with the same parameters:

* build time, index and collection bytes, the tuned parameters;
* recall@10 against exact search for 1,000 held-out queries, queries/s batched
  (``search_batch``, median of 3) and single-query latency p50/p99 (``search``);
* where a single query's time goes inside ``Collection.search``;
* the ``auto`` index against a raw FAISS ``IndexHNSWFlat(32, 32)`` built directly, whose
  efSearch is swept to the smallest value reaching the engine's recall (the DESIGN target);
* peak resident memory of a fresh process that opens a collection and answers queries;
* cold-process wall time of ``latentsearch query NAME --id 0`` (and ``--image``/``--text`` on
  encoder collections, when they can be built), beside ``python -c "import faiss"``;
* successive ``add`` of 1,000 vectors (delta segments, then a compaction) beside a full
  rebuild, and search speed with 10,000 items in deltas; ``remove`` on each index type;
* how everything grows from the smallest size to the largest.

Tables go to stdout and to ``--out`` (benchmarks/RESULTS.md); progress to stderr. Data and
collections are written under ``--work`` (/tmp/bench), never in the repository.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gc
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np

from ._data import Mixture, Timer, exact_top, median, pct, recall

SPECS = ("flat", "hnsw", "ivf", "ivffs", "ivfpq", "auto")
K = 10
N_QUERIES = 1000
EF_SWEEP = (10, 12, 16, 20, 24, 32, 40, 48, 64, 80, 96, 128, 160, 192, 256, 384, 512)
T_START = time.perf_counter()


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - T_START:7.1f}s] {msg}", file=sys.stderr, flush=True)


def _mb(b) -> str:
    return "n/a" if b is None else f"{b / 1e6:,.1f}"


def _f(v, fmt="{:.3f}") -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "n/a"
    return fmt.format(v)


def _err(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]


def _guard(results: dict, key: str, fn, *a, **kw):
    """Run one measurement; a failure is recorded (and shown in the tables), not fatal."""
    try:
        return fn(*a, **kw)
    except Exception as exc:  # a benchmark must report every part it could measure
        traceback.print_exc()
        results.setdefault("errors", []).append(f"{key}: {_err(exc)}")
        log(f"FAILED {key}: {_err(exc)}")
        return None


# -- raw FAISS helpers ----------------------------------------------------------------------


def raw_index(path: Path, params: dict):
    """The collection's own index.faiss read by FAISS, with the same efSearch / nprobe."""
    import faiss

    index = faiss.read_index(str(path))
    top = faiss.downcast_index(index)
    inner = faiss.downcast_index(top.index) if isinstance(top, faiss.IndexIDMap) else top
    if "efSearch" in params and isinstance(inner, faiss.IndexHNSW):
        inner.hnsw.efSearch = int(params["efSearch"])
    if "nprobe" in params:
        try:
            faiss.extract_index_ivf(index).nprobe = int(params["nprobe"])
        except (RuntimeError, AttributeError):
            pass
    return index


def hits_ids(batch) -> np.ndarray:
    out = np.full((len(batch), K), -1, dtype=np.int64)
    for q, hits in enumerate(batch):
        ids = [h.id for h in hits][:K]
        out[q, : len(ids)] = ids
    return out


def numpy_rerank(index, x, Q, fetch):
    """Raw FAISS search for ``fetch`` candidates, then an exact vectorised re-rank in numpy."""
    _, cand = index.search(Q, fetch)
    safe = np.where(cand >= 0, cand, 0)
    d = ((x[safe] - Q[:, None, :]) ** 2).sum(axis=2)
    d[cand < 0] = np.inf
    order = np.argsort(d, axis=1)[:, :K]
    return np.take_along_axis(cand, order, axis=1)


def interleaved(fns: list, budget_s: float = 1.5, min_reps: int = 3, max_reps: int = 11) -> list[list[float]]:
    """Wall times of each function, run alternately (order flipped every round) so that load
    from other processes hits all of them alike; as many rounds as fit ``budget_s``."""
    times: list[list[float]] = [[] for _ in fns]
    rounds, done = 0, 0.0
    while rounds < min_reps or (rounds < max_reps and done < budget_s):
        order = range(len(fns)) if rounds % 2 == 0 else reversed(range(len(fns)))
        for i in order:
            t0 = time.perf_counter()
            fns[i]()
            dt = time.perf_counter() - t0
            times[i].append(dt)
            done += dt
        rounds += 1
    return times


def raw_build(factory: str, x: np.ndarray) -> float:
    """Seconds for FAISS alone to build ``factory`` over ``x`` (same 200k training sample cap)."""
    import faiss

    with Timer() as t:
        index = faiss.index_factory(x.shape[1], factory)
        if not index.is_trained:
            train = x
            if len(x) > 200_000:
                rows = np.sort(np.random.default_rng(0).choice(len(x), 200_000, replace=False))
                train = x[rows]
            index.train(np.ascontiguousarray(train))
        index.add(x)
    del index
    return t.s


# -- one spec at one size ---------------------------------------------------------------------


def measure_spec(ls, spec, n, x, Q, truth, root: Path, n_single: int,
                 raw_builds: bool = True) -> tuple[dict, object]:
    rec: dict = {"spec": spec, "n": n}
    log(f"n={n:,} {spec}: build")
    with Timer() as t:
        col = ls.build_vectors(x, name=spec, root=str(root), index=spec, overwrite=True, quiet=True)
    rec["build_s"] = t.s
    m = col.manifest
    params = dict(m["index"].get("params", {}))
    files = m["files"]
    rec.update(
        factory=m["index"].get("factory"),
        params=params,
        index_bytes=int(files["index"].get("bytes", 0)),
        vectors_bytes=int(files["vectors"].get("bytes", 0)),
        collection_bytes=int(col.info["bytes"]),
        path=str(col.path),
    )
    index_path = col.path / files["index"]["path"]
    raw = raw_index(index_path, params)
    log(f"n={n:,} {spec}: built in {t.s:.1f}s ({rec['factory']}, {params}); batched search")
    # warm both
    col.search_batch(Q[:50], k=K)
    raw.search(Q[:50], K)
    got = {}

    def eng():
        got["res"] = col.search_batch(Q, k=K)

    def rawb():
        got["I"] = raw.search(Q, K)[1]

    eng_t, raw_t = interleaved([eng, rawb])
    res, I = got["res"], got["I"]
    rec["batch_reps"] = len(eng_t)
    rec["recall_engine"] = recall(hits_ids(res), truth)
    rec["recall_raw"] = recall(I, truth)
    rec["qps_engine"] = len(Q) / median(eng_t)
    rec["qps_raw"] = len(Q) / median(raw_t)
    rerank = int(params.get("rerank", 0) or 0)
    if rerank:
        def rr():
            got["rr"] = numpy_rerank(raw, x, Q, K * rerank)

        e2, rr_t = interleaved([eng, rr])
        rec["qps_raw_rerank"] = len(Q) / median(rr_t)
        rec["qps_engine_vs_rerank"] = len(Q) / median(e2)
        rec["recall_raw_rerank"] = recall(got["rr"], truth)

    import faiss

    default_threads = faiss.omp_get_max_threads()
    for label, threads in (("", 1), ("_mt", default_threads)):
        faiss.omp_set_num_threads(threads)
        log(f"n={n:,} {spec}: single queries (up to {n_single}, {threads} OpenMP thread(s))")
        e_lat, r_lat = single_latency(col, raw, Q, n_single)
        rec[f"p50_engine_us{label}"] = pct(e_lat, 50) * 1e6
        rec[f"p99_engine_us{label}"] = pct(e_lat, 99) * 1e6
        rec[f"p50_raw_us{label}"] = pct(r_lat, 50) * 1e6
        rec[f"p99_raw_us{label}"] = pct(r_lat, 99) * 1e6
        rec[f"n_single{label}"] = len(e_lat)
    rec["overhead_us"] = rec["p50_engine_us"] - rec["p50_raw_us"]
    faiss.omp_set_num_threads(1)
    try:
        if spec != "flat":
            rec["breakdown"] = _guard(rec, f"breakdown {spec}", breakdown, col, raw, Q, min(n_single, 300))
    finally:
        faiss.omp_set_num_threads(default_threads)
    try:
        ivf = faiss.downcast_index(faiss.extract_index_ivf(raw))
        table_floats = ivf.precomputed_table.size() if hasattr(ivf, "precomputed_table") else 0
        rec["precomputed_table_bytes"] = int(table_floats) * 4
    except (RuntimeError, AttributeError):
        pass
    del raw
    if raw_builds and "HNSW" not in str(rec["factory"]):  # HNSW: the raw IndexHNSWFlat in section 3
        log(f"n={n:,} {spec}: raw FAISS build of {rec['factory']}")
        rec["raw_build_s"] = _guard(rec, f"raw build {spec}", raw_build, rec["factory"], x)
    return rec, col


def single_latency(col, raw, Q, n_single: int, budget_s: float = 15.0) -> tuple[list, list]:
    """One query per call, engine and raw alternating (order flipped each query)."""
    e_lat, r_lat = [], []
    for i in range(20):
        col.search(Q[i], k=K)
        raw.search(Q[i : i + 1], K)
    start = time.perf_counter()
    for i in range(n_single):
        q, q2 = Q[i], Q[i : i + 1]
        if i % 2 == 0:
            t0 = time.perf_counter(); col.search(q, k=K); t1 = time.perf_counter()
            raw.search(q2, K); t2 = time.perf_counter()
            e_lat.append(t1 - t0); r_lat.append(t2 - t1)
        else:
            t0 = time.perf_counter(); raw.search(q2, K); t1 = time.perf_counter()
            col.search(q, k=K); t2 = time.perf_counter()
            r_lat.append(t1 - t0); e_lat.append(t2 - t1)
        if i >= 100 and time.perf_counter() - start > budget_s:
            break
    return e_lat, r_lat


def breakdown(col, raw, Q, nq: int) -> dict:
    """Median microseconds of each step of ``Collection.search`` for one query (private API)."""
    from latentsearch import index as _index
    from latentsearch.collection.reader import distances
    from latentsearch.types import Hit

    params = col.manifest["index"].get("params", {})
    parts = {k: [] for k in ("total", "query_vectors", "search_params", "index_search",
                              "raw_search", "fetch_records", "hits")}
    pc = time.perf_counter
    for i in range(nq):
        q = Q[i]
        t0 = pc(); col.search(q, k=K); t1 = pc()
        v = col._query_vectors(q, batch=False); t2 = pc()
        snap = col.snapshot
        _index.search_params(snap.main.index, params, None); t3 = pc()
        D, I = _index.search(snap.main.index, v, K, params, vectors_of=snap.main.vectors_of,
                             metric=col.metric)
        t4 = pc()
        raw.search(Q[i : i + 1], K); t5 = pc()
        recs = snap.records(sorted({int(j) for j in I[0] if j >= 0})); t6 = pc()
        dists = distances(D, col.metric)[0].tolist()
        hits = [Hit(j, d, *recs[j]) for d, j in zip(dists, I[0].tolist()) if j >= 0]
        t7 = pc()
        assert len(hits) <= K
        for key, dt in zip(parts, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t6 - t5, t7 - t6)):
            parts[key].append(dt)
    return {key: median(v) * 1e6 for key, v in parts.items()}


# -- raw HNSW built directly, efSearch swept --------------------------------------------------


def raw_hnsw_vs_auto(ls, n, x, Q, truth, auto_rec, auto_col) -> dict:
    import faiss

    out: dict = {"n": n}
    log(f"n={n:,} raw IndexHNSWFlat(32, 32): build")
    idx = faiss.IndexHNSWFlat(x.shape[1], 32)
    with Timer() as t:
        idx.add(x)
    out["build_s"] = t.s
    log(f"n={n:,} raw HNSW built in {t.s:.1f}s; efSearch sweep")
    sweep = []
    for ef in EF_SWEEP:
        idx.hnsw.efSearch = ef
        idx.search(Q[:100], K)
        ts = []
        I = None
        for _ in range(3):
            with Timer() as tt:
                _, I = idx.search(Q, K)
            ts.append(tt.s)
        sweep.append({"efSearch": ef, "recall": recall(I, truth), "qps": len(Q) / min(ts)})
    out["sweep"] = sweep
    target = auto_rec["recall_engine"]
    match = next((s for s in sweep if s["recall"] >= target), sweep[-1])
    out["matched_ef"] = match["efSearch"]
    out["matched_recall"] = match["recall"]
    idx.hnsw.efSearch = match["efSearch"]
    e_t, r_t = interleaved([lambda: auto_col.search_batch(Q, k=K), lambda: idx.search(Q, K)],
                           budget_s=3.0, min_reps=5, max_reps=15)
    out["reps"] = len(e_t)
    out["qps_engine"] = len(Q) / median(e_t)
    out["qps_raw"] = len(Q) / median(r_t)
    out["ratio"] = out["qps_engine"] / out["qps_raw"]
    out["recall_engine"] = target
    s99 = next((s for s in sweep if s["recall"] >= 0.99), None)
    if s99:
        idx.hnsw.efSearch = s99["efSearch"]
        (ts,) = interleaved([lambda: idx.search(Q, K)], budget_s=1.0)
        out["ef99"] = s99["efSearch"]
        out["ef99_recall"] = s99["recall"]
        out["ef99_qps"] = len(Q) / median(ts)
    del idx
    gc.collect()
    return out


# -- fresh processes --------------------------------------------------------------------------

_STATUS = r"""
def status():
    out = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(("VmHWM", "VmRSS")):
                key, val = line.split(":")
                out[key] = int(val.split()[0]) * 1024
    return out
"""

MEM_SCRIPT = _STATUS + r"""
import json, sys, time
import numpy as np, faiss, latentsearch as ls
base = status()
t = time.perf_counter()
col = ls.open(sys.argv[1])
t_open = time.perf_counter() - t
opened = status()
Q = np.load(sys.argv[2])
t = time.perf_counter()
col.search_batch(Q, k=10)
for q in Q[:200]:
    col.search(q, k=10)
col.neighbors(0, k=10)
t_q = time.perf_counter() - t
peak = status()
print(json.dumps({"base_rss": base["VmRSS"], "base_hwm": base["VmHWM"], "open_rss": opened["VmRSS"],
                  "peak_hwm": peak["VmHWM"], "end_rss": peak["VmRSS"], "open_s": t_open, "query_s": t_q}))
"""

RAW_MEM_SCRIPT = _STATUS + r"""
import json, sys
import numpy as np, faiss, latentsearch
base = status()
index = faiss.read_index(sys.argv[1])
params = json.loads(sys.argv[4])
top = faiss.downcast_index(index)
inner = faiss.downcast_index(top.index) if isinstance(top, faiss.IndexIDMap) else top
if "efSearch" in params and isinstance(inner, faiss.IndexHNSW):
    inner.hnsw.efSearch = int(params["efSearch"])
if "nprobe" in params:
    faiss.extract_index_ivf(index).nprobe = int(params["nprobe"])
x = np.load(sys.argv[2], mmap_mode="r")
opened = status()
Q = np.load(sys.argv[3])
rr = int(params.get("rerank", 0) or 0)
_, I = index.search(Q, 10 * max(rr, 1))
if rr:
    for q in range(len(Q)):
        v = x[np.sort(I[q][I[q] >= 0])]
for q in range(200):
    index.search(Q[q : q + 1], 10)
peak = status()
print(json.dumps({"base_rss": base["VmRSS"], "open_rss": opened["VmRSS"], "peak_hwm": peak["VmHWM"]}))
"""

OPEN_SCRIPT = r"""
import json, sys, time
from pathlib import Path
pc = time.perf_counter
t0 = pc()
import latentsearch as ls
t1 = pc()
import faiss
t2 = pc()
from latentsearch.storage.files import verify
from latentsearch.storage.manifest import read_manifest
path = Path(sys.argv[1])
m = read_manifest(path)
t3 = pc()
verify(path, m)
t4 = pc()
idx = faiss.read_index(str(path / m["files"]["index"]["path"]))
t5 = pc()
del idx
import sqlite3
con = sqlite3.connect((path / m["files"]["records"]["path"]).resolve().as_uri() + "?mode=ro&immutable=1", uri=True)
t5a = pc()
con.execute("SELECT count(*) FROM records").fetchone()
t5b = pc()
con.close()
t_open0 = pc()
col = ls.open(path, verify=False)
t6 = pc()
col.neighbors(0, k=10)
t7 = pc()
sizes = {p: e.get("bytes", 0) for p, e in m["files"].items()}
print(json.dumps({"import_latentsearch": t1 - t0, "import_faiss_after": t2 - t1, "read_manifest": t3 - t2,
                  "verify_sha256": t4 - t3, "read_index": t5 - t4, "open_noverify": t6 - t_open0,
                  "neighbors": t7 - t6, "records_count": t5b - t5a, "bytes_hashed": sum(sizes.values()),
                  "tf_imported": "tensorflow" in sys.modules}))
"""


def run_json(args: list[str], env: dict, timeout: float = 600) -> dict:
    proc = subprocess.run(args, capture_output=True, text=True, env=env, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"exit {proc.returncode}: {proc.stderr.strip().splitlines()[-1:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def peak_memory(path: str, qpath: str, env: dict) -> dict:
    return run_json([sys.executable, "-c", MEM_SCRIPT, path, qpath], env)


def cold_times(commands: dict[str, list[str]], runs: int, env: dict) -> dict[str, dict]:
    """Median wall time of each command in fresh processes, run round-robin."""
    out = {name: {"times": [], "rc": None, "error": None} for name in commands}
    for _ in range(runs):
        for name, cmd in commands.items():
            if out[name]["error"]:
                continue
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
            dt = time.perf_counter() - t0
            out[name]["rc"] = proc.returncode
            if proc.returncode != 0:
                tail = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-1:] or ["?"]
                out[name]["error"] = f"exit {proc.returncode}: {tail[0][:160]}"
                continue
            out[name]["times"].append(dt)
    for rec in out.values():
        rec["median"] = median(rec["times"]) if rec["times"] else None
        rec["min"] = min(rec["times"]) if rec["times"] else None
    return out


def _cli() -> list[str]:
    exe = Path(sys.executable).with_name("latentsearch")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "latentsearch"]


# -- add / remove -------------------------------------------------------------------------------


ADDS = 11  # successive adds of 1,000: ten fill the delta segments to DELTA_LIMIT, the 11th compacts


def _query_speed(col, Q) -> tuple[float, float]:
    """(batch q/s median of 3, single-query p50 µs over 300 queries) of ``col`` as it is."""
    runs = []
    for _ in range(3):
        with Timer() as t:
            col.search_batch(Q, k=K)
        runs.append(len(Q) / t.s)
    single = []
    for q in Q[:300]:
        t0 = time.perf_counter()
        col.search(q, k=K)
        single.append(time.perf_counter() - t0)
    return median(runs), median(single) * 1e6


def add_vs_rebuild(ls, n, x, col, extra, Q, root: Path) -> dict:
    """Successive adds of 1,000 to a copy of the ``auto`` collection, beside a full rebuild.

    Adds go to delta segments (written in proportion to the batch) until they would pass
    DELTA_LIMIT; that add compacts (rewrites the main files). Search speed is measured with
    10,000 items in deltas and again after the compaction."""
    from latentsearch.collection import writer as _collection

    out: dict = {"n": n, "spec": col.manifest["index"]["spec"], "factory": col.manifest["index"]["factory"],
                 "delta_limit": _collection.DELTA_LIMIT}
    dst = root / "addcopy"
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(col.path, dst)
    c = ls.open(str(dst))
    out["bytes_before"] = c.info["bytes"]
    out["qps_before"], out["p50_before"] = _query_speed(c, Q)
    times, kinds = [], []
    for i in range(ADDS):
        with Timer() as t:
            c.add(extra)
        kinds.append("delta" if c.info["deltas"]["items"] else "compaction")
        times.append(t.s)
        log(f"n={n:,} add 1,000 #{i + 1}: {t.s:.3f}s ({kinds[-1]}, {c.info['deltas']['items']:,} in deltas)")
        if i == ADDS - 2:
            out["deltas_items"] = c.info["deltas"]["items"]
            out["qps_deltas"], out["p50_deltas"] = _query_speed(c, Q)
    out["qps_after"], out["p50_after"] = _query_speed(c, Q)
    out["add_times"], out["add_kinds"] = times, kinds
    appends = [t for t, k in zip(times, kinds) if k == "delta"]
    out["add_s"] = median(appends) if appends else None
    out["compaction_s"] = max((t for t, k in zip(times, kinds) if k == "compaction"), default=None)
    out["mean_s"] = sum(times) / len(times)
    out["bytes_after"], out["count_after"] = c.info["bytes"], len(c)
    del c
    gc.collect()
    shutil.rmtree(dst, ignore_errors=True)
    log(f"n={n:,} full rebuild of {n + len(extra):,} ({out['spec']})")
    with Timer() as t:
        c = ls.build_vectors(np.concatenate([x, extra]), name="rebuild", root=str(root),
                             index=out["spec"], overwrite=True, quiet=True)
    out["rebuild_s"] = t.s
    del c
    shutil.rmtree(root / "rebuild", ignore_errors=True)
    out["ratio"] = out["add_s"] / out["rebuild_s"] if out["add_s"] else None
    return out


def remove_cost(ls, n, cols: dict, root: Path) -> list[dict]:
    out = []
    for spec in ("hnsw", "ivf", "flat"):
        col = cols.get(spec)
        if col is None:
            continue
        dst = root / "rmcopy"
        shutil.rmtree(dst, ignore_errors=True)
        shutil.copytree(col.path, dst)
        c = ls.open(str(dst))
        with Timer() as t:
            c.remove(np.arange(10))
        with Timer() as tc:
            c.compact()
        out.append({"n": n, "spec": spec, "factory": c.manifest["index"]["factory"], "remove_s": t.s,
                    "compact_s": tc.s})
        log(f"n={n:,} remove 10 ids from {spec}: {t.s:.3f}s, then compact {tc.s:.2f}s")
        del c
        shutil.rmtree(dst, ignore_errors=True)
    return out


# -- encoder collections -------------------------------------------------------------------------


def encoder_collections(ls, work: Path, env: dict, runs: int) -> dict:
    root = work / "enc"
    root.mkdir(parents=True, exist_ok=True)
    stamp = root / "build_times.json"
    known = json.loads(stamp.read_text()) if stamp.exists() else {}
    out: dict = {"builds": {}, "cold": {}}
    cli = _cli()
    jobs = {
        "mnist": cli + ["build", "images", "mnist", "--epochs", "1", "--root", str(root), "--quiet"],
        "news": cli + ["build", "text", "news", "--epochs", "1", "--root", str(root), "--quiet"],
    }
    for name, cmd in jobs.items():
        if (root / name / "manifest.json").exists() and name in known:
            out["builds"][name] = {"ok": True, "s": known[name], "reused": True}
            continue
        log(f"building encoder collection {name}: {' '.join(cmd[1:])}")
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
        if proc.returncode != 0 and "--quiet" in cmd:  # the option may not exist: retry without it
            cmd = [c for c in cmd if c != "--quiet"]
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
        dt = time.perf_counter() - t0
        if proc.returncode == 0:
            known[name] = dt
            out["builds"][name] = {"ok": True, "s": dt, "reused": False}
        else:
            tail = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-1:] or ["?"]
            out["builds"][name] = {"ok": False, "error": f"exit {proc.returncode}: {tail[0][:200]}"}
        log(f"encoder collection {name}: {out['builds'][name]}")
    stamp.write_text(json.dumps(known))
    commands = {}
    if out["builds"]["mnist"].get("ok"):
        try:
            col = ls.open(str(root / "mnist"))
            from latentsearch.io.png import encode_png

            png = root / "digit.png"
            png.write_bytes(encode_png(col.images([0])[0]))
            commands["query mnist --image digit.png"] = cli + ["query", "mnist", "--image", str(png),
                                                               "--root", str(root)]
            commands["query mnist --id 0"] = cli + ["query", "mnist", "--id", "0", "--root", str(root)]
        except Exception as exc:
            out["builds"]["mnist"]["query_error"] = _err(exc)
    if out["builds"]["news"].get("ok"):
        commands['query news --text "bushfires near Sydney"'] = cli + [
            "query", "news", "--text", "bushfires near Sydney", "--root", str(root)]
    if commands:
        log(f"cold encoder queries x{runs}")
        out["cold"] = cold_times(commands, runs, env)
    return out


# -- the run --------------------------------------------------------------------------------------


def run(args) -> dict:
    import faiss

    import latentsearch as ls

    sizes = args.sizes
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    env.pop("LATENTSEARCH_ROOT", None)
    R: dict = {
        "started": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "python -m benchmarks.run " + " ".join(args.argv),
        "cores": os.cpu_count(),
        "faiss": faiss.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "latentsearch": ls.__version__,
        "faiss_threads": faiss.omp_get_max_threads(),
        "library": _library_snapshot(ls),
        "load_start": os.getloadavg(),
        "sizes": sizes,
        "specs": [], "hnsw": [], "memory": [], "cold": {}, "open_breakdown": [],
        "add": [], "remove": [], "errors": [],
    }
    mix = Mixture()
    Q = mix.sample(N_QUERIES, stream=2)
    extra = mix.sample(1000, stream=3)
    qpath = work / "queries.npy"
    np.save(qpath, Q)
    cli = _cli()
    cold_cmds: dict[str, list[str]] = {}
    for n in sizes:
        root = work / f"n{n}"
        root.mkdir(parents=True, exist_ok=True)
        log(f"n={n:,}: data")
        x = mix.sample(n, stream=1)
        with Timer() as t:
            truth = exact_top(x, Q, K)
        log(f"n={n:,}: exact top-{K} of {N_QUERIES} queries in {t.s:.1f}s")
        cols = {}
        n_single = args.single
        for spec in SPECS:
            got = _guard(R, f"n={n} {spec}", measure_spec, ls, spec, n, x, Q, truth, root, n_single,
                         not args.quick)
            if got is None:
                continue
            rec, col = got
            R["specs"].append(rec)
            cols[spec] = col
            _dump(R, work)
        auto = next((r for r in R["specs"] if r["n"] == n and r["spec"] == "auto"), None)
        if auto is not None and "auto" in cols:
            hn = _guard(R, f"n={n} raw hnsw", raw_hnsw_vs_auto, ls, n, x, Q, truth, auto, cols["auto"])
            if hn:
                R["hnsw"].append(hn)
        _dump(R, work)
        # memory in fresh processes
        for spec, col in cols.items():
            log(f"n={n:,} {spec}: peak memory of a fresh process")
            mem = _guard(R, f"n={n} memory {spec}", peak_memory, str(col.path), str(qpath), env)
            if mem:
                rec = next(r for r in R["specs"] if r["n"] == n and r["spec"] == spec)
                mem.update(n=n, spec=spec, data_bytes=rec["vectors_bytes"] + rec["index_bytes"])
                mem["delta"] = mem["peak_hwm"] - mem["base_rss"]
                mem["ratio"] = mem["delta"] / mem["data_bytes"]
                mem["precomputed_table_bytes"] = rec.get("precomputed_table_bytes")
                files = col.manifest["files"]
                rawm = _guard(R, f"n={n} raw memory {spec}", run_json,
                              [sys.executable, "-c", RAW_MEM_SCRIPT, str(col.path / files["index"]["path"]),
                               str(col.path / files["vectors"]["path"]), str(qpath),
                               json.dumps(rec["params"])], env)
                if rawm:
                    mem["raw_delta"] = rawm["peak_hwm"] - rawm["base_rss"]
                R["memory"].append(mem)
        if "auto" in cols:
            bd = _guard(R, f"n={n} open breakdown", run_json,
                        [sys.executable, "-c", OPEN_SCRIPT, str(cols["auto"].path)], env)
            if bd:
                bd["n"] = n
                R["open_breakdown"].append(bd)
        for spec in cols:
            cold_cmds[f"query --id 0 ({spec}, n={n:,})"] = cli + ["query", spec, "--id", "0", "--root", str(root)]
        # add vs rebuild, remove
        if "auto" in cols:
            a = _guard(R, f"n={n} add", add_vs_rebuild, ls, n, x, cols["auto"], extra, Q, root)
            if a:
                R["add"].append(a)
        if n == sizes[0]:
            rm = _guard(R, f"n={n} remove", remove_cost, ls, n, cols, root)
            if rm:
                R["remove"].extend(rm)
        del cols, x, truth
        gc.collect()
        _dump(R, work)
    # cold processes
    floors = {
        'python -c "pass"': [sys.executable, "-c", "pass"],
        'python -c "import numpy"': [sys.executable, "-c", "import numpy"],
        'python -c "import faiss"': [sys.executable, "-c", "import faiss"],
        'python -c "import latentsearch"': [sys.executable, "-c", "import latentsearch"],
        'python -c "import tensorflow"': [sys.executable, "-c", "import tensorflow"],
        "latentsearch --help": cli + ["--help"],
    }
    log(f"cold processes x{args.cold_runs}: {len(floors) + len(cold_cmds)} commands")
    R["cold"] = _guard(R, "cold", cold_times, {**floors, **cold_cmds}, args.cold_runs, env) or {}
    _dump(R, work)
    if not args.no_encoders:
        R["encoders"] = _guard(R, "encoders", encoder_collections, ls, work, env, args.cold_runs)
    R["load_end"] = os.getloadavg()
    R["total_s"] = time.perf_counter() - T_START
    _dump(R, work)
    return R


def _library_snapshot(ls) -> str:
    """Which library code was measured: git HEAD, plus a digest of the package's .py files
    (other work may change them between runs)."""
    import hashlib

    pkg = Path(ls.__file__).parent
    h = hashlib.sha256()
    newest = 0.0
    for f in sorted(pkg.rglob("*.py")):
        h.update(f.read_bytes())
        newest = max(newest, f.stat().st_mtime)
    try:
        head = subprocess.run(["git", "-C", str(pkg.parent), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        head = "?"
    stamp = _dt.datetime.fromtimestamp(newest, _dt.timezone.utc).strftime("%H:%M:%S UTC")
    return f"git {head or '?'} + working tree, latentsearch/*.py digest {h.hexdigest()[:12]}, newest file {stamp}"


def _dump(R: dict, work: Path) -> None:
    (work / "results.json").write_text(json.dumps(R, indent=1, default=str))


# -- tables -----------------------------------------------------------------------------------------


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _params(p: dict) -> str:
    keys = [k for k in ("efSearch", "nprobe", "rerank", "tuned_recall") if k in p]
    keys += [k for k in p if k not in keys]
    return ", ".join(f"{k}={p[k]}" for k in keys) or "-"


def render(R: dict) -> str:
    out = []
    w = out.append
    n_fmt = lambda n: f"{n:,}"  # noqa: E731
    w("# latentsearch benchmarks: the engine beside raw FAISS\n")
    w(f"- date: {R['started']}; total run time {R.get('total_s', 0) / 60:.1f} min")
    w(f"- command: `{R['command']}` (from the repository root)")
    w(f"- machine: {R['cores']} cores (os.cpu_count), FAISS OpenMP threads {R['faiss_threads']}; "
      f"load average at start {R['load_start'][0]:.2f}, at end {R.get('load_end', (float('nan'),))[0]:.2f} "
      "(the machine is shared: compare figures measured in the same run, side by side)")
    w(f"- versions: python {R['python']}, faiss {R['faiss']}, numpy {R['numpy']}, latentsearch {R['latentsearch']}")
    if R.get("library"):
        w(f"- library measured: {R['library']}")
    w(f"- data: seeded mixture of 1,000 anisotropic gaussians, 32-d float32 (benchmarks/_data.py); "
      f"{N_QUERIES:,} held-out queries from the same mixture; truth = exact L2 top-{K} (faiss.knn); "
      "ids are row numbers\n")

    specs = R["specs"]
    w("## 1. Build\n")
    def rawb(r):
        if "raw_build_s" in r:
            return _f(r["raw_build_s"], "{:.1f}")
        h = next((h for h in R["hnsw"] if h["n"] == r["n"]), None)
        return f"{h['build_s']:.1f} (IndexHNSWFlat)" if h and "HNSW" in str(r["factory"]) else "n/a"

    w(table(["n", "spec", "factory", "engine build s", "raw FAISS build s", "index.faiss MB", "collection MB",
             "tuned params"],
            [[n_fmt(r["n"]), r["spec"], r["factory"], _f(r["build_s"], "{:.1f}"), rawb(r), _mb(r["index_bytes"]),
              _mb(r["collection_bytes"]), _params(r["params"])] for r in specs]))
    w("\nEngine build = `ls.build_vectors` wall time: FAISS build + recall tuning + writing and "
      "fsyncing every file + sha256 of each. Raw = `index_factory` + train + add only.\n")
    w("")
    w("## 2. Search: engine (`col.search_batch` / `col.search`) beside raw FAISS on the same index.faiss\n")
    rows = []
    for r in specs:
        rows.append([n_fmt(r["n"]), r["spec"], _f(r["recall_engine"], "{:.4f}"), _f(r["recall_raw"], "{:.4f}"),
                     _f(r["qps_engine"], "{:,.0f}"), _f(r["qps_raw"], "{:,.0f}"),
                     _f(r["qps_engine"] / r["qps_raw"], "{:.2f}"),
                     _f(r["p50_engine_us"], "{:,.0f}"), _f(r["p50_raw_us"], "{:,.0f}"),
                     _f(r["p99_engine_us"], "{:,.0f}"), _f(r["p99_raw_us"], "{:,.0f}"),
                     _f(r["overhead_us"], "{:,.0f}"),
                     f"{_f(r.get('p50_engine_us_mt'), '{:,.0f}')} / {_f(r.get('p50_raw_us_mt'), '{:,.0f}')}",
                     f"{_f(r.get('p99_engine_us_mt'), '{:,.0f}')} / {_f(r.get('p99_raw_us_mt'), '{:,.0f}')}"])
        if "qps_raw_rerank" in r:
            rows.append([n_fmt(r["n"]), f"{r['spec']} raw+numpy re-rank", "", _f(r["recall_raw_rerank"], "{:.4f}"),
                         "", _f(r["qps_raw_rerank"], "{:,.0f}"),
                         _f(r["qps_engine_vs_rerank"] / r["qps_raw_rerank"], "{:.2f}"), "", "", "", "", "", "", ""])
    w(table(["n", "spec", "recall@10 engine", "recall@10 raw", "q/s engine (batch 1,000)", "q/s raw",
             "engine/raw", "p50 µs engine", "p50 µs raw", "p99 µs engine", "p99 µs raw",
             "overhead µs (p50 engine - raw)", "p50 µs engine / raw, 2 threads", "p99 µs engine / raw, 2 threads"], rows))
    w("\nq/s: 1,000 queries in one call, median of 3-11 interleaved runs (as many as fit 1.5 s), "
      "FAISS at its default OpenMP threads. Latency: one query per call, engine and raw alternating, up to "
      "500 queries (15 s budget), with FAISS at 1 OpenMP thread (`faiss.omp_set_num_threads(1)`; the "
      "p50/p99 columns) and again at the default threads (the last two columns: on this shared machine "
      "OpenMP's parallel region around a single query often waits a scheduler slice). Raw `ivfpq` searches the PQ codes for k=10 with no re-rank (lower "
      "recall, approximate distances); the engine fetches `rerank`x10 candidates and re-ranks them "
      "exactly from vectors.npy. The `raw+numpy re-rank` row does the same re-rank vectorised in numpy "
      "over raw FAISS: what the engine's re-rank could cost. Target: overhead <= 50 µs.\n")

    bds = [r for r in specs if r.get("breakdown")]
    if bds:
        w("### Where one `col.search` goes (median µs per query, 1 OpenMP thread, private steps timed separately)\n")
        keys = ["total", "query_vectors", "search_params", "index_search", "raw_search", "fetch_records", "hits"]
        w(table(["n", "spec"] + ["col.search total", "_query_vectors", "building a typed SearchParameters (since b828266 only under a filter)",
                                 "_index.search (incl. re-rank)", "raw index.search", "snapshot.records (sqlite)",
                                 "Hit objects"],
                [[n_fmt(r["n"]), r["spec"]] + [_f(r["breakdown"][k], "{:,.1f}") for k in keys] for r in bds]))
        w("")

    w("## 3. `auto` against raw FAISS HNSW built directly (`faiss.IndexHNSWFlat(32, 32)`)\n")
    w("The raw index's efSearch is swept; the smallest value reaching the engine's `auto` recall is "
      "compared at batch throughput (median of 5-15 interleaved runs). DESIGN target at 1M: recall@10 "
      ">= 0.95 at >= 0.9x raw HNSW throughput at that recall; ambition recall@10 >= 0.99 at >= 10,000 q/s.\n")
    rows = []
    for h in R["hnsw"]:
        a = next((r for r in specs if r["n"] == h["n"] and r["spec"] == "auto"), {})
        rows.append([n_fmt(h["n"]), f"{a.get('factory')} ({_params(a.get('params', {}))})",
                     _f(a.get("build_s"), "{:.1f}"), _f(h["build_s"], "{:.1f}"),
                     _f(h["recall_engine"], "{:.4f}"), _f(h["qps_engine"], "{:,.0f}"),
                     f"{h['matched_ef']} ({h['matched_recall']:.4f})", _f(h["qps_raw"], "{:,.0f}"),
                     _f(h["ratio"], "{:.2f}"),
                     f"{h['ef99']} -> {h['ef99_recall']:.4f} at {h['ef99_qps']:,.0f} q/s" if "ef99" in h else "not reached"])
    w(table(["n", "engine auto", "engine build s", "raw HNSW build s", "engine recall@10",
             "engine q/s", "raw efSearch (recall)", "raw q/s", "engine/raw", "raw HNSW for recall>=0.99"], rows))
    w("")
    for h in R["hnsw"]:
        w(f"efSearch sweep of raw HNSW32 at n={n_fmt(h['n'])} (recall@10 / q/s, best of 3): " + "; ".join(
            f"{s['efSearch']}: {s['recall']:.4f} / {s['qps']:,.0f}" for s in h["sweep"]))
        w("")

    w("## 4. Peak memory of a fresh process: open + 1,000 batched + 200 single queries + one `neighbors`\n")
    w("Peak = VmHWM at the end minus VmRSS after `import numpy, faiss, latentsearch` (those imports "
      "themselves: the `base RSS` column). Target: <= 1.5x vectors.npy + index.faiss.\n")
    w(table(["n", "spec", "vectors+index MB", "base RSS MB", "RSS after open MB", "peak over base MB",
             "peak / (vectors+index)", "<= 1.5x", "raw FAISS peak over base MB", "IVFPQ precomputed table MB",
             "open s", "queries s"],
            [[n_fmt(m["n"]), m["spec"], _mb(m["data_bytes"]), _mb(m["base_rss"]),
              _mb(m["open_rss"] - m["base_rss"]), _mb(m["delta"]), _f(m["ratio"], "{:.2f}"),
              "yes" if m["ratio"] <= 1.5 else "NO", _mb(m.get("raw_delta")),
              _mb(m.get("precomputed_table_bytes")) if m.get("precomputed_table_bytes") else "-",
              _f(m["open_s"], "{:.2f}"), _f(m["query_s"], "{:.2f}")]
             for m in R["memory"]]))
    w("\nRaw FAISS: a fresh process that reads the same index.faiss, memory-maps vectors.npy, "
      "searches the same queries (and gathers the re-rank candidates' vectors for ivfpq). "
      "IVFPQ precomputed table: the nlist x M x 256 float table FAISS builds in `read_index` "
      "(`use_precomputed_table` is not stored, so the `np` of the factory string is lost on load); "
      "raw FAISS builds it, the engine reads with `IO_FLAG_SKIP_PRECOMPUTE_TABLE`.\n")
    w("")

    w("## 5. Cold processes (wall time, fresh process each run)\n")
    cold = dict(R.get("cold") or {})
    enc = R.get("encoders") or {}
    cold.update(enc.get("cold") or {})
    w(table(["command", "median s", "min s", "runs", "<= 1.0 s", "status"],
            [[f"`{name}`", _f(c["median"], "{:.2f}"), _f(c["min"], "{:.2f}"), len(c["times"]),
              ("yes" if c["median"] is not None and c["median"] <= 1.0 else "NO") if "query" in name else "",
              c["error"] or "ok"] for name, c in cold.items()]))
    w("")
    if enc:
        for name, b in (enc.get("builds") or {}).items():
            if b.get("ok"):
                w(f"- encoder collection `{name}` (`latentsearch build ... --epochs 1`): built in "
                  f"{b['s']:.1f}s" + (" (reused from an earlier run)" if b.get("reused") else "")
                  + (f"; query setup failed: {b['query_error']}" if b.get("query_error") else ""))
            else:
                w(f"- encoder collection `{name}`: not available ({b.get('error')})")
        w("")
    if R["open_breakdown"]:
        w("### Where a cold `query --id` goes (fresh process, `auto` collection; files in the page cache)\n")
        rows = []
        for b in R["open_breakdown"]:
            rows.append([n_fmt(b["n"]), _f(b["import_latentsearch"], "{:.3f}"), _f(b["import_faiss_after"], "{:.3f}"),
                         _f(b["read_manifest"], "{:.4f}"), f"{b['verify_sha256']:.3f} ({_mb(b['bytes_hashed'])} MB)",
                         _f(b["read_index"], "{:.3f}"), _f(b.get("records_count"), "{:.4f}"),
                         _f(b["open_noverify"], "{:.3f}"), _f(b["neighbors"], "{:.4f}"),
                         "yes" if b.get("tf_imported") else "no"])
        w(table(["n", "import latentsearch s", "then import faiss s", "read manifest s", "sha256 verify s (bytes)",
                 "faiss.read_index s", "sqlite SELECT count(*) s", "ls.open(verify=False) s", "neighbors(0) s", "TensorFlow imported"], rows))
        w("")

    w("## 6. `add` of 1,000 vectors: delta segments, compaction, beside a full rebuild\n")
    w(table(["n", "collection", "add 1,000 to a delta s (median)", "add that compacts s",
             "mean per add over the sequence s", "full rebuild of n+1,000 s", "delta add / rebuild",
             "every add s (d = delta, C = compaction)"],
            [[n_fmt(a["n"]), f"{a['spec']} ({a['factory']})", _f(a["add_s"], "{:.3f}"),
              _f(a["compaction_s"], "{:.2f}"), _f(a["mean_s"], "{:.3f}"), _f(a["rebuild_s"], "{:.1f}"),
              _f(a["ratio"], "{:.4f}"),
              " ".join(f"{t:.3f}{'d' if k == 'delta' else 'C'}" for t, k in zip(a["add_times"], a["add_kinds"]))]
             for a in R["add"]]))
    w(f"\nOn a copy of the `auto` collection, {ADDS} successive adds of the same 1,000 vectors. An "
      "add writes a delta segment (its vectors, ids, records) and the manifest, in proportion to "
      "the batch; the add that would put more than DELTA_LIMIT items in deltas folds them all "
      "into the main index and files (a compaction: every file rewritten).\n")
    w(table(["n", "items in deltas", "q/s batch 1,000: no deltas / with deltas / compacted",
             "single query p50 µs: no deltas / with deltas / compacted"],
            [[n_fmt(a["n"]), f"{a.get('deltas_items', 0):,}",
              f"{a['qps_before']:,.0f} / {a['qps_deltas']:,.0f} / {a['qps_after']:,.0f}",
              f"{a['p50_before']:.0f} / {a['p50_deltas']:.0f} / {a['p50_after']:.0f}"]
             for a in R["add"] if "qps_deltas" in a]))
    w("\nSearch with deltas: the index answers for the main segment and exact search over the "
      "deltas is merged in. The added vectors here are one repeated batch (timing only).\n")
    if R["remove"]:
        w("### `remove` of 10 ids (copy of the collection)\n")
        w(table(["n", "spec", "factory", "remove s", "then compact s"],
                [[n_fmt(r["n"]), r["spec"], r["factory"], _f(r["remove_s"], "{:.3f}"),
                  _f(r.get("compact_s"), "{:.2f}")] for r in R["remove"]]))
        w("\nA remove lists the ids as removed (hidden from answers through an id selector); the "
          "compaction purges them from the index: from a copy of it for IVF and Flat (the index being searched is never changed), a rebuild for HNSW.\n")
        w("")

    if len(R["sizes"]) > 1:
        lo, hi = R["sizes"][0], R["sizes"][-1]
        w(f"## 7. Growth from {n_fmt(lo)} to {n_fmt(hi)} ({hi / lo:.0f}x the vectors)\n")
        rows = []
        for spec in SPECS:
            a = next((r for r in specs if r["n"] == lo and r["spec"] == spec), None)
            b = next((r for r in specs if r["n"] == hi and r["spec"] == spec), None)
            if not a or not b:
                continue
            ma = next((m for m in R["memory"] if m["n"] == lo and m["spec"] == spec), None)
            mb = next((m for m in R["memory"] if m["n"] == hi and m["spec"] == spec), None)

            def grow(x, y, fmt):
                return f"{fmt.format(x)} -> {fmt.format(y)} (x{y / x:.1f})" if x and y else "n/a"

            rows.append([spec, grow(a["build_s"], b["build_s"], "{:.1f}s"),
                         grow(ma["delta"] / 1e6, mb["delta"] / 1e6, "{:.0f} MB") if ma and mb else "n/a",
                         grow(a["p50_engine_us"], b["p50_engine_us"], "{:,.0f} µs"),
                         grow(a["qps_engine"], b["qps_engine"], "{:,.0f}"),
                         f"{a['recall_engine']:.4f} -> {b['recall_engine']:.4f}"])
        w(table(["spec", "build", "peak memory over base", "single-query p50 (engine)", "q/s batched (engine)",
                 "recall@10"], rows))
        w("")

    w("## 8. Targets\n")
    w(table(["target", "measured", "met"], targets(R)))
    w("")
    if R.get("errors"):
        w("## Errors during the run\n")
        for e in R["errors"]:
            w(f"- {e}")
        w("")
    return "\n".join(out)


def targets(R: dict) -> list[list[str]]:
    rows = []
    hi = R["sizes"][-1]
    h = next((x for x in R["hnsw"] if x["n"] == hi), None)
    if h:
        ok = h["recall_engine"] >= 0.95 and h["ratio"] >= 0.9
        rows.append([f"auto at n={hi:,}: recall@10 >= 0.95 at >= 0.9x raw HNSW q/s at that recall",
                     f"recall {h['recall_engine']:.4f}, {h['qps_engine']:,.0f} q/s vs raw {h['qps_raw']:,.0f} q/s "
                     f"(efSearch {h['matched_ef']}): {h['ratio']:.2f}x", "yes" if ok else "NO"])
        a = next((r for r in R["specs"] if r["n"] == hi and r["spec"] == "auto"), None)
        if a:
            ok = a["recall_engine"] >= 0.99 and a["qps_engine"] >= 10_000
            rows.append([f"ambition at n={hi:,}: recall@10 >= 0.99 at >= 10,000 q/s",
                         f"auto: recall {a['recall_engine']:.4f} at {a['qps_engine']:,.0f} q/s", "yes" if ok else "NO"])
    over = [r for r in R["specs"] if r["n"] == hi]
    if over:
        worst = max(over, key=lambda r: r["overhead_us"])
        ok = all(r["overhead_us"] <= 50 for r in over)
        rows.append([f"single-query overhead of col.search over raw index.search <= 50 µs (n={hi:,})",
                     "; ".join(f"{r['spec']} {r['overhead_us']:,.0f} µs" for r in over)
                     + f" (worst {worst['spec']})", "yes" if ok else "NO"])
    cold = R.get("cold") or {}
    ids = {k: v for k, v in cold.items() if k.startswith("query --id")}
    if ids:
        big = {k: v for k, v in ids.items() if f"n={hi:,}" in k}
        ok = all(v["median"] is not None and v["median"] <= 1.0 for v in big.values())
        rows.append([f"`query --id 0` cold <= 1.0 s (n={hi:,})",
                     "; ".join(f"{k.split('(')[1].split(',')[0]} {_f(v['median'], '{:.2f}')} s" for k, v in big.items()),
                     "yes" if ok else "NO"])
    enc = (R.get("encoders") or {}).get("cold") or {}
    for k, v in enc.items():
        if "--id" in k:
            continue
        rows.append([f"`{k}` cold: as close to 1 s as can be", _f(v["median"], "{:.2f} s") if v["median"] else v["error"],
                     "yes" if v["median"] and v["median"] <= 1.0 else f"{v['median']:.2f} s" if v["median"] else "n/a"])
    mem = [m for m in R["memory"] if m["n"] == hi]
    if mem:
        ok = all(m["ratio"] <= 1.5 for m in mem)
        rows.append([f"peak memory to open and query <= 1.5x vectors+index (n={hi:,})",
                     "; ".join(f"{m['spec']} {m['ratio']:.2f}x" for m in mem), "yes" if ok else "NO"])
    a = next((x for x in R["add"] if x["n"] == hi), None)
    if a:
        lo_a = next((x for x in R["add"] if x["n"] == R["sizes"][0]), None)
        grow = f"; add at n={lo_a['n']:,}: {lo_a['add_s']:.2f} s" if lo_a and lo_a is not a else ""
        rows.append([f"`add` of 1,000 to n={hi:,} costs in proportion to the batch",
                     f"{a['add_s']:.2f} s vs rebuild {a['rebuild_s']:.1f} s ({a['ratio']:.3f}){grow}",
                     "see growth"])
    return rows


def main(argv=None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="10k and 100k vectors, fewer repetitions, no raw FAISS build timings")
    p.add_argument("--sizes", help="comma-separated sizes (default 100000,1000000; --quick 10000,100000)")
    p.add_argument("--out", default="benchmarks/RESULTS.md", help="where to write the tables")
    p.add_argument("--work", default="/tmp/bench", help="where data and collections are written")
    p.add_argument("--single", type=int, default=None, help="single queries timed per spec (default 500)")
    p.add_argument("--cold-runs", type=int, default=None, help="runs per cold command (default 5)")
    p.add_argument("--no-encoders", action="store_true", help="skip the image/text collections")
    args = p.parse_args(argv)
    args.argv = argv
    if args.sizes:
        args.sizes = [int(float(s)) for s in args.sizes.split(",") if s.strip()]
    else:
        args.sizes = [10_000, 100_000] if args.quick else [100_000, 1_000_000]
    args.sizes = sorted(set(args.sizes))
    args.single = args.single or (200 if args.quick else 500)
    args.cold_runs = args.cold_runs or (3 if args.quick else 5)
    work = Path(args.work)
    if str(work.resolve()).startswith(str(Path(__file__).resolve().parents[1])):
        p.error("--work must be outside the repository")
    R = run(args)
    text = render(R)
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    from benchmarks._data import kept_sections

    kept = kept_sections(out)  # sections other scripts own (peers, text) stay
    out.write_text(text + "\n" + (f"\n{kept}\n" if kept else ""))
    log(f"wrote {out} (total {R['total_s'] / 60:.1f} min)")


if __name__ == "__main__":
    main()

"""`latentsearch serve` beside the library in the same run: ``python -m benchmarks.serve``.

    pip install -e ".[serve]"
    python -m benchmarks.serve                         # 1M x 32, writes the serve section of RESULTS.md
    python -m benchmarks.serve --n 100000 --seconds 3 --rounds 1 --no-write     # a quick look

The collection: the peers' hard data (``benchmarks.peers.overlapping``: 1,000 overlapping
centres in 32-d, points centre + N(0, 1)), built once with ``build_vectors(index="auto")`` under
``--work`` and reused from there; the queries are 1,000 held-out points of another stream.

The server is ``latentsearch serve NAME --root ROOT --port P`` in a subprocess (uvicorn, as a
user starts it; its log goes to a file under --work). This process is the client: threads
with one keep-alive ``http.client`` connection each send pre-encoded JSON bodies and parse
every answer (``json.loads``), so a hit costs the client what an in-process Hit costs the
caller. The same process also opens the collection and measures ``col.search`` and
``search_batch`` directly. Each phase runs ``--seconds`` and the phases are interleaved over
``--rounds`` rounds, so a change of the machine's load falls on both sides alike:

* single-vector searches (k=10, the collection's default recall): 1 thread and 8 threads
  in-process, 1 client and 8 clients over HTTP - p50/p99 latency of a call and q/s;
* batches of the 1,000 queries: ``search_batch`` beside ``POST .../search {"vectors": ...}``
  (``q.tolist()`` through ``json.dumps``), and the same from a numpy client (orjson both ways);
* ``GET /health`` from 1 client: the floor of a round trip (client, TCP, uvicorn, routing);
* the same app (``create_app``) called as ASGI in this process, inside one running event loop:
  the app without the socket, uvicorn and the client, so the added time splits in two.

Then the steps a search handler does, timed one by one (JSON decode, pydantic validation of
the request model, the list to an array, the answer written, the client's parse, a hop to
the thread pool), each as the median of many runs. Targets (DESIGN.md): HTTP adds <= 1 ms at
p50 to a single search (1 client), and batches reach >= 0.8x the in-process throughput.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from benchmarks._data import median, pct, write_section
from benchmarks.peers import overlapping

__all__ = ["main", "collection", "Server", "Client", "measure", "table"]

K = 10
N_QUERIES = 1000
CLIENTS = 8
ADD_TARGET_MS = 1.0
BATCH_TARGET = 0.8


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def load() -> tuple[float, float, float]:
    return tuple(round(v, 2) for v in os.getloadavg())  # type: ignore[return-value]


# -- the collection -------------------------------------------------------------------------


def collection(n: int, work: Path) -> tuple[str, Path, float | None]:
    """(name, root, build seconds or None when reused): the hard-data collection of ``n``
    vectors under ``work/root``, built once."""
    import latentsearch as ls

    name, root = f"hard{n}", work / "root"
    try:
        col = ls.open(name, root)
        if len(col) == n and col.dim == 32:
            return name, root, None
    except ls.LatentSearchError:
        pass
    log(f"building {name} (auto index) under {root}")
    x = overlapping(n, 1)
    t0 = time.perf_counter()
    ls.build_vectors(x, name=name, root=root, index="auto", quiet=True, overwrite=True)
    return name, root, time.perf_counter() - t0


# -- the server and its clients -------------------------------------------------------------


class Server:
    """``latentsearch serve NAME --root ROOT`` in a subprocess of its own process group."""

    def __init__(self, name: str, root: Path, log_path: Path, port: int = 0):
        self.name, self.root, self.log_path, self.port = name, root, log_path, port
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> "Server":
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
        env.pop("LATENTSEARCH_ROOT", None)
        with open(self.log_path, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "latentsearch", "serve", self.name, "--root", str(self.root),
                 "--port", str(self.port)],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, env=env)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited: {self.log_path.read_text()[-2000:]}")
            found = re.search(r"serving \d+ collections? at http://127\.0\.0\.1:(\d+)",
                              self.log_path.read_text(errors="replace"))
            if found:  # its own line says which port (--port 0: a free one)
                self.port = int(found.group(1))
                try:
                    if Client(self.port).get("/health")[0] == 200:
                        return self
                except OSError:
                    pass
            time.sleep(0.2)
        self.__exit__()
        raise RuntimeError("the server did not answer /health in 300 s")

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


class NoDelayConnection(http.client.HTTPConnection):
    """http.client sends a request's headers and its body in two writes; with Nagle's
    algorithm on, the body then waits for the server's (delayed) ACK of the headers.
    Clients that care (urllib3, hence requests) set TCP_NODELAY, and so does this one."""

    def connect(self) -> None:
        super().connect()
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class Client:
    """One keep-alive connection (TCP_NODELAY); bodies are bytes already encoded."""

    def __init__(self, port: int, nodelay: bool = True):
        kind = NoDelayConnection if nodelay else http.client.HTTPConnection
        self.conn = kind("127.0.0.1", port, timeout=120)

    def post_raw(self, path: str, body: bytes) -> tuple[int, bytes]:
        self.conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
        resp = self.conn.getresponse()
        return resp.status, resp.read()

    def post(self, path: str, body: bytes) -> tuple[int, Any]:
        status, raw = self.post_raw(path, body)
        return status, json.loads(raw)

    def get(self, path: str) -> tuple[int, Any]:
        self.conn.request("GET", path)
        resp = self.conn.getresponse()
        return resp.status, json.loads(resp.read())


# -- timing ---------------------------------------------------------------------------------


def run_threads(threads: int, seconds: float, make: Callable[[int], Callable[[int], object]]) -> dict:
    """Each of ``threads`` threads calls its function (``make(slot)``) with 0, 1, 2, ... until
    ``seconds`` have passed; -> the call latencies (s), the calls and the wall time."""
    fns = [make(slot) for slot in range(threads)]  # connections are made before the clock
    lat: list[list[float]] = [[] for _ in range(threads)]
    errors: list[str] = []
    start = threading.Barrier(threads + 1)
    stop_at = [0.0]

    def body(slot: int) -> None:
        fn, mine = fns[slot], lat[slot]
        start.wait()
        i = slot
        try:
            while True:
                t0 = time.perf_counter()
                if t0 >= stop_at[0]:
                    break
                fn(i)
                mine.append(time.perf_counter() - t0)
                i += threads
        except Exception as exc:  # reported, and the figures of this phase are not used
            errors.append(f"{type(exc).__name__}: {exc}")

    pool = [threading.Thread(target=body, args=(s,)) for s in range(threads)]
    for t in pool:
        t.start()
    t0 = time.perf_counter()
    stop_at[0] = t0 + seconds
    start.wait()
    for t in pool:
        t.join()
    wall = time.perf_counter() - t0
    if errors:
        raise RuntimeError(f"{len(errors)} failed calls, first: {errors[0]}")
    flat = [v for one in lat for v in one]
    return {"lat": flat, "calls": len(flat), "wall": wall}


def run_asgi(loop, calls: list[Callable[[], Any]], seconds: float) -> dict:
    """The ASGI calls one after another for ``seconds`` inside one run of ``loop``."""
    async def body() -> list[float]:
        lat: list[float] = []
        stop_at = time.perf_counter() + seconds
        i = 0
        while True:
            t0 = time.perf_counter()
            if t0 >= stop_at:
                return lat
            await calls[i % len(calls)]()
            lat.append(time.perf_counter() - t0)
            i += 1

    t0 = time.perf_counter()
    lat = loop.run_until_complete(body())
    return {"lat": lat, "calls": len(lat), "wall": time.perf_counter() - t0}


def measure(col, port: int, name: str, q: np.ndarray, seconds: float, rounds: int,
            app: Any = None) -> dict:
    """Every phase ``rounds`` times, interleaved; -> per phase the pooled latencies and q/s.
    With ``app`` (the same app, made in this process) also the app called as ASGI."""
    path = f"/collections/{name}/search"
    singles = [json.dumps({"vector": v.tolist(), "k": K}).encode() for v in q]
    batch = json.dumps({"vectors": q.tolist(), "k": K}).encode()
    nq = len(q)

    loop = None
    if app is not None:
        import asyncio

        loop = asyncio.new_event_loop()  # the ASGI phases' (one thread at a time)

    def asgi(method: str, where: str, bodies: list[bytes]):
        """A phase of calls inside one running event loop (0 threads: `_rounds` runs it
        with `run_asgi`; a loop started per call would cost more than the app)."""
        return (loop, [_asgi(app, method, where, b) for b in bodies])

    def http_single(slot: int):
        c = Client(port)

        def call(i: int) -> None:
            status, out = c.post(path, singles[i % nq])
            if status != 200 or len(out["hits"]) != K:
                raise RuntimeError(f"{status}: {str(out)[:200]}")
        return call

    def http_batch(slot: int):
        c = Client(port)

        def call(i: int) -> None:
            status, out = c.post(path, batch)
            if status != 200 or len(out["batches"]) != nq:
                raise RuntimeError(f"{status}: {str(out)[:200]}")
        return call

    try:
        import orjson  # the serve extra brings it: what a client holding numpy arrays may use
    except ImportError:  # pragma: no cover
        orjson = None
    batch32 = orjson.dumps({"vectors": q, "k": K}, option=orjson.OPT_SERIALIZE_NUMPY) if orjson else b""

    def http_batch_orjson(slot: int):
        c = Client(port)

        def call(i: int) -> None:
            status, raw = c.post_raw(path, batch32)
            if status != 200 or len(orjson.loads(raw)["batches"]) != nq:
                raise RuntimeError(f"{status}: {raw[:200]!r}")
        return call

    def health(slot: int):
        c = Client(port)
        return lambda i: c.get("/health")

    def inproc(slot: int):
        return lambda i: col.search(q[i % nq], k=K)

    phases: dict[str, tuple[int, Callable, int]] = {  # threads, make, queries per call
        "inproc-1": (1, inproc, 1),
        "asgi-1": (0, asgi("POST", path, singles), 1),
        "http-1": (1, http_single, 1),
        "inproc-8": (CLIENTS, inproc, 1),
        "http-8": (CLIENTS, http_single, 1),
        "inproc-batch": (1, lambda s: (lambda i: col.search_batch(q, k=K)), nq),
        "asgi-batch": (0, asgi("POST", path, [batch]), nq),
        "http-batch": (1, http_batch, nq),
        "http-batch-orjson": (1, http_batch_orjson, nq),
        "asgi-health": (0, asgi("GET", "/health", [b""]), 1),
        "health": (1, health, 1),
    }
    if app is None:
        phases = {k: v for k, v in phases.items() if not k.startswith("asgi")}
    if orjson is None:
        del phases["http-batch-orjson"]
    try:
        return _rounds(phases, seconds, rounds) | {
            "bytes": {"single_request": len(singles[0]), "batch_request": len(batch),
                      "batch_request_float32": len(batch32)}}
    finally:
        if loop is not None:
            loop.close()


def _rounds(phases: dict[str, tuple[int, Callable, int]], seconds: float, rounds: int) -> dict:
    out: dict[str, dict] = {k: {"lat": [], "calls": 0, "wall": 0.0, "per_call": per}
                            for k, (_, _, per) in phases.items()}
    def run(threads: int, secs: float, make) -> dict:
        return run_asgi(*make, secs) if threads == 0 else run_threads(threads, secs, make)

    for key, (threads, make, _) in phases.items():  # warm-up: caches, connections, thread pool
        run(threads, min(1.0, seconds), make)
    load_avgs = []
    for r in range(rounds):
        for key, (threads, make, _) in phases.items():
            got = run(threads, seconds, make)
            for f in ("lat", "calls", "wall"):
                out[key][f] += got[f]
            out[key].setdefault("round_qps", []).append(got["calls"] * phases[key][2] / got["wall"])
            log(f"round {r + 1} {key}: p50 {median(got['lat']) * 1e3:.3f} ms, "
                f"{got['calls'] * phases[key][2] / got['wall']:,.0f} q/s")
        load_avgs.append(load())
    res = {}
    for key, o in out.items():
        res[key] = {"threads": max(1, phases[key][0]), "calls": o["calls"],
                    "p50_ms": median(o["lat"]) * 1e3, "p99_ms": pct(o["lat"], 99) * 1e3,
                    "qps": o["calls"] * o["per_call"] / o["wall"], "round_qps": o.get("round_qps", [])}
    res["loads"] = load_avgs
    return res


def agreement(col, port: int, name: str, q: np.ndarray) -> dict:
    """The HTTP answers are the library's: same ids in the same order (50 singles, a batch)."""
    c = Client(port)
    path = f"/collections/{name}/search"
    same = 0
    for v in q[:50]:
        _, out = c.post(path, json.dumps({"vector": v.tolist(), "k": K}).encode())
        same += [h["id"] for h in out["hits"]] == [h.id for h in col.search(v, k=K)]
    _, raw = c.post_raw(path, json.dumps({"vectors": q.tolist(), "k": K}).encode())
    out = json.loads(raw)
    lib = col.search_batch(q, k=K)
    batch_same = sum([h["id"] for h in a] == [h.id for h in b] for a, b in zip(out["batches"], lib))
    res = {"single_same": same, "singles": 50, "batch_same": batch_same, "batch": len(q),
           "batch_response": len(raw)}
    try:
        import orjson
    except ImportError:  # pragma: no cover
        return res
    _, raw32 = c.post_raw(path, orjson.dumps({"vectors": q, "k": K}, option=orjson.OPT_SERIALIZE_NUMPY))
    res["float32_same"] = orjson.loads(raw32) == out  # float32 digits name the same float32 queries
    return res


# -- where an HTTP search's time goes -------------------------------------------------------


def _asgi(app, method: str, path: str, body: bytes = b"") -> Callable[[], Any]:
    """A coroutine factory calling ``app`` as an ASGI server would, minus the socket."""
    headers = [(b"host", b"127.0.0.1"), (b"content-length", str(len(body)).encode())]
    if body:
        headers.append((b"content-type", b"application/json"))
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
             "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
             "root_path": "", "headers": headers, "client": ("127.0.0.1", 1),
             "server": ("127.0.0.1", 80)}

    async def call() -> int:
        got = {"body": False}
        status = [0]

        async def receive():
            if not got["body"]:
                got["body"] = True
                return {"type": "http.request", "body": body, "more_body": False}
            return {"type": "http.disconnect"}

        async def send(msg):
            if msg["type"] == "http.response.start":
                status[0] = msg["status"]

        await app(dict(scope), receive, send)
        if status[0] != 200:
            raise RuntimeError(f"{method} {path}: {status[0]}")
        return status[0]
    return call


def _median_us(fn: Callable[[], object], reps: int) -> float:
    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return median(times) * 1e6


def profile(name: str, root: Path, q: np.ndarray, reps: int) -> dict:
    """Medians (µs) of the steps a search handler does, measured one by one in this process,
    for a single vector and for a batch of ``len(q)``; and of one hop to the thread pool."""
    import asyncio

    import anyio.to_thread

    from latentsearch.serve.schemas import SearchRequest

    loads, encode = _app_json()

    single = json.dumps({"vector": q[0].tolist(), "k": K}).encode()
    batch = json.dumps({"vectors": q.tolist(), "k": K}).encode()
    out: dict[str, Any] = {}

    async def hops(n: int) -> float:
        await anyio.to_thread.run_sync(lambda: None)
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            await anyio.to_thread.run_sync(lambda: None)
            times.append(time.perf_counter() - t0)
        return median(times) * 1e6
    loop = asyncio.new_event_loop()
    try:
        out["thread_hop_us"] = loop.run_until_complete(hops(reps))
    finally:
        loop.close()
    import latentsearch as ls

    col = ls.open(name, root)

    def steps(body: bytes, n: int, what: str) -> None:
        req = loads(body)
        out[f"{what}_json_decode_us"] = _median_us(lambda: loads(body), n)
        out[f"{what}_validate_us"] = _median_us(lambda: SearchRequest.model_validate(req), n)
        out[f"{what}_parse_us"] = _median_us(lambda: SearchRequest.model_validate_json(body), n)
        key = "vector" if "vector" in req else "vectors"
        arr = np.asarray(req[key], dtype=np.float32)
        out[f"{what}_to_array_us"] = _median_us(lambda: np.asarray(req[key], dtype=np.float32), n)
        if key == "vector":
            out[f"{what}_search_us"] = _median_us(lambda: col.search(arr, k=K), n)
            hits = [col.search(arr, k=K)]
        else:
            out[f"{what}_search_us"] = _median_us(lambda: col.search_batch(arr, k=K), n)
            hits = col.search_batch(arr, k=K)
        one = key == "vector"
        out[f"{what}_encode_us"] = _median_us(lambda: encode(hits, one), n)
        raw = encode(hits, one)
        out[f"{what}_client_decode_us"] = _median_us(lambda: json.loads(raw), n)

    steps(single, reps, "single")
    steps(batch, max(5, reps // 50), "batch")
    return {k: round(v, 1) if isinstance(v, float) else v for k, v in out.items()}


def _app_json() -> tuple[Callable[[bytes], Any], Callable[[list, bool], bytes]]:
    """The app's JSON decoder, and its way to write search answers (hits to dicts first
    when it has a helper for that), whichever module of the app holds them."""
    try:
        from latentsearch.serve import jsonio as mod
    except ImportError:
        from latentsearch.serve import responses as mod
    loads = getattr(mod, "loads", json.loads)
    as_dicts = getattr(mod, "hit_dicts", None)

    def encode(hits: list, single: bool) -> bytes:
        rows = [as_dicts(h) for h in hits] if as_dicts else hits
        return mod.dumps({"hits": rows[0]} if single else {"batches": rows})
    return loads, encode


# -- the table ------------------------------------------------------------------------------


def table(R: dict) -> str:
    m = R["measured"]
    rows = [
        ("`col.search`, in-process", "1 thread", "inproc-1"),
        ("the app as ASGI, in-process (no socket, no uvicorn)", "1 thread", "asgi-1"),
        ("`POST /search {vector}`", "1 client", "http-1"),
        ("`col.search`, in-process", f"{CLIENTS} threads", "inproc-8"),
        ("`POST /search {vector}`", f"{CLIENTS} clients", "http-8"),
        (f"`search_batch` of {N_QUERIES:,}, in-process", "1 thread", "inproc-batch"),
        (f"the app as ASGI, batch of {N_QUERIES:,}", "1 thread", "asgi-batch"),
        (f"`POST /search {{vectors}}` of {N_QUERIES:,}", "1 client", "http-batch"),
        ("the same from a numpy client (orjson both ways: float32 digits in, `orjson.loads` out)",
         "1 client", "http-batch-orjson"),
        ("the app as ASGI, `GET /health`", "1 thread", "asgi-health"),
        ("`GET /health` (the round-trip floor)", "1 client", "health"),
    ]
    out = [f"Run {R['started']} ({R.get('code', '?')}), {R['cores']} cores, load average "
           f"{R['load_start'][0]} at the start and {R['load_end'][0]} at the end (1-minute; the machine "
           f"is shared; after each round: {', '.join(str(v[0]) for v in m['loads'])}); `{R['command']}`.",
           f"Collection: {R['n']:,} x 32 hard data (`benchmarks.peers.overlapping`), "
           f"`{R['factory']}` {R['params']}, {N_QUERIES:,} held-out queries, k={K}; "
           f"{R['rounds']} interleaved rounds of {R['seconds']:g} s per phase. Server: `latentsearch serve` "
           f"(uvicorn {R.get('uvicorn', '?')}, FastAPI {R.get('fastapi', '?')}) in its own process; "
           "clients in this one, one keep-alive `http.client` connection per thread (TCP_NODELAY), "
           "request bodies encoded beforehand, every answer parsed (`json.loads`).", "",
           "| path | concurrency | p50 ms | p99 ms | q/s |", "| --- | --- | --- | --- | --- |"]
    for label, conc, key in rows:
        if key in m:
            r = m[key]
            out.append(f"| {label} | {conc} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} | {r['qps']:,.0f} |")
    add1 = m["http-1"]["p50_ms"] - m["inproc-1"]["p50_ms"]
    add8 = m["http-8"]["p50_ms"] - m["inproc-8"]["p50_ms"]
    ratio = m["http-batch"]["qps"] / m["inproc-batch"]["qps"]
    ratio8 = m["http-8"]["qps"] / m["inproc-8"]["qps"]
    per_round = ", ".join(f"{h / i:.2f}" for h, i in zip(m["http-batch"]["round_qps"],
                                                       m["inproc-batch"]["round_qps"]))
    out += ["",
            f"- HTTP adds **{add1:.3f} ms** at p50 to a single search from 1 client (target <= "
            f"{ADD_TARGET_MS:g} ms: {'met' if add1 <= ADD_TARGET_MS else 'missed'}); {add8:.3f} ms with "
            f"{CLIENTS} clients, where HTTP gives {ratio8:.2f}x the in-process q/s (server and clients share "
            f"the {R['cores']} cores).",
            f"- Batches of {N_QUERIES:,}: HTTP gives **{ratio:.2f}x** the in-process q/s (target >= "
            f"{BATCH_TARGET:g}x: {'met' if ratio >= BATCH_TARGET else 'missed'}; round by round "
            f"{per_round}); request "
            f"{m['bytes']['batch_request'] / 1e3:,.0f} KB, answer {R['agree']['batch_response'] / 1e3:,.0f} KB"
            + (f"; a client sending float32 digits and parsing with orjson "
               f"({m['bytes']['batch_request_float32'] / 1e3:,.0f} KB in) gets "
               f"{m['http-batch-orjson']['qps'] / m['inproc-batch']['qps']:.2f}x" if "http-batch-orjson" in m
               else "") + ".",
            f"- Same answers: {R['agree']['single_same']}/{R['agree']['singles']} single searches and "
            f"{R['agree']['batch_same']}/{R['agree']['batch']} batch rows return the library's ids in its order"
            + ("; the float32-digit body gets the same answer" if R["agree"].get("float32_same")
               else "; the float32-digit body got a DIFFERENT answer" if "float32_same" in R["agree"]
               else "") + "."]
    if "asgi-1" in m:
        def p50(key: str) -> float:
            return m[key]["p50_ms"] * 1e3
        out += ["", "Where the added time goes (p50s of the table, µs):", "",
                "| part | single vector | batch of 1,000 | `GET /health` |", "| --- | --- | --- | --- |",
                f"| the search itself (in-process p50) | {p50('inproc-1'):,.0f} | {p50('inproc-batch'):,.0f} | - |",
                f"| the app: middleware, routing, body, validation, thread pool, JSON (ASGI minus in-process) "
                f"| {p50('asgi-1') - p50('inproc-1'):,.0f} | {p50('asgi-batch') - p50('inproc-batch'):,.0f} "
                f"| {p50('asgi-health'):,.0f} |",
                f"| uvicorn, TCP and the client (HTTP minus ASGI) | {p50('http-1') - p50('asgi-1'):,.0f} "
                f"| {p50('http-batch') - p50('asgi-batch'):,.0f} | {p50('health') - p50('asgi-health'):,.0f} |"]
    p = R.get("profile")
    if p:
        out += ["", "The steps of a search handler timed one by one (medians, µs, in this process after "
                "the run):", "", "| step | single vector | batch of 1,000 |", "| --- | --- | --- |"]
        steps = [("the search (`col.search` / `search_batch`, one query repeated)", "search_us"),
                 ("JSON decode of the body (the app's decoder)", "json_decode_us"),
                 ("pydantic validation of the parsed body (`SearchRequest`)", "validate_us"),
                 ("pydantic parse from the raw body (`model_validate_json`), for comparison", "parse_us"),
                 ("the query list to a float32 array", "to_array_us"),
                 ("the answer written (the app's encoder)", "encode_us"),
                 ("the client's `json.loads` of the answer", "client_decode_us")]
        for label, key in steps:
            a, b = p.get(f"single_{key}"), p.get(f"batch_{key}")
            if a is None and b is None:
                continue
            out.append(f"| {label} | {_us(a)} | {_us(b)} |")
        out.append(f"| one hop to the thread pool and back (`anyio.to_thread.run_sync`) | "
                   f"{_us(p['thread_hop_us'])} | - |")
    return "\n".join(out)


def _us(v: float | None) -> str:
    return "-" if v is None else f"{v:,.1f}" if v < 100 else f"{v:,.0f}"


# -- the run --------------------------------------------------------------------------------


def _code_state() -> str:
    """The commit measured, and whether the package had uncommitted changes (other work may
    change it between runs)."""
    repo = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True,
                              text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "latentsearch"], cwd=repo,
                               capture_output=True, text=True, timeout=10).stdout.splitlines()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"git {head or '?'}" + (f" + {len(dirty)} changed files under latentsearch/" if dirty else "")


def wait_for_quiet(limit: float, most: float) -> float:
    """Wait up to ``most`` seconds for the 1-minute load average to fall below ``limit``."""
    t0 = time.monotonic()
    while os.getloadavg()[0] >= limit and time.monotonic() - t0 < most:
        time.sleep(10)
    return os.getloadavg()[0]


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(prog="python -m benchmarks.serve", description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000, help="vectors in the collection")
    ap.add_argument("--seconds", type=float, default=10.0, help="length of each phase in a round")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds of every phase")
    ap.add_argument("--work", default="/tmp/bench-serve", help="where the collection and logs go")
    ap.add_argument("--port", type=int, default=0, help="server port (default 0: a free one)")
    ap.add_argument("--wait-load", type=float, default=1.5,
                    help="wait (up to --wait-max s) for the 1-minute load to fall below this")
    ap.add_argument("--wait-max", type=float, default=0.0)
    ap.add_argument("--profile-reps", type=int, default=2000)
    ap.add_argument("--no-profile", action="store_true")
    ap.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    args = ap.parse_args(argv)
    work = Path(args.work)
    if str(work.resolve()).startswith(str(Path(__file__).resolve().parents[1])):
        ap.error("--work must be outside the repository")
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import latentsearch as ls

    name, root, built = collection(args.n, work)
    col = ls.open(name, root)
    q = overlapping(N_QUERIES, 2)
    if args.wait_max:
        log(f"waiting up to {args.wait_max:g} s for load < {args.wait_load}")
        log(f"load {wait_for_quiet(args.wait_load, args.wait_max):.2f}")
    R: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": "python -m benchmarks.serve" + (" " + " ".join(argv) if argv else ""),
        "cores": os.cpu_count(), "n": args.n, "seconds": args.seconds, "rounds": args.rounds,
        "built_s": built, "factory": col.info["index"].get("factory"),
        "params": col.info["index"].get("params"), "load_start": load(), "code": _code_state(),
    }
    for mod in ("fastapi", "uvicorn"):
        try:
            R[mod] = __import__(mod).__version__
        except ImportError:
            pass
    from latentsearch.serve.app import create_app

    app = create_app(root, [name])  # the same app in this process, called as ASGI
    with Server(name, root, work / "server.log", args.port) as srv:
        log(f"server up on port {srv.port}; load {R['load_start']}")
        R["agree"] = agreement(col, srv.port, name, q)
        R["measured"] = measure(col, srv.port, name, q, args.seconds, args.rounds, app)
    R["load_end"] = load()
    if not args.no_profile:
        log("profile")
        R["profile"] = profile(name, root, q, args.profile_reps)
    (work / "serve.json").write_text(json.dumps(R, indent=1, default=str))
    text = table(R)
    print(text)
    if not args.no_write:
        write_section(Path(__file__).parent / "RESULTS.md", "serve",
                      "## Serving over HTTP, beside the library (`python -m benchmarks.serve`)\n\n" + text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

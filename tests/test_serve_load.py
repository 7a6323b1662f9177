"""`latentsearch serve` under load and under SIGKILL: a real uvicorn server in a subprocess.

The API tests call the app in-process (TestClient); these start the command a user starts,
on a port of 127.0.0.1, and talk to it over TCP with keep-alive connections (http.client),
because what they check - concurrent requests on the thread pool, acknowledged writes
surviving a killed process - only happens in a real server.
"""

from __future__ import annotations

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
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed (pip install -e '.[serve]')")
pytest.importorskip("uvicorn", reason="the serve extra is not installed (pip install -e '.[serve]')")

import latentsearch as ls  # noqa: E402

DIM = 16
SEARCHERS = 8
SEARCH_SECONDS = 20.0
WRITES = 50
WRITE_SIZE = 20


class Server:
    """``latentsearch serve --root ROOT --port 0`` (the port it prints is a free one) in its
    own process group, so a SIGKILL reaches the server itself, whatever the entry point forks."""

    def __init__(self, root: Path, log: Path):
        self.root, self.log = root, log
        self.proc: subprocess.Popen | None = None
        self.port = 0

    def start(self, timeout: float = 90.0) -> "Server":
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "latentsearch", "serve", "--root", str(self.root),
                 "--port", "0"],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            found = re.search(r"serving \d+ collections? at http://127\.0\.0\.1:(\d+)",
                              self.log.read_text(errors="replace"))
            if found:
                self.port = int(found.group(1))
                try:
                    with closing(connect(self.port)) as conn:
                        status, body = call(conn, "GET", "/health")
                    if status == 200 and body["status"] == "ok":
                        return self
                except OSError:
                    pass
            time.sleep(0.1)
        self.kill()
        raise AssertionError(f"the server did not come up; its log:\n{self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        """SIGKILL: no shutdown handler, no flush, like a power cut for the process."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()


class NoDelayConnection(http.client.HTTPConnection):
    """http.client writes headers and body apart: without TCP_NODELAY the body waits for
    the server's delayed ACK of the headers."""

    def connect(self) -> None:
        super().connect()
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def connect(port: int) -> http.client.HTTPConnection:
    return NoDelayConnection("127.0.0.1", port, timeout=60)


def call(conn: http.client.HTTPConnection, method: str, path: str, body: object = None):
    """One request on a keep-alive connection -> (status, parsed JSON)."""
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"} if data is not None else {}
    conn.request(method, path, body=data, headers=headers)
    resp = conn.getresponse()
    raw = resp.read()
    return resp.status, (json.loads(raw) if raw else None)


@pytest.fixture
def server(tmp_path):
    made: list[Server] = []

    def start(root: Path) -> Server:
        s = Server(root, tmp_path / f"server{len(made)}.log").start()
        made.append(s)
        return s

    yield start
    for s in made:
        s.stop()


def check_found(port: int, name: str, acked: dict[int, tuple[np.ndarray, str]]) -> None:
    """Every acknowledged id is stored with its label, and an exact search by its vector
    finds it first (distance 0)."""
    with closing(connect(port)) as conn:
        for item_id, (vec, label) in acked.items():
            status, item = call(conn, "GET", f"/collections/{name}/items/{item_id}")
            assert status == 200, (item_id, item)
            assert item["id"] == item_id and item["label"] == label
            status, out = call(conn, "POST", f"/collections/{name}/search",
                               {"vector": vec.tolist(), "k": 1, "exact": True})
            assert status == 200, out
            assert out["hits"][0]["id"] == item_id, (item_id, out)
            assert out["hits"][0]["distance"] < 1e-4


def test_searches_while_writing_through_the_api(root, server):
    """8 threads search for 20 s while a writer adds 50 batches: no 5xx, no failed request,
    and every acknowledged id is found afterwards."""
    rng = np.random.default_rng(0)
    ls.build_vectors(rng.standard_normal((2000, DIM), dtype=np.float32),
                     [f"c{i % 7}" for i in range(2000)], name="load", root=root)
    srv = server(root)
    stop_at = time.monotonic() + SEARCH_SECONDS
    statuses: list[dict[int, int]] = [{} for _ in range(SEARCHERS)]
    failures: list[str] = []
    acked: dict[int, tuple[np.ndarray, str]] = {}

    def search(slot: int) -> None:
        conn = connect(srv.port)
        local = np.random.default_rng(slot + 1)
        try:
            while time.monotonic() < stop_at:
                draw = local.random()
                body: dict = {"k": 10}
                if draw < 0.1:  # neighbours of a stored item
                    body["id"] = int(local.integers(0, 2000))
                else:
                    body["vector"] = local.standard_normal(DIM).tolist()
                if 0.8 < draw:
                    body["where"] = {"label": "c3"}
                status, out = call(conn, "POST", "/collections/load/search", body)
                statuses[slot][status] = statuses[slot].get(status, 0) + 1
                if status != 200:
                    failures.append(f"search {status}: {out}")
                elif len(out["hits"]) != 10:
                    failures.append(f"search gave {len(out['hits'])} hits")
                elif "where" in body and {h["label"] for h in out["hits"]} != {"c3"}:
                    failures.append(f"the filter let through {out['hits']}")
        except Exception as exc:  # a dropped connection is a failure too
            failures.append(f"searcher {slot}: {type(exc).__name__}: {exc}")
        finally:
            conn.close()

    def write() -> None:
        conn = connect(srv.port)
        local = np.random.default_rng(100)
        pause = SEARCH_SECONDS * 0.6 / WRITES  # spread the writes over the searching
        try:
            for b in range(WRITES):
                vecs = local.standard_normal((WRITE_SIZE, DIM), dtype=np.float32)
                label = f"w{b}"
                status, out = call(conn, "POST", "/collections/load/items",
                                   {"vectors": vecs.tolist(), "labels": [label] * WRITE_SIZE})
                if status != 200:
                    failures.append(f"add {status}: {out}")
                    continue
                assert len(out["ids"]) == WRITE_SIZE
                for item_id, v in zip(out["ids"], vecs):
                    acked[item_id] = (v, label)
                time.sleep(pause)
        except Exception as exc:
            failures.append(f"writer: {type(exc).__name__}: {exc}")
        finally:
            conn.close()

    threads = [threading.Thread(target=search, args=(i,)) for i in range(SEARCHERS)]
    threads.append(threading.Thread(target=write))
    for t in threads:
        t.start()
    for t in threads:
        t.join(SEARCH_SECONDS + 120)
    assert not any(t.is_alive() for t in threads), "a client thread hung"
    served = sum(sum(s.values()) for s in statuses)
    assert not failures, failures[:5]
    assert not any(code >= 500 for s in statuses for code in s), statuses
    assert served > SEARCHERS * 10, served  # the searchers really ran all along
    assert len(acked) == WRITES * WRITE_SIZE  # ids are unique and every batch was acknowledged
    check_found(srv.port, "load", acked)
    with closing(connect(srv.port)) as conn:
        status, info = call(conn, "GET", "/collections/load")
    assert status == 200 and info["count"] == 2000 + WRITES * WRITE_SIZE


def test_sigkill_during_adds_keeps_every_acknowledged_item(root, server):
    """SIGKILL the server while a client adds in a loop, three times: after each kill the
    collection opens with its checksums checked, holds every acknowledged item and whole
    batches only; a restarted server serves them all."""
    rng = np.random.default_rng(1)
    base, batch = 1000, 200
    ls.build_vectors(rng.standard_normal((base, DIM), dtype=np.float32), name="crash", root=root)
    acked: dict[int, tuple[np.ndarray, str]] = {}
    in_flight = 0  # kills that hit a request the client was waiting for
    for cycle in range(3):
        srv = server(root)
        acks = threading.Semaphore(0)
        state = {"in_flight": False}
        errors: list[str] = []

        def add(cycle=cycle, acks=acks, state=state, errors=errors, port=srv.port) -> None:
            conn = connect(port)
            local = np.random.default_rng(10 + cycle)
            j = 0
            while True:
                vecs = local.standard_normal((batch, DIM), dtype=np.float32)
                label = f"k{cycle}-{j}"
                state["in_flight"] = True
                try:
                    status, out = call(conn, "POST", "/collections/crash/items",
                                       {"vectors": vecs.tolist(), "labels": [label] * batch})
                except (OSError, http.client.HTTPException):
                    conn.close()
                    return  # the server is gone: this batch was not acknowledged
                state["in_flight"] = False
                if status != 200:
                    errors.append(f"add {status}: {out}")
                    conn.close()
                    return
                for item_id, v in zip(out["ids"], vecs):
                    acked[item_id] = (v, label)
                acks.release()
                j += 1

        writer = threading.Thread(target=add)
        writer.start()
        for _ in range(3 + cycle):
            assert acks.acquire(timeout=60), f"no acknowledgement; log:\n{srv.log.read_text()[-2000:]}"
        time.sleep(float(rng.uniform(0.0, 0.05)))  # somewhere inside the next add
        srv.kill()
        writer.join(60)
        assert not writer.is_alive() and not errors, errors
        in_flight += state["in_flight"]

        col = ls.open(root / "crash")  # verify=True: every file's checksum
        count = len(col)
        assert count >= base + len(acked) and (count - base) % batch == 0, (count, len(acked))
        ids = np.array(sorted(acked))
        assert [h.id for h in col.get(ids)] == ids.tolist()
        assert [h.label for h in col.get(ids)] == [acked[i][1] for i in ids]
        np.testing.assert_array_equal(col.vectors(ids), np.stack([acked[i][0] for i in ids]))
        del col
    assert len(acked) >= batch * (3 + 4 + 5)
    srv = server(root)
    check_found(srv.port, "crash", acked)
    print(f"{in_flight} of 3 kills landed inside an add request")

"""Readers in other processes while a writer adds and removes; a second writer; a killed writer."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import latentsearch as ls
from conftest import clustered

READER = """
import sys, time, numpy as np, latentsearch as ls
from pathlib import Path
root, done = sys.argv[1], Path(sys.argv[2])
opened = 0
q = np.ones(8, np.float32)
while not done.exists() or opened < 3:
    col = ls.open("c", root)                     # verifies every checksum
    ids = col.ids()
    assert len(ids) == len(col) == len(col.vectors()), "count and files disagree"
    assert (len(ids) - 200) % 10 == 0, f"half an add or remove: {{len(ids)}}"
    hits = col.search(q, k=5)
    assert len(hits) == 5 and all(h.label is not None for h in hits)
    opened += 1
print(opened)
"""


@pytest.mark.slow
def test_readers_see_consistent_collections_while_a_writer_works(root):
    x, labels = clustered(200, dim=8)
    col = ls.build_vectors(x, labels, name="c", index="hnsw")
    done = root.parent / "done"
    readers = [subprocess.Popen([sys.executable, "-c", READER, str(root), str(done)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for _ in range(2)]
    rng = np.random.default_rng(0)
    time.sleep(1.0)  # let the readers start
    for rounds in range(8):
        new = col.add(rng.normal(size=(10, 8)).astype(np.float32), labels=["w"] * 10, wait=5)
        if rounds % 2:
            col.remove(new, wait=5)
    done.touch()
    for r in readers:
        out, err = r.communicate(timeout=120)
        assert r.returncode == 0, err
        assert int(out) >= 3
    assert len(ls.open("c")) == 240


HOLDER = """
import sys, time
from pathlib import Path
from latentsearch.storage.lock import writer_lock
with writer_lock(Path(sys.argv[1])):
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def test_second_writer_fails_or_waits_and_stale_lock_never_blocks(root):
    col = ls.build_vectors(np.eye(8, dtype=np.float32), name="c")
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(col.path), "2"],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(ls.CollectionLocked, match="locked by another writer"):
        col.add(np.ones((1, 8)))
    t0 = time.monotonic()
    assert col.add(np.ones((1, 8)), wait=20).tolist() == [8]  # waits for the holder
    assert time.monotonic() - t0 > 0.5
    holder.communicate(timeout=30)

    # a writer killed while holding the lock: the kernel drops the lock with the process
    killed = subprocess.Popen([sys.executable, "-c", HOLDER, str(col.path), "600"],
                              stdout=subprocess.PIPE, text=True)
    assert killed.stdout.readline().strip() == "locked"
    os.kill(killed.pid, signal.SIGKILL)
    killed.communicate(timeout=30)
    assert col.add(np.ones((1, 8)), wait=2).tolist() == [9]
    assert (col.path / ".lock").exists()  # the lock file stays; only the flock matters


def test_cli_reports_a_locked_collection_in_one_line(root):
    from click.testing import CliRunner

    from latentsearch.cli import main

    col = ls.build_vectors(np.eye(8, dtype=np.float32), name="c")
    np.save(root.parent / "one.npy", np.ones((1, 8), np.float32))
    from latentsearch.storage.lock import writer_lock

    with writer_lock(col.path):
        r = CliRunner().invoke(main, ["add", "c", str(root.parent / "one.npy"), "--wait", "0.3"])
    assert r.exit_code == 1
    assert r.stderr.strip() == ("error: collection c is locked by another writer; "
                                "retry later or pass --wait SECONDS")


@pytest.mark.parametrize("spec", ["ivf", "hnsw"])
def test_threads_searching_one_collection_get_the_single_thread_answers(root, spec):
    from concurrent.futures import ThreadPoolExecutor

    x, labels = clustered(3_000, seed=11)
    col = ls.build_vectors(x[:2_900], labels[:2_900], name="t", index=spec)
    col.add(x[2_900:], labels=labels[2_900:])  # a delta segment too
    col.remove([5, 2_950])                      # and a removed list
    queries = x[::15] + 0.01
    want = [[(h.id, h.label) for h in col.search(q, k=5)] for q in queries]

    def run(chunk):
        return [[(h.id, h.label) for h in col.search(q, k=5)] for q in queries[chunk::4]]

    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(run, range(4)))
    for chunk in range(4):
        assert got[chunk] == want[chunk::4]

"""Crash safety: a writer killed (SIGKILL) at every durable step of build, add and remove.

The store calls ``storage.durable.step()`` at each file written, synced, renamed or deleted; with
``LATENTSEARCH_CRASH_AFTER=N`` the process kills itself after N steps. For every N until the
operation completes, the collection must open, pass its checksums, and hold exactly the state
before or after the operation, never a mix.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import latentsearch as ls
from conftest import clustered

N, M = 300, 40


def child(code: str, crash_after: int | None, **paths) -> int:
    env = dict(os.environ)
    env.pop("LATENTSEARCH_CRASH_AFTER", None)
    if crash_after is not None:
        env["LATENTSEARCH_CRASH_AFTER"] = str(crash_after)
    script = "import numpy as np, latentsearch as ls\n" + textwrap.dedent(code).format(**paths)
    return subprocess.run([sys.executable, "-c", script], env=env, capture_output=True).returncode


def state(root, name="c"):
    """(ids, vectors, labels, delta segments) of the collection, or None if it does not exist."""
    try:
        col = ls.open(name, root)  # verifies every checksum
    except ls.CollectionNotFound:
        return None
    ids = col.ids()
    layout = col.info["deltas"], col.info["removed_pending"]
    return ids.tolist(), col.vectors(), [h.label for h in col.get(ids)], layout


def same(a, b) -> bool:
    if a is None or b is None:
        return a is b
    return a[0] == b[0] and np.array_equal(a[1], b[1]) and a[2] == b[2] and a[3] == b[3]


def crash_everywhere(tmp_path, code, setup, **files) -> int:
    """Run ``code`` killed after 0, 1, 2, ... steps; each time the collection must hold the
    state before or after the operation. Returns how many runs were killed."""
    pristine = tmp_path / "pristine"
    setup(pristine)
    before = state(pristine)
    work = tmp_path / "work"

    def fresh():
        shutil.rmtree(work, ignore_errors=True)
        if pristine.exists():
            shutil.copytree(pristine, work, symlinks=True)
        else:
            work.mkdir(parents=True)

    fresh()
    assert child(code, None, root=str(work), **files) == 0
    after = state(work)
    assert after is not None and not same(after, before)
    killed = 0
    for n in range(0, 200):
        fresh()
        rc = child(code, n, root=str(work), **files)
        now = state(work)
        assert same(now, before) or same(now, after), f"killed after {n} steps: a mixed state"
        if rc == 0:
            assert same(now, after)
            break
        assert rc == -signal.SIGKILL, f"child failed with {rc}, not killed"
        killed += 1
        if now is not None:  # the next writer works and clears what the killed one left
            ls.open("c", work).add(np.ones((1, 8), np.float32))
            assert [p.name for p in (work / "c").iterdir() if "tmp" in p.name] == []
    return killed


@pytest.fixture
def arrays(tmp_path):
    x, labels = clustered(N + M, dim=8)
    np.save(tmp_path / "x.npy", x[:N])
    np.save(tmp_path / "extra.npy", x[N:])
    return tmp_path


@pytest.mark.slow
def test_killed_build_leaves_nothing_or_everything(tmp_path, arrays):
    code = """
        x = np.load({x!r})
        ls.build_vectors(x, labels=list(range(len(x))), name="c", root={root!r})
    """
    trials = crash_everywhere(tmp_path, code, lambda p: None, x=str(arrays / "x.npy"))
    assert trials >= 6  # files synced, manifest written, folder renamed
    # a killed build leaves a hidden folder that the next build of that name clears
    work = tmp_path / "again"
    work.mkdir()
    assert child(code, 3, root=str(work), x=str(arrays / "x.npy")) == -signal.SIGKILL
    assert [p.name for p in work.iterdir() if p.name.startswith(".c.tmp-")]
    assert child(code, None, root=str(work), x=str(arrays / "x.npy")) == 0
    assert sorted(p.name for p in work.iterdir()) == ["c"]


@pytest.mark.slow
def test_killed_add_and_remove_leave_before_or_after(tmp_path, arrays):
    x = np.load(arrays / "x.npy")

    def setup(path):
        ls.build_vectors(x, labels=list(range(N)), name="c", root=path, index="hnsw")

    add = """
        col = ls.open("c", {root!r})
        col.add(np.load({extra!r}), labels=["new"] * {m})
    """
    # a delta segment: 3 files written and synced, renamed, the manifest replaced
    assert crash_everywhere(tmp_path, add, setup, extra=str(arrays / "extra.npy"), m=M) >= 5
    remove = """
        ls.open("c", {root!r}).remove([0, 5, 17, 299])
    """
    # the removed-ids list: one file, the manifest, the old list deleted
    assert crash_everywhere(tmp_path / "r", remove, setup) >= 3


@pytest.mark.slow
@pytest.mark.parametrize("operation", [
    "col.compact()",                                  # deltas folded in, removed ids purged
    "col.remove([1, 310])",                           # main and delta ids: listed, rewritten
    "col.remove(list(range(8, 108)))",                # past a quarter of the main: compaction
    "col.remove([305, 330])",                         # delta ids only: deltas rewritten
    "col.add(np.load({extra!r})[:5])",                # a third segment: merged (MAX_DELTAS=2)
    "col.add(np.load({extra!r}))",                    # past DELTA_LIMIT=50: compaction
])
def test_killed_writes_with_delta_segments_leave_before_or_after(tmp_path, arrays, operation):
    x, extra = np.load(arrays / "x.npy"), np.load(arrays / "extra.npy")

    def setup(path):
        col = ls.build_vectors(x, labels=list(range(N)), name="c", root=path, index="ivf")
        col.add(extra[:20], labels=["a"] * 20)
        col.add(extra[20:], labels=["b"] * (M - 20))
        col.remove([7])
        assert col.info["deltas"] == {"segments": 2, "items": M}
        assert col.info["removed_pending"] == 1

    code = """
        from latentsearch.collection import writer as _collection
        _collection.DELTA_LIMIT, _collection.MAX_DELTAS = 50, 2
        col = ls.open("c", {root!r})
        """ + operation
    assert crash_everywhere(tmp_path, code, setup, extra=str(arrays / "extra.npy")) >= 5

"""One Collection shared by many threads: searches see whole generations while one writes.

The Collection publishes each generation's snapshot with one assignment after the commit, so
a search that took a snapshot answers from that generation only. These tests check answers
against fresh opens of each generation, and pause a writer inside its commit to check that
nothing of the next generation is visible before the commit.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

import latentsearch as ls
from latentsearch.collection import writer

DIM = 8
QUERIES = np.random.default_rng(1).normal(size=(12, DIM)).astype(np.float32)


def answers(col, queries=QUERIES, k=5):
    return [[h.id for h in hits] for hits in col.search_batch(queries, k=k)]


def test_eight_threads_search_while_one_thread_adds_removes_and_compacts(tmp_path):
    rng = np.random.default_rng(0)
    col = ls.build_vectors(rng.normal(size=(2_000, DIM)), name="t", root=tmp_path)
    expected = {col.generation: answers(ls.open(col.path, verify=False))}
    stop = threading.Event()
    seen: list[list[tuple[int, int, list]]] = [[] for _ in range(8)]
    failures: list[BaseException] = []

    def search(mine):
        try:
            while not stop.is_set():
                first = col.generation
                got = answers(col)
                hit = col.search(QUERIES[0], k=5)
                mine.append((first, col.generation, got, [h.id for h in hit]))
                time.sleep(0.005)  # leave the writer some of the GIL
        except BaseException as exc:  # reported below
            failures.append(exc)

    readers = [threading.Thread(target=search, args=(seen[i],)) for i in range(8)]
    for t in readers:
        t.start()
    added, removed = [], set()

    def committed():  # the answers of a fresh open of the generation just written
        expected[col.generation] = answers(ls.open(col.path, verify=False))

    try:
        for batch in range(1_000):
            # a few near the queries, so new generations change the answers
            near = QUERIES[rng.integers(0, len(QUERIES), 2)] + rng.normal(0, 0.05, (2, DIM))
            added += col.add(near.astype(np.float32)).tolist()
            committed()
            if batch % 97 == 41:
                gone = [added[int(rng.integers(0, len(added)))], int(rng.integers(0, 2_000))]
                gone = [g for g in dict.fromkeys(gone) if g not in removed]
                col.remove(gone)
                removed.update(gone)
                committed()
            if batch % 331 == 330:
                col.compact()
                committed()
    finally:
        stop.set()
        for t in readers:
            t.join()
    assert not failures, failures[0]
    checked = 0
    for mine in seen:
        assert mine  # every reader searched
        for first, last, got, single in mine:
            gens = [g for g in range(first, last + 1) if g in expected]
            assert any(expected[g] == got for g in gens), (first, last)
            assert any(expected[g][0] == single for g in gens), (first, last)
            checked += 1
    assert len(expected) > 1_000 and checked > 100
    live = [i for i in added if i not in removed]
    assert len(col) == 2_000 + len(added) - len(removed)
    for i in live[::7]:  # every added id is found by neighbors, and its own vector finds it
        assert len(col.neighbors(i, k=3)) == 3
    hits = col.search_batch(col.vectors(live), k=1, exact=True)
    assert [h[0].id for h in hits] == live


@pytest.fixture
def pause_commit(monkeypatch):
    """Once called, holds the next writer inside ``commit``, after its files are staged and
    before the manifest is replaced, until the test sets the returned ``go`` event."""
    inside, go = threading.Event(), threading.Event()
    real = writer.commit

    def held(*args, **kwargs):
        inside.set()
        assert go.wait(60)
        return real(*args, **kwargs)

    def arm():
        monkeypatch.setattr(writer, "commit", held)
        return inside, go

    return arm


@pytest.mark.parametrize("change", ["add", "compact", "remove"])
def test_no_search_sees_a_generation_before_its_commit(tmp_path, pause_commit, change):
    """Fails if the snapshot were published before the commit, or if the compaction changed
    the live FAISS index in place (the deltas would then be found twice)."""
    rng = np.random.default_rng(2)
    col = ls.build_vectors(rng.normal(size=(12_000, DIM)), name="p", root=tmp_path,
                           index="ivf")
    col.add(QUERIES + 0.01)  # deltas nearest to the queries
    col.remove([5, 6])
    before, generation = answers(col), col.generation
    ops = {"add": lambda: col.add(QUERIES), "compact": col.compact,
           "remove": lambda: col.remove(col.ids()[-len(QUERIES):])}
    inside, go = pause_commit()
    worker = threading.Thread(target=ops[change])
    worker.start()
    try:
        assert inside.wait(60)
        assert col.generation == generation
        assert answers(col) == before
        assert [h.id for h in col.search(QUERIES[0], k=5)] == before[0]
    finally:
        go.set()
        worker.join()
    assert col.generation == generation + 1
    after = answers(col)
    assert after == answers(ls.open(col.path))
    if change != "compact":
        assert after != before
    assert all(len(set(row)) == len(row) for row in after)  # no id twice


def test_a_failed_write_leaves_the_served_generation_as_it_was(tmp_path, monkeypatch):
    rng = np.random.default_rng(3)
    col = ls.build_vectors(rng.normal(size=(12_000, DIM)), name="f", root=tmp_path, index="ivf")
    col.add(QUERIES + 0.01)
    before, index = answers(col), col.snapshot.main.index
    ntotal = index.ntotal

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(writer, "commit", broken)
    with pytest.raises(OSError, match="disk full"):
        col.compact()
    assert col.snapshot.main.index is index and index.ntotal == ntotal
    assert answers(col) == before


def test_writes_from_several_threads_queue_and_all_land(tmp_path):
    rng = np.random.default_rng(4)
    col = ls.build_vectors(rng.normal(size=(500, DIM)), name="q", root=tmp_path)
    got: list[list[int]] = [[] for _ in range(4)]

    def write(mine):
        for _ in range(25):
            mine += col.add(rng.normal(size=(3, DIM)).astype(np.float32)).tolist()

    threads = [threading.Thread(target=write, args=(got[i],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ids = sorted(i for mine in got for i in mine)
    assert ids == list(range(500, 500 + 4 * 25 * 3))
    assert len(ls.open(col.path)) == len(col) == 800


def test_an_old_snapshot_closes_its_files_when_its_last_search_ends(tmp_path):
    import gc
    import weakref

    rng = np.random.default_rng(5)
    col = ls.build_vectors(rng.normal(size=(300, DIM)), name="c", root=tmp_path)
    held = col.snapshot  # as a long search would hold it
    gone = weakref.ref(held.main)
    col.add(rng.normal(size=(2, DIM)))
    col.compact()  # a new main segment: the old one is only held by `held`
    assert gone() is not None and len(answers(col)) == len(QUERIES)
    records = held.main.records
    del held
    gc.collect()
    assert gone() is None
    with pytest.raises(Exception, match="closed"):
        records.execute("SELECT 1")

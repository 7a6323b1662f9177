"""Delta segments: an add writes only its own batch; deltas merge and compact correctly."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

import latentsearch as ls
from latentsearch.collection import build, writer
from latentsearch.cli import main
from conftest import clustered


def files_of(col) -> dict[str, tuple[str, str]]:
    return {k: (e["path"], e["sha256"]) for k, e in col.manifest["files"].items()}


def exact_ids(x: np.ndarray, ids: np.ndarray, q: np.ndarray, k: int) -> list[list[int]]:
    d = ((q[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    return ids[np.argsort(d, axis=1, kind="stable")[:, :k]].tolist()


@pytest.fixture
def grown(root):
    """An IVF collection of 2,000 vectors and two adds of 100 (two delta segments)."""
    x, labels = clustered(2_300, seed=3)
    col = ls.build_vectors(x[:2_000], labels[:2_000], name="g", index="ivf")
    main_files = files_of(col)
    col.add(x[2_000:2_100], labels=labels[2_000:2_100])
    col.add(x[2_100:2_200], labels=labels[2_100:2_200])
    return col, x, labels, main_files


def test_add_writes_only_its_batch_and_keeps_the_main_files(grown):
    col, x, _, main_files = grown
    files = files_of(col)
    assert {k: files[k] for k in main_files} == main_files  # not rewritten
    added = {k: e for k, e in col.manifest["files"].items() if k not in main_files}
    assert sorted(added) == sorted(
        f"{d['name']}/{p}" for d in col.manifest["deltas"] for p in ("vectors", "ids", "records")
    )
    vector_bytes = [e["bytes"] for k, e in added.items() if k.endswith("/vectors")]
    assert vector_bytes == [100 * 32 * 4 + 128] * 2  # the batch and the .npy header
    assert col.info["deltas"] == {"segments": 2, "items": 200}
    assert len(col) == 2_200 and col.manifest["format_version"] == 2
    assert {p.name for p in col.path.iterdir()} == {
        e["path"] for e in col.manifest["files"].values()
    } | {"manifest.json", ".lock"}


def test_deltas_answer_like_the_index_and_survive_reopen(grown):
    col, x, labels, _ = grown
    q = x[2_150:2_160] + 0.01
    want = exact_ids(x[:2_200], np.arange(2_200), q, 1)
    assert [[h.id for h in hits[:1]] for hits in col.search_batch(q, k=5)] == want
    hit = col.neighbors(2_150, k=1)[0]
    assert hit.id != 2_150
    again = ls.open("g")
    assert again.ids().tolist() == list(range(2_200))
    np.testing.assert_array_equal(again.vectors([5, 2_050, 2_199]), x[[5, 2_050, 2_199]])
    assert [h.label for h in again.get([1, 2_001, 2_101])] == [str(labels[i]) for i in (1, 2_001, 2_101)]
    only = again.search_batch(q, k=10, where={"label": int(labels[2_150])})
    assert all(h.label == str(labels[2_150]) for hits in only for h in hits)
    assert any(h.id >= 2_000 for hits in only for h in hits)


def test_remove_from_a_delta_rewrites_only_the_deltas(grown):
    col, x, _, main_files = grown
    col.remove([2_010, 2_150])
    assert {k: files_of(col)[k] for k in main_files} == main_files
    assert col.info["deltas"] == {"segments": 1, "items": 198}
    assert 2_150 not in col.ids() and len(col) == 2_198
    assert col.search(x[2_150], k=1)[0].id != 2_150
    col.remove(np.arange(2_000, 2_200)[~np.isin(np.arange(2_000, 2_200), [2_010, 2_150])])
    assert col.info["deltas"] == {"segments": 0, "items": 0}
    assert col.manifest["format_version"] == 1 and len(col) == 2_000
    assert col.add(x[:1]).tolist() == [2_200]  # removed ids are never given again


@pytest.mark.parametrize("spec", ["ivf", "hnsw", "flat"])
def test_remove_from_the_main_segment_lists_the_ids_until_compaction(root, spec):
    x, labels = clustered(2_300, seed=3)
    col = ls.build_vectors(x[:2_000], labels[:2_000], name="r", index=spec)
    col.add(x[2_000:2_200], labels=labels[2_000:2_200])
    main_files = files_of(col)
    col.remove([3, 17, 2_003])
    # main files untouched (HNSW is not rebuilt); the ids are listed and hidden everywhere
    assert {k: files_of(col)[k] for k in ("vectors", "index", "records")} == {
        k: main_files[k] for k in ("vectors", "index", "records")}
    assert col.info["removed_pending"] == 2 and col.info["deltas"]["items"] == 199
    assert col.snapshot.main.index.ntotal == 2_000 and len(col) == 2_197
    keep = ~np.isin(np.arange(2_200), [3, 17, 2_003])
    live_x, live_ids = x[:2_200][keep], np.arange(2_200)[keep]
    assert col.ids().tolist() == live_ids.tolist()
    np.testing.assert_array_equal(col.vectors(), live_x)
    for gone in (3, 17, 2_003):
        with pytest.raises(ls.UnknownId):
            col.get(gone)
        assert gone not in [h.id for h in col.search(x[gone], k=5)]
    only = col.search_batch(x[[3, 17]], k=50, where={"label": int(labels[3])})
    assert all(h.id not in (3, 17) for hits in only for h in hits)
    q = np.concatenate([x[[3, 17]], x[2_100:2_110]]) + 0.01
    got = [[h.id for h in hits] for hits in col.search_batch(q, k=1)]
    assert got == exact_ids(live_x, live_ids, q, 1)
    again = ls.open("r")
    assert again.ids().tolist() == live_ids.tolist() and again.manifest["format_version"] == 2
    # compaction purges them from the index and files
    again.compact()
    assert again.info["removed_pending"] == 0 and again.snapshot.main.index.ntotal == 2_197
    assert "removed" not in again.manifest["files"] and again.manifest["format_version"] == 1
    assert [[h.id for h in hits] for hits in again.search_batch(q, k=1)] == got


def test_removing_past_the_limit_compacts(root, monkeypatch):
    monkeypatch.setattr(writer, "REMOVED_LIMIT", 5)
    x, _ = clustered(2_000, seed=7)
    col = ls.build_vectors(x, name="p", index="ivf")
    col.remove([1, 2, 3])
    assert col.info["removed_pending"] == 3 and col.snapshot.main.index.ntotal == 2_000
    col.remove([4, 5, 6])  # 6 listed > 5: compaction
    assert col.info["removed_pending"] == 0 and col.snapshot.main.index.ntotal == 1_994
    assert len(col) == 1_994 and col.search(x[4], k=1)[0].id != 4


def test_too_many_segments_merge_into_one(root, monkeypatch):
    monkeypatch.setattr(writer, "MAX_DELTAS", 3)
    x, labels = clustered(600, seed=4)
    col = ls.build_vectors(x[:500], labels[:500], name="m", index="flat")
    for start in range(500, 600, 20):
        col.add(x[start : start + 20], labels=labels[start : start + 20])
        assert len(col.manifest["deltas"]) <= 3
    # adds 1-3 made three segments, the fourth merged them with its batch, the fifth appended
    assert [d["count"] for d in col.manifest["deltas"]] == [80, 20]
    assert col.ids().tolist() == list(range(600))
    np.testing.assert_array_equal(col.vectors(), x)
    assert [h.label for h in col.get(range(500, 600))] == [str(v) for v in labels[500:]]
    q = x[500:600] + 0.001
    assert [[h.id for h in hits] for hits in col.search_batch(q, k=3)] == exact_ids(x, np.arange(600), q, 3)


def test_deltas_past_the_limit_are_folded_into_the_index(root, monkeypatch):
    monkeypatch.setattr(writer, "DELTA_LIMIT", 150)
    x, _ = clustered(2_400, seed=5)
    col = ls.build_vectors(x[:2_000], name="l", index="ivf")
    col.add(x[2_000:2_100])
    assert col.info["deltas"]["items"] == 100 and col.snapshot.main.index.ntotal == 2_000
    col.add(x[2_100:2_200])  # 200 > 150: compaction
    assert col.info["deltas"]["items"] == 0 and col.snapshot.main.index.ntotal == 2_200
    assert col.manifest["index"]["factory"].startswith("IVF")
    col.add(x[2_200:2_400])  # one batch past the limit goes straight to the index
    assert col.info["deltas"]["items"] == 0 and col.snapshot.main.index.ntotal == 2_400
    assert col.search(x[2_333], k=1)[0].id == 2_333


def test_auto_outgrowing_flat_compacts_into_the_index_auto_measures(root, monkeypatch):
    """Which candidate wins is measured (q/s at the recall target), so it depends on the
    machine's load: the test pins that the compaction happens and installs the winner (it
    once asserted IVF, and failed in a CI run where HNSW was measured faster)."""
    monkeypatch.setattr(writer, "DELTA_LIMIT", 100_000)
    x, _ = clustered(10_200, seed=6)
    col = ls.build_vectors(x[:9_000], name="a")
    assert col.manifest["index"]["factory"] == "Flat"
    col.add(x[9_000:9_900])
    assert col.manifest["index"]["factory"] == "Flat" and col.info["deltas"]["items"] == 900
    col.add(x[9_900:])  # 10,200 items: auto measures its candidates now
    entry = col.manifest["index"]
    assert entry["choice"]["chosen"] in ("ivffs", "ivf", "hnsw")
    won = next(c for c in entry["choice"]["candidates"] if c["spec"] == entry["choice"]["chosen"])
    assert entry["factory"] == won["factory"] != "Flat"
    assert col.info["deltas"]["items"] == 0 and col.snapshot.main.index.ntotal == 10_200


def test_a_version_1_manifest_without_deltas_opens(root):
    x, _ = clustered(50)
    col = ls.build_vectors(x, name="v1")
    path = col.path / "manifest.json"
    doc = json.loads(path.read_text())
    assert doc["format_version"] == 1 and doc["deltas"] == []
    del doc["deltas"]
    path.write_text(json.dumps(doc))
    again = ls.open("v1")
    assert len(again) == 50 and again.info["deltas"]["items"] == 0
    again.add(x[:2])
    assert len(ls.open("v1")) == 52


@pytest.mark.parametrize("lie", [
    [{"name": "delta-000002", "count": 99}],                 # more than the collection holds
    [{"name": "../../etc", "count": 1}],                     # not a segment name
    [{"name": "delta-000002", "count": 2}],                  # its files are not named
    "all of them",
])
def test_lying_deltas_in_the_manifest_are_refused(root, lie):
    x, _ = clustered(50)
    col = ls.build_vectors(x, name="d")
    path = col.path / "manifest.json"
    doc = json.loads(path.read_text())
    doc["deltas"] = lie
    path.write_text(json.dumps(doc))
    with pytest.raises(ls.CorruptCollection):
        ls.open("d")


def test_delta_files_are_checksummed(grown):
    col, *_ = grown
    entry = col.manifest["files"][f"{col.manifest['deltas'][0]['name']}/vectors"]
    with open(col.path / entry["path"], "r+b") as fh:
        fh.seek(-4, 2)
        fh.write(b"\x00\x00\x80\x7f")
    with pytest.raises(ls.CorruptCollection, match="checksum"):
        ls.open("g")


def test_cli_compact_and_info(grown):
    col, *_ = grown
    r = CliRunner().invoke(main, ["compact", "g"])
    assert r.exit_code == 0, r.output
    assert "200 delta items folded into IVF" in r.output and "now 2200 items" in r.output
    info = json.loads(CliRunner().invoke(main, ["info", "g", "--json"]).output)
    assert info["deltas"] == {"segments": 0, "items": 0} and info["count"] == 2_200


def test_reload_after_an_overwrite_does_not_keep_a_same_named_delta(root):
    """A rebuilt collection numbers its generations afresh: its first add is delta-000002
    again. A reader reusing open segments by name alone showed the old delta's vectors."""
    x, _ = clustered(60, seed=8)
    reader = ls.build_vectors(x[:40], name="o")
    reader.add(x[40:45])
    ls.build_vectors(x[:40] + 1.0, name="o", overwrite=True).add(x[45:50])
    reader.reload()
    assert reader.manifest["deltas"][0]["name"] == "delta-000002"
    np.testing.assert_array_equal(reader.vectors([40, 44]), x[[45, 49]])
    assert reader.search(x[47], k=1)[0].id == 42


def test_add_vectors_refuses_images_that_do_not_match(root):
    """Before: float or wrongly sized images were committed as a delta and the collection
    no longer opened (or compacted)."""
    from latentsearch.encoders.vectors import VectorEncoder

    x, _ = clustered(30, dim=4)
    pixels = np.arange(30 * 2 * 2, dtype=np.uint8).reshape(30, 2, 2, 1)
    col = build.create("im", encoder=VectorEncoder(4), vectors=x,
                             records=[(None, None, None, None)] * 30, images=pixels)
    before = files_of(col)
    for bad in (pixels[:2].astype(np.float32), np.zeros((2, 3, 3, 1), np.uint8), None):
        with pytest.raises(ls.InvalidInput):
            col.add_vectors(x[:2], [(None, None, None, None)] * 2, images=bad)
    assert files_of(ls.open("im")) == before
    col.add_vectors(x[:2], [(None, None, None, None)] * 2, images=pixels[:2])
    np.testing.assert_array_equal(ls.open("im").images([30, 31, 5]), pixels[[0, 1, 5]])
    plain = ls.build_vectors(x, name="plain")
    with pytest.raises(ls.InvalidInput, match="keeps no images"):
        plain.add_vectors(x[:2], [(None, None, None, None)] * 2, images=pixels[:2])


def test_short_exact_fallback_skips_removed_ids(root):
    x, labels = clustered(3_000, seed=9)
    col = ls.build_vectors(x, labels, name="s", index="ivf")
    col.remove([0, 1, 2])
    col.snapshot.main.index.nprobe = 1  # IVF then returns fewer than k: the exact fallback answers
    hits = col.search(x[0], k=2_900)
    assert len(hits) == 2_900 and not {0, 1, 2} & {h.id for h in hits}
    assert [h.id for h in hits[:5]] == exact_ids(x[3:], np.arange(3, 3_000), x[:1], 5)[0]

"""evaluate on synthetic labelled collections whose answer is known."""

from __future__ import annotations

import json
import struct
import zlib

import numpy as np
import pytest
from click.testing import CliRunner

import latentsearch as ls
from conftest import clustered
from latentsearch.cli import main


def test_separated_clusters_agree_fully(root):
    x, labels = clustered(1500, dim=8, clusters=5, spread=0.05)
    report = ls.evaluate(ls.build_vectors(x, labels, name="sep"), k=10, sample=300)
    assert report.agreement > 0.99 and report.vote_accuracy > 0.99
    assert report.n_queries == 300 and report.k == 10
    assert report.recall_vs_exact == 1.0
    assert abs(report.baselines["chance"]["agreement"] - 0.2) < 0.02


def test_shuffled_labels_agree_at_chance(root):
    x, labels = clustered(2000, dim=8, clusters=5, spread=0.05)
    shuffled = np.random.default_rng(3).permutation(labels)
    report = ls.evaluate(ls.build_vectors(x, shuffled, name="shuf"), k=10)
    assert abs(report.agreement - report.baselines["chance"]["agreement"]) < 0.03


def test_agreement_falls_with_distance(root):
    x, labels = clustered(3000, dim=8, clusters=6, spread=0.9, seed=4)
    report = ls.evaluate(ls.build_vectors(x, labels, name="fall"), k=10)
    bands = [b["agreement"] for b in report.agreement_by_distance]
    assert len(bands) == 10
    assert bands[0] > bands[-1] + 0.1
    limits = [b["max_distance"] for b in report.agreement_by_distance]
    assert limits == sorted(limits)
    assert report.agreement_by_rank[0] >= report.agreement_by_rank[-1]


def test_unlabelled_collection_gets_recall_and_a_note(root):
    x, _ = clustered(200, dim=4)
    report = ls.evaluate(ls.build_vectors(x, name="nolab"), k=5)
    assert report.agreement is None and report.recall_vs_exact == 1.0
    assert any("agreement needs labels" in n for n in report.notes)
    assert "agreement needs labels" in report.table()


def test_k_larger_than_classes_and_collection(root):
    x, labels = clustered(15, dim=4, clusters=3, spread=0.01)
    report = ls.evaluate(ls.build_vectors(x, labels, name="tiny"), k=50)
    assert report.k == 14 and any("k reduced" in n for n in report.notes)
    assert 0 < report.agreement < 0.6  # at most 4 of 14 neighbours can share a label of 5
    assert len(report.agreement_by_rank) == 14


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, size, idat = 8, None, b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert zlib.crc32(kind + body) & 0xFFFFFFFF == crc
        if kind == b"IHDR":
            size = struct.unpack(">II", body[:8])
        idat += body if kind == b"IDAT" else b""
        pos += 12 + length
    assert zlib.decompress(idat)
    return size


def test_cli_json_schema_and_plot(root, tmp_path):
    x, labels = clustered(800, dim=8, clusters=4, spread=0.5)
    ls.build_vectors(x, labels, name="cli")
    plot = tmp_path / "eval.png"
    r = CliRunner().invoke(main, ["evaluate", "cli", "--json", "--plot", str(plot), "-k", "5"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    for key in ("k", "n_queries", "agreement", "vote_accuracy", "baselines", "agreement_by_rank",
                "agreement_by_distance", "recall_vs_exact"):
        assert key in doc
    assert doc["k"] == 5 and len(doc["agreement_by_rank"]) == 5
    assert set(doc["baselines"]) == {"chance"}  # vectors made elsewhere: no raw input
    assert all(set(b) == {"max_distance", "agreement"} for b in doc["agreement_by_distance"])
    width, height = _png_size(plot.read_bytes())
    assert width > 600 and height > 400

    r = CliRunner().invoke(main, ["evaluate", "cli"])
    assert r.exit_code == 0 and "agreement by distance" in r.output

"""The demo end to end, on the real built-in samples with one training epoch."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from latentsearch.cli import main


@pytest.mark.slow
def test_demo_tells_the_whole_story(tmp_path):
    r = CliRunner().invoke(main, ["demo", "--root", str(tmp_path), "--epochs", "1"])
    assert r.exit_code == 0, r.output + r.stderr
    out = r.stdout
    for expected in ("building mnist", "building news", "neighbours of item 7",
                     '"bushfires near Sydney"', "agreement@10", "raw input, exact",
                     "PCA of raw input", "agreement by distance", "recall@10"):
        assert expected in out, expected
    for png in ("mnist_neighbours.png", "mnist_evaluate.png"):
        data = (tmp_path / "demo" / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000
        assert str(tmp_path / "demo" / png) in out
    again = CliRunner().invoke(main, ["demo", "--root", str(tmp_path), "--epochs", "1"])
    assert again.exit_code == 0 and "mnist exists" in again.stdout

"""The pictures people read: the query grid (Pillow) and the evaluate plot (matplotlib)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image, ImageFont

import latentsearch as ls
from latentsearch.cli import main
from latentsearch.errors import InvalidInput
from latentsearch.io.images import load_image_source
from latentsearch.report.evaluate import Report
from latentsearch.report.pictures import (natural_key, report_figure, wrap_words, write_grid,
                                          write_query_grid, write_report_png)
from conftest import clustered


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> Path:
    """A 28x28 digit collection of 200 items (labels 0-9), trained for one epoch."""
    base = tmp_path_factory.mktemp("digits")
    data = load_image_source("mnist", limit=200)
    np.savez(base / "d.npz", x=data.images[..., 0], y=np.array(data.labels))
    ls.build_images(base / "d.npz", name="d", root=base / "root", encoder="dense", epochs=1,
                    quiet=True)
    return base / "root"


# ------------------------------------------------------------------ the grid


def test_captions_wrap_between_words_never_inside_one():
    font = ImageFont.load_default(size=16)
    text = "#4821  golden retriever puppy on grass  d=0.093"
    lines = wrap_words(text, font, 150)
    assert len(lines) > 1 and all(font.getlength(line) <= 150 for line in lines)
    assert " ".join(" ".join(lines).split()) == " ".join(text.split())  # every word whole
    assert set(" ".join(lines).split()) == set(text.split())
    long = "antidisestablishmentarianism"
    assert wrap_words(f"#1 {long} d=0.1", font, 60) == ["#1", long, "d=0.1"]  # whole, alone


def test_query_grid_opens_with_the_expected_size_in_each_format(digits: Path, tmp_path: Path):
    col = ls.open("d", digits)
    hits = col.neighbors(7, k=8)
    for name in ("grid.png", "grid.jpg", "grid.webp"):
        out = write_query_grid(col, tmp_path / name, hits, query_id=7)
        with Image.open(out) as img:
            assert img.format == {"png": "PNG", "jpg": "JPEG", "webp": "WEBP"}[name[5:]]
            # 28-px tiles shown at 140 in 150-px cells: the query, a 40-px split, 4 columns
            assert img.width == 2 * 24 + 150 + 40 + 4 * 150 + 3 * 16
            assert 2 * 140 + 60 < img.height < 2 * 140 + 260  # two rows, captions, a title
            assert img.getpixel((2, 2)) in ((255, 255, 255), (254, 254, 254), (255, 255, 254))


def test_grid_refuses_a_suffix_it_cannot_write(digits: Path, tmp_path: Path):
    col = ls.open("d", digits)
    with pytest.raises(InvalidInput, match=r"name it \.png, \.jpg or \.webp \(got \.gif\)"):
        write_query_grid(col, tmp_path / "grid.gif", col.neighbors(7, k=3), query_id=7)
    assert not (tmp_path / "grid.gif").exists()
    r = CliRunner().invoke(main, ["query", "d", "--root", str(digits), "--id", "7",
                                  "--grid", str(tmp_path / "grid.bmp")])
    assert r.exit_code == 1 and "got .bmp" in r.stderr and r.stdout == ""


def test_cli_grid_for_an_image_query_names_the_file(digits: Path, tmp_path: Path):
    from latentsearch.io.png import encode_png

    (tmp_path / "q.png").write_bytes(encode_png(ls.open("d", digits).images([3])[0]))
    r = CliRunner().invoke(main, ["query", "d", "--root", str(digits), "--image",
                                  str(tmp_path / "q.png"), "-k", "5", "--grid",
                                  str(tmp_path / "g.webp")])
    assert r.exit_code == 0, r.output
    with Image.open(tmp_path / "g.webp") as img:
        assert img.format == "WEBP" and img.width > 500


def test_long_labels_keep_two_lines(tmp_path: Path):
    tiles = [np.full((16, 16), 60 * i, np.uint8) for i in range(4)]
    captions = [["query"], ["#1", "a label far too long to fit in two lines of one tile " * 2,
                            "d=0.100"], ["#2", "short", "d=0.200"], ["#3", "", "d=0.300"]]
    out = write_grid(tmp_path / "g.png", tiles, captions, title="long labels")
    with Image.open(out) as img:
        assert img.size[0] > 400


# ------------------------------------------------------------------ the plot


def test_plot_titles_say_what_was_measured_on_a_small_collection(root):
    x, labels = clustered(60, dim=8, clusters=12, spread=0.3)
    col = ls.build_vectors(x, [f"class {v}" for v in labels], name="small")
    report = ls.evaluate(col, k=10, sample=40, quiet=True)
    fig = report_figure(report, col.vectors(), [r.label for r in col.get(col.ids())])
    left, right = fig.axes[:2]
    assert "their 59 nearest" in right.get_title()  # not the 1,000 of a large collection
    assert "40 queries" in right.get_title()
    assert right.get_xlabel().startswith("distance") and "share" in right.get_ylabel()
    legend = [t.get_text() for t in right.get_legend().get_texts()]
    assert any(t.startswith("chance") for t in legend)
    names = [t.get_text() for t in left.get_legend().get_texts()]
    assert len(names) == len(set(labels)) > 10  # every label in the legend, past 10
    assert names == sorted(names, key=natural_key) and names[:2] == ["class 0", "class 1"]
    assert "t-SNE map of 60 of the 60 latents (8-d)" in left.get_title()


def test_plot_files_open_with_the_expected_size(root, tmp_path: Path):
    x, labels = clustered(300, dim=16, clusters=5)
    col = ls.build_vectors(x, labels, name="plot")
    report = ls.evaluate(col, k=5, sample=100, quiet=True)
    vecs, labs = col.vectors(), [r.label for r in col.get(col.ids())]
    for name, fmt in (("p.png", "PNG"), ("p.jpg", "JPEG"), ("p.webp", "WEBP")):
        write_report_png(tmp_path / name, report, vecs, labs)
        with Image.open(tmp_path / name) as img:
            assert img.format == fmt and img.size == (1820, 806)  # 14 x 6.2 in at 130 dpi
    with pytest.raises(InvalidInput, match="got .svg"):
        write_report_png(tmp_path / "p.svg", report, vecs, labs)


def test_plot_without_labels_says_so(root, tmp_path: Path):
    col = ls.build_vectors(clustered(100, dim=4)[0], name="nolabels")
    report = ls.evaluate(col, k=5, quiet=True)
    fig = report_figure(report, col.vectors(), [None] * len(col))
    assert "no labels" in " ".join(t.get_text() for t in fig.axes[1].texts)


def test_cli_evaluate_refuses_a_plot_suffix_before_evaluating(root, tmp_path: Path):
    ls.build_vectors(np.eye(8), list("abababab"), name="tiny")
    r = CliRunner().invoke(main, ["evaluate", "tiny", "--plot", str(tmp_path / "p.tiff")])
    assert r.exit_code == 1 and "got .tiff" in r.stderr and "agreement" not in r.stdout


def test_matplotlib_is_imported_only_for_plots():
    import subprocess

    code = ("import sys, latentsearch, latentsearch.cli, latentsearch.report.pictures; "
            "print(sorted(m for m in ('matplotlib', 'sklearn') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"


def test_report_dataclass_unchanged_by_drawing(root):
    col = ls.build_vectors(*clustered(80, dim=4, clusters=3), name="same")
    report = ls.evaluate(col, k=5, quiet=True)
    before = report.to_dict()
    report_figure(report, col.vectors(), [r.label for r in col.get(col.ids())])
    assert isinstance(report, Report) and report.to_dict() == before

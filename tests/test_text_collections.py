"""Text collections end to end: build from each source kind, reopen, query, add, CLI."""

from __future__ import annotations

import csv
import json

import pytest
from click.testing import CliRunner

import latentsearch as ls
from latentsearch.io.texts import load_text_source
from latentsearch.cli import main


@pytest.fixture(scope="module")
def articles():
    """80 distinct real articles from the built-in news sample."""
    texts = list(dict.fromkeys(load_text_source("news").texts))
    return texts[:80]


@pytest.fixture(scope="module")
def built(articles, tmp_path_factory):
    base = tmp_path_factory.mktemp("text")
    src = base / "articles.txt"
    src.write_text("\n".join(articles) + "\n\n", encoding="utf-8")
    col = ls.build_text(str(src), name="a", root=base / "indexes", epochs=5, quiet=True)
    return base, col


@pytest.mark.slow
def test_txt_build_reopen_and_query_by_indexed_text(built, articles):
    base, col = built
    assert len(col) == 80 and col.modality == "text" and col.metric == "cosine"
    again = ls.open("a", base / "indexes")
    hit = again.search(articles[11], k=1)[0]
    assert hit.id == 11 and hit.distance < 1e-4 and hit.text == articles[11]
    assert hit.source.endswith("articles.txt:12")


@pytest.mark.slow
def test_paraphrase_sharing_content_words_ranks_its_source_first(built, articles):
    _, col = built
    fire = next(i for i, t in enumerate(articles) if "bushfire" in t.lower())
    words = [w for w in articles[fire].split() if len(w) > 6][:8]
    hits = col.search(" ".join(words), k=3)
    assert hits[0].id == fire


@pytest.mark.slow
def test_unknown_words_and_empty_queries_are_clear_errors(built):
    _, col = built
    with pytest.raises(ls.EncoderError, match="no known words in query"):
        col.search("xyzzy plugh")
    with pytest.raises(ls.EncoderError, match="empty"):
        col.search("   ")
    with pytest.raises(ls.EncoderError, match="no known words"):
        col.add(["qwertyuiop asdfghjkl"])
    assert len(col) == 80


@pytest.mark.slow
def test_long_and_non_ascii_queries(built, articles):
    _, col = built
    long = " ".join([articles[3]] * 30)  # far beyond the encoder's token limit
    assert col.search(long, k=1)[0].id == 3
    assert isinstance(col.search("Zürich café naïve " + articles[5][:200], k=1)[0].id, int)


@pytest.mark.slow
def test_jsonl_and_csv_sources_keep_labels_and_ids(articles, tmp_path):
    jl = tmp_path / "items.jsonl"
    jl.write_text("\n".join(json.dumps({"text": t, "label": f"L{i % 3}", "id": f"doc-{i}"})
                            for i, t in enumerate(articles[:40])), encoding="utf-8")
    col = ls.build_text(str(jl), name="j", root=tmp_path, epochs=2, quiet=True)
    assert {h.label for h in col.get(col.ids())} == {"L0", "L1", "L2"}
    assert all(h.label == "L1" for h in col.search(articles[4], k=5, where={"label": "L1"}))
    assert col.search(articles[4], k=1, where={"source_id": "doc-4"})[0].id == 4

    cv = tmp_path / "items.csv"
    with open(cv, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "text", "label"])
        for i, t in enumerate(articles[:30]):
            w.writerow([i, t, "even" if i % 2 == 0 else "odd"])
    col2 = ls.build_text(str(cv), name="c", root=tmp_path, epochs=2, quiet=True)
    assert len(col2) == 30 and col2.get([3])[0].label == "odd"


@pytest.mark.slow
def test_cli_text_query_add_and_json(built, articles, tmp_path):
    import shutil

    base, col = built
    root = tmp_path / "indexes"
    shutil.copytree(col.path, root / "a")
    r = CliRunner().invoke(main, ["query", "a", "--root", str(root), "--text", articles[2][:300],
                                  "-k", "3", "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["hits"][0]["id"] == 2 and doc["hits"][0]["text"] == articles[2]
    r = CliRunner().invoke(main, ["query", "a", "--root", str(root), "--text", "bushfire", "-k", "2"])
    assert r.exit_code == 0 and r.stdout.splitlines()[0].startswith("rank")
    more = tmp_path / "more.txt"
    more.write_text(articles[0][:400] + "\n", encoding="utf-8")
    r = CliRunner().invoke(main, ["add", "a", str(more), "--root", str(root)])
    assert r.exit_code == 0 and "added 1 item to a" in r.output and "ids 80..80" in r.output
    r = CliRunner().invoke(main, ["query", "a", "--root", str(root), "--text", "xyzzy"])
    assert r.exit_code == 1 and r.stderr.startswith("error: no known words in query")
    r = CliRunner().invoke(main, ["query", "a", "--root", str(root), "--image", str(more)])
    assert r.exit_code == 1 and "cannot be queried by image" in r.stderr

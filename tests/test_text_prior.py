"""The shipped English prior (WordNet 3.0) and the text encoder that starts from it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import latentsearch as ls
from latentsearch.io.texts import load_text_source
from latentsearch.cli import main
from latentsearch.encoders.prior import PRIOR_PATH, Prior, identity_vector, wordnet_texts
from latentsearch.encoders.text import TextEncoder

REPO = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture(scope="module")
def news():
    return list(dict.fromkeys(load_text_source("news").texts))


@pytest.fixture(scope="module")
def adapted(news):
    """The news articles' encoder started from the prior and adapted (5 epochs)."""
    return TextEncoder.fit(news, prior="wordnet", epochs=5, seed=0, quiet=True)


def cos(enc, a: str, b: str) -> float:
    return float(enc.encode(a)[0] @ enc.encode(b)[0])


def test_the_shipped_prior_is_small_and_knows_inflections():
    assert PRIOR_PATH.stat().st_size <= 25_000_000
    prior = Prior.load()
    assert prior.vectors.dtype == np.float16 and len(prior.words) == prior.vectors.shape[0]
    known = set(prior.words)
    # morphy: a plural the vocabulary lacks finds its singular
    plural = next(w for w in prior.words[:5000] if w.isalpha() and len(w) > 3
                  and w + "s" not in known and not w.endswith("s"))
    assert prior.row(plural + "s") == prior.row(plural) >= 0
    # an irregular form (WordNet's *.exc) the vocabulary lacks finds its lemma
    form, lemma = next((f, b) for f, b in prior.exceptions.items()
                       if f not in known and b in known and " " not in f)
    assert prior.row(form) == prior.row(lemma) >= 0
    assert prior.row("xyzzyplugh") == -1


def test_identity_directions_are_fixed_by_the_word():
    a, b = identity_vector("cut", 64), identity_vector("cut", 64)
    assert np.array_equal(a, b) and abs(float(np.linalg.norm(a)) - 1) < 1e-6
    assert abs(float(a @ identity_vector("slice", 64))) < 0.5


def test_prior_loads_and_encodes_without_tensorflow(tmp_path):
    """Fit (not adapted), save, load and encode from a process that never imports TF."""
    texts = ["a man slices bread", "the cat sat on the mat", "stocks fell"]
    fit = f"""
import json, sys
from latentsearch.encoders.prior import Prior
from latentsearch.encoders.text import TextEncoder
assert Prior.load().vector("cut") is not None
enc = TextEncoder.fit({texts!r}, prior="wordnet", train=False, quiet=True)
v = enc.encode(["a man cuts a loaf"])
assert "tensorflow" not in sys.modules and "keras" not in sys.modules, "TF imported"
enc.save({str(tmp_path)!r})  # (writes model.keras too: that one needs Keras)
json.dump(enc.config(), open({str(tmp_path / "cfg.json")!r}, "w"))
"""
    load = f"""
import json, sys
from latentsearch.encoders.text import TextEncoder
back = TextEncoder.load({str(tmp_path)!r}, json.load(open({str(tmp_path / "cfg.json")!r})))
v = back.encode(["a man cuts a loaf", "a kitten sits"])
near, far = back.encode("a man slices bread")[0], back.encode("stocks fell")[0]
assert float(v[0] @ near) > float(v[0] @ far) + 0.2
assert "tensorflow" not in sys.modules and "keras" not in sys.modules, "TF imported"
print("ok")
"""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    for code in (fit, load):
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           env=env, cwd=str(tmp_path))
        assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "ok"


@pytest.mark.slow
def test_a_wordnet_synonym_pair_is_nearer_than_an_unrelated_pair_after_adaptation(adapted):
    enc = adapted
    assert enc.config()["steps"] > 0  # adapted, not the prior as shipped
    # car / automobile share a WordNet synset; "automobile" is not in the news vocabulary
    assert "car" in enc.vocabulary and "automobile" not in enc.vocabulary
    assert cos(enc, "car", "automobile") > cos(enc, "car", "parliament") + 0.3
    assert cos(enc, "fire", "blaze") > cos(enc, "fire", "cricket") + 0.3


def test_exact_identity_ranks_like_tfidf_for_a_small_collection(news):
    """Without synonyms (a long text weighs them ~0) the cosine is TF-IDF's own."""
    from latentsearch.report.evaluate import tfidf

    docs = news[:60]
    enc = TextEncoder.fit(docs, prior="wordnet", train=False, quiet=True)
    assert enc.config()["identity"] == "exact"
    mine = enc.encode(docs[:5]) @ enc.encode(docs).T
    theirs = tfidf(docs[:5], fit_on=docs) @ tfidf(docs).T
    for a, b in zip(mine, theirs):
        assert np.array_equal(np.argsort(-a)[:5], np.argsort(-b)[:5])


def test_words_that_add_brings_are_not_ignored(tmp_path, news):
    col = ls.build_text("news", root=tmp_path, quiet=True, epochs=1)
    assert col.manifest["encoder"]["config"]["prior"] == "wordnet-3.0"
    before = col.search("zorbleflux fire", k=1)[0].id
    col.add(["Zorbleflux crews fought the fire all night"])  # a word in neither vocabulary
    hit = col.search("zorbleflux fire", k=1)[0]
    assert hit.id == len(col) - 1 != before and hit.text.startswith("Zorbleflux")
    with pytest.raises(ls.EncoderError, match="no known words.*nor in the English prior"):
        col.search("qwzx plughh")


@pytest.mark.slow
def test_a_word_neither_vocabulary_nor_prior_knows_meets_its_subword_relatives(adapted):
    enc = adapted
    assert "bushfirez" not in enc.vocabulary and Prior.load().row("bushfirez") == -1
    # "the" keeps each text encodable: an item of unknown words only is refused
    near, far = cos(enc, "bushfirez the", "bushfires the"), cos(enc, "bushfirez the", "cricket the")
    assert near > far + 0.2  # 0.28 vs 0.03 after 5 epochs (0.74 vs 0.01 after the default 50)


GERMAN = [
    "Der Zug nach Hamburg fährt heute wegen eines Streiks nicht.",
    "Die Bäckerei am Marktplatz verkauft frisches Brot und Brezeln.",
    "Im Winter liegt in den Bergen oft viel Schnee.",
    "Der Stadtrat hat den Bau einer neuen Brücke beschlossen.",
    "Meine Großmutter kocht jeden Sonntag eine Gemüsesuppe.",
    "Das Fußballspiel endete unentschieden nach neunzig Minuten.",
    "Die Bibliothek bleibt wegen Renovierung zwei Wochen geschlossen.",
    "Im Herbst fallen die Blätter von den Bäumen im Stadtpark.",
    "Der Arzt empfahl ihm mehr Bewegung und weniger Zucker.",
    "Die Firma stellt im nächsten Jahr hundert neue Mitarbeiter ein.",
    "Am Bahnhof wartet eine lange Schlange vor dem Fahrkartenschalter.",
    "Die Kinder bauen im Garten einen Schneemann mit einer Karotte.",
]


@pytest.mark.slow
def test_prior_none_builds_a_german_collection_that_answers(tmp_path):
    src = tmp_path / "de.txt"
    src.write_text("\n".join(GERMAN) + "\n", encoding="utf-8")
    runner = CliRunner()
    r = runner.invoke(main, ["build", "text", str(src), "--prior", "none", "--root",
                             str(tmp_path), "--epochs", "20", "--quiet"])
    assert r.exit_code == 0, r.output
    col = ls.open("de", tmp_path)
    cfg = col.manifest["encoder"]["config"]
    assert "prior" not in cfg and cfg["dim"] == 512
    queries = {"Streik: kein Zug nach Hamburg": 0, "frisches Brot vom Marktplatz": 1,
               "neue Brücke vom Stadtrat": 3, "Schneemann im Garten": 11}
    for q, want in queries.items():
        assert col.search(q, k=1)[0].id == want, q
    # the English prior knows almost none of these words: it is the wrong start here
    enc = TextEncoder.fit(GERMAN, prior="wordnet", train=False, quiet=True)
    assert enc.config()["prior_words"] < 0.5 * len(enc.vocabulary)


def test_a_collection_saved_before_the_prior_opens_and_answers_as_before(tmp_path):
    """tests/data/text_v0 was built by the code at aa78b2a (before this change)."""
    shutil.copytree(DATA / "text_v0", tmp_path / "text_v0")
    col = ls.open("text_v0", tmp_path)
    expected = json.loads((DATA / "text_v0_expected.json").read_text(encoding="utf-8"))
    for query, hits in expected.items():
        got = [(h.id, h.distance) for h in col.search(query, k=5)]
        assert [g[0] for g in got] == [h[0] for h in hits], query
        assert np.allclose([g[1] for g in got], [h[1] for h in hits], atol=1e-5), query


@pytest.mark.slow
def test_the_rebuild_script_runs_on_a_slice_of_wordnet(tmp_path):
    """scripts/build_prior.py from scratch on tests/data/wordnet_slice (80 synsets a file)."""
    texts = wordnet_texts(DATA / "wordnet_slice")
    assert len(texts) == 320 and all(" ; " in t for t in texts)
    out = tmp_path / "prior.npz"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(REPO))
    r = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "build_prior.py"), "--wordnet",
         str(DATA / "wordnet_slice"), "--out", str(out), "--dim", "16", "--epochs", "2",
         "--words", "300"],
        capture_output=True, text=True, env=env, cwd=str(tmp_path),
    )
    assert r.returncode == 0, r.stderr[-2000:]
    prior = Prior.load(out)
    assert prior.vectors.shape == (300, 16) and prior.vectors.dtype == np.float16
    norms = np.linalg.norm(prior.vectors.astype(np.float32), axis=1)
    assert np.allclose(norms, 1, atol=1e-2)
    assert prior.exceptions  # noun.exc / verb.exc were read


def test_a_missing_wordnet_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ls.EncoderError, match="no WordNet data file"):
        wordnet_texts(tmp_path)

"""The text encoder: trained pooled word embeddings, refusals, persistence."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from latentsearch.errors import EncoderError, InvalidInput
from latentsearch.io.texts import load_text_source
from latentsearch.encoders.text import MAX_TOKENS, TextEncoder, tokens

FIRE = 0  # news article 0: a bushfire near Hill Top, New South Wales


@pytest.fixture(scope="module")
def news():
    texts = load_text_source("news").texts
    # the sample holds a few exact duplicate articles; keep the first of each
    seen: set[str] = set()
    return [t for t in texts if not (t in seen or seen.add(t))]


@pytest.fixture(scope="module")
def enc(news):
    return TextEncoder.fit(news, dim=64, epochs=10, seed=0, quiet=True)


def test_importing_the_module_does_not_import_tensorflow():
    code = (
        "import sys, latentsearch.encoders.text, latentsearch.io.texts; "
        "sys.exit(1 if 'tensorflow' in sys.modules or 'keras' in sys.modules else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_registry_and_config(enc, news):
    from latentsearch import encoders

    assert encoders.get("text") is TextEncoder
    assert TextEncoder.name == "text" and TextEncoder.modality == "text"
    cfg = enc.config()
    json.dumps(cfg)
    assert enc.dim == cfg["dim"] == 64
    assert cfg["epochs"] == 10 and cfg["train_texts"] == len(news)
    assert cfg["final_loss"] > 0 and cfg["train_seconds"] > 0
    assert cfg["vocab_size"] == len(enc.vocabulary) + 2 > 1000
    assert cfg["max_tokens"] == MAX_TOKENS


def test_encode_shapes_and_unit_norm(enc, news):
    v = enc.encode(news[:5])
    assert v.shape == (5, 64) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    one = enc.encode(news[0])
    assert one.shape == (1, 64)
    np.testing.assert_allclose(one[0], v[0], atol=1e-6)
    assert enc.encode([]).shape == (0, 64)


def test_indexed_text_is_nearest_to_itself(enc, news):
    v = enc.encode(news)
    sims = v @ v.T
    assert (sims.argmax(axis=1) == np.arange(len(news))).all()


def test_paraphrase_ranks_its_source_above_unrelated_items(enc, news):
    q = enc.encode("Residents evacuated their homes at Hill Top as a bushfire burned "
                   "in the Southern Highlands of New South Wales")[0]
    sims = enc.encode(news) @ q
    unrelated = [i for i, t in enumerate(news)
                 if not any(w in t.lower() for w in ("fire", "blaze", "hill top", "highlands"))]
    assert len(unrelated) > 100
    assert sims[FIRE] > sims[unrelated].max()
    assert int(np.argsort(-sims).tolist().index(FIRE)) < 5


def test_learned_embeddings_beat_random(news):
    """Training must matter: first halves find their second halves far better."""
    first = [" ".join(t.split()[: len(t.split()) // 2]) for t in news]
    second = [" ".join(t.split()[len(t.split()) // 2 :]) for t in news]

    def r10(e):
        s = e.encode(first) @ e.encode(second).T
        return np.mean([i in np.argsort(-s[i])[:10] for i in range(len(first))])

    trained = TextEncoder.fit(second, dim=64, epochs=10, seed=0, quiet=True)
    random = TextEncoder.fit(second, dim=64, epochs=10, seed=0, quiet=True, train=False)
    assert random.config()["epochs"] == 0
    assert r10(trained) > r10(random) + 0.2


@pytest.mark.parametrize("text", ["xyzzy", "xyzzy plugh", "!!! ...", "qwertyuiop 中文字符"])
def test_unknown_words_are_refused(enc, text):
    with pytest.raises(EncoderError, match="no known words in query"):
        enc.encode(text)


@pytest.mark.parametrize("text", ["", "   ", "\n\t"])
def test_empty_text_is_refused(enc, text):
    with pytest.raises(EncoderError, match="empty"):
        enc.encode(text)


def test_batch_refusal_names_the_item(enc):
    with pytest.raises(EncoderError, match=r"text 2 \('xyzzy'\)"):
        enc.encode(["bushfire", "cricket", "xyzzy", "Sydney"])
    with pytest.raises(EncoderError, match="text 1 is empty"):
        enc.encode(["bushfire", ""])


def test_non_strings_are_invalid_input(enc):
    with pytest.raises(InvalidInput):
        enc.encode(["ok", 3])
    with pytest.raises(InvalidInput):
        enc.encode(5)


def test_unknown_words_are_ignored_among_known_ones(enc):
    np.testing.assert_allclose(
        enc.encode("bushfire xyzzy Sydney"), enc.encode("bushfire Sydney"), atol=1e-6
    )


def test_case_and_punctuation_do_not_matter(enc):
    np.testing.assert_allclose(
        enc.encode("BUSHFIRE, near... Sydney!"), enc.encode("bushfire near sydney"), atol=1e-6
    )


def test_very_long_line_is_truncated(enc, news):
    words = news[FIRE].split()
    long_text = " ".join((words * (10 * MAX_TOKENS // len(words) + 1)))  # ~10x the maximum
    head = " ".join(long_text.split()[:MAX_TOKENS])
    v = enc.encode(long_text)
    assert v.shape == (1, 64) and np.isfinite(v).all()
    # only the first MAX_TOKENS tokens count: anything after them changes nothing
    np.testing.assert_allclose(v, enc.encode(head), atol=1e-5)
    np.testing.assert_allclose(v, enc.encode(head + " cricket " * 100), atol=1e-5)


def test_non_ascii_text(tmp_path):
    corpus = [
        "Zürich café naïve crème brûlée",
        "München Straße Größe Übung",
        "北京 上海 中文字符 测试",
        "plain ascii words only here",
    ]
    e = TextEncoder.fit(corpus, dim=32, epochs=3, seed=0, quiet=True)
    assert e.dim == 32
    v = e.encode(corpus)
    assert (np.argmax(v @ v.T, axis=1) == np.arange(4)).all()
    # Unicode-aware lower-casing: upper-case umlauts find the same words
    np.testing.assert_allclose(e.encode("ZÜRICH CAFÉ"), e.encode("zürich café"), atol=1e-6)
    assert int(np.argmax(v @ e.encode("Größe")[0])) == 1
    assert int(np.argmax(v @ e.encode("中文字符")[0])) == 2
    e.save(tmp_path / "enc")
    e2 = TextEncoder.load(tmp_path / "enc", e.config())
    np.testing.assert_array_equal(e2.encode(corpus), v)


def test_save_load_round_trip(enc, news, tmp_path):
    folder = tmp_path / "encoder"
    names = enc.save(folder)
    assert sorted(names) == ["inference.npz", "model.keras", "vocab.json"]
    assert all((folder / n).is_file() for n in names)
    cfg = json.loads(json.dumps(enc.config()))
    back = TextEncoder.load(folder, cfg)
    assert back.dim == enc.dim and back.config() == cfg
    assert back.vocabulary == enc.vocabulary
    np.testing.assert_array_equal(back.encode(news[:50]), enc.encode(news[:50]))
    with pytest.raises(EncoderError, match="no known words"):
        back.encode("xyzzy")


def test_load_refuses_mismatched_vocabulary(enc, tmp_path):
    enc.save(tmp_path)
    (tmp_path / "vocab.json").write_text(json.dumps(["a", "b"]), encoding="utf-8")
    with pytest.raises(EncoderError, match="vocab.json"):
        TextEncoder.load(tmp_path, enc.config())


def test_progress_is_logged_and_quiet_silences_it(capsys, caplog):
    corpus = ["the fire near the town", "the cricket match in the city", "rain and storms"]
    with caplog.at_level("INFO", logger="latentsearch"):
        TextEncoder.fit(corpus, dim=8, epochs=2, seed=0)
    lines = [r.getMessage() for r in caplog.records if r.levelname == "INFO"]
    assert any("epoch 1/2" in line for line in lines) and any("epoch 2/2" in line for line in lines)
    out, err = capsys.readouterr()
    assert out == "" and err == ""  # logged, never printed
    caplog.clear()
    with caplog.at_level("INFO", logger="latentsearch"):
        TextEncoder.fit(corpus, dim=8, epochs=2, seed=0, quiet=True)
    assert not [r for r in caplog.records if r.levelname == "INFO"]


def test_seeded_fit_is_repeatable(news):
    a = TextEncoder.fit(news[:60], dim=16, epochs=3, seed=7, quiet=True)
    b = TextEncoder.fit(news[:60], dim=16, epochs=3, seed=7, quiet=True)
    np.testing.assert_allclose(a.encode(news[:60]), b.encode(news[:60]), atol=1e-5)


def test_extra_texts_extend_the_vocabulary(news):
    e = TextEncoder.fit(news[:20], dim=16, epochs=2, seed=0, quiet=True,
                        extra_texts=["xyzzy plugh frobnicate", "plugh again"])
    assert e.config()["extra_texts"] == 2
    assert e.encode("xyzzy").shape == (1, 16)


def test_tiny_corpora(tmp_path):
    one = TextEncoder.fit(["just one line"], dim=8, seed=0, quiet=True)
    assert one.encode("line").shape == (1, 8)
    with pytest.raises(EncoderError):
        TextEncoder.fit(["...", "  "], dim=8, quiet=True)
    with pytest.raises(InvalidInput):
        TextEncoder.fit([], dim=8, quiet=True)
    with pytest.raises(InvalidInput):
        TextEncoder.fit(["a b"], dim=0, quiet=True)


def test_subwords_make_word_variants_alike(enc):
    """Character n-grams: morphological variants share pieces of their vectors."""
    assert enc.config()["subwords"].startswith("char 3-5-grams")
    fire = enc.encode("fire")[0]
    assert float(enc.encode("fires")[0] @ fire) > float(enc.encode("cricket")[0] @ fire)
    # without subwords these two are unrelated (cosine about 0.03 with this fixture)
    assert float(enc.encode("bushfires")[0] @ enc.encode("bushfire")[0]) > 0.3


def test_subwords_can_be_switched_off(news):
    e = TextEncoder.fit(news[:40], dim=16, epochs=2, seed=0, quiet=True, subwords=False)
    assert e.config()["subwords"] == "none"
    assert e.encode(news[0]).shape == (1, 16)


# ---------------------------------------------------------------- numpy inference path
VARIED = [
    "bushfires near Sydney",
    "BUSHFIRE, near... Sydney!!! (again) -- fire; fire: FIRE",
    "Straße STRASSE straße Größe ẞ FIRE Sydney",
    "İstanbul istanbul ISTANBUL ı İNDİA fire",
    "ΣΟΦΙΑ σοφία ΟΔΟΣ Σ. ΣΑΣ Fire",
    "Zürich café naïve crème brûlée €100 £5 $3 ¥ 5% a+b=c <tag> @user #hash",
    "emoji 🔥🔥 fire🔥sydney ™ © ° ½ … — – « » „ “ ” ‘ ’",
    "北京 上海 中文字符，测试。 日本語のテキスト Sydney",
    "non\u00a0breaking\u3000ideographic\u2028line sep\u0085nel\x1cfs fire",
    "tab\tnew\nline\rcr\x0bvt\x0cff fire",
    "fire fire fire fire Sydney Sydney the the the the the the",
    "fire Sydney before NUL\x00 after nul cricket",
    "x\u2c2f\u10570 ꟁ𐖗 fire",  # Unicode 14 letters TF's ICU does not lower
    "\U0001fadb\U0001f774fire\U0001faf8sydney",  # Unicode 15 symbols
]


# TensorFlow's own tokenizer, the reference the numpy one (tokens()) reproduces: encoders
# trained by earlier versions tokenised with TextVectorization(standardize=this).
TF_PUNCT = r"[\pP\pS]+"  # Unicode punctuation (P*) and symbols (S*), RE2 syntax


def _tf_standardize(x):
    """Lower-case (UTF-8 aware) and turn punctuation and symbols into spaces, in TensorFlow."""
    from latentsearch.encoders.tf import import_tensorflow

    tf = import_tensorflow()
    return tf.strings.regex_replace(tf.strings.lower(x, encoding="utf-8"), TF_PUNCT, " ")


def _tf_tokens(texts):
    from latentsearch.encoders.tf import import_tensorflow

    tf = import_tensorflow()

    rag = tf.strings.split(_tf_standardize(tf.constant(texts, dtype=tf.string)))
    return [[w.decode("utf-8") for w in row] for row in rag.to_list()]


def _keras_text_model(encoder):
    """Strings (batch, 1) -> [vectors, known counts] all in Keras: TensorFlow's tokenizer
    (TextVectorization over the encoder's vocabulary) feeding its token-id model."""
    from latentsearch.encoders.tf import import_keras

    keras = import_keras()
    words = encoder.vocabulary
    vectorize = keras.layers.TextVectorization(
        standardize=_tf_standardize,
        split="whitespace",
        output_mode="int",
        vocabulary=words if words else None,
        name="vectorize",
    )
    text = keras.Input(shape=(1,), dtype="string", name="text")
    vec, known = encoder.keras_core(vectorize(text))
    return keras.Model(text, [vec, known], name="text_encoder")


@pytest.fixture(scope="module")
def varied(news):
    words = news[FIRE].split()
    long_text = " ".join(words * (3 * MAX_TOKENS // len(words) + 1))  # > MAX_TOKENS tokens
    return VARIED + [long_text, long_text.upper(), news[1], news[2] + " " + news[3]]


def test_tokenizer_matches_tensorflow(varied):
    assert [tokens(t) for t in varied] == _tf_tokens(varied)


def test_tokenizer_matches_tensorflow_on_every_code_point():
    """Every code point alone, then in words of mixed case: same tokens as TF."""
    import sys as _sys

    cps = [c for c in range(1, _sys.maxunicode + 1) if not 0xD800 <= c <= 0xDFFF]
    step = 2000
    texts = [" ".join(chr(c) for c in cps[i : i + step]) for i in range(0, len(cps), step)]
    texts += ["".join(chr(c) for c in cps[i : i + 40]) + " Ab" for i in range(0, 70000, 40)]
    assert [tokens(t) for t in texts] == _tf_tokens(texts)


@pytest.fixture(scope="module")
def saved(enc, tmp_path_factory):
    folder = tmp_path_factory.mktemp("saved") / "encoder"
    enc.save(folder)
    return folder


def test_numpy_path_equals_keras_on_a_saved_encoder(enc, saved, varied):
    back = TextEncoder.load(saved, json.loads(json.dumps(enc.config())))
    model = _keras_text_model(back)  # model.keras, loaded with safe_mode=True
    known = [t for t in varied if any(back.token_ids(t) > 1)]
    assert known == varied
    ours = back.encode(known)
    for t, v in zip(known, ours):  # one at a time: no padding in the Keras call either
        ref, cnt = model(np.array([[t]], dtype=object), training=False)
        assert float(np.asarray(cnt)[0]) == float((back.token_ids(t) > 1).sum())
        np.testing.assert_allclose(v, np.asarray(ref)[0], rtol=0, atol=1e-5)
    # batched Keras call (padded rows) too, and the news articles
    ref = np.asarray(model(np.array([[t] for t in known], dtype=object))[0])
    diff = float(np.abs(ours - ref).max())
    print(f"max |numpy - keras| over {len(known)} varied texts: {diff:.2e}")
    assert diff <= 1e-5


def test_numpy_path_equals_keras_on_news(enc, saved, news):
    back = TextEncoder.load(saved, enc.config())
    ours = back.encode(news)
    model = _keras_text_model(back)
    ref = np.concatenate([
        np.asarray(model(np.array([[t] for t in news[i : i + 50]], dtype=object))[0])
        for i in range(0, len(news), 50)
    ])
    diff = float(np.abs(ours - ref).max())
    print(f"max |numpy - keras| over {len(news)} news articles: {diff:.2e}")
    assert diff <= 1e-5
    # the encoder right after fit (in-memory arrays) gives the same vectors as after load
    np.testing.assert_array_equal(enc.encode(news[:20]), ours[:20])


def test_loading_and_encoding_does_not_import_tensorflow(enc, saved):
    code = (
        "import sys, json\n"
        "from latentsearch.encoders.text import TextEncoder\n"
        f"cfg = json.loads({json.dumps(json.dumps(enc.config()))})\n"
        f"e = TextEncoder.load({str(saved)!r}, cfg)\n"
        "v = e.encode(['bushfires near Sydney', 'Straße İstanbul ΣΟΦΙΑ fire'])\n"
        "assert v.shape == (2, 64)\n"
        "bad = [m for m in ('tensorflow', 'keras') if m in sys.modules]\n"
        "sys.exit(f'imported {bad}' if bad else 0)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    np.testing.assert_allclose(
        TextEncoder.load(saved, enc.config()).encode("bushfires near Sydney"),
        enc.encode("bushfires near Sydney"), atol=0,
    )


def test_inference_file_holds_no_pickles(saved, enc):
    with np.load(saved / "inference.npz", allow_pickle=False) as z:
        assert z["embeddings"].shape == (len(enc.vocabulary) + 2, 64)
        assert z["embeddings"].dtype == np.float32 and z["token_weights"].dtype == np.float32


def test_encoder_saved_without_inference_file_still_loads(enc, saved, tmp_path, news):
    """Collections saved before inference.npz existed: arrays taken from model.keras."""
    import shutil

    old = tmp_path / "old"
    shutil.copytree(saved, old)
    (old / "inference.npz").unlink()
    back = TextEncoder.load(old, enc.config())
    np.testing.assert_allclose(back.encode(news[:20]), enc.encode(news[:20]), atol=1e-6)


def test_damaged_inference_file_is_an_encoder_error(enc, saved, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(saved, bad)
    (bad / "inference.npz").write_bytes(b"not a zip file")
    with pytest.raises(EncoderError, match="cannot load the text encoder"):
        TextEncoder.load(bad, enc.config())
    np.savez(bad / "inference.npz", embeddings=np.zeros((3, 64), np.float32),
             token_weights=np.zeros(3, np.float32))
    with pytest.raises(EncoderError, match="vocab.json has"):
        TextEncoder.load(bad, enc.config())

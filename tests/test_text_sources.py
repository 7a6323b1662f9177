"""Text sources: the built-in sample, .txt, .jsonl, .csv, and every refusal."""

from __future__ import annotations

import json

import pytest

from latentsearch.errors import InvalidInput
from latentsearch.io.texts import TextSet, load_text_source, read_texts_file


def test_news_sample():
    ts = load_text_source("news")
    assert isinstance(ts, TextSet)
    assert len(ts) == 300
    assert len(ts.labels) == len(ts.ids) == len(ts.sources) == 300
    assert ts.labels[0] is None and ts.ids[0] is None
    assert ts.sources[0] == "news:1" and ts.sources[-1] == "news:300"
    assert ts.texts[0].startswith("Hundreds of people")


def test_txt_one_item_a_line_blank_lines_skipped(tmp_path):
    p = tmp_path / "notes.txt"
    p.write_text("first line\n\n   \nsecond line  \r\nthird\n", encoding="utf-8")
    ts = load_text_source(str(p))
    assert ts.texts == ["first line", "second line", "third"]
    assert ts.labels == [None] * 3
    assert ts.sources == [f"{p}:1", f"{p}:4", f"{p}:5"]


def test_txt_with_bom_and_non_ascii(tmp_path):
    p = tmp_path / "u.txt"
    p.write_bytes("\ufeffZürich café naïve\n中文字符\n".encode("utf-8"))
    assert load_text_source(p).texts == ["Zürich café naïve", "中文字符"]


def test_jsonl_text_label_id(tmp_path):
    p = tmp_path / "items.jsonl"
    rows = [
        {"text": "where is the station", "label": "travel", "id": "a1"},
        {"text": "the train is late", "label": 3, "id": 17},
        {"text": "no label here"},
    ]
    p.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n", encoding="utf-8")
    ts = load_text_source(p)
    assert ts.texts == [r["text"] for r in rows]
    assert ts.labels == ["travel", "3", None]
    assert ts.ids == ["a1", "17", None]
    assert ts.sources == [f"{p}:1", f"{p}:2", f"{p}:3"]


def test_csv_text_label_id(tmp_path):
    p = tmp_path / "items.csv"
    p.write_text(
        'id,text,label\n1,"hello, world",greeting\n2,"a ""quoted"" word",\n\n3,plain,x\n',
        encoding="utf-8",
    )
    ts = load_text_source(p)
    assert ts.texts == ["hello, world", 'a "quoted" word', "plain"]
    assert ts.labels == ["greeting", None, "x"]
    assert ts.ids == ["1", "2", "3"]


def test_csv_text_only(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("Text\nalpha\nbeta\n", encoding="utf-8")
    ts = load_text_source(p)
    assert ts.texts == ["alpha", "beta"] and ts.labels == [None, None]


def test_read_texts_file(tmp_path):
    p = tmp_path / "extra.jsonl"
    p.write_text('{"text": "one"}\n{"text": "two"}\n', encoding="utf-8")
    assert read_texts_file(p) == ["one", "two"]
    q = tmp_path / "extra.txt"
    q.write_text("x\ny\n", encoding="utf-8")
    assert read_texts_file(str(q)) == ["x", "y"]


def _error(source) -> str:
    with pytest.raises(InvalidInput) as info:
        load_text_source(source)
    msg = str(info.value)
    assert "\n" not in msg
    return msg


def test_missing_file(tmp_path):
    assert "no such file" in _error(str(tmp_path / "nope.txt"))
    assert "no such file" in _error(str(tmp_path / "nope"))


def test_directory_and_unsupported_suffix(tmp_path):
    d = tmp_path / "dir.txt"
    d.mkdir()
    assert "directory" in _error(d)
    p = tmp_path / "x.docx"
    p.write_bytes(b"abc")
    assert "unsupported" in _error(p)


@pytest.mark.parametrize("name,content", [
    ("empty.txt", ""), ("blank.txt", "\n  \n\n"), ("empty.jsonl", "\n"),
    ("empty.csv", ""), ("header_only.csv", "text,label\n"),
])
def test_empty_sources(tmp_path, name, content):
    p = tmp_path / name
    p.write_text(content, encoding="utf-8")
    assert "no items" in _error(p)


def test_csv_missing_text_column(tmp_path):
    p = tmp_path / "bad.csv"
    p.write_text("sentence,label\nhello,1\n", encoding="utf-8")
    msg = _error(p)
    assert "missing 'text' column" in msg and "sentence" in msg


def test_jsonl_missing_text_field(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"text": "ok"}\n{"label": 1}\n', encoding="utf-8")
    assert f"{p}:2: missing 'text' field" in _error(p)


def test_jsonl_malformed_line(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"text": "ok"}\n\n{"text": "broken"\n', encoding="utf-8")
    msg = _error(p)
    assert f"{p}:3:" in msg and "malformed JSON" in msg


def test_jsonl_not_an_object_and_bad_types(tmp_path):
    p = tmp_path / "a.jsonl"
    p.write_text('["text"]\n', encoding="utf-8")
    assert "JSON object" in _error(p)
    p.write_text('{"text": 5}\n', encoding="utf-8")
    assert "'text' must be a string" in _error(p)
    p.write_text('{"text": "  "}\n', encoding="utf-8")
    assert "empty 'text'" in _error(p)
    p.write_text('{"text": "a", "label": [1]}\n', encoding="utf-8")
    assert "'label'" in _error(p)


def test_undecodable_bytes_name_the_line(tmp_path):
    p = tmp_path / "latin1.txt"
    p.write_bytes("good line\nalso good\ncaf\xe9 au lait\n".encode("latin-1"))
    msg = _error(p)
    assert f"{p}:3:" in msg and "UTF-8" in msg


def test_undecodable_bytes_in_csv_and_jsonl(tmp_path):
    p = tmp_path / "x.csv"
    p.write_bytes(b"text\nok\n\xff\xfe\n")
    assert f"{p}:3:" in _error(p)
    q = tmp_path / "x.jsonl"
    q.write_bytes(b'{"text": "ok"}\n{"text": "\xc3"}\n')
    assert f"{q}:2:" in _error(q)


def test_nul_bytes(tmp_path):
    p = tmp_path / "nul.txt"
    p.write_bytes(b"one\ntwo\x00three\n")
    msg = _error(p)
    assert "NUL" in msg and f"{p}:2:" in msg
    q = tmp_path / "utf16.txt"
    q.write_bytes("hello\n".encode("utf-16"))
    assert "NUL" in _error(q) or "UTF-8" in _error(q)


def test_csv_ragged_row(tmp_path):
    p = tmp_path / "r.csv"
    p.write_text("text,label\na,1\nb,2,extra\n", encoding="utf-8")
    assert f"{p}:3:" in _error(p)


def test_csv_keeps_every_other_column_as_a_field(tmp_path):
    p = tmp_path / "notes.csv"
    p.write_text("ID,Text,year,Publication Year,lang,\n"
                 "n1,hello,2020, 1999 ,en,\n"
                 "n2,world,,2001,,\n", encoding="utf-8")
    ts = load_text_source(p)
    assert ts.ids == ["n1", "n2"]  # the file's own id: stored as source_id, not as the id
    assert ts.fields == [{"year": "2020", "Publication Year": "1999", "lang": "en"},
                         {"Publication Year": "2001"}]  # cells as text; empty is no value


def test_jsonl_keeps_every_other_key_as_a_field(tmp_path):
    p = tmp_path / "notes.jsonl"
    rows = [{"text": "a", "id": 7, "year": 2020, "score": 0.5, "tags": ["x"], "ok": True,
             "note": None}, {"text": "b"}]
    p.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    ts = load_text_source(p)
    assert ts.fields == [{"year": 2020, "score": 0.5, "tags": ["x"], "ok": True, "note": None},
                         None]  # JSON values as they are: a number stays a number


@pytest.mark.parametrize("name,content,message", [
    ("s.csv", "text,source\na,b\n", "field 'source' is reserved"),
    ("s.csv", "text,id,source_id\na,1,2\n", "field 'source_id' is reserved"),
    ("s.jsonl", '{"text": "a", "source": "reuters"}\n', "field 'source' is reserved"),
    ("s.jsonl", '{"text": "a", "id": 1, "source_id": 2}\n', "field 'source_id' is reserved"),
    ("s.jsonl", '{"text": "a", "x": NaN}\n', "NaN or Infinity"),
    ("d.csv", "text,year,year\na,1,2\n", "column 'year' appears twice"),
    ("d.csv", "text,Text\na,b\n", "column 'Text' appears twice"),
    ("u.csv", "text,,label\na,lost,b\n", "column 2 has a value but no name"),
])
def test_fields_that_would_shadow_or_vanish_are_refused(tmp_path, name, content, message):
    p = tmp_path / name
    p.write_text(content, encoding="utf-8")
    assert message in _error(p)


def test_a_source_id_without_an_id_is_an_ordinary_field(tmp_path):
    p = tmp_path / "s.csv"
    p.write_text("text,source_id\na,x1\n", encoding="utf-8")
    assert load_text_source(p).fields == [{"source_id": "x1"}]


def test_a_field_no_filter_can_name_is_kept_with_a_warning(tmp_path, caplog):
    p = tmp_path / "w.csv"
    p.write_text("text,price ($)\na,3\n", encoding="utf-8")
    with caplog.at_level("WARNING", logger="latentsearch"):
        assert load_text_source(p).fields == [{"price ($)": "3"}]
    assert "'price ($)' is kept, but --where cannot name it" in caplog.text

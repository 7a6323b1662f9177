"""Filters (`where`): every operator against a plain-Python model of the records, the command
line's syntax, unknown fields, injection, and `year>=2020` on a CSV column end to end.

The model below is written from the rules in latentsearch/filters.py's docstring, not from
the SQL: a value reads as a number when it is one or is decimal text; two numbers compare as
numbers, two non-numbers as text, a number and a non-number never match; missing and null
are the same; $ne/$nin are the negations of $eq/$in.
"""

from __future__ import annotations

import json
import re
import sqlite3

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings, strategies as st

import latentsearch as ls
from latentsearch.cli import main
from latentsearch.errors import InvalidInput
from latentsearch.filters import as_number, parse_where, reads_as_number, where_from_cli
from latentsearch.storage.records import (RECORDS_SCHEMA, RecordsConnection, record_row,
                                          select_ids, where_sql)

COLUMNS = ("id", "label", "source", "text")
EXTRA = ("year", "n", "tag", "flag", "lst")
_NUM = re.compile(r"[ \t\n\v\f\r]*[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
                  r"[ \t\n\v\f\r]*\Z")

# -- the model -----------------------------------------------------------------------------


def number(v):
    """The number a stored or query value reads as, or None."""
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, (int, float)):
        return v
    if isinstance(v, str) and _NUM.match(v):
        return float(v)
    return None


def stored(rec: dict, field: str):
    if field in COLUMNS:
        return rec[field]
    return rec["extra"].get(field)


def equal(v, q) -> bool:
    if q is None:
        return v is None
    if v is None or isinstance(v, (list, dict)):
        return False
    nv, nq = number(v), number(q)
    if nv is not None or nq is not None:
        return nv is not None and nq is not None and nv == nq
    return v == q


def ordered(v, op: str, q) -> bool:
    if v is None or isinstance(v, (list, dict)):
        return False
    nv, nq = number(v), number(q)
    if (nv is None) != (nq is None):
        return False
    a, b = (nv, nq) if nv is not None else (v, q)
    return {"$gt": a > b, "$gte": a >= b, "$lt": a < b, "$lte": a <= b}[op]


def holds(rec: dict, field: str, op: str, q) -> bool:
    v = stored(rec, field)
    if op == "$eq":
        return equal(v, q)
    if op == "$ne":
        return not equal(v, q)
    if op == "$in":
        return any(equal(v, x) for x in q)
    if op == "$nin":
        return not any(equal(v, x) for x in q)
    if op == "$exists":
        return (v is not None) == q
    return ordered(v, op, q)


def matches(where: dict, rec: dict) -> bool:
    for key, spec in where.items():
        if key == "$and":
            ok = all(matches(w, rec) for w in spec)
        elif key == "$or":
            ok = any(matches(w, rec) for w in spec)
        elif isinstance(spec, dict):
            ok = all(holds(rec, key, op, q) for op, q in spec.items())
        else:
            ok = holds(rec, key, "$eq", spec)
        if not ok:
            return False
    return True


def fields_in(where: dict) -> set[str]:
    out = set()
    for key, spec in where.items():
        out |= set().union(*map(fields_in, spec)) if key in ("$and", "$or") else {key}
    return out


def database(records: list[dict]) -> sqlite3.Connection:
    con = sqlite3.connect(":memory:", factory=RecordsConnection, check_same_thread=False)
    con.executescript(RECORDS_SCHEMA)
    con.executemany("INSERT INTO records VALUES (?, ?, ?, ?, ?)",
                    [record_row(r["id"], (r["label"], r["source"], r["text"], r["extra"]))
                     for r in records])
    return con


# -- random records and filters -------------------------------------------------------------

TEXTS = ["2020", "2021", "unknown", "a", "B", "007", "", "1,000", " 7 ", "3.0", "-1", ".5",
         "1e1", "x y", "é", "+3", "3."]
NUMBERS = [-3, 0, 3, 7, 2020, 2021, 2.5, -0.5, 1e3, 10]
stored_value = st.one_of(st.sampled_from(TEXTS), st.sampled_from(NUMBERS), st.booleans(),
                         st.none(), st.just([1, "a"]), st.just({"k": 1}))
query_value = st.one_of(st.sampled_from(TEXTS), st.sampled_from(NUMBERS), st.booleans())
column_text = st.one_of(st.none(), st.sampled_from(TEXTS))


@st.composite
def record_sets(draw):
    n = draw(st.integers(0, 12))
    out = []
    for i in range(n):
        keys = draw(st.lists(st.sampled_from(EXTRA), unique=True, max_size=len(EXTRA)))
        out.append({"id": i * 3, "label": draw(column_text), "source": draw(column_text),
                    "text": draw(column_text),
                    "extra": {k: draw(stored_value) for k in keys}})
    return out


@st.composite
def leaves(draw):
    field = draw(st.sampled_from(COLUMNS + EXTRA))
    op = draw(st.sampled_from(["plain", "$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in",
                               "$nin", "$exists"]))
    values = st.integers(-2, 40) if field == "id" else query_value  # id takes numbers only
    if op == "$exists":
        return {field: {op: draw(st.booleans())}}
    if op in ("$in", "$nin"):
        return {field: {op: draw(st.lists(st.one_of(values, st.none()), max_size=4))}}
    if op in ("plain", "$eq", "$ne"):
        q = draw(st.one_of(values, st.none()))
        return {field: q} if op == "plain" else {field: {op: q}}
    return {field: {op: draw(values)}}


filters = st.recursive(
    leaves(),
    lambda inner: st.one_of(
        st.lists(inner, min_size=1, max_size=3).map(lambda ws: {"$and": ws}),
        st.lists(inner, min_size=1, max_size=3).map(lambda ws: {"$or": ws}),
        st.lists(inner, min_size=2, max_size=3).map(
            lambda ws: {k: v for w in ws for k, v in w.items()}),  # several keys: AND
    ),
    max_leaves=6,
)


@settings(max_examples=300, deadline=None)
@given(record_sets(), st.lists(filters, min_size=1, max_size=8))
def test_every_operator_matches_the_python_model(records, wheres):
    con = database(records)
    present = {k for r in records for k in r["extra"]}
    for where in wheres:
        unknown = {f for f in fields_in(where) if f not in COLUMNS and f not in present}
        if unknown:
            with pytest.raises(InvalidInput, match="no item has a field"):
                select_ids([con], where)
            continue
        want = [r["id"] for r in records if matches(where, r)]
        assert select_ids([con], where) == want, where
        # the same without the label index shortcut (no connection to read labels from)
        sql, params = where_sql(where)
        assert [row[0] for row in con.execute(sql, params)] == want, where


@settings(max_examples=3000, deadline=None)
@given(st.text(alphabet="0123456789.eE+- \t\n\v\f\rx", max_size=8))
def test_reads_as_number_is_sqlites_own_rule(text):
    con = sqlite3.connect(":memory:")
    sqlite_says = con.execute("SELECT CAST(?1 AS NUMERIC) = ?1", (text,)).fetchone()[0]
    assert reads_as_number(text) == bool(sqlite_says) == bool(_NUM.match(text))
    if sqlite_says and len(text.strip()) <= 6:
        assert as_number(text) == con.execute("SELECT CAST(? AS NUMERIC)", (text,)).fetchone()[0]


def test_numbers_and_text_by_the_rule():
    recs = [{"id": i, "label": lab, "source": None, "text": None, "extra": ex}
            for i, (lab, ex) in enumerate([
                ("3", {"year": "2021"}), ("03", {"year": 2019}), ("3.0", {"year": "unknown"}),
                ("a", {"year": 2020.5}), (None, {"year": None}), ("b", {})])]
    con = database(recs)

    def ids(where):
        return select_ids([con], where)

    assert ids({"label": 3}) == ids({"label": "3"}) == [0, 1, 2]
    assert ids({"label": "a"}) == [3]
    assert ids({"year": {"$gte": 2020}}) == [0, 3]  # "unknown" is not >= 2020
    assert ids({"year": {"$gt": "a"}}) == [2]  # text with text only
    assert ids({"year": {"$ne": 2021}}) == [1, 2, 3, 4, 5]  # $ne matches the missing too
    assert ids({"year": None}) == ids({"year": {"$exists": False}}) == [4, 5]
    assert ids({"year": {"$gte": 2020, "$lt": 2021}}) == [3]
    assert ids({"label": {"$in": [3, "b", None]}}) == [0, 1, 2, 4, 5]
    assert ids({"label": {"$nin": [3, "b"]}}) == [3, 4]
    assert ids({"$or": [{"label": "a"}, {"year": 2019}]}) == [1, 3]
    assert ids({"id": {"$gte": 4}}) == [4, 5] and ids({"id": {"$in": [0, 5, 9]}}) == [0, 5]
    assert ids({}) == [0, 1, 2, 3, 4, 5] and ids({"$and": [{}]}) == [0, 1, 2, 3, 4, 5]


# -- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize("where,message", [
    ({"year": {"$regex": "x"}}, "unknown operator '$regex'"),
    ({"$not": {"year": 1}}, "unknown operator '$not'"),
    ({"year": {"$gte": None}}, "takes a number or a text"),
    ({"year": {"$in": 3}}, "takes a list"),
    ({"year": {"$exists": 1}}, "takes true or false"),
    ({"year": [1, 2]}, "use $in"),
    ({"year": {"a": 1}}, "operator dict"),
    ({"year": float("nan")}, "NaN"),
    ({"year": b"2020"}, "takes a number, a text or null"),
    ({"$and": []}, "non-empty list"),
    ({"$or": {"a": 1}}, "non-empty list"),
    ([("year", 1)], "must be a dict"),
    ({"id": "n1"}, "the engine's integer id"),
    ({"id": {"$in": [1, "n1"]}}, "the field 'source_id'"),
])
def test_bad_filters_are_one_line_errors(where, message):
    con = database([{"id": 0, "label": "a", "source": None, "text": None,
                     "extra": {"year": 2020}}])
    with pytest.raises(InvalidInput) as info:
        select_ids([con], where)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_deep_or_huge_filters_are_refused_not_crashed():
    where: dict = {"label": "a"}
    for _ in range(40):
        where = {"$and": [where]}
    with pytest.raises(InvalidInput, match="deeper"):
        parse_where(where)
    with pytest.raises(InvalidInput, match="more than"):
        parse_where({"$or": [{"label": str(i)} for i in range(1001)]})
    con = database([{"id": i, "label": str(i), "source": None, "text": None, "extra": {}}
                    for i in range(5)])
    wide = {"$or": [{"label": f"x{i}"} for i in range(999)] + [{"label": "3"}]}
    assert select_ids([con], wide) == [3]  # a balanced tree: no SQLite depth limit hit
    assert select_ids([con], {"id": {"$in": list(range(0, 100_000, 2))}}) == [0, 2, 4]


def test_an_unknown_field_names_the_known_ones(root):
    col = ls.build_vectors(np.eye(4), labels=list("abab"), name="u")
    col.add_vectors(np.eye(4)[:2] * 2, [("a", None, None, {"year": "2020", "lang": "en"}),
                                        ("b", None, None, {"year": 2021})])
    with pytest.raises(InvalidInput) as info:
        col.search(np.eye(4)[0], where={"yeer": {"$gte": 2020}})
    msg = str(info.value)
    assert "\n" not in msg and "'yeer'" in msg and "did you mean 'year'" in msg
    assert msg.endswith("the fields are: id, label, source, text, lang, year")
    # fields of the delta segment are found, and filter there as in the main one
    def found(where, col=col):
        return sorted(h.id for h in col.search(np.eye(4)[0], k=10, where=where))

    assert found({"year": {"$gte": 2020}}) == [4, 5]
    assert found({"label": "a"}) == [0, 2, 4]
    assert found({"lang": {"$exists": False}}, ls.open("u")) == [0, 1, 2, 3, 5]
    with pytest.raises(InvalidInput, match="no item has a field 'year'"):
        ls.build_vectors(np.eye(4), name="plain").search(np.eye(4)[0], where={"year": 1})


def test_labels_compare_as_numbers_through_the_index(root):
    """Many items, few labels: numeric label tests are answered by the label index, exactly."""
    labels = [str(i % 10) for i in range(2000)] + ["03", "3.0", "x"]
    col = ls.build_vectors(np.random.default_rng(0).normal(size=(2003, 4)), labels=labels, name="l")
    threes = [i for i, lab in enumerate(labels) if lab in ("3", "03", "3.0")]
    assert col.snapshot.allowed({"label": 3}).tolist() == threes
    assert col.snapshot.allowed({"label": {"$gte": 8}}).tolist() == [
        i for i, lab in enumerate(labels) if lab in ("8", "9")]
    assert col.snapshot.allowed({"label": {"$in": ["x", 3.0]}}).tolist() == sorted(threes + [2002])


# -- injection ------------------------------------------------------------------------------

HOSTILE = ["a' OR '1'='1", "a\"; DROP TABLE records; --", "') OR 1=1 --", "%", "*", "?",
           "$.x", "\\", "label) OR (1", "1; ATTACH DATABASE '/tmp/x' AS x"]


def test_injection_in_keys_operators_and_values_reads_only_bound_values(root):
    col = ls.build_vectors(np.eye(4), labels=list("abcd"), name="q")
    col.add_vectors(np.eye(4)[:1], [("a", None, None, {"year": "2020"})])
    q = np.eye(4)[0]
    for value in HOSTILE:
        assert col.search(q, k=5, where={"label": value}) == []
        assert col.search(q, k=5, where={"year": {"$in": [value]}}) == []
        assert len(col.search(q, k=5, where={"label": {"$ne": value}})) == 5
    for key in ["label; DROP TABLE records", "label) OR (1", "year' OR '1", 'a"b', "$where",
                "", " label", "x" * 65, "j.key", "records.extra"]:
        with pytest.raises(InvalidInput):
            col.search(q, where={key: "a"})
    for op in ["$eq; DROP TABLE records", "$gt OR 1", "$where", "eq", "$"]:
        with pytest.raises(InvalidInput):
            col.search(q, where={"label": {op: "a"}})
    sql, params = where_sql({"label": HOSTILE[0], "year": {"$in": HOSTILE}})
    assert all(h not in sql for h in HOSTILE if len(h) > 3) and "year" not in sql  # keys bound too
    assert len(ls.open("q").get([0, 1, 2, 3, 4])) == 5


# -- the command line -----------------------------------------------------------------------


@pytest.mark.parametrize("args,where", [
    (["label=3"], {"label": 3}),
    (["label = c3"], {"label": "c3"}),
    (["label==3"], {"label": 3}),
    (["label!=3"], {"label": {"$ne": 3}}),
    (["year>2020"], {"year": {"$gt": 2020}}),
    (["year>=2020.5"], {"year": {"$gte": 2020.5}}),
    (["year<1e3"], {"year": {"$lt": 1000.0}}),
    (["year<=-1"], {"year": {"$lte": -1}}),
    (["lang=in:en, fr,3"], {"lang": {"$in": ["en", "fr", 3]}}),
    (["lang!=in:en"], {"lang": {"$nin": ["en"]}}),
    (["note=a=b"], {"note": "a=b"}),
    (["Publication Year>=2020"], {"Publication Year": {"$gte": 2020}}),
    (['{"$or": [{"label": 3}, {"year": {"$lt": 1990}}]}'],
     {"$or": [{"label": 3}, {"year": {"$lt": 1990}}]}),
    (["label=3", "label=4"], {"$and": [{"label": 3}, {"label": 4}]}),
    (["label=3", "year>=2020"], {"$and": [{"label": 3}, {"year": {"$gte": 2020}}]}),
    ([], None),
])
def test_cli_where_syntax(args, where):
    assert where_from_cli(args) == where


@pytest.mark.parametrize("arg", ["nonsense", "=3", "label=", ">=2020", "{not json",
                                 "[1, 2]", "label;x=3", '{"year": {"$gte": null}}',
                                 "lang=in:a,,b"])
def test_cli_where_refusals(arg):
    with pytest.raises(InvalidInput) as info:
        where_from_cli([arg])
    assert "\n" not in str(info.value)


def test_repeated_where_on_the_same_key_is_an_and(root):
    """Regression: `--where label=3 --where label=4` kept only the last; now both must hold."""
    x = np.random.default_rng(1).normal(size=(20, 4)).astype(np.float32)
    np.save(root.parent / "x.npy", x)
    (root.parent / "labels.txt").write_text("\n".join(str(i % 5) for i in range(20)) + "\n")
    run = CliRunner().invoke
    assert run(main, ["build", "vectors", str(root.parent / "x.npy"), "--labels",
                      str(root.parent / "labels.txt"), "--name", "r", "-q"]).exit_code == 0
    both = run(main, ["query", "r", "--id", "0", "--where", "label=3", "--where", "label=4",
                      "--json"])
    assert both.exit_code == 0 and json.loads(both.stdout)["hits"] == []
    one = run(main, ["query", "r", "--id", "0", "--where", "label=4", "--json", "-k", "20"])
    assert {h["label"] for h in json.loads(one.stdout)["hits"]} == {"4"}
    either = run(main, ["query", "r", "--id", "0", "--where", "label=in:3,4", "--json", "-k", "20"])
    assert {h["label"] for h in json.loads(either.stdout)["hits"]} == {"3", "4"}


def test_csv_column_year_filters_end_to_end(root, tmp_path):
    """`--where 'year>=2020'` on a CSV column, through `build text` and `query` (epochs=1)."""
    notes = tmp_path / "notes.csv"
    notes.write_text(
        "id,text,label,year,lang\n"
        "n1,the train to the station is late,travel,2019,en\n"
        "n2,bushfires near the city,news,2021,en\n"
        "n3,le train est en retard,travel,2020,fr\n"
        "n4,a quiet day at the station,travel,unknown,en\n"
        "n5,markets fall again,news,2022,\n", encoding="utf-8")
    run = CliRunner().invoke
    built = run(main, ["build", "text", str(notes), "--name", "notes", "--epochs", "1", "-q"])
    assert built.exit_code == 0, built.output

    def ids(*where: str) -> list[int]:
        args = ["query", "notes", "--text", "train station", "--json", "-k", "10"]
        r = run(main, args + [a for w in where for a in ("--where", w)])
        assert r.exit_code == 0, r.output
        return sorted(h["id"] for h in json.loads(r.stdout)["hits"])

    assert ids("year>=2020") == [1, 2, 4]  # 2021, 2020, 2022; not "unknown"
    assert ids("year<2020") == [0]
    assert ids("year>=2020", "lang=en") == [1]
    assert ids("lang!=en") == [2, 4]  # fr, and the empty cell (no value)
    assert ids("id=2") == [2]  # the engine's id ...
    assert ids("source_id=n3") == [2]  # ... and the file's own
    assert ids("source_id=in:n1,n5") == [0, 4]
    assert ids('{"$or": [{"lang": "fr"}, {"year": {"$lt": 2020}}]}') == [0, 2]
    # every other column is kept, as the text it is; the file's id is source_id
    assert ls.open("notes").get([2])[0].extra == {"year": "2020", "lang": "fr", "source_id": "n3"}
    r = run(main, ["query", "notes", "--text", "train", "--where", "yeer>=2020"])
    assert r.exit_code == 1
    assert r.stderr.startswith("error: no item has a field 'yeer'") and r.stderr.count("\n") == 1
    assert "lang, source_id, year" in r.stderr

"""records.sqlite: one row per item (id, label, source, text, extra as JSON).

Committed records files never change, so they are opened read-only and ``immutable`` and
shared by every thread. Filters (``where``, the language of latentsearch.filters) compile to
SQL with bound parameters only: field names are checked against a strict pattern and bound,
like every value, so neither enters the SQL text. Extra fields are read with ``json_each``
over the item's ``extra``; which fields a database has is cached on its connection."""

from __future__ import annotations

import difflib
import json
import math
import operator
import shutil
import sqlite3
from pathlib import Path
from typing import Any, Sequence

from latentsearch.errors import CorruptCollection, InvalidInput
from latentsearch.filters import AllOf, AnyOf, Condition, Node, fields_of, parse_where
from latentsearch.types import RecordFields

__all__ = ["RECORDS_SCHEMA", "COLUMNS", "RecordsConnection", "open_records", "write_records",
           "record_row", "where_sql", "select_ids", "check_fields", "extra_fields", "has_field",
           "numeric_labels", "fetch", "all_rows"]

#: the fields every item has, as columns; every other field is a key of ``extra``
COLUMNS = ("id", "label", "source", "text")
MAX_SHOWN = 40  # field names listed in the error for an unknown one
MAX_LABELS = 1000  # distinct labels under which numeric label tests go through the index
SQL_BATCH = 900  # ids per IN (...) query, under SQLite's parameter limit

RECORDS_SCHEMA = """
CREATE TABLE records (
    id     INTEGER PRIMARY KEY,
    label  TEXT,
    source TEXT,
    text   TEXT,
    extra  TEXT
);
CREATE INDEX records_label ON records(label);
"""


class RecordsConnection(sqlite3.Connection):
    """A read-only records database that remembers which extra fields its items have: the
    file never changes, so neither does the answer (filters check every field they name)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields_seen: dict[str, bool] = {}
        self.field_names: list[str] | None = None
        self.label_numbers: dict[str, int | float] | None | bool = False  # False: not read yet


def open_records(path: Path) -> sqlite3.Connection:
    """Read-only connection; ``immutable`` because a committed records file never changes."""
    uri = path.resolve().as_uri() + "?mode=ro&immutable=1"
    try:
        con = sqlite3.connect(uri, uri=True, check_same_thread=False, factory=RecordsConnection)
        con.execute("SELECT count(*) FROM records").fetchone()
    except sqlite3.DatabaseError as exc:
        raise CorruptCollection(f"{path} is not a readable records database: {exc}") from None
    return con


def write_records(path: Path, rows, base: Path | None = None, delete_ids=None) -> Path:
    """A records file at ``path``: a copy of ``base`` (if any) with ``rows`` inserted and
    ``delete_ids`` deleted."""
    if base is not None:
        shutil.copyfile(base, path)
    con = sqlite3.connect(path)
    try:
        if base is None:
            con.executescript(RECORDS_SCHEMA)
        if delete_ids is not None and len(delete_ids):
            con.executemany("DELETE FROM records WHERE id = ?", ((int(i),) for i in delete_ids))
        if rows:
            con.executemany(
                "INSERT INTO records (id, label, source, text, extra) VALUES (?, ?, ?, ?, ?)",
                rows,
            )
        con.commit()
    finally:
        con.close()
    return path


def record_row(item_id: int, record: RecordFields) -> tuple:
    """The records table row of one item (``extra`` as strict JSON: a NaN would make every
    later filter on the file fail)."""
    label, source, text, extra = record
    try:
        blob = json.dumps(extra, allow_nan=False) if extra else None
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"item {item_id}: extra fields must be JSON values ({exc})") from None
    return (int(item_id), label, source, text, blob)


# -- filters: the tree of latentsearch.filters, compiled to SQL over this table -------------

_SQL_OPS = {"$eq": "=", "$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}
_PY_OPS = {"$eq": operator.eq, "$gt": operator.gt, "$gte": operator.ge, "$lt": operator.lt,
           "$lte": operator.le}
# an SQL value that reads as a number: SQLite's own test (a text converts whole, or it is one)
_IS_NUMBER = "CAST({x} AS NUMERIC) = {x}"
_IN_LIST = "(SELECT v.value FROM json_each(?) AS v)"  # a whole list as one bound JSON value
_EACH = "EXISTS (SELECT 1 FROM json_each(records.extra) AS j WHERE j.key = ? AND {})"


def _balanced(parts: list[str], joiner: str) -> str:
    """``parts`` joined by AND/OR as a balanced tree (SQLite limits expression depth)."""
    if len(parts) <= 8:
        return "(" + f" {joiner} ".join(parts) + ")"
    half = len(parts) // 2
    return f"({_balanced(parts[:half], joiner)} {joiner} {_balanced(parts[half:], joiner)})"


class _Compiler:
    """SQL for one filter tree on one records database; ``params`` fill its ``?`` in order.

    ``label`` compared with numbers uses the label index when the database has few distinct
    labels (see :func:`numeric_labels`): the labels whose numbers match are found first,
    exactly as SQLite reads them, and looked up by text."""

    def __init__(self, con: sqlite3.Connection | None) -> None:
        self.con = con
        self.params: list[Any] = []

    def node(self, node: Node) -> str:
        if isinstance(node, Condition):
            return self.condition(node)
        if not node.parts:
            return "1"
        return _balanced([self.node(p) for p in node.parts],
                         "AND" if isinstance(node, AllOf) else "OR")

    def bind(self, value: Any) -> str:
        self.params.append(value)
        return "?"

    def bind_list(self, values: list) -> str:
        """``(SELECT ...)`` of a list, bound as one JSON value however long it is."""
        self.params.append(json.dumps(values))
        return _IN_LIST

    def condition(self, c: Condition) -> str:
        if c.field == "id":
            return self.id_test(c)
        column = c.field in COLUMNS
        if c.op == "$exists" or c.value is None and c.op in ("$eq", "$ne"):
            holds = c.value if c.op == "$exists" else c.op == "$ne"
            return self.present(c.field) if holds else f"NOT {self.present(c.field)}"
        positive = {"$ne": "$eq", "$nin": "$in"}.get(c.op, c.op)
        if column:
            x, is_text = c.field, f"typeof({c.field}) = 'text'"
            sql = self.test(x, is_text, positive, c.value, c.field == "label")
        else:  # an extra field: its row of json_each over the item's extra, the key bound
            self.bind(c.field)
            sql = _EACH.format(self.test("j.value", "j.type = 'text'", positive, c.value, False))
        if positive == "$in" and None in c.value:
            sql = f"({sql} OR NOT {self.present(c.field)})"
        return f"NOT IFNULL({sql}, 0)" if positive != c.op else sql

    def present(self, field: str) -> str:
        if field in COLUMNS:
            return f"{field} IS NOT NULL"
        self.bind(field)
        return _EACH.format("j.type <> 'null'")

    def test(self, x: str, is_text: str, op: str, value: Any, label: bool) -> str:
        """``x op value`` ($in: one of a tuple), by the rule of latentsearch.filters: a number
        with what reads as a number, a text with a text that does not; NULL (false) when
        ``x`` is missing."""
        values = value if op == "$in" else (value,)
        texts = [v for v in values if isinstance(v, str)]
        numbers = [v for v in values if v is not None and not isinstance(v, str)]
        parts = []
        if texts and op in ("$eq", "$in"):  # an equal text cannot read as a number either
            parts.append(f"({is_text} AND {x} = {self.bind(texts[0])})" if op == "$eq" else
                         f"({is_text} AND {x} IN {self.bind_list(texts)})")
        elif texts:
            parts.append(f"({is_text} AND {x} {_SQL_OPS[op]} {self.bind(texts[0])} "
                         f"AND NOT ({_IS_NUMBER.format(x=x)}))")
        if numbers:
            parts.append(self.numeric(x, op, numbers, label))
        return parts[0] if len(parts) == 1 else _balanced(parts, "OR") if parts else "0"

    def numeric(self, x: str, op: str, numbers: list, label: bool) -> str:
        known = numeric_labels(self.con) if label and self.con is not None else None
        if known is not None:  # the label index, by the labels whose numbers match
            if op == "$in":
                texts = [t for t, n in known.items() if any(n == v for v in numbers)]
            else:
                texts = [t for t, n in known.items() if _PY_OPS[op](n, numbers[0])]
            if len(texts) == 1:
                return f"{x} = {self.bind(texts[0])}"
            return f"{x} IN {self.bind_list(texts)}" if texts else "0"
        number = _IS_NUMBER.format(x=x)
        finite = [v for v in numbers if math.isfinite(v)]
        if op != "$in" or len(finite) < len(numbers):  # JSON has no infinity
            tests = [f"CAST({x} AS NUMERIC) {_SQL_OPS.get(op, '=')} {self.bind(v)}"
                     for v in numbers]
            return f"({number} AND {_balanced(tests, 'OR')})"
        return f"({number} AND CAST({x} AS NUMERIC) IN {self.bind_list(finite)})"

    def id_test(self, c: Condition) -> str:
        """A condition on ``id``, the engine's integer id (always present)."""
        values = c.value if c.op in ("$in", "$nin") else (c.value,)
        texts = [v for v in values if isinstance(v, str)]
        if texts:
            raise InvalidInput(f"where: 'id' is the engine's integer id, got {texts[0]!r}; "
                               "the source file's own id is the field 'source_id'")
        if c.op == "$exists":
            return "1" if c.value else "0"
        if c.op in ("$in", "$nin"):  # None and infinities never equal an id
            finite = [v for v in values if v is not None and math.isfinite(v)]
            sql = f"id IN {self.bind_list(finite)}" if finite else "0"
            return sql if c.op == "$in" else f"NOT {sql}"
        if c.value is None:
            return "0" if c.op == "$eq" else "1"
        return f"id {'<>' if c.op == '$ne' else _SQL_OPS[c.op]} {self.bind(c.value)}"


def where_sql(where: dict[str, Any] | Node,
              con: sqlite3.Connection | None = None) -> tuple[str, list[Any]]:
    """``SELECT id`` of the items matching a filter (a dict, see latentsearch.filters, or its
    parsed tree), for the records database ``con`` if given (it lets label tests use the
    label index): SQL text and its bound parameters. No field name or value is in the text."""
    node = where if isinstance(where, (Condition, AllOf, AnyOf)) else parse_where(where)
    compiler = _Compiler(con)
    sql = compiler.node(node)
    return f"SELECT id FROM records WHERE {sql} ORDER BY id", compiler.params


def numeric_labels(con: sqlite3.Connection) -> dict[str, int | float] | None:
    """The distinct labels of a database that read as numbers, each with its number as SQLite
    reads it; None when there are more than MAX_LABELS distinct labels (cached). The labels
    are walked on the label index, one seek each, not by reading every row."""
    cached = getattr(con, "label_numbers", False)
    if cached is False:
        labels: list[str] = []
        label = con.execute("SELECT min(label) FROM records").fetchone()[0]
        while label is not None and len(labels) <= MAX_LABELS:
            labels.append(label)
            label = con.execute("SELECT min(label) FROM records WHERE label > ?",
                                (label,)).fetchone()[0]
        cached = None
        if len(labels) <= MAX_LABELS:
            rows = con.execute("SELECT v.value, CAST(v.value AS NUMERIC) FROM json_each(?) AS v "
                               "WHERE CAST(v.value AS NUMERIC) = v.value", (json.dumps(labels),))
            cached = dict(rows.fetchall())
        if isinstance(con, RecordsConnection):
            con.label_numbers = cached
    return cached


def extra_fields(con: sqlite3.Connection) -> list[str]:
    """Names of the extra fields any item of this database has, sorted (cached)."""
    cached = getattr(con, "field_names", None)
    if cached is None:
        rows = con.execute("SELECT DISTINCT j.key FROM records, json_each(records.extra) AS j")
        cached = sorted(str(row[0]) for row in rows)
        if isinstance(con, RecordsConnection):
            con.field_names = cached
    return cached


def has_field(con: sqlite3.Connection, name: str) -> bool:
    """Whether any item of this database has the extra field ``name`` (cached)."""
    seen = getattr(con, "fields_seen", {})
    if name not in seen:
        found = con.execute("SELECT 1 FROM records, json_each(records.extra) AS j "
                            "WHERE j.key = ? LIMIT 1", (name,)).fetchone()
        seen[name] = found is not None
    return seen[name]


def check_fields(connections: Sequence[sqlite3.Connection], fields: set[str]) -> None:
    """InvalidInput naming the fields that exist, for a field no item has."""
    unknown = sorted(f for f in fields
                     if f not in COLUMNS and not any(has_field(c, f) for c in connections))
    if not unknown:
        return
    known = list(COLUMNS) + sorted(set().union(*(extra_fields(c) for c in connections)))
    close = difflib.get_close_matches(unknown[0], known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    shown = ", ".join(known[:MAX_SHOWN]) + (f" and {len(known) - MAX_SHOWN} more"
                                            if len(known) > MAX_SHOWN else "")
    raise InvalidInput(f"no item has a field {unknown[0]!r}{hint}; the fields are: {shown}")


def select_ids(connections: Sequence[sqlite3.Connection], where: dict[str, Any]) -> list[int]:
    """Ids matching ``where`` in each records database, in order."""
    node = parse_where(where)
    found: list[int] = []
    try:
        check_fields(connections, fields_of(node))
        for con in connections:
            sql, values = where_sql(node, con)
            found += [row[0] for row in con.execute(sql, values)]
    except sqlite3.Error as exc:
        raise InvalidInput(f"cannot filter by {where}: {exc}") from None
    return found


def fetch(con: sqlite3.Connection, ids: Sequence[int], out: dict[int, tuple], *,
          extra: bool = False) -> None:
    """(label, source, text) of ``ids`` from one records database, into ``out``; with
    ``extra``, the extra fields (a dict, empty when none) as a fourth element."""
    columns = "id, label, source, text, extra" if extra else "id, label, source, text"
    for start in range(0, len(ids), SQL_BATCH):
        chunk = ids[start : start + SQL_BATCH]
        marks = ",".join("?" * len(chunk))
        for row in con.execute(
            f"SELECT {columns} FROM records WHERE id IN ({marks})", chunk
        ):
            out[row[0]] = row[1:] if not extra else (*row[1:4], json.loads(row[4] or "{}"))


def all_rows(con: sqlite3.Connection) -> list[tuple]:
    """Every row (id, label, source, text, extra), by id."""
    return con.execute("SELECT id, label, source, text, extra FROM records ORDER BY id").fetchall()

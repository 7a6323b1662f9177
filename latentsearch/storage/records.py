"""records.sqlite: one row per item (id, label, source, text, extra as JSON).

Committed records files never change, so they are opened read-only and ``immutable`` and
shared by every thread. Filters (``where``) compile to SQL with bound parameters only: keys
are checked against a strict pattern and values never enter the SQL text."""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
from pathlib import Path
from typing import Any, Sequence

from latentsearch.errors import CorruptCollection, InvalidInput
from latentsearch.types import RecordFields

__all__ = ["RECORDS_SCHEMA", "open_records", "write_records", "record_row", "where_sql",
           "select_ids", "fetch", "all_rows"]

_WHERE_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_COLUMNS = ("id", "label", "source", "text")
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


def open_records(path: Path) -> sqlite3.Connection:
    """Read-only connection; ``immutable`` because a committed records file never changes."""
    uri = path.resolve().as_uri() + "?mode=ro&immutable=1"
    try:
        con = sqlite3.connect(uri, uri=True, check_same_thread=False)
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
    """The records table row of one item."""
    label, source, text, extra = record
    return (int(item_id), label, source, text, json.dumps(extra) if extra else None)


def where_sql(where: dict[str, Any]) -> tuple[str, list[Any]]:
    """``SELECT id`` for a filter ``{key: value}`` (all must match; None matches a missing
    value): SQL text and its bound parameters."""
    clauses, values = [], []
    for key, value in where.items():
        if not isinstance(key, str) or not _WHERE_KEY.match(key):
            raise InvalidInput(f"invalid where key {key!r}")
        column = key if key in _COLUMNS else f"json_extract(extra, '$.{key}')"
        if value is None:
            clauses.append(f"{column} IS NULL")
        else:
            clauses.append(f"{column} = ?")
            values.append(value if key == "id" else str(value))
    return "SELECT id FROM records WHERE " + " AND ".join(clauses) + " ORDER BY id", values


def select_ids(connections: Sequence[sqlite3.Connection], where: dict[str, Any]) -> list[int]:
    """Ids matching ``where`` in each records database, in order."""
    sql, values = where_sql(where)
    found: list[int] = []
    try:
        for con in connections:
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

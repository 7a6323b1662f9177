"""records.sqlite: one row per item (id, label, source, text, extra as JSON)."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

from ..errors import CorruptCollection

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

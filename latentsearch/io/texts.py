"""Text sources: where the sentences of a ``build text`` / ``add`` come from.

A SOURCE is one of

- ``news``: the built-in sample, 300 short news articles shipped in the package
  (latentsearch/data/news_300.txt; the Lee et al. 2005 background corpus), no labels;
- a ``.txt`` file: one item a line, blank lines skipped, surrounding whitespace stripped;
- a ``.jsonl`` file: one JSON object a line with a string ``text`` and optional ``label``
  and ``id`` (strings or numbers, kept as strings), blank lines skipped; every other key is
  kept as the item's field, its JSON value as it is (a number stays a number);
- a ``.csv`` file: a header row with a ``text`` column and optional ``label`` and ``id``
  (found whatever their case); every other column is kept as the item's field, named by its
  header, each cell as the text it is (surrounding spaces stripped, an empty cell is no
  value). ``where`` compares cells that read as numbers as numbers (latentsearch.filters),
  so ``year >= 2020`` works on a column of years and ``"007"`` stays ``"007"``.

Files must be UTF-8 (a leading byte-order mark is allowed). Every problem is an
:class:`InvalidInput` with a one-line message naming the file and, where there is one,
the line. Items are not truncated here: the text encoder encodes the first
``MAX_TOKENS`` (512) tokens of each item and ignores the rest, and the full text is kept
in the collection's records.

``source`` of each item is ``"<path>:<line>"`` (``"news:<line>"`` for the sample), so a hit
can be traced back to the line it came from. The file's own ``id`` is kept as the field
``source_id``: collection ids (``Hit.id``, ``where={"id": ...}``) are always the engine's own
stable integers. A field named ``source`` (or ``source_id`` beside an ``id``) would shadow
one of these and is refused; a field whose name a filter cannot use (see
:data:`latentsearch.filters.FIELD_NAME`) is kept, with a warning.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from latentsearch.errors import InvalidInput
from latentsearch.filters import is_field_name
from latentsearch.progress import warn

__all__ = ["TextSet", "load_text_source", "read_text", "read_texts_file", "NEWS_PATH", "SUFFIXES"]

#: the built-in sample ``news``
NEWS_PATH = Path(__file__).resolve().parent.parent / "data" / "news_300.txt"
#: file endings read as text sources
SUFFIXES = (".txt", ".jsonl", ".csv")


@dataclass
class TextSet:
    """Items of a text source, in source order; all five lists have the same length.
    ``fields``: each item's other fields (CSV columns, JSONL keys), or None."""

    texts: list[str]
    labels: list[str | None] = field(default_factory=list)
    ids: list[str | None] = field(default_factory=list)
    sources: list[str | None] = field(default_factory=list)
    fields: list[dict[str, Any] | None] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = len(self.texts)
        for name in ("labels", "ids", "sources", "fields"):
            if not getattr(self, name):
                setattr(self, name, [None] * n)
            elif len(getattr(self, name)) != n:
                raise ValueError(f"TextSet.{name} has {len(getattr(self, name))} items, texts {n}")

    def __len__(self) -> int:
        return len(self.texts)


def read_text(path: Path, shown: str) -> str:
    """The file decoded as strict UTF-8 (a leading BOM dropped, NUL bytes refused); errors
    are :class:`InvalidInput` naming the file as ``shown`` and the line."""
    if not path.exists():
        raise InvalidInput(f"no such file: {shown}")
    if path.is_dir():
        raise InvalidInput(f"{shown} is a directory, expected a .txt, .jsonl or .csv file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InvalidInput(f"cannot read {shown}: {exc.strerror or exc}") from None
    nul = data.find(b"\x00")
    if nul >= 0:
        line = data.count(b"\n", 0, nul) + 1
        raise InvalidInput(f"{shown}:{line}: NUL byte; is this a binary file, or UTF-16?")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise InvalidInput(
            f"{shown}:{line}: not valid UTF-8 (byte 0x{data[exc.start]:02x}); "
            "save the file as UTF-8"
        ) from None
    return text.removeprefix("\ufeff")


def _field(value: object, shown: str, line: int, name: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise InvalidInput(
            f"{shown}:{line}: {name!r} must be a string or a number, got {type(value).__name__}"
        )
    return str(value)


def _load_txt(text: str, source: str) -> TextSet:
    out = TextSet([])
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if line:
            out.texts.append(line)
            out.labels.append(None)
            out.ids.append(None)
            out.sources.append(f"{source}:{n}")
            out.fields.append(None)
    return out


# the field names the engine gives every item; a source's own field may not take them
_RESERVED = ("source",)


def _refuse_reserved(name: str, has_id: bool, where: str) -> None:
    """A field that would shadow ``source`` (or ``source_id``, beside an ``id``) is refused."""
    if name.lower() in _RESERVED or has_id and name.lower() == "source_id":
        raise InvalidInput(
            f"{where}: field {name!r} is reserved (the engine keeps each item's file:line in "
            "'source' and the file's own id in 'source_id'); rename it")


def _warn_unfilterable(names: Iterable[str], where: str) -> None:
    for name in names:
        if not is_field_name(name):
            warn(f"{where}: field {name!r} is kept, but --where cannot name it (a field name "
                 "is letters, digits, '_', and inner spaces, '.' or '-')")


def _load_jsonl(text: str, shown: str) -> TextSet:
    out = TextSet([])
    seen: set[str] = set()  # field names met so far (each is warned about once)
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InvalidInput(f"{shown}:{n}: malformed JSON ({exc.msg})") from None
        if not isinstance(obj, dict):
            raise InvalidInput(f"{shown}:{n}: expected a JSON object with a 'text' field")
        if "text" not in obj:
            raise InvalidInput(f"{shown}:{n}: missing 'text' field")
        item = obj["text"]
        if not isinstance(item, str):
            raise InvalidInput(f"{shown}:{n}: 'text' must be a string, got {type(item).__name__}")
        if not item.strip():
            raise InvalidInput(f"{shown}:{n}: empty 'text'")
        out.texts.append(item.strip())
        out.labels.append(_field(obj.get("label"), shown, n, "label"))
        out.ids.append(_field(obj.get("id"), shown, n, "id"))
        out.sources.append(f"{shown}:{n}")
        fields = {k: v for k, v in obj.items() if k not in ("text", "label", "id")}
        for key in fields:
            _refuse_reserved(key, "id" in obj, f"{shown}:{n}")
        try:
            json.dumps(fields, allow_nan=False)
        except ValueError:
            raise InvalidInput(f"{shown}:{n}: NaN or Infinity in a field (JSON has no such "
                               "numbers; write null or a string)") from None
        if fields.keys() - seen:
            _warn_unfilterable(sorted(fields.keys() - seen), f"{shown}:{n}")
            seen.update(fields)
        out.fields.append(fields or None)
    return out


def _load_csv(text: str, shown: str) -> TextSet:
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
        while header is not None and not any(h.strip() for h in header):
            header = next(reader, None)  # leading blank lines
        if header is None:
            raise InvalidInput(f"no items in {shown} (empty file)")
        names = [h.strip() for h in header]
        lowered = [h.lower() for h in names]
        if "text" not in lowered:
            raise InvalidInput(f"{shown}: missing 'text' column (columns: {', '.join(names)})")
        col = {k: lowered.index(k) for k in ("text", "label", "id") if k in lowered}
        others = {i: h for i, h in enumerate(names) if i not in col.values() and h}
        seen: set[str] = set()
        for h in names:
            key = h.lower() if h.lower() in col else h  # text/label/id in any case
            if h and key in seen:
                raise InvalidInput(f"{shown}: column {h!r} appears twice in the header")
            seen.add(key)
        for h in others.values():
            _refuse_reserved(h, "id" in col, shown)
        _warn_unfilterable(others.values(), shown)
        unnamed = [i for i, h in enumerate(names) if not h]
        out = TextSet([])
        for row in reader:
            n = reader.line_num
            if not any(c.strip() for c in row):
                continue
            if len(row) != len(header):
                raise InvalidInput(
                    f"{shown}:{n}: {len(row)} fields, the header has {len(header)}"
                )
            item = row[col["text"]].strip()
            if not item:
                raise InvalidInput(f"{shown}:{n}: empty 'text'")
            out.texts.append(item)
            out.labels.append(row[col["label"]].strip() or None if "label" in col else None)
            out.ids.append(row[col["id"]].strip() or None if "id" in col else None)
            out.sources.append(f"{shown}:{n}")
            fields = {h: row[i].strip() for i, h in others.items() if row[i].strip()}
            out.fields.append(fields or None)
            for i in unnamed:
                if row[i].strip():
                    raise InvalidInput(f"{shown}:{n}: column {i + 1} has a value but no name "
                                       "in the header")
        return out
    except csv.Error as exc:
        raise InvalidInput(f"{shown}:{reader.line_num}: malformed CSV ({exc})") from None


def load_text_source(source: str | Path) -> TextSet:
    """Read a text SOURCE (``news``, .txt, .jsonl or .csv); see the module docstring."""
    shown = str(source)
    if shown == "news":
        return _load_txt(read_text(NEWS_PATH, "news"), "news")
    path = Path(source)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        if not path.exists():
            raise InvalidInput(
                f"no such file: {shown} (a text source is 'news' or a .txt, .jsonl or .csv file)"
            )
        raise InvalidInput(
            f"unsupported text source {shown}: expected 'news' or a .txt, .jsonl or .csv file"
        )
    text = read_text(path, shown)
    if suffix == ".txt":
        items = _load_txt(text, shown)
    elif suffix == ".jsonl":
        items = _load_jsonl(text, shown)
    else:
        items = _load_csv(text, shown)
    if not items.texts:
        raise InvalidInput(f"no items in {shown} (empty file or only blank lines)")
    return items


def read_texts_file(path: str | Path) -> list[str]:
    """The texts of a .txt/.jsonl/.csv file (or ``news``), for ``--train-extra``."""
    return load_text_source(path).texts

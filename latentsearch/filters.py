"""The filter language of ``where``: what a filter may say, and what it means.

A filter is a dict in the style of Chroma and MongoDB::

    {"label": 3}                                   # plain value: $eq
    {"year": {"$gte": 2020, "$lt": 2030}}          # several operators: all must hold
    {"label": {"$in": [3, 5]}, "lang": "en"}       # several fields: all must hold
    {"$or": [{"label": 3}, {"year": {"$lt": 1990}}]}

Operators: ``$eq $ne $gt $gte $lt $lte $in $nin $exists``; ``$and`` / ``$or`` take a
non-empty list of filters. An empty filter ``{}`` matches every item.

Fields: ``id`` (the engine's own integer id, as in ``Hit.id``), ``label``, ``source`` (the
file, or ``file:line``, an item came from), ``text``, and every extra field an item was
given: each CSV column and JSONL key beyond text/label/id, and ``source_id`` (the file's own
``id`` column or key, which is *not* the engine's ``id``). A field no item has is an error
naming the fields that exist.

How values compare, so that a CSV column of years works as a number and a code like
``"a1"`` works as text:

- A value *reads as a number* when it is one (a JSON number, true/false as 1/0) or when it is
  text in the usual decimal form: ``2020``, ``-3.5``, ``.5``, ``1e6``, ``007`` (surrounding
  spaces ignored; no thousands separators, no hex, no ``inf``). CSV cells are stored as the
  text they are; this rule is what makes ``year >= 2020`` work on them.
- Two values that both read as numbers compare as numbers (``"3"``, ``3``, ``3.0`` and ``"03"``
  are all equal); two that both do not compare as text (code point order, case-sensitive).
  A number and a non-number are never equal and never ordered: ``{"year": {"$gte": 2020}}``
  leaves out an item whose year is ``"unknown"``.
- A missing field and a JSON ``null`` are the same: ``{"k": None}`` and
  ``{"k": {"$exists": False}}`` match them. ``$ne`` and ``$nin`` are the negations of ``$eq``
  and ``$in``, so they match items without the field too (as MongoDB does).
- A list or object stored in a JSONL field is kept and returned by ``get``, but only
  ``$exists`` (and the negations) test it.

This module only reads and checks a filter (:func:`parse_where`) and turns the command
line's ``--where`` arguments into one (:func:`where_from_cli`); ``storage/records.py``
compiles the checked tree to SQL with bound parameters (no key or value enters SQL text).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any, Iterable, Union

from latentsearch.errors import InvalidInput

__all__ = ["OPERATORS", "FIELD_NAME", "MAX_DEPTH", "MAX_CONDITIONS", "CLI_SYNTAX", "Condition",
           "AllOf", "AnyOf", "Node", "parse_where", "fields_of", "is_field_name",
           "reads_as_number", "as_number", "where_from_cli"]

#: comparison operators, as in MongoDB and Chroma
OPERATORS = ("$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "$exists")
#: a field name a filter may use: letters, digits, ``_``, and inner spaces, ``.`` or ``-``
#: (CSV headers like "Publication Year"); never SQL punctuation, quotes or ``$``
FIELD_NAME = re.compile(r"\w(?:[\w .\-]{0,62}[\w.\-])?")
#: deepest nesting of $and/$or, and most conditions in one filter
MAX_DEPTH = 32
MAX_CONDITIONS = 1000
# a number in text: what SQLite's CAST(x AS NUMERIC) = x accepts, checked against SQLite in
# tests/test_filters.py (ASCII digits only; spaces around allowed)
_NUMBER = re.compile(r"[ \t\n\v\f\r]*[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
                     r"[ \t\n\v\f\r]*")
_INTEGER = re.compile(r"[+-]?[0-9]+")
_INT64 = 2**63
_ORDER = ("$gt", "$gte", "$lt", "$lte")

_Scalar = Union[int, float, str, None]


@dataclass(frozen=True)
class Condition:
    """One test of one field. ``value``: a number (int/float), a text that does not read as a
    number, None (missing), a tuple of those (``$in``/``$nin``), or a bool (``$exists``)."""

    field: str
    op: str
    value: Any


@dataclass(frozen=True)
class AllOf:
    """Every part holds (an empty AllOf matches every item)."""

    parts: tuple


@dataclass(frozen=True)
class AnyOf:
    """At least one part holds."""

    parts: tuple


Node = Union[Condition, AllOf, AnyOf]


def is_field_name(name: Any) -> bool:
    """Whether ``name`` can be used as a field in a filter (see :data:`FIELD_NAME`)."""
    return isinstance(name, str) and FIELD_NAME.fullmatch(name) is not None


def reads_as_number(text: str) -> bool:
    """Whether ``text`` is a number in the usual decimal form (see the module docstring)."""
    return _NUMBER.fullmatch(text) is not None


def as_number(value: Any) -> int | float | None:
    """``value`` as the number it reads as (see the module docstring), or None. Integers
    beyond 64 bits become floats, as SQLite stores them."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value if -_INT64 <= value < _INT64 else float(value)
    if isinstance(value, float):
        return value
    if isinstance(value, str) and _NUMBER.fullmatch(value):
        text = value.strip(" \t\n\v\f\r")
        return as_number(int(text)) if _INTEGER.fullmatch(text) else float(text)
    return None


def _scalar(value: Any, where: str) -> _Scalar:
    """A filter value checked and normalised: a number, a non-numeric text, or None."""
    plain = (str, bytes, int, float, list, tuple, dict)
    if not isinstance(value, plain) and hasattr(value, "item"):
        try:
            value = value.item()  # numpy scalars, as labels often are
        except (TypeError, ValueError):
            pass
    if value is None:
        return None
    if isinstance(value, (bool, int, float)):
        if isinstance(value, float) and math.isnan(value):
            raise InvalidInput(f"where: {where} compares with NaN, which equals nothing")
        return as_number(value)
    if isinstance(value, str):
        number = as_number(value)
        return value if number is None else number
    if isinstance(value, (list, tuple)):
        raise InvalidInput(f"where: {where} takes one value, got a list (use $in for a list)")
    raise InvalidInput(f"where: {where} takes a number, a text or null, "
                       f"got {type(value).__name__}")


def _condition(field: str, op: str, value: Any) -> Condition:
    shown = f"{field!r} {op}"
    if op == "$exists":
        if not isinstance(value, bool):
            raise InvalidInput(f"where: {shown} takes true or false, got {value!r}")
        return Condition(field, op, value)
    if op in ("$in", "$nin"):
        if not isinstance(value, (list, tuple)):
            raise InvalidInput(f"where: {shown} takes a list, got {type(value).__name__}")
        return Condition(field, op, tuple(_scalar(v, shown) for v in value))
    value = _scalar(value, shown)
    if value is None and op in _ORDER:
        raise InvalidInput(f"where: {shown} takes a number or a text, got null")
    return Condition(field, op, value)


def _field(field: str, spec: Any) -> list[Condition]:
    if isinstance(spec, dict) and any(isinstance(k, str) and k.startswith("$") for k in spec):
        out = []
        for op, value in spec.items():
            if op not in OPERATORS:
                shown = op if isinstance(op, str) else repr(op)
                raise InvalidInput(f"where: unknown operator {shown!r} for {field!r} "
                                   f"(operators: {' '.join(OPERATORS)})")
            out.append(_condition(field, op, value))
        return out
    if isinstance(spec, dict):
        raise InvalidInput(f"where: {field!r} takes a value or an operator dict like "
                           f"{{\"$gte\": 2020}}, got {json.dumps(spec, default=str)[:60]}"
                           + (" (operators start with $)" if spec else ""))
    return [_condition(field, "$eq", spec)]


def _node(where: Any, depth: int, count: list[int]) -> Node:
    if not isinstance(where, dict):
        raise InvalidInput(f"where must be a dict like {{\"label\": 3}}, "
                           f"got {type(where).__name__}")
    if depth > MAX_DEPTH:
        raise InvalidInput(f"where nests $and/$or deeper than {MAX_DEPTH} levels")
    parts: list[Node] = []
    for key, spec in where.items():
        if key in ("$and", "$or"):
            if not isinstance(spec, (list, tuple)) or not spec:
                raise InvalidInput(f"where: {key} takes a non-empty list of filters")
            sub = tuple(_node(s, depth + 1, count) for s in spec)
            parts.append(AllOf(sub) if key == "$and" else AnyOf(sub))
        elif isinstance(key, str) and key.startswith("$"):
            raise InvalidInput(f"where: unknown operator {key!r} at the top of a filter "
                               "($and and $or combine filters; other operators go under a field)")
        elif not is_field_name(key):
            raise InvalidInput(f"invalid where key {key!r}: a field name is letters, digits, "
                               "'_', and inner spaces, '.' or '-'")
        else:
            found = _field(key, spec)
            count[0] += len(found)
            parts.extend(found)
    if count[0] > MAX_CONDITIONS:
        raise InvalidInput(f"where has more than {MAX_CONDITIONS} conditions")
    return parts[0] if len(parts) == 1 else AllOf(tuple(parts))


def parse_where(where: dict[str, Any]) -> Node:
    """The checked tree of a filter; InvalidInput (one line) for anything it cannot mean."""
    return _node(where, 0, [0])


def fields_of(node: Node) -> set[str]:
    """Every field a filter tests."""
    if isinstance(node, Condition):
        return {node.field}
    return set().union(*(fields_of(p) for p in node.parts)) if node.parts else set()


# -- the command line ---------------------------------------------------------------------

#: what ``--where`` takes, for the option's help and the README
CLI_SYNTAX = ("KEY=V, KEY!=V, KEY>V, KEY>=V, KEY<V, KEY<=V, KEY=in:A,B ($in), KEY!=in:A,B "
              "($nin), or one JSON object; values that read as numbers compare as numbers; "
              "repeated --where are ANDed")
_CLI = re.compile(r"(?P<key>[^=<>!]*?)\s*(?P<op>==|!=|>=|<=|=|>|<)\s*(?P<value>.*)", re.S)
_CLI_OPS = {"==": "$eq", "=": "$eq", "!=": "$ne", ">": "$gt", ">=": "$gte", "<": "$lt",
            "<=": "$lte"}


def _cli_value(text: str, arg: str) -> int | float | str:
    text = text.strip()
    if not text:
        raise InvalidInput(f"--where {arg!r}: no value (for a missing field use the JSON "
                           "form, e.g. '{\"year\": null}')")
    number = as_number(text)
    return text if number is None else number


def _cli_one(arg: str) -> dict[str, Any]:
    text = arg.strip()
    if text.startswith("{"):
        try:
            where = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InvalidInput(f"--where {arg!r}: malformed JSON ({exc.msg})") from None
        if not isinstance(where, dict):
            raise InvalidInput(f"--where {arg!r}: expected one JSON object")
        return where
    match = _CLI.fullmatch(text)
    if not match or not match["key"].strip():
        raise InvalidInput(f"--where takes {CLI_SYNTAX.split(';')[0]}; got {arg!r}")
    key, op, value = match["key"].strip(), _CLI_OPS[match["op"]], match["value"].strip()
    if op in ("$eq", "$ne") and value.startswith("in:"):
        items = value[3:].split(",") if value[3:].strip() else []
        return {key: {"$in" if op == "$eq" else "$nin": [_cli_value(v, arg) for v in items]}}
    value = _cli_value(value, arg)
    return {key: value} if op == "$eq" else {key: {op: value}}


def where_from_cli(args: Iterable[str]) -> dict[str, Any] | None:
    """One filter from the ``--where`` arguments (see :data:`CLI_SYNTAX`), checked; several
    are ANDed, also on the same key (``label=3`` and ``label=4``: nothing matches both).
    None when there are none."""
    parts = [_cli_one(a) for a in args]
    if not parts:
        return None
    where = parts[0] if len(parts) == 1 else {"$and": parts}
    parse_where(where)  # fail here, before an encoder is loaded, not after
    return where

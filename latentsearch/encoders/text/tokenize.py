"""How the text encoder reads a string: Unicode-aware words, then character n-grams.

Tokens: lower-cased (Unicode aware), every Unicode punctuation or symbol character replaced
by a space, split on whitespace. So ``"South-West"`` gives ``south west`` and
``"Zürich café"`` gives ``zürich café``; scripts written without spaces (Chinese, Japanese)
give one token per run of characters. Only the first :data:`MAX_TOKENS` (512) tokens of an
item are encoded; the rest is ignored (the built-in news articles have at most 620 words,
median 162).

Why these exact rules: encoders trained by earlier versions tokenised with Keras'
``TextVectorization``, and their vocabularies must keep meaning the same words. So
:func:`standardize` reproduces TensorFlow's ``regex_replace(lower(x, "utf-8"), [\\pP\\pS]+,
" ")`` followed by its whitespace split, checked on every code point by the tests: Python's
``str.lower`` (which, like TF/ICU, does the full mapping ``İ`` -> ``i̇`` and the Greek final
sigma), except for the characters in ``_TF_KEEPS_CASE`` (Unicode 14 additions TensorFlow's
ICU does not lower); every code point of category P* or S* (plus ``_TF_EXTRA_PUNCT``,
Unicode 15 additions that RE2 knows and this Python's ``unicodedata`` may not) becomes a
space; TensorFlow's lower-casing ends the text at its first NUL character, so does this; the
split is on ASCII whitespace only (`` \\t\\n\\v\\f\\r``: TF does not split on U+00A0, U+3000,
U+2028 ... which Python's ``str.split`` would).
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

from latentsearch.errors import InvalidInput

__all__ = ["MAX_TOKENS", "NGRAMS", "char_ngrams", "check_texts", "standardize", "tokens"]

#: tokens per item that are encoded; the rest of a longer item is ignored (documented)
MAX_TOKENS = 512
#: character n-gram lengths of the subword part (words get ``<`` and ``>`` boundary marks)
NGRAMS = (3, 4, 5)


def _ranges(*spans) -> frozenset[int]:
    out: set[int] = set()
    for a, b in spans:
        out.update(range(a, b + 1))
    return frozenset(out)


#: characters Python lower-cases but TensorFlow's ICU (Unicode 13 case tables) leaves as is
_TF_KEEPS_CASE = _ranges(
    (0x2C2F, 0x2C2F), (0xA7C0, 0xA7C0), (0xA7D0, 0xA7D0), (0xA7D6, 0xA7D6),
    (0xA7D8, 0xA7D8), (0x10570, 0x1057A), (0x1057C, 0x1058A), (0x1058C, 0x10592),
    (0x10594, 0x10595),
)
_KEEP_CASE_RE = re.compile("([" + "".join(chr(c) for c in sorted(_TF_KEEPS_CASE)) + "])")
#: punctuation/symbols in RE2's Unicode 15 tables, unassigned in Python 3.11's Unicode 14
_TF_EXTRA_PUNCT = _ranges(
    (0x11B00, 0x11B09), (0x11F43, 0x11F4F), (0x1F6DC, 0x1F6DC), (0x1F774, 0x1F776),
    (0x1F77B, 0x1F77F), (0x1F7D9, 0x1F7D9), (0x1FA75, 0x1FA77), (0x1FA87, 0x1FA88),
    (0x1FAAD, 0x1FAAF), (0x1FABB, 0x1FABD), (0x1FABF, 0x1FABF), (0x1FACE, 0x1FACF),
    (0x1FADA, 0x1FADB), (0x1FAE8, 0x1FAE8), (0x1FAF7, 0x1FAF8),
)
#: TensorFlow's whitespace split: ASCII whitespace only
_WORD_RE = re.compile(r"[^ \t\n\x0b\x0c\r]+")


class _PunctTable(dict):
    """``str.translate`` table, filled on demand: P* and S* code points -> a space."""

    def __missing__(self, cp: int) -> str:
        ch = chr(cp)
        out = " " if unicodedata.category(ch)[0] in "PS" or cp in _TF_EXTRA_PUNCT else ch
        self[cp] = out
        return out


_PUNCT_TABLE = _PunctTable()


def standardize(text: str) -> str:
    """Lower-case (as TensorFlow's UTF-8 lower-casing does) and turn P*/S* into spaces."""
    text = text.split("\x00", 1)[0]  # TF's UTF-8 lower-casing stops at the first NUL
    if _KEEP_CASE_RE.search(text) is None:
        low = text.lower()
    else:
        parts = _KEEP_CASE_RE.split(text)  # odd items: characters TF keeps as they are
        low = "".join(p if i % 2 else p.lower() for i, p in enumerate(parts))
    return low.translate(_PUNCT_TABLE)


def tokens(text: str) -> list[str]:
    """The words of ``text`` as the encoder sees them (before truncation)."""
    return _WORD_RE.findall(standardize(text))


def char_ngrams(word: str) -> set[str]:
    """The character n-grams (:data:`NGRAMS`, with ``<``/``>`` boundary marks) of a word."""
    b = "<" + word + ">"
    return {b[i : i + n] for n in NGRAMS for i in range(len(b) - n + 1)} - {b}


def check_texts(texts: Any, what: str) -> list[str]:
    """``texts`` as a list of valid Unicode strings (a str is one item); else InvalidInput."""
    if isinstance(texts, str):
        texts = [texts]
    try:
        texts = list(texts)
    except TypeError:
        raise InvalidInput(f"{what} must be a string or a list of strings") from None
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise InvalidInput(
                f"{what} must be strings; item {i} is {type(t).__name__}"
            )
        try:
            t.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidInput(f"text {i} is not valid Unicode (lone surrogate)") from None
    return texts

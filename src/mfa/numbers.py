"""Numbers written as text, read without guessing.

A register exported from Danish Excel writes ``2.700`` for two thousand seven hundred and
``2,5`` for two and a half; an English one ``2,700`` and ``2.5``. Reading ``2,700`` as 2.7
turned a 403 t building into 4 t. :func:`parse_numbers` therefore reads a value only when
its meaning is certain:

- ``decimal="auto"`` (the default): ``2700``, ``2700.5``, ``2700,5``, ``0,125``,
  ``1.234,5`` and ``1,234.5`` (both separators: the last is the decimal one) and
  ``2.700.000`` (repeated groups) are read; a single separator followed by exactly three
  digits (``2,700``, ``2.700``, ``12.345``) could be either and is *ambiguous*;
- ``decimal=","`` (Danish, German …: thousands ``.``) or ``decimal="."`` (English:
  thousands ``,``): the declared locale decides; a separator that does not fit it
  (``2.7`` with ``decimal=","``: not three digits after a thousands dot) is *malformed*.

Vectorised over a pandas string Series (regular expressions, no per-row Python).
"""

from __future__ import annotations

from typing import Literal

import pandas as pd

__all__ = ["Decimal", "parse_numbers"]

Decimal = Literal["auto", ",", "."]

_SIGN = r"[+-]?"
_PLAIN = rf"{_SIGN}\d+"
_ONE_SEP = rf"{_SIGN}\d+[.,]\d+"
_AMBIGUOUS = rf"{_SIGN}[1-9]\d{{0,2}}[.,]\d{{3}}"
_GROUPED = {  # thousands separator → whole-number part with groups, optional decimals
    ".": rf"{_SIGN}[1-9]\d{{0,2}}(?:\.\d{{3}})+(?:,\d+)?",
    ",": rf"{_SIGN}[1-9]\d{{0,2}}(?:,\d{{3}})+(?:\.\d+)?",
}
_SIMPLE = {",": rf"{_SIGN}\d+,\d+", ".": rf"{_SIGN}\d+\.\d+"}


def _matches(s: pd.Series, pattern: str) -> pd.Series:
    return s.str.fullmatch(pattern).fillna(False).astype(bool)


def _to_float(text: pd.Series, thousands: str, decimal: str) -> pd.Series:
    clean = text.str.replace(thousands, "", regex=False).str.replace(decimal, ".", regex=False)
    return pd.to_numeric(clean, errors="coerce").astype("float64")


def parse_numbers(
    text: pd.Series, decimal: Decimal = "auto"
) -> tuple[pd.Series, pd.Series, pd.Series]:
    """Numbers from text (stripped; empty → <NA>).

    Returns
    -------
    values, malformed, ambiguous
        ``values`` as float (NaN where not read); ``malformed`` marks text that is not a
        number in the locale, ``ambiguous`` text that could be read two ways (auto only).
    """
    s = text.astype("string").str.strip()
    present = (s.notna() & (s != "")).fillna(False).astype(bool)
    values = pd.Series(float("nan"), index=s.index, dtype="float64")
    ambiguous = pd.Series(False, index=s.index)
    plain = _matches(s, _PLAIN)
    values[plain] = pd.to_numeric(s[plain]).astype("float64")
    if decimal == "auto":
        ambiguous = _matches(s, _AMBIGUOUS)
        one = _matches(s, _ONE_SEP) & ~ambiguous
        values[one] = _to_float(s[one], " ", ",")
        for thousands, dec in ((".", ","), (",", ".")):
            grouped = _matches(s, _GROUPED[thousands]) & ~ambiguous & ~one
            values[grouped] = _to_float(s[grouped], thousands, dec)
    else:
        thousands = "." if decimal == "," else ","
        simple = _matches(s, _SIMPLE[decimal])
        values[simple] = _to_float(s[simple], thousands, decimal)
        grouped = _matches(s, _GROUPED[thousands])
        values[grouped] = _to_float(s[grouped], thousands, decimal)
    malformed = present & values.isna() & ~ambiguous
    return values, malformed, ambiguous

"""Text from input files, made safe where mfa writes it (pure functions).

Values that come from inputs (a record id, a status code, a file name in an error) end up
in ``report.md`` and the Prefect artifact (Markdown that a browser renders), in
``dropped.csv``/``repairs.csv`` (opened in spreadsheets) and on the terminal. There

- Markdown: :func:`md_escape` makes text literal: HTML (``<script>``) becomes entities,
  Markdown syntax (``#``, ``*``, ``[]``, ``|`` …) is backslash-escaped and line breaks
  become spaces, so a value cannot add a heading, a link, a table cell or a script;
  :func:`md_code_block` fences text with more backticks than it holds;
- CSV: :func:`csv_neutralise` prefixes a cell that a spreadsheet would run as a formula
  (it starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return, and is not a
  plain number) with a single quote, as OWASP recommends against CSV injection
  (https://owasp.org/www-community/attacks/CSV_Injection). A reader that wants the
  original value strips one leading ``'`` from such cells.
"""

from __future__ import annotations

import re

import pandas as pd

__all__ = ["csv_neutralise", "md_code_block", "md_escape"]

_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+!|~])")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = r"[+-]?(\d+([.,]\d*)?|[.,]\d+)([eE][+-]?\d+)?"


def md_escape(text: object) -> str:
    """``text`` as literal Markdown inline text (no HTML, no syntax, one line)."""
    s = str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    s = re.sub(r"[\r\n]+", " ", s)
    return _MD_SPECIAL.sub(r"\\\1", s)


def md_code_block(text: str) -> str:
    """``text`` in a fenced code block that it cannot close."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}\n{text}\n{fence}"


def csv_neutralise(values: pd.Series) -> pd.Series:
    """String cells that would start a spreadsheet formula, prefixed with ``'``."""
    s = values.astype("string")
    risky = s.str.startswith(_FORMULA_START).fillna(False) & ~s.str.fullmatch(_NUMBER).fillna(False)
    return s.where(~risky, "'" + s)

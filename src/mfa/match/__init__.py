"""Reuse matching (issue 18): allocate the materials that come free (a run's expected
outflows, plus supply files) to the sites that need them, year by year, by road distance
and net CO2. See ``docs/design.md``, section "Reuse matching".

Modules: ``params`` (the numbers), ``supply``, ``demand``, ``distances``, ``network`` (the
min-cost flow), ``allocate`` (the optimum and its CO2 balance), ``outputs``; files are read
and written by :mod:`mfa.io.match`.
"""

from __future__ import annotations

from mfa.match.api import MatchResult, match_run

__all__ = ["MatchResult", "match_run"]

"""Read the national floor-area statistics the report compares a run with
(``floor_area_statistics.csv`` beside the intensity table)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from mfa.errors import ConfigError

__all__ = ["STATISTICS_FILE", "read_floor_area_statistics"]

STATISTICS_FILE = "floor_area_statistics.csv"
_COLUMNS = ("iso3", "country", "function", "floor_area_m2", "statistic", "year", "source")


def read_floor_area_statistics(path: Path) -> pd.DataFrame:
    """The table, checked: every column filled, ``function`` RS/RM/NR, areas > 0 (m²)."""
    try:
        t = pd.read_csv(path, dtype={"iso3": str, "function": str}, keep_default_na=False)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: cannot be read ({exc}); restore it from config/") from exc
    missing = [c for c in (*_COLUMNS, "verified") if c not in t.columns]
    if missing:
        raise ConfigError(f"{path}: columns {', '.join(missing)} are missing")
    area = pd.to_numeric(t["floor_area_m2"], errors="coerce")
    bad = (
        (t[list(_COLUMNS)].astype(str) == "").any(axis=1)
        | ~t["function"].isin(["RS", "RM", "NR"])
        | ~(area > 0)
    ).to_numpy()
    if bad.any():
        raise ConfigError(
            f"{path} line {int(bad.argmax()) + 2}: fill every column, function RS/RM/NR, "
            "floor_area_m2 > 0 (m²)"
        )
    return t.assign(floor_area_m2=area)

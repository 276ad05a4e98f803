"""A run's floor areas against national statistics (pure): the median gross floor area
per function set beside a cited figure for the country the data lie in
(``config/intensities/floor_area_statistics.csv``), for ``run.json`` and ``report.md``."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

__all__ = ["floor_area_against_statistics", "floor_area_medians"]


def floor_area_medians(function: pd.Series, gfa_m2: pd.Series) -> pd.DataFrame:
    """Per function (index): ``buildings`` (count) and ``median_gfa_m2`` (m² gross floor
    area, the median over the buildings with a positive area)."""
    gfa = pd.to_numeric(gfa_m2, errors="coerce").to_numpy(dtype=float)
    keep = np.isfinite(gfa) & (gfa > 0)
    frame = pd.DataFrame({"function": function.to_numpy()[keep], "gfa": gfa[keep]})
    out = frame.groupby("function", sort=True)["gfa"].agg(["size", "median"])
    return out.rename(columns={"size": "buildings", "median": "median_gfa_m2"})


def floor_area_against_statistics(
    medians: pd.DataFrame, statistics: pd.DataFrame, iso3: str | None
) -> list[dict[str, Any]]:
    """One record per statistic of ``iso3``: the function, the run's buildings and median
    (m², None without buildings), the statistic (m²), run ÷ statistic, and what the
    statistic is and where it comes from. Empty when the country has none."""
    if not iso3:
        return []
    rows = statistics[statistics["iso3"] == iso3]
    out = []
    for row in rows.itertuples(index=False):
        n = int(medians["buildings"].get(row.function, 0))
        median = float(medians["median_gfa_m2"][row.function]) if n else None
        stat = float(row.floor_area_m2)
        out.append(
            {
                "function": row.function,
                "buildings": n,
                "run_median_gfa_m2": None if median is None else round(median, 1),
                "statistic_m2": stat,
                "ratio": None if median is None else round(median / stat, 3),
                "statistic": f"{row.statistic}, {row.country} {row.year}",
                "source": row.source,
                "verified": row.verified,
            }
        )
    return out

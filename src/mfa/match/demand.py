"""Demand: the sites that need material (a student's redesign, a municipality's projects)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from mfa.errors import InputDataError
from mfa.match.supply import check_window_and_tonnes

__all__ = ["DEMAND_COLUMNS", "check_demand_table"]

#: Columns of a demand table (t in tonnes, x/y in the run's CRS in metres, max_km in km;
#: a missing max_km means "the run's haul limit").
DEMAND_COLUMNS = [
    "demand_id",
    "x",
    "y",
    "material",
    "t",
    "year_from",
    "year_to",
    "min_grade",
    "max_km",
]


def check_demand_table(
    df: pd.DataFrame,
    source: str,
    materials: list[str],
    extent: tuple[float, float, float, float] | None = None,
) -> pd.DataFrame:
    """Validate a demand file already read into ``DEMAND_COLUMNS`` (points in the run CRS).

    ``extent`` (xmin, ymin, xmax, ymax, m) is the run's extent grown by the largest haul
    limit: a site outside it cannot be reached by anything of the run, which is almost
    always a CRS mix-up, so it is an error.
    """
    check_window_and_tonnes(df, source, materials, "demand_id")
    out = df.copy()
    if "min_grade" not in out.columns:
        out["min_grade"] = 0
    out["min_grade"] = out["min_grade"].fillna(0)
    if "max_km" not in out.columns:
        out["max_km"] = np.nan
    bad = out["max_km"].notna() & ~(out["max_km"] > 0)
    if bad.any():
        i = int(bad.to_numpy().argmax())
        raise InputDataError(
            f"{source} row {i + 1} (line {i + 2}): max_km {out['max_km'].iloc[i]} must be > 0 "
            "km; leave it empty for the default haul limit"
        )
    if extent is not None:
        xmin, ymin, xmax, ymax = extent
        outside = ~(out["x"].between(xmin, xmax) & out["y"].between(ymin, ymax))
        if outside.any():
            i = int(outside.to_numpy().argmax())
            raise InputDataError(
                f"{source} row {i + 1} (line {i + 2}): site ({out['x'].iloc[i]:.0f}, "
                f"{out['y'].iloc[i]:.0f}) lies outside the run's extent "
                f"({xmin:.0f}, {ymin:.0f}, {xmax:.0f}, {ymax:.0f}) plus the haul limit; give "
                "coordinates in the run's CRS (or a file with its CRS set)"
            )
    out["demand_id"] = out["demand_id"].astype(str)
    out["min_grade"] = out["min_grade"].astype(int)
    return out[DEMAND_COLUMNS].reset_index(drop=True)

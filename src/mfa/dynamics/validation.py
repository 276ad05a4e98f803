"""Compare two register snapshots with what the stock model expects between them (pure)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from mfa.dynamics import Lifetime
from mfa.dynamics.forecast import forecast_stock

__all__ = ["expected_outflow_m2", "observed_changes"]


def observed_changes(
    before: pd.DataFrame, after: pd.DataFrame, after_status: pd.Series, first_new_year: int
) -> dict[str, float | int | dict[str, float]]:
    """What disappeared and appeared between two snapshots of canonical buildings.

    ``before`` and ``after`` hold the standing buildings (``building_id``, ``gfa_m2``,
    ``construction_year``); ``after_status`` maps every id of the later register to its
    life-cycle status there. A building of ``before`` missing from ``after`` is *removed*:
    demolished, or taken out of the register for another reason (the status tells).
    A building of ``after`` missing from ``before`` and built in ``first_new_year`` or
    later is *new*.
    """
    gone = before[~before["building_id"].isin(after["building_id"])]
    status = after_status.reindex(gone["building_id"]).fillna("absent").astype(str)
    by_status = gone.groupby(status.to_numpy())["gfa_m2"].sum().round(1).to_dict()
    n_status = status.value_counts().to_dict()
    came = after[~after["building_id"].isin(before["building_id"])]
    new = came[came["construction_year"].fillna(0) >= first_new_year]
    return {
        "before_buildings": len(before),
        "before_m2": float(before["gfa_m2"].sum()),
        "removed_buildings": len(gone),
        "removed_m2": float(gone["gfa_m2"].sum()),
        "removed_m2_by_later_status": {str(k): float(v) for k, v in by_status.items()},
        "removed_buildings_by_later_status": {str(k): int(v) for k, v in n_status.items()},
        "new_buildings": len(new),
        "new_m2": float(new["gfa_m2"].sum()),
        "other_additions": len(came) - len(new),
    }


def expected_outflow_m2(
    before: pd.DataFrame, lifetimes: dict[str, Lifetime], base_year: int, until: int
) -> float:
    """Floor area (m²) the lifetimes expect to leave the ``before`` stock in base_year+1 … until.

    Buildings without a construction year are left out (their share is reported by the
    caller); ``function`` picks the lifetime.
    """
    total = 0.0
    dated = before[before["construction_year"].notna()]
    for f, lt in lifetimes.items():
        sub = dated[dated["function"] == f]
        if sub.empty:
            continue
        years = np.sort(sub["construction_year"].astype(int).unique())
        s0 = sub.groupby(sub["construction_year"].astype(int))["gfa_m2"].sum().reindex(years)
        fc = forecast_stock(s0.to_numpy()[None], years, base_year, until, lt)
        total += float(fc.outflow_m2[0, 1:].sum())
    return total

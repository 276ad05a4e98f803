"""Supply: what comes free where and when, from a published run or from supply files.

The run's supply is the expected demolition outflow of today's buildings, year by year,
from the one survival model of ``mfa query`` (:func:`mfa.query.outflow_factor`), per
building or summed per grid cell or district so that the network stays small.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from mfa.errors import InputDataError
from mfa.stocks.uncertainty import group_quantiles

__all__ = ["SUPPLY_COLUMNS", "check_supply_table", "run_supply", "supply_columns"]

#: Columns of a supply table (t in tonnes, x/y in the run's projected CRS, metres).
SUPPLY_COLUMNS = [
    "supply_id",
    "x",
    "y",
    "material",
    "year_from",
    "year_to",
    "t",
    "t_p05",
    "t_p50",
    "t_p95",
    "grade",
    "hazardous",
    "source",
]


def supply_columns(materials: list[str], unit: str) -> tuple[list[str], list[str]]:
    """The columns of a run's ``buildings`` layer that its supply per ``unit`` is computed
    from (:func:`run_supply` and :func:`mfa.query.outflow_factors`): those it needs, and
    those it uses when the layer has them (``hazard``). Of a national layer's ~70 columns
    and its footprints, a grid or district supply reads 13 and the points."""
    needed = ["function", "archetype_id", "construction_year"]  # the outflow shares
    needed += [f"{m}_t" for m in materials]
    if unit == "building":
        needed += ["building_id", *(f"{m}_t_{q}" for m in materials for q in ("p05", "p50", "p95"))]
    elif unit in ("grid", "district"):
        needed += ["gfa_m2"] + (["district_id"] if unit == "district" else [])
    return needed, ["hazard"]


def _unit_keys(
    b: pd.DataFrame, x: np.ndarray, y: np.ndarray, unit: str, cell_size_m: float
) -> np.ndarray:
    hazard = b["hazard"].notna().to_numpy() if "hazard" in b.columns else np.zeros(len(b), bool)
    suffix = np.where(hazard, ":hazard", "")
    if unit == "building":
        return b["building_id"].astype(str).to_numpy()
    if unit == "grid":
        ix = np.floor(x / cell_size_m).astype(np.int64)
        iy = np.floor(y / cell_size_m).astype(np.int64)
        key = pd.Series(ix).astype(str) + "_" + pd.Series(iy).astype(str)
        return ("cell:" + key + suffix).to_numpy()
    if unit == "district":
        d = b["district_id"].astype("string").fillna("_unassigned").astype(str)
        return ("district:" + d + pd.Series(suffix, index=d.index)).to_numpy()
    raise InputDataError(f"unit {unit!r} is not one of building, grid, district")


def run_supply(
    buildings: pd.DataFrame,
    x: np.ndarray,
    y: np.ndarray,
    shares: dict[int, np.ndarray],
    materials: list[str],
    unit: str,
    grade: int,
    cell_size_m: float = 250.0,
    archetypes: list[str] | None = None,
    draws: np.ndarray | None = None,
) -> pd.DataFrame:
    """Expected outflow per supply unit × material × year (t) with p05/p50/p95.

    Parameters
    ----------
    buildings
        The run's ``buildings`` table (``<material>_t`` and ``_p05/_p50/_p95`` columns, t;
        ``gfa_m2``, ``archetype_id``, ``hazard``, ``district_id``).
    x, y
        Each building's representative point (run CRS, m).
    shares
        Per year, each building's expected share demolished in that year (0…1).
    unit
        ``building`` (percentiles: the building's own, one uncertain factor per building),
        ``grid`` (cells of ``cell_size_m``) or ``district``; for the last two the
        percentiles come from the run's Monte Carlo draws summed per unit (``draws``:
        draws × archetypes × materials, kg/m²; ``archetypes`` their ids).

    Returns
    -------
    pandas.DataFrame
        ``SUPPLY_COLUMNS``; a unit's point is the mean of its buildings' points. Buildings
        with a ``hazard`` flag form their own units (``…:hazard``), marked ``hazardous``.
        Rows with no tonnes are left out.
    """
    keys = _unit_keys(buildings, x, y, unit, cell_size_m)
    codes, uniq = pd.factorize(keys, sort=True)
    n_u = len(uniq)
    count = np.bincount(codes, minlength=n_u)
    ux = np.bincount(codes, x, minlength=n_u) / np.maximum(count, 1)
    uy = np.bincount(codes, y, minlength=n_u) / np.maximum(count, 1)
    hazard = (
        buildings["hazard"].notna().to_numpy()
        if "hazard" in buildings.columns
        else np.zeros(len(buildings), bool)
    )
    u_haz = np.bincount(codes, hazard.astype(float), minlength=n_u) > 0
    if unit != "building":
        if draws is None or archetypes is None:
            raise ValueError("grid and district units need the run's draws and archetypes")
        a_idx = pd.Index(archetypes).get_indexer(buildings["archetype_id"].astype(object))
        gfa = buildings["gfa_m2"].to_numpy(dtype=float)
    frames = []
    for year, share in sorted(shares.items()):
        central = np.stack(
            [
                np.bincount(codes, buildings[f"{m}_t"].to_numpy(float) * share, n_u)
                for m in materials
            ],
            axis=1,
        )  # units × materials
        if unit == "building":
            pct = {
                q: np.stack(
                    [
                        np.bincount(codes, buildings[f"{m}_t_{q}"].to_numpy(float) * share, n_u)
                        for m in materials
                    ],
                    axis=1,
                )
                for q in ("p05", "p50", "p95")
            }
        else:
            floor = np.zeros((n_u, draws.shape[1]))  # units × archetypes, m²
            np.add.at(floor, (codes, a_idx), gfa * share)
            qs, _ = group_quantiles(floor, draws, (5.0, 50.0, 95.0))  # q × units × (mats+1)
            qs = qs[:, :, : len(materials)]
            pct = {"p05": qs[0], "p50": qs[1], "p95": qs[2]}
        n_m = len(materials)
        frames.append(
            pd.DataFrame(
                {
                    "supply_id": np.repeat(np.asarray(uniq, dtype=object), n_m),
                    "x": np.repeat(ux, n_m),
                    "y": np.repeat(uy, n_m),
                    "material": np.tile(np.asarray(materials, dtype=object), n_u),
                    "year_from": year,
                    "year_to": year,
                    "t": central.ravel(),
                    "t_p05": pct["p05"].ravel(),
                    "t_p50": pct["p50"].ravel(),
                    "t_p95": pct["p95"].ravel(),
                    "grade": grade,
                    "hazardous": np.repeat(u_haz, n_m),
                    "source": "run",
                }
            )
        )
    out = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=SUPPLY_COLUMNS)
    out = out[out["t"] > 0].reset_index(drop=True)
    out["supply_id"] = out["supply_id"] + "@" + out["year_from"].astype(str)
    return out[SUPPLY_COLUMNS]


def _row_error(source: str, row: int, what: str) -> InputDataError:
    return InputDataError(f"{source} row {row + 1} (line {row + 2}): {what}")


def check_window_and_tonnes(
    df: pd.DataFrame, source: str, materials: list[str], id_col: str
) -> None:
    """Checks shared by supply and demand files: ids, materials, windows, tonnes."""
    if df[id_col].isna().any():
        i = int(df[id_col].isna().to_numpy().argmax())
        raise _row_error(source, i, f"{id_col} is empty; give every row an id")
    dup = df.duplicated([id_col, "material"])
    if dup.any():
        i = int(dup.to_numpy().argmax())
        raise _row_error(
            source,
            i,
            f"{id_col} {df[id_col].iloc[i]!r} repeats with the same material; "
            "give each row its own id or sum the rows",
        )
    unknown = ~df["material"].isin(materials)
    if unknown.any():
        i = int(unknown.to_numpy().argmax())
        raise _row_error(
            source, i, f"material {df['material'].iloc[i]!r} is unknown; use one of {materials}"
        )
    for col in ("t", "year_from", "year_to"):
        bad = df[col].isna()
        if bad.any():
            i = int(bad.to_numpy().argmax())
            raise _row_error(source, i, f"{col} is empty or not a number; fill it in")
    neg = ~(df["t"] >= 0)
    if neg.any():
        i = int(neg.to_numpy().argmax())
        raise _row_error(source, i, f"t is {df['t'].iloc[i]} (negative); tonnes must be >= 0")
    back = df["year_to"] < df["year_from"]
    if back.any():
        i = int(back.to_numpy().argmax())
        raise _row_error(
            source,
            i,
            f"year_to {df['year_to'].iloc[i]} is before year_from {df['year_from'].iloc[i]}; "
            "swap them",
        )


def check_supply_table(df: pd.DataFrame, source: str, materials: list[str]) -> pd.DataFrame:
    """Validate a supply file already read into ``supply_id, x, y, material, t, year_from,
    year_to`` (+ optional ``grade``, ``hazardous``); returns it in ``SUPPLY_COLUMNS``."""
    check_window_and_tonnes(df, source, materials, "supply_id")
    out = df.copy()
    if "grade" not in out.columns:
        raise InputDataError(f"{source}: no grade column; add grade (0 unusable … 3 as new)")
    if out["grade"].isna().any():
        i = int(out["grade"].isna().to_numpy().argmax())
        raise _row_error(source, i, "grade is empty; give 0 … 3")
    if "hazardous" in out.columns:
        text = out["hazardous"].astype("string").str.strip().str.lower().fillna("false")
        known = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
        bad = ~text.isin(list(known))
        if bad.any():
            i = int(bad.to_numpy().argmax())
            raise _row_error(
                source, i, f"hazardous {out['hazardous'].iloc[i]!r} is not true/false; fix it"
            )
        out["hazardous"] = text.map(known).astype(bool).to_numpy()
    else:
        out["hazardous"] = False
    for q in ("t_p05", "t_p50", "t_p95"):
        out[q] = out["t"]
    out["source"] = source
    out["supply_id"] = out["supply_id"].astype(str)
    return out[SUPPLY_COLUMNS].reset_index(drop=True)

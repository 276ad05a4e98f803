"""Hubs: places that take material in, hold it from year to year and pass it on later.

In the network a hub is one node per material, grade and year. Arcs: supply → hub in the
supply's first year (transport + handling), hub year y → hub year y + 1 (holding; the
capacity is the most a hub holds of one material and grade from one year to the next),
hub → demand in any year of the site's window, of a grade it accepts (transport −
avoided virgin production). A joint capacity over all materials is a side constraint a
pure network cannot hold (an LP would): not modelled.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from mfa.errors import InputDataError

__all__ = ["HUB_COLUMNS", "HubArcs", "check_hub_table", "hub_arcs"]

#: Columns of a hub table (x/y run CRS m; t; kg CO2e per t; ``materials`` ";"-separated,
#: empty = all).
HUB_COLUMNS = [
    "hub_id",
    "x",
    "y",
    "capacity_t",
    "handling_kgco2e_per_t",
    "holding_kgco2e_per_t_year",
    "materials",
]


def check_hub_table(df: pd.DataFrame, source: str, materials: list[str]) -> pd.DataFrame:
    """Validate a hubs file already read into a table with x, y."""
    out = df.copy()
    for col, default in (("handling_kgco2e_per_t", 0.0), ("holding_kgco2e_per_t_year", 0.0)):
        out[col] = pd.to_numeric(out[col], errors="coerce") if col in out else default
        out[col] = out[col].fillna(default)
    if "capacity_t" not in out.columns:
        raise InputDataError(f"{source}: no capacity_t column; add the tonnes each hub holds")
    cap = pd.to_numeric(out["capacity_t"], errors="coerce")
    bad = ~(cap > 0)
    if bad.any():
        i = int(bad.to_numpy().argmax())
        raise InputDataError(
            f"{source} row {i + 1} (line {i + 2}): hub {out['hub_id'].iloc[i]!r} has no "
            "capacity (capacity_t must be > 0 t); give its capacity or remove the row"
        )
    out["capacity_t"] = cap
    for col in ("handling_kgco2e_per_t", "holding_kgco2e_per_t_year"):
        neg = out[col] < 0
        if neg.any():
            i = int(neg.to_numpy().argmax())
            raise InputDataError(f"{source} row {i + 1} (line {i + 2}): {col} must be >= 0")
    mats = out["materials"] if "materials" in out.columns else pd.Series("", index=out.index)
    mats = mats.astype("string").fillna("").str.replace(" ", "")
    for i, text in enumerate(mats):
        unknown = [m for m in text.split(";") if m and m not in materials]
        if unknown:
            raise InputDataError(
                f"{source} row {i + 1} (line {i + 2}): material {unknown[0]!r} is unknown; "
                f"use some of {materials}, separated by ';'"
            )
    out["materials"] = mats.to_numpy()
    out["hub_id"] = out["hub_id"].astype(str)
    return out[HUB_COLUMNS].reset_index(drop=True)


@dataclass(frozen=True)
class HubArcs:
    """The hub part of the network, numbered from ``first_node``; ``kind`` per arc:
    0 supply → hub, 1 holding, 2 hub → demand; ``end`` the supply row (kind 0) or
    demand row (kind 2); ``hub`` the hub row; ``year`` the year at the hub; ``km``."""

    n_nodes: int
    tails: np.ndarray
    heads: np.ndarray
    capacity_kg: np.ndarray
    cost_g_per_t: np.ndarray
    kind: np.ndarray
    end: np.ndarray
    hub: np.ndarray
    year: np.ndarray
    km: np.ndarray
    avoided_kgco2e_per_t: np.ndarray


def hub_arcs(
    supply: pd.DataFrame,
    demand: pd.DataFrame,
    hubs: pd.DataFrame,
    s_kg: np.ndarray,
    d_kg: np.ndarray,
    sh: tuple[np.ndarray, np.ndarray, np.ndarray],
    hd: tuple[np.ndarray, np.ndarray, np.ndarray],
    kgco2e_per_tkm: float,
    avoided: dict[str, float],
    max_km: float,
    first_node: int,
) -> HubArcs:
    """Arcs of the hubs. ``sh`` = (supply rows, hub rows, km) and ``hd`` = (hub rows,
    demand rows, km) are candidate pairs; rules (material allowed, not hazardous, window,
    grade, haul limit) are applied here."""
    mats = sorted(set(supply["material"]))
    grades = sorted(set(supply["grade"].astype(int)))
    years = np.arange(
        int(min(supply["year_from"].min(), demand["year_from"].min())),
        int(max(supply["year_to"].max(), demand["year_to"].max())) + 1,
    )
    n_h, n_m, n_g, n_y = len(hubs), len(mats), len(grades), len(years)

    def node(h, m, g, y):
        return first_node + ((h * n_m + m) * n_g + g) * n_y + (y - years[0])

    # hub × material: may the hub take it (an empty list allows all)
    lists = [set(t.split(";")) - {""} for t in hubs["materials"]]
    allow = np.array([[not ls or m in ls for m in mats] for ls in lists], dtype=bool)
    allow = allow.reshape(n_h, n_m)
    mat_index = pd.Index(mats)

    def ok_mat(h: np.ndarray, mat: np.ndarray) -> np.ndarray:
        m = mat_index.get_indexer(mat)
        return (m >= 0) & allow[h, np.maximum(m, 0)]

    # supply → hub, in the supply's first year
    s, h, km = sh
    s_mat = supply["material"].to_numpy()[s]
    keep = (
        ~supply["hazardous"].to_numpy(bool)[s] & (km <= max_km) & np.isfinite(km) & ok_mat(h, s_mat)
    )
    s, h, km, s_mat = s[keep], h[keep], km[keep], s_mat[keep]
    y_in = supply["year_from"].to_numpy()[s].astype(int)
    m_i = mat_index.get_indexer(s_mat).astype(np.int64)
    g_i = pd.Index(grades).get_indexer(supply["grade"].to_numpy().astype(int)[s]).astype(np.int64)
    handling = hubs["handling_kgco2e_per_t"].to_numpy(float)[h]
    a0 = (
        s,
        node(h, m_i, g_i, y_in),
        s_kg[s],
        np.rint((km * kgco2e_per_tkm + handling) * 1000).astype(np.int64),
        s,
        h,
        y_in,
        km,
        np.zeros(len(s)),
    )
    # holding: year y → y + 1
    hh, mm, gg, yy = (
        a.ravel()
        for a in np.meshgrid(
            np.arange(n_h), np.arange(n_m), np.arange(n_g), years[:-1], indexing="ij"
        )
    )
    cap = np.rint(hubs["capacity_t"].to_numpy(float)[hh] * 1000).astype(np.int64)
    hold = np.rint(hubs["holding_kgco2e_per_t_year"].to_numpy(float)[hh] * 1000).astype(np.int64)
    a1 = (
        node(hh, mm, gg, yy),
        node(hh, mm, gg, yy + 1),
        cap,
        hold,
        np.full(len(hh), -1),
        hh,
        yy,
        np.zeros(len(hh)),
        np.zeros(len(hh)),
    )
    # hub → demand, every year of the window, every grade it accepts
    h2, d, km2 = hd
    d_mat = demand["material"].to_numpy()[d]
    limit = np.fmin(demand["max_km"].to_numpy(float)[d], max_km)
    keep = (km2 <= limit) & np.isfinite(km2) & ok_mat(h2, d_mat)
    h2, d, km2, d_mat = h2[keep], d[keep], km2[keep], d_mat[keep]
    parts = []
    for gi, g in enumerate(grades):
        for y in years:
            sel = (
                (demand["min_grade"].to_numpy()[d] <= g)
                & (demand["year_from"].to_numpy()[d] <= y)
                & (demand["year_to"].to_numpy()[d] >= y)
            )
            if not sel.any():
                continue
            hs, ds, ks, ms = h2[sel], d[sel], km2[sel], d_mat[sel]
            av = pd.Series(ms).map(avoided).to_numpy(dtype=float)
            m_i = mat_index.get_indexer(ms).astype(np.int64)
            parts.append(
                (
                    node(hs, m_i, gi, y),
                    ds,
                    d_kg[ds],
                    np.rint((ks * kgco2e_per_tkm - av) * 1000).astype(np.int64),
                    ds,
                    hs,
                    np.full(len(ds), y),
                    ks,
                    av,
                )
            )
    n_s = len(supply)
    if parts:
        cat = [np.concatenate([p[i] for p in parts]) for i in range(9)]
        cat[1] = n_s + cat[1]  # demand node numbers
        a2 = tuple(cat)
    else:
        e = np.zeros(0, np.int64)
        a2 = (e, e, e, e, e, e, e, np.zeros(0), np.zeros(0))
    arcs = [a0, a1, a2]
    col = [np.concatenate([np.asarray(a[i]) for a in arcs]) for i in range(9)]
    kind = np.concatenate([np.full(len(a[0]), k) for k, a in enumerate(arcs)])
    return HubArcs(
        n_h * n_m * n_g * n_y,
        col[0].astype(np.int64),
        col[1].astype(np.int64),
        col[2].astype(np.int64),
        col[3].astype(np.int64),
        kind,
        col[4].astype(np.int64),
        col[5].astype(np.int64),
        col[6].astype(np.int64),
        col[7].astype(float),
        col[8].astype(float),
    )

"""Hubs: places that take material in, hold it from year to year and pass it on later.

In the network a hub is one node per material, grade and year. Arcs: supply → hub in the
supply's first year (transport + handling), hub year y → hub year y + 1 (holding), hub →
demand in any year of the site's window, of a grade it accepts (transport − avoided virgin
production). ``capacity_t`` is the most a hub holds from one year to the next, all
materials and grades together: a joint capacity, one side constraint per hub and year
over its holding arcs (:class:`mfa.match.network.Network` ``joint``). Where a hub holds
only one material and grade the constraint is the arc's own capacity and the min-cost
flow stays exact; otherwise the allocation is a linear program (HiGHS).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from mfa.errors import InputDataError
from mfa.match.costs import by_material
from mfa.match.params import MatchParams

__all__ = ["HUB_COLUMNS", "HubArcs", "check_hub_table", "held_kg_years", "hub_arcs"]

#: Columns of a hub table (x/y run CRS m; t; kg CO2e per t; DKK per t; ``materials``
#: ";"-separated, empty = all).
HUB_COLUMNS = [
    "hub_id",
    "x",
    "y",
    "capacity_t",
    "handling_kgco2e_per_t",
    "holding_kgco2e_per_t_year",
    "handling_dkk_per_t",
    "holding_dkk_per_t_year",
    "materials",
]
_PRICES = HUB_COLUMNS[4:8]


def check_hub_table(
    df: pd.DataFrame,
    source: str,
    materials: list[str],
    handling_dkk_per_t: float = 0.0,
    holding_dkk_per_t_year: float = 0.0,
) -> pd.DataFrame:
    """Validate a hubs file already read into a table with x, y. A missing or empty price
    is 0 kg CO2e, or the given DKK default (``config/match.toml`` [cost])."""
    out = df.copy()
    defaults = (0.0, 0.0, handling_dkk_per_t, holding_dkk_per_t_year)
    for col, default in zip(_PRICES, defaults, strict=True):
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
    for col in _PRICES:
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
    """The hub part of the network, numbered from ``first_node``. Per arc: ``kind`` 0
    supply → hub, 1 holding, 2 hub → demand; ``end`` the supply row (kind 0) or demand
    row (kind 2); ``hub`` the hub row; ``year`` the year at the hub; ``km``; the net
    ``co2_per_t`` (kg CO2e) and ``dkk_per_t`` of a tonne on it, and what it avoids
    (``avoided_kgco2e_per_t``, ``avoided_dkk_per_t``). ``group`` numbers the holding
    arcs of one hub and year (−1 for the others); ``group_capacity_kg`` is each group's
    joint capacity; ``line`` numbers the hub × material × grade line an arc enters,
    leaves or stays on (its holding costs are those of its hub)."""

    n_nodes: int
    tails: np.ndarray
    heads: np.ndarray
    capacity_kg: np.ndarray
    co2_per_t: np.ndarray
    dkk_per_t: np.ndarray
    kind: np.ndarray
    end: np.ndarray
    hub: np.ndarray
    year: np.ndarray
    km: np.ndarray
    avoided_kgco2e_per_t: np.ndarray
    avoided_dkk_per_t: np.ndarray
    group: np.ndarray
    group_capacity_kg: np.ndarray
    line: np.ndarray


_FIELDS = (
    "tails",
    "heads",
    "capacity_kg",
    "co2_per_t",
    "dkk_per_t",
    "end",
    "hub",
    "year",
    "km",
    "avoided_kgco2e_per_t",
    "avoided_dkk_per_t",
    "group",
    "line",
)


def hub_arcs(
    supply: pd.DataFrame,
    demand: pd.DataFrame,
    hubs: pd.DataFrame,
    s_kg: np.ndarray,
    d_kg: np.ndarray,
    sh: tuple[np.ndarray, np.ndarray, np.ndarray],
    hd: tuple[np.ndarray, np.ndarray, np.ndarray],
    params: MatchParams,
    max_km: float,
    first_node: int,
) -> HubArcs:
    """Arcs of the hubs. ``sh`` = (supply rows, hub rows, km) and ``hd`` = (hub rows,
    demand rows, km) are candidate pairs; rules (material allowed, not hazardous, window,
    grade, haul limit) are applied here. Arcs exist only on the hub × material × grade
    lines that some supply can enter and some site can draw from (the others carry
    nothing), so a hub whose supply shares no line stays a pure network."""
    mats = sorted(set(supply["material"]))
    grades = sorted(set(supply["grade"].astype(int)))
    years = np.arange(
        int(min(supply["year_from"].min(), demand["year_from"].min())),
        int(max(supply["year_to"].max(), demand["year_to"].max())) + 1,
    )
    n_h, n_m, n_g, n_y = len(hubs), len(mats), len(grades), len(years)

    def line(h, m, g):
        return (h * n_m + m) * n_g + g

    def node(h, m, g, y):
        return first_node + line(h, m, g) * n_y + (y - years[0])

    # hub × material: may the hub take it (an empty list allows all)
    lists = [set(t.split(";")) - {""} for t in hubs["materials"]]
    allow = np.array([[not ls or m in ls for m in mats] for ls in lists], dtype=bool)
    allow = allow.reshape(n_h, n_m)
    mat_index, grade_index = pd.Index(mats), pd.Index(grades)

    def ok_mat(h: np.ndarray, mat: np.ndarray) -> np.ndarray:
        m = mat_index.get_indexer(mat)
        return (m >= 0) & allow[h, np.maximum(m, 0)]

    price = {c: hubs[c].to_numpy(float) for c in _PRICES}
    eol = params.end_of_life_dkk_per_t

    # hub → demand candidates (the years come below): which lines can pass material on
    h2, d, km2 = hd
    d_mat = demand["material"].to_numpy()[d]
    limit = np.fmin(demand["max_km"].to_numpy(float)[d], max_km)
    keep = (km2 <= limit) & np.isfinite(km2) & ok_mat(h2, d_mat)
    h2, d, km2, d_mat = h2[keep], d[keep], km2[keep], d_mat[keep]
    d_m = np.maximum(mat_index.get_indexer(d_mat), 0)
    passes = np.zeros(n_h * n_m * n_g, dtype=bool)
    for gi, g in enumerate(grades):
        passes[line(h2, d_m, gi)[demand["min_grade"].to_numpy()[d] <= g]] = True

    # supply → hub, in the supply's first year: the tonne escapes its end-of-life fee
    s, h, km = sh
    s_mat = supply["material"].to_numpy()[s]
    keep = (
        ~supply["hazardous"].to_numpy(bool)[s]
        & (s_kg[s] > 0)
        & (km <= max_km)
        & np.isfinite(km)
        & ok_mat(h, s_mat)
    )
    s, h, km, s_mat = s[keep], h[keep], km[keep], s_mat[keep]
    m_i = mat_index.get_indexer(s_mat).astype(np.int64)
    g_i = grade_index.get_indexer(supply["grade"].to_numpy().astype(int)[s]).astype(np.int64)
    keep = passes[line(h, m_i, g_i)]  # a line no site can draw from takes nothing in
    s, h, km, s_mat, m_i, g_i = s[keep], h[keep], km[keep], s_mat[keep], m_i[keep], g_i[keep]
    y_in = supply["year_from"].to_numpy()[s].astype(int)
    eol_in = by_material(eol, s_mat)
    zero = np.zeros(len(s))
    a0 = (
        s,
        node(h, m_i, g_i, y_in),
        s_kg[s],
        km * params.kgco2e_per_tkm + price["handling_kgco2e_per_t"][h],
        km * params.dkk_per_tkm + price["handling_dkk_per_t"][h] - eol_in,
        s,
        h,
        y_in,
        km,
        zero,
        eol_in,
        np.full(len(s), -1),
        line(h, m_i, g_i),
    )
    # the lines in use: some supply enters them and some site draws from them
    live = np.zeros(n_h * n_m * n_g, dtype=bool)
    live[line(h, m_i, g_i)] = True

    # holding: year y → y + 1, on the live lines; one joint capacity per hub and year
    hh, mm, gg, yy = (
        a.ravel()
        for a in np.meshgrid(
            np.arange(n_h), np.arange(n_m), np.arange(n_g), years[:-1], indexing="ij"
        )
    )
    on = live[line(hh, mm, gg)]
    hh, mm, gg, yy = hh[on], mm[on], gg[on], yy[on]
    cap_kg = np.rint(hubs["capacity_t"].to_numpy(float) * 1000).astype(np.int64)
    none = np.zeros(len(hh))
    a1 = (
        node(hh, mm, gg, yy),
        node(hh, mm, gg, yy + 1),
        cap_kg[hh],
        price["holding_kgco2e_per_t_year"][hh],
        price["holding_dkk_per_t_year"][hh],
        np.full(len(hh), -1),
        hh,
        yy,
        none,
        none,
        none,
        hh * max(n_y - 1, 1) + (yy - years[0]),
        line(hh, mm, gg),
    )

    # hub → demand, every year of the window, every grade it accepts: the virgin product
    parts = []
    for gi, g in enumerate(grades):
        for y in years:
            sel = (
                (demand["min_grade"].to_numpy()[d] <= g)
                & (demand["year_from"].to_numpy()[d] <= y)
                & (demand["year_to"].to_numpy()[d] >= y)
            )
            sel &= live[line(h2, d_m, gi)]
            if not sel.any():
                continue
            hs, ds, ks, ms = h2[sel], d[sel], km2[sel], d_mat[sel]
            av = by_material(params.avoided_kgco2e_per_t, ms)
            vp = by_material(params.virgin_dkk_per_t, ms)
            m_i = mat_index.get_indexer(ms).astype(np.int64)
            parts.append(
                (
                    node(hs, m_i, gi, y),
                    len(supply) + ds,
                    d_kg[ds],
                    ks * params.kgco2e_per_tkm - av,
                    ks * params.dkk_per_tkm - vp,
                    ds,
                    hs,
                    np.full(len(ds), y),
                    ks,
                    av,
                    vp,
                    np.full(len(ds), -1),
                    line(hs, m_i, gi),
                )
            )
    arcs = [a0, a1, *parts]
    col = {f: np.concatenate([np.asarray(a[i]) for a in arcs]) for i, f in enumerate(_FIELDS)}
    kind = np.concatenate(
        [np.zeros(len(a0[0]), np.int64), np.ones(len(a1[0]), np.int64)]
        + [np.full(len(p[0]), 2, np.int64) for p in parts]
    )
    ints = ("tails", "heads", "capacity_kg", "end", "hub", "year", "group", "line")
    return HubArcs(
        n_nodes=n_h * n_m * n_g * n_y,
        kind=kind,
        group_capacity_kg=np.repeat(cap_kg, max(n_y - 1, 1)),
        **{f: v.astype(np.int64 if f in ints else float) for f, v in col.items()},
    )


def held_kg_years(hub: HubArcs, flows: np.ndarray) -> np.ndarray:
    """Per hub arc: the kg·years its tonnes spent at the hub, for the hub → demand arcs
    (kind 2; 0 for the others), first in, first out on each hub × material × grade line.

    A line's nodes balance, so what it holds from year y to y + 1 is what entered up to y
    minus what left up to y, and Σ holding flow = Σ over the tonnes leaving of (year out −
    year in) whichever tonne is taken to leave: first in, first out is one such
    decomposition, never negative (nothing leaves before it entered). Hence Σ of this ×
    a hub's holding price per t·year = the holding arcs' part of the objective, exactly.
    ``flows`` are the hub arcs' flows in kg (int64); the result is in kg·years (int64).
    """
    flows = np.asarray(flows, dtype=np.int64)
    k_in = np.flatnonzero((hub.kind == 0) & (flows > 0))
    k_out = np.flatnonzero((hub.kind == 2) & (flows > 0))
    out = np.zeros(len(flows), dtype=np.int64)
    if not len(k_out):
        return out
    # events sorted by line, then year: the global running sums meet at each line's end
    k_in = k_in[np.lexsort((hub.year[k_in], hub.line[k_in]))]
    k_out = k_out[np.lexsort((hub.year[k_out], hub.line[k_out]))]
    c_in, c_out = np.cumsum(flows[k_in]), np.cumsum(flows[k_out])
    if c_in[-1] != c_out[-1]:
        raise ValueError("hub lines do not balance: what enters a hub must leave it")
    cuts = np.union1d(c_in, c_out)  # the end of every piece carried by one in and one out
    pieces = np.diff(cuts, prepend=0)
    i = k_in[np.searchsorted(c_in, cuts)]
    o = k_out[np.searchsorted(c_out, cuts)]
    held = pieces * (hub.year[o] - hub.year[i])
    np.add.at(out, o, held)
    return out

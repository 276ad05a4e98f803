"""The published shape of a matching: flow lines, tables and a short markdown summary."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from mfa.match.allocate import Allocation

__all__ = [
    "DATE_FIELDS",
    "YEAR_FIELDS",
    "hub_points",
    "match_lines",
    "summary_markdown",
    "totals_by_hub",
    "totals_by_material",
    "with_dates",
]

#: The date fields of a matching's layers (QGIS's temporal range of each feature: from
#: ``date_from`` to ``date_to``, both included) …
DATE_FIELDS = ("date_from", "date_to")
#: … and the year fields they come from, per layer.
YEAR_FIELDS = {
    "matches": ("year_out", "year_in"),
    "supply_fate": ("year_from", "year_to"),
    "demand_coverage": ("year_from", "year_to"),
    "hubs": ("year_from", "year_to"),
}


def match_lines(matches: pd.DataFrame, crs: str) -> gpd.GeoDataFrame:
    """One LineString per used arc, supply point → demand site (run CRS)."""
    coords = np.stack(
        [matches[["x0", "y0"]].to_numpy(float), matches[["x1", "y1"]].to_numpy(float)], axis=1
    )
    geom = shapely.linestrings(coords) if len(matches) else []
    return gpd.GeoDataFrame(matches.drop(columns=["x0", "y0", "x1", "y1"]), geometry=geom, crs=crs)


def with_dates(layer: pd.DataFrame, name: str) -> pd.DataFrame:
    """``layer`` with :data:`DATE_FIELDS`: 31 December of its first and last year
    (:data:`YEAR_FIELDS`), as dates (GeoParquet date32, GeoPackage DATE). A year's date lies
    inside the QGIS frame of that calendar year [1 Jan, next 1 Jan), never on its edge
    (as the run's ``flows.date``), so stepping the temporal controller one year at a time
    shows the rows whose years include that year."""
    out = layer.copy()
    for field, year in zip(DATE_FIELDS, YEAR_FIELDS[name], strict=True):
        years = out[year].astype(int).astype(str)
        out[field] = pd.to_datetime(years + "-12-31", format="%Y-%m-%d").dt.date
    return out


def totals_by_material(a: Allocation) -> pd.DataFrame:
    """Per material: demand, reused and virgin t, tonne-km, transport / handling / holding /
    avoided / net kg CO2e and DKK (the net parts add up to the objective's)."""
    cov = a.coverage.groupby("material")[["t", "matched_t", "virgin_t"]].sum()
    m = a.matches.assign(tkm=a.matches["t"] * a.matches["km"])
    cols = ["tkm"] + [
        f"{part}_{unit}"
        for unit in ("kgco2e", "dkk")
        for part in ("transport", "handling", "holding", "avoided", "net")
    ]
    flows = m.groupby("material")[cols]
    out = cov.join(flows.sum(), how="left").fillna(0.0)
    out = out.rename(columns={"t": "demand_t", "matched_t": "reused_t"})
    out["mean_km"] = np.where(
        out["reused_t"] > 0, out["tkm"] / out["reused_t"].where(out["reused_t"] > 0, 1), np.nan
    )
    return out.reset_index()


def totals_by_hub(a: Allocation) -> pd.DataFrame:
    """Per hub: t taken in and passed on, and the handling (on the way in) and holding (on
    the way out) kg CO2e and DKK of its match rows. Empty without hubs."""
    m = a.matches[a.matches["via_hub"] != ""]
    parts = [f"{p}_{u}" for u in ("kgco2e", "dkk") for p in ("handling", "holding")]
    inn = m[m["demand_id"] == ""].groupby("via_hub")["t"].sum().rename("in_t")
    out = m[m["supply_id"] == ""].groupby("via_hub")["t"].sum().rename("out_t")
    costs = m.groupby("via_hub")[parts].sum()
    tot = pd.concat([inn, out, costs], axis=1).fillna(0.0)
    return tot.rename_axis("hub_id").reset_index()


def hub_points(a: Allocation, hubs: pd.DataFrame, span: tuple[int, int]) -> pd.DataFrame:
    """Per hub of the hub table (used or not, sorted by ``hub_id``): its point ``x``, ``y``
    (run CRS, m), ``capacity_t`` and ``materials``; :func:`totals_by_hub`'s ``in_t``,
    ``out_t`` (t) and handling/holding kg CO2e and DKK; ``peak_held_t``, the most it holds
    from one year to the next (t), ``capacity_use`` = ``peak_held_t`` / ``capacity_t``
    (0…1), and ``held_t_years`` (t·years, what its holding price per t·year is paid on);
    ``year_from``/``year_to``, the first year material enters and the last it leaves
    (``span``, the matching's years, for a hub that takes nothing).

    What a hub holds from year y to y + 1 is the tonnes that entered up to y minus those
    that left up to y (its lines balance: :func:`mfa.match.hubs.held_kg_years`), from the
    match rows in whole kg: a supply → hub row enters in ``year_in``, a hub → demand row
    leaves in ``year_in``."""
    m = a.matches[a.matches["via_hub"] != ""]
    kg = np.rint(m["t"].to_numpy(float) * 1000.0).astype(np.int64)
    entering = (m["demand_id"] == "").to_numpy()
    year = m["year_in"].to_numpy(np.int64)
    ids = hubs["hub_id"].astype(str).to_numpy()
    order = np.argsort(ids, kind="stable")
    ids = ids[order]
    h = np.searchsorted(ids, m["via_hub"].astype(str).to_numpy())
    y0 = int(year.min()) if len(year) else span[0]
    n_y = int(year.max()) - y0 + 1 if len(year) else 1
    change = np.zeros((len(ids), n_y), dtype=np.int64)  # kg entering − leaving, per year
    np.add.at(change, (h, year - y0), np.where(entering, kg, -kg))
    held = np.cumsum(change, axis=1)  # kg held from year y to y + 1
    cap = hubs["capacity_t"].to_numpy(float)[order]
    first = np.full(len(ids), span[0], dtype=np.int64)
    last = np.full(len(ids), span[1], dtype=np.int64)
    used = np.bincount(h, minlength=len(ids)) > 0
    if used.any():
        lo = pd.Series(year).groupby(h).min()
        hi = pd.Series(year).groupby(h).max()
        first[lo.index], last[hi.index] = lo.to_numpy(), hi.to_numpy()
    out = pd.DataFrame(
        {
            "hub_id": ids,
            "x": hubs["x"].to_numpy(float)[order],
            "y": hubs["y"].to_numpy(float)[order],
            "capacity_t": cap,
            "materials": hubs["materials"].astype(str).to_numpy()[order],
            "peak_held_t": held.max(axis=1).clip(min=0) / 1000.0,
            "held_t_years": held.sum(axis=1) / 1000.0,
            "year_from": first,
            "year_to": last,
        }
    )
    out["capacity_use"] = out["peak_held_t"] / cap
    tot = totals_by_hub(a).set_index("hub_id").reindex(ids).fillna(0.0).reset_index()
    cols = ["hub_id", "x", "y", "capacity_t", "materials", "in_t", "out_t", "peak_held_t"]
    cols += ["capacity_use", "held_t_years"]
    cols += [c for c in tot.columns if c not in cols] + ["year_from", "year_to"]
    return out.merge(tot, on="hub_id", how="left")[cols]


def summary_markdown(
    a: Allocation,
    sensitivity: pd.DataFrame,
    title: str,
    notes: list[str],
    hubs: pd.DataFrame | None = None,
) -> str:
    """The summary a student reads first: what is reused, how far, the CO2 balance, and how
    reuse changes with the haul limit. ``hubs`` (:func:`hub_points`) lists every hub with
    its peak held tonnes and capacity use; without it the hubs used are listed."""
    tot = totals_by_material(a)
    lines = [f"# {title}", ""]
    reused, demand = tot["reused_t"].sum(), tot["demand_t"].sum()
    lines.append(
        f"{reused:,.1f} t of {demand:,.1f} t demanded come from reuse "
        f"({reused / demand:.0%} of demand); net {a.objective_kgco2e:,.0f} kg CO2e and "
        f"{a.objective_dkk:,.0f} DKK (negative = saved against virgin material and end of "
        "life)."
        if demand > 0
        else "No demand."
    )
    w_co2, w_cost = a.weights
    what = (
        "net CO2 only"
        if w_cost == 0
        else "net cost only"
        if w_co2 == 0
        else f"1 DKK weighs as much as {w_cost / w_co2:g} kg CO2e"
    )
    lines.append(
        f"Objective: minimise {w_co2:g} × kg CO2e + {w_cost:g} × DKK ({what}); "
        f"optimum {a.objective:,.0f}."
    )
    if reused == 0 and demand > 0:
        lines.append(
            "Nothing is reused: no supply of the same material, window and grade lies within "
            "the haul limit of any site (see supply_fate.csv and the sensitivity below)."
        )
    hubs = totals_by_hub(a) if hubs is None or not len(hubs) else hubs
    peak = "peak_held_t" in hubs.columns
    hub_head = " hub handling + holding kg CO2e |" if len(hubs) else ""
    lines += [
        "",
        "| material | demand t | reused t | virgin t | mean km "
        f"| transport kg CO2e |{hub_head} avoided kg CO2e | net kg CO2e | net DKK |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|" + ("---:|" if len(hubs) else ""),
    ]
    for r in tot.itertuples(index=False):
        km = "–" if not np.isfinite(r.mean_km) else f"{r.mean_km:.1f}"
        at_hub = f" {r.handling_kgco2e + r.holding_kgco2e:,.0f} |" if len(hubs) else ""
        lines.append(
            f"| {r.material} | {r.demand_t:,.1f} | {r.reused_t:,.1f} | {r.virgin_t:,.1f} | {km} "
            f"| {r.transport_kgco2e:,.0f} |{at_hub} {r.avoided_kgco2e:,.0f} "
            f"| {r.net_kgco2e:,.0f} | {r.net_dkk:,.0f} |"
        )
    if len(hubs):
        lines += [
            "",
            "Hubs (handling is paid on the way in, holding by the tonnes leaving, for the "
            "years they stayed):",
            "",
            "| hub | in t | out t |"
            + (" peak held t | capacity use |" if peak else "")
            + " handling kg CO2e | holding kg CO2e | handling DKK | holding DKK |",
            "|---|---:|---:|" + ("---:|---:|" if peak else "") + "---:|---:|---:|---:|",
        ]
        for r in hubs.itertuples(index=False):
            held = f" {r.peak_held_t:,.1f} | {r.capacity_use:.0%} |" if peak else ""
            lines.append(
                f"| {r.hub_id} | {r.in_t:,.1f} | {r.out_t:,.1f} |{held} {r.handling_kgco2e:,.0f} "
                f"| {r.holding_kgco2e:,.0f} | {r.handling_dkk:,.0f} | {r.holding_dkk:,.0f} |"
            )
    if len(sensitivity):
        lines += [
            "",
            "Sensitivity to the haul limit:",
            "",
            "| haul limit km | reused t | net kg CO2e | net DKK |",
            "|---:|---:|---:|---:|",
        ]
        for r in sensitivity.itertuples(index=False):
            lines.append(
                f"| {r.max_km:g} | {r.reused_t:,.1f} | {r.net_kgco2e:,.0f} | {r.net_dkk:,.0f} |"
            )
    from_supply = a.matches["supply_id"] != ""  # hub → demand legs are counted at the supply
    robust = a.matches["t"][a.matches["robust"] & from_supply].sum()
    lines += [
        "",
        f"{robust:,.1f} t of the reused tonnes still hold with the p05 supply (`robust`).",
        *[f"- {n}" for n in notes],
        "",
    ]
    return "\n".join(lines)

"""``match_run``: validate → read → pure steps → (optionally) write."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from mfa.errors import InputDataError
from mfa.io.files import sha256_file
from mfa.match.allocate import Allocation, allocate
from mfa.match.demand import check_demand_table
from mfa.match.distances import pairs_within, road_km
from mfa.match.outputs import (
    hub_points,
    match_lines,
    summary_markdown,
    totals_by_material,
    with_dates,
)
from mfa.match.supply import check_supply_table, run_supply, supply_columns

__all__ = ["MatchResult", "match_run"]


@dataclass(frozen=True)
class MatchResult:
    """The allocation, the sensitivity to the haul limit, the summary, ``match.json``'s
    record, the folder written (or None) and the hubs (:func:`hub_points`; no rows
    without ``--hubs``)."""

    allocation: Allocation
    sensitivity: pd.DataFrame
    summary: str
    manifest: dict
    out: Path | None
    hubs: pd.DataFrame = field(default_factory=pd.DataFrame)


def match_run(
    run_dir: str | Path,
    demand: str | Path,
    supply_files: tuple[str | Path, ...] = (),
    years: tuple[int, int] | None = None,
    max_km: float | None = None,
    network: str | Path | None = None,
    unit: str = "grid",
    cell_size_m: float = 250.0,
    scenario: str = "baseline",
    solver: str = "ortools",
    config_dir: str | Path = "config",
    out: str | Path | None = None,
    cache_dir: str | Path | None = None,
    hubs: str | Path | None = None,
    weights: tuple[float, float] | None = None,
) -> MatchResult:
    """Match a run's expected outflows (and ``supply_files``) to the ``demand`` sites.

    ``years`` (first, last) bounds the run's supply (default: the demand's windows after the
    run's base year); ``max_km`` the haul limit (default ``config/match.toml``);
    ``network`` an OSM XML extract or a road line layer (GeoJSON, GeoPackage, GeoParquet…
    of LineStrings in a projected CRS) for road km (else straight line × detour factor);
    ``hubs`` a file of hubs (``hub_id, x, y, capacity_t, handling_kgco2e_per_t,
    holding_kgco2e_per_t_year, handling_dkk_per_t, holding_dkk_per_t_year, materials``);
    ``weights`` (per kg CO2e, per DKK) what is minimised (default ``config/match.toml``
    [objective], (1, 0): net CO2).
    Writes into ``out`` when given (never inside the run folder).
    """
    from mfa.io.match import load_match_params, load_road_network, read_sites, write_match_outputs
    from mfa.io.tables import load_materials
    from mfa.query import outflow_factors, run_draws, run_manifest

    t0 = time.perf_counter()
    run = Path(run_dir)
    manifest = run_manifest(run)
    cfg = Path(config_dir)
    materials = load_materials(cfg / "materials.toml")
    w_co2, w_cost = weights if weights is not None else (None, None)
    params = load_match_params(
        cfg / "match.toml", materials, max_km=max_km, co2_weight=w_co2, cost_weight=w_cost
    )
    crs = manifest["crs"]
    if "flows" not in manifest or not manifest["flows"]:
        raise InputDataError(f"{run}: the run has no [dynamics], so no outflows to match")
    base = manifest["flows"]["base_year"]

    dem_path = Path(demand)
    dem_raw = read_sites(dem_path, crs, "demand_id")
    b, bx, by = _run_buildings(run, manifest, materials, unit)
    reach = max(params.max_km, *params.sensitivity_km) * 1000.0
    extent = (bx.min() - reach, by.min() - reach, bx.max() + reach, by.max() + reach)
    dem = check_demand_table(dem_raw, str(dem_path), materials, extent)

    if years is None:
        first = max(int(dem["year_from"].min()), base + 1)
        last = max(int(dem["year_to"].max()), first)
    else:
        first, last = years
        if last < first:
            raise InputDataError(f"--years {first}-{last}: the first year comes after the last")
    spans = [(y, y) for y in range(first, last + 1)]
    factors = outflow_factors(b, manifest, scenario, spans)
    shares = {y: f for (y, _), f in zip(spans, factors, strict=True)}
    archetypes, draws, _ = run_draws(manifest) if unit != "building" else (None, None, None)
    sup = run_supply(
        b, bx, by, shares, materials, unit, params.run_grade, cell_size_m, archetypes, draws
    )
    for f in supply_files:
        extra = check_supply_table(read_sites(Path(f), crs, "supply_id"), str(f), materials)
        sup = pd.concat([sup, extra], ignore_index=True)
    dup = sup["supply_id"].duplicated() & sup.duplicated(["supply_id", "material"])
    if dup.any():
        raise InputDataError(
            f"supply id {sup['supply_id'][dup].iloc[0]!r} appears twice (run and a supply "
            "file, or two files); give the file's rows other ids"
        )

    limit_km = max(params.max_km, *params.sensitivity_km)  # the largest limit solved
    net = None
    if network is not None:
        net = load_road_network(
            Path(network), crs, Path(cache_dir) if cache_dir else None, params.line_snap_m
        )

    def distances(a: pd.DataFrame, b: pd.DataFrame, b_name: str, fallback: bool):
        ax, ay = a["x"].to_numpy(float), a["y"].to_numpy(float)
        bx, by = b["x"].to_numpy(float), b["y"].to_numpy(float)
        if net is None:
            i, j, straight = pairs_within(ax, ay, bx, by, limit_km * 1000.0 / params.detour_factor)
            return (
                i,
                j,
                straight / 1000.0 * params.detour_factor,
                np.full(len(i), "straight_detour", dtype=object),
            )
        i, j, straight = pairs_within(ax, ay, bx, by, limit_km * 1000.0)
        km, on_net = road_km(
            net, ax, ay, bx, by, i, j, limit_km * 1000.0, params.max_snap_m, b_name
        )
        off = ~on_net
        km[off] = straight[off] / 1000.0 * params.detour_factor if fallback else np.nan
        return i, j, km, np.where(on_net, "road", "straight_detour").astype(object)

    si, di, km, kind = distances(sup, dem, str(dem_path), fallback=True)
    hub_arg = None
    if hubs is not None:
        from mfa.match.hubs import check_hub_table

        hub_df = check_hub_table(
            read_sites(Path(hubs), crs, "hub_id", ("capacity_t",)),
            str(hubs),
            materials,
            params.hub_handling_dkk_per_t,
            params.hub_holding_dkk_per_t_year,
        )
        s_h, h_s, km_sh, _ = distances(sup, hub_df, str(hubs), fallback=False)
        h_d, d_h, km_hd, _ = distances(hub_df, dem, str(dem_path), fallback=False)
        hub_arg = (
            hub_df,
            (s_h, h_s, km_sh),
            (h_d, d_h, km_hd),
            "road" if net is not None else "straight_detour",
        )

    alloc = allocate(sup, dem, si, di, km, kind, params, solver=solver, hubs=hub_arg)
    span = (
        int(min(sup["year_from"].min(), dem["year_from"].min())),
        int(max(sup["year_to"].max(), dem["year_to"].max())),
    )
    hub_pts = hub_points(alloc, hub_arg[0], span) if hub_arg is not None else pd.DataFrame()
    rows = []
    for k in params.sensitivity_km:
        a_k = (
            alloc
            if k == params.max_km
            else allocate(sup, dem, si, di, km, kind, params, k, solver, hub_arg)
        )
        rows.append(
            {
                "max_km": k,
                "reused_t": a_k.coverage["matched_t"].sum(),
                "net_kgco2e": a_k.objective_kgco2e,
                "net_dkk": a_k.objective_dkk,
            }
        )
    sens = pd.DataFrame(rows, columns=["max_km", "reused_t", "net_kgco2e", "net_dkk"])
    seconds = time.perf_counter() - t0

    notes = [
        f"supply: expected outflow {first}-{last} ({scenario}) of {manifest['pipeline']} run "
        f"{manifest['run_id']} per {unit}, solved at {params.level}"
        + (f", plus {len(supply_files)} supply file(s)" if supply_files else "")
        + (f"; hubs from {Path(hubs).name}" if hubs else ""),
        "distances: "
        + (f"road km on {network}" if network else f"straight line × {params.detour_factor}")
        + f", haul limit {params.max_km:g} km",
        f"{int(sup['hazardous'].sum())} hazardous supply rows (e.g. asbestos) go to end of "
        "life only",
    ]
    title = f"Reuse matching: {Path(demand).name} against {manifest['pipeline']}"
    md = summary_markdown(alloc, sens, title, notes, hub_pts)
    record = {
        "run": {"dir": str(run), "pipeline": manifest["pipeline"], "run_id": manifest["run_id"]},
        "inputs": {
            str(p): sha256_file(Path(p))
            for p in [dem_path, *map(Path, supply_files)]
            + ([Path(network)] if network else [])
            + ([Path(hubs)] if hubs else [])
        },
        "parameters": params.model_dump(),
        "unit": unit,
        "cell_size_m": cell_size_m,
        "scenario": scenario,
        "years": [first, last],
        "solver": alloc.solver,
        "weights": {"co2_per_kgco2e": params.co2_weight, "cost_per_dkk": params.cost_weight},
        "objective": alloc.objective,
        "objective_kgco2e": alloc.objective_kgco2e,
        "objective_dkk": alloc.objective_dkk,
        "balance_residual_kg": alloc.balance_residual_kg,
        "rows": {
            "supply": len(sup),
            "demand": len(dem),
            "arcs": alloc.n_arcs,
            "matches": len(alloc.matches),
        },
        "totals": totals_by_material(alloc).to_dict(orient="records"),
        "hubs": hub_pts.to_dict(orient="records"),
        "sensitivity": sens.to_dict(orient="records"),
        "seconds": round(seconds, 2),
    }
    written = None
    if out is not None:
        lines = match_lines(alloc.matches, crs)
        fate = alloc.supply_fate
        import geopandas as gpd

        cov = alloc.coverage
        layers = {  # with dates for QGIS's temporal controller (the CSVs keep the years)
            "matches": with_dates(lines, "matches"),
            "supply_fate": gpd.GeoDataFrame(
                with_dates(fate, "supply_fate"),
                geometry=gpd.points_from_xy(fate["x"], fate["y"]),
                crs=crs,
            ),
            "demand_coverage": gpd.GeoDataFrame(
                with_dates(cov, "demand_coverage"),
                geometry=gpd.points_from_xy(cov["x"], cov["y"]),
                crs=crs,
            ),
        }
        if len(hub_pts):
            layers["hubs"] = gpd.GeoDataFrame(
                with_dates(hub_pts, "hubs"),
                geometry=gpd.points_from_xy(hub_pts["x"], hub_pts["y"]),
                crs=crs,
            )
        tables = {
            "matches": lines.drop(columns="geometry"),
            "demand_coverage": alloc.coverage,
            "supply_fate": fate,
            **({"hubs": hub_pts} if len(hub_pts) else {}),
        }
        written = write_match_outputs(Path(out), run, layers, tables, record, md, title)
    return MatchResult(alloc, sens, md, record, written, hub_pts)


def _run_buildings(
    run: Path, manifest: dict, materials: list[str], unit: str
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """The columns of the run's buildings that its supply per ``unit`` is computed from
    (:func:`supply_columns`) and each building's representative point (x, y, m): not the
    layer's other columns, and its footprints only a row group at a time
    (:func:`mfa.query.run_points`). A needed column the layer lacks is a one-line error."""
    from mfa.query import run_points

    path = run / "buildings.parquet"
    needed, optional = supply_columns(materials, unit)
    try:
        names = pq.read_schema(path).names
    except (OSError, ValueError):
        names = None  # missing or damaged: run_points says so
    if names is not None:
        missing = [c for c in needed if c not in names]
        if missing:
            raise InputDataError(
                f"{path}: no column {missing[0]!r}, which the supply per {unit} needs (the "
                "run was made with other materials than config/materials.toml, or by an older "
                "mfa); match with the run's config (config_dir) or re-run its pipeline"
            )
        wanted = set(needed) | {c for c in optional if c in names}
        needed = [c for c in names if c in wanted]  # in the layer's order
    return run_points(run, manifest, "buildings.parquet", needed)

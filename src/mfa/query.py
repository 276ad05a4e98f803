"""What is there, and what comes free, inside an area: answered from a published run.

The query reads only the row groups of ``buildings.parquet`` that can hold buildings of
the area (covering bbox filter, or the district id), keeps the buildings whose
representative point lies inside, and sums their tonnes. Percentiles come from the same
seeded Monte Carlo intensity draws as the run (recomputed from the table, seed and
settings recorded in ``run.json``; the table's checksum must still match). Outflows of a
year range are the expected demolitions of today's buildings under the scenario's
lifetimes (the same conditional survival as ``flows.parquet``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from mfa.dynamics import Lifetime, lifetime
from mfa.dynamics.flows import YearFill
from mfa.errors import ConfigError, InputDataError
from mfa.io.files import sha256_file
from mfa.io.geoparquet import read_layer
from mfa.io.tables import load_intensity_table
from mfa.stocks.intensity import intensity_percentiles
from mfa.stocks.uncertainty import group_percentiles, intensity_draws

__all__ = [
    "QueryResult",
    "area_around",
    "availability",
    "outflow_factor",
    "outflow_share",
    "run_draws",
    "run_manifest",
]


@dataclass(frozen=True)
class QueryResult:
    """The answer: one row per material (and ``mass``) and the contributing buildings."""

    summary: pd.DataFrame
    buildings: gpd.GeoDataFrame
    description: str


def area_around(x: float, y: float, radius_m: float) -> shapely.Geometry:
    """A circle of ``radius_m`` metres around (x, y) in the run's projected CRS."""
    if not (np.isfinite(radius_m) and radius_m > 0):
        raise InputDataError(f"--radius must be a number of metres > 0, got {radius_m}")
    if not (np.isfinite(x) and np.isfinite(y)):
        raise InputDataError(f"the point ({x}, {y}) is not two finite coordinates")
    return shapely.Point(x, y).buffer(radius_m, quad_segs=64)


def outflow_share(
    construction_year: np.ndarray,
    lt: Lifetime,
    base_year: int,
    first_year: int,
    last_year: int,
    extra_demolition_rate: float = 0.0,
) -> np.ndarray:
    """Expected share of each standing building demolished in first_year … last_year.

    Conditional on standing at the end of ``base_year``: S(t) = sf(t − c) / sf(R − c) ×
    (1 − rate)^(t − R); the share is S(first_year − 1) − S(last_year). Overdue cohorts
    (survival 0 at base year) leave in base_year + 1.
    """
    c = np.asarray(construction_year, dtype=float)
    log_now = lt.log_survival_at(base_year - c)

    def remaining(t: int) -> np.ndarray:
        if t <= base_year:
            return np.ones_like(c)
        with np.errstate(invalid="ignore"):
            r = np.exp(lt.log_survival_at(t - c) - log_now)
        r = np.where(np.isfinite(log_now), r, 0.0)
        return r * (1.0 - extra_demolition_rate) ** (t - base_year)

    return remaining(first_year - 1) - remaining(last_year)


def run_draws(manifest: dict) -> tuple[list[str], np.ndarray, list[str]]:
    """The run's archetypes, intensity draws (draws × archetypes × materials, kg/m²) and
    materials, recomputed from the table, seed and settings in ``run.json``."""
    info, unc = manifest["intensities"], manifest["uncertainty"]
    table_path = Path(info["table"])
    if not table_path.is_file():
        raise ConfigError(f"{table_path}: the run's intensity table is gone; re-run the pipeline")
    if sha256_file(table_path) != info["sha256"]:
        raise ConfigError(
            f"{table_path} changed since the run (sha256 differs); re-run the pipeline so "
            "the query's percentiles match its layers"
        )
    overrides = [Path(o["path"]) for o in info.get("overrides", [])]
    materials = info["materials"]
    table = load_intensity_table(table_path, materials, overrides)
    archetypes, pct = intensity_percentiles(table, info["region"], materials)
    return archetypes, intensity_draws(pct, unc["draws"], unc["seed"]), materials


def _scenario(manifest: dict, name: str) -> dict:
    flows = manifest.get("flows") or {}
    for sc in flows.get("scenarios", []):
        if sc["name"] == name:
            return sc
    known = [s["name"] for s in flows.get("scenarios", [])]
    raise InputDataError(
        f"scenario {name!r} is not in this run"
        + (f"; use one of {known}" if known else ": the pipeline has no [dynamics]")
    )


def run_manifest(run: Path) -> dict:
    """The ``run.json`` of a published run folder, or a one-line error."""
    manifest_path = run / "run.json"
    if not manifest_path.is_file():
        raise InputDataError(
            f"{run}: not a run folder (no run.json); pass e.g. outputs/dk-sample/latest"
        )
    try:
        manifest = json.loads(manifest_path.read_text())
        if not isinstance(manifest, dict):
            raise ValueError("not a JSON object")
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InputDataError(
            f"{manifest_path}: unreadable ({exc}); the run folder is damaged: re-run the "
            "pipeline (mfa run ... --force)"
        ) from None
    return manifest


def _check_area(run: Path, path: Path, area: shapely.Geometry, crs: str | None) -> None:
    """An area that misses the run's buildings is a mistake (lon/lat given as metres?)."""
    import pyarrow.parquet as pq

    if area is None or shapely.is_empty(area) or not shapely.is_valid(area):
        raise InputDataError("the area is empty or not a valid polygon; check --within")
    try:
        geo = json.loads(pq.read_schema(path).metadata[b"geo"])
        bbox = geo["columns"][geo["primary_column"]]["bbox"]
    except (KeyError, TypeError, ValueError, OSError):
        return  # no extent recorded: the query answers as it can
    if not shapely.intersects(area, shapely.box(*bbox)):
        x0, y0, x1, y1 = shapely.bounds(area)
        raise InputDataError(
            f"the area ({x0:,.0f}, {y0:,.0f} … {x1:,.0f}, {y1:,.0f}) lies outside the run's "
            f"buildings ({bbox[0]:,.0f}, {bbox[1]:,.0f} … {bbox[2]:,.0f}, {bbox[3]:,.0f}, "
            f"{crs}); coordinates are metres in that CRS: for lon/lat use --around-lonlat"
        )


def _check_districts(run: Path, districts: list[str]) -> None:
    """Unknown district ids are an error naming some known ones (not an answer of 0 t)."""
    layer = run / "districts.parquet"
    if not layer.is_file():
        return
    known = pd.read_parquet(layer, columns=["district_id"])["district_id"].astype(str)
    unknown = sorted(set(districts) - set(known))
    if unknown:
        sample = ", ".join(sorted(known)[:5])
        raise InputDataError(
            f"district(s) {', '.join(unknown)} not in this run ({len(known)} districts: "
            f"{sample}, …); see districts.parquet or the QGIS project for the ids"
        )


def availability(
    run_dir: str | Path,
    area: shapely.Geometry | None = None,
    districts: list[str] | None = None,
    materials: list[str] | None = None,
    years: tuple[int, int] | None = None,
    scenario: str = "baseline",
) -> QueryResult:
    """Material availability inside ``area`` (run CRS) or in ``districts``.

    Without ``years``: the standing stock. With ``years`` (first, last): the expected
    outflow (demolition) of today's buildings in those years under ``scenario``.
    """
    run = Path(run_dir)
    manifest = run_manifest(run)
    if (area is None) == (not districts):
        raise InputDataError("give an area (--within / --around) or districts (--district)")
    path = run / "buildings.parquet"
    if not path.is_file():
        raise InputDataError(f"{run}: buildings.parquet is missing; the run folder is damaged")
    if area is not None:
        _check_area(run, path, area, manifest.get("crs"))
    else:
        _check_districts(run, districts or [])
    if area is not None:
        b = read_layer(path, bbox=tuple(shapely.bounds(area)))
        inside = shapely.contains_xy(area, *_xy(b))
        where = "inside the area"
    else:
        b = read_layer(path, filters=[("district_id", "in", list(districts or []))])
        inside = np.ones(len(b), dtype=bool)
        where = f"in district(s) {', '.join(districts or [])}"
    b = b.loc[inside].reset_index(drop=True)
    archetypes, draws, all_materials = run_draws(manifest)
    chosen = materials or all_materials
    unknown = [m for m in chosen if m not in all_materials]
    if unknown:
        raise InputDataError(f"unknown material(s) {unknown}; use some of {all_materials}")
    gfa = b["gfa_m2"].to_numpy(dtype=float)
    factor = np.ones(len(b))
    label = "standing stock"
    if years is not None:
        factor = outflow_factor(b, manifest, scenario, *years)
        label = f"expected outflow {years[0]}-{years[1]} ({scenario})"
    weight = gfa * factor
    a_idx = pd.Index(archetypes).get_indexer(b["archetype_id"].astype(object))
    if (a_idx < 0).any():
        raise ConfigError(
            f"{run}: archetype {b['archetype_id'][a_idx < 0].iloc[0]!r} has no intensities "
            "in the run's table; re-run the pipeline"
        )
    floor = np.zeros((1, len(archetypes)))  # one group: the queried buildings
    np.add.at(floor, (0, a_idx), weight)
    q = tuple(manifest["uncertainty"]["percentiles"])
    pct = group_percentiles(floor, draws, all_materials, q)[0].iloc[0]
    rows = []
    for m in [*chosen, "mass"]:
        col = f"{m}_t"
        central = float((b[col].to_numpy(dtype=float) * factor).sum()) if len(b) else 0.0
        if m == "mass" and materials:
            central = float(sum((b[f"{x}_t"].to_numpy(dtype=float) * factor).sum() for x in chosen))
        row = {"material": m, "t": central}
        row.update({f"t_p{round(x):02d}": float(pct[f"{m}_t_p{round(x):02d}"]) for x in q})
        rows.append(row)
    summary = pd.DataFrame(rows)
    if materials:
        summary = summary[summary["material"] != "mass"].reset_index(drop=True)
    keep = [
        "building_id",
        "district_id",
        "archetype_id",
        "construction_year",
        "gfa_m2",
        *[f"{m}_t" for m in chosen],
        "geometry",
    ]
    out = b[keep].copy()
    for m in chosen:
        out[f"{m}_t"] = out[f"{m}_t"] * factor
    out.insert(5, "share", factor)
    desc = (
        f"{label}, {len(b):,} buildings {where} ({manifest['pipeline']}, run {manifest['run_id']})"
    )
    return QueryResult(summary, gpd.GeoDataFrame(out, geometry="geometry", crs=b.crs), desc)


def outflow_factor(
    b: pd.DataFrame, manifest: dict, scenario: str, first: int, last: int
) -> np.ndarray:
    """Per building of a run's ``buildings`` table, the expected share demolished in
    ``first`` … ``last`` under ``scenario`` (lifetimes and base year from ``run.json``).

    Buildings without a construction year take the year the run's flows step gave them
    (its fill, recorded in ``run.json`` as ``flows.year_fill``), so a query's outflows
    equal ``flows.parquet``'s.
    """
    if last < first:
        raise InputDataError(f"years {first}-{last}: the first year comes after the last")
    sc = _scenario(manifest, scenario)
    flows = manifest["flows"]
    base = flows["base_year"]
    if first <= base:
        raise InputDataError(f"years must be after the run's base year {base}")
    lts = {
        f: lifetime(v["kind"], **{k: x for k, x in v.items() if k != "kind"})
        for f, v in flows["lifetimes"].items()
    }
    if "year_fill" not in flows:
        raise ConfigError(
            f"{manifest.get('run_id', 'the run')}: run.json does not say how the flows filled "
            "unknown construction years (a run made before mfa recorded it); re-run the pipeline"
        )
    # the same years as the flows step: its fill of unknown years, recorded in run.json
    fill = YearFill.from_json(flows["year_fill"])
    year = np.minimum(fill.fill(b["archetype_id"], b["construction_year"]), base)
    factor = np.ones(len(b))  # a function without lifetimes: as before, share 1
    for f, lt in lts.items():
        rows = (b["function"] == f).to_numpy()
        if rows.any():
            factor[rows] = outflow_share(
                year[rows],
                lt.scaled(sc["lifetime_factor"]),
                base,
                first,
                last,
                sc["extra_demolition_rate"],
            )
    return factor


def _xy(b: gpd.GeoDataFrame) -> tuple[np.ndarray, np.ndarray]:
    pts = shapely.point_on_surface(b.geometry.values)
    return shapely.get_x(pts), shapely.get_y(pts)

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
    "outflow_factors",
    "outflow_share",
    "run_draws",
    "run_layer",
    "run_manifest",
    "run_points",
]

_DAMAGED = "the run folder is damaged: query another run or re-run its pipeline (mfa run PIPELINE)"


@dataclass(frozen=True)
class QueryResult:
    """The answer: one row per material (and ``mass``) and the contributing buildings."""

    summary: pd.DataFrame
    buildings: gpd.GeoDataFrame
    description: str
    warnings: tuple[str, ...] = ()


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
    try:
        table_path, materials, region = Path(info["table"]), list(info["materials"]), info["region"]
        overrides = [Path(o["path"]) for o in info.get("overrides", [])]
        n_draws, seed = int(unc["draws"]), int(unc["seed"])
    except (KeyError, TypeError, ValueError) as exc:
        raise InputDataError(
            f"run.json: intensities/uncertainty lack {exc} (edited, or written by an older "
            f"mfa); {_DAMAGED}"
        ) from None
    if not table_path.is_file():
        raise ConfigError(f"{table_path}: the run's intensity table is gone; re-run the pipeline")
    if sha256_file(table_path) != info["sha256"]:
        raise ConfigError(
            f"{table_path} changed since the run (sha256 differs); re-run the pipeline so "
            "the query's percentiles match its layers"
        )
    table = load_intensity_table(table_path, materials, overrides)
    archetypes, pct = intensity_percentiles(table, region, materials)
    return archetypes, intensity_draws(pct, n_draws, seed), materials


def _scenario(manifest: dict, name: str) -> dict:
    flows = manifest.get("flows")
    listed = flows.get("scenarios") if isinstance(flows, dict) else None
    scenarios = [sc for sc in listed or [] if isinstance(sc, dict) and "name" in sc]
    for sc in scenarios:
        if sc["name"] == name:
            return sc
    known = [sc["name"] for sc in scenarios]
    raise InputDataError(
        f"scenario {name!r} is not in this run"
        + (f"; use one of {known}" if known else ": the pipeline has no [dynamics]")
    )


# what a query reads from run.json: key → the type it must have
_MANIFEST_KEYS = {"pipeline": str, "run_id": str, "crs": str, "intensities": dict}
_MANIFEST_KEYS |= {"uncertainty": dict}


def run_manifest(run: Path) -> dict:
    """The ``run.json`` of a published run folder, or a one-line error (not a run folder,
    unreadable, or without what a query needs)."""
    manifest_path = Path(run) / "run.json"
    if not manifest_path.is_file():
        raise InputDataError(
            f"{run}: not a run folder (no run.json); pass e.g. outputs/dk-sample/latest"
        )
    try:
        manifest = json.loads(manifest_path.read_text())
        if not isinstance(manifest, dict):
            raise ValueError("not a JSON object")
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InputDataError(f"{manifest_path}: unreadable ({exc}); {_DAMAGED}") from None
    for key, kind in _MANIFEST_KEYS.items():
        if not isinstance(manifest.get(key), kind):
            raise InputDataError(
                f"{manifest_path}: {key!r} is missing or not a {kind.__name__} (edited, or "
                f"written by an older mfa); {_DAMAGED}"
            )
    return manifest


def _run_file(run: Path, manifest: dict, name: str) -> Path:
    """A published file of a run, present and of the size ``run.json`` lists for it (a
    stat, not a hash: a national layer takes seconds to hash), or a one-line error."""
    path = Path(run) / name
    if not path.is_file():
        raise InputDataError(f"{path}: missing; {_DAMAGED}")
    listed = (manifest.get("files") or {}).get(name) or {}
    size = path.stat().st_size
    if (
        isinstance(listed, dict)
        and isinstance(listed.get("bytes"), int)
        and listed["bytes"] != size
    ):
        raise InputDataError(
            f"{path}: {size:,} bytes, run.json lists {listed['bytes']:,} (changed or cut "
            f"off after it was published); {_DAMAGED}"
        )
    return path


def run_layer(
    run: Path, manifest: dict, name: str, **read: object
) -> gpd.GeoDataFrame | pd.DataFrame:
    """A layer of a published run (``read`` as :func:`mfa.io.geoparquet.read_layer`; a
    DataFrame when ``columns`` leaves out the geometry), or a one-line error when it is
    missing, has another size than ``run.json`` lists, or cannot be read."""
    path = _run_file(run, manifest, name)
    try:
        columns = read.get("columns")
        if columns is not None and "geometry" not in columns and "bbox" not in read:  # type: ignore[operator]
            import pyarrow.parquet as pq

            return pq.read_table(path, columns=columns).to_pandas()  # type: ignore[arg-type]
        return read_layer(path, **read)
    except (OSError, ValueError, KeyError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        reason = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise InputDataError(f"{path}: unreadable ({reason}); {_DAMAGED}") from None


def run_points(
    run: Path, manifest: dict, name: str, columns: list[str]
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """``columns`` of a published run's layer and each row's representative point (x, y,
    run CRS, m; :func:`mfa.io.bboxread.read_points`: a row group at a time, so the
    footprints of the whole layer are never held), or the one-line errors of
    :func:`run_layer`. The frame equals ``run_layer(...)[columns]`` row for row."""
    from mfa.io.bboxread import read_points

    path = _run_file(run, manifest, name)
    try:
        table, x, y = read_points(path, columns)
        return table.to_pandas(), x, y
    except (OSError, ValueError, KeyError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        reason = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise InputDataError(f"{path}: unreadable ({reason}); {_DAMAGED}") from None


def _check_area(run: Path, manifest: dict, area: shapely.Geometry, hint: str) -> None:
    """A point, a line or an area that misses the run's buildings is a mistake (lon/lat
    given as metres?), not an answer of 0 t."""
    import pyarrow.parquet as pq

    if area is None or shapely.is_empty(area):
        raise InputDataError("the area is empty; give a polygon or --around X,Y --radius M")
    kind = shapely.get_type_id(area)
    if kind not in (3, 6):  # Polygon, MultiPolygon
        raise InputDataError(
            f"the area is a {area.geom_type}, not a polygon: nothing can lie inside it; give a "
            "polygon, or a point with --around X,Y --radius M"
        )
    if not shapely.is_valid(area):
        reason = shapely.is_valid_reason(area)
        raise InputDataError(f"the area is not a valid polygon ({reason}); fix it in QGIS")
    path = Path(run) / "buildings.parquet"
    try:
        # the file's key-value ``geo`` (a layer written batch by batch holds every batch's
        # bbox there; no Arrow schema with another one is stored: LayerWriter)
        geo = json.loads(pq.read_metadata(path).metadata[b"geo"])
        bbox = geo["columns"][geo["primary_column"]]["bbox"]
    except (KeyError, TypeError, ValueError, OSError):
        return  # no extent recorded: run_layer says what is wrong with the layer
    if not shapely.intersects(area, shapely.box(*bbox)):
        x0, y0, x1, y1 = shapely.bounds(area)
        raise InputDataError(
            f"the area ({x0:,.0f}, {y0:,.0f} … {x1:,.0f}, {y1:,.0f}) lies outside the run's "
            f"buildings ({bbox[0]:,.0f}, {bbox[1]:,.0f} … {bbox[2]:,.0f}, {bbox[3]:,.0f}, "
            f"{manifest['crs']}); {hint}"
        )


def _empty_area(run: Path, manifest: dict, area: shapely.Geometry, hint: str) -> str:
    """Why an area inside the run's extent holds no building: an error when it touches no
    district either (outside what the run covers), else a warning naming the districts it
    touches and how many buildings they hold."""
    d = run_layer(
        run,
        manifest,
        "districts.parquet",
        bbox=tuple(shapely.bounds(area)),
        columns=["district_id", "geometry", "building_count"],
    )
    d = d[shapely.intersects(d.geometry.values, area)]
    if d.empty:
        raise InputDataError(
            f"the area lies outside every district of the run and holds none of its "
            f"buildings ({manifest['crs']}); {hint}"
        )
    names = ", ".join(d["district_id"].astype(str).iloc[:5]) + (", …" if len(d) > 5 else "")
    return (
        f"no building of this run lies inside the area; it touches district(s) {names}, "
        f"which hold {int(d['building_count'].sum()):,} of the run's buildings elsewhere"
    )


def _check_districts(run: Path, manifest: dict, districts: list[str]) -> None:
    """Unknown district ids are an error (not an answer of 0 t) naming the id of a district
    given by its name, else the districts with the most buildings."""
    d = run_layer(
        run,
        manifest,
        "districts.parquet",
        columns=["district_id", "district_name", "building_count"],
    )
    d = d[d["district_id"].astype(str) != "_unassigned"]
    known = d["district_id"].astype(str).to_numpy()
    unknown = [x for x in dict.fromkeys(districts) if x not in set(known)]
    if not unknown:
        return
    names = d["district_name"].astype(str).str.casefold().to_numpy()
    label = {i: f"{i} ({n})" for i, n in zip(known, d["district_name"].astype(str), strict=True)}
    guesses = [label[i] for x in unknown for i in known[names == x.strip().casefold()]]
    if guesses:
        hint = "did you mean " + " ".join(f"--district {g}" for g in guesses) + "?"
    else:
        top = d.sort_values("building_count", ascending=False, kind="stable").iloc[:5]
        counts = zip(top["district_id"].astype(str), top["building_count"], strict=True)
        hint = "those with most buildings: " + ", ".join(
            f"{label[i]}: {n:,} buildings" for i, n in counts
        )
    raise InputDataError(
        f"district(s) {', '.join(unknown)} not in this run, which has {len(known)} districts; "
        f"{hint} (all in districts.parquet or the QGIS project)"
    )


def availability(
    run_dir: str | Path,
    area: shapely.Geometry | None = None,
    districts: list[str] | None = None,
    materials: list[str] | None = None,
    years: tuple[int, int] | None = None,
    scenario: str = "baseline",
    area_hint: str = "the area's coordinates must be metres in the run's CRS",
) -> QueryResult:
    """Material availability inside ``area`` (run CRS) or in ``districts``.

    Without ``years``: the standing stock. With ``years`` (first, last): the expected
    outflow (demolition) of today's buildings in those years under ``scenario``.
    An area that is not a polygon, lies outside the run's buildings or outside every
    district, or a district id the run does not have, is an :class:`InputDataError`
    (``area_hint`` ends its message: what the caller may have mixed up); an area inside
    a district that holds none of the run's buildings answers 0 t with a warning.
    """
    run = Path(run_dir)
    manifest = run_manifest(run)
    if area is not None and districts:
        raise InputDataError("give an area (--within / --around) or districts, not both")
    if area is None and not districts:
        raise InputDataError("give an area (--within / --around) or districts (--district)")
    warnings: list[str] = []
    needed = _needed_columns(manifest, materials)
    if area is not None:
        _check_area(run, manifest, area, area_hint)
        box = tuple(shapely.bounds(area))
        b = run_layer(run, manifest, "buildings.parquet", bbox=box, columns=needed)
        b = b.loc[shapely.contains_xy(area, *_xy(b))].reset_index(drop=True)
        if b.empty:
            warnings.append(_empty_area(run, manifest, area, area_hint))
        where = "inside the area"
    else:
        _check_districts(run, manifest, districts or [])
        wanted = [("district_id", "in", list(districts or []))]
        b = run_layer(run, manifest, "buildings.parquet", filters=wanted, columns=needed)
        where = f"in district(s) {', '.join(districts or [])}"
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
    try:
        q = tuple(float(x) for x in manifest["uncertainty"]["percentiles"])
    except (KeyError, TypeError, ValueError):
        raise InputDataError(
            f"run.json: uncertainty.percentiles is not a list of numbers; {_DAMAGED}"
        ) from None
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
    frame = gpd.GeoDataFrame(out, geometry="geometry", crs=b.crs)
    return QueryResult(summary, frame, desc, tuple(warnings))


#: the buildings' columns an answer reads, besides ``<material>_t`` and ``mass_t``
_ANSWER_COLUMNS = [
    "building_id",
    "district_id",
    "function",
    "archetype_id",
    "construction_year",
    "gfa_m2",
]


def _needed_columns(manifest: dict, materials: list[str] | None) -> list[str] | None:
    """The columns of ``buildings.parquet`` a query of ``materials`` (None: the run's)
    reads: of a national layer's 70, the 15 an answer uses (a third of its bytes). None
    (every column) when ``run.json`` lists no materials: the read then says what is
    wrong. Materials the run lacks are not read; the answer says they are unknown."""
    listed = (manifest.get("intensities") or {}).get("materials")
    if not isinstance(listed, list) or not all(isinstance(m, str) for m in listed):
        return None
    chosen = [m for m in (materials or listed) if m in listed]
    return [*_ANSWER_COLUMNS, *(f"{m}_t" for m in chosen), "mass_t", "geometry"]


def outflow_factor(
    b: pd.DataFrame, manifest: dict, scenario: str, first: int, last: int
) -> np.ndarray:
    """Per building of a run's ``buildings`` table, the expected share demolished in
    ``first`` … ``last`` under ``scenario`` (lifetimes and base year from ``run.json``).

    Buildings without a construction year take the year the run's flows step gave them
    (its fill, recorded in ``run.json`` as ``flows.year_fill``), so a query's outflows
    equal ``flows.parquet``'s.
    """
    return outflow_factors(b, manifest, scenario, [(first, last)])[0]


def outflow_factors(
    b: pd.DataFrame, manifest: dict, scenario: str, spans: list[tuple[int, int]]
) -> list[np.ndarray]:
    """:func:`outflow_factor` for each (first, last) of ``spans``: the same arrays, with
    the year fill and each function's rows worked out once for all spans (``function``,
    ``archetype_id`` and ``construction_year`` are the columns read)."""
    for first, last in spans:
        if last < first:
            raise InputDataError(f"years {first}-{last}: the first year comes after the last")
    sc = _scenario(manifest, scenario)
    flows = manifest["flows"]
    if "year_fill" not in flows:
        raise ConfigError(
            f"{manifest.get('run_id', 'the run')}: run.json does not say how the flows filled "
            "unknown construction years (a run made before mfa recorded it); re-run the pipeline"
        )
    try:
        base = int(flows["base_year"])
        lts = {
            f: lifetime(v["kind"], **{k: x for k, x in v.items() if k != "kind"})
            for f, v in flows["lifetimes"].items()
        }
        # the same years as the flows step: its fill of unknown years, recorded in run.json
        fill = YearFill.from_json(flows["year_fill"])
        lifetime_factor, rate = float(sc["lifetime_factor"]), float(sc["extra_demolition_rate"])
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise InputDataError(
            f"run.json: the flows' settings are incomplete ({type(exc).__name__}: {exc}); "
            f"{_DAMAGED}"
        ) from None
    for first, _ in spans:
        if first <= base:
            raise InputDataError(f"years must be after the run's base year {base}")
    year = np.minimum(fill.fill(b["archetype_id"], b["construction_year"]), base)
    function = b["function"]
    groups = []
    for f, lt in lts.items():
        rows = (function == f).to_numpy()
        if rows.any():
            groups.append((rows, year[rows], lt.scaled(lifetime_factor)))
    out = []
    for first, last in spans:
        factor = np.ones(len(b))  # a function without lifetimes: as before, share 1
        for rows, years, lt in groups:
            factor[rows] = outflow_share(years, lt, base, first, last, rate)
        out.append(factor)
    return out


def _xy(b: gpd.GeoDataFrame) -> tuple[np.ndarray, np.ndarray]:
    pts = shapely.point_on_surface(b.geometry.values)
    return shapely.get_x(pts), shapely.get_y(pts)

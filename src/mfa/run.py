"""Run a pipeline: the steps, each path in → path out, and the plain (no-Prefect) runner.

A run works in ``<output root>/<pipeline>/.work/<run_id>/``. Only when every step has
succeeded and every check has passed does :func:`publish` move it to
``<output root>/<pipeline>/<run_id>/`` and switch the ``latest`` link to it, atomically.
A failed or interrupted run never touches ``latest`` or earlier runs.

The Prefect flow in ``flows/pipeline.py`` calls the same step functions as tasks.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pickle
import platform
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow.parquet as pq

import mfa
from mfa.buildings.archetypes import ArchetypeRules
from mfa.buildings.conflate import conflate
from mfa.buildings.quality import area_of_use_bounds, clean_geometries
from mfa.buildings.report import provenance_counts, quality_layer, shares_from_counts
from mfa.config import Pipeline, config_digest, load_pipeline
from mfa.core.kernel import Model
from mfa.core.keys import hash128, later_repeats
from mfa.crs import as_crs
from mfa.dynamics import check_stock_balance
from mfa.dynamics.flows import ScenarioLevers, district_flows, impute_cohort_years
from mfa.engine import Source, check_buildings, finish_buildings, read_sums, rules_model
from mfa.errors import InputDataError, MfaError, PublishError, ValidationError
from mfa.executor import worker_count
from mfa.failpoints import failpoint
from mfa.incremental import run_key, unchanged_run
from mfa.io.districts import read_districts
from mfa.io.files import file_record, fsync_dir
from mfa.io.footprints import buildings_from_footprint_file
from mfa.io.geoparquet import check_geoparquet, read_layer, wkb_type_ids, write_layer
from mfa.io.osm import buildings_from_osm
from mfa.io.qgis import GPKG, PROJECT, LayerGeometry, check_geopackage, write_qgis_outputs
from mfa.io.rasters import check_raster_total, write_cog
from mfa.io.register import buildings_from_register, iter_register, iter_register_ids
from mfa.io.tables import (
    load_archetype_rules,
    load_intensity_table,
    load_lifetimes,
    load_materials,
)
from mfa.parallel import without_cyclic_gc
from mfa.report import failure_markdown, report_markdown
from mfa.schema import check_building_rows, material_columns
from mfa.stocks.aggregate import UNASSIGNED, district_layer
from mfa.stocks.grid import grid_array, grid_layer
from mfa.stocks.intensity import intensity_matrix, intensity_percentiles
from mfa.stocks.uncertainty import (
    floor_matrix,
    group_percentiles,
    intensity_draws,
    percentile_columns,
    unit_quantiles,
)

__all__ = [
    "STEPS",
    "aggregate",
    "build_buildings",
    "discard",
    "estimate_stocks",
    "prepare",
    "publish",
    "qgis_outputs",
    "record_failure",
    "run_pipeline",
]

log = logging.getLogger("mfa")

BUILDINGS = "buildings.parquet"
DISTRICTS = "districts.parquet"
MANIFEST = "run.json"
DROPPED = "dropped.csv"
REPAIRS = "repairs.csv"
QUALITY = "quality.parquet"
GRID = "grid.parquet"
FLOWS = "flows.parquet"
REPORT = "report.md"
FAILURE = "last-failure.md"
#: Left-out records listed in run.json (all of them are in dropped.csv).
MANIFEST_RECORDS = 1_000
#: The run's model (rules, intensities, districts), made once by the buildings step.
MODEL = "model.pickle"
#: The GeoParquet layers that also go into the GeoPackage and the QGIS project, by name.
QGIS_LAYERS = {
    "buildings": BUILDINGS,
    "districts": DISTRICTS,
    "grid": GRID,
    "quality": QUALITY,
    "flows": FLOWS,
}


# --------------------------------------------------------------------------- context


def _ctx(work_dir: Path) -> dict[str, Any]:
    return json.loads((Path(work_dir) / "context.json").read_text())


def _pipeline(work_dir: Path) -> Pipeline:
    return load_pipeline(_ctx(work_dir)["pipeline_file"])


def _report(work_dir: Path, step: str, data: dict[str, Any]) -> None:
    path = Path(work_dir) / "reports" / f"{step}.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=str))


def _materials(p: Pipeline) -> list[str]:
    vocab = p.intensities.vocabulary or p.intensities.table.parent.parent / "materials.toml"
    known = load_materials(vocab)
    chosen = p.intensities.materials or known
    unknown = [m for m in chosen if m not in known]
    if unknown:
        from mfa.errors import ConfigError

        raise ConfigError(
            f"{p.source_file}: key 'intensities.materials': {unknown} not in {vocab}; "
            f"use some of {known}"
        )
    return list(chosen)


def _intensity_draws(p: Pipeline, materials: list[str]) -> tuple[list[str], np.ndarray]:
    """The seeded Monte Carlo intensity draws of the pipeline (archetypes, draws)."""
    table = load_intensity_table(p.intensities.table, materials, p.intensities.overrides)
    archetypes, pct = intensity_percentiles(
        table, p.intensities.region, materials, where=str(p.intensities.table)
    )
    return archetypes, intensity_draws(pct, p.uncertainty.draws, p.uncertainty.seed)


def _central_intensities(p: Pipeline, materials: list[str], archetypes) -> pd.DataFrame:
    """Archetype × material intensities (kg/m²) at the pipeline's statistic."""
    table = load_intensity_table(p.intensities.table, materials, p.intensities.overrides)
    return intensity_matrix(
        table,
        p.intensities.region,
        p.intensities.statistic,
        materials,
        archetypes,
        where=str(p.intensities.table),
    )


def prepare(
    pipeline_file: str | Path,
    output_dir: str | Path | None = None,
    runner: str = "plain",
) -> Path:
    """Validate the pipeline file and create the run's work folder; return its path."""
    p = load_pipeline(pipeline_file)
    root = p.output_root(Path(output_dir) if output_dir is not None else None)
    started = datetime.now(UTC)
    # milliseconds in the id: runs sort by start time even when several start in a second
    stamp = started.strftime("%Y%m%dT%H%M%S") + f"{started.microsecond // 1000:03d}Z"
    run_id = stamp + "-" + uuid.uuid4().hex[:6]
    work = root / p.name / ".work" / run_id
    (work / "stage").mkdir(parents=True)
    context = {
        "pipeline": p.name,
        "pipeline_file": str(p.source_file),
        "output_root": str(root),
        "run_id": run_id,
        "started_at": started.isoformat(),
        "runner": runner,
        "run_key": run_key(p, started.date().isoformat()),
    }
    (work / "context.json").write_text(json.dumps(context, indent=2))
    log.info("run %s of %s in %s", run_id, p.name, work)
    return work


# --------------------------------------------------------------------------- steps


def _read_footprints(
    p: Pipeline, rules: ArchetypeRules, inputs: list[dict[str, Any]], day: str
) -> tuple[gpd.GeoDataFrame, pd.DataFrame]:
    fp = p.sources.footprints
    assert fp is not None
    if fp.file is not None:
        inputs.append({"role": "footprints", **file_record(fp.file)})
        return buildings_from_footprint_file(fp, p.crs, rules)
    if fp.osm_file is not None:
        inputs.append({"role": "footprints", **file_record(fp.osm_file)})
        buildings, dropped, _ = buildings_from_osm(fp, p.crs, rules)
        return buildings, dropped
    buildings, dropped, snapshot = buildings_from_osm(fp, p.crs, rules, p.cache_root(), day)
    inputs.append({"role": "footprints", "query": fp.place or fp.polygon_wkt, "snapshot": snapshot})
    return buildings, dropped


def _sources(
    p: Pipeline, rules: ArchetypeRules, inputs: list[dict[str, Any]], day: str
) -> tuple[gpd.GeoDataFrame, list[pd.DataFrame], list[pd.DataFrame], dict[str, Any] | None, int]:
    """Read, normalise and clean every building source; conflate when there are two.

    Returns the buildings, the dropped and repair tables, the match report (or None)
    and the number of records read. ``day`` (the run's UTC day) names the snapshot of an
    online source.
    """
    bounds = area_of_use_bounds(p.crs)
    min_area = rules.limits.min_footprint_m2
    dropped: list[pd.DataFrame] = []
    repairs: list[pd.DataFrame] = []
    parts: dict[str, gpd.GeoDataFrame] = {}
    n_records = 0
    if p.sources.register_ is not None:
        src = p.sources.register_
        inputs.append({"role": "register", **file_record(src.path)})
        reg, d = buildings_from_register(src, p.crs, rules)
        n_records += len(reg) + len(d)
        reg, d2, r = clean_geometries(reg, bounds, min_area)
        parts["register"] = reg
        dropped += [d, d2]
        repairs.append(r)
    if p.sources.footprints is not None:
        fps, d = _read_footprints(p, rules, inputs, day)
        n_records += len(fps) + len(d)
        fps, d2, r = clean_geometries(fps, bounds, min_area)
        parts["footprints"] = fps
        dropped += [d, d2]
        repairs.append(r)
    if len(parts) == 2:
        fps = parts["footprints"]
        link = fps["register_link"] if "register_link" in fps.columns else None
        buildings, report = conflate(
            parts["register"], fps.drop(columns=["register_link"], errors="ignore"), link
        )
        return buildings, dropped, repairs, report, n_records
    (buildings,) = parts.values()
    return (
        buildings.drop(columns=["register_link"], errors="ignore"),
        dropped,
        repairs,
        None,
        n_records,
    )


def _no_buildings(p: Pipeline, n_records: int, dropped: list[pd.DataFrame]) -> InputDataError:
    """The error for a run left with no building: what was read and why it was left out."""
    src = p.sources
    where = (
        src.register_.path
        if src.register_ is not None
        else (
            src.footprints.file
            or src.footprints.osm_file
            or src.footprints.place
            or src.footprints.polygon_wkt
        )
        if src.footprints is not None
        else "?"
    )
    if n_records == 0:
        return InputDataError(f"{where}: no building records; check the file (and its layer)")
    table = pd.concat(dropped, ignore_index=True)
    reasons = ", ".join(
        f"{reason}: {count}" for reason, count in table["reason"].value_counts().head(3).items()
    )
    key = "sources.register.existing_status" if src.register_ is not None else "the source"
    return InputDataError(
        f"{where}: none of the {n_records} records is a building mfa can use ({reasons}); "
        f"check the file and {key}"
    )


def _engine_source(
    p: Pipeline, rules: ArchetypeRules, inputs: list[dict[str, Any]], day: str
) -> tuple[Source, dict[str, Any] | None]:
    """The run's building records as engine batches, and the conflation report."""
    batch = p.compute.batch_rows
    if p.sources.register_ is not None and p.sources.footprints is None:
        src = p.sources.register_
        inputs.append({"role": "register", **file_record(src.path)})
        return (
            Source(
                batches=iter_register(src, p.crs, batch),
                register=True,
                existing_status=tuple(src.existing_status),
                ids=iter_register_ids(src, p.crs, batch),
            ),
            None,
        )
    if p.sources.register_ is None:
        fps, dropped = _read_footprints(p, rules, inputs, day)
        fps = fps.drop(columns=["register_link"], errors="ignore").reset_index(drop=True)
        cuts = range(0, max(1, len(fps)), batch)
        return Source(
            batches=(fps.iloc[i : i + batch] for i in cuts), register=False, dropped=dropped
        ), None
    # register and footprints: cleaned and conflated across the whole area, one batch
    buildings, dropped, repairs, matches, n_records = _sources(p, rules, inputs, day)
    return (
        Source(
            batches=iter([buildings.reset_index(drop=True)]),
            register=False,
            dropped=pd.concat(dropped, ignore_index=True),
            repairs=pd.concat(repairs, ignore_index=True),
            clean=False,
            records_read=n_records,
        ),
        matches,
    )


def _model(p: Pipeline, rules: ArchetypeRules, run_year: int, storey: float) -> Model:
    """The run's model: rules, intensities, draws' quantiles, districts, grid."""
    materials = _materials(p)
    archetypes, draws = _intensity_draws(p, materials)
    kg_m2 = _central_intensities(p, materials, archetypes)
    unit_q = unit_quantiles(draws, archetypes, materials, tuple(p.uncertainty.percentiles))
    districts = read_districts(p.sources.districts, p.crs) if p.sources.districts else None
    return rules_model(rules, p, run_year, storey, materials, kg_m2, unit_q, archetypes, districts)


@without_cyclic_gc
def build_buildings(work_dir: Path) -> Path:
    """Pass 1 of the engine: read the sources in batches; normalise, clean, check, add
    heights; leave out repeated ids and footprints; sum the cohort statistics; stage."""
    t0 = time.perf_counter()
    work = Path(work_dir)
    ctx = _ctx(work)
    p = load_pipeline(ctx["pipeline_file"])
    rules = load_archetype_rules(p.archetypes.dir)
    inputs: list[dict[str, Any]] = []
    started = datetime.fromisoformat(ctx["started_at"])
    day, run_year = started.date().isoformat(), started.year
    h = p.sources.heights
    storey = h.storey_height_m if h is not None and h.storey_height_m else rules.storey_height_m
    model = _model(p, rules, run_year, storey)
    stage = work / "stage"
    if model.district_geoms is not None:
        districts = read_districts(p.sources.districts, p.crs)
        write_layer(districts, stage / "districts_input.parquet")
    with open(stage / MODEL, "wb") as f:
        pickle.dump(model, f)
    source, matches = _engine_source(p, rules, inputs, day)
    checked = check_buildings(source, model, h, stage, p.compute.scheduler, p.compute.workers)
    failpoint("buildings:computed")
    if checked["buildings"] == 0:
        raise _no_buildings(
            p, checked["records_read"], [pd.read_parquet(stage / "dropped_checked.parquet")]
        )
    if h is not None:
        for role in ("ndsm", "dsm", "dtm"):
            if getattr(h, role) is not None:
                inputs.append({"role": role, **file_record(getattr(h, role))})
    if p.sources.districts is not None:
        inputs.append({"role": "districts", **file_record(p.sources.districts.path)})
    if ctx.get("run_key") is None:  # an online source: known now that its snapshot is
        ctx["run_key"] = run_key(p, day)
        (work / "context.json").write_text(json.dumps(ctx, indent=2))
    repairs = pq.read_metadata(stage / "repairs.parquet").num_rows
    _report(
        work,
        "buildings",
        {
            "inputs": inputs,
            "config_files": [
                file_record(Path(f))
                for f in [*rules.files, p.intensities.table, *p.intensities.overrides]
            ],
            "records_read": checked["records_read"],
            "buildings_computed": checked["buildings"],
            "repairs": repairs,
            "matches": matches,
            "heights": checked["raster"],
            "storey_height_m": storey,
            "engine": {k: checked[k] for k in ("batches", "repeated_footprints", "worker_seconds")},
            "seconds": round(time.perf_counter() - t0, 3),
        },
    )
    log.info("%d buildings checked in %d batches", checked["buildings"], checked["batches"])
    return stage


def _load_model(work: Path) -> Model:
    with open(work / "stage" / MODEL, "rb") as f:
        return pickle.load(f)


@without_cyclic_gc
def estimate_stocks(work_dir: Path) -> Path:
    """Pass 2 of the engine: impute, locate, tonnes and percentiles → buildings layer;
    the run's additive sums for the aggregate layers."""
    t0 = time.perf_counter()
    work = Path(work_dir)
    p = _pipeline(work)
    model = _load_model(work)
    done = finish_buildings(
        model,
        work / "stage",
        work / BUILDINGS,
        as_crs(p.crs),
        p.compute.scheduler,
        p.compute.workers,
    )
    sums = read_sums(work / "stage")
    if p.sources.districts is not None and done["buildings"]:
        inside = sums.districts.drop(index=UNASSIGNED, errors="ignore")["building_count"].sum()
        if inside == 0:
            raise InputDataError(
                f"{p.sources.districts.path}: none of the {done['buildings']} buildings lies in "
                "a district; check that the districts cover the buildings' area and that both "
                "files have the right CRS"
            )
    materials = list(model.materials)
    archetypes, draws = _intensity_draws(p, materials)
    whole = sums.district_archetypes.groupby(level="archetype_id").sum()
    floor = whole.reindex(archetypes, fill_value=0.0).to_numpy(dtype=float)[None, :]
    band, _ = group_percentiles(floor, draws, materials, tuple(p.uncertainty.percentiles))
    _report(
        work,
        "stocks",
        {
            "intensities": {
                "table": str(p.intensities.table),
                "sha256": file_record(p.intensities.table)["sha256"],
                "overrides": [file_record(o) for o in p.intensities.overrides],
                "region": p.intensities.region,
                "statistic": p.intensities.statistic,
                "materials": materials,
                "kg_per_m2": model.kg_m2.loc[
                    sorted(set(sums.district_archetypes.index.get_level_values("archetype_id")))
                ]
                .round(4)
                .to_dict(orient="index"),
            },
            "uncertainty": {
                "method": "Monte Carlo, one draw per archetype and material shared by its "
                "buildings; piecewise-linear quantile function through p00…p100",
                "draws": p.uncertainty.draws,
                "seed": p.uncertainty.seed,
                "percentiles": list(p.uncertainty.percentiles),
                "totals_t": band.iloc[0].round(3).to_dict(),
            },
            "imputed_from_cohort_peers": done["imputed_from_cohort_peers"],
            "scheduler": p.compute.scheduler,
            "workers": worker_count(p.compute.workers),
            "batches": done["batches"],
            "engine": {k: done[k] for k in ("worker_seconds", "write_seconds")},
            "seconds": round(time.perf_counter() - t0, 3),
        },
    )
    return work / BUILDINGS


def _percentile_names(p: Pipeline, materials: list[str]) -> list[str]:
    """The percentile columns of a group layer (``<material>_t_pXX``, ``mass_t_pXX``)."""
    q = tuple(p.uncertainty.percentiles)
    return list(percentile_columns(np.zeros((1, 0, len(materials))), materials, q).columns)


def _with(frame: gpd.GeoDataFrame, extra: pd.DataFrame, crs: str) -> gpd.GeoDataFrame:
    out = pd.concat([frame.reset_index(drop=True), extra.reset_index(drop=True)], axis=1)
    return gpd.GeoDataFrame(out, geometry="geometry", crs=crs)


def _write_rasters(work: Path, cells: gpd.GeoDataFrame, sums: list[str], p: Pipeline) -> list[str]:
    """One cloud-optimised GeoTIFF per material (and the total), t/ha, on the grid."""
    assert p.grid is not None
    size = p.grid.cell_size_m
    names = []
    for col in sums:
        density = (cells[col] / cells["area_ha"]).to_numpy()
        arr, col0, top = grid_array(cells["ix"].to_numpy(), cells["iy"].to_numpy(), density)
        name = col.removesuffix("_t")
        write_cog(
            work / f"stock_{name}.tif",
            arr,
            west=col0 * size,
            north=(top + 1) * size,
            cell_size=size,
            crs=as_crs(p.crs),
            description=f"{name} stock",
            unit="t/ha",
        )
        names.append(f"stock_{name}.tif")
    return names


@without_cyclic_gc
def aggregate(work_dir: Path) -> Path | None:
    """The district, quality and grid layers and the stock rasters, from the run's sums.

    Returns the districts layer (None without a district source).
    """
    t0 = time.perf_counter()
    work = Path(work_dir)
    p = _pipeline(work)
    report: dict[str, Any] = {}
    materials = _materials(p)
    sums_cols = ["mass_t", *material_columns(materials)]
    sums = read_sums(work / "stage")
    archetypes, draws = _intensity_draws(p, materials)
    q = tuple(p.uncertainty.percentiles)
    out: Path | None = None
    if p.sources.districts is not None:
        districts = read_layer(work / "stage" / "districts_input.parquet")
        result = district_layer(sums.districts, districts, sums_cols, name_column="district_name")
        ids = pd.Index(result["district_id"].astype(object), name="district_id")
        floor = floor_matrix(sums.district_archetypes, ids, archetypes)
        pct, error = group_percentiles(floor, draws, materials, q)
        out = write_layer(_with(result, pct, as_crs(p.crs)), work / DISTRICTS)
        write_layer(quality_layer(sums.districts, districts), work / QUALITY)
        report["districts"] = len(result)
        report["draw_conservation_max_rel_error"] = error
    else:
        report["districts_skipped"] = "no [sources.districts] in the pipeline file"
    if p.grid is not None:
        cells = grid_layer(sums.cells, p.grid.cell_size_m, as_crs(p.crs))
        index = pd.MultiIndex.from_arrays([cells["iy"], cells["ix"]], names=["iy", "ix"])
        floor = floor_matrix(sums.cell_archetypes, index, archetypes)
        pct, error = group_percentiles(floor, draws, materials, q)
        cells = _with(cells, pct, as_crs(p.crs))
        write_layer(cells, work / GRID)
        report["grid_cells"] = len(cells)
        report["grid_draw_conservation_max_rel_error"] = error
        if p.grid.rasters:
            report["rasters"] = _write_rasters(work, cells, sums_cols, p)
    report["seconds"] = round(time.perf_counter() - t0, 3)
    _report(work, "districts", report)
    return out


@without_cyclic_gc
def forecast_flows(work_dir: Path) -> Path | None:
    """Demolition and construction flows per district, year, material and scenario."""
    t0 = time.perf_counter()
    work = Path(work_dir)
    p = _pipeline(work)
    if p.dynamics is None:
        _report(work, "flows", {"skipped": "no [dynamics] in the pipeline file"})
        return None
    dyn = p.dynamics
    materials = _materials(p)
    lifetimes = load_lifetimes(dyn.lifetimes)
    # floor area and buildings per district, archetype and construction year (0: unknown)
    attrs = read_sums(work / "stage").cohorts.reset_index()
    attrs["construction_year"] = attrs["construction_year"].astype("Int64").replace(0, pd.NA)
    years, n_imputed = impute_cohort_years(attrs)
    too_new = years > dyn.base_year
    attrs = attrs.assign(construction_year=years.clip(upper=dyn.base_year))
    archetypes, draws = _intensity_draws(p, materials)
    matrix = _central_intensities(p, materials, archetypes)
    q = tuple(p.uncertainty.percentiles)
    cohorts = np.sort(attrs["construction_year"].unique())
    total_gfa = float(attrs["gfa_m2"].sum())
    frames = []
    for sc in dyn.scenarios:
        levers = ScenarioLevers(**sc.model_dump())
        frames.append(
            district_flows(
                attrs,
                lifetimes,
                dyn.base_year,
                dyn.horizon,
                levers,
                matrix,
                draws,
                archetypes,
                q,
                cohorts=cohorts,
                total_gfa_m2=total_gfa,
            )
        )
    flows = pd.concat(frames, ignore_index=True)
    flows = flows.astype({"scenario": object, "district_id": object, "material": object})
    flows["date"] = pd.to_datetime(flows["year"].astype(str) + "-12-31").dt.date
    geoms = None
    if p.sources.districts is not None:
        districts = read_layer(work / "stage" / "districts_input.parquet")
        geoms = districts.set_index("district_id").geometry
    geometry = (
        gpd.GeoSeries(flows["district_id"].map(geoms), crs=as_crs(p.crs))
        if geoms is not None
        else gpd.GeoSeries([None] * len(flows), crs=as_crs(p.crs))
    )
    flows = gpd.GeoDataFrame(flows, geometry=geometry.values, crs=as_crs(p.crs))
    out = write_layer(flows, work / FLOWS)
    base = flows[(flows["year"] == dyn.base_year) & (flows["material"] == "mass")]
    summary = {}
    for sc in dyn.scenarios:
        rows = flows[(flows["scenario"] == sc.name) & (flows["year"] > dyn.base_year)]
        first10 = rows[rows["year"] <= dyn.base_year + 10]
        area_out = first10[first10["material"] == "mass"]["outflow_m2"].sum()
        stock_now = base[base["scenario"] == sc.name]["stock_m2"].sum()
        summary[sc.name] = {
            "outflow_t_next_10_years": first10.groupby("material")["outflow_t"]
            .sum()
            .round(1)
            .to_dict(),
            "demolition_rate_per_year": round(float(area_out / 10 / stock_now), 6)
            if stock_now
            else None,
        }
    _report(
        work,
        "flows",
        {
            "scenarios": [s.model_dump() for s in dyn.scenarios],
            "base_year": dyn.base_year,
            "horizon": dyn.horizon,
            "lifetimes": {f: {"kind": lt.kind, **lt.params} for f, lt in lifetimes.items()},
            "construction_years_imputed": n_imputed,
            "construction_years_after_base_year": int(attrs["building_count"][too_new].sum()),
            "summary": summary,
            "rows": len(flows),
            "seconds": round(time.perf_counter() - t0, 3),
        },
    )
    return out


#: Columns of the flows layer that are not district_flows() output.
_NOT_FLOW_ROWS = ("date", "geometry", "bbox")


@without_cyclic_gc
def qgis_outputs(work_dir: Path) -> Path:
    """The run's layers for QGIS: ``layers.gpkg``, a ``.qml`` style per layer, ``project.qgs``.

    The GeoPackage holds every GeoParquet layer of the run with its default style; the
    ``.qml`` beside each ``.parquet`` is the same style; the project opens them styled,
    in groups, in the pipeline CRS (see :mod:`mfa.io.qgis`). Written into the work
    folder, so :func:`publish` checks them before the run is published.
    """
    t0 = time.perf_counter()
    work = Path(work_dir)
    p = _pipeline(work)
    layers: dict[str, pd.DataFrame] = {
        name: read_layer(work / f)
        for name, f in QGIS_LAYERS.items()
        if (work / f).exists() and name != "buildings"
    }
    # the buildings go into the GeoPackage row group by row group; the style needs their
    # tonnes, the project their geometry types (from the WKB headers) and extent
    source = pq.ParquetFile(work / BUILDINGS)
    mass = source.read(columns=["mass_t"])["mass_t"].to_numpy()
    types = np.concatenate(
        [
            wkb_type_ids(source.read_row_group(i, columns=["geometry"])["geometry"])
            for i in range(source.num_row_groups)
        ]
    )
    box = json.loads(source.schema_arrow.metadata[b"geo"])["columns"]["geometry"].get("bbox")
    shape = LayerGeometry(types, tuple(box) if box else None)
    batches = (
        source.read_row_group(i).drop_columns(["bbox"]) for i in range(source.num_row_groups)
    )
    layers = {"buildings": pd.DataFrame({"mass_t": mass}), **layers}
    years = (p.dynamics.base_year, p.dynamics.horizon) if p.dynamics is not None else None
    written = write_qgis_outputs(
        work,
        layers,
        p.crs,
        p.name,
        years,
        geometries={"buildings": shape},
        batches={"buildings": batches},
    )
    failpoint("qgis:written")
    _report(work, "qgis", {**written, "seconds": round(time.perf_counter() - t0, 3)})
    log.info("QGIS project %s, layers in %s", PROJECT, GPKG)
    return work / PROJECT


def _versions() -> dict[str, str]:
    names = ["geopandas", "shapely", "pyarrow", "pandas", "numpy", "dask", "pyproj", "osmnx"]
    out = {"python": platform.python_version(), "mfa": mfa.__version__}
    for n in names:
        try:
            out[n] = version(n)
        except Exception:  # noqa: BLE001 - a missing optional package is reported as absent
            out[n] = "absent"
    return out


@dataclass
class _Records:
    """A table of left-out records or repairs as published: rows, counts per key, head."""

    rows: int
    counts: pd.DataFrame  # the key columns and ``count``
    head: pd.DataFrame  # the first MANIFEST_RECORDS rows


def _record_table(staged: Path, csv: Path, key: list[str]) -> _Records:
    """Write the staged table as CSV batch by batch; count its rows per ``key``."""
    source = pq.ParquetFile(staged)
    names = source.schema_arrow.names
    counts, head, n = [], [], 0
    with open(csv, "w", encoding="utf-8", newline="") as out:
        pd.DataFrame(columns=names).to_csv(out, index=False)
        for batch in source.iter_batches(batch_size=100_000):
            df = batch.to_pandas()
            df.to_csv(out, index=False, header=False)
            counts.append(df.groupby(key, dropna=False).size())
            if n < MANIFEST_RECORDS:
                head.append(df.head(MANIFEST_RECORDS - n))
            n += len(df)
    total = (
        pd.concat(counts).groupby(level=list(range(len(key))), dropna=False).sum()
        if counts
        else pd.Series(dtype="int64", index=pd.MultiIndex.from_arrays([[]] * len(key), names=key))
    )
    first = pd.concat(head, ignore_index=True) if head else pd.DataFrame(columns=names)
    return _Records(n, total.rename("count").reset_index(), first)


@dataclass
class _LayerCheck:
    """What checking the buildings layer row group by row group found."""

    rows: int
    totals: dict[str, float]
    provenance: dict[str, dict[str, int]]
    quality: pd.DataFrame  # provenance counts, one row (mfa.buildings.report)


def _check_buildings_layer(path: Path, p: Pipeline, materials: list[str]) -> _LayerCheck:
    """Check the buildings layer as written, one row group at a time (memory bounded by
    the row group): schema and values of every row, tonnes and their sum, percentiles,
    a geometry per row (covering bbox), ids unique across the layer; sum what the
    manifest reports."""
    where = str(path)
    tonnes = ["mass_t", *material_columns(materials)]
    q = [f"p{int(x):02d}" for x in p.uncertainty.percentiles]
    source = pq.ParquetFile(path)
    names = [c for c in source.schema_arrow.names if c != "geometry"]
    totals = dict.fromkeys(["gfa_m2", *tonnes], 0.0)
    keys, counts, prov, n = [], [], [], 0
    for i in range(source.num_row_groups):
        table = source.read_row_group(i, columns=names)
        box = table["bbox"].combine_chunks()
        if not np.isfinite(box.field("xmin").to_numpy(zero_copy_only=False)).all():
            raise ValidationError(f"{where}: some buildings have no geometry; drop them")
        df = table.drop_columns(["bbox"]).to_pandas()
        check_building_rows(df, where)
        if df[tonnes].isna().any().any():
            raise ValidationError(f"{where}: material tonnes have missing values")
        mass = df[material_columns(materials)].sum(axis=1).to_numpy()
        if not (abs(mass - df["mass_t"].to_numpy()) <= 1e-9 * abs(mass).clip(min=1)).all():
            raise ValidationError(f"{where}: mass_t is not the sum of the materials")
        _check_percentiles(df, ["mass", *materials], q, where)
        for c in totals:
            totals[c] += float(df[c].to_numpy(dtype=float).sum())
        keys.append(hash128(df["building_id"].astype(str).to_numpy(object)))
        counts.append(provenance_counts(df))
        cols = [c for c in df.columns if c.endswith("_source") or c == "match_method"]
        prov.append(pd.concat({c: df[c].value_counts() for c in cols}, names=["column", "value"]))
        n += len(df)
    for i, rep in enumerate(later_repeats(keys)):
        if rep.any():
            table = source.read_row_group(i, columns=["building_id"])
            first = table["building_id"][int(np.argmax(rep))].as_py()
            raise ValidationError(f"{where}: building_id {first!r} occurs more than once")
    quality = pd.concat(counts).sum().to_frame().T if counts else provenance_counts(df)
    by_value = pd.concat(prov).groupby(level=[0, 1]).sum() if prov else pd.Series(dtype=int)
    provenance: dict[str, dict[str, int]] = {}
    for (col, value), count in by_value.sort_index().items():
        provenance.setdefault(str(col), {})[str(value)] = int(count)
    return _LayerCheck(n, totals, provenance, quality)


def _checks(
    work: Path, p: Pipeline, materials: list[str], reports_districts: dict[str, Any]
) -> tuple[dict[str, Any], _LayerCheck]:
    """Check every layer of the work folder; returns the checks and the buildings' sums."""
    layers = {BUILDINGS: check_geoparquet(work / BUILDINGS, p.crs)}
    found = _check_buildings_layer(work / BUILDINGS, p, materials)
    cols = ["mass_t", *material_columns(materials)]
    checks: dict[str, Any] = {"layers": layers, "schema": "passed", "materials_sum": "passed"}
    q = [f"p{int(x):02d}" for x in p.uncertainty.percentiles]
    totals = found.totals
    if (work / DISTRICTS).exists():
        districts = read_layer(work / DISTRICTS)
        layers[DISTRICTS] = check_geoparquet(work / DISTRICTS, p.crs)
        _check_percentiles(districts, ["mass", *materials], q, str(work / DISTRICTS))
        _balance(totals, districts, ["gfa_m2", *cols], "districts")
        if int(districts["building_count"].sum()) != found.rows:
            raise ValidationError("districts: building_count does not add up to the buildings")
        checks["mass_balance"] = {
            "status": "passed",
            "rtol": 1e-9,
            "draw_by_draw_max_rel_error": reports_districts.get("draw_conservation_max_rel_error"),
        }
        layers[QUALITY] = check_geoparquet(work / QUALITY, p.crs)
    if (work / GRID).exists():
        grid = read_layer(work / GRID)
        layers[GRID] = check_geoparquet(work / GRID, p.crs)
        _check_percentiles(grid, ["mass", *materials], q, str(work / GRID))
        _balance(totals, grid, ["gfa_m2", *cols], "grid cells")
        if int(grid["building_count"].sum()) != found.rows:
            raise ValidationError("grid: building_count does not add up to the buildings")
        checks["grid_mass_balance"] = {
            "status": "passed",
            "rtol": 1e-9,
            "draw_by_draw_max_rel_error": reports_districts.get(
                "grid_draw_conservation_max_rel_error"
            ),
        }
        rasters = {}
        for name in reports_districts.get("rasters", []):
            col = name.removeprefix("stock_").removesuffix(".tif") + "_t"
            rasters[name] = check_raster_total(
                work / name, p.crs, totals[col], rtol=1e-5
            )  # float32 cells
        if rasters:
            checks["rasters"] = rasters
    if (work / FLOWS).exists():
        layers[FLOWS] = check_geoparquet(work / FLOWS, p.crs)
        names = [c for c in pq.read_schema(work / FLOWS).names if c not in _NOT_FLOW_ROWS]
        flows = pd.read_parquet(work / FLOWS, columns=names)
        checks["flows_stock_balance"] = _check_flows(flows, p, totals)
    checks["totals"] = totals
    checks["percentiles_ordered"] = "passed"
    expected = {name: int(layers[f]["rows"]) for name, f in QGIS_LAYERS.items() if f in layers}
    checks["geopackage"] = check_geopackage(work / GPKG, expected)
    missing = [f for f in (PROJECT, *(f"{n}.qml" for n in expected)) if not (work / f).is_file()]
    if missing:
        raise ValidationError(f"{work}: {missing} missing; the qgis_outputs step writes them")
    return checks, found


def _balance(totals: dict[str, float], groups: pd.DataFrame, columns: list[str], what: str) -> None:
    """Every group sum equals the buildings' sum (rtol 1e-9)."""
    for col in columns:
        b, g = totals[col], float(groups[col].to_numpy(dtype=float).sum())
        if not np.isclose(b, g, rtol=1e-9, atol=0.0):
            raise ValidationError(
                f"mass balance: {col} sums to {b!r} over buildings but {g!r} over {what}; "
                "a building is counted twice or not at all: check the district assignment"
            )


def _check_flows(flows: pd.DataFrame, p: Pipeline, totals: dict[str, float]) -> dict[str, Any]:
    """Every district × material × scenario series balances; the base year is today's stock."""
    assert p.dynamics is not None
    worst = 0.0
    for col in ("m2", "t"):
        wide = {
            k: flows.pivot_table(
                index=["scenario", "district_id", "material"], columns="year", values=f"{k}_{col}"
            ).to_numpy()
            for k in ("stock", "inflow", "outflow")
        }
        s = wide["stock"]
        worst = max(
            worst,
            check_stock_balance(s, wide["inflow"], wide["outflow"], initial_stock=s[:, 0]),
        )
    base = flows[(flows["year"] == p.dynamics.base_year) & (flows["material"] == "mass")]
    for name, rows in base.groupby("scenario"):
        if not np.isclose(rows["stock_t"].sum(), totals["mass_t"], rtol=1e-9):
            raise ValidationError(
                f"flows: scenario {name} starts from {rows['stock_t'].sum()} t, "
                f"the buildings hold {totals['mass_t']} t"
            )
    return {"status": "passed", "max_rel_error": worst}


def _check_percentiles(df: pd.DataFrame, names: list[str], q: list[str], where: str) -> None:
    """Percentile columns exist, are finite, non-negative and increasing (p05 ≤ p50 ≤ p95)."""
    for name in names:
        cols = [f"{name}_t_{x}" for x in q]
        missing = [c for c in cols if c not in df.columns]
        if missing:
            raise ValidationError(f"{where}: missing percentile columns {missing}")
        v = df[cols].to_numpy(dtype=float)
        if not np.isfinite(v).all() or (v < 0).any():
            raise ValidationError(f"{where}: {name} percentiles are negative or not finite")
        if (np.diff(v, axis=1) < -1e-9 * np.abs(v[:, 1:]).clip(min=1)).any():
            raise ValidationError(f"{where}: {name} percentiles are not increasing")


def _quality_summary(counts: pd.DataFrame) -> dict[str, dict[str, float]]:
    """Run-level shares observed / imputed / missing per attribute (from the one row of
    provenance counts)."""
    shares = shares_from_counts(counts).iloc[0]
    out: dict[str, dict[str, float]] = {}
    for col, value in shares.drop("building_count").items():
        if str(col).startswith("match_"):
            out.setdefault("match", {})[f"match_{str(col).removeprefix('match_')}"] = float(value)
            continue
        attr, kind = str(col).rsplit("_", 1)
        out.setdefault(attr, {})[f"{attr}_{kind}"] = float(value)
    return out


@without_cyclic_gc
def publish(work_dir: Path) -> Path:
    """Check every layer, write ``run.json``, move the run in place, switch ``latest``.

    Returns the published run folder. On any failed check nothing is published.
    """
    t0 = time.perf_counter()
    work = Path(work_dir)
    ctx = _ctx(work)
    p = load_pipeline(ctx["pipeline_file"])
    materials = _materials(p)
    reports = {f.stem: json.loads(f.read_text()) for f in sorted((work / "reports").glob("*.json"))}
    checks, found = _checks(work, p, materials, reports.get("districts", {}))
    dropped = _record_table(work / "stage" / "dropped.parquet", work / DROPPED, ["stage", "reason"])
    repairs = _record_table(
        work / "stage" / "repairs.parquet", work / REPAIRS, ["attribute", "reason"]
    )
    b0 = reports.get("buildings", {})
    accounted = found.rows + dropped.rows
    if b0.get("matches") is None and b0.get("records_read") not in (None, accounted):
        raise ValidationError(
            f"{b0['records_read']} records read but {found.rows} buildings and "
            f"{dropped.rows} left out: every record must be in one of them"
        )
    b = reports.get("buildings", {})
    pipeline_record = [file_record(p.source_file)] if p.source_file else []
    files = [*pipeline_record, *b.get("config_files", [])]
    manifest = {
        "pipeline": p.name,
        "pipeline_file": ctx["pipeline_file"],
        "run_id": ctx["run_id"],
        "status": "succeeded",
        "runner": ctx["runner"],
        "started_at": ctx["started_at"],
        "finished_at": datetime.now(UTC).isoformat(),
        "crs": p.crs,
        "run_key": ctx.get("run_key"),
        "config_digest": config_digest(p, [Path(f["path"]) for f in b.get("config_files", [])]),
        "versions": _versions(),
        "inputs": b.get("inputs", []),
        "config_files": files,
        "intensities": reports.get("stocks", {}).get("intensities"),
        "uncertainty": reports.get("stocks", {}).get("uncertainty"),
        "compute": {
            "scheduler": reports.get("stocks", {}).get("scheduler"),
            "workers": reports.get("stocks", {}).get("workers"),
            "batch_rows": p.compute.batch_rows,
            "batches": reports.get("stocks", {}).get("batches"),
            "engine": {
                "buildings": reports.get("buildings", {}).get("engine"),
                "stocks": reports.get("stocks", {}).get("engine"),
            },
        },
        "row_counts": {
            "records_read": b.get("records_read"),
            "buildings": int(checks["layers"][BUILDINGS]["rows"]),
            "districts": int(checks["layers"].get(DISTRICTS, {}).get("rows", 0)),
            "dropped": dropped.rows,
        },
        "provenance": found.provenance,
        "quality": {
            attr: {k.removeprefix(f"{attr}_"): round(float(v), 4) for k, v in row.items()}
            for attr, row in _quality_summary(found.quality).items()
        },
        "totals_t": {k: v for k, v in checks["totals"].items() if k != "gfa_m2"},
        "total_gfa_m2": checks["totals"]["gfa_m2"],
        "checks": {k: v for k, v in checks.items() if k != "totals"},
        "dropped": {
            "counts_by_reason": dropped.counts.sort_values("count", ascending=False).to_dict(
                orient="records"
            ),
            # the first ones; dropped.csv beside it lists them all
            "records": dropped.head.to_dict(orient="records"),
            "records_listed": len(dropped.head),
        },
        "repairs": {
            "counts": repairs.counts.sort_values(
                ["count", "attribute"], ascending=[False, True]
            ).to_dict(orient="records"),
            "file": REPAIRS,
        },
        "matches": b.get("matches"),
        "imputed_from_cohort_peers": reports.get("stocks", {}).get("imputed_from_cohort_peers"),
        "flows": reports.get("flows"),
        "qgis": {k: v for k, v in reports.get("qgis", {}).items() if k != "seconds"} or None,
        "heights": b.get("heights"),
        "storey_height_m": b.get("storey_height_m"),
        "timings_s": {step: r.get("seconds") for step, r in reports.items() if isinstance(r, dict)},
    }
    manifest["timings_s"]["publish"] = round(time.perf_counter() - t0, 3)
    (work / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str))
    previous_manifest = work.parent.parent / "latest" / MANIFEST
    previous = json.loads(previous_manifest.read_text()) if previous_manifest.is_file() else None
    (work / REPORT).write_text(report_markdown(manifest, previous))
    shutil.rmtree(work / "stage")
    shutil.rmtree(work / "reports")
    (work / "context.json").unlink()
    for f in work.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    fsync_dir(work)
    failpoint("publish:checked")

    pipeline_dir = work.parent.parent
    final = pipeline_dir / ctx["run_id"]
    try:
        os.rename(work, final)
        with contextlib.suppress(OSError):
            work.parent.rmdir()  # .work/, when no other run is in progress
        fsync_dir(pipeline_dir)
        failpoint("publish:renamed")
        link_tmp = pipeline_dir / f".latest-{ctx['run_id']}"
        os.symlink(ctx["run_id"], link_tmp, target_is_directory=True)
        failpoint("publish:linked")
        os.replace(link_tmp, pipeline_dir / "latest")
        fsync_dir(pipeline_dir)
        failpoint("publish:switched")
    except OSError as exc:
        raise PublishError(
            f"{final}: could not publish the run ({exc}); the previous 'latest' is unchanged"
        ) from exc
    pruned = prune_runs(pipeline_dir, p.output.keep_runs)
    if pruned:
        log.info("pruned %d old run(s) beyond keep_runs=%d", len(pruned), p.output.keep_runs)
    log.info("published %s", final)
    return final


class RunLockedError(MfaError, RuntimeError):
    """Another run of the same pipeline is in progress."""


@contextlib.contextmanager
def run_lock(pipeline_file: str | Path, output_dir: str | Path | None = None):
    """Hold ``<out>/<pipeline>/.lock`` for a whole run; a second run stops with a message.

    The lock is an OS file lock (``flock``): it is released when the holding process
    ends, even when it is killed, so a crashed run never blocks the next one. Holding it,
    the run also removes what killed runs left behind (work folders, temporary links).
    """
    import fcntl

    p = load_pipeline(pipeline_file)
    folder = p.output_root(Path(output_dir) if output_dir is not None else None) / p.name
    folder.mkdir(parents=True, exist_ok=True)
    handle = open(folder / ".lock", "w")  # noqa: SIM115 - held for the whole run
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunLockedError(
                f"{folder}: another run of {p.name} is in progress; wait for it to finish "
                "(its outputs will be published as 'latest')"
            ) from None
        _clean_leftovers(folder)
        yield folder
    finally:
        handle.close()


def _clean_leftovers(folder: Path) -> None:
    """Remove the work folders and temporary links of killed runs (call under the lock)."""
    work = folder / ".work"
    if work.is_dir():
        for leftover in work.iterdir():
            log.warning("removing %s, left behind by an interrupted run", leftover)
            shutil.rmtree(leftover, ignore_errors=True)
        with contextlib.suppress(OSError):
            work.rmdir()
    for link in folder.glob(".latest-*"):
        link.unlink(missing_ok=True)
    for tmp in folder.glob("*/*.tmp"):
        tmp.unlink(missing_ok=True)


def prune_runs(folder: Path, keep: int) -> list[str]:
    """Delete all but the newest ``keep`` published runs (never the one ``latest`` names)."""
    latest = (folder / "latest").resolve() if (folder / "latest").exists() else None
    runs = sorted(
        (
            d
            for d in folder.iterdir()
            if d.is_dir() and not d.name.startswith(".") and d.name != "latest"
        ),
        key=lambda d: d.name,
    )
    removed = []
    for old in runs[: max(0, len(runs) - keep)]:
        if latest is not None and old.resolve() == latest:
            continue
        shutil.rmtree(old, ignore_errors=True)
        removed.append(old.name)
    return removed


def record_failure(work_dir: Path, step: str, error: BaseException) -> None:
    """Write ``<out>/<pipeline>/last-failure.md`` (the step and the error), then discard."""
    work = Path(work_dir)
    try:
        ctx = _ctx(work)
        text = failure_markdown(ctx["pipeline"], ctx["run_id"], step, error)
        (work.parent.parent / FAILURE).write_text(text)
    except (OSError, KeyError, json.JSONDecodeError):
        log.exception("could not write the failure report")
    discard(work)


def discard(work_dir: Path) -> None:
    """Remove a failed run's work folder (published runs and ``latest`` are not touched)."""
    work = Path(work_dir)
    if work.exists() and work.parent.name == ".work":
        shutil.rmtree(work, ignore_errors=True)
        with contextlib.suppress(OSError):
            work.parent.rmdir()  # .work/, when no other run is in progress


@dataclass(frozen=True)
class Step:
    """A step of a run after :func:`prepare`: a function of the work folder.

    ``name`` is its task name in Prefect; ``transient`` says it may fail on a transient
    download error (and only then is it retried, by the Prefect task).
    """

    name: str
    run: Callable[[Path], Path | None]
    transient: bool = False


#: The steps after :func:`prepare`, in order: the plain runner and the Prefect flow
#: (``flows/pipeline.py``) are both made from this list.
STEPS: tuple[Step, ...] = (
    Step("buildings", build_buildings, transient=True),
    Step("stocks", estimate_stocks),
    Step("districts", aggregate),
    Step("flows", forecast_flows),
    Step("qgis", qgis_outputs),
    Step("publish", publish),
)


def run_pipeline(
    pipeline_file: str | Path, output_dir: str | Path | None = None, force: bool = True
) -> Path:
    """Run every step without Prefect; return the published run folder.

    With ``force=False`` a run whose inputs, config and code are unchanged since the
    latest published run does nothing and returns that run; otherwise it recomputes only
    the districts whose records changed (see :mod:`mfa.reuse`).
    """
    if not force:
        previous = unchanged_run(pipeline_file, output_dir)
        if previous is not None:
            log.info("unchanged since run %s: nothing to do", previous.name)
            return previous
    with run_lock(pipeline_file, output_dir):
        work = prepare(pipeline_file, output_dir, runner="plain")
        step_name = "prepare"
        try:
            for step in STEPS:
                step_name = step.name
                result = step.run(work)
            return Path(result)  # publish returns the run folder
        except BaseException as exc:
            record_failure(work, step_name, exc)
            raise

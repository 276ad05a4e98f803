"""Run a pipeline: the steps, each path in → path out, and the plain (no-Prefect) runner.

A run works in ``<output root>/<pipeline>/.work/<run_id>/``. Only when every step has
succeeded and every check has passed does :func:`publish` move it to
``<output root>/<pipeline>/<run_id>/`` and switch the ``latest`` link to it, atomically.
A failed or interrupted run never touches ``latest`` or earlier runs.

The Prefect flow in ``flows/pipeline.py`` calls the same step functions as tasks.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import platform
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import shapely

import mfa
from mfa.buildings.archetypes import ArchetypeRules
from mfa.buildings.conflate import conflate
from mfa.buildings.parts import (
    cohort_counts,
    cohort_digest,
    cohort_statistics,
    cohort_targets,
    part_digests,
    split_parts,
)
from mfa.buildings.quality import (
    area_of_use_bounds,
    check_ranges,
    clean_geometries,
    impute_from_cohort_peers,
    refine_with_heights,
)
from mfa.buildings.register import BBR, normalise_bbr
from mfa.buildings.report import provenance_shares, quality_by_district
from mfa.config import HeightSource, Pipeline, config_digest, load_pipeline
from mfa.crs import as_crs
from mfa.dynamics import check_stock_balance
from mfa.dynamics.flows import ScenarioLevers, district_flows, impute_years
from mfa.errors import InputDataError, MfaError, PublishError, ValidationError
from mfa.estimate import estimate_partition
from mfa.failpoints import failpoint
from mfa.hilbert import hilbert_order
from mfa.incremental import run_key, unchanged_run
from mfa.io.districts import read_districts
from mfa.io.files import file_record, fsync_dir
from mfa.io.footprints import buildings_from_footprint_file
from mfa.io.geoparquet import (
    check_geoparquet,
    read_layer,
    wkb_type_ids,
    write_layer,
    write_merged_layer,
)
from mfa.io.osm import buildings_from_osm
from mfa.io.qgis import (
    GPKG,
    PROJECT,
    GeoPackageUpdate,
    LayerGeometry,
    check_geopackage,
    promotes_to_multi,
    write_qgis_outputs,
)
from mfa.io.rasters import check_raster_total, footprint_heights, write_cog
from mfa.io.register import buildings_from_register, read_register
from mfa.io.tables import (
    load_archetype_rules,
    load_intensity_table,
    load_lifetimes,
    load_materials,
)
from mfa.parallel import dask_compute, map_partitions, without_cyclic_gc
from mfa.report import failure_markdown, report_markdown
from mfa.reuse import (
    STATE,
    Dirty,
    dirty_groups,
    previous_run,
    reused_records,
    run_wide_key,
)
from mfa.schema import check_buildings, check_mass_balance, empty_dropped, material_columns
from mfa.stocks.aggregate import UNASSIGNED, aggregate_districts
from mfa.stocks.grid import aggregate_grid, grid_array
from mfa.stocks.intensity import intensity_matrix, intensity_percentiles
from mfa.stocks.uncertainty import (
    group_draws,
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
#: Stage files of an incremental run: the previous run it reuses parts of, and what
#: beyond the buildings it must recompute (see mfa.reuse.Dirty).
REUSE = "reuse.json"
REUSED_IDS = "reused_ids.parquet"
REPLACED_IDS = "replaced_ids.parquet"  # previous buildings not reused (GeoPackage deletes)
ADDED = "buildings_added.parquet"  # recomputed buildings as written (GeoPackage appends)
DIRTY = "dirty.json"
#: Above this share of the records in changed parts an incremental run recomputes
#: everything: merging the reused rows costs more than it saves (benchmarks/incremental.py
#: at 200k buildings, before this rule: 25 % changed took 80 % of a full run's time,
#: 50 % took 104 %).
FULL_RECOMPUTE_SHARE = 0.4
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
    incremental: bool = False,
) -> Path:
    """Validate the pipeline file and create the run's work folder; return its path.

    ``incremental``: the run may reuse the previous run's rows of unchanged districts.
    """
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
        "incremental": incremental,
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


def _raster_heights(
    buildings: gpd.GeoDataFrame, h: HeightSource
) -> tuple[pd.Series, dict[str, Any]]:
    """Raster heights per building, computed once per footprint (rows may share one)."""
    polygonal = buildings.geometry.geom_type.isin(["Polygon", "MultiPolygon"]).to_numpy()
    key = buildings["footprint_id"].where(polygonal)
    unique = buildings.loc[key.notna() & ~key.duplicated()]
    heights, stats = footprint_heights(
        unique.geometry, h.ndsm, h.dsm, h.dtm, h.percentile, h.max_window_pixels
    )
    by_fp = pd.Series(heights.to_numpy(), index=unique["footprint_id"].to_numpy())
    mapped = key.map(by_fp).astype("Float64")
    return mapped, {**asdict(stats), "percentile": h.percentile}


@dataclass
class _Built:
    """What reading the sources and building the canonical rows gave."""

    computed: gpd.GeoDataFrame  # canonical buildings computed in this run
    dropped: list[pd.DataFrame]
    repairs: list[pd.DataFrame]
    n_records: int
    peer_counts: dict[str, int]
    raster_report: dict[str, Any] | None
    matches: dict[str, Any] | None = None
    reused: pd.Series | None = None  # ids of this run's records in reused parts
    previous: Path | None = None  # the published run they come from
    incremental: dict[str, Any] = field(default_factory=dict)
    state: pd.DataFrame | None = None  # cohort counts per part, for the next run


def _check_and_refine(
    b: gpd.GeoDataFrame, p: Pipeline, rules: ArchetypeRules, run_year: int, storey: float
) -> tuple[gpd.GeoDataFrame, list[pd.DataFrame], dict[str, Any] | None]:
    """Plausibility limits, raster heights and floors from heights (per building)."""
    b, repairs_range = check_ranges(b, rules.limits, run_year, rules.floors_by_function)
    raster_h, raster_report = None, None
    if p.sources.heights is not None and len(b):
        raster_h, raster_report = _raster_heights(b, p.sources.heights)
    b, repairs_height = refine_with_heights(b, raster_h, storey, rules.limits)
    return b, [repairs_range, repairs_height], raster_report


def _build_conflated(
    p: Pipeline,
    rules: ArchetypeRules,
    inputs: list[dict[str, Any]],
    day: str,
    run_year: int,
    storey: float,
) -> _Built:
    """Register and footprints: clean each, conflate across the whole area, then refine."""
    buildings, dropped, repairs, matches, n_records = _sources(p, rules, inputs, day)
    buildings, more, raster_report = _check_and_refine(buildings, p, rules, run_year, storey)
    buildings, peer_counts = impute_from_cohort_peers(buildings)
    return _Built(
        computed=buildings,
        dropped=dropped,
        repairs=[*repairs, *more],
        n_records=n_records,
        peer_counts=peer_counts,
        raster_report=raster_report,
        matches=matches,
        incremental={
            "mode": "full",
            "reason": "register and footprints are conflated across district borders: "
            "every run recomputes every district",
        },
    )


@dataclass
class _Source:
    """The one building source of a run, split into parts before normalisation where it can.

    ``records`` are what is digested per part: a register's raw rows (normalised later,
    only for the parts that are recomputed), or footprints already normalised (their
    left-out records in ``dropped``). ``ids`` lets the caller find records without an id
    or with a repeated one: their parts are never reused (the duplicate check looks
    across parts).
    """

    records: gpd.GeoDataFrame
    ids: pd.Series  # record id per row (the building_id it becomes)
    normalise: Callable[[gpd.GeoDataFrame], tuple[gpd.GeoDataFrame, pd.DataFrame]] | None
    dropped: pd.DataFrame  # left out before the split (footprints)
    reused_stages: tuple[str, ...]  # stages of left-out records a reused part carries over


def _source(p: Pipeline, rules: ArchetypeRules, inputs: list[dict[str, Any]], day: str) -> _Source:
    """Read the one building source (a register is read, not yet normalised)."""
    if p.sources.register_ is not None:
        src = p.sources.register_
        inputs.append({"role": "register", **file_record(src.path)})
        raw = read_register(src, p.crs)
        return _Source(
            raw,
            raw[BBR.ID].astype("string"),
            lambda rows: normalise_bbr(rows, rules, src.existing_status),
            empty_dropped(),
            ("register", "geometry"),
        )
    fps, dropped = _read_footprints(p, rules, inputs, day)
    fps = fps.drop(columns=["register_link"], errors="ignore")
    return _Source(fps, fps["building_id"].astype("string"), None, dropped, ("geometry",))


def _build_by_part(
    p: Pipeline,
    rules: ArchetypeRules,
    inputs: list[dict[str, Any]],
    day: str,
    run_year: int,
    storey: float,
    work: Path,
    incremental: bool,
) -> _Built:
    """One building source, split into district parts; unchanged parts reuse the previous
    run's result rows when ``incremental`` (see :mod:`mfa.reuse`).

    A register is split and digested as read; only the records of the parts to recompute
    are normalised (normalisation is per record, but for the duplicate-id check, whose
    parts are always recomputed).
    """
    source = _source(p, rules, inputs, day)
    records, dropped_norm = source.records.reset_index(drop=True), source.dropped
    ids = source.ids.reset_index(drop=True)
    n_records = len(records) + len(dropped_norm)
    if len(records) == 0:
        raise _no_buildings(p, n_records, [dropped_norm])
    districts = read_districts(p.sources.districts, p.crs) if p.sources.districts else None
    part = split_parts(records.geometry, districts)
    digests = part_digests(records, part)
    key = run_wide_key(p, run_year)
    unsure = ids.isna() | (ids.str.len() == 0) | ids.duplicated(keep=False)
    always = set(part[unsure.to_numpy(bool)].tolist())

    prev, reason = None, "forced full recompute (--force)"
    if incremental:
        prev, reason = previous_run(work.parent.parent)
    if prev is not None and prev.run_wide_key != key:
        prev, reason = None, "settings, model tables, districts, rasters, code or year changed"
    candidates = (
        [
            k
            for k, d in digests.items()
            if prev.parts.get(k, {}).get("digest") == d and k not in always
        ]
        if prev is not None
        else []
    )

    if candidates:
        changed = 1.0 - float(part.isin(candidates).mean())
        if changed > FULL_RECOMPUTE_SHARE:
            candidates = []
            reason = (
                f"{changed:.0%} of the records are in districts that changed (more than "
                f"{FULL_RECOMPUTE_SHARE:.0%}): recomputing all is cheaper than merging"
            )

    known = ids.notna().to_numpy(bool)
    owner = pd.Series(part.to_numpy()[known], index=ids.to_numpy()[known])
    owner = owner[~owner.index.duplicated()]  # duplicate ids: their parts are recomputed

    def compute(raw: gpd.GeoDataFrame) -> tuple:
        """Normalise (a register), clean and refine the records of the parts to compute."""
        rows, dropped_n = raw, empty_dropped()
        if source.normalise is not None:
            rows, dropped_n = source.normalise(raw)
            if len(rows) == 0 and not candidates:
                raise _no_buildings(p, n_records, [dropped_n])
        rows, dropped, rep_geom = clean_geometries(
            rows, area_of_use_bounds(p.crs), rules.limits.min_footprint_m2
        )
        rows, rep_more, raster_report = _check_and_refine(rows, p, rules, run_year, storey)
        rows_part = rows["building_id"].map(owner).astype("string")
        return rows, rows_part, [dropped_n, dropped], [rep_geom, *rep_more], raster_report

    reuse = part.isin(candidates).to_numpy()
    rows, rows_part, dropped_a, repairs_a, raster_report = compute(records[~reuse])
    counts = cohort_counts(rows, rows_part)
    if candidates:
        assert prev is not None
        counts = pd.concat(
            [counts, prev.counts[prev.counts["part"].isin(candidates)]], ignore_index=True
        )
    stats = cohort_statistics(counts)
    cdigest = cohort_digest(*stats)
    if candidates and prev is not None and cdigest != prev.cohort_digest:
        # imputed values anywhere may move: compute the parts that were to be reused too
        # (imputation comes after, for all rows at once)
        reason = "the cohort statistics used for imputation changed"
        more = compute(records[reuse])
        candidates, reuse = [], np.zeros(len(records), dtype=bool)
        rows = pd.concat([rows, more[0]], ignore_index=True)
        rows_part = pd.concat([rows_part, more[1]], ignore_index=True)
        dropped_a, repairs_a = [*dropped_a, *more[2]], [*repairs_a, *more[3]]
        raster_report = _merged_raster_reports(raster_report, more[4])
        counts = cohort_counts(rows, rows_part)
        stats = cohort_statistics(counts)
        cdigest = cohort_digest(*stats)
    s_todo, f_todo = cohort_targets(rows, stats)
    rows, peer_counts = impute_from_cohort_peers(rows, statistics=stats)
    refined = (
        pd.DataFrame(
            {"structure": s_todo.to_numpy(), "floors": f_todo.to_numpy()},
            index=rows_part.to_numpy(),
        )
        .groupby(level=0)
        .sum()
    )

    parts_state: dict[str, dict[str, Any]] = {}
    for k, d in digests.items():
        if k in candidates:
            assert prev is not None
            parts_state[k] = {**prev.parts[k], "digest": d}
        else:
            r = refined.loc[k] if k in refined.index else {"structure": 0, "floors": 0}
            parts_state[k] = {
                "digest": d,
                "structure_refined": int(r["structure"]),
                "floors_refined": int(r["floors"]),
            }
    reused, dropped_r, repairs_r = None, [], []
    if candidates:
        assert prev is not None
        d_r, r_r = reused_records(prev, ids[reuse], source.reused_stages)
        reused, dropped_r, repairs_r = ids[reuse].drop_duplicates(), [d_r], [r_r]
        for k in candidates:
            peer_counts["structure"] += parts_state[k]["structure_refined"]
            peer_counts["floors"] += parts_state[k]["floors_refined"]
    recomputed = [k for k in digests.index if k not in candidates]
    mode = "incremental" if candidates else "full"
    return _Built(
        computed=rows,
        dropped=[dropped_norm, *dropped_a, *dropped_r],
        repairs=[*repairs_a, *repairs_r],
        n_records=n_records,
        peer_counts=peer_counts,
        raster_report=raster_report,
        reused=reused,
        previous=prev.folder if candidates and prev is not None else None,
        incremental={
            "mode": mode,
            "reason": f"reused districts whose records, settings and cohort statistics are "
            f"unchanged since run {prev.run_id}"
            if candidates and prev is not None
            else reason,
            "previous_run": prev.run_id if prev is not None else None,
            "districts": len(digests),
            "recomputed_count": len(recomputed),
            "reused_count": len(candidates),
            "recomputed": recomputed,
            "reused": sorted(candidates),
            "run_wide_key": key,
            "cohort_digest": cdigest,
            "parts": parts_state,
        },
        state=counts.sort_values(
            ["part", "attribute", "cohort", "structure", "floors"]
        ).reset_index(drop=True),
    )


def _merged_raster_reports(
    a: dict[str, Any] | None, b: dict[str, Any] | None
) -> dict[str, Any] | None:
    """What the raster reader did in two calls, as one report (counts add up)."""
    if a is None or b is None:
        return a or b
    out = dict(a)
    for k in ("windows_read", "pixels_read", "no_pixel_centre"):
        out[k] = a.get(k, 0) + b.get(k, 0)
    out["max_window_pixels"] = max(a.get("max_window_pixels", 0), b.get("max_window_pixels", 0))
    return out


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


def _sorted_rows(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Left-out records or repairs in one order, however they were put together."""
    table = pd.concat(frames, ignore_index=True).astype("string")
    return table.sort_values(list(table.columns), kind="stable").reset_index(drop=True)


def _any_previous(previous: Path | None, ids: pd.Series) -> bool:
    """Whether any of ``ids`` is a building of the run in ``previous`` (the reused parts
    may hold only records that were left out)."""
    if previous is None or not len(ids):
        return False
    table = pq.read_table(previous / BUILDINGS, columns=["building_id"])
    found = pc.is_in(table["building_id"].cast(pa.large_string()), value_set=_ids(ids))
    return bool(pc.any(found).as_py())


@without_cyclic_gc
def build_buildings(work_dir: Path) -> Path:
    """Read the sources; clean, conflate, check, add heights; stage canonical buildings.

    With one building source the records are split into district parts; in an
    incremental run (``--if-changed``) the parts whose records, settings and cohort
    statistics are unchanged reuse the previous run's result rows (their record ids are
    staged; the stocks step copies the rows), the others are computed here.
    """
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
    if p.sources.register_ is not None and p.sources.footprints is not None:
        built = _build_conflated(p, rules, inputs, day, run_year, storey)
    else:
        built = _build_by_part(
            p, rules, inputs, day, run_year, storey, work, bool(ctx.get("incremental"))
        )
    failpoint("buildings:computed")
    if h is not None:
        for role in ("ndsm", "dsm", "dtm"):
            if getattr(h, role) is not None:
                inputs.append({"role": role, **file_record(getattr(h, role))})
    if p.sources.districts is not None:
        inputs.append({"role": "districts", **file_record(p.sources.districts.path)})

    if ctx.get("run_key") is None:  # an online source: known now that its snapshot is
        ctx["run_key"] = run_key(p, day)
        (work / "context.json").write_text(json.dumps(ctx, indent=2))
    buildings = built.computed
    if len(buildings) == 0 and (
        built.reused is None or not _any_previous(built.previous, built.reused)
    ):
        raise _no_buildings(p, built.n_records, built.dropped)
    check_buildings(buildings, "canonical buildings", as_crs(p.crs))
    buildings = hilbert_order(buildings, tie_break="building_id")
    out = write_layer(buildings, work / "stage" / "buildings_canonical.parquet")
    if built.reused is not None:
        built.reused.rename("building_id").to_frame().to_parquet(
            work / "stage" / REUSED_IDS, index=False
        )
        (work / "stage" / REUSE).write_text(json.dumps({"previous": str(built.previous)}))
    if built.state is not None:
        tmp = work / (STATE + ".tmp")
        built.state.to_parquet(tmp, index=False)
        os.replace(tmp, work / STATE)
    dropped = _sorted_rows(built.dropped)
    repairs = _sorted_rows(built.repairs)
    dropped.to_parquet(work / "stage" / "dropped.parquet", index=False)
    repairs.to_parquet(work / "stage" / "repairs.parquet", index=False)
    _report(
        work,
        "buildings",
        {
            "inputs": inputs,
            "config_files": [
                file_record(Path(f))
                for f in [*rules.files, p.intensities.table, *p.intensities.overrides]
            ],
            "records_read": built.n_records,
            "buildings_computed": len(buildings),
            "dropped": len(dropped),
            "repairs": len(repairs),
            "matches": built.matches,
            "imputed_from_cohort_peers": built.peer_counts,
            "heights": built.raster_report,
            "storey_height_m": storey,
            "incremental": built.incremental,
            "seconds": round(time.perf_counter() - t0, 3),
        },
    )
    log.info(
        "%d buildings computed, %d records left out (see run.json)", len(buildings), len(dropped)
    )
    inc = built.incremental
    if inc.get("mode") == "incremental":
        log.info(
            "recomputed %d of %d districts, reused %d",
            inc["recomputed_count"],
            inc["districts"],
            inc["reused_count"],
        )
    return out


def _ids(ids: pd.Series) -> pa.Array:
    """Building ids as an Arrow string array (for ``is_in`` and Parquet filters)."""
    return pa.array(ids.astype(str).to_numpy(dtype=object), pa.large_string())


@without_cyclic_gc
def estimate_stocks(work_dir: Path) -> Path:
    """Districts and material tonnes per building, over Dask partitions → buildings layer."""
    t0 = time.perf_counter()
    work = Path(work_dir)
    p = _pipeline(work)
    buildings = read_layer(work / "stage" / "buildings_canonical.parquet")
    districts = None
    if p.sources.districts is not None:
        districts = read_districts(p.sources.districts, p.crs)
        write_layer(districts, work / "stage" / "districts_input.parquet")
    materials = _materials(p)
    matrix = _central_intensities(p, materials, buildings["archetype_id"].unique())
    archetypes, draws = _intensity_draws(p, materials)
    q = tuple(p.uncertainty.percentiles)
    unit_q = unit_quantiles(draws, archetypes, materials, q)
    meta = estimate_partition(buildings.iloc[:0], matrix, districts, unit_q)
    with dask_compute(p.compute.scheduler) as compute:
        result = map_partitions(
            buildings,
            estimate_partition,
            meta=meta,
            npartitions=p.compute.partitions,
            compute=compute,
            intensity_kg_m2=matrix,
            districts=districts,
            unit_quantiles=unit_q,
        )
    failpoint("stocks:computed")
    result = gpd.GeoDataFrame(result, geometry="geometry", crs=as_crs(p.crs)).reset_index(drop=True)
    if districts is not None and len(result) and result["district_id"].isna().all():
        assert p.sources.districts is not None
        raise InputDataError(
            f"{p.sources.districts.path}: none of the {len(result)} buildings lies in a "
            "district; check that the districts cover the buildings' area and that both "
            "files have the right CRS"
        )
    reused = work / "stage" / REUSED_IDS
    if reused.exists():  # an incremental run: the unchanged districts' rows, as published
        previous = Path(json.loads((work / "stage" / REUSE).read_text())["previous"])
        ids = pd.read_parquet(reused)["building_id"]
        table, replaced, added = write_merged_layer(
            previous / BUILDINGS,
            _ids(ids),
            "building_id",
            result,
            work / BUILDINGS,
            replaced_columns=["district_id", "geometry"],
        )
        pq.write_table(replaced.select(["building_id"]), work / "stage" / REPLACED_IDS)
        pq.write_table(added, work / "stage" / ADDED)  # for the GeoPackage update
        old = gpd.GeoDataFrame(
            replaced.select(["building_id", "district_id"]).to_pandas(),
            geometry=shapely.from_wkb(replaced["geometry"].to_numpy(zero_copy_only=False)),
            crs=as_crs(p.crs),
        )
        dirty = dirty_groups(
            previous, result, old, p.grid.cell_size_m if p.grid is not None else None, UNASSIGNED
        )
        (work / "stage" / DIRTY).write_text(json.dumps(dirty.to_json()))
        attrs = table.select(["building_id", "archetype_id", "gfa_m2"]).to_pandas()
        out = work / BUILDINGS
    else:
        attrs = result
        out = write_layer(result, work / BUILDINGS)
    whole, _ = _group_percentiles(
        p, materials, attrs, np.zeros(len(attrs), int), 1, drawn=(archetypes, draws)
    )
    total_band = whole.iloc[0].round(3).to_dict()
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
                "kg_per_m2": matrix.round(4).to_dict(orient="index"),
            },
            "uncertainty": {
                "method": "Monte Carlo, one draw per archetype and material shared by its "
                "buildings; piecewise-linear quantile function through p00…p100",
                "draws": p.uncertainty.draws,
                "seed": p.uncertainty.seed,
                "percentiles": list(q),
                "totals_t": total_band,
            },
            "scheduler": p.compute.scheduler,
            "partitions": min(p.compute.partitions, max(1, len(buildings))),
            "seconds": round(time.perf_counter() - t0, 3),
        },
    )
    return out


def _id_order(ids: pd.Series) -> np.ndarray:
    """The positions that sort ``ids`` (unique strings) by code point, as
    ``np.argsort(ids.to_numpy(dtype=str))`` (Arrow's sort: a third of the time)."""
    return pc.sort_indices(pa.array(ids.astype("string"), from_pandas=True)).to_numpy()


def _group_percentiles(
    p: Pipeline,
    materials: list[str],
    buildings: pd.DataFrame,
    group_of_building: np.ndarray,
    n_groups: int,
    chunk: int = 2_000,
    drawn: tuple[list[str], np.ndarray] | None = None,
    only: np.ndarray | None = None,
) -> tuple[pd.DataFrame, float]:
    """Percentile columns per group (0 … n_groups − 1) from summed Monte Carlo draws.

    Groups are processed ``chunk`` at a time, so memory is draws × chunk × materials.
    Also checks, draw by draw, that the groups sum to the buildings' total; returns the
    largest relative difference. ``drawn`` passes draws the caller already has. With
    ``only`` (group numbers), just those groups, one row each in that order.

    Buildings are summed in ``building_id`` order, so a group's values depend only on
    its own buildings, not on the order of the layer (which moves with the city's extent)
    nor on the other groups: an incremental run reuses the previous run's rows of the
    groups it did not recompute, bit for bit.
    """
    archetypes, draws = drawn if drawn is not None else _intensity_draws(p, materials)
    a_idx = pd.Index(archetypes).get_indexer(buildings["archetype_id"].astype(object))
    g_idx = np.asarray(group_of_building, dtype=np.int64)
    if (a_idx < 0).any() or (g_idx < 0).any():
        raise ValidationError("a building's archetype or group has no draws; check the rules")
    rows = np.arange(len(buildings))
    if only is not None:  # just the buildings of those groups, numbered 0 … len(only) − 1
        position = np.full(n_groups, -1, dtype=np.int64)
        position[only] = np.arange(len(only))
        g_idx = position[g_idx]
        rows, n_groups = np.flatnonzero(g_idx >= 0), len(only)
    order = rows[_id_order(buildings["building_id"].iloc[rows])]
    a_idx, g_idx = a_idx[order], g_idx[order]
    gfa = buildings["gfa_m2"].to_numpy(dtype=float)[order]
    q = tuple(p.uncertainty.percentiles)
    total = group_draws(gfa, a_idx, np.zeros(len(gfa), dtype=np.int64), 1, draws)[:, 0, :]
    summed = np.zeros_like(total)
    parts = [pd.DataFrame(columns=_percentile_names(p, materials), dtype=float)]
    for start in range(0, n_groups, chunk):
        stop = min(start + chunk, n_groups)
        sel = (g_idx >= start) & (g_idx < stop)
        tonnes = group_draws(gfa[sel], a_idx[sel], g_idx[sel] - start, stop - start, draws)
        summed += tonnes.sum(axis=1)
        parts.append(percentile_columns(tonnes, materials, q))
    scale = np.maximum(np.abs(total), 1e-12)
    error = float(np.max(np.abs(summed - total) / scale)) if total.size else 0.0
    if error > 1e-9:
        raise ValidationError(
            f"Monte Carlo draws are not conserved across groups (max rel. error {error:.2e})"
        )
    return pd.concat(parts, ignore_index=True), error


def _percentiles_reusing(
    p: Pipeline,
    materials: list[str],
    buildings: pd.DataFrame,
    group_of_building: np.ndarray,
    n_groups: int,
    previous: pd.DataFrame | None,
    dirty: np.ndarray | None,
) -> tuple[pd.DataFrame, float, int]:
    """:func:`_group_percentiles`, taking the rows of clean groups from the previous run.

    ``previous`` holds the previous run's percentile columns aligned with the groups (NaN
    where the group did not exist), ``dirty`` marks the groups that must be recomputed.
    Returns the columns, the conservation error and how many groups were computed.
    """
    if previous is None or dirty is None:
        pct, error = _group_percentiles(p, materials, buildings, group_of_building, n_groups)
        return pct, error, n_groups
    reusable = ~dirty & previous.notna().all(axis=1).to_numpy()
    todo = np.flatnonzero(~reusable)
    pct, error = _group_percentiles(p, materials, buildings, group_of_building, n_groups, only=todo)
    out = pd.DataFrame(np.nan, index=range(n_groups), columns=pct.columns)
    out.iloc[todo] = pct.to_numpy()
    out.iloc[np.flatnonzero(reusable)] = previous[pct.columns].to_numpy()[reusable]
    return out, error, len(todo)


def _percentile_names(p: Pipeline, materials: list[str]) -> list[str]:
    """The percentile columns of a group layer (``<material>_t_pXX``, ``mass_t_pXX``)."""
    q = tuple(p.uncertainty.percentiles)
    return list(percentile_columns(np.zeros((1, 0, len(materials))), materials, q).columns)


def _dirty(work: Path) -> Dirty | None:
    """What an incremental run must recompute beyond the buildings (None: everything)."""
    f = work / "stage" / DIRTY
    return Dirty.from_json(json.loads(f.read_text())) if f.is_file() else None


def _previous_columns(
    p: Pipeline, materials: list[str], layer: Path, key: str, keys: pd.Series
) -> pd.DataFrame | None:
    """The previous run's percentile columns of ``layer``, aligned with ``keys``."""
    cols = _percentile_names(p, materials)
    if not layer.is_file() or not set(cols) <= set(pq.read_schema(layer).names):
        return None
    prev = pd.read_parquet(layer, columns=[key, *cols])
    prev = prev.drop_duplicates(key).set_index(prev[key].astype(str).to_numpy())[cols]
    return prev.reindex(keys.astype(str).to_numpy())


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
    """Sum the buildings per district and per grid cell; stock rasters; quality layer.

    Returns the districts layer (None without a district source).
    """
    t0 = time.perf_counter()
    work = Path(work_dir)
    p = _pipeline(work)
    report: dict[str, Any] = {}
    materials = _materials(p)
    sums = ["mass_t", *material_columns(materials)]
    names = pq.read_schema(work / BUILDINGS).names
    wanted = ["building_id", "district_id", "archetype_id", "gfa_m2", *sums, "hazard"]
    wanted += [c for c in names if c.endswith("_source") or c == "match_method"]
    attrs = pd.read_parquet(work / BUILDINGS, columns=[c for c in names if c in wanted])
    dirty = _dirty(work)
    out: Path | None = None
    if p.sources.districts is not None:
        districts = read_layer(work / "stage" / "districts_input.parquet")
        result = aggregate_districts(attrs, districts, sums, name_column="district_name")
        ids = pd.Index(result["district_id"].astype(object))
        key = attrs["district_id"].astype("string").fillna(UNASSIGNED).astype(object)
        pct, error, n_done = _percentiles_reusing(
            p,
            materials,
            attrs,
            ids.get_indexer(key),
            len(ids),
            _previous_columns(
                p, materials, dirty.previous / DISTRICTS, "district_id", result["district_id"]
            )
            if dirty is not None
            else None,
            ids.isin(list(dirty.districts)) if dirty is not None else None,
        )
        out = write_layer(_with(result, pct, as_crs(p.crs)), work / DISTRICTS)
        write_layer(quality_by_district(attrs, districts), work / QUALITY)
        report["districts"] = len(result)
        report["districts_computed"] = n_done
        report["draw_conservation_max_rel_error"] = error
    else:
        report["districts_skipped"] = "no [sources.districts] in the pipeline file"
    if p.grid is not None:
        geometry = read_layer(work / BUILDINGS, columns=["geometry"]).geometry.values
        points = shapely.point_on_surface(geometry)
        cells, cell_of = aggregate_grid(
            points, attrs[["gfa_m2", *sums]], p.grid.cell_size_m, as_crs(p.crs)
        )
        touched = None
        if dirty is not None:
            xy = pd.MultiIndex.from_arrays([cells["ix"], cells["iy"]])
            touched = xy.isin(list(dirty.cells))
        pct, error, n_done = _percentiles_reusing(
            p,
            materials,
            attrs,
            cell_of,
            len(cells),
            _previous_columns(p, materials, dirty.previous / GRID, "cell_id", cells["cell_id"])
            if dirty is not None
            else None,
            touched,
        )
        cells = _with(cells, pct, as_crs(p.crs))
        write_layer(cells, work / GRID)
        report["grid_cells"] = len(cells)
        report["grid_cells_computed"] = n_done
        report["grid_draw_conservation_max_rel_error"] = error
        if p.grid.rasters:
            report["rasters"] = _write_rasters(work, cells, sums, p)
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
    attrs = pd.read_parquet(
        work / BUILDINGS,
        columns=["building_id", "district_id", "archetype_id", "construction_year", "gfa_m2"],
    )
    # building_id order: a district's floor-area sums do not depend on the layer's order
    attrs = attrs.iloc[_id_order(attrs["building_id"])]
    attrs["district_id"] = attrs["district_id"].astype("string").fillna(UNASSIGNED)
    years, n_imputed = impute_years(attrs)
    too_new = years > dyn.base_year
    attrs = attrs.assign(construction_year=years.clip(upper=dyn.base_year))
    archetypes, draws = _intensity_draws(p, materials)
    matrix = _central_intensities(p, materials, archetypes)
    q = tuple(p.uncertainty.percentiles)
    cohorts = np.sort(attrs["construction_year"].unique())
    total_gfa = float(attrs["gfa_m2"].sum())
    keys = _flow_keys(attrs, cohorts, total_gfa, dyn.scenarios)
    dirty = _dirty(work)
    previous = _previous_flows(dirty, keys) if dirty is not None else {}
    frames, computed = [], {}
    for sc in dyn.scenarios:
        levers = ScenarioLevers(**sc.model_dump())
        prev = previous.get(sc.name)
        redo = attrs
        if prev is not None:  # recompute the dirty districts, reuse the others' rows
            assert dirty is not None
            n_rows = (dyn.horizon - dyn.base_year + 1) * (len(materials) + 1)
            whole = prev.groupby("district_id").size()
            present = pd.Index(attrs["district_id"].unique())
            complete = whole.reindex(present).to_numpy() == n_rows
            clean = present[complete & ~present.isin(list(dirty.districts))]
            redo = attrs[~attrs["district_id"].isin(clean)]
            prev = prev[prev["district_id"].isin(clean)]
            if len(redo) == 0:
                computed[sc.name] = 0
                frames.append(prev.reset_index(drop=True))
                continue
        new = district_flows(
            redo,
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
        computed[sc.name] = int(new["district_id"].nunique())
        if prev is not None and len(prev):
            new = pd.concat([new, prev[list(new.columns)]], ignore_index=True)
            new = new.sort_values("district_id", kind="stable").reset_index(drop=True)
        frames.append(new)
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
            "reuse_keys": keys,
            "districts_computed": computed,
            "construction_years_after_base_year": int(too_new.sum()),
            "summary": summary,
            "rows": len(flows),
            "seconds": round(time.perf_counter() - t0, 3),
        },
    )
    return out


def _flow_keys(
    attrs: pd.DataFrame, cohorts: np.ndarray, total_gfa_m2: float, scenarios: list
) -> dict[str, str]:
    """Per scenario, sha256 of what a district's flows depend on beyond its own buildings.

    The cohort years, the medians that fill missing construction years, and, for a
    scenario that spreads new construction over the districts by their share of today's
    floor area, the total floor area. (Settings, lifetimes and intensities are in the
    run-wide key.) Equal keys and unchanged buildings: the district's rows are reusable.
    """
    year = attrs["construction_year"].astype("Float64")
    h = hashlib.sha256()
    h.update(np.asarray(cohorts, dtype=np.int64).tobytes())
    h.update(year.groupby(attrs["archetype_id"]).median().sort_index().to_json().encode())
    h.update(repr(year.median()).encode())
    base = h.hexdigest()
    keys = {}
    for sc in scenarios:
        spreads = sc.construction_m2_per_year > 0 and sc.stock_growth_per_year is None
        extra = repr(total_gfa_m2) if spreads else ""
        keys[sc.name] = hashlib.sha256(f"{base}|{extra}".encode()).hexdigest()
    return keys


def _previous_flows(dirty: Dirty, keys: dict[str, str]) -> dict[str, pd.DataFrame]:
    """The previous run's flow rows of each scenario whose key is unchanged."""
    try:
        prev_keys = json.loads((dirty.previous / MANIFEST).read_text())["flows"]["reuse_keys"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    same = [name for name, k in keys.items() if prev_keys.get(name) == k]
    if not same or not (dirty.previous / FLOWS).is_file():
        return {}
    names = [c for c in pq.read_schema(dirty.previous / FLOWS).names if c not in _NOT_FLOW_ROWS]
    rows = pd.read_parquet(dirty.previous / FLOWS, columns=names)
    return {name: rows[rows["scenario"] == name] for name in same}


#: Columns of the flows layer that are not district_flows() output.
_NOT_FLOW_ROWS = ("date", "geometry", "bbox")


def _geometry_types(layer: Path) -> list[str] | None:
    """The GeoParquet ``geometry_types`` of a layer (None: no such file or metadata)."""
    if not layer.is_file():
        return None
    geo = json.loads((pq.read_schema(layer).metadata or {}).get(b"geo", b"null") or "null")
    return None if geo is None else geo["columns"][geo["primary_column"]]["geometry_types"]


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
    dirty = _dirty(work)
    previous = dirty.previous / GPKG if dirty is not None else None
    types = _geometry_types(work / BUILDINGS)
    # an update keeps the previous layer's declared geometry type: only for the same types
    update = (
        previous is not None
        and previous.is_file()
        and types is not None
        and types == _geometry_types(previous.parent / BUILDINGS)
    )
    layers: dict[str, pd.DataFrame] = {
        name: read_layer(work / f)
        for name, f in QGIS_LAYERS.items()
        if (work / f).exists() and not (update and f == BUILDINGS)
    }
    years = (p.dynamics.base_year, p.dynamics.horizon) if p.dynamics is not None else None
    change, geometries = None, None
    if update:  # update the previous run's buildings: their geometries are not parsed
        assert previous is not None
        b = pq.read_table(work / BUILDINGS, columns=["building_id", "mass_t", "geometry"])
        x0, y0, x1, y1 = json.loads(b.schema.metadata[b"geo"])["columns"]["geometry"]["bbox"]
        shape = LayerGeometry(wkb_type_ids(b["geometry"]), (x0, y0, x1, y1))
        # buildings first, as in QGIS_LAYERS
        layers = {"buildings": b.drop_columns(["geometry"]).to_pandas(), **layers}
        geometries = {"buildings": shape}
        change = GeoPackageUpdate(
            previous=previous,
            removed=pd.read_parquet(work / "stage" / REPLACED_IDS)["building_id"],
            added=read_layer(work / "stage" / ADDED),
            bounds=(x0, y0, x1, y1),
            count=b.num_rows,
            promote_to_multi=promotes_to_multi(types or []),
        )
    written = write_qgis_outputs(work, layers, p.crs, p.name, years, change, geometries)
    failpoint("qgis:written")
    written["geopackage_from"] = str(previous) if change is not None else None
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


def _checks(
    work: Path, p: Pipeline, materials: list[str], reports_districts: dict[str, Any]
) -> tuple[dict[str, Any], gpd.GeoDataFrame]:
    """Check every layer of the work folder; returns the checks and the buildings read."""
    buildings = read_layer(work / BUILDINGS)
    layers = {BUILDINGS: check_geoparquet(work / BUILDINGS, p.crs)}
    base = buildings.drop(columns=["mass_t", *material_columns(materials)])
    check_buildings(base, str(work / BUILDINGS), as_crs(p.crs))
    cols = ["mass_t", *material_columns(materials)]
    if buildings[cols].isna().any().any():
        raise ValidationError(f"{work / BUILDINGS}: material tonnes have missing values")
    mass = buildings[material_columns(materials)].sum(axis=1).to_numpy()
    if not ((abs(mass - buildings["mass_t"].to_numpy())) <= 1e-9 * abs(mass).clip(min=1)).all():
        raise ValidationError(f"{work / BUILDINGS}: mass_t is not the sum of the materials")
    checks: dict[str, Any] = {"layers": layers, "schema": "passed", "materials_sum": "passed"}
    q = [f"p{int(x):02d}" for x in p.uncertainty.percentiles]
    _check_percentiles(buildings, ["mass", *materials], q, str(work / BUILDINGS))
    if (work / DISTRICTS).exists():
        districts = read_layer(work / DISTRICTS)
        layers[DISTRICTS] = check_geoparquet(work / DISTRICTS, p.crs)
        _check_percentiles(districts, ["mass", *materials], q, str(work / DISTRICTS))
        totals = check_mass_balance(buildings, districts, ["gfa_m2", *cols], rtol=1e-9)
        if int(districts["building_count"].sum()) != len(buildings):
            raise ValidationError("districts: building_count does not add up to the buildings")
        checks["mass_balance"] = {
            "status": "passed",
            "rtol": 1e-9,
            "draw_by_draw_max_rel_error": reports_districts.get("draw_conservation_max_rel_error"),
        }
        layers[QUALITY] = check_geoparquet(work / QUALITY, p.crs)
    else:
        totals = {c: float(buildings[c].sum()) for c in ["gfa_m2", *cols]}
    if (work / GRID).exists():
        grid = read_layer(work / GRID)
        layers[GRID] = check_geoparquet(work / GRID, p.crs)
        _check_percentiles(grid, ["mass", *materials], q, str(work / GRID))
        check_mass_balance(buildings, grid, ["gfa_m2", *cols], rtol=1e-9)
        if int(grid["building_count"].sum()) != len(buildings):
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
    return checks, buildings


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


def _provenance(buildings: pd.DataFrame) -> dict[str, dict[str, int]]:
    """Buildings per value of each provenance column (``*_source``, ``match_method``)."""
    return {
        col: {str(k): int(v) for k, v in buildings[col].value_counts().sort_index().items()}
        for col in buildings.columns
        if col.endswith("_source") or col == "match_method"
    }


def _quality_summary(buildings: pd.DataFrame) -> dict[str, dict[str, float]]:
    """Run-level shares observed / imputed / missing per attribute."""
    shares = provenance_shares(buildings).iloc[0]
    out: dict[str, dict[str, float]] = {}
    for col, value in shares.drop("building_count").items():
        if str(col).startswith("match_"):
            out.setdefault("match", {})[f"match_{str(col).removeprefix('match_')}"] = float(value)
            continue
        attr, kind = str(col).rsplit("_", 1)
        out.setdefault(attr, {})[f"{attr}_{kind}"] = float(value)
    return out


def _incremental_summary(
    incremental: dict[str, Any] | None, reports: dict[str, Any]
) -> dict[str, Any] | None:
    """The buildings step's incremental record plus what the later steps recomputed."""
    if incremental is None:
        return None
    d, f = reports.get("districts", {}), reports.get("flows", {})
    computed = {
        "districts": d.get("districts_computed"),
        "of_districts": d.get("districts"),
        "grid_cells": d.get("grid_cells_computed"),
        "of_grid_cells": d.get("grid_cells"),
        "flow_districts_by_scenario": f.get("districts_computed"),
    }
    return {**incremental, "aggregates_computed": computed}


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
    checks, buildings = _checks(work, p, materials, reports.get("districts", {}))
    dropped = pd.read_parquet(work / "stage" / "dropped.parquet")
    dropped.to_csv(work / DROPPED, index=False)
    repairs = pd.read_parquet(work / "stage" / "repairs.parquet")
    repairs.to_csv(work / REPAIRS, index=False)
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
            "partitions": reports.get("stocks", {}).get("partitions"),
        },
        "row_counts": {
            "records_read": b.get("records_read"),
            "buildings": int(checks["layers"][BUILDINGS]["rows"]),
            "districts": int(checks["layers"].get(DISTRICTS, {}).get("rows", 0)),
            "dropped": len(dropped),
        },
        "provenance": _provenance(buildings),
        "quality": {
            attr: {k.removeprefix(f"{attr}_"): round(float(v), 4) for k, v in row.items()}
            for attr, row in _quality_summary(buildings).items()
        },
        "totals_t": {k: v for k, v in checks["totals"].items() if k != "gfa_m2"},
        "total_gfa_m2": checks["totals"]["gfa_m2"],
        "checks": {k: v for k, v in checks.items() if k != "totals"},
        "dropped": {
            "counts_by_reason": dropped.groupby(["stage", "reason"])
            .size()
            .reset_index(name="count")
            .sort_values("count", ascending=False)
            .to_dict(orient="records"),
            # the first ones; dropped.csv beside it lists them all
            "records": dropped.head(MANIFEST_RECORDS).to_dict(orient="records"),
            "records_listed": min(len(dropped), MANIFEST_RECORDS),
        },
        "repairs": {
            "counts": repairs.groupby(["attribute", "reason"])
            .size()
            .reset_index(name="count")
            .sort_values(["count", "attribute"], ascending=[False, True])
            .to_dict(orient="records"),
            "file": REPAIRS,
        },
        "matches": b.get("matches"),
        "imputed_from_cohort_peers": b.get("imputed_from_cohort_peers"),
        "flows": reports.get("flows"),
        "qgis": {k: v for k, v in reports.get("qgis", {}).items() if k != "seconds"} or None,
        "heights": b.get("heights"),
        "storey_height_m": b.get("storey_height_m"),
        "incremental": _incremental_summary(b.get("incremental"), reports),
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


#: The steps after :func:`prepare`, in order; each takes the work folder.
STEPS: tuple[Callable[[Path], Path | None], ...] = (
    build_buildings,
    estimate_stocks,
    aggregate,
    forecast_flows,
    qgis_outputs,
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
        work = prepare(pipeline_file, output_dir, runner="plain", incremental=not force)
        step_name = "prepare"
        try:
            for step in (*STEPS, publish):
                step_name = step.__name__
                result = step(work)
            return Path(result)  # publish returns the run folder
        except BaseException as exc:
            record_failure(work, step_name, exc)
            raise

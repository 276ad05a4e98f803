"""The engine: a run's building records in batches, in two passes, on one executor.

``mfa run`` (with or without Prefect) computes every building through here, from one
municipality's CSV to a national GeoParquet register; there is no other engine.

- **Pass 1** (:func:`check_buildings`, the buildings step): the source is cut into
  batches (a GeoParquet register is read batch by batch, ``[compute] batch_rows`` records
  each); each batch is normalised, cleaned and checked by :mod:`mfa.core.kernel` on the
  executor and staged in the work folder. Then, over the whole input: repeated register
  ids (found before pass 1 from the id and status columns alone) and repeated footprints
  are left out with the first record kept, and the cohort statistics are summed.
- **Pass 2** (:func:`finish_buildings`, the stocks step): each staged batch is imputed,
  located (district, grid cell), given tonnes and percentiles, and written as row groups
  of ``buildings.parquet`` in batch order while later batches compute; its additive sums
  (:class:`mfa.core.sums.Sums`) are added up in the same order and staged for the
  aggregate and flow steps.

Memory holds a window of ``2 × workers`` batches, the 16-byte keys of the repeat rules
and the sums: it depends on the batch size and the number of districts and grid cells,
not on the number of buildings. Results are the same for any number of workers and any
scheduler (batches are added up in input order), and the same per building for any
batch size (tested).
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.feather as feather
import shapely

from mfa.buildings.archetypes import ArchetypeRules
from mfa.buildings.cohorts import cohort_counts, cohort_statistics, year_counts
from mfa.buildings.quality import REPAIR_COLUMNS, geometry_keys
from mfa.buildings.register import BBR, normalise_bbr, standing_with_id
from mfa.config import HeightSource, Pipeline
from mfa.core.kernel import (
    Model,
    Shapes,
    check_batch,
    clean_batch,
    district_key,
    finish_batch,
    forget_locators,
)
from mfa.core.keys import hash128, later_repeats, repeated_in_groups
from mfa.core.sums import Sums
from mfa.dynamics.flows import YearFill, known_years_fill
from mfa.executor import executor, ordered_map, report_progress, worker_count
from mfa.failpoints import failpoint
from mfa.io.geoparquet import geometry_type_names, wkb_layer_table
from mfa.io.layerwriter import LayerWriter
from mfa.schema import DROPPED_COLUMNS, empty_dropped
from mfa.staging import (
    SUMS,
    StringTableWriter,
    read_sums,
    read_year_fill,
    stage_batch,
    unstage_batch,
    write_strings,
    write_sums,
    write_year_fill,
)

__all__ = [
    "Source",
    "check_buildings",
    "finish_buildings",
    "read_sums",
    "read_year_fill",
    "rules_model",
]

CHECKED = "checked"
#: Batches' sums held before they are folded into the run's: each batch touches up to
#: ~90,000 grid cells (~10 MB of sums) when the input is not in spatial order.
SUMS_FOLD = 8
#: Columns the cohort statistics are counted from.
_COHORT_COLUMNS = [
    "function",
    "construction_year",
    "structure",
    "structure_source",
    "floors",
    "floors_source",
]


class LazyBatch(Protocol):
    """A batch that the worker computing it reads (``read()`` gives its records, indexed
    by their positions ``start`` to ``start + rows``): only this travels to the worker."""

    @property
    def start(self) -> int: ...

    @property
    def rows(self) -> int: ...

    def read(self) -> gpd.GeoDataFrame: ...


@dataclass
class Source:
    """A run's building records, as batches in input order.

    ``batches`` yields GeoDataFrames whose index is the records' position in the input,
    or :class:`LazyBatch` es the workers read (a GeoParquet register's row groups);
    ``register`` says they are raw register rows (normalised by the BBR rules with
    ``existing_status``) rather than canonical buildings. ``ids`` yields (position, id,
    status) frames of the same records for the repeated-id rule (registers only).
    ``dropped`` holds records a source left out before batching (footprint readers), or
    gives them once the batches were read (a callable: a reader that normalises batch by
    batch, :class:`mfa.io.footprints.FootprintBatches`).
    """

    batches: Iterator[gpd.GeoDataFrame | LazyBatch]
    register: bool
    existing_status: tuple[str, ...] = ("6",)
    ids: Iterator[pd.DataFrame] | None = None
    dropped: pd.DataFrame | Callable[[], pd.DataFrame] | None = None
    repairs: pd.DataFrame | None = None  # repairs made before batching (conflation)
    clean: bool = True  # False: the records were cleaned before (conflation)
    records_read: int | None = None  # when the batches are not the records read
    counted_in_buildings: int = 0  # records read that are part of a building (BAG units)
    total_records: int | None = None  # known before reading (a GeoParquet's row count)


def _repeated_ids(source: Source) -> np.ndarray | None:
    """Per input record, whether an earlier standing record has its id (registers)."""
    if not source.register or source.ids is None:
        return None
    positions, keys = [], []
    for frame in source.ids:
        standing = standing_with_id(frame, list(source.existing_status)).to_numpy(bool)
        positions.append(frame.index.to_numpy()[standing])
        keys.append(hash128(frame[BBR.ID].astype(str).to_numpy(object)[standing]))
    n = max((int(p.max()) + 1 for p in positions if len(p)), default=0)
    out = np.zeros(n, dtype=bool)
    for pos, rep in zip(positions, later_repeats(keys), strict=True):
        out[pos] = rep
    return out


def _of_batch(per_record: np.ndarray | None, positions: np.ndarray) -> np.ndarray | None:
    """The values of a per-record array for a batch's records (False past its end)."""
    if per_record is None:
        return None
    out = np.zeros(len(positions), dtype=bool)
    inside = positions < len(per_record)
    out[inside] = per_record[positions[inside]]
    return out


def _pass1(
    frame: gpd.GeoDataFrame | LazyBatch,
    repeated_id: np.ndarray | None,  # per record of the batch (registers)
    register: bool,
    existing_status: tuple[str, ...],
    clean: bool,
    model: Model,
    heights: HeightSource | None,
    path: str,
) -> dict[str, Any]:
    """Pass 1 of one batch (runs on a worker): read (a lazy batch), normalise, clean,
    check, stage."""
    t0 = time.perf_counter()
    if not isinstance(frame, pd.DataFrame):
        frame = frame.read()
    if register:
        duplicate = None if repeated_id is None else pd.Series(repeated_id, index=frame.index)

        def normalise(rows: gpd.GeoDataFrame):
            return normalise_bbr(rows, model.rules, list(existing_status), duplicate=duplicate)

        rows, dropped, repairs_geometry = clean_batch(frame, normalise, model)
    elif clean:
        rows, dropped, repairs_geometry = clean_batch(frame.reset_index(drop=True), None, model)
    else:
        rows, dropped, repairs_geometry = frame.reset_index(drop=True), [], None
    raster_h, raster = None, None
    if heights is not None and len(rows):
        from mfa.io.rasters import footprint_heights

        raster_h, raster = _raster_heights(rows, heights, footprint_heights)
    rows, repairs = check_batch(rows, raster_h, model)
    shapes = Shapes.of(rows.geometry.values)
    failpoint("buildings:staged")
    stage_batch(rows, shapes, path)
    stem = path.removesuffix(".arrow")
    write_strings(pd.concat([empty_dropped(), *dropped]), f"{stem}.dropped.parquet")
    if repairs_geometry is not None:
        write_strings(repairs_geometry, f"{stem}.repairs0.parquet")
    write_strings(repairs, f"{stem}.repairs1.parquet")
    return {
        "rows": len(rows),
        # conflated sources were deduplicated per source: rows sharing a footprint stay
        "keys": shapes.box_keys() if register or clean else np.zeros((0, 2), dtype=np.uint64),
        "raster": raster,
        "seconds": time.perf_counter() - t0,
    }


def _repeated_footprints(results: list[dict[str, Any]], folder: Path) -> list[np.ndarray]:
    """Per batch, the rows whose footprint an earlier row of the input has.

    Rows whose box key (:func:`mfa.core.keys.box_keys`) no other row shares cannot repeat
    a footprint; for the few that share one, the exact key
    (:func:`mfa.buildings.quality.geometry_keys`) is made from the staged WKB and the
    first row in input order of each shape is kept.
    """
    shared = repeated_in_groups([r["keys"] for r in results])
    exact = []
    for k, mask in enumerate(shared):
        rows = np.flatnonzero(mask)
        if len(rows) == 0:
            exact.append(np.zeros((0, 2), dtype=np.uint64))
            continue
        wkb = feather.read_table(folder / f"{k:06d}.arrow", columns=["_wkb"])["_wkb"]
        geoms = shapely.from_wkb(wkb.take(pa.array(rows)).to_numpy(zero_copy_only=False))
        exact.append(hash128(geometry_keys(geoms)))
    repeats = []
    for r, mask, rep in zip(results, shared, later_repeats(exact), strict=True):
        out = np.zeros(r["rows"], dtype=bool)
        out[np.flatnonzero(mask)] = rep
        repeats.append(out)
    return repeats


def _raster_heights(rows: gpd.GeoDataFrame, h: HeightSource, read) -> tuple[pd.Series, dict]:
    """Raster heights per building, read once per footprint (rows may share one)."""
    polygonal = rows.geometry.geom_type.isin(["Polygon", "MultiPolygon"]).to_numpy()
    key = rows["footprint_id"].where(polygonal)
    unique = rows.loc[key.notna() & ~key.duplicated()]
    heights, stats = read(unique.geometry, h.ndsm, h.dsm, h.dtm, h.percentile, h.max_window_pixels)
    by_fp = pd.Series(heights.to_numpy(), index=unique["footprint_id"].to_numpy())
    return key.map(by_fp).astype("Float64"), {**asdict(stats), "percentile": h.percentile}


def _merged_raster(a: dict | None, b: dict | None) -> dict | None:
    if a is None or b is None:
        return a or b
    out = dict(a)
    for k in ("windows_read", "pixels_read", "no_pixel_centre"):
        out[k] = a.get(k, 0) + b.get(k, 0)
    out["max_window_pixels"] = max(a.get("max_window_pixels", 0), b.get("max_window_pixels", 0))
    return out


def check_buildings(
    source: Source,
    model: Model,
    heights: HeightSource | None,
    stage: Path,
    scheduler: str,
    workers: int | None,
) -> dict[str, Any]:
    """Pass 1 over every batch; stage the checked rows and the run-wide results.

    Writes ``stage/checked/<batch>.parquet`` (+ ``.repeat.npy``: rows whose footprint an
    earlier row has), ``stage/dropped.parquet``, ``stage/repairs.parquet`` and
    ``stage/cohorts.json`` (the cohort statistics). Returns counts for the run report.
    """
    t0 = time.perf_counter()
    folder = stage / CHECKED
    shutil.rmtree(folder, ignore_errors=True)  # a retried step starts from nothing
    folder.mkdir(parents=True)
    repeated_id = _repeated_ids(source)
    n = worker_count(workers)
    results: list[dict[str, Any]] = []
    n_records = lazy = 0

    def tasks():
        nonlocal n_records, lazy
        for k, frame in enumerate(source.batches):
            if isinstance(frame, pd.DataFrame):
                n_records += len(frame)
                positions = frame.index.to_numpy()
            else:
                n_records += frame.rows
                lazy += 1
                positions = np.arange(frame.start, frame.start + frame.rows)
            yield (
                frame,
                _of_batch(repeated_id, positions),
                source.register,
                source.existing_status,
                source.clean,
                model,
                heights,
                str(folder / f"{k:06d}.arrow"),
            )

    results = []
    with executor(scheduler, workers) as submit:
        for r in ordered_map(submit, _pass1, tasks(), window=2 * n):
            results.append(r)
            report_progress("buildings", n_records, source.total_records or n_records)
    repeats = _repeated_footprints(results, folder)
    dropped = StringTableWriter(stage / "dropped_checked.parquet", DROPPED_COLUMNS)
    repairs = StringTableWriter(stage / "repairs.parquet", REPAIR_COLUMNS)
    left_out = source.dropped() if callable(source.dropped) else source.dropped
    if left_out is not None:
        dropped.add(left_out)
    if source.repairs is not None:
        repairs.add(source.repairs)
    try:
        counts, years = [], []
        raster = None
        for k, (r, rep) in enumerate(zip(results, repeats, strict=True)):
            stem = folder / f"{k:06d}"
            np.save(f"{stem}.repeat.npy", rep)
            dropped.add_file(f"{stem}.dropped.parquet")
            if Path(f"{stem}.repairs0.parquet").exists():
                repairs.add_file(f"{stem}.repairs0.parquet")
            # repairs after the footprint check: not for footprints left out as repeated
            later = pd.read_parquet(f"{stem}.repairs1.parquet")
            if rep.any():
                ids = feather.read_table(f"{stem}.arrow", columns=["building_id"])["building_id"]
                gone = set(ids.to_numpy(zero_copy_only=False)[rep].tolist())
                later = later[~later["record_id"].isin(gone)]
            repairs.add(later)
            rows = feather.read_table(f"{stem}.arrow", columns=_COHORT_COLUMNS).to_pandas()
            rows = rows.loc[~rep]
            counts.append(cohort_counts(rows, pd.Series("all", index=rows.index, dtype="string")))
            years.append(year_counts(rows))
            raster = _merged_raster(raster, r["raster"])
    finally:
        dropped.close()
        repairs.close()
    cohorts = pd.concat(counts, ignore_index=True)
    structure, floors = cohort_statistics(cohorts)
    (stage / "cohorts.json").write_text(
        json.dumps(
            {
                "structure": structure.astype(str).to_dict(),
                "floors": floors.astype(float).to_dict(),
            }
        )
    )
    fill = known_years_fill(years, (structure, floors), model.fallback_construction_year)
    write_year_fill(fill, stage)
    kept = sum(int(r["rows"]) - int(rep.sum()) for r, rep in zip(results, repeats, strict=True))
    return {
        "records_read": source.records_read
        if source.records_read is not None
        else n_records + (len(left_out) if left_out is not None else 0),
        "counted_in_buildings": source.counted_in_buildings,
        "batches": len(results),
        "batches_read_by_workers": lazy,
        "buildings": kept,
        "repeated_footprints": int(sum(int(rep.sum()) for rep in repeats)),
        "raster": raster,
        "worker_seconds": round(sum(r["seconds"] for r in results), 3),
        "seconds": round(time.perf_counter() - t0, 3),
    }


def _statistics(stage: Path) -> tuple[pd.Series, pd.Series]:
    data = json.loads((stage / "cohorts.json").read_text())
    structure = pd.Series(data["structure"], dtype="string")
    floors = pd.Series(data["floors"], dtype="Float64")
    structure.index = structure.index.astype("string")
    floors.index = floors.index.astype("string")
    return structure, floors


def _pass2(
    path: str,
    model: Model,
    statistics: tuple[pd.Series, pd.Series],
    crs: object,
    fill: YearFill | None,
) -> tuple:
    """Pass 2 of one batch (runs on a worker): finish it and make its layer table."""
    t0 = time.perf_counter()
    rows, shapes, wkb = unstage_batch(path)
    repeated = np.load(path.removesuffix(".arrow") + ".repeat.npy")
    buildings, taken, dropped, sums = finish_batch(rows, shapes, repeated, statistics, model, fill)
    table = None
    if len(buildings):
        types = geometry_type_names(shapes.type_id[taken], shapes.has_z[taken])
        table = wkb_layer_table(
            buildings, wkb.take(pa.array(taken)), shapes.bounds[taken], types, crs
        )
    return table, dropped, sums, time.perf_counter() - t0


def finish_buildings(
    model: Model, stage: Path, out: Path, crs: object, scheduler: str, workers: int | None
) -> dict[str, Any]:
    """Pass 2 over the staged batches: write ``out`` (the buildings layer) in batch order,
    stage the run's sums (``stage/sums/``) and the left-out records
    (``stage/dropped.parquet``). Returns counts and timings."""
    t0 = time.perf_counter()
    statistics = _statistics(stage)
    fill = read_year_fill(stage)
    paths = sorted(str(p) for p in (stage / CHECKED).glob("*.arrow"))
    n = worker_count(workers)
    schema: pa.Schema | None = None
    parts: list[Sums] = []
    merged: Sums | None = None
    dropped = StringTableWriter(stage / "dropped.parquet", DROPPED_COLUMNS)
    dropped.add_file(stage / "dropped_checked.parquet")
    written, worker_s, write_s = 0, 0.0, 0.0
    # the layer as one GeoParquet file, its 'geo' metadata that of every batch together
    # (a stored Arrow schema would carry the first batch's bounding box: LayerWriter)
    try:
        with LayerWriter(out) as writer, executor(scheduler, workers) as submit:
            args = ((p, model, statistics, crs, fill) for p in paths)
            finished = ordered_map(submit, _pass2, args, window=2 * n)
            for done, (table, gone, sums, seconds) in enumerate(finished, start=1):
                report_progress("stocks", done, len(paths))
                worker_s += seconds
                tw = time.perf_counter()
                dropped.add(gone)
                parts.append(sums)
                if len(parts) >= SUMS_FOLD:  # keep the sums small: fold them now and then
                    merged = Sums.merged([merged, *parts] if merged is not None else parts)
                    parts = []
                if table is not None:
                    if schema is None:
                        schema = table.schema
                    elif not table.schema.equals(schema):
                        table = table.cast(schema).replace_schema_metadata(table.schema.metadata)
                    writer.write(table)
                    written += table.num_rows
                write_s += time.perf_counter() - tw
            failpoint("stocks:computed")
    finally:
        dropped.close()
        forget_locators()  # not needed after pass 2: the later steps get the memory
    sums = Sums.merged([merged, *parts] if merged is not None else parts) if paths else None
    if sums is not None:
        write_sums(sums, stage / SUMS)
    return {
        "buildings": written,
        "batches": len(paths),
        "worker_seconds": round(worker_s, 3),
        "write_seconds": round(write_s, 3),
        "seconds": round(time.perf_counter() - t0, 3),
        "imputed_from_cohort_peers": sums.imputed_from_peers if sums is not None else {},
    }


def rules_model(
    rules: ArchetypeRules,
    p: Pipeline,
    run_year: int,
    storey_height_m: float | dict[str, float],
    materials: list[str],
    kg_m2: pd.DataFrame,
    unit_quantiles: pd.DataFrame,
    archetypes: list[str],
    districts: gpd.GeoDataFrame | None,
) -> Model:
    """The run's :class:`~mfa.core.kernel.Model` from its loaded tables."""
    from mfa.buildings.quality import area_of_use_bounds

    return Model(
        rules=rules,
        run_year=run_year,
        storey_height_m=storey_height_m,
        valid_bounds=area_of_use_bounds(p.crs),
        materials=tuple(materials),
        kg_m2=kg_m2,
        unit_quantiles=unit_quantiles,
        archetypes=tuple(archetypes),
        district_ids=(
            districts["district_id"].astype(str).to_numpy(object) if districts is not None else None
        ),
        district_geoms=districts.geometry.values if districts is not None else None,
        district_key=district_key(districts.geometry.values) if districts is not None else "",
        cell_size_m=p.grid.cell_size_m if p.grid is not None else None,
        fallback_construction_year=(
            p.dynamics.fallback_construction_year if p.dynamics is not None else None
        ),
    )

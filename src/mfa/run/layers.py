"""The steps that make the aggregate layers from the run's sums (districts, quality,
grid, rasters, flows) and the QGIS files (GeoPackage, styles, project)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import shapely

from mfa.buildings.report import quality_layer
from mfa.config import Pipeline
from mfa.crs import as_crs
from mfa.engine import read_sums
from mfa.errors import ConfigError
from mfa.executor import executor, ordered_map, worker_count
from mfa.failpoints import failpoint
from mfa.io.geoparquet import (
    ROW_GROUP_SIZE,
    layer_table,
    read_layer,
    wkb_type_ids,
    write_layer,
)
from mfa.io.layerwriter import LayerWriter
from mfa.io.qgis import GPKG, PROJECT, LayerGeometry, write_qgis_outputs
from mfa.io.rasters import write_cog
from mfa.parallel import without_cyclic_gc
from mfa.run.context import (
    DISTRICTS,
    GRID,
    QGIS_LAYERS,
    QUALITY,
    _pipeline,
    _report,
    _run_tables,
    log,
)
from mfa.schema import material_columns
from mfa.stocks.aggregate import district_coverage, district_layer
from mfa.stocks.grid import grid_array, grid_layer
from mfa.stocks.uncertainty import (
    PartsMap,
    floor_matrix,
    group_percentiles,
)

#: Grid cells made, given their percentiles and written at a time (a multiple of the
#: layers' row group size, so the file is that of one piece): the grid layer is never
#: whole in memory (a national run at 100 m has about a million cells).
GRID_PIECE = 2 * ROW_GROUP_SIZE


@contextmanager
def _parts_map(p: Pipeline) -> Iterator[PartsMap]:
    """The run's executor as a ``map_parts`` for the Monte Carlo percentiles."""
    with executor(p.compute.scheduler, p.compute.workers) as submit:
        window = 2 * worker_count(p.compute.workers)
        yield lambda fn, args: ordered_map(submit, fn, args, window)


def _with(frame: gpd.GeoDataFrame, extra: pd.DataFrame, crs: str) -> gpd.GeoDataFrame:
    out = pd.concat([frame.reset_index(drop=True), extra.reset_index(drop=True)], axis=1)
    return gpd.GeoDataFrame(out, geometry="geometry", crs=crs)


def _write_rasters(work: Path, cells: pd.DataFrame, sums: list[str], p: Pipeline) -> list[str]:
    """One cloud-optimised GeoTIFF per material (and the total), t/ha, on the grid, from
    the occupied cells' sums indexed by (``iy``, ``ix``)."""
    assert p.grid is not None
    size = p.grid.cell_size_m
    iy = np.asarray(cells.index.get_level_values(0), dtype=np.int64)
    ix = np.asarray(cells.index.get_level_values(1), dtype=np.int64)
    if len(ix):
        width, height = int(ix.max() - ix.min()) + 1, int(iy.max() - iy.min()) + 1
        if width * height > p.grid.max_raster_cells:
            raise ConfigError(
                f"{p.source_file}: grid.cell_size_m = {size:g} m over the buildings' extent "
                f"({width * size / 1000:,.1f} km × {height * size / 1000:,.1f} km) needs "
                f"{width * height:,} raster cells ({width * height * 8 / 2**30:,.1f} GiB), "
                f"more than grid.max_raster_cells = {p.grid.max_raster_cells:,}; choose a "
                "larger cell size, or set grid.rasters = false"
            )
    names = []
    for col in sums:
        density = cells[col].to_numpy(dtype=float) / (size * size / 10_000.0)
        arr, col0, top = grid_array(ix, iy, density)
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
    tables = _run_tables(work)
    materials, archetypes, draws = tables.materials, tables.archetypes, tables.draws
    sums_cols = ["mass_t", *material_columns(materials)]
    sums = read_sums(work / "stage")
    q = tuple(p.uncertainty.percentiles)
    out: Path | None = None
    if p.sources.districts is not None:
        districts = read_layer(work / "stage" / "districts_input.parquet")
        result = district_layer(sums.districts, districts, sums_cols, name_column="district_name")
        ids = pd.Index(result["district_id"].astype(object), name="district_id")
        floor = floor_matrix(sums.district_archetypes, ids, archetypes)
        with _parts_map(p) as map_parts:
            pct, error = group_percentiles(floor, draws, materials, q, map_parts=map_parts)
        out = write_layer(_with(result, pct, as_crs(p.crs)), work / DISTRICTS)
        write_layer(quality_layer(sums.districts, districts), work / QUALITY)
        report["districts"] = len(result)
        report["coverage"] = district_coverage(result)
        report["draw_conservation_max_rel_error"] = error
    else:
        report["districts_skipped"] = "no [sources.districts] in the pipeline file"
    if p.grid is not None:
        cells = sums.cells[sums.cells["building_count"] > 0].sort_index()
        floor = floor_matrix(sums.cell_archetypes, cells.index, archetypes)
        error = 0.0
        crs = as_crs(p.crs)
        with LayerWriter(work / GRID) as writer, _parts_map(p) as map_parts:
            for start in range(0, max(len(cells), 1), GRID_PIECE):
                part = slice(start, start + GRID_PIECE)
                pct, e = group_percentiles(floor[part], draws, materials, q, map_parts=map_parts)
                layer = _with(grid_layer(cells.iloc[part], p.grid.cell_size_m, crs), pct, crs)
                writer.write(layer_table(layer))
                error = max(error, e)
        del floor
        report["grid_cells"] = len(cells)
        report["grid_draw_conservation_max_rel_error"] = error
        if p.grid.rasters:
            report["rasters"] = _write_rasters(work, cells, sums_cols, p)
    report["seconds"] = round(time.perf_counter() - t0, 3)
    _report(work, "districts", report)
    return out


#: Layers written into the GeoPackage from their row groups, and the columns their style
#: needs (their size grows with the city: buildings, and grid cells with its area).
_STREAMED = {"buildings": ["mass_t"], "grid": ["mass_t_per_ha"]}


def _streamed(path: Path, columns: list[str]) -> tuple[pd.DataFrame, LayerGeometry, Any]:
    """A GeoParquet layer for the GeoPackage without parsing its geometries: the columns
    its style needs, its :class:`LayerGeometry` (types from the WKB headers, extent from
    the metadata) and its row groups as Arrow tables (read when written)."""
    source = pq.ParquetFile(path)
    styled = source.read(columns=columns).to_pandas()
    types = np.concatenate(
        [
            wkb_type_ids(source.read_row_group(i, columns=["geometry"])["geometry"])
            for i in range(source.num_row_groups)
        ]
        or [np.zeros(0, dtype=np.int64)]
    )
    # the file's key-value ``geo``: that of every batch (LayerWriter)
    box = json.loads(source.metadata.metadata[b"geo"])["columns"]["geometry"].get("bbox")
    batches = (
        source.read_row_group(i).drop_columns(["bbox"]) for i in range(source.num_row_groups)
    )
    return styled, LayerGeometry(types, tuple(box) if box else None), batches


def _flows_geometry(flows: pd.DataFrame, districts: pd.DataFrame | None) -> LayerGeometry:
    """The flows view's geometries: each row's district polygon (none without districts)."""
    if districts is None or not len(flows):
        return LayerGeometry(np.full(len(flows), -1, dtype=np.int64), None)
    ids = pd.Series(
        shapely.get_type_id(np.asarray(districts.geometry.values)),
        index=districts["district_id"].astype(object),
    )
    types = flows["district_id"].astype(object).map(ids).fillna(-1).to_numpy(dtype=np.int64)
    # (the distinct ids first: isin on 1.4 M Arrow strings went element by element)
    wanted = pd.unique(flows["district_id"].astype(object).to_numpy())
    used = districts[districts["district_id"].astype(object).isin(wanted)]
    b = used.geometry.total_bounds if len(used) else None
    return LayerGeometry(types, None if b is None else tuple(float(v) for v in b))


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
    layers: dict[str, pd.DataFrame] = {}
    shapes: dict[str, LayerGeometry] = {}
    batches: dict[str, Any] = {}
    for name, f in QGIS_LAYERS.items():
        if not (work / f).exists():
            continue
        if name in _STREAMED:  # large: into the GeoPackage row group by row group
            layers[name], shapes[name], batches[name] = _streamed(work / f, _STREAMED[name])
        elif name == "flows":  # the GeoPackage joins the district polygons in a view
            names = [c for c in pq.read_schema(work / f).names if c not in ("geometry", "bbox")]
            layers[name] = pd.read_parquet(work / f, columns=names)
        else:
            layers[name] = read_layer(work / f)
    if "flows" in layers:
        shapes["flows"] = _flows_geometry(layers["flows"], layers.get("districts"))
    years = (p.dynamics.base_year, p.dynamics.horizon) if p.dynamics is not None else None
    written = write_qgis_outputs(
        work,
        layers,
        p.crs,
        p.name,
        years,
        geometries=shapes,
        batches=batches,
    )
    failpoint("qgis:written")
    _report(work, "qgis", {**written, "seconds": round(time.perf_counter() - t0, 3)})
    log.info("QGIS project %s, layers in %s", PROJECT, GPKG)
    return work / PROJECT

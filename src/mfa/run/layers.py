"""The step that makes the aggregate layers from the run's sums (districts, quality,
grid, rasters); the flows are :mod:`mfa.run.flows`, the QGIS files
:mod:`mfa.run.qgisfiles`."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd

from mfa.buildings.report import quality_layer
from mfa.config import Pipeline
from mfa.crs import as_crs
from mfa.engine import read_sums
from mfa.errors import ConfigError
from mfa.executor import executor, ordered_map, worker_count
from mfa.io.geoparquet import (
    ROW_GROUP_SIZE,
    layer_table,
    read_layer,
    write_layer,
)
from mfa.io.layerwriter import LayerWriter
from mfa.io.rasters import write_cog
from mfa.parallel import without_cyclic_gc
from mfa.run.context import (
    DISTRICTS,
    GRID,
    QUALITY,
    _pipeline,
    _report,
    _run_tables,
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

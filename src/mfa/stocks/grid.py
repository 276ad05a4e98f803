"""Exact aggregation of building stocks to a regular square grid (pure)."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

__all__ = ["aggregate_grid", "grid_array", "grid_index", "grid_layer"]


def grid_index(x: np.ndarray, y: np.ndarray, cell_size_m: float) -> tuple[np.ndarray, np.ndarray]:
    """Column and row index of the cell holding each point, on a grid anchored at (0, 0).

    A point on a cell edge belongs to the cell above/right of it (floor), so each point
    is in exactly one cell, and cells are the same in every run and every pipeline of a CRS.
    """
    if cell_size_m <= 0:
        raise ValueError(f"cell size must be > 0 m, got {cell_size_m}")
    return (
        np.floor(np.asarray(x) / cell_size_m).astype(np.int64),
        np.floor(np.asarray(y) / cell_size_m).astype(np.int64),
    )


def aggregate_grid(
    points: np.ndarray,
    values: pd.DataFrame,
    cell_size_m: float,
    crs: object,
) -> tuple[gpd.GeoDataFrame, np.ndarray]:
    """Sum ``values`` per grid cell of each building's representative point.

    Parameters
    ----------
    points
        Representative points (shapely) of the buildings, in a projected CRS (m).
    values
        Columns to sum (t, m²), aligned with ``points``.
    cell_size_m
        Edge of a square cell (m).

    Returns
    -------
    cells, cell_of_building
        Only cells holding at least one building, sorted by row then column: ``cell_id``
        (``E<x>_N<y>``, lower-left corner in m), ``ix``, ``iy``, ``building_count``, the
        sums, ``area_ha`` and ``mass_t_per_ha``; the position of each building's cell.
    """
    ix, iy = grid_index(shapely.get_x(points), shapely.get_y(points), cell_size_m)
    codes, uniques = pd.factorize(pd.MultiIndex.from_arrays([iy, ix]), sort=True)
    sums = values.astype(float).groupby(codes).sum().sort_index()
    sums.index = uniques
    sums.insert(0, "building_count", np.bincount(codes, minlength=len(uniques)))
    return grid_layer(sums, cell_size_m, crs), codes


def grid_layer(sums: pd.DataFrame, cell_size_m: float, crs: object) -> gpd.GeoDataFrame:
    """The grid layer from per-cell sums indexed by (``iy``, ``ix``) with
    ``building_count`` and summed columns (t, m²): cells sorted by row then column, with
    ``cell_id`` (``E<x>_N<y>``, lower-left corner in m), ``ix``, ``iy``, the sums,
    ``area_ha`` and ``mass_t_per_ha``."""
    sums = sums[sums["building_count"] > 0].sort_index()
    cy = np.asarray(sums.index.get_level_values(0), dtype=np.int64)
    cx = np.asarray(sums.index.get_level_values(1), dtype=np.int64)
    x0, y0 = cx * cell_size_m, cy * cell_size_m
    ids = [f"E{a:g}_N{b:g}" for a, b in zip(x0, y0, strict=True)]
    cells = pd.DataFrame(
        {
            "cell_id": pd.array(ids, dtype="string"),
            "ix": cx,
            "iy": cy,
            "building_count": sums["building_count"].to_numpy(dtype=np.int64),
        }
    )
    rest = sums.drop(columns="building_count").astype(float).reset_index(drop=True)
    cells = pd.concat([cells, rest], axis=1)
    cells["area_ha"] = cell_size_m * cell_size_m / 10_000.0
    if "mass_t" in cells.columns:
        cells["mass_t_per_ha"] = cells["mass_t"] / cells["area_ha"]
    geometry = shapely.box(x0, y0, x0 + cell_size_m, y0 + cell_size_m)
    return gpd.GeoDataFrame(cells, geometry=geometry, crs=crs)


def grid_array(
    ix: np.ndarray, iy: np.ndarray, values: np.ndarray, nodata: float = 0.0
) -> tuple[np.ndarray, int, int]:
    """Cell values as a north-up 2-D array covering the cells' bounding box.

    Returns the array (rows from north to south) and the column and row index (``ix``
    of the first column, ``iy`` of the top row) that anchor it.
    """
    ix, iy = np.asarray(ix), np.asarray(iy)
    col0, top = int(ix.min()), int(iy.max())
    width, height = int(ix.max()) - col0 + 1, top - int(iy.min()) + 1
    arr = np.full((height, width), nodata, dtype="float64")
    arr[top - iy, ix - col0] = values
    return arr, col0, top

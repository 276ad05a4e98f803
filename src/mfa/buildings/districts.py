"""Assign buildings to districts by representative point."""

from __future__ import annotations

import threading

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from mfa.crs import same_crs

__all__ = ["assign_districts", "representative_points"]


def representative_points(geometry: gpd.GeoSeries) -> np.ndarray:
    """A point guaranteed inside each geometry (the point itself for points)."""
    return shapely.point_on_surface(geometry.values)


def assign_districts(
    geometry: gpd.GeoSeries, districts: gpd.GeoDataFrame, id_column: str = "district_id"
) -> pd.Series:
    """The id of the district that holds each building's representative point.

    A point on a shared border touches two polygons; it is given to the first of them in
    ``districts`` order, so every building is counted exactly once. Buildings outside every
    district get <NA>. Both inputs must be in the same CRS.

    Returns
    -------
    pandas.Series
        String dtype, aligned with ``geometry``.
    """
    if (
        geometry.crs is not None
        and districts.crs is not None
        and not same_crs(geometry.crs, districts.crs)
    ):
        raise ValueError(f"CRS differ: buildings {geometry.crs}, districts {districts.crs}")
    points = representative_points(geometry)
    tree = shapely.STRtree(districts.geometry.values)
    pt_idx, dist_idx = tree.query(points, predicate="intersects")
    # first district (lowest position) per point
    order = np.lexsort((dist_idx, pt_idx))
    pt_idx, dist_idx = pt_idx[order], dist_idx[order]
    first = np.ones(len(pt_idx), dtype=bool)
    first[1:] = pt_idx[1:] != pt_idx[:-1]
    result = pd.Series(pd.NA, index=geometry.index, dtype="string")
    ids = districts[id_column].astype("string").to_numpy()
    values = result.to_numpy(dtype=object)
    values[pt_idx[first]] = ids[dist_idx[first]]
    return pd.Series(values, index=geometry.index, dtype="string")


class PointLocator:
    """Find the polygon holding each point, for millions of points against thousands of
    polygons, without creating point geometries.

    A regular grid over the polygons' extent is built once: a cell that one polygon covers
    entirely answers its points at once; points in the other cells are tested exactly
    (``shapely.intersects_xy`` on prepared polygons) against the few polygons whose boxes
    meet the cell, lowest position first, so a point on a shared border goes to the first
    polygon as in :func:`assign_districts`.

    One locator may serve many threads: they share one prepared copy of the polygons and
    take turns (a lock) for the exact tests, which are a small part of a batch's work.
    GEOS builds a prepared polygon's indexes lazily, at its first use, and not
    thread-safely (libgeos/geos#825): two threads preparing the same parish polygons
    (3,000 vertices) at once crashed a run. A copy per thread was safe too, but costs
    135-270 MB per thread for a country's 1,369 parish outlines.
    """

    def __init__(self, polygons: np.ndarray, cells_per_polygon: float = 4.0) -> None:
        polys = np.asarray(polygons, dtype=object)
        self._wkb = shapely.to_wkb(polys)
        self._lock = threading.Lock()
        self._polygons: np.ndarray | None = None
        n = len(polys)
        if n == 0:
            self.shape = (0, 0)
            return
        x0, y0, x1, y1 = shapely.total_bounds(polys)
        span_x, span_y = max(x1 - x0, 1e-9), max(y1 - y0, 1e-9)
        size = max(np.sqrt(span_x * span_y / (cells_per_polygon * n)), 1e-9)
        nx = min(int(np.ceil(span_x / size)), 4096)
        ny = min(int(np.ceil(span_y / size)), 4096)
        self.origin, self.size = (x0, y0), (span_x / nx, span_y / ny)
        self.shape = (nx, ny)
        ix, iy = np.meshgrid(np.arange(nx), np.arange(ny), indexing="ij")
        ix, iy = ix.ravel(), iy.ravel()
        # cells widened by a margin far above rounding: a point's cell is found by a
        # division, which may put a point on a cell's edge into its neighbour
        margin = 1e-6 * max(self.size)
        cx0 = x0 + ix * self.size[0] - margin
        cy0 = y0 + iy * self.size[1] - margin
        cells = shapely.box(
            cx0, cy0, cx0 + self.size[0] + 2 * margin, cy0 + self.size[1] + 2 * margin
        )
        cell_i, poly_i = shapely.STRtree(polys).query(cells, predicate="intersects")
        order = np.lexsort((poly_i, cell_i))
        cell_i, poly_i = cell_i[order], poly_i[order]
        covered = shapely.covers(polys[poly_i], cells[cell_i])
        owner = np.full(nx * ny, -1, dtype=np.int64)
        # the first covering polygon owns a cell, unless an earlier polygon also meets it
        first_meeting = np.full(nx * ny, np.iinfo(np.int64).max)
        np.minimum.at(first_meeting, cell_i, poly_i)
        own = covered & (poly_i == first_meeting[cell_i])
        owner[cell_i[own]] = poly_i[own]
        self.owner = owner
        test = owner[cell_i] < 0
        cell_t, poly_t = cell_i[test], poly_i[test]
        counts = np.bincount(cell_t, minlength=nx * ny)
        self.cand_start = np.concatenate([[0], np.cumsum(counts)])
        self.cand = poly_t  # sorted by cell, then polygon position

    def _prepared(self) -> np.ndarray:
        """The prepared polygons (made at the first call); call with ``_lock`` held."""
        if self._polygons is None:
            self._polygons = shapely.from_wkb(self._wkb)
            shapely.prepare(self._polygons)
        return self._polygons

    def locate(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Position of the polygon holding each point (x, y in the polygons' CRS), or -1."""
        x = np.asarray(x, dtype=float)
        y = np.asarray(y, dtype=float)
        out = np.full(len(x), -1, dtype=np.int64)
        nx, ny = self.shape
        if nx == 0 or len(x) == 0:
            return out
        with np.errstate(invalid="ignore"):
            fx = (x - self.origin[0]) / self.size[0]
            fy = (y - self.origin[1]) / self.size[1]
        # points on the extent's edges (within rounding, which the cells' margin covers)
        # belong to the edge cells
        e = 1e-6
        inside = (fx > -e) & (fx < nx + e) & (fy > -e) & (fy < ny + e)
        ix = np.clip(np.floor(fx), 0, nx - 1)
        iy = np.clip(np.floor(fy), 0, ny - 1)
        cell = np.where(inside, ix * ny + iy, 0).astype(np.int64)
        own = np.where(inside, self.owner[cell], -1)
        out[own >= 0] = own[own >= 0]
        todo = np.flatnonzero(inside & (own < 0))
        k = 0
        while len(todo):
            c = cell[todo]
            n_cand = self.cand_start[c + 1] - self.cand_start[c]
            todo, c = todo[n_cand > k], c[n_cand > k]
            if not len(todo):
                break
            poly = self.cand[self.cand_start[c] + k]
            with self._lock:
                hit = shapely.intersects_xy(self._prepared()[poly], x[todo], y[todo])
            out[todo[hit]] = poly[hit]
            todo = todo[~hit]
            k += 1
        return out

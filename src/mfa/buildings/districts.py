"""Assign buildings to districts by representative point."""

from __future__ import annotations

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
    (``shapely.intersects_xy``) against the few polygons that meet the cell, lowest
    position first, so a point on a shared border goes to the first polygon as in
    :func:`assign_districts`.

    A polygon is tested as its piece inside the cell (``clip_by_rect`` to the cell widened
    by a margin): a few hundred vertices where a parish outline has thousands, fast
    without a prepared index. Prepared outlines took about 0.87 GB for 4,356 synthetic
    parishes of 3,000 vertices (the pieces: about 0.5 GB), and GEOS builds a prepared
    polygon's index lazily and not thread-safely (libgeos/geos#825), so threads took
    turns; unprepared pieces are read-only and tested by many threads at once.

    Exact as the whole polygon: a piece keeps the polygon's vertices inside the cell; the
    edges it cuts end at new vertices (computed, so off the original edge by rounding).
    A point farther than :attr:`near` from every edge at a new vertex is inside the piece
    exactly when inside the polygon (the point is inside the cell, the piece's other edges
    are the polygon's own); the rare nearer points are tested against the whole polygon.
    """

    def __init__(self, polygons: np.ndarray, cells_per_polygon: float = 16.0) -> None:
        polys = np.asarray(polygons, dtype=object)
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
        margin = 1e-3 * max(self.size)
        wx, wy = self.size[0] + 2 * margin, self.size[1] + 2 * margin
        cx0 = x0 + ix * self.size[0] - margin
        cy0 = y0 + iy * self.size[1] - margin
        cells = shapely.box(cx0, cy0, cx0 + wx, cy0 + wy)
        cell_i, poly_i = shapely.STRtree(polys).query(cells, predicate="intersects")
        order = np.lexsort((poly_i, cell_i))
        cell_i, poly_i = cell_i[order], poly_i[order]
        # a loop over (cell, polygon) pairs, not over points: clip_by_rect takes one
        # rectangle a call, and is much faster than a general intersection
        pieces = np.array(
            [
                shapely.clip_by_rect(polys[k], x, y, x + wx, y + wy)
                for k, x, y in zip(
                    poly_i.tolist(), cx0[cell_i].tolist(), cy0[cell_i].tolist(), strict=True
                )
            ]
            + [None],  # (a 1-d array of geometries even for one pair)
            dtype=object,
        )[:-1]
        # a piece that is the whole widened cell: the polygon covers the cell
        covered = shapely.equals(pieces, cells[cell_i])
        owner = np.full(nx * ny, -1, dtype=np.int64)
        # the first covering polygon owns a cell, unless an earlier polygon also meets it
        first_meeting = np.full(nx * ny, np.iinfo(np.int64).max)
        np.minimum.at(first_meeting, cell_i, poly_i)
        own = covered & (poly_i == first_meeting[cell_i])
        owner[cell_i[own]] = poly_i[own]
        self.owner = owner
        test = owner[cell_i] < 0
        counts = np.bincount(cell_i[test], minlength=nx * ny)
        self.cand_start = np.concatenate([[0], np.cumsum(counts)])
        self.cand = poly_i[test]  # sorted by cell, then polygon position
        self._pieces = pieces[test]  # each candidate polygon inside its cell
        rects = np.column_stack([cx0, cy0, cx0 + wx, cy0 + wy])[cell_i[test]]
        self._cut_start, self._cuts = _cut_edges(self._pieces, rects)
        self._polygons = polys  # for the points near a cut edge
        #: Distance (CRS units) from a cut edge within which the whole polygon decides:
        #: far above the rounding of the new vertices (~1e-16 of the coordinates).
        self.near = 1e-9 * max(float(np.abs([x0, y0, x1, y1]).max()), 1.0)

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
            at = self.cand_start[c] + k
            poly = self.cand[at]
            hit = shapely.intersects_xy(self._pieces[at], x[todo], y[todo])
            near = _near_segments(x[todo], y[todo], self._cut_start, self._cuts, at, self.near)
            if near.any():  # at a cut edge: the whole polygon decides
                rows = np.flatnonzero(near)
                hit[rows] = shapely.intersects_xy(
                    self._polygons[poly[rows]], x[todo[rows]], y[todo[rows]]
                )
            out[todo[hit]] = poly[hit]
            todo = todo[~hit]
            k += 1
        return out


def _cut_edges(pieces: np.ndarray, rects: np.ndarray, chunk: int = 4096) -> tuple:
    """The edges ``clip_by_rect`` cut, per piece (CSR): ``start`` (pieces + 1) and the
    edges as rows of x0, y0, x1, y1. An edge is cut where an end lies on the rectangle's
    border and the edge is not a stretch of that border (a new vertex has one coordinate
    set to the rectangle's; an original vertex lying on the border exactly counts too,
    which only sends more points to the whole polygon). ``rects``: pieces × (xmin, ymin,
    xmax, ymax)."""
    counts = np.zeros(len(pieces), dtype=np.int64)
    found = []
    for start in range(0, len(pieces), chunk):
        xy, of = shapely.get_coordinates(pieces[start : start + chunk], return_index=True)
        if not len(xy):
            continue
        r = rects[start + of]
        on_x = (xy[:, 0] == r[:, 0]) | (xy[:, 0] == r[:, 2])
        on_y = (xy[:, 1] == r[:, 1]) | (xy[:, 1] == r[:, 3])
        new = on_x | on_y
        side = (on_x[:-1] & on_x[1:] & (xy[:-1, 0] == xy[1:, 0])) | (
            on_y[:-1] & on_y[1:] & (xy[:-1, 1] == xy[1:, 1])
        )
        edge = np.flatnonzero((of[:-1] == of[1:]) & (new[:-1] | new[1:]) & ~side)
        counts += np.bincount(start + of[edge], minlength=len(pieces))
        found.append(np.column_stack([xy[edge], xy[edge + 1]]))
    segments = np.concatenate(found) if found else np.zeros((0, 4))
    return np.concatenate([[0], np.cumsum(counts)]), segments


def _near_segments(
    x: np.ndarray, y: np.ndarray, start: np.ndarray, segments: np.ndarray, at: np.ndarray, d: float
) -> np.ndarray:
    """Whether each point (x, y) lies within ``d`` of one of the segments of its piece
    ``at`` (CSR ``start``, rows of x0, y0, x1, y1)."""
    counts = start[at + 1] - start[at]
    point = np.repeat(np.arange(len(x)), counts)
    first = np.repeat(start[at] - (np.cumsum(counts) - counts), counts)
    seg = segments[first + np.arange(len(point))]
    ax, ay, bx, by = seg.T
    px, py = x[point], y[point]
    dx, dy = bx - ax, by - ay
    length2 = dx * dx + dy * dy
    with np.errstate(invalid="ignore", divide="ignore"):
        t = np.clip(np.where(length2 > 0, ((px - ax) * dx + (py - ay) * dy) / length2, 0.0), 0, 1)
    close = np.hypot(px - (ax + t * dx), py - (ay + t * dy)) <= d
    return np.bincount(point[close], minlength=len(x)) > 0

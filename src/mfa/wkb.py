"""Polygon measures straight from WKB bytes, with no geometry objects in the hot path.

Creating and freeing a GEOS object per building dominates the cost of the per-building
geometry work (area, centroid, bounds). Little-endian 2D Polygon and MultiPolygon WKB (what
GeoParquet writers emit) is parsed here as arrays: one pass finds every ring's coordinates in
the byte buffer, and areas, centroids, bounding boxes and a point-in-own-footprint test are
numpy reductions over the flat coordinate array. Anything else (big-endian, Z/M, other
types, malformed bytes) goes through shapely, so every input gets an answer, the same one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import shapely

__all__ = ["PolygonMeasures", "binary_buffers", "polygon_measures"]

_POLYGON, _MULTIPOLYGON = 3, 6


def binary_buffers(arr: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Zero-copy views of a (large) binary Arrow array: bytes, offsets (n+1), valid mask."""
    if pa.types.is_binary(arr.type):
        off_type = np.int32
    elif pa.types.is_large_binary(arr.type):
        off_type = np.int64
    else:
        raise TypeError(f"expected a binary (WKB) array, got {arr.type}")
    bufs = arr.buffers()
    offsets = np.frombuffer(bufs[1], dtype=off_type)[arr.offset : arr.offset + len(arr) + 1]
    data = np.frombuffer(bufs[2], dtype=np.uint8) if bufs[2] is not None else np.zeros(0, np.uint8)
    valid = (
        np.ones(len(arr), dtype=bool)
        if arr.null_count == 0
        else arr.is_valid().to_numpy(zero_copy_only=False)
    )
    return data, offsets.astype(np.int64), valid


def _at(data: np.ndarray, dtype: str) -> np.ndarray:
    """An overlapping view of ``data``: element ``i`` is the ``dtype`` value at byte ``i``."""
    size = np.dtype(dtype).itemsize
    return np.ndarray(shape=(max(len(data) - size + 1, 0),), dtype=dtype, buffer=data, strides=(1,))


def _u32(data: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """Little-endian uint32 at each byte position (positions past the end read as 0)."""
    view = _at(data, "<u4")
    if len(view) == 0:
        return np.zeros(len(pos), dtype=np.int64)
    inside = (pos >= 0) & (pos < len(view))
    return np.where(inside, view[np.clip(pos, 0, len(view) - 1)], 0).astype(np.int64)


def _walk_polygons(
    data: np.ndarray, geom: np.ndarray, pos: np.ndarray, out: list[tuple]
) -> np.ndarray:
    """Rings of polygon bodies whose ring count sits at ``pos``; returns their end positions."""
    nrings = _u32(data, pos)
    pos = pos + 4
    k = 0
    active = np.flatnonzero(nrings > 0)
    while len(active):
        p = pos[active]
        npts = _u32(data, p)
        out.append((geom[active], p + 4, npts, np.full(len(active), k > 0)))
        pos[active] = p + 4 + 16 * npts
        k += 1
        active = active[nrings[active] > k]
    return pos


@dataclass(frozen=True)
class PolygonMeasures:
    """Per-geometry measures (arrays aligned with the input; NaN for null geometries).

    Attributes
    ----------
    area
        Planar area (CRS units², m² in a metric CRS), holes subtracted.
    x, y
        Representative point: the centroid where it lies inside the footprint, else a point on
        the surface (GEOS PointOnSurface).
    xmin, ymin, xmax, ymax
        Bounding box.
    fast
        True where the measures came from the array path (the rest went through shapely).
    """

    area: np.ndarray
    x: np.ndarray
    y: np.ndarray
    xmin: np.ndarray
    ymin: np.ndarray
    xmax: np.ndarray
    ymax: np.ndarray
    fast: np.ndarray


def _rings(data: np.ndarray, offsets: np.ndarray, cand: np.ndarray) -> tuple[dict, np.ndarray]:
    """Ring table of the candidate geometries, and the candidates that need shapely."""
    start = offsets[cand]
    end = offsets[cand + 1]
    byteorder = data[np.minimum(start, max(len(data) - 1, 0))] if len(data) else start * 0
    typ = _u32(data, start + 1)
    le = byteorder == 1
    is_poly = le & (typ == _POLYGON)
    is_multi = le & (typ == _MULTIPOLYGON)
    bad = ~(is_poly | is_multi)
    found: list[tuple] = []
    g_poly = np.flatnonzero(is_poly)
    ends = np.zeros(len(cand), dtype=np.int64)
    ends[g_poly] = _walk_polygons(data, g_poly, start[g_poly] + 5, found)
    g_multi = np.flatnonzero(is_multi)
    nparts = _u32(data, start[g_multi] + 5)
    cur = start[g_multi] + 9
    k = 0
    active = np.flatnonzero(nparts > 0)
    while len(active):
        p = cur[active]
        ok = (data[np.minimum(p, len(data) - 1)] == 1) & (_u32(data, p + 1) == _POLYGON)
        bad[g_multi[active[~ok]]] = True
        cur[active] = _walk_polygons(data, g_multi[active], p + 5, found)
        k += 1
        active = active[nparts[active] > k]
    ends[g_multi] = cur
    bad |= ends != end  # malformed or trailing bytes: let shapely decide
    if found:
        geom_i, coord0, npts, hole = (np.concatenate(c) for c in zip(*found, strict=True))
    else:
        geom_i = coord0 = npts = np.zeros(0, dtype=np.int64)
        hole = np.zeros(0, dtype=bool)
    keep = ~bad[geom_i] & (npts >= 4)
    # rings of a polygon with < 4 points are invalid: shapely
    bad[geom_i[~keep & ~bad[geom_i]]] = True
    keep = ~bad[geom_i]
    order = np.argsort(coord0[keep], kind="stable")  # buffer order = geometry order
    rings = {
        "geom": geom_i[keep][order],
        "coord0": coord0[keep][order],
        "npts": npts[keep][order],
        "hole": hole[keep][order],
    }
    return rings, bad


def polygon_measures(arr: pa.Array) -> PolygonMeasures:
    """Area, representative point and bounds of every WKB footprint in ``arr``.

    Rings are taken as closed (WKB repeats the first point). Areas follow the shoelace
    formula in coordinates relative to each ring's first point, which keeps full precision
    far from the CRS origin (as GEOS does).
    """
    data, offsets, valid = binary_buffers(arr)
    n = len(arr)
    nan = np.full(n, np.nan)
    area, px, py = nan.copy(), nan.copy(), nan.copy()
    xmin, ymin, xmax, ymax = nan.copy(), nan.copy(), nan.copy(), nan.copy()
    fast = np.zeros(n, dtype=bool)
    cand = np.flatnonzero(valid & (offsets[1:] - offsets[:-1] >= 9))
    r, bad = _rings(data, offsets, cand)
    nr = len(r["geom"])
    if nr:
        total = int(r["npts"].sum())
        ring_of = np.repeat(np.arange(nr), r["npts"])
        first = np.cumsum(r["npts"]) - r["npts"]
        within = np.arange(total) - first[ring_of]
        byte = r["coord0"][ring_of] + 16 * within
        doubles = _at(data, "<f8")
        x, y = doubles[byte], doubles[byte + 8]
        x0, y0 = x[first], y[first]
        xl, yl = x - x0[ring_of], y - y0[ring_of]
        # edge k runs from point k to k + 1; the closing point of a ring starts no edge
        xi, yi, xj, yj = xl[:-1], yl[:-1], xl[1:], yl[1:]
        # the step from a ring's closing point to the next ring's first point is no edge
        xj, yj = xj.copy(), yj.copy()
        last = (first + r["npts"] - 1)[:-1]
        xj[last], yj[last] = xi[last], yi[last]  # a zero-length edge adds nothing
        cross = xi * yj - xj * yi
        ring_e = ring_of[:-1]
        a2 = np.bincount(ring_e, cross, minlength=nr)  # 2 × signed ring area
        sx = np.bincount(ring_e, (xi + xj) * cross, minlength=nr)
        sy = np.bincount(ring_e, (yi + yj) * cross, minlength=nr)
        with np.errstate(invalid="ignore", divide="ignore"):
            cx_r = np.where(a2 != 0, x0 + sx / (3 * a2), 0.0)
            cy_r = np.where(a2 != 0, y0 + sy / (3 * a2), 0.0)
        w = np.abs(a2) / 2 * np.where(r["hole"], -1.0, 1.0)
        g = r["geom"]  # candidate-local geometry index, sorted
        nc = len(cand)
        g_area = np.bincount(g, w, minlength=nc)
        with np.errstate(invalid="ignore", divide="ignore"):
            g_cx = np.bincount(g, w * cx_r, minlength=nc) / g_area
            g_cy = np.bincount(g, w * cy_r, minlength=nc) / g_area
        degenerate = ~(g_area > 0)
        # centroid in own footprint: crossing number over every edge of the geometry
        g_e = g[ring_e]
        pxl = g_cx[g_e] - x0[ring_e]
        pyl = g_cy[g_e] - y0[ring_e]
        with np.errstate(invalid="ignore", divide="ignore"):
            straddle = (yi > pyl) != (yj > pyl)
            x_at = xi + (pyl - yi) * (xj - xi) / (yj - yi)
            crossing = straddle & (pxl < x_at)
        inside = (np.bincount(g_e, crossing, minlength=nc) % 2) == 1
        has = np.zeros(nc, dtype=bool)
        has[g] = True
        good = has & ~bad & ~degenerate
        gstart = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
        gid = g[gstart]
        ring_start = first[gstart]
        mins_x = np.minimum.reduceat(x, ring_start)
        mins_y = np.minimum.reduceat(y, ring_start)
        maxs_x = np.maximum.reduceat(x, ring_start)
        maxs_y = np.maximum.reduceat(y, ring_start)
        sel = good[gid]
        tgt = cand[gid[sel]]
        xmin[tgt], ymin[tgt], xmax[tgt], ymax[tgt] = (
            mins_x[sel],
            mins_y[sel],
            maxs_x[sel],
            maxs_y[sel],
        )
        tg = cand[good]
        area[tg] = g_area[good]
        px[tg], py[tg] = g_cx[good], g_cy[good]
        fast[tg] = True
        outside = cand[good & ~inside]
    else:
        good = np.zeros(len(cand), dtype=bool)
        outside = np.zeros(0, dtype=np.int64)
    is_slow = valid.copy()
    is_slow[cand[good]] = False
    slow = np.flatnonzero(is_slow)
    if len(slow):
        geoms = shapely.from_wkb(arr.take(pa.array(slow)).to_numpy(zero_copy_only=False))
        area[slow] = shapely.area(geoms)
        b = shapely.bounds(geoms)
        xmin[slow], ymin[slow], xmax[slow], ymax[slow] = b.T
        c = shapely.get_coordinates(shapely.centroid(geoms), include_z=False)
        ok = ~shapely.is_empty(geoms)
        cx, cy = np.full(len(slow), np.nan), np.full(len(slow), np.nan)
        cx[ok], cy[ok] = c[:, 0], c[:, 1]
        inside_slow = np.zeros(len(slow), dtype=bool)
        inside_slow[ok] = shapely.contains_xy(geoms[ok], cx[ok], cy[ok])
        px[slow], py[slow] = cx, cy
        outside = np.concatenate([outside, slow[ok & ~inside_slow]])
    if len(outside):
        outside = np.sort(outside)
        geoms = shapely.from_wkb(arr.take(pa.array(outside)).to_numpy(zero_copy_only=False))
        pts = shapely.get_coordinates(shapely.point_on_surface(geoms))
        px[outside], py[outside] = pts[:, 0], pts[:, 1]
    return PolygonMeasures(area, px, py, xmin, ymin, xmax, ymax, fast)

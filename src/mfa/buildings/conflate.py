"""Conflate footprints with register records (pure).

Register records carry the attributes (use, year, floor area, walls) but only a point;
footprints carry the shape. A register building is matched to a footprint

1. by an id link where the footprint file has one (e.g. GeoDanmark ``BBRUUID`` →
   BBR ``id_lokalId``); several footprints linked to one register building are dissolved
   into one (multi)polygon;
2. otherwise by its point lying in a footprint (a point on a shared border goes to the
   first footprint in id order).

Every register building is kept: matched ones get the footprint as geometry, unmatched
ones keep their point (``match_method`` = ``register_only``). Footprints that no register
building matched are kept with their own (imputed) attributes (``footprint_only``).
Several register buildings in one footprint stay separate rows that share the footprint
geometry, so each keeps its own floor area and archetype and no mass is counted twice.
"""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from mfa.crs import same_crs

__all__ = ["MATCH_METHODS", "conflate"]

#: Values of ``match_method``.
MATCH_METHODS = (
    "id_link",
    "point_in_footprint",
    "register_only",
    "footprint_only",
    "not_conflated",
)


def _points_in(
    pts: np.ndarray, polys: np.ndarray, tile_m: float | None
) -> tuple[np.ndarray, np.ndarray]:
    """All (point, polygon) position pairs where the point intersects the polygon.

    With ``tile_m`` the plane is cut into squares of ``tile_m`` anchored at the origin;
    a point belongs to the tile ``floor(x / tile_m), floor(y / tile_m)`` and a polygon
    is a candidate in every tile its bounding box touches (closed bounds), so a point
    meets in its own tile every polygon that can contain it (``minx <= x <= maxx``
    gives ``floor(minx / t) <= floor(x / t) <= floor(maxx / t)``): the pairs are
    exactly those of one search, and no tile holds more than its own points and the
    polygons over it (the polygons' extent is the margin). Pairs are returned sorted
    by point, then polygon.
    """
    if tile_m is None:
        p_idx, f_idx = shapely.STRtree(polys).query(pts, predicate="intersects")
    else:
        if not tile_m > 0:
            raise ValueError(f"tile_m must be > 0, not {tile_m}")
        xy = shapely.get_coordinates(pts)
        pt_tile = np.floor(xy / tile_m).astype(np.int64)
        b = shapely.bounds(polys)
        lo = np.floor(b[:, :2] / tile_m).astype(np.int64)
        hi = np.floor(b[:, 2:] / tile_m).astype(np.int64)
        # (polygon, tile) pairs: every tile of each polygon's bounding box
        nx, ny = hi[:, 0] - lo[:, 0] + 1, hi[:, 1] - lo[:, 1] + 1
        poly = np.repeat(np.arange(len(polys)), nx * ny)
        k = np.arange(len(poly)) - np.repeat(np.cumsum(nx * ny) - nx * ny, nx * ny)
        tx = lo[poly, 0] + k % nx[poly]
        ty = lo[poly, 1] + k // nx[poly]
        # one int64 key per tile, over the points' tiles (polygons elsewhere are not searched)
        x0, y0 = pt_tile.min(axis=0)
        x1, y1 = pt_tile.max(axis=0)
        span = y1 - y0 + 1
        pt_key = (pt_tile[:, 0] - x0) * span + (pt_tile[:, 1] - y0)
        inside = (tx >= x0) & (tx <= x1) & (ty >= y0) & (ty <= y1)
        poly_key = np.where(inside, (tx - x0) * span + (ty - y0), -1)
        tiles, pt_code = np.unique(pt_key, return_inverse=True)
        at = np.minimum(np.searchsorted(tiles, poly_key), len(tiles) - 1)
        poly_code = np.where(inside & (tiles[at] == poly_key), at, -1)
        keep = poly_code >= 0  # tiles without points need no search
        poly, poly_code = poly[keep], poly_code[keep]
        pt_order = np.argsort(pt_code, kind="stable")
        poly_order = np.argsort(poly_code, kind="stable")
        pt_cut = np.searchsorted(pt_code[pt_order], np.arange(len(tiles) + 1))
        poly_cut = np.searchsorted(poly_code[poly_order], np.arange(len(tiles) + 1))
        found_p, found_f = [], []
        for t in range(len(tiles)):  # one search per tile (a loop over tiles)
            tp = pt_order[pt_cut[t] : pt_cut[t + 1]]
            tf = poly[poly_order[poly_cut[t] : poly_cut[t + 1]]]
            if not len(tf):
                continue
            a, c = shapely.STRtree(polys[tf]).query(pts[tp], predicate="intersects")
            found_p.append(tp[a])
            found_f.append(tf[c])
        p_idx = np.concatenate(found_p) if found_p else np.array([], np.int64)
        f_idx = np.concatenate(found_f) if found_f else np.array([], np.int64)
    sel = np.lexsort((f_idx, p_idx))
    return p_idx[sel], f_idx[sel]


def conflate(
    register: gpd.GeoDataFrame,
    footprints: gpd.GeoDataFrame,
    link: pd.Series | None = None,
    tile_m: float | None = None,
) -> tuple[gpd.GeoDataFrame, dict[str, int | float]]:
    """Match register buildings (points) to footprints (polygons).

    Parameters
    ----------
    register
        Canonical register buildings (point geometry), same CRS as ``footprints``.
    footprints
        Canonical footprint buildings (polygons); their ``building_id`` becomes
        ``footprint_id``.
    link
        Register id per footprint (aligned with ``footprints``), <NA> where none.
    tile_m
        Side (m, CRS units) of the square tiles the point-in-footprint search is done
        in, one tile at a time (see :func:`_points_in`); None: one search over the
        whole area. The result does not depend on it.

    Returns
    -------
    buildings, report
        Register rows (matched or not) followed by unmatched footprints, sorted by
        ``building_id``, with ``footprint_id`` and ``match_method``; the report counts
        matches and gives the match rates (0…1).
    """
    if not same_crs(register.crs, footprints.crs):
        raise ValueError(f"CRS differ: register {register.crs}, footprints {footprints.crs}")
    reg = register.reset_index(drop=True).copy()
    fp = footprints.reset_index(drop=True).copy()
    fp_id = fp["building_id"].astype("string")
    n_reg, n_fp = len(reg), len(fp)
    reg_fp = np.full(n_reg, -1, dtype=np.int64)  # footprint position per register row
    method = np.array(["register_only"] * n_reg, dtype=object)
    geoms = np.array(reg.geometry.values, dtype=object)

    # 1. id links (several footprints of one register building are dissolved)
    if link is not None:
        lk = pd.Series(link.to_numpy(), dtype="string").str.strip()
        has = lk.notna() & (lk != "")
        if has.any():
            groups = pd.DataFrame({"rid": lk[has], "pos": np.flatnonzero(has)})
            first = groups.groupby("rid", sort=False)["pos"].min()
            pos_in_reg = pd.Series(np.arange(n_reg), index=reg["building_id"].astype("string"))
            hit = first.index.isin(pos_in_reg.index)
            rows = pos_in_reg[first.index[hit]].to_numpy()
            reg_fp[rows] = first[hit].to_numpy()
            method[rows] = "id_link"
            parts = gpd.GeoDataFrame(
                {"rid": groups["rid"].to_numpy()},
                geometry=fp.geometry.values[groups["pos"].to_numpy()],
                crs=fp.crs,
            )
            dissolved = parts.dissolve(by="rid").geometry
            geoms[rows] = dissolved.reindex(first.index[hit]).to_numpy()
            linked_fp = groups["pos"][groups["rid"].isin(first.index[hit])].to_numpy()
        else:
            linked_fp = np.array([], dtype=np.int64)
    else:
        linked_fp = np.array([], dtype=np.int64)

    # 2. register point in footprint, for the rest
    todo = np.flatnonzero(reg_fp < 0)
    pts = reg.geometry.values[todo]
    is_point = shapely.get_type_id(pts) == 0
    todo, pts = todo[is_point], pts[is_point]
    if len(todo) and n_fp:
        rank = np.empty(n_fp, np.int64)  # each footprint's place in id order
        rank[np.argsort(fp_id.to_numpy(dtype=object), kind="stable")] = np.arange(n_fp)
        p_idx, f_idx = _points_in(pts, fp.geometry.values, tile_m)
        sel = np.lexsort((rank[f_idx], p_idx))
        p_idx, f_idx = p_idx[sel], f_idx[sel]
        first = np.ones(len(p_idx), bool)
        first[1:] = p_idx[1:] != p_idx[:-1]
        rows = todo[p_idx[first]]
        reg_fp[rows] = f_idx[first]
        method[rows] = "point_in_footprint"
        geoms[rows] = fp.geometry.values[reg_fp[rows]]

    matched = reg_fp >= 0
    reg = reg.set_geometry(gpd.GeoSeries(geoms, crs=reg.crs))
    reg["footprint_id"] = pd.array(
        np.where(matched, fp_id.to_numpy(dtype=object)[np.maximum(reg_fp, 0)], None),
        dtype="string",
    )
    reg["match_method"] = pd.array(method, dtype="string")
    # footprint area: the register's own where it has one, else the polygon's share
    sharing = pd.Series(reg_fp[matched]).value_counts()
    fp_area = pd.Series(shapely.area(fp.geometry.values))
    share = np.where(
        matched,
        fp_area.reindex(reg_fp).to_numpy() / sharing.reindex(reg_fp).fillna(1).to_numpy(),
        np.nan,
    )
    use_fp_area = matched & reg["footprint_area_m2"].isna().to_numpy()
    reg.loc[use_fp_area, "footprint_area_m2"] = share[use_fp_area]
    reg.loc[use_fp_area, "footprint_area_source"] = fp.loc[
        reg_fp[use_fp_area], "footprint_area_source"
    ].to_numpy()

    used = np.zeros(n_fp, bool)
    used[reg_fp[matched]] = True
    used[linked_fp] = True
    rest = fp.loc[~used].copy()
    rest["footprint_id"] = rest["building_id"].astype("string")
    rest["match_method"] = pd.array(["footprint_only"] * len(rest), dtype="string")

    out = pd.concat([reg, rest], ignore_index=True)
    out = gpd.GeoDataFrame(out, geometry="geometry", crs=register.crs)
    out = out.sort_values("building_id", kind="stable").reset_index(drop=True)
    n_id = int((method == "id_link").sum())
    n_pt = int((method == "point_in_footprint").sum())
    report: dict[str, int | float] = {
        "register_buildings": n_reg,
        "matched_by_id": n_id,
        "matched_by_point": n_pt,
        "register_only": n_reg - n_id - n_pt,
        "footprints": n_fp,
        "footprints_matched": int(used.sum()),
        "footprints_only": int((~used).sum()),
        "footprints_with_several_register_buildings": int((sharing > 1).sum()),
        "register_match_rate": round((n_id + n_pt) / n_reg, 4) if n_reg else 0.0,
        "footprint_match_rate": round(float(used.mean()), 4) if n_fp else 0.0,
    }
    return out, report

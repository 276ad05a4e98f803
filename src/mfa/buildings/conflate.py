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


def conflate(
    register: gpd.GeoDataFrame,
    footprints: gpd.GeoDataFrame,
    link: pd.Series | None = None,
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
        order = np.argsort(fp_id.to_numpy(dtype=object), kind="stable")
        tree = shapely.STRtree(fp.geometry.values[order])
        p_idx, f_idx = tree.query(pts, predicate="intersects")
        sel = np.lexsort((f_idx, p_idx))
        p_idx, f_idx = p_idx[sel], f_idx[sel]
        first = np.ones(len(p_idx), bool)
        first[1:] = p_idx[1:] != p_idx[:-1]
        rows = todo[p_idx[first]]
        reg_fp[rows] = order[f_idx[first]]
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

"""Data quality: how much of each attribute is observed, imputed or missing (pure)."""

from __future__ import annotations

import geopandas as gpd
import pandas as pd

__all__ = ["QUALITY_ATTRIBUTES", "provenance_shares", "quality_by_district"]

#: Attributes whose provenance the quality report shows.
QUALITY_ATTRIBUTES = ("gfa", "floors", "construction_year", "structure", "height")
_OBSERVED = ("register", "osm", "raster")


def provenance_shares(buildings: pd.DataFrame, by: pd.Series | None = None) -> pd.DataFrame:
    """Share (0…1) of buildings whose attribute is observed, imputed or missing.

    Observed means read from the register, OSM tags or a raster. Returns one row per
    group of ``by`` (or one row, index ``all``) with ``building_count`` and, for each
    attribute ``a`` in :data:`QUALITY_ATTRIBUTES`, ``a_observed``, ``a_imputed``,
    ``a_missing``, which add up to 1. In conflated runs also ``match_<method>``, the
    share of buildings matched by each method (id_link, point_in_footprint, ...).
    """
    key = by if by is not None else pd.Series("all", index=buildings.index)
    key = key.astype("string").fillna("_unassigned")
    cols: dict[str, pd.Series] = {}
    for a in QUALITY_ATTRIBUTES:
        src = buildings[f"{a}_source"].astype("string")
        cols[f"{a}_observed"] = src.isin(_OBSERVED).astype(float)
        cols[f"{a}_imputed"] = (src == "imputed").astype(float)
        cols[f"{a}_missing"] = (src == "missing").astype(float)
    if "match_method" in buildings.columns:
        method = buildings["match_method"].astype("string")
        for m in ("id_link", "point_in_footprint", "register_only", "footprint_only"):
            if (method == m).any():
                cols[f"match_{m}"] = (method == m).astype(float)
    flags = pd.DataFrame(cols, index=buildings.index)
    shares = flags.groupby(key, sort=True).mean()
    shares.insert(0, "building_count", key.value_counts().reindex(shares.index).astype("int64"))
    shares.index.name = "district_id"
    return shares


def quality_by_district(buildings: pd.DataFrame, districts: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """Provenance shares per district, on the district polygons (NaN where no building)."""
    shares = provenance_shares(buildings, buildings["district_id"])
    base = districts[["district_id", "district_name", "geometry"]].astype({"district_id": "string"})
    out = base.merge(shares, left_on="district_id", right_index=True, how="left")
    out["building_count"] = out["building_count"].fillna(0).astype("int64")
    out = out.sort_values("district_id", kind="stable").reset_index(drop=True)
    return gpd.GeoDataFrame(out, geometry="geometry", crs=districts.crs)

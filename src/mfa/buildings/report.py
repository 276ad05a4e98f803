"""Data quality: how much of each attribute is observed, imputed or missing (pure)."""

from __future__ import annotations

import geopandas as gpd
import pandas as pd

__all__ = [
    "GUESS_ATTRIBUTES",
    "MATCH_METHODS",
    "OBSERVED",
    "QUALITY_ATTRIBUTES",
    "guess_shares",
    "guess_sums",
    "provenance_counts",
    "provenance_shares",
    "quality_by_district",
    "quality_layer",
    "shares_from_counts",
]

#: Attributes whose provenance the quality report shows.
QUALITY_ATTRIBUTES = ("gfa", "floors", "construction_year", "structure", "height")
OBSERVED = ("register", "osm", "raster")


#: Attributes whose guessed (imputed or missing) share the run report gives, by count and
#: by tonnes.
GUESS_ATTRIBUTES = ("function", *QUALITY_ATTRIBUTES)


#: Conflation match methods whose share is reported (``match_<method>``).
MATCH_METHODS = ("id_link", "point_in_footprint", "register_only", "footprint_only")


def provenance_counts(buildings: pd.DataFrame, by: pd.Series | None = None) -> pd.DataFrame:
    """Buildings per group whose attribute is observed, imputed or missing (additive).

    One row per group of ``by`` (or one row, index ``all``): ``building_count`` and, for
    each attribute ``a`` in :data:`QUALITY_ATTRIBUTES`, ``a_observed``, ``a_imputed``,
    ``a_missing`` (counts), and ``match_<method>`` per conflation method.
    """
    key = by if by is not None else pd.Series("all", index=buildings.index)
    key = key.astype("string").fillna("_unassigned")
    cols: dict[str, pd.Series] = {"building_count": pd.Series(1, index=buildings.index)}
    for a in QUALITY_ATTRIBUTES:
        src = buildings[f"{a}_source"].astype("string")
        cols[f"{a}_observed"] = src.isin(OBSERVED).astype("int64")
        cols[f"{a}_imputed"] = (src == "imputed").astype("int64")
        cols[f"{a}_missing"] = (src == "missing").astype("int64")
    method = (
        buildings["match_method"].astype("string")
        if "match_method" in buildings.columns
        else pd.Series(pd.NA, index=buildings.index, dtype="string")
    )
    for m in MATCH_METHODS:
        cols[f"match_{m}"] = (method == m).fillna(False).astype("int64")
    counts = pd.DataFrame(cols, index=buildings.index).groupby(key, sort=True).sum()
    counts.index.name = "district_id"
    return counts


def guess_sums(buildings: pd.DataFrame) -> pd.Series:
    """Buildings and tonnes (``mass_t``) whose attribute was imputed or is missing
    (additive over batches): ``building_count``, ``mass_t`` and, for each attribute ``a``
    in :data:`GUESS_ATTRIBUTES`, ``a_imputed_buildings``, ``a_imputed_mass_t``,
    ``a_missing_buildings``, ``a_missing_mass_t``."""
    mass = buildings["mass_t"].to_numpy(dtype=float)
    out = {"building_count": float(len(buildings)), "mass_t": float(mass.sum())}
    for a in GUESS_ATTRIBUTES:
        src = buildings[f"{a}_source"].astype("string")
        for kind in ("imputed", "missing"):
            mine = (src == kind).fillna(False).to_numpy(bool)
            out[f"{a}_{kind}_buildings"] = float(mine.sum())
            out[f"{a}_{kind}_mass_t"] = float(mass[mine].sum())
    return pd.Series(out)


def guess_shares(sums: pd.Series) -> dict[str, dict[str, float]]:
    """Per attribute, the shares (0…1) of buildings and of tonnes imputed and missing,
    from :func:`guess_sums` (summed over the run)."""
    n, t = sums["building_count"], sums["mass_t"]
    return {
        a: {
            f"{kind}_{what}": round(float(sums[f"{a}_{kind}_{col}"] / d), 6) if d > 0 else 0.0
            for kind in ("imputed", "missing")
            for what, col, d in (("buildings", "buildings", n), ("mass", "mass_t", t))
        }
        for a in GUESS_ATTRIBUTES
    }


def shares_from_counts(counts: pd.DataFrame) -> pd.DataFrame:
    """Shares (0…1) from :func:`provenance_counts`: each count ÷ ``building_count``;
    ``match_<method>`` only for methods some building has."""
    n = counts["building_count"]
    cols = [f"{a}_{k}" for a in QUALITY_ATTRIBUTES for k in ("observed", "imputed", "missing")]
    cols += [f"match_{m}" for m in MATCH_METHODS if counts.get(f"match_{m}", pd.Series()).sum()]
    shares = counts[cols].astype(float).div(n.where(n > 0), axis=0)
    shares.insert(0, "building_count", n.astype("int64"))
    shares.index.name = "district_id"
    return shares


def provenance_shares(buildings: pd.DataFrame, by: pd.Series | None = None) -> pd.DataFrame:
    """Share (0…1) of buildings whose attribute is observed, imputed or missing.

    Observed means read from the register, OSM tags or a raster. Returns one row per
    group of ``by`` (or one row, index ``all``) with ``building_count`` and, for each
    attribute ``a`` in :data:`QUALITY_ATTRIBUTES`, ``a_observed``, ``a_imputed``,
    ``a_missing``, which add up to 1. In conflated runs also ``match_<method>``, the
    share of buildings matched by each method (id_link, point_in_footprint, ...).
    """
    return shares_from_counts(provenance_counts(buildings, by))


def quality_by_district(buildings: pd.DataFrame, districts: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """Provenance shares per district, on the district polygons (NaN where no building)."""
    return quality_layer(provenance_counts(buildings, buildings["district_id"]), districts)


def quality_layer(counts: pd.DataFrame, districts: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """The quality layer from per-district :func:`provenance_counts` (NaN where no
    building)."""
    shares = shares_from_counts(counts[counts["building_count"] > 0])
    base = districts[["district_id", "district_name", "geometry"]].astype({"district_id": "string"})
    out = base.merge(shares, left_on="district_id", right_index=True, how="left")
    out["building_count"] = out["building_count"].fillna(0).astype("int64")
    out = out.sort_values("district_id", kind="stable").reset_index(drop=True)
    return gpd.GeoDataFrame(out, geometry="geometry", crs=districts.crs)

"""Exact aggregation of building stocks to districts."""

from __future__ import annotations

import geopandas as gpd
import pandas as pd

__all__ = ["UNASSIGNED", "aggregate_districts"]

#: district_id of the row that collects buildings outside every district polygon.
UNASSIGNED = "_unassigned"


def aggregate_districts(
    buildings: pd.DataFrame,
    districts: gpd.GeoDataFrame,
    sum_columns: list[str],
    name_column: str | None = None,
) -> gpd.GeoDataFrame:
    """Sum building columns per district, with counts and densities.

    Parameters
    ----------
    buildings
        With ``district_id`` (<NA> outside every district), ``gfa_m2`` and ``sum_columns``.
    districts
        Polygons with a ``district_id`` column, in a projected CRS (metres).
    sum_columns
        Columns to sum (``mass_t``, ``<material>_t``, ...).

    Returns
    -------
    geopandas.GeoDataFrame
        Every district (zero where it has no building), sorted by ``district_id``, with
        ``building_count``, ``gfa_m2``, the sums, ``area_ha`` and ``mass_t_per_ha``
        (t/ha). Buildings outside every district are summed in one extra row with
        ``district_id`` = ``_unassigned`` and no geometry, so the sum over districts always
        equals the sum over buildings. Where ``districts`` has a ``population`` column,
        also ``mass_t_per_capita`` (t per inhabitant). Where buildings have a ``hazard``
        flag (e.g. asbestos recorded in the register), ``hazard_building_count`` and
        ``hazard_mass_share``, the share of the district's tonnes in flagged buildings.
    """
    key = buildings["district_id"].astype("string").fillna(UNASSIGNED)
    cols = ["gfa_m2", *sum_columns]
    sums = buildings[cols].astype(float).groupby(key, sort=True).sum()
    sums.insert(0, "building_count", key.value_counts().reindex(sums.index).astype("int64"))
    keep = [c for c in (name_column, "population") if c and c in districts.columns]
    base = districts[["district_id", *keep, "geometry"]]
    base = base.astype({"district_id": "string"})
    if (key == UNASSIGNED).any():
        extra = gpd.GeoDataFrame(
            {"district_id": pd.array([UNASSIGNED], dtype="string")},
            geometry=gpd.GeoSeries([None], crs=districts.crs),
            crs=districts.crs,
        )
        base = pd.concat([base, extra], ignore_index=True)
    out = base.merge(sums, left_on="district_id", right_index=True, how="left")
    out[["building_count"]] = out[["building_count"]].fillna(0).astype("int64")
    out[cols] = out[cols].fillna(0.0)
    out["area_ha"] = out.geometry.area.fillna(0.0) / 10_000.0
    out["mass_t_per_ha"] = (out["mass_t"] / out["area_ha"]).where(out["area_ha"] > 0)
    if "hazard" in buildings.columns:
        flagged = buildings["hazard"].notna()
        haz = buildings.loc[flagged, "mass_t"].astype(float).groupby(key[flagged]).sum()
        n_haz = flagged.groupby(key).sum()
        out["hazard_building_count"] = out["district_id"].map(n_haz).fillna(0).astype("int64")
        hazard_t = out["district_id"].map(haz).fillna(0.0).astype(float)
        out["hazard_mass_share"] = (hazard_t / out["mass_t"]).where(out["mass_t"] > 0, 0.0)
    if "population" in out.columns:
        pop = out["population"].astype("Float64")
        out["mass_t_per_capita"] = (out["mass_t"] / pop).where(pop > 0).astype("Float64")
    out = out.sort_values("district_id", kind="stable").reset_index(drop=True)
    return gpd.GeoDataFrame(out, geometry="geometry", crs=districts.crs)

"""The per-building estimate that runs on each Dask partition (pure)."""

from __future__ import annotations

import geopandas as gpd
import pandas as pd

from mfa.buildings.districts import assign_districts
from mfa.stocks.mass import material_mass

__all__ = ["estimate_partition"]


def estimate_partition(
    buildings: gpd.GeoDataFrame,
    intensity_kg_m2: pd.DataFrame,
    districts: gpd.GeoDataFrame | None = None,
) -> gpd.GeoDataFrame:
    """District and material tonnes for one partition of canonical buildings.

    Parameters
    ----------
    buildings
        Canonical buildings (:data:`mfa.schema.BUILDING_COLUMNS`) in a projected CRS.
    intensity_kg_m2
        Archetype × material intensities (kg/m² GFA).
    districts
        Polygons with ``district_id`` in the same CRS, or None to leave ``district_id`` empty.

    Returns
    -------
    geopandas.GeoDataFrame
        The buildings with ``district_id`` set and ``mass_t`` plus ``<material>_t`` (t)
        added before the geometry column.
    """
    out = buildings.copy()
    if districts is not None:
        out["district_id"] = assign_districts(out.geometry, districts)
    mass = material_mass(out["gfa_m2"], out["archetype_id"], intensity_kg_m2)
    attrs = out.drop(columns=out.geometry.name)
    merged = pd.concat([attrs, mass[["mass_t", *mass.columns.drop("mass_t")]]], axis=1)
    return gpd.GeoDataFrame(merged, geometry=out.geometry.values, crs=out.crs)

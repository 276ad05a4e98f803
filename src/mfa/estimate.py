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
    unit_quantiles: pd.DataFrame | None = None,
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
    unit_quantiles
        Per archetype, percentiles of t/m² (``<material>_t_pXX``, ``mass_t_pXX``) from
        :func:`mfa.stocks.uncertainty.unit_quantiles`; each building gets floor area × them.

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
    parts = [attrs, mass[["mass_t", *mass.columns.drop("mass_t")]]]
    if unit_quantiles is not None:
        per_m2 = unit_quantiles.reindex(out["archetype_id"].astype(object)).to_numpy()
        pct = per_m2 * out["gfa_m2"].to_numpy(dtype=float)[:, None]
        parts.append(pd.DataFrame(pct, index=out.index, columns=unit_quantiles.columns))
    merged = pd.concat(parts, axis=1)
    return gpd.GeoDataFrame(merged, geometry=out.geometry.values, crs=out.crs)

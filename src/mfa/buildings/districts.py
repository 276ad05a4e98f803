"""Assign buildings to districts by representative point."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

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
        and not geometry.crs.equals(districts.crs)
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

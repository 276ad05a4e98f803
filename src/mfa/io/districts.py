"""District polygons from any OGR-readable file."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from mfa.config import DistrictSource
from mfa.errors import InputDataError
from mfa.io.files import check_input_file
from mfa.io.parquet_input import read_geoparquet
from mfa.io.safeopen import read_vector

__all__ = ["MAX_OVERLAP_SHARE", "district_overlaps", "read_districts"]

#: Two districts may overlap by at most this share of the smaller one's area (digitising
#: slivers); more means a building would count in one of them only, silently.
MAX_OVERLAP_SHARE = 0.01


def district_overlaps(geometry: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs (i < j) of polygons whose overlap exceeds :data:`MAX_OVERLAP_SHARE` of the
    smaller one, and the overlap area (CRS units², m² in a projected CRS)."""
    # polygons that meet their neighbours edge to edge (a coverage: GEOS checks the edges
    # in ~1 s for 441 outlines of 3,000 vertices) overlap no one; the intersections are
    # made only for pairs with a polygon that does not (8.8 s for all neighbour pairs)
    try:
        suspect = ~shapely.is_empty(shapely.coverage_invalid_edges(geometry))
    except shapely.errors.GEOSException:  # not polygons only: check every pair
        suspect = np.ones(len(geometry), dtype=bool)
    tree = shapely.STRtree(geometry)
    i, j = tree.query(geometry[suspect], predicate="intersects")
    i = np.flatnonzero(suspect)[i]
    i, j = np.minimum(i, j), np.maximum(i, j)
    pairs = np.unique(np.stack([i, j], axis=1)[i < j], axis=0).reshape(-1, 2)
    i, j = pairs[:, 0], pairs[:, 1]
    area = shapely.area(shapely.intersection(geometry[i], geometry[j]))
    smaller = np.minimum(shapely.area(geometry[i]), shapely.area(geometry[j]))
    big = area > MAX_OVERLAP_SHARE * smaller
    return i[big], j[big], area[big]


def read_districts(source: DistrictSource, crs: str) -> gpd.GeoDataFrame:
    """Read districts; return ``district_id`` (string), ``district_name``, geometry in ``crs``.

    Sorted by ``district_id``. Ids must be unique and non-empty, geometries polygons.
    """
    path = check_input_file(Path(source.path), "districts file", "sources.districts.path")
    if path.suffix.lower() in (".parquet", ".geoparquet"):
        gdf = read_geoparquet(path)  # GDAL's Parquet driver is often missing
    else:
        gdf = read_vector(path, source.layer, "districts file", "sources.districts.path")
    where = f"{path}" + (f" layer {source.layer}" if source.layer else "")
    if not isinstance(gdf, gpd.GeoDataFrame):
        raise InputDataError(f"{where}: no geometry column; districts need polygons")
    optional = [c for c in (source.name_column, source.population_column) if c]
    for col in [source.id_column, *optional]:
        if col not in gdf.columns:
            cols = ", ".join(c for c in gdf.columns if c != "geometry")
            raise InputDataError(
                f"{where}: no column {col!r} (columns: {cols}); fix sources.districts"
            )
    if gdf.crs is None:
        raise InputDataError(f"{where}: the file has no CRS; write it with one (e.g. EPSG:25832)")
    if len(gdf) == 0:
        raise InputDataError(
            f"{where}: no districts (0 features); export the polygons again, or remove "
            "[sources.districts] to run without district sums"
        )
    ids = gdf[source.id_column].astype("string").str.strip()
    if ids.isna().any() or (ids == "").any():
        pos = int((ids.isna() | (ids == "")).to_numpy().argmax())
        raise InputDataError(
            f"{where}: feature {pos + 1} has no {source.id_column}; give every district an id"
        )
    dup = ids.duplicated()
    if dup.any():
        raise InputDataError(
            f"{where}: {source.id_column} {ids[dup].iloc[0]!r} occurs more than once; "
            "district ids must be unique: fix the file (or dissolve parts of one district) "
            "or choose another id_column"
        )
    types = gdf.geometry.geom_type
    bad = ~types.isin(["Polygon", "MultiPolygon"])
    if bad.any():
        pos = int(bad.to_numpy().argmax())
        raise InputDataError(
            f"{where}: feature {ids.iloc[pos]!r} is a {types.iloc[pos]}, not a polygon"
        )
    columns = {
        "district_id": ids,
        "district_name": gdf[source.name_column].astype("string") if source.name_column else ids,
    }
    if source.population_column:
        raw = gdf[source.population_column]
        pop = pd.to_numeric(raw, errors="coerce")
        bad = (raw.notna() & pop.isna()) | (pop < 0)
        if bad.any():
            pos = int(bad.to_numpy().argmax())
            raise InputDataError(
                f"{where}: district {ids.iloc[pos]!r}: {source.population_column} = "
                f"{raw.iloc[pos]!r} is not a number of inhabitants ≥ 0; fix it or leave it empty"
            )
        columns["population"] = pop.astype("Float64")
    out = gpd.GeoDataFrame(
        columns,
        geometry=gdf.geometry.to_crs(crs).values,
        crs=crs,
    )
    i, j, area = district_overlaps(shapely.make_valid(out.geometry.to_numpy()))
    if len(i):
        first = int(np.argmax(area))
        raise InputDataError(
            f"{where}: districts {ids.iloc[i[first]]!r} and {ids.iloc[j[first]]!r} overlap by "
            f"{area[first]:,.0f} m² ({len(i)} overlapping pairs); a building would count in "
            "one of them only: fix the polygons, or give districts of one level (not parishes "
            "and municipalities together)"
        )
    return out.sort_values("district_id", kind="stable").reset_index(drop=True)

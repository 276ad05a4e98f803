"""GeoParquet 1.1 layers: written with CRS and a covering bbox column, atomically."""

from __future__ import annotations

import json
import os
from pathlib import Path

import geopandas as gpd
import pyarrow.parquet as pq

from mfa.errors import InputDataError, ValidationError

__all__ = ["check_geoparquet", "read_geoparquet", "read_layer", "write_layer"]

#: Rows per Parquet row group: small enough that bbox filters skip most of a large layer.
ROW_GROUP_SIZE = 50_000


def write_layer(gdf: gpd.GeoDataFrame, path: Path) -> Path:
    """Write ``gdf`` as GeoParquet 1.1 (WKB, covering ``bbox``), via a temp file and rename.

    The file appears complete or not at all; a crash leaves at most a ``.tmp`` file.
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    gdf.to_parquet(
        tmp,
        index=False,
        write_covering_bbox=True,
        schema_version="1.1.0",
        row_group_size=ROW_GROUP_SIZE,
    )
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def read_layer(path: Path, **kwargs) -> gpd.GeoDataFrame:
    """Read a GeoParquet layer (``bbox=``, ``columns=`` are passed on to geopandas)."""
    return gpd.read_parquet(path, **kwargs)


def read_geoparquet(path: Path):
    """An input (Geo)Parquet file: a GeoDataFrame when it has 'geo' metadata, else a
    DataFrame. Broken 'geo' metadata or an unreadable file is an InputDataError."""
    import pandas as pd

    try:
        schema = pq.read_schema(path)
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise InputDataError(f"{path}: cannot be read as Parquet ({exc}); replace it") from exc
    raw = (schema.metadata or {}).get(b"geo")
    if raw is None:
        return pd.read_parquet(path)
    try:
        geo = json.loads(raw)
        geo["columns"][geo["primary_column"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise InputDataError(
            f"{path}: broken GeoParquet 'geo' metadata ({type(exc).__name__}: {exc}); "
            "rewrite the file with geopandas or GDAL (ogr2ogr -f Parquet)"
        ) from exc
    try:
        return gpd.read_parquet(path)
    except (OSError, ValueError) as exc:
        raise InputDataError(f"{path}: cannot be read as GeoParquet ({exc}); replace it") from exc


def check_geoparquet(path: Path, crs: str) -> dict[str, object]:
    """Check the GeoParquet metadata of a written layer: version, CRS, covering bbox.

    Returns the number of rows and the row groups, for the run manifest.
    """
    meta = pq.read_metadata(path)
    raw = (meta.metadata or {}).get(b"geo")
    if raw is None:
        raise ValidationError(f"{path}: no GeoParquet 'geo' metadata; write it with write_layer()")
    geo = json.loads(raw)
    col = geo["columns"][geo["primary_column"]]
    if geo.get("version") != "1.1.0":
        raise ValidationError(f"{path}: GeoParquet version {geo.get('version')}, expected 1.1.0")
    if "covering" not in col:
        raise ValidationError(f"{path}: no covering bbox column; write it with write_layer()")
    from pyproj import CRS

    if col.get("crs") is None or not CRS.from_json_dict(col["crs"]).equals(CRS(crs)):
        raise ValidationError(f"{path}: CRS is not {crs}; reproject before writing")
    return {"rows": meta.num_rows, "row_groups": meta.num_row_groups}

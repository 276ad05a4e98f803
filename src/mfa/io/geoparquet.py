"""GeoParquet 1.1 layers: written with CRS and a covering bbox column, atomically."""

from __future__ import annotations

import json
import os
from pathlib import Path

import geopandas as gpd
import pyarrow.parquet as pq

from mfa.errors import ValidationError

__all__ = ["check_geoparquet", "read_layer", "write_layer"]

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

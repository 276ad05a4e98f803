"""GeoParquet 1.1 layers: written with CRS and a covering bbox column, atomically."""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import shapely
from geopandas.array import GeometryArray
from geopandas.io.arrow import _geopandas_to_arrow

from mfa.errors import ValidationError
from mfa.failpoints import failpoint

__all__ = [
    "check_geoparquet",
    "geometry_type_names",
    "layer_table",
    "read_layer",
    "wkb_layer_table",
    "wkb_type_ids",
    "write_layer",
]

#: Rows per Parquet row group: small enough that bbox filters skip most of a large layer.
ROW_GROUP_SIZE = 50_000


def layer_table(gdf: gpd.GeoDataFrame) -> pa.Table:
    """The Arrow table of ``gdf`` as GeoParquet 1.1 (WKB, covering ``bbox``, ``geo``
    metadata) — what ``GeoDataFrame.to_parquet`` writes — with every column in one chunk.

    Parquet's writer cuts pages, and falls back from dictionary to plain encoding, at
    points that depend on the input's chunks; Arrow-backed pandas columns keep the chunks
    of whatever they were concatenated from (one per Dask partition, say). One chunk per
    column makes the file a function of the values alone: the same layer gives the same
    bytes however it was put together (an incremental run's merged layer and a full
    run's, runs with different partitioning).
    """
    table = _geopandas_to_arrow(gdf, index=False, schema_version="1.1.0", write_covering_bbox=True)
    return table.combine_chunks()


#: GeoParquet geometry type names by :func:`shapely.get_type_id`.
_TYPE_NAMES = {
    0: "Point",
    1: "LineString",
    3: "Polygon",
    4: "MultiPoint",
    5: "MultiLineString",
    6: "MultiPolygon",
    7: "GeometryCollection",
}


def geometry_type_names(type_ids: np.ndarray, has_z: np.ndarray) -> list[str]:
    """GeoParquet ``geometry_types`` of geometries with these type ids (-1: none) and Z
    flags, sorted (as geopandas writes them)."""
    pairs = {(int(t), bool(z)) for t, z in zip(type_ids, has_z, strict=True) if t >= 0}
    return sorted(_TYPE_NAMES[t] + (" Z" if z else "") for t, z in pairs)


def wkb_layer_table(
    attrs: pd.DataFrame,
    wkb: pa.Array,
    bounds: np.ndarray,
    geometry_types: list[str],
    crs: object,
) -> pa.Table:
    """The GeoParquet 1.1 table of a layer whose geometries are already WKB (ISO flavour):
    what :func:`layer_table` makes of the same rows as a GeoDataFrame, without parsing
    or re-serialising a geometry. ``bounds`` is (n, 4) x0, y0, x1, y1 per row (NaN for a
    missing geometry); ``crs`` a pyproj CRS.

    ``wkb`` may be dictionary-encoded (indices into distinct geometries, e.g. the flows'
    rows into their districts' polygons): it stays so in memory and in the file, where
    :func:`write_layer`'s writer stores it as Parquet's dictionary encoding of a plain
    binary column, which every GeoParquet reader reads as WKB.
    """
    table = pa.Table.from_pandas(attrs, preserve_index=False)
    box = pa.StructArray.from_arrays(
        [pa.array(bounds[:, i], pa.float64()) for i in range(4)],
        names=["xmin", "ymin", "xmax", "ymax"],
    )
    if not pa.types.is_dictionary(wkb.type):
        wkb = wkb.cast(pa.binary())
    table = table.append_column("geometry", wkb).append_column("bbox", box)
    known = np.isfinite(bounds).all(axis=1)
    extent = (
        [*bounds[known, :2].min(axis=0).tolist(), *bounds[known, 2:].max(axis=0).tolist()]
        if known.any()
        else None
    )
    column: dict[str, object] = {
        "encoding": "WKB",
        "crs": crs.to_json_dict(),  # type: ignore[attr-defined]
        "geometry_types": geometry_types,
    }
    if extent is not None:
        column["bbox"] = extent
    column["covering"] = {"bbox": {k: ["bbox", k] for k in ("xmin", "ymin", "xmax", "ymax")}}
    geo = {
        "primary_column": "geometry",
        "columns": {"geometry": column},
        "version": "1.1.0",
        "creator": {"library": "mfa", "version": _mfa_version()},
    }
    meta = dict(table.schema.metadata or {})
    meta[b"geo"] = json.dumps(geo).encode()
    return table.replace_schema_metadata(meta).combine_chunks()


def _mfa_version() -> str:
    import mfa

    return mfa.__version__


def write_layer(gdf: gpd.GeoDataFrame, path: Path) -> Path:
    """Write ``gdf`` as GeoParquet 1.1 (WKB, covering ``bbox``), via a temp file and rename.

    The file appears complete or not at all; a crash leaves at most a ``.tmp`` file. Its
    bytes depend only on the rows (see :func:`layer_table`).
    """
    path = Path(path)
    _write_synced(layer_table(gdf), path)
    return path


def _write_synced(table: pa.Table, path: Path) -> None:
    """Write ``table`` with the layers' settings to a temporary file, fsync, rename."""
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp, row_group_size=ROW_GROUP_SIZE, compression="snappy")
    publish_written(tmp, path)


def publish_written(tmp: Path, path: Path) -> None:
    """Put the complete file ``tmp`` in place at ``path``: fsync, the failpoint
    ``write:<name>``, atomic rename (a crash leaves at most ``tmp``)."""
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    failpoint(f"write:{path.name}")
    os.replace(tmp, path)


def _wkb_headers(column: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Per value of a WKB column: valid (not null), and for the valid ones the base type
    code (1 Point … 7 GeometryCollection) from the header (byte order, then the type code,
    ISO or EWKB) without parsing the geometry."""
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    arr = arr.cast(pa.large_binary())
    valid = arr.is_valid().to_numpy(zero_copy_only=False)
    if not valid.any():
        return valid, np.zeros(0, np.int64)
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int64)[arr.offset : arr.offset + len(arr)]
    data = np.frombuffer(arr.buffers()[2], dtype=np.uint8)
    start = offsets[valid].astype(np.int64)
    b = [data[start + i].astype(np.uint32) for i in range(5)]
    little = b[0] == 1
    code = np.where(
        little,
        b[1] | (b[2] << 8) | (b[3] << 16) | (b[4] << 24),
        (b[1] << 24) | (b[2] << 16) | (b[3] << 8) | b[4],
    )
    return valid, ((code & 0x0FFFFFFF) % 1000).astype(np.int64)


#: WKB type code → shapely's type id (LinearRing, 2, has no WKB code of its own).
_SHAPELY_TYPE_IDS = np.array([-1, 0, 1, 3, 4, 5, 6, 7], dtype=np.int8)


def wkb_type_ids(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """:func:`shapely.get_type_id` of each value of a WKB column (-1 for null), read from
    the headers without parsing the geometries (int8)."""
    valid, base = _wkb_headers(column)
    out = np.full(len(valid), -1, dtype=np.int8)
    out[valid] = _SHAPELY_TYPE_IDS[np.clip(base, 0, 7)]
    return out


def read_layer(path: Path, **kwargs) -> gpd.GeoDataFrame:
    """Read a GeoParquet layer mfa wrote (WKB geometry): as :func:`geopandas.read_parquet`.

    ``columns=`` and ``filters=`` select before decoding (a filter ``[(column, "in",
    [str, …])]`` as :func:`mfa.io.bboxread.read_in` reads it). ``bbox=`` (x0, y0, x1, y1) reads
    only the row groups and rows whose covering bbox meets it (:func:`mfa.io.bboxread.
    read_bbox`), and only ``columns``; without a covering column, or with ``filters``,
    geopandas reads it. The layer's CRS is parsed once per process (geopandas parses it
    again for every read, 30 ms each, a tenth of a small run).
    """
    if set(kwargs) == {"bbox"} or set(kwargs) == {"bbox", "columns"}:
        from mfa.io.bboxread import read_bbox

        table = read_bbox(path, kwargs["bbox"], kwargs.get("columns"))
        if table is not None:
            return _layer_frame(table)
    if set(kwargs) - {"columns", "filters"}:
        return gpd.read_parquet(path, **kwargs)
    schema = pq.read_schema(path)
    geo = json.loads((schema.metadata or {}).get(b"geo", b"null"))
    name = (geo or {}).get("primary_column")
    columns = kwargs.get("columns")
    if name is None or (columns is not None and name not in columns):
        return gpd.read_parquet(path, **kwargs)
    meta = geo["columns"][name]
    if meta.get("encoding", "WKB") != "WKB":
        return gpd.read_parquet(path, **kwargs)
    if columns is None:  # as geopandas: without the covering bbox column
        covering = meta.get("covering", {}).get("bbox", {}).get("xmin", [None])[0]
        columns = [c for c in schema.names if c != covering]
    filters = kwargs.get("filters")
    if _one_in_filter(filters):  # e.g. districts: only the row groups and rows with them
        from mfa.io.bboxread import read_in

        ((column, _, values),) = filters
        return _layer_frame(read_in(path, column, list(values), columns))
    table = pq.read_table(path, columns=columns, filters=filters)
    return _layer_frame(table)


def _one_in_filter(filters: object) -> bool:
    """``filters`` is ``[(column, "in", [str, …])]``, which :func:`read_in` reads."""
    return (
        isinstance(filters, list)
        and len(filters) == 1
        and isinstance(filters[0], tuple)
        and len(filters[0]) == 3
        and isinstance(filters[0][0], str)
        and filters[0][1] == "in"
        and isinstance(filters[0][2], list | tuple)
        and all(isinstance(v, str) for v in filters[0][2])
    )


def _layer_frame(table: pa.Table) -> gpd.GeoDataFrame | pd.DataFrame:
    """A GeoDataFrame of a table read from a layer mfa wrote (its ``geo`` metadata; WKB
    geometry), as geopandas makes it; a DataFrame if the geometry was not read."""
    geo = json.loads((table.schema.metadata or {}).get(b"geo", b"null"))
    name = (geo or {}).get("primary_column")
    if name is None or name not in table.column_names:
        return table.to_pandas()
    meta = geo["columns"][name]
    crs = meta.get("crs", "OGC:CRS84")  # absent: the GeoParquet default
    position = table.column_names.index(name)
    frame = table.drop_columns([name]).to_pandas()
    crs_ = None if crs is None else _crs(json.dumps(crs, sort_keys=True))
    # a GeometryArray: GeoDataFrame() would check an object array of shapes one by one
    geometry = GeometryArray(shapely.from_wkb(table[name].to_numpy(zero_copy_only=False)), crs_)
    frame.insert(min(position, frame.shape[1]), name, geometry)  # index columns moved out
    return gpd.GeoDataFrame(frame, geometry=name, crs=crs_)


@lru_cache(maxsize=64)
def _crs(text: str):
    from pyproj import CRS

    return CRS.from_user_input(json.loads(text))


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
    from mfa.crs import same_crs

    stored = col.get("crs")
    if stored is None or not same_crs(_crs(json.dumps(stored, sort_keys=True)), crs):
        raise ValidationError(f"{path}: CRS is not {crs}; reproject before writing")
    return {"rows": meta.num_rows, "row_groups": meta.num_row_groups}

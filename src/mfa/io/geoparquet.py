"""GeoParquet 1.1 layers: written with CRS and a covering bbox column, atomically."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator, Sequence
from functools import lru_cache
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import shapely
from geopandas.array import GeometryArray
from geopandas.io.arrow import _geopandas_to_arrow

from mfa.errors import InputDataError, ValidationError
from mfa.failpoints import failpoint
from mfa.hilbert import hilbert_distance, sorted_by

__all__ = [
    "check_geoparquet",
    "iter_geoparquet",
    "layer_table",
    "read_geoparquet",
    "read_layer",
    "wkb_geometry_types",
    "wkb_type_ids",
    "write_layer",
    "write_merged_layer",
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
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    failpoint(f"write:{path.name}")
    os.replace(tmp, path)


def write_merged_layer(
    previous: Path,
    keep: pa.Array,
    key: str,
    new: gpd.GeoDataFrame,
    path: Path,
    replaced_columns: Sequence[str] = (),
) -> tuple[pa.Table, pa.Table, pa.Table]:
    """Write the rows of ``previous`` whose ``key`` is in ``keep`` plus ``new`` as one layer.

    The result is the layer :func:`write_layer` writes for the same rows put in Hilbert
    order (as :func:`mfa.hilbert.hilbert_order` with ``key`` as tie-break): same schema,
    values, order, row groups and GeoParquet metadata. The kept rows are never decoded:
    they stay Arrow, their order comes from the covering ``bbox`` column, the geometry
    types from the WKB headers, and the rows are copied in blocks (see :func:`_gathered`). So an
    incremental run pays for reading and writing the layer, not for parsing every
    geometry twice.

    Returns the merged table (as written), the ``key`` and ``replaced_columns`` of the
    previous rows that were not kept, and the rows of ``new`` as written (layer order).
    When every previous row is kept and there is nothing new, the file is copied.
    """
    prev = pq.read_table(previous)
    mask = pc.is_in(prev[key], value_set=keep.cast(prev.schema.field(key).type))
    if len(new) == 0 and pc.all(mask).as_py() is not False:
        _copy_synced(previous, path)
        return prev, prev.select([key, *replaced_columns]).slice(0, 0), prev.slice(0, 0)
    added = layer_table(new)
    if added.schema.names != prev.schema.names:
        raise ValidationError(
            f"{previous}: its columns {prev.schema.names} are not this run's "
            f"{added.schema.names}; run with --force"
        )
    plain = prev.schema.remove_metadata()
    both = pa.concat_tables([prev.replace_schema_metadata(None), added.cast(plain)])
    rows = np.concatenate(
        [np.flatnonzero(mask.to_numpy(zero_copy_only=False)), len(prev) + np.arange(len(added))]
    )
    if not len(rows):
        raise ValidationError(f"{path}: no buildings are left to write (none kept, none new)")
    bbox = both["bbox"]
    corners = [pc.struct_field(bbox, [i]).to_numpy()[rows] for i in range(4)]
    total = [
        float(corners[0].min()),
        float(corners[1].min()),
        float(corners[2].max()),
        float(corners[3].max()),
    ]
    distance = hilbert_distance(np.column_stack(corners), np.asarray(total))
    keys = both[key].to_numpy(zero_copy_only=False)[rows]
    gather = rows[sorted_by(distance, keys)]
    # the new rows in layer order first, so that neighbours in the layer are neighbours
    # in ``both`` too (they came in their own, smaller extent's Hilbert order)
    new_rows = gather >= len(prev)
    added = added.take(gather[new_rows] - len(prev))
    both = pa.concat_tables([prev.replace_schema_metadata(None), added.cast(plain)])
    gather[new_rows] = len(prev) + np.arange(int(new_rows.sum()))
    merged = _gathered(both, gather)
    replaced = prev.select([key, *replaced_columns]).filter(pc.invert(mask))

    geo = json.loads(prev.schema.metadata[b"geo"])
    column = geo["columns"][geo["primary_column"]]
    column["bbox"] = total
    column["geometry_types"] = wkb_geometry_types(merged[geo["primary_column"]])
    metadata = {**prev.schema.metadata, b"geo": json.dumps(geo).encode()}
    merged = merged.replace_schema_metadata(metadata)
    _write_synced(merged, path)
    return merged, replaced, merged.take(np.flatnonzero(new_rows))


def _gathered(table: pa.Table, rows: np.ndarray) -> pa.Table:
    """``table.take(rows)``, in contiguous arrays. While the layer's extent is unchanged
    the kept rows keep their order, so ``rows`` are runs of consecutive ones (a change
    inserts and removes a few blocks): those are sliced and concatenated, a copy of whole
    blocks that costs a fraction of ``take``'s row-by-row gather (and of writing thousands
    of small chunks). Mostly scattered rows (a moved extent reorders the curve) are
    gathered with ``take``."""
    if not len(rows):
        return table.slice(0, 0).combine_chunks()
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1
    if len(breaks) > len(rows) // 8:  # mostly scattered rows: gather them
        return table.take(rows).combine_chunks()
    starts = np.r_[0, breaks]
    stops = np.r_[breaks, len(rows)]
    runs = [table.slice(int(rows[a]), int(b - a)) for a, b in zip(starts, stops, strict=True)]
    return pa.concat_tables(runs).combine_chunks()


def _copy_synced(source: Path, path: Path) -> None:
    """Copy ``source`` to ``path`` atomically (a temporary file, fsynced, then renamed)."""
    tmp = path.with_name(path.name + ".tmp")
    shutil.copyfile(source, tmp)
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


#: WKB geometry type codes → GeoParquet geometry type names.
_WKB_NAMES = {
    1: "Point",
    2: "LineString",
    3: "Polygon",
    4: "MultiPoint",
    5: "MultiLineString",
    6: "MultiPolygon",
    7: "GeometryCollection",
}


def _wkb_headers(column: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per value of a WKB column: valid (not null), and for the valid ones the base type
    code (1 Point … 7 GeometryCollection) and whether it has Z, from the header (byte
    order, then the type code, ISO or EWKB Z) without parsing the geometry."""
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    arr = arr.cast(pa.large_binary())
    valid = arr.is_valid().to_numpy(zero_copy_only=False)
    if not valid.any():
        return valid, np.zeros(0, np.int64), np.zeros(0, bool)
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
    z = ((code & 0x80000000) != 0) | np.isin((code & 0x0FFFFFFF) // 1000, (1, 3))
    return valid, ((code & 0x0FFFFFFF) % 1000).astype(np.int64), z


def wkb_geometry_types(column: pa.ChunkedArray | pa.Array) -> list[str]:
    """The sorted geometry types (``"Polygon"``, ``"Point Z"``, …) of a WKB column, read
    from each value's header without parsing the geometries; nulls are skipped (as
    geopandas does)."""
    _, base, z = _wkb_headers(column)
    kinds = np.unique(base * 2 + z)  # a handful of kinds
    return sorted(_WKB_NAMES[int(k) // 2] + (" Z" if k % 2 else "") for k in kinds)


#: WKB type code → shapely's type id (LinearRing, 2, has no WKB code of its own).
_SHAPELY_TYPE_IDS = np.array([-1, 0, 1, 3, 4, 5, 6, 7], dtype=np.int64)


def wkb_type_ids(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """:func:`shapely.get_type_id` of each value of a WKB column (-1 for null), read from
    the headers without parsing the geometries."""
    valid, base, _ = _wkb_headers(column)
    out = np.full(len(valid), -1, dtype=np.int64)
    out[valid] = _SHAPELY_TYPE_IDS[np.clip(base, 0, 7)]
    return out


def read_layer(path: Path, **kwargs) -> gpd.GeoDataFrame:
    """Read a GeoParquet layer mfa wrote (WKB geometry): as :func:`geopandas.read_parquet`.

    ``columns=`` and ``filters=`` select before decoding; ``bbox=`` goes to geopandas. The
    layer's CRS is parsed once per process (geopandas parses it again for every read,
    30 ms each, a tenth of a small run).
    """
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
    table = pq.read_table(path, columns=columns, filters=kwargs.get("filters"))
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


def read_geoparquet(path: Path):
    """An input (Geo)Parquet file: a GeoDataFrame when it has 'geo' metadata, else a
    DataFrame. Broken 'geo' metadata or an unreadable file is an InputDataError."""

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
        return read_layer(path)
    except (OSError, ValueError) as exc:
        raise InputDataError(f"{path}: cannot be read as GeoParquet ({exc}); replace it") from exc


def iter_geoparquet(path: Path, batch_rows: int | None) -> Iterator[pd.DataFrame]:
    """An input (Geo)Parquet file in batches of at most ``batch_rows`` rows (None: whole):
    GeoDataFrames when it has 'geo' metadata (WKB), else DataFrames. At least one batch
    (empty for an empty file). Unreadable files and broken metadata: InputDataError."""
    if batch_rows is None:
        yield read_geoparquet(path)
        return
    try:
        source = pq.ParquetFile(path)
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise InputDataError(f"{path}: cannot be read as Parquet ({exc}); replace it") from exc
    raw = (source.schema_arrow.metadata or {}).get(b"geo")
    name, crs = None, None
    if raw is not None:
        try:
            geo = json.loads(raw)
            meta = geo["columns"][geo["primary_column"]]
            name = geo["primary_column"]
        except (ValueError, KeyError, TypeError) as exc:
            raise InputDataError(
                f"{path}: broken GeoParquet 'geo' metadata ({type(exc).__name__}: {exc}); "
                "rewrite the file with geopandas or GDAL (ogr2ogr -f Parquet)"
            ) from exc
        if meta.get("encoding", "WKB").upper() != "WKB":
            yield read_geoparquet(path)  # geoarrow encodings: geopandas reads them whole
            return
        stored = meta.get("crs", "OGC:CRS84")  # absent: the GeoParquet default
        crs = None if stored is None else _crs(json.dumps(stored, sort_keys=True))
        covering = meta.get("covering", {}).get("bbox", {}).get("xmin", [None])[0]
    columns = [c for c in source.schema_arrow.names if raw is None or c != covering]
    batches = source.iter_batches(batch_size=batch_rows, columns=columns)
    first = True
    try:
        for batch in batches:
            first = False
            yield _frame(pa.Table.from_batches([batch]), name, crs)
    except (OSError, ValueError) as exc:
        if isinstance(exc, InputDataError):
            raise
        raise InputDataError(f"{path}: cannot be read as GeoParquet ({exc}); replace it") from exc
    if first:
        yield _frame(source.schema_arrow.empty_table().select(columns), name, crs)


def _frame(table: pa.Table, name: str | None, crs) -> pd.DataFrame:
    """A GeoDataFrame of an Arrow table with a WKB column ``name`` (a DataFrame if None)."""
    if name is None:
        return table.to_pandas()
    position = table.column_names.index(name)
    frame = table.drop_columns([name]).to_pandas()
    values = shapely.from_wkb(table[name].to_numpy(zero_copy_only=False))
    frame.insert(min(position, frame.shape[1]), name, GeometryArray(values, crs))
    return gpd.GeoDataFrame(frame, geometry=name, crs=crs)


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
    from mfa.crs import as_crs

    stored = col.get("crs")
    if stored is None or not _crs(json.dumps(stored, sort_keys=True)).equals(as_crs(crs)):
        raise ValidationError(f"{path}: CRS is not {crs}; reproject before writing")
    return {"rows": meta.num_rows, "row_groups": meta.num_row_groups}

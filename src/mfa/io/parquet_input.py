"""Reading input (Geo)Parquet files: whole, in batches streamed by the caller, or in
parts of whole row groups that the run's workers read themselves (:class:`ParquetPart`);
damaged files, broken metadata and values that are not WKB as one-line errors."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import shapely
from geopandas.array import GeometryArray

from mfa.errors import InputDataError
from mfa.io.geoparquet import _crs, read_layer

__all__ = [
    "ParquetPart",
    "geoparquet_parts",
    "iter_geoparquet",
    "parquet_batches",
    "read_geoparquet",
]


def _one_geometry(path: Path, geo: dict) -> None:
    """An input has one geometry column: with two, which one is meant is a guess."""
    names = list(geo["columns"])
    if len(names) > 1:
        raise InputDataError(
            f"{path}: {len(names)} geometry columns ({', '.join(map(repr, names))}); mfa "
            f"reads one: drop the others (primary is {geo.get('primary_column')!r})"
        )


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
    _parsed_geo(path, raw)
    try:
        return read_layer(path)
    except (OSError, ValueError) as exc:
        raise InputDataError(f"{path}: cannot be read as GeoParquet ({exc}); replace it") from exc


def _parsed_geo(path: Path, raw: bytes) -> dict[str, Any]:
    """An input file's GeoParquet 'geo' metadata, checked: one geometry column, named."""
    try:
        geo = json.loads(raw)
        geo["columns"][geo["primary_column"]]
        _one_geometry(path, geo)
    except (ValueError, KeyError, TypeError) as exc:
        if isinstance(exc, InputDataError):
            raise
        raise InputDataError(
            f"{path}: broken GeoParquet 'geo' metadata ({type(exc).__name__}: {exc}); "
            "rewrite the file with geopandas or GDAL (ogr2ogr -f Parquet)"
        ) from exc
    return geo


def _input_geo(path: Path, source: pq.ParquetFile) -> tuple[str | None, Any, str | None, bool]:
    """An input file's geometry column, CRS, covering bbox column and whether its
    geometry is WKB (geoarrow encodings: geopandas reads them whole)."""
    raw = (source.schema_arrow.metadata or {}).get(b"geo")
    if raw is None:
        return None, None, None, True
    geo = _parsed_geo(path, raw)
    name = geo["primary_column"]
    meta = geo["columns"][name]
    if meta.get("encoding", "WKB").upper() != "WKB":
        return name, None, None, False
    stored = meta.get("crs", "OGC:CRS84")  # absent: the GeoParquet default
    crs = None if stored is None else _crs(json.dumps(stored, sort_keys=True))
    covering = meta.get("covering", {}).get("bbox", {}).get("xmin", [None])[0]
    return name, crs, covering, True


def _open_input(path: Path) -> pq.ParquetFile:
    try:
        return pq.ParquetFile(path)
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise InputDataError(f"{path}: cannot be read as Parquet ({exc}); replace it") from exc


def iter_geoparquet(path: Path, batch_rows: int | None) -> Iterator[pd.DataFrame]:
    """An input (Geo)Parquet file in batches of at most ``batch_rows`` rows (None: whole):
    GeoDataFrames when it has 'geo' metadata (WKB), else DataFrames. At least one batch
    (empty for an empty file). Unreadable files and broken metadata: InputDataError."""
    if batch_rows is None:
        yield read_geoparquet(path)
        return
    source = _open_input(path)
    name, crs, covering, wkb = _input_geo(path, source)
    if not wkb:
        yield read_geoparquet(path)
        return
    columns = [c for c in source.schema_arrow.names if c != covering]
    first = True
    for done, batch in parquet_batches(path, source, batch_rows, columns):
        first = False
        yield _frame(pa.Table.from_batches([batch]), name, crs, path, done)
    if first:
        yield _frame(source.schema_arrow.empty_table().select(columns), name, crs, path, 0)


@dataclass(frozen=True)
class ParquetPart:
    """Consecutive row groups of an input (Geo)Parquet file, read where they are used
    (an executor's worker: on a Dask cluster only this description travels). Records
    ``start`` to ``start + rows`` of the file (0-based)."""

    path: Path
    row_groups: tuple[int, ...]
    start: int
    rows: int
    columns: tuple[str, ...]
    name: str | None  # the WKB column (None: no geometry)
    crs: Any

    def read(self) -> pd.DataFrame:
        """The records as :func:`iter_geoparquet` gives them (index: their positions)."""
        source = _open_input(self.path)
        try:
            table = source.read_row_groups(list(self.row_groups), columns=list(self.columns))
        except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
            raise _damaged_file(self.path, source, self.start, list(self.columns), exc) from exc
        frame = _frame(table, self.name, self.crs, self.path, self.start)
        frame.index = pd.RangeIndex(self.start, self.start + len(frame))
        return frame


def geoparquet_parts(path: Path, batch_rows: int) -> list[ParquetPart] | None:
    """An input (Geo)Parquet file as :class:`ParquetPart` s of consecutive row groups of at
    most ``batch_rows`` records together, for workers to read; None when a row group holds
    more (it would be read whole by each of its batches: the caller streams the file
    with :func:`iter_geoparquet` instead), for an empty file and for geoarrow encodings."""
    source = _open_input(path)
    name, crs, covering, wkb = _input_geo(path, source)
    meta = source.metadata
    sizes = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
    if not wkb or not sizes or max(sizes) > batch_rows or sum(sizes) == 0:
        return None
    columns = tuple(c for c in source.schema_arrow.names if c != covering)
    parts: list[ParquetPart] = []
    group: list[int] = []
    start = rows = 0
    for i, n in enumerate(sizes):
        if group and rows + n > batch_rows:
            parts.append(ParquetPart(path, tuple(group), start, rows, columns, name, crs))
            start, group, rows = start + rows, [], 0
        group.append(i)
        rows += n
    parts.append(ParquetPart(path, tuple(group), start, rows, columns, name, crs))
    return parts


def parquet_batches(
    path: Path, source: pq.ParquetFile, batch_rows: int, columns: list[str]
) -> Iterator[tuple[int, pa.RecordBatch]]:
    """``columns`` of an input Parquet file in batches of at most ``batch_rows`` rows,
    each with the number of records before it. A damaged part is an InputDataError that
    names the row group and its records."""
    batches = source.iter_batches(batch_size=batch_rows, columns=columns)
    done = 0
    while True:
        try:
            batch = next(batches, None)
        except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
            raise _damaged_file(path, source, done, columns, exc) from exc
        if batch is None:
            return
        yield done, batch
        done += batch.num_rows


def _damaged_file(
    path: Path, source: pq.ParquetFile, done: int, columns: list[str], exc: BaseException
) -> InputDataError:
    """The one-line error for a part of ``path`` from record ``done`` on that cannot be
    read: which row group and records, and what to do."""
    where, exc = _damaged(source, done, columns, exc)
    return InputDataError(
        f"{path}: {where} cannot be read ({' '.join(str(exc).split())}): the file is "
        "damaged or truncated; download or export it again (mfa published nothing)"
    )


def _damaged(
    source: pq.ParquetFile, done: int, columns: list[str], exc: BaseException
) -> tuple[str, BaseException]:
    """The first row group from record ``done`` on that cannot be read (a batch may span
    several), with its records (1-based), and its error."""
    start = 0
    for i in range(source.metadata.num_row_groups):
        n = source.metadata.row_group(i).num_rows
        if start + n > done:
            try:
                source.read_row_group(i, columns=columns)
            except (OSError, ValueError) as found:
                return f"row group {i} (records {start + 1:,}–{start + n:,})", found
        start += n
    return f"a part after record {done:,}", exc


def _frame(
    table: pa.Table, name: str | None, crs, path: Path | None = None, offset: int = 0
) -> pd.DataFrame:
    """A GeoDataFrame of an Arrow table with a WKB column ``name`` (a DataFrame if None).
    A value that is not WKB is an InputDataError naming ``path`` and its record
    (``offset`` + position, 1-based)."""
    if name is None:
        return table.to_pandas()
    position = table.column_names.index(name)
    frame = table.drop_columns([name]).to_pandas()
    wkb = table[name].to_numpy(zero_copy_only=False)
    try:
        values = shapely.from_wkb(wkb)
    except (shapely.errors.ShapelyError, TypeError, ValueError) as exc:
        parsed = shapely.from_wkb(wkb, on_invalid="ignore")
        bad = np.flatnonzero(pd.isna(parsed) & ~pd.isna(wkb))
        at = f"record {offset + int(bad[0]) + 1:,}" if len(bad) else "a record"
        raise InputDataError(
            f"{path}: {at}: column {name!r} is not a WKB geometry ({exc}); fix or drop that "
            "record, or export the file again"
        ) from exc
    frame.insert(min(position, frame.shape[1]), name, GeometryArray(values, crs))
    return gpd.GeoDataFrame(frame, geometry=name, crs=crs)

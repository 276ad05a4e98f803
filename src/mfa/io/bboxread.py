"""The rows of a GeoParquet layer whose covering bbox meets a box, read sparingly.

A layer mfa writes has a covering ``bbox`` column (GeoParquet 1.1) with Parquet min/max
statistics per row group. :func:`read_bbox` reads only what an answer about a box needs:

1. the row groups whose statistics say a row's box *can* meet the query box (the others
   are skipped without reading a byte of them);
2. of those, first the four bbox fields, then the other columns asked for, taken at the
   rows whose box meets the query box, one row group at a time (memory: one row group's
   columns, not the layer's).

The rows are those of :func:`geopandas.read_parquet` with ``bbox=`` (same order, same
values and dtypes), except that a row with a missing or NaN box (a missing or empty
geometry) meets no box here; geopandas lets NaN boxes through its filter.

:func:`read_points` reads every row but only some columns, and each row's representative
point instead of its footprint, a row group at a time (``mfa match``'s supply).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import shapely

__all__ = ["covering_column", "read_bbox", "read_in", "read_points", "row_groups_meeting"]

log = logging.getLogger(__name__)

_FIELDS = ("xmin", "ymin", "xmax", "ymax")


def covering_column(geo: dict) -> tuple[str, list[str]] | None:
    """The covering bbox of a layer's ``geo`` metadata: its struct column and the names of
    its xmin, ymin, xmax, ymax fields; None without one (or one this reader does not read:
    fields spread over several columns)."""
    try:
        cover = geo["columns"][geo["primary_column"]]["covering"]["bbox"]
        paths = [cover[k] for k in _FIELDS]
    except (KeyError, TypeError):
        return None
    if any(len(p) != 2 for p in paths) or len({p[0] for p in paths}) != 1:
        return None
    return paths[0][0], [p[1] for p in paths]


def row_groups_meeting(
    meta: pq.FileMetaData, column: str, fields: Sequence[str], bbox: Sequence[float]
) -> list[int]:
    """The row groups of a file whose covering-bbox statistics leave open that one of
    their rows' boxes meets ``bbox`` (x0, y0, x1, y1, closed): all but those that
    statistics prove disjoint (a row group without statistics is kept)."""
    x0, y0, x1, y1 = (float(v) for v in bbox)
    if meta.num_row_groups == 0:
        return []
    first = meta.row_group(0)
    where = {first.column(i).path_in_schema: i for i in range(first.num_columns)}
    leaves = [where.get(f"{column}.{f}") for f in fields]
    if any(i is None for i in leaves):
        return list(range(meta.num_row_groups))
    kept = []
    for g in range(meta.num_row_groups):
        rg = meta.row_group(g)
        stats = [rg.column(i).statistics for i in leaves]  # type: ignore[arg-type]
        if not all(s is not None and s.has_min_max for s in stats):
            if rg.num_rows and all(s is not None and s.null_count == rg.num_rows for s in stats):
                continue  # every box missing: none meets the query box
            kept.append(g)
            continue
        lo_x, lo_y, hi_x, hi_y = stats
        if lo_x.min > x1 or lo_y.min > y1 or hi_x.max < x0 or hi_y.max < y0:
            continue
        kept.append(g)
    return kept


def read_bbox(
    path: Path, bbox: Sequence[float], columns: Sequence[str] | None = None
) -> pa.Table | None:
    """The rows of the GeoParquet layer at ``path`` whose covering bbox meets ``bbox``
    (x0, y0, x1, y1 in the layer's CRS; closed), as an Arrow table of ``columns`` (None:
    all but the covering column), in file order; None when the layer has no covering bbox
    column (read it another way). Schema and metadata as the file's."""
    source = pq.ParquetFile(path)
    schema = source.schema_arrow
    geo = json.loads((schema.metadata or {}).get(b"geo", b"null"))
    cover = covering_column(geo) if geo else None
    if cover is None or cover[0] not in schema.names:
        return None
    if geo["columns"][geo["primary_column"]].get("encoding", "WKB").upper() != "WKB":
        return None  # geoarrow encodings: geopandas reads them
    column, fields = cover
    names = [c for c in schema.names if c != column] if columns is None else list(columns)
    x0, y0, x1, y1 = (float(v) for v in bbox)

    def meets(key: pa.Table) -> np.ndarray:
        box = key.column(0).combine_chunks()
        # flatten: a missing box (null struct) gives null fields, and those NaN
        names_in = [box.type.field(i).name for i in range(box.type.num_fields)]
        values = dict(zip(names_in, box.flatten(), strict=True))
        xs = [values[f].to_numpy(zero_copy_only=False) for f in fields]
        with np.errstate(invalid="ignore"):  # a NaN bound meets nothing
            return (xs[0] <= x1) & (xs[1] <= y1) & (xs[2] >= x0) & (xs[3] >= y0)

    groups = row_groups_meeting(source.metadata, column, fields, bbox)
    return _read_matching(source, groups, column, meets, names, path)


def read_in(
    path: Path, column: str, values: Sequence[str], columns: Sequence[str] | None = None
) -> pa.Table:
    """The rows of the Parquet file at ``path`` whose string ``column`` is one of
    ``values``, as ``pq.read_table(path, columns=columns, filters=[(column, "in",
    values)])`` gives them (file order, the file's schema), read as :func:`read_bbox`
    reads: row groups whose min/max statistics of ``column`` leave no value out are
    skipped; in the others ``column`` first, the rest only where a row matches."""
    source = pq.ParquetFile(path)
    names = source.schema_arrow.names if columns is None else list(columns)
    wanted = sorted(set(values))
    meta = source.metadata
    where = {meta.schema.column(i).path: i for i in range(meta.num_columns)}
    groups = []
    for g in range(meta.num_row_groups):
        stats = meta.row_group(g).column(where[column]).statistics if column in where else None
        if stats is not None and stats.has_min_max:
            lo, hi = stats.min, stats.max
            if not any(lo <= v <= hi for v in wanted):
                continue
        groups.append(g)
    value_set = pa.array(wanted, pa.string())

    def matches(key: pa.Table) -> np.ndarray:
        found = pc.is_in(key.column(0), value_set=value_set.cast(key.column(0).type))
        return found.fill_null(False).to_numpy(zero_copy_only=False)

    return _read_matching(source, groups, column, matches, names, path)


def _read_matching(
    source: pq.ParquetFile,
    groups: list[int],
    key: str,
    match: Callable[[pa.Table], np.ndarray],
    names: list[str],
    path: Path,
) -> pa.Table:
    """``names`` of the rows of row groups ``groups`` for which ``match`` of their
    ``key`` column is true: ``key`` read first, the rest only where a row matches, one
    row group at a time; in file order, with the file's schema (empty: no row)."""
    parts, rows = [], 0
    for g in groups:
        hit = np.flatnonzero(match(source.read_row_group(g, columns=[key])))
        if not len(hit):
            continue
        part = source.read_row_group(g, columns=names)
        parts.append(part if len(hit) == part.num_rows else part.take(pa.array(hit)))
        rows += len(hit)
    log.debug(
        "%s: %d rows from %d of %d row groups (%d with a match)",
        path,
        rows,
        len(groups),
        source.metadata.num_row_groups,
        len(parts),
    )
    if not parts:
        return source.schema_arrow.empty_table().select(names)
    return pa.concat_tables(parts)


def read_points(path: Path, columns: Sequence[str]) -> tuple[pa.Table, np.ndarray, np.ndarray]:
    """``columns`` of every row of the GeoParquet layer at ``path`` (WKB geometry) and each
    row's representative point (:func:`shapely.point_on_surface`; x, y in the layer's CRS,
    NaN for a missing or empty geometry), in file order.

    One row group at a time: its ``columns`` and geometry are read, the points taken, the
    footprints dropped, so memory holds one row group's footprints, not the layer's. The
    table has the file's schema (and ``geo`` metadata) without the geometry; the points
    are those of the layer read whole (the same GEOS call on the same shapes)."""
    source = pq.ParquetFile(path)
    schema = source.schema_arrow
    geo = json.loads((schema.metadata or {}).get(b"geo", b"null"))
    name = (geo or {}).get("primary_column")
    if name is None or name not in schema.names:
        raise ValueError("no GeoParquet geometry column")
    if geo["columns"][name].get("encoding", "WKB").upper() != "WKB":
        raise ValueError(f"geometry encoding {geo['columns'][name]['encoding']}, not WKB")
    names = [c for c in columns if c != name]
    parts, xs, ys = [], [], []
    for g in range(source.metadata.num_row_groups):
        part = source.read_row_group(g, columns=[*names, name])
        wkb = part.column(name).to_numpy(zero_copy_only=False)
        pts = shapely.point_on_surface(shapely.from_wkb(wkb))
        xs.append(shapely.get_x(pts))
        ys.append(shapely.get_y(pts))
        parts.append(part.select(names))
    table = pa.concat_tables(parts) if parts else schema.empty_table().select(names)
    x = np.concatenate(xs) if xs else np.zeros(0)
    y = np.concatenate(ys) if ys else np.zeros(0)
    return table, x, y

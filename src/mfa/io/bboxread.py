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
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

__all__ = ["covering_column", "read_bbox", "row_groups_meeting"]

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
    groups = row_groups_meeting(source.metadata, column, fields, bbox)
    x0, y0, x1, y1 = (float(v) for v in bbox)
    parts, rows = [], 0
    for g in groups:
        box = source.read_row_group(g, columns=[column]).column(0).combine_chunks()
        # flatten: a missing box (null struct) gives null fields, and those NaN
        names_in = [box.type.field(i).name for i in range(box.type.num_fields)]
        values = dict(zip(names_in, box.flatten(), strict=True))
        xs = [values[f].to_numpy(zero_copy_only=False) for f in fields]
        with np.errstate(invalid="ignore"):
            meet = (xs[0] <= x1) & (xs[1] <= y1) & (xs[2] >= x0) & (xs[3] >= y0)
        hit = np.flatnonzero(meet)  # a NaN bound meets nothing
        if not len(hit):
            continue
        part = source.read_row_group(g, columns=names)
        parts.append(part if len(hit) == part.num_rows else part.take(pa.array(hit)))
        rows += len(hit)
    log.debug(
        "%s: %d rows from %d of %d row groups",
        path,
        rows,
        len(groups),
        source.metadata.num_row_groups,
    )
    if not parts:
        return schema.empty_table().select(names)
    return pa.concat_tables(parts)

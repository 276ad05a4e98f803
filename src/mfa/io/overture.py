"""Overture Maps buildings GeoParquet files as a footprint source
(``[sources.footprints] schema = "overture"``).

An Overture buildings file (a release's ``theme=buildings/type=building`` partition, or a
part of it cut by the Overture CLI or DuckDB) is GeoParquet: ``geometry`` as WKB in
lon/lat (OGC:CRS84), a covering ``bbox`` struct (``xmin``, ``ymin``, ``xmax``, ``ymax``),
rows sorted spatially so that row groups cover small areas. Only the records of the
pipeline's area are read: row groups whose ``bbox`` statistics miss the area are skipped
without being decoded, and within the rest, rows whose ``bbox`` misses it are left out.
Those records are not records of this run (as buildings outside an OSM extract); every
record read is a building or a row of ``dropped.csv`` (:mod:`mfa.buildings.overture`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import shapely

from mfa.buildings.archetypes import ArchetypeRules
from mfa.buildings.overture import normalise_overture
from mfa.errors import ConfigError, InputDataError
from mfa.io.files import check_input_file

__all__ = ["buildings_from_overture", "read_overture"]

KEY = "sources.footprints.file"
#: Columns an Overture buildings file must have, and those read when present.
REQUIRED = ("id", "geometry", "bbox")
OPTIONAL = (
    "height", "num_floors", "roof_height", "class", "subtype", "type", "is_underground", "sources",
)  # fmt: skip
#: Attributes whose dataset (``sources``) gives their provenance.
PROVENANCE = ("height", "num_floors", "class")
_BOX = ("xmin", "ymin", "xmax", "ymax")

Area = tuple[float, float, float, float]


def _row_group_bounds(pf: pq.ParquetFile, i: int) -> Area | None:
    """(min xmin, min ymin, max xmax, max ymax) of row group ``i`` from the statistics of
    the ``bbox`` columns; None when the file has none."""
    rg = pf.metadata.row_group(i)
    stats: dict[str, Any] = {}
    for j in range(rg.num_columns):
        col = rg.column(j)
        name = col.path_in_schema.removeprefix("bbox.")
        if col.path_in_schema.startswith("bbox.") and name in _BOX:
            s = col.statistics
            if s is None or not s.has_min_max:
                return None
            stats[name] = s.max if name in ("xmax", "ymax") else s.min
    if len(stats) < 4:
        return None
    return (stats["xmin"], stats["ymin"], stats["xmax"], stats["ymax"])


def _misses(box: Area | None, area: Area) -> bool:
    return box is not None and (
        box[0] > area[2] or box[2] < area[0] or box[1] > area[3] or box[3] < area[1]
    )


def _in_area(table: pa.Table, area: Area) -> pa.Array:
    """Rows whose ``bbox`` intersects ``area`` (a row without a bbox is kept: read, so it
    is accounted for)."""
    box = table["bbox"].combine_chunks()
    x0, y0, x1, y1 = (box.field(k) for k in _BOX)
    hit = pc.and_(
        pc.and_(pc.less_equal(x0, area[2]), pc.greater_equal(x1, area[0])),
        pc.and_(pc.less_equal(y0, area[3]), pc.greater_equal(y1, area[1])),
    )
    return pc.fill_null(hit, True)


def _datasets(table: pa.Table) -> dict[str, pd.Series]:
    """Per attribute of :data:`PROVENANCE`, the dataset each row's value came from: the
    ``sources`` entry for its property (``/properties/<name>``), else the feature's
    (``property`` empty or null); <NA> without ``sources``."""
    n = table.num_rows
    empty = pd.Series(pd.NA, index=range(n), dtype="string")
    if "sources" not in table.column_names or n == 0:
        return {a: empty for a in PROVENANCE}
    lists = table["sources"].combine_chunks()
    flat = pc.list_flatten(lists)
    df = pd.DataFrame(
        {
            "row": pc.list_parent_indices(lists).to_numpy(),
            "property": pd.Series(flat.field("property").to_pandas(), dtype="string").fillna(""),
            "dataset": pd.Series(flat.field("dataset").to_pandas(), dtype="string"),
        }
    )

    def first(prop: str) -> pd.Series:
        rows = df[df["property"] == prop].drop_duplicates("row")
        return pd.Series(rows["dataset"].to_numpy(), index=rows["row"].to_numpy()).reindex(range(n))

    feature = first("")
    return {a: first(f"/properties/{a}").fillna(feature).astype("string") for a in PROVENANCE}


def read_overture(path: Path, area: Area | None) -> tuple[gpd.GeoDataFrame, dict[str, int]]:
    """The building records of an Overture file within ``area`` (lon/lat; None: all).

    Returns the records (``building_id``, ``class``, ``subtype``, ``height``,
    ``num_floors``, ``roof_height``, ``type``, ``is_underground``, ``<attribute>_dataset``,
    geometry in the file's CRS) and counts: ``rows`` in the file, ``row_groups`` and
    ``row_groups_read``, ``outside_area`` (records not read).
    """
    path = check_input_file(Path(path), "Overture buildings file", KEY)
    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputDataError(
            f"{path}: not a Parquet file ({str(exc)[:120]}); give an Overture buildings "
            f"GeoParquet file in {KEY}"
        ) from None
    schema = pf.schema_arrow
    missing = [c for c in REQUIRED if c not in schema.names]
    box_type = schema.field("bbox").type if "bbox" in schema.names else None
    if missing or not (
        pa.types.is_struct(box_type) and all(box_type.get_field_index(k) >= 0 for k in _BOX)
    ):
        raise InputDataError(
            f"{path}: not an Overture buildings file (needs {', '.join(REQUIRED)} with bbox a "
            f"struct of {', '.join(_BOX)}; missing: {', '.join(missing) or 'the bbox fields'}); "
            f'give an Overture buildings GeoParquet file in {KEY}, or drop schema = "overture"'
        )
    geo = json.loads((schema.metadata or {}).get(b"geo", b"{}") or b"{}")
    crs = ((geo.get("columns") or {}).get("geometry") or {}).get("crs", "OGC:CRS84")
    columns = [c for c in (*REQUIRED, *OPTIONAL) if c in schema.names]
    pieces, kept_groups, outside = [], 0, 0
    for i in range(pf.num_row_groups):
        rows = pf.metadata.row_group(i).num_rows
        if area is not None and _misses(_row_group_bounds(pf, i), area):
            outside += rows
            continue
        kept_groups += 1
        t = pf.read_row_group(i, columns=columns)
        if area is not None:
            t = t.filter(_in_area(t, area))
            outside += rows - t.num_rows
        pieces.append(t)
    table = (
        pa.concat_tables(pieces) if pieces else schema.empty_table().select(columns)
    ).combine_chunks()
    n = table.num_rows

    def column(name: str) -> pd.Series:
        if name not in table.column_names:
            return pd.Series(pd.NA, index=range(n), dtype="object")
        return pd.Series(table[name].to_pandas(), index=range(n))

    try:
        geometry = shapely.from_wkb(table["geometry"].to_numpy(zero_copy_only=False))
    except shapely.errors.GEOSException as exc:
        raise InputDataError(
            f"{path}: a geometry is not valid WKB ({exc}); fix or re-export the file"
        ) from None
    datasets = _datasets(table)
    frame = pd.DataFrame(
        {
            "building_id": column("id").astype("string"),
            **{
                c: column(c)
                for c in ("class", "subtype", "height", "num_floors", "roof_height", "type")
            },
            "is_underground": column("is_underground").astype("boolean"),
            **{f"{a}_dataset": datasets[a] for a in PROVENANCE},
        }
    )
    if frame["building_id"].isna().any():
        pos = int(frame["building_id"].isna().to_numpy().argmax())
        raise InputDataError(f"{path}: record {pos + 1} (in the area) has no id; fix the file")
    counts = {
        "rows": pf.metadata.num_rows,
        "row_groups": pf.num_row_groups,
        "row_groups_read": kept_groups,
        "outside_area": outside,
    }
    return gpd.GeoDataFrame(frame, geometry=np.asarray(geometry), crs=crs), counts


def buildings_from_overture(
    path: Path, area: Area | None, crs: str, rules: ArchetypeRules
) -> tuple[gpd.GeoDataFrame, pd.DataFrame, dict[str, int]]:
    """Read an Overture buildings file within ``area`` and normalise it."""
    if rules.overture_function.empty and rules.overture_excluded.empty:
        raise ConfigError(
            "the archetype rules have no overture_building_classes.csv; copy it from "
            "config/archetypes/ into [archetypes] dir"
        )
    raw, counts = read_overture(path, area)
    buildings, dropped = normalise_overture(raw, crs, rules)
    return buildings, dropped, counts

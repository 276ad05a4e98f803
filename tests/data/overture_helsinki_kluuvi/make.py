"""Make ``buildings.parquet``: the building outlines of ``tests/data/helsinki_kluuvi.osm.pbf``
in the shape of an Overture Maps buildings GeoParquet file (see README.md).

Run from the repository: ``PYTHONPATH=src python tests/data/overture_helsinki_kluuvi/make.py``
(deterministic: the same bytes each time).
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import shapely

from mfa.io.osm_extract import read_osm_elements

HERE = Path(__file__).resolve().parent
EXTRACT = HERE.parent / "helsinki_kluuvi.osm.pbf"
#: Overture's subtype of the classes in the extract (its buildings schema groups them so)
SUBTYPE = {"church": "religious", "cathedral": "religious", "university": "education",
           "public": "civic"}  # fmt: skip
ROWS_PER_GROUP = 5

SOURCES = pa.list_(
    pa.struct(
        [
            ("property", pa.string()),
            ("dataset", pa.string()),
            ("record_id", pa.string()),
            ("update_time", pa.string()),
            ("confidence", pa.float64()),
        ]
    )
)
BBOX = pa.struct([(k, pa.float32()) for k in ("xmin", "xmax", "ymin", "ymax")])


def _number(s: pd.Series) -> pd.Series:
    return pd.to_numeric(s.astype("string").str.extract(r"^(\d+(?:\.\d+)?)", expand=False))


def main() -> None:
    tags = ("building", "building:part", "building:levels", "height", "roof:height")
    g = read_osm_elements(EXTRACT, tags)
    g = g[
        g["element"].isin(["way", "relation"])
        & g["building"].notna()
        & g["building:part"].isna()
        & g["outer_of"].isna()
        & g["problem"].isna()
        & g.geometry.notna()
    ].copy()
    geom = g.geometry.values
    parts = shapely.get_num_geometries(geom)
    g["geometry"] = np.where(parts == 1, shapely.get_geometry(geom, 0), geom)
    bounds = shapely.bounds(np.asarray(g.geometry.values))
    g = g.assign(xmin=bounds[:, 0], ymin=bounds[:, 1], xmax=bounds[:, 2], ymax=bounds[:, 3])
    g = g.sort_values(["ymin", "xmin", "osm_id"]).reset_index(drop=True)  # spatially, as Overture
    letter = g["element"].str[0]
    osm_ref = letter + g["osm_id"].astype(str)
    cls = g["building"].astype(object).where(g["building"] != "yes", None)
    levels = _number(g["building:levels"])
    n = len(g)
    sources = [
        [{"property": "", "dataset": "OpenStreetMap", "record_id": r, "update_time": None,
          "confidence": None}]
        for r in osm_ref
    ]  # fmt: skip
    table = pa.table(
        {
            "id": [str(uuid.uuid5(uuid.NAMESPACE_URL, f"osm:{r}")) for r in osm_ref],
            "geometry": pa.array(shapely.to_wkb(np.asarray(g.geometry.values)), pa.binary()),
            "bbox": pa.array(
                [
                    dict(zip(("xmin", "xmax", "ymin", "ymax"), v, strict=True))
                    for v in g[["xmin", "xmax", "ymin", "ymax"]].to_numpy()
                ],
                BBOX,
            ),
            "version": pa.array([0] * n, pa.int32()),
            "sources": pa.array(sources, SOURCES),
            "subtype": pa.array(
                cls.map(SUBTYPE).astype(object).where(cls.map(SUBTYPE).notna(), None).tolist(),
                pa.string(),
            ),
            "class": pa.array(cls.tolist(), pa.string()),
            "has_parts": pa.array([False] * n),
            "height": pa.array(
                _number(g["height"]).astype(float).tolist(), pa.float64(), from_pandas=True
            ),
            "is_underground": pa.array([False] * n),
            "num_floors": pa.array([None if pd.isna(v) else int(v) for v in levels], pa.int32()),
            "roof_height": pa.array(
                _number(g["roof:height"]).astype(float).tolist(), pa.float64(), from_pandas=True
            ),
        }
    )
    geo = {
        "version": "1.1.0",
        "primary_column": "geometry",
        "columns": {
            "geometry": {
                "encoding": "WKB",
                "geometry_types": ["Polygon", "MultiPolygon"],
                "covering": {"bbox": {k: ["bbox", k] for k in ("xmin", "ymin", "xmax", "ymax")}},
            }
        },
    }
    table = table.replace_schema_metadata({"geo": json.dumps(geo)})
    pq.write_table(
        table, HERE / "buildings.parquet", row_group_size=ROWS_PER_GROUP, compression="zstd"
    )
    print(n, "buildings,", table.num_rows // ROWS_PER_GROUP + 1, "row groups")


if __name__ == "__main__":
    main()

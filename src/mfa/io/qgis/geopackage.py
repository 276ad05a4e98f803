"""The GeoPackage: layers (the buildings streamed from Arrow batches), the flows view,
the default styles in ``layer_styles``, and its check."""

from __future__ import annotations

import contextlib
import itertools
import sqlite3
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow as pa
import pyogrio
import shapely

from mfa.errors import ValidationError
from mfa.failpoints import failpoint
from mfa.io.qgis.layergeometry import LayerGeometry, _declared
from mfa.io.qgis.names import DESCRIPTIONS, FLOWS_TABLE, GEOMETRY_COLUMN

#: The ``layer_styles`` table exactly as QGIS (3.22) creates it in a GeoPackage.
LAYER_STYLES_DDL = (
    'CREATE TABLE IF NOT EXISTS "layer_styles" ( "id" INTEGER PRIMARY KEY AUTOINCREMENT '
    'NOT NULL, "f_table_catalog" TEXT(256), "f_table_schema" TEXT(256), "f_table_name" '
    'TEXT(256), "f_geometry_column" TEXT(256), "styleName" TEXT(30), "styleQML" TEXT, '
    '"styleSLD" TEXT, "useAsDefault" BOOLEAN, "description" TEXT, "owner" TEXT(30), "ui" '
    "TEXT(30), \"update_time\" DATETIME DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')))"
)


@contextlib.contextmanager
def _through_gdal_files() -> Iterator[None]:
    """GDAL's SQLite writes through GDAL's own file layer (``SQLITE_USE_OGR_VFS=YES``)
    until the block ends. On a full disk SQLite's own file layer loses the error: a
    failed transaction is rolled back, the disk left with free space, and GDAL reports
    only what failed next ("no such table: gpkg_contents"); through GDAL's layer the
    write fills the disk to its last block before it fails, so
    :func:`mfa.io.storage.storage_errno` tells a full disk without a threshold. No
    locking on that layer: mfa writes the file alone, in its work folder."""
    key = "SQLITE_USE_OGR_VFS"
    before = pyogrio.get_gdal_config_option(key)
    pyogrio.set_gdal_config_options({key: "YES"})
    try:
        yield
    finally:
        pyogrio.set_gdal_config_options({key: before})


def write_geopackage(
    path: Path,
    layers: Mapping[str, gpd.GeoDataFrame],
    streamed: Mapping[str, tuple[Iterable[pa.Table], LayerGeometry]] | None = None,
    crs: str | None = None,
    written: Mapping[str, int] | None = None,
) -> dict[str, int]:
    """Write ``layers`` into a new GeoPackage 1.3 at ``path``; return rows per layer.

    A ``flows`` layer becomes the attribute table ``flows_table`` and a ``flows`` view
    that joins it to the ``districts`` polygons by ``district_id`` (when there are
    districts; else ``flows`` is a table without geometry). ``streamed`` layers (the
    buildings, the grid, the flows) are written batch by batch, each given as its Arrow
    batches (WKB ``geometry``, no ``bbox``; the flows without geometry) and its
    :class:`LayerGeometry` (which fixes the declared geometry type up front), in ``crs``;
    they take the place of the same name in ``layers``. ``written`` names layers already
    in the file at ``path`` (with their rows; the buildings, written by
    :mod:`mfa.io.qgis.background`): the others are added to it, in the same order.
    """
    if not layers:
        raise ValueError(f"{path}: no layers to write")
    with _through_gdal_files():
        return _write_layers(Path(path), layers, streamed or {}, crs, dict(written or {}))


def _write_layers(
    path: Path,
    layers: Mapping[str, gpd.GeoDataFrame],
    streamed: Mapping[str, tuple[Iterable[pa.Table], LayerGeometry]],
    crs: str | None,
    written: dict[str, int],
) -> dict[str, int]:
    """:func:`write_geopackage` without its checks and setting."""
    if not written:
        path.unlink(missing_ok=True)
    rows: dict[str, int] = dict(written)
    first = not written

    def write(df: pd.DataFrame, name: str) -> None:
        nonlocal first
        pyogrio.write_dataframe(
            df,
            path,
            layer=name,
            driver="GPKG",
            use_arrow=True,
            dataset_options={"VERSION": "1.3"} if first else None,
            layer_options={"DESCRIPTION": DESCRIPTIONS.get(name, name), "OVERWRITE": "YES"},
        )
        first = False

    for name, gdf in layers.items():
        if name == "flows" or name in rows:
            continue
        if name in streamed:
            batches, shape = streamed[name]
            rows[name] = _write_batches(path, name, batches, shape, crs or "", first)
            first = False
            continue
        write(gdf.drop(columns=["bbox"], errors="ignore"), name)
        rows[name] = len(gdf)
    if "flows" in layers:
        if "flows" in streamed:
            tables: Iterable[pa.Table] = streamed["flows"][0]
        else:  # a frame (the API's callers): the same Arrow table pyogrio would write
            frame = pd.DataFrame(
                layers["flows"].drop(columns=["geometry", "bbox"], errors="ignore")
            )
            tables = [pa.Table.from_pandas(frame, preserve_index=False)]
        view = "districts" in layers
        table = FLOWS_TABLE if view else "flows"
        rows["flows"], columns = _write_table(path, table, tables, first)
        first = False
        if view:
            _flows_view(path, columns)
    return rows


def _write_table(
    path: Path, name: str, tables: Iterable[pa.Table], new: bool
) -> tuple[int, list[str]]:
    """Write an attribute table (no geometry) from Arrow tables in one GDAL session;
    memory holds one of them. Returns the rows written and the columns."""
    it = iter(tables)
    head = next(it, None)
    if head is None:
        return 0, []
    schema = head.schema.remove_metadata()
    rows = 0

    def stream() -> Iterator[pa.RecordBatch]:
        nonlocal rows
        for table in itertools.chain([head], it):
            rows += table.num_rows
            yield from table.cast(schema).to_batches()

    pyogrio.write_arrow(
        pa.RecordBatchReader.from_batches(schema, stream()),
        path,
        layer=name,
        driver="GPKG",
        dataset_options={"VERSION": "1.3"} if new else None,
        layer_options={"DESCRIPTION": DESCRIPTIONS.get(name, name), "OVERWRITE": "YES"},
    )
    return rows, list(schema.names)


def _write_batches(
    path: Path,
    name: str,
    batches: Iterable[pa.Table],
    shape: LayerGeometry,
    crs: str,
    new: bool,
) -> int:
    """Write a layer from Arrow batches (WKB ``geometry``) in one GDAL session, so the
    spatial index is built once at the end; memory holds one batch. Single parts are
    made multi where the layer declares a multi type (as :func:`write_geopackage`'s
    one-shot writes do). Returns the rows written.

    Passes the failpoint ``gpkg:<name>`` with the first batch handed to GDAL (the layer
    half written)."""
    geometry_type, promote = _declared(shape)
    it = iter(batches)
    head = next(it, None)
    if head is None:
        return 0
    schema = head.schema
    rows = 0

    def stream() -> Iterator[pa.RecordBatch]:
        nonlocal rows
        for k, table in enumerate(itertools.chain([head], it)):
            if promote:
                geoms = shapely.from_wkb(table["geometry"].to_numpy(zero_copy_only=False))
                wkb = pa.array(shapely.to_wkb(_as_multi(geoms), flavor="iso"), pa.binary())
                table = table.set_column(table.column_names.index("geometry"), "geometry", wkb)
            rows += table.num_rows
            yield from table.cast(schema).to_batches()
            if k == 0:
                failpoint(f"gpkg:{name}")

    pyogrio.write_arrow(
        pa.RecordBatchReader.from_batches(schema, stream()),
        path,
        layer=name,
        driver="GPKG",
        geometry_name="geometry",
        geometry_type=geometry_type,
        crs=crs,
        dataset_options={"VERSION": "1.3"} if new else None,
        layer_options={"DESCRIPTION": DESCRIPTIONS.get(name, name), "OVERWRITE": "YES"},
    )
    return rows


def _as_multi(geoms: np.ndarray) -> np.ndarray:
    """Points, lines and polygons as their multi types (the others unchanged)."""
    out = geoms.copy()
    ids = shapely.get_type_id(geoms)
    makers = ((0, shapely.multipoints), (1, shapely.multilinestrings), (3, shapely.multipolygons))
    for single, make in makers:
        rows = np.flatnonzero(ids == single)
        if len(rows):
            out[rows] = make(geoms[rows], indices=np.arange(len(rows)))
    return out


def _flows_view(path: Path, columns: Sequence[str]) -> None:
    """Register the ``flows`` view: ``flows_table`` rows with their district's polygon."""
    cols = ", ".join(f't."{c}"' for c in columns)
    with sqlite3.connect(path) as con:
        srs_id, geom_type = con.execute(
            "SELECT srs_id, geometry_type_name FROM gpkg_geometry_columns WHERE table_name = ?",
            ("districts",),
        ).fetchone()
        con.execute(
            f'CREATE VIEW "flows" AS SELECT t."fid" AS "fid", {cols}, d."{GEOMETRY_COLUMN}" '
            f'AS "{GEOMETRY_COLUMN}" FROM "{FLOWS_TABLE}" t '
            'LEFT JOIN "districts" d ON d."district_id" = t."district_id"'
        )
        con.execute('CREATE INDEX "districts_district_id" ON "districts" ("district_id")')
        con.execute(f'CREATE INDEX "{FLOWS_TABLE}_date" ON "{FLOWS_TABLE}" ("date")')
        con.execute(
            "INSERT INTO gpkg_contents (table_name, data_type, identifier, description, "
            "last_change, min_x, min_y, max_x, max_y, srs_id) SELECT 'flows', 'features', "
            "'flows', ?, strftime('%Y-%m-%dT%H:%M:%fZ','now'), min_x, min_y, max_x, max_y, "
            "srs_id FROM gpkg_contents WHERE table_name = 'districts'",
            (DESCRIPTIONS["flows"],),
        )
        con.execute(
            "INSERT INTO gpkg_geometry_columns (table_name, column_name, geometry_type_name, "
            "srs_id, z, m) VALUES ('flows', ?, ?, ?, 0, 0)",
            (GEOMETRY_COLUMN, geom_type, srs_id),
        )
    con.close()


def write_layer_styles(
    path: Path,
    styles: Mapping[str, str],
    geometry: Mapping[str, bool],
    descriptions: Mapping[str, str] | None = None,
) -> None:
    """Store each QML of ``styles`` (layer → QML) as its layer's default style in ``path``.

    ``geometry`` says which layers have a geometry column (QGIS looks styles up by table
    and geometry column). The table is the one QGIS writes, registered as attributes.
    """
    with sqlite3.connect(path) as con:
        con.execute(LAYER_STYLES_DDL)
        con.execute(
            "INSERT INTO gpkg_contents (table_name, data_type, identifier, description, "
            "last_change) SELECT 'layer_styles', 'attributes', 'layer_styles', "
            "'QGIS layer styles', strftime('%Y-%m-%dT%H:%M:%fZ','now') WHERE NOT EXISTS "
            "(SELECT 1 FROM gpkg_contents WHERE table_name = 'layer_styles')"
        )
        con.executemany(
            "INSERT INTO layer_styles (f_table_catalog, f_table_schema, f_table_name, "
            "f_geometry_column, styleName, styleQML, styleSLD, useAsDefault, description, "
            "owner, ui) VALUES ('', '', ?, ?, ?, ?, '', 1, ?, '', NULL)",
            [
                (
                    name,
                    GEOMETRY_COLUMN if geometry.get(name, True) else "",
                    f"mfa {name}",
                    text,
                    (descriptions or {}).get(name, "default style written by mfa"),
                )
                for name, text in styles.items()
            ],
        )
    con.close()


def check_geopackage(path: Path, expected_rows: Mapping[str, int]) -> dict[str, Any]:
    """Check that the GeoPackage holds every layer with its row count and default style."""
    path = Path(path)
    if not path.is_file():
        raise ValidationError(f"{path}: missing; the qgis step writes it")
    present = {str(name) for name, _ in pyogrio.list_layers(path)}
    missing = sorted(set(expected_rows) - present)
    if missing:
        raise ValidationError(f"{path}: layers {missing} missing (has {sorted(present)})")
    for name, n in expected_rows.items():
        got = pyogrio.read_info(path, layer=name, force_feature_count=True)["features"]
        if got != n:
            raise ValidationError(f"{path}: layer {name} has {got} rows, its GeoParquet {n}")
    with sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True) as con:
        styled = {
            r[0] for r in con.execute("SELECT f_table_name FROM layer_styles WHERE useAsDefault")
        }
    con.close()
    unstyled = sorted(set(expected_rows) - styled)
    if unstyled:
        raise ValidationError(f"{path}: no default style for {unstyled}")
    return {"status": "passed", "layers": dict(expected_rows)}

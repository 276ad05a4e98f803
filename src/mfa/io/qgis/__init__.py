"""QGIS-ready outputs of a run: a styled GeoPackage, ``.qml`` sidecars and a QGIS project.

QGIS is not a dependency: the styles (QML) and the project (``.qgs``) are XML written
here with :mod:`xml.etree.ElementTree`, in the form QGIS 3.22 writes them (newer releases
read it too). The functions that build XML are pure (column values in, strings out);
:func:`write_qgis_outputs` is the only one that touches disk.

What a run folder gets (``GPKG``, ``PROJECT``, ``<layer>.qml``):

- ``layers.gpkg`` (GeoPackage 1.3): the run's layers under their names (``buildings``,
  ``districts``, ``grid``, ``quality``, ``flows``). ``flows`` is a view that joins the
  attribute table ``flows_table`` (scenario × district × year × material) to the district
  polygons, so the polygons are stored once, not once per row. Every layer has a default
  style in the ``layer_styles`` table (the table QGIS's "Save style → in database" uses),
  which QGIS applies when the layer is opened.
- ``<layer>.qml`` beside ``<layer>.parquet``: the same style, which QGIS applies to a
  GeoParquet layer it opens (QGIS ≥ 3.34).
- ``project.qgs``: the layers of ``layers.gpkg`` (paths relative to the project), styled,
  in groups, in the pipeline CRS, zoomed to the data, with the temporal controller set to
  one frame per calendar year of the flows.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pyarrow as pa

from mfa.io.classes import class_breaks, color_ramp, format_value, range_labels
from mfa.io.qgis.geopackage import check_geopackage, write_geopackage, write_layer_styles
from mfa.io.qgis.layergeometry import LayerGeometry, _geometries
from mfa.io.qgis.names import FLOWS_TABLE, GPKG, MATERIAL_VARIABLE, PROJECT, SCENARIO_VARIABLE
from mfa.io.qgis.project import GROUPS, ProjectLayer, _project_layers, project_xml
from mfa.io.qgis.styles import GraduatedStyle, flows_expression, qml, run_styles

__all__ = [
    "FLOWS_TABLE",
    "GPKG",
    "PROJECT",
    "GraduatedStyle",
    "LayerGeometry",
    "ProjectLayer",
    "check_geopackage",
    "class_breaks",
    "color_ramp",
    "flows_expression",
    "format_value",
    "project_xml",
    "qml",
    "range_labels",
    "run_styles",
    "write_geopackage",
    "write_layer_styles",
    "write_qgis_outputs",
]


def write_qgis_outputs(
    folder: Path,
    layers: Mapping[str, gpd.GeoDataFrame],
    crs: str,
    title: str,
    years: tuple[int, int] | None = None,
    geometries: Mapping[str, LayerGeometry] | None = None,
    batches: Mapping[str, Iterable[pa.Table]] | None = None,
    written: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """Write ``layers.gpkg`` (styled), ``<layer>.qml`` sidecars and ``project.qgs``.

    ``layers`` maps layer names (``buildings``, ``districts``, ``grid``, ``quality``,
    ``flows``) to the run's GeoParquet layers; ``years`` is (base year, horizon) of the
    flows. ``batches`` gives layers to write into the GeoPackage batch by batch (their
    entry in ``layers`` then needs only the styled column); ``geometries`` describes layers
    passed without parsed geometries (see :func:`run_styles`); ``written`` layers are
    already in ``layers.gpkg`` (their rows; see :mod:`mfa.io.qgis.background`): the
    others are added to it. Returns the files written and the rows and style of each
    layer.
    """
    folder = Path(folder)
    geo = _geometries(layers, geometries)
    styles = run_styles(layers, base_year=years[0] if years else None, geometries=geo)
    texts = {name: qml(style) for name, style in styles.items()}
    streamed = {name: (b, geo[name]) for name, b in (batches or {}).items()}
    rows = write_geopackage(folder / GPKG, layers, streamed, crs, written)
    write_layer_styles(
        folder / GPKG,
        texts,
        {name: s.geometry != "none" for name, s in styles.items()},
        {name: f"mfa: {s.title}" for name, s in styles.items()},
    )
    for name, text in texts.items():
        (folder / f"{name}.qml").write_text(text, encoding="utf-8")

    plan = [
        lyr
        for group, names in GROUPS
        for name in names
        if name in layers
        for lyr in _project_layers(name, group, geo[name], styles[name])
    ]
    boxes = [lyr.extent for lyr in plan if lyr.extent is not None]
    if boxes:
        arr = np.array(boxes)
        x0, y0 = arr[:, 0].min(), arr[:, 1].min()
        x1, y1 = arr[:, 2].max(), arr[:, 3].max()
        pad = 0.03 * max(x1 - x0, y1 - y0, 100.0)
        extent = (x0 - pad, y0 - pad, x1 + pad, y1 + pad)
    else:
        extent = (0.0, 0.0, 1.0, 1.0)
    variables = {}
    if "flows" in layers and len(layers["flows"]):
        variables = {
            SCENARIO_VARIABLE: str(layers["flows"]["scenario"].iloc[0]),
            MATERIAL_VARIABLE: "mass",
        }
    (folder / PROJECT).write_text(
        project_xml(
            plan, crs, extent, title, GPKG, years if "flows" in layers else None, variables
        ),
        encoding="utf-8",
    )
    return {
        "geopackage": GPKG,
        "project": PROJECT,
        "styles": [f"{name}.qml" for name in texts],
        "layers": {
            name: {
                "rows": rows[name],
                "field": s.expression if s.classes else None,
                "classes": s.classes,
                "breaks": list(s.breaks) if s.classes else [],
            }
            for name, s in styles.items()
        },
        "extent": [round(v, 1) for v in extent],
    }

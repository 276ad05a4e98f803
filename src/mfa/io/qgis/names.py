"""File and layer names, colour ramps and layer descriptions of the QGIS outputs."""

from __future__ import annotations

from typing import Literal

from mfa.outputs import LAYERS

GPKG = "layers.gpkg"


PROJECT = "project.qgs"


#: The attribute table behind the ``flows`` view of the GeoPackage.
FLOWS_TABLE = "flows_table"


#: GDAL's default geometry column name in a GeoPackage.
GEOMETRY_COLUMN = "geom"


#: The QGIS version the XML follows (3.22, Debian's; later releases read it unchanged).
QGIS_VERSION = "3.22.0"


#: Project variables that choose which flows the flows layer draws.
SCENARIO_VARIABLE = "mfa_flows_scenario"


MATERIAL_VARIABLE = "mfa_flows_material"


Geometry = Literal["point", "line", "polygon", "none"]


#: ColorBrewer schemes (9 classes, space-separated), interpolated for other class counts.
RAMPS: dict[str, str] = {
    "YlOrBr": "#ffffe5 #fff7bc #fee391 #fec44f #fe9929 #ec7014 #cc4c02 #993404 #662506",
    "RdPu": "#fff7f3 #fde0dd #fcc5c0 #fa9fb5 #f768a1 #dd3497 #ae017e #7a0177 #49006a",
    "YlGnBu": "#ffffd9 #edf8b1 #c7e9b4 #7fcdbb #41b6c4 #1d91c0 #225ea8 #253494 #081d58",
    "RdYlGn": "#d73027 #f46d43 #fdae61 #fee08b #ffffbf #d9ef8b #a6d96a #66bd63 #1a9850",
}


#: What each layer holds, for the GeoPackage's layer descriptions.
DESCRIPTIONS = {
    **{entry.name: entry.description for entry in LAYERS},
    FLOWS_TABLE: "The attributes of the flows layer (the flows view adds district polygons)",
}

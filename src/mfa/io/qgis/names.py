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


#: What each layer holds, for the GeoPackage's layer descriptions.
DESCRIPTIONS = {
    **{entry.name: entry.description for entry in LAYERS},
    FLOWS_TABLE: "The attributes of the flows layer (the flows view adds district polygons)",
}

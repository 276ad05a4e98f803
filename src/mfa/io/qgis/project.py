"""The QGIS project (``project.qgs``) as XML: layers from the GeoPackage by relative
path, groups, drawing order, CRS, extent, temporal controller."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from pyproj import CRS

from mfa.io.qgis.layergeometry import LayerGeometry, _families, _wkb_type
from mfa.io.qgis.names import GPKG, QGIS_VERSION
from mfa.io.qgis.styles import GraduatedStyle, _style_elements, _xml
from mfa.outputs import LAYERS, project_groups


@dataclass(frozen=True)
class ProjectLayer:
    """A GeoPackage layer in the project: its table, tree group, style and visibility.

    ``geometry_filter`` (e.g. "Point") adds only the rows of one geometry family, for a
    layer that mixes points and polygons; ``name`` is then what the tree shows.
    """

    table: str
    group: str
    style: GraduatedStyle
    wkb_type: str
    extent: tuple[float, float, float, float] | None = None
    visible: bool = True
    name: str = ""
    geometry_filter: str | None = None

    @property
    def title(self) -> str:
        """The name in the layer tree: the table (and the geometry family of a split
        layer), then what its colours show (quantity, unit; for flows scenario and
        material)."""
        base = self.name or self.table
        return f"{base}: {self.style.title}" if self.style.title else base

    @property
    def layer_id(self) -> str:
        # QGIS ignores an id of 10 characters or fewer and makes up a new one, which
        # then no longer matches the layer tree
        return "mfa_layer_" + "".join(c if c.isalnum() else "_" for c in self.title)

    def source(self, gpkg: str) -> str:
        s = f"./{gpkg}|layername={self.table}"
        return s + (f"|geometrytype={self.geometry_filter}" if self.geometry_filter else "")


def _srs(crs: str) -> ET.Element:
    c = CRS(crs)
    auth = c.to_authority()
    el = ET.Element("spatialrefsys")
    values = {
        "wkt": c.to_wkt(),
        "srid": auth[1] if auth else "0",
        "authid": ":".join(auth) if auth else "",
        "description": c.name,
        "geographicflag": "true" if c.is_geographic else "false",
    }
    for k, v in values.items():
        ET.SubElement(el, k).text = v
    return el


def _extent(parent: ET.Element, tag: str, box: tuple[float, float, float, float]) -> None:
    ext = ET.SubElement(parent, tag)
    for k, v in zip(("xmin", "ymin", "xmax", "ymax"), box, strict=True):
        ET.SubElement(ext, k).text = repr(float(v))


def _property(parent: ET.Element, path: str, kind: str, value: str | list[str]) -> None:
    """A project property (``Paths/Absolute``...) in QGIS's typed XML form."""
    node = parent
    parts = path.split("/")
    for name in parts[:-1]:
        found = node.find(name)
        node = found if found is not None else ET.SubElement(node, name)
    leaf = ET.SubElement(node, parts[-1], {"type": kind})
    if isinstance(value, list):
        for v in value:
            ET.SubElement(leaf, "value").text = v
    else:
        leaf.text = value


def project_xml(
    layers: Sequence[ProjectLayer],
    crs: str,
    extent: tuple[float, float, float, float],
    title: str,
    gpkg: str = GPKG,
    years: tuple[int, int] | None = None,
    variables: Mapping[str, str] | None = None,
) -> str:
    """The ``.qgs`` document of a project with ``layers`` (first drawn on top).

    Layers come from ``gpkg`` beside the project (relative paths), in tree groups in
    the order of their first layer; the project CRS is ``crs``; the map opens on
    ``extent``. ``years`` (first, last) sets the temporal controller to one frame per
    calendar year; ``variables`` become project variables.
    """
    root = ET.Element("qgis", {"projectname": title, "version": QGIS_VERSION})
    ET.SubElement(root, "homePath", {"path": ""})
    ET.SubElement(root, "title").text = title
    ET.SubElement(root, "projectCrs").append(_srs(crs))

    tree = ET.SubElement(root, "layer-tree-group")
    ET.SubElement(tree, "customproperties")
    groups: dict[str, ET.Element] = {}
    for lyr in layers:
        if lyr.group not in groups:
            shown = any(x.visible for x in layers if x.group == lyr.group)
            g = ET.SubElement(
                tree,
                "layer-tree-group",
                {
                    "name": lyr.group,
                    "checked": "Qt::Checked" if shown else "Qt::Unchecked",
                    "expanded": "1",
                },
            )
            ET.SubElement(g, "customproperties")
            groups[lyr.group] = g
        node = ET.SubElement(
            groups[lyr.group],
            "layer-tree-layer",
            {
                "id": lyr.layer_id,
                "name": lyr.title,
                "source": lyr.source(gpkg),
                "providerKey": "ogr",
                "checked": "Qt::Checked" if lyr.visible else "Qt::Unchecked",
                "expanded": "1" if lyr.visible else "0",
            },
        )
        ET.SubElement(node, "customproperties")
    ET.SubElement(tree, "custom-order", {"enabled": "0"})

    canvas = ET.SubElement(root, "mapcanvas", {"name": "theMapCanvas", "annotationsVisible": "1"})
    ET.SubElement(canvas, "units").text = "meters" if not CRS(crs).is_geographic else "degrees"
    _extent(canvas, "extent", extent)
    ET.SubElement(canvas, "rotation").text = "0"
    ET.SubElement(canvas, "destinationsrs").append(_srs(crs))
    ET.SubElement(canvas, "rendermaptile").text = "0"

    project_layers = ET.SubElement(root, "projectlayers")
    for lyr in layers:
        geometry = {
            "point": "Point",
            "line": "Line",
            "polygon": "Polygon",
            "none": "No geometry",
        }[lyr.style.geometry]
        ml = ET.SubElement(
            project_layers,
            "maplayer",
            {
                "type": "vector",
                "geometry": geometry,
                "wkbType": lyr.wkb_type,
                "hasScaleBasedVisibilityFlag": "0",
                "minScale": "100000000",
                "maxScale": "0",
                "readOnly": "0",
            },
        )
        if lyr.style.label_field:
            ml.set("labelsEnabled", "1")
        if lyr.extent is not None:
            _extent(ml, "extent", lyr.extent)
        ET.SubElement(ml, "id").text = lyr.layer_id
        ET.SubElement(ml, "datasource").text = lyr.source(gpkg)
        ET.SubElement(ml, "layername").text = lyr.title
        ET.SubElement(ml, "srs").append(_srs(crs))
        ET.SubElement(ml, "provider", {"encoding": "UTF-8"}).text = "ogr"
        ml.extend(_style_elements(lyr.style))

    order = ET.SubElement(root, "layerorder")
    for lyr in layers:
        ET.SubElement(order, "layer", {"id": lyr.layer_id})

    props = ET.SubElement(root, "properties")
    _property(props, "Paths/Absolute", "bool", "false")
    _property(props, "SpatialRefSys/ProjectionsEnabled", "int", "1")
    if variables:
        names = sorted(variables)
        _property(props, "Variables/variableNames", "QStringList", names)
        _property(props, "Variables/variableValues", "QStringList", [variables[k] for k in names])

    view = ET.SubElement(root, "ProjectViewSettings", {"UseProjectScales": "0", "rotation": "0"})
    ET.SubElement(view, "Scales")
    default = ET.SubElement(
        view,
        "DefaultViewExtent",
        {k: repr(float(v)) for k, v in zip(("xmin", "ymin", "xmax", "ymax"), extent, strict=True)},
    )
    default.append(_srs(crs))
    if years is not None:
        # frames are calendar years [1 Jan, next 1 Jan): the dates (31 Dec) lie inside a
        # frame, never on its edge, so no time zone or date/datetime comparison moves them
        ts = ET.SubElement(
            root,
            "ProjectTimeSettings",
            {
                "frameRate": "1",
                "cumulativeTemporalRange": "0",
                "timeStep": "1",
                "timeStepUnit": "y",
            },
        )
        rng = ET.SubElement(ts, "TemporalRange")
        ET.SubElement(rng, "start").text = f"{years[0]:04d}-01-01T00:00:00"
        ET.SubElement(rng, "end").text = f"{years[1] + 1:04d}-01-01T00:00:00"
    return _xml(root)


def _project_layers(
    name: str, group: str, g: LayerGeometry, style: GraduatedStyle
) -> list[ProjectLayer]:
    """The project layer(s) of a GeoPackage layer: one per geometry family it holds.

    A layer that mixes points and polygons (register-only points among footprints in a
    conflated run) becomes one project layer per family, filtered by geometry type,
    points drawn above polygons; the most frequent family keeps the layer's name.
    """
    families = _families(g)
    if len(families) == 1:
        return [
            ProjectLayer(
                table=name,
                group=group,
                style=style,
                wkb_type=_wkb_type(g, families[0]),
                extent=g.bounds,
                visible=name in VISIBLE,
            )
        ]
    out = []
    for family in sorted(families, key=["point", "line", "polygon"].index):
        out.append(
            ProjectLayer(
                table=name,
                group=group,
                style=style
                if family == style.geometry
                else replace(style, geometry=family, outline_width_mm=0.1),
                wkb_type=_wkb_type(g, family),
                extent=g.bounds,
                visible=name in VISIBLE,
                name=name if family == families[0] else f"{name} ({family}s)",
                geometry_filter={"point": "Point", "line": "LineString"}.get(family, "Polygon"),
            )
        )
    return out


#: The project's tree: group, then the layers in drawing order (first on top).
GROUPS = project_groups()


#: Layers shown when the project opens (the others are a tick away).
VISIBLE = {entry.name for entry in LAYERS if entry.visible}

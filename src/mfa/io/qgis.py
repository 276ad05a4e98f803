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

import itertools
import math
import sqlite3
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow as pa
import pyogrio
import shapely
from pyproj import CRS

from mfa.errors import ValidationError

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
    "buildings": "One row per building: floor area (gfa_m2, m²), material tonnes "
    "(mass_t, <material>_t, t) with p05/p50/p95, archetype, provenance (*_source)",
    "districts": "Sums per district: tonnes (t) with percentiles, mass_t_per_ha (t/ha)",
    "grid": "Sums per grid cell that holds buildings: tonnes (t), mass_t_per_ha (t/ha)",
    "quality": "Per district: share of buildings (0-1) whose attributes are observed, "
    "imputed or missing",
    "flows": "Per scenario, district, year and material: stock, inflow (construction) "
    "and outflow (demolition) in m² and t; date = end of the year",
    FLOWS_TABLE: "The attributes of the flows layer (the flows view adds district polygons)",
}


# --------------------------------------------------------------------------- classes


def _round_sig(
    x: float, digits: int = 2, how: Literal["nearest", "down", "up"] = "nearest"
) -> float:
    """``x`` rounded to ``digits`` significant digits (down/up: towards −∞/+∞)."""
    if x == 0 or not math.isfinite(x):
        return 0.0
    exponent = math.floor(math.log10(abs(x))) - (digits - 1)
    scaled = x / 10.0**exponent
    rounded = {"nearest": round, "down": math.floor, "up": math.ceil}[how](scaled)
    # format/parse removes the binary noise of the multiplication (0.30000000000000004)
    return float(f"{rounded * 10.0**exponent:.{max(0, -exponent)}f}")


def class_breaks(values: Sequence[float] | np.ndarray, n: int = 5) -> tuple[float, ...]:
    """Class edges for a graduated style: quantiles rounded to 2 significant digits.

    The lowest edge is 0 for non-negative data (else the minimum rounded down), the
    highest the maximum rounded up, so every value falls in a class. Returns the edges
    (one more than the classes); fewer than ``n`` classes when values repeat; one class
    (0, 1) when there is no finite value.
    """
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return (0.0, 1.0)
    lo = 0.0 if v.min() >= 0 else _round_sig(float(v.min()), how="down")
    hi = _round_sig(float(v.max()), how="up")
    if hi <= lo:
        hi = lo + 1.0 if lo >= 0 else _round_sig(lo / 2, how="up")
    inner = [_round_sig(float(q)) for q in np.quantile(v, np.linspace(0, 1, n + 1)[1:-1])]
    return tuple(sorted({lo, hi, *(q for q in inner if lo < q < hi)}))


def color_ramp(name: str, n: int, start: float = 0.0, stop: float = 1.0) -> tuple[str, ...]:
    """``n`` colours (``#rrggbb``) evenly spaced along the ColorBrewer scheme ``name``.

    ``start``/``stop`` (0…1) cut the scheme's ends, e.g. its near-white first colour.
    """
    anchors = np.array(
        [[int(c[i : i + 2], 16) for i in (1, 3, 5)] for c in RAMPS[name].split()], dtype=float
    )
    pos = np.linspace(start, stop, n) * (len(anchors) - 1) if n > 1 else np.array([stop])
    lower = np.floor(pos).astype(int).clip(0, len(anchors) - 2)
    frac = (pos - lower)[:, None]
    rgb = anchors[lower] * (1 - frac) + anchors[lower + 1] * frac
    return tuple("#{:02x}{:02x}{:02x}".format(*np.rint(c).astype(int)) for c in rgb)


def format_value(x: float) -> str:
    """A class edge for a legend: thousands separators, two significant digits below 10."""
    if x == 0:
        return "0"
    decimals = max(0, 1 - math.floor(math.log10(abs(x))))
    text = f"{x:,.{decimals}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def range_labels(breaks: Sequence[float], unit: str, scale: float = 1.0) -> tuple[str, ...]:
    """Legend labels ``"lo – hi unit"`` for consecutive edges (values × ``scale``)."""
    return tuple(
        f"{format_value(lo * scale)} – {format_value(hi * scale)} {unit}".rstrip()
        for lo, hi in itertools.pairwise(breaks)
    )


# --------------------------------------------------------------------------- styles


@dataclass(frozen=True)
class GraduatedStyle:
    """A graduated-colour style: class ``i`` is ``breaks[i]``…``breaks[i + 1]``.

    ``expression`` is a field name or a QGIS expression; ``unit`` goes into the labels
    QGIS makes when the classes are recomputed. ``geometry`` "none" writes no renderer
    (a table). ``temporal_field`` binds the layer's temporal properties to a date field.
    """

    expression: str
    breaks: tuple[float, ...]
    colors: tuple[str, ...]
    labels: tuple[str, ...]
    geometry: Geometry
    unit: str = ""
    title: str = ""
    outline: str | None = "#232323"
    outline_width_mm: float = 0.2
    marker_size_mm: float = 2.0
    method: str = "Quantile"
    temporal_field: str | None = None
    opacity: float = 1.0

    def __post_init__(self) -> None:
        n = len(self.breaks) - 1
        if self.geometry != "none" and (n < 1 or len(self.colors) != n or len(self.labels) != n):
            raise ValueError(
                f"{self.expression}: {len(self.breaks)} edges need {n} colours and labels, "
                f"got {len(self.colors)} and {len(self.labels)}"
            )

    @property
    def classes(self) -> int:
        """The number of classes (0 for a table without a renderer)."""
        return 0 if self.geometry == "none" else len(self.breaks) - 1


def _rgba(color: str, alpha: int = 255) -> str:
    return ",".join(str(int(color[i : i + 2], 16)) for i in (1, 3, 5)) + f",{alpha}"


def _ddp(parent: ET.Element) -> None:
    """The empty data-defined-properties collection QGIS writes under symbols."""
    ddp = ET.SubElement(parent, "data_defined_properties")
    m = ET.SubElement(ddp, "Option", {"type": "Map"})
    ET.SubElement(m, "Option", {"type": "QString", "name": "name", "value": ""})
    ET.SubElement(m, "Option", {"name": "properties"})
    ET.SubElement(m, "Option", {"type": "QString", "name": "type", "value": "collection"})


def _props(parent: ET.Element, props: Mapping[str, str]) -> None:
    """Properties both as an Option map (QGIS ≥ 3.26 reads it) and as legacy ``prop``."""
    m = ET.SubElement(parent, "Option", {"type": "Map"})
    for k, v in props.items():
        ET.SubElement(m, "Option", {"type": "QString", "name": k, "value": v})
    for k, v in props.items():
        ET.SubElement(parent, "prop", {"k": k, "v": v})


def _symbol(name: str, color: str, style: GraduatedStyle) -> ET.Element:
    kind = {"point": "marker", "line": "line", "polygon": "fill"}[style.geometry]
    sym = ET.Element(
        "symbol",
        {"type": kind, "name": name, "alpha": "1", "clip_to_extent": "1", "force_rhr": "0"},
    )
    _ddp(sym)
    outline = _rgba(style.outline) if style.outline else "35,35,35,255"
    edge = {  # the outline of markers and fills
        "joinstyle": "bevel",
        "offset": "0,0",
        "offset_unit": "MM",
        "outline_color": outline,
        "outline_style": "solid" if style.outline else "no",
        "outline_width": f"{style.outline_width_mm:g}",
        "outline_width_unit": "MM",
    }
    if kind == "marker":
        cls = "SimpleMarker"
        props = {
            "angle": "0",
            "color": _rgba(color),
            "horizontal_anchor_point": "1",
            **edge,
            "name": "circle",
            "scale_method": "diameter",
            "size": f"{style.marker_size_mm:g}",
            "size_unit": "MM",
            "vertical_anchor_point": "1",
        }
    elif kind == "fill":
        cls = "SimpleFill"
        props = {
            "color": _rgba(color),
            **edge,
            "style": "solid",
        }
    else:
        cls = "SimpleLine"
        props = {
            "line_color": _rgba(color),
            "line_style": "solid",
            "line_width": "0.6",
            "line_width_unit": "MM",
            "capstyle": "square",
            "joinstyle": "bevel",
        }
    layer = ET.SubElement(sym, "layer", {"class": cls, "pass": "0", "enabled": "1", "locked": "0"})
    _props(layer, props)
    _ddp(layer)
    return sym


def _renderer(style: GraduatedStyle) -> ET.Element:
    r = ET.Element(
        "renderer-v2",
        {
            "type": "graduatedSymbol",
            "attr": style.expression,
            "graduatedMethod": "GraduatedColor",
            "symbollevels": "0",
            "enableorderby": "0",
            "forceraster": "0",
            "referencescale": "-1",
        },
    )
    ranges = ET.SubElement(r, "ranges")
    symbols = ET.SubElement(r, "symbols")
    edges = style.breaks
    for i, (lo, hi, color, label) in enumerate(
        zip(edges[:-1], edges[1:], style.colors, style.labels, strict=True)
    ):
        ET.SubElement(
            ranges,
            "range",
            {
                "lower": f"{lo:.15g}",
                "upper": f"{hi:.15g}",
                "symbol": str(i),
                "label": label,
                "render": "true",
            },
        )
        symbols.append(_symbol(str(i), color, style))
    source = _symbol("0", style.colors[0], style)
    holder = ET.SubElement(r, "source-symbol")
    holder.append(source)
    # the ramp QGIS uses when the classes are recomputed ("Classify")
    ramp = ET.SubElement(r, "colorramp", {"type": "gradient", "name": "[source]"})
    inner = style.colors[1:-1]
    stops = ":".join(
        f"{(i + 1) / (len(style.colors) - 1):.4g};{_rgba(c)}" for i, c in enumerate(inner)
    )
    _props(
        ramp,
        {
            "color1": _rgba(style.colors[0]),
            "color2": _rgba(style.colors[-1]),
            "discrete": "0",
            "rampType": "gradient",
            **({"stops": stops} if stops else {}),
        },
    )
    method = ET.SubElement(r, "classificationMethod", {"id": style.method})
    ET.SubElement(method, "symmetricMode", {"enabled": "0", "symmetrypoint": "0", "astride": "0"})
    ET.SubElement(
        method,
        "labelFormat",
        {
            "format": f"%1 – %2 {style.unit}".rstrip(),
            "labelprecision": "2",
            "trimtrailingzeroes": "1",
        },
    )
    ET.SubElement(method, "parameters")
    ET.SubElement(method, "extraInformation")
    ET.SubElement(r, "rotation")
    ET.SubElement(r, "sizescale")
    return r


def _temporal(style: GraduatedStyle) -> ET.Element:
    on = style.temporal_field is not None
    t = ET.Element(
        "temporal",
        {
            "enabled": "1" if on else "0",
            # 1 = QgsVectorLayerTemporalProperties::ModeFeatureDateTimeInstantFromField
            "mode": "1" if on else "0",
            "startField": style.temporal_field or "",
            "endField": "",
            "durationField": "",
            "durationUnit": "min",
            "fixedDuration": "0",
            "accumulate": "0",
            "limitMode": "0",  # include the frame's beginning, exclude its end
            "startExpression": "",
            "endExpression": "",
        },
    )
    fixed = ET.SubElement(t, "fixedRange")
    ET.SubElement(fixed, "start").text = ""
    ET.SubElement(fixed, "end").text = ""
    return t


def _style_elements(style: GraduatedStyle) -> list[ET.Element]:
    """The children of a QML root (or a project's ``maplayer``) for ``style``."""
    out = [_temporal(style)]
    if style.geometry != "none":
        out.append(_renderer(style))
    for tag, text in (
        ("blendMode", "0"),
        ("featureBlendMode", "0"),
        ("layerOpacity", f"{style.opacity:g}"),
    ):
        el = ET.Element(tag)
        el.text = text
        out.append(el)
    out.append(ET.Element("legend", {"type": "default-vector", "showLabelLegend": "0"}))
    return out


def _xml(root: ET.Element) -> str:
    ET.indent(root, space="  ")
    body = ET.tostring(root, encoding="unicode")
    return "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n" + body + "\n"


def qml(style: GraduatedStyle) -> str:
    """The QML document (a QGIS layer style file) of ``style``."""
    root = ET.Element(
        "qgis",
        {
            "version": QGIS_VERSION,
            "styleCategories": "Symbology|Rendering|Temporal|Legend",
            "hasScaleBasedVisibilityFlag": "0",
            "minScale": "100000000",
            "maxScale": "0",
        },
    )
    root.extend(_style_elements(style))
    return _xml(root)


def flows_expression(scenario: str, material: str = "mass", value: str = "outflow_t") -> str:
    """The flows layer's class expression: ``value`` of one scenario and material, else NULL.

    Each district has a row per scenario and material in every year; drawing them all
    would stack them. The project variables ``mfa_flows_scenario`` and
    ``mfa_flows_material`` choose the rows (the defaults apply without the project).
    """

    def q(s: str) -> str:
        return "'" + s.replace("'", "''") + "'"

    return (
        f'if("scenario" = coalesce(@{SCENARIO_VARIABLE}, {q(scenario)}) '
        f'AND "material" = coalesce(@{MATERIAL_VARIABLE}, {q(material)}), "{value}", NULL)'
    )


@dataclass(frozen=True)
class LayerGeometry:
    """What the styles and the project need of a layer's geometries: the
    :func:`shapely.get_type_id` of each row (-1: none) and the extent (x0, y0, x1, y1;
    None without geometries)."""

    type_ids: np.ndarray
    bounds: tuple[float, float, float, float] | None

    @classmethod
    def of(cls, gdf: pd.DataFrame) -> LayerGeometry:
        if "geometry" not in gdf:
            return cls(np.full(len(gdf), -1, dtype=np.int64), None)
        ids = shapely.get_type_id(np.asarray(gdf.geometry.values))
        if (ids < 0).all():
            return cls(ids, None)
        b = gdf.geometry.dropna().total_bounds
        return cls(ids, (float(b[0]), float(b[1]), float(b[2]), float(b[3])))


def _geometries(
    layers: Mapping[str, pd.DataFrame], given: Mapping[str, LayerGeometry] | None
) -> dict[str, LayerGeometry]:
    """Each layer's :class:`LayerGeometry`: ``given``, else from its geometry column."""
    given = given or {}
    return {name: given.get(name) or LayerGeometry.of(df) for name, df in layers.items()}


def _families(g: LayerGeometry) -> list[Geometry]:
    """Every geometry family of a layer, the most frequent first (``none``: no geometry)."""
    ids = g.type_ids
    family = np.select(
        [np.isin(ids, (0, 4)), np.isin(ids, (1, 5)), np.isin(ids, (3, 6))], [0, 1, 2], -1
    )
    family = family[family >= 0]
    if not len(family):
        return ["none"]
    kinds, first, counts = np.unique(family, return_index=True, return_counts=True)
    order = np.lexsort((first, -counts))  # most frequent first, ties as they appear
    names: tuple[Geometry, ...] = ("point", "line", "polygon")
    return [names[int(kinds[i])] for i in order]


def _geometry_of(g: LayerGeometry) -> Geometry:
    """The geometry family most rows have (``none`` for a layer without geometries)."""
    return _families(g)[0]


def run_styles(
    layers: Mapping[str, pd.DataFrame],
    base_year: int | None = None,
    geometries: Mapping[str, LayerGeometry] | None = None,
) -> dict[str, GraduatedStyle]:
    """The default style of each of a run's layers, from the values in them.

    ``geometries`` gives the :class:`LayerGeometry` of layers passed without (or with
    unparsed) geometries; the others' come from their geometry column.

    - buildings: ``mass_t`` (t per building), 5 quantile classes, yellow-green-blue (so
      the points stand out on the areas below them);
    - districts and grid: ``mass_t_per_ha`` (t/ha), 5 quantile classes each,
      yellow-orange-brown, districts at 60 % opacity under the outlined grid cells;
    - quality: ``gfa_observed`` (share of buildings whose floor area is observed, shown in
      %), fixed classes 0-50-75-90-100 %, red to green;
    - flows: yearly demolition outflow (t) of the total mass in the first scenario, 5
      quantile classes over the years after ``base_year``, red-purple, temporal on ``date``.
    """
    styles: dict[str, GraduatedStyle] = {}
    geo = _geometries(layers, geometries)
    if "buildings" in layers:
        b = layers["buildings"]
        geom = _geometry_of(geo["buildings"])
        br = class_breaks(b["mass_t"].to_numpy(dtype=float))
        styles["buildings"] = GraduatedStyle(
            expression="mass_t",
            breaks=br,
            colors=color_ramp("YlGnBu", len(br) - 1, 0.25, 1.0),
            labels=range_labels(br, "t"),
            geometry=geom,
            unit="t",
            title="material in the building (t)",
            outline="#4d4d4d",
            outline_width_mm=0.1 if geom == "point" else 0.05,
            marker_size_mm=1.8,
        )
    for name in ("grid", "districts"):
        if name in layers:
            df = layers[name]
            br = class_breaks(df["mass_t_per_ha"].to_numpy(dtype=float))
            styles[name] = GraduatedStyle(
                expression="mass_t_per_ha",
                breaks=br,
                colors=color_ramp("YlOrBr", len(br) - 1, 0.05 if name == "districts" else 0.2),
                labels=range_labels(br, "t/ha"),
                geometry=_geometry_of(geo[name]),
                unit="t/ha",
                title="material per hectare (t/ha)",
                outline="#6e6e6e" if name == "districts" else "#4d4d4d",
                outline_width_mm=0.26 if name == "districts" else 0.1,
                # districts lie under the grid in the same ramp: faded, they stay apart
                opacity=0.6 if name == "districts" else 1.0,
            )
    if "quality" in layers:
        br = (0.0, 0.5, 0.75, 0.9, 1.0)
        styles["quality"] = GraduatedStyle(
            expression="gfa_observed",
            breaks=br,
            colors=color_ramp("RdYlGn", 4, 0.0, 1.0),
            labels=range_labels(br, "%", scale=100),
            geometry=_geometry_of(geo["quality"]),
            unit="",
            title="share of buildings whose floor area is observed",
            outline="#6e6e6e",
            outline_width_mm=0.26,
            method="Pretty",
        )
    if "flows" in layers:
        f = layers["flows"]
        scenario = str(f["scenario"].iloc[0]) if len(f) else "baseline"
        sel = (f["scenario"] == scenario) & (f["material"] == "mass")
        if base_year is not None:
            sel &= f["year"] > base_year
        br = class_breaks(f.loc[sel, "outflow_t"].to_numpy(dtype=float))
        styles["flows"] = GraduatedStyle(
            expression=flows_expression(scenario),
            breaks=br,
            colors=color_ramp("RdPu", len(br) - 1, 0.15, 1.0),
            labels=range_labels(br, "t"),
            geometry=_geometry_of(geo["flows"]),
            unit="t",
            title="demolition outflow in the year (t)",
            outline="#6e6e6e",
            outline_width_mm=0.26,
            temporal_field="date",
        )
    return styles


# --------------------------------------------------------------------------- project


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
        return self.name or self.table

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


# --------------------------------------------------------------------------- writing

#: The ``layer_styles`` table exactly as QGIS (3.22) creates it in a GeoPackage.
LAYER_STYLES_DDL = (
    'CREATE TABLE IF NOT EXISTS "layer_styles" ( "id" INTEGER PRIMARY KEY AUTOINCREMENT '
    'NOT NULL, "f_table_catalog" TEXT(256), "f_table_schema" TEXT(256), "f_table_name" '
    'TEXT(256), "f_geometry_column" TEXT(256), "styleName" TEXT(30), "styleQML" TEXT, '
    '"styleSLD" TEXT, "useAsDefault" BOOLEAN, "description" TEXT, "owner" TEXT(30), "ui" '
    "TEXT(30), \"update_time\" DATETIME DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')))"
)

_WKB_TYPES = {"point": "MultiPoint", "line": "MultiLineString", "polygon": "MultiPolygon"}


def _wkb_type(g: LayerGeometry, family: Geometry) -> str:
    if family == "none":
        return "NoGeometry"
    ids = g.type_ids
    single = {"point": 0, "line": 1, "polygon": 3}[family]
    name = {"point": "Point", "line": "LineString", "polygon": "Polygon"}[family]
    return name if np.isin(ids[ids >= 0], (single,)).all() else _WKB_TYPES[family]


def write_geopackage(
    path: Path,
    layers: Mapping[str, gpd.GeoDataFrame],
    streamed: Mapping[str, tuple[Iterable[pa.Table], LayerGeometry]] | None = None,
    crs: str | None = None,
) -> dict[str, int]:
    """Write ``layers`` into a new GeoPackage 1.3 at ``path``; return rows per layer.

    A ``flows`` layer becomes the attribute table ``flows_table`` and a ``flows`` view
    that joins it to the ``districts`` polygons by ``district_id`` (when there are
    districts; else ``flows`` is a table without geometry). ``streamed`` layers (the
    buildings) are written batch by batch, each given as its Arrow batches (WKB
    ``geometry``, no ``bbox``) and its :class:`LayerGeometry` (which fixes the declared
    geometry type up front), in ``crs``; they take the place of the same name in
    ``layers``.
    """
    if not layers:
        raise ValueError(f"{path}: no layers to write")
    path = Path(path)
    path.unlink(missing_ok=True)
    rows: dict[str, int] = {}
    first = True

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
        if streamed and name in streamed:
            batches, shape = streamed[name]
            rows[name] = _write_batches(path, name, batches, shape, crs or "", first)
            first = False
            continue
        write(gdf.drop(columns=["bbox"], errors="ignore"), name)
        rows[name] = len(gdf)
    if "flows" in layers:
        flows = pd.DataFrame(layers["flows"].drop(columns=["geometry", "bbox"], errors="ignore"))
        if "districts" in layers:
            write(flows, FLOWS_TABLE)
            _flows_view(path, flows.columns)
        else:
            write(flows, "flows")
        rows["flows"] = len(flows)
    return rows


def _declared(shape: LayerGeometry) -> tuple[str, bool]:
    """The geometry type a GeoPackage layer of these geometries declares, and whether
    single parts are stored as multi (as pyogrio does writing all rows at once: one
    family with single and multi parts becomes multi; several families, ``Unknown``)."""
    families = [f for f in _families(shape) if f != "none"]
    if len(families) != 1:
        return ("Unknown" if families else "None"), False
    declared = _wkb_type(shape, families[0])
    single = {"point": 0, "line": 1, "polygon": 3}[families[0]]
    ids = shape.type_ids[shape.type_ids >= 0]
    return declared, bool((ids == single).any() and declared.startswith("Multi"))


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
    one-shot writes do). Returns the rows written."""
    geometry_type, promote = _declared(shape)
    it = iter(batches)
    head = next(it, None)
    if head is None:
        return 0
    schema = head.schema
    rows = 0

    def stream() -> Iterator[pa.RecordBatch]:
        nonlocal rows
        for table in itertools.chain([head], it):
            if promote:
                geoms = shapely.from_wkb(table["geometry"].to_numpy(zero_copy_only=False))
                wkb = pa.array(shapely.to_wkb(_as_multi(geoms), flavor="iso"), pa.binary())
                table = table.set_column(table.column_names.index("geometry"), "geometry", wkb)
            rows += table.num_rows
            yield from table.cast(schema).to_batches()

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
GROUPS = (
    ("Stocks", ("buildings", "grid", "districts")),
    ("Flows", ("flows",)),
    ("Data quality", ("quality",)),
)
#: Layers shown when the project opens (the others are a tick away).
VISIBLE = {"buildings", "grid", "districts"}


def write_qgis_outputs(
    folder: Path,
    layers: Mapping[str, gpd.GeoDataFrame],
    crs: str,
    title: str,
    years: tuple[int, int] | None = None,
    geometries: Mapping[str, LayerGeometry] | None = None,
    batches: Mapping[str, Iterable[pa.Table]] | None = None,
) -> dict[str, Any]:
    """Write ``layers.gpkg`` (styled), ``<layer>.qml`` sidecars and ``project.qgs``.

    ``layers`` maps layer names (``buildings``, ``districts``, ``grid``, ``quality``,
    ``flows``) to the run's GeoParquet layers; ``years`` is (base year, horizon) of the
    flows. ``batches`` gives layers to write into the GeoPackage batch by batch (their
    entry in ``layers`` then needs only the styled column); ``geometries`` describes layers
    passed without parsed geometries (see :func:`run_styles`). Returns the files
    written and the rows and style of each layer.
    """
    folder = Path(folder)
    geo = _geometries(layers, geometries)
    styles = run_styles(layers, base_year=years[0] if years else None, geometries=geo)
    texts = {name: qml(style) for name, style in styles.items()}
    streamed = {name: (b, geo[name]) for name, b in (batches or {}).items()}
    rows = write_geopackage(folder / GPKG, layers, streamed, crs)
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

"""Layer styles as QML (graduated colours, quantile breaks, labels with units), pure:
values in, XML strings out. The classes, ramps and labels come from :mod:`mfa.io.classes`
(the HTML maps use the same)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass

import pandas as pd

from mfa.io.classes import class_breaks, color_ramp, range_labels
from mfa.io.qgis.layergeometry import LayerGeometry, _geometries, _geometry_of
from mfa.io.qgis.names import MATERIAL_VARIABLE, QGIS_VERSION, SCENARIO_VARIABLE, Geometry
from mfa.outputs import LAYERS


@dataclass(frozen=True)
class GraduatedStyle:
    """A graduated-colour style: class ``i`` is ``breaks[i]``…``breaks[i + 1]``.

    ``expression`` is a field name or a QGIS expression; ``unit`` goes into the labels
    QGIS makes when the classes are recomputed. ``geometry`` "none" writes no renderer
    (a table). ``temporal_field`` binds the layer's temporal properties to a date field:
    an instant, or with ``temporal_end_field`` a range from one field to the other (both
    ends included). ``sizes_mm`` (one per class) makes the classes differ by marker size
    instead (QGIS's "GraduatedSize"); ``label_field`` labels each feature with that field.
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
    temporal_end_field: str | None = None
    opacity: float = 1.0
    sizes_mm: tuple[float, ...] | None = None
    label_field: str | None = None

    def __post_init__(self) -> None:
        n = len(self.breaks) - 1
        if self.geometry != "none" and (n < 1 or len(self.colors) != n or len(self.labels) != n):
            raise ValueError(
                f"{self.expression}: {len(self.breaks)} edges need {n} colours and labels, "
                f"got {len(self.colors)} and {len(self.labels)}"
            )
        if self.sizes_mm is not None and len(self.sizes_mm) != n:
            raise ValueError(f"{self.expression}: {n} classes need {n} sizes")

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


def _symbol(
    name: str, color: str, style: GraduatedStyle, size_mm: float | None = None
) -> ET.Element:
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
            "size": f"{size_mm or style.marker_size_mm:g}",
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
            "graduatedMethod": "GraduatedColor" if style.sizes_mm is None else "GraduatedSize",
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
        size = style.sizes_mm[i] if style.sizes_mm is not None else None
        symbols.append(_symbol(str(i), color, style, size))
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
    ranged = on and style.temporal_end_field is not None
    t = ET.Element(
        "temporal",
        {
            "enabled": "1" if on else "0",
            # QgsVectorLayerTemporalProperties::TemporalMode: 1 = ModeFeatureDateTimeInstant
            # FromField, 2 = ModeFeatureDateTimeStartAndEndFromFields
            "mode": "2" if ranged else "1" if on else "0",
            "startField": style.temporal_field or "",
            "endField": (style.temporal_end_field or "") if ranged else "",
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
    if style.label_field is not None:
        out.append(_labeling(style.label_field))
    return out


def _labeling(field: str) -> ET.Element:
    """Simple labels: ``field`` in 9 pt dark grey with a white buffer, beside the point
    (the parent element needs ``labelsEnabled="1"``)."""
    lab = ET.Element("labeling", {"type": "simple"})
    settings = ET.SubElement(lab, "settings", {"calloutType": "simple"})
    text = ET.SubElement(
        settings,
        "text-style",
        {
            "fieldName": field,
            "isExpression": "0",
            "fontSize": "9",
            "fontSizeUnit": "Point",
            "fontWeight": "75",
            "textColor": "35,35,35,255",
            "textOpacity": "1",
        },
    )
    ET.SubElement(
        text,
        "text-buffer",
        {
            "bufferDraw": "1",
            "bufferSize": "0.8",
            "bufferSizeUnits": "MM",
            "bufferColor": "255,255,255,255",
            "bufferOpacity": "1",
        },
    )
    # placement 6 = OrderedPositionsAroundPoint (cartographic), 1.5 mm from the symbol
    ET.SubElement(settings, "placement", {"placement": "6", "dist": "1.5", "distUnits": "MM"})
    ET.SubElement(settings, "rendering", {"obstacle": "1", "drawLabels": "1"})
    return lab


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
    if style.label_field:
        root.set("labelsEnabled", "1")
        root.set("styleCategories", "Symbology|Labeling|Rendering|Temporal|Legend")
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


def _mass_style(
    df: pd.DataFrame, name: str, geom: Geometry, base_year: int | None
) -> GraduatedStyle:
    """``mass_t`` (t per feature), 5 quantile classes, yellow-green-blue (so the points
    stand out on the grid's yellow-brown and the districts' greys below them)."""
    br = class_breaks(df["mass_t"].to_numpy(dtype=float))
    return GraduatedStyle(
        expression="mass_t",
        breaks=br,
        colors=color_ramp("YlGnBu", len(br) - 1, 0.25, 1.0),
        labels=range_labels(br, "t"),
        geometry=geom,
        unit="t",
        title="all materials, t per building",
        outline="#4d4d4d",
        outline_width_mm=0.1 if geom == "point" else 0.05,
        marker_size_mm=1.8,
    )


def _density_style(
    df: pd.DataFrame, name: str, geom: Geometry, base_year: int | None
) -> GraduatedStyle:
    """``mass_t_per_ha`` (t/ha), 5 quantile classes: grid cells yellow-orange-brown,
    districts grey (their densities, over the whole district area, are far lower than a
    built-up cell's: one ramp for both would read as one scale)."""
    br = class_breaks(df["mass_t_per_ha"].to_numpy(dtype=float))
    districts = name == "districts"
    return GraduatedStyle(
        expression="mass_t_per_ha",
        breaks=br,
        colors=color_ramp("Greys", len(br) - 1, 0.1, 0.75)
        if districts
        else color_ramp("YlOrBr", len(br) - 1, 0.2),
        labels=range_labels(br, "t/ha"),
        geometry=geom,
        unit="t/ha",
        title="all materials, t per hectare of the whole district"
        if districts
        else "all materials, t per hectare of the grid cell",
        outline="#4d4d4d",
        outline_width_mm=0.26 if districts else 0.1,
    )


def _observed_style(
    df: pd.DataFrame, name: str, geom: Geometry, base_year: int | None
) -> GraduatedStyle:
    """``gfa_observed`` (share of buildings whose floor area is observed, shown in %),
    fixed classes 0-50-75-90-100 %, red to green."""
    br = (0.0, 0.5, 0.75, 0.9, 1.0)
    return GraduatedStyle(
        expression="gfa_observed",
        breaks=br,
        colors=color_ramp("RdYlGn", 4, 0.0, 1.0),
        labels=range_labels(br, "%", scale=100),
        geometry=geom,
        unit="",
        title="share of buildings whose floor area is observed",
        outline="#6e6e6e",
        outline_width_mm=0.26,
        method="Pretty",
    )


def _outflow_style(
    f: pd.DataFrame, name: str, geom: Geometry, base_year: int | None
) -> GraduatedStyle:
    """Yearly demolition outflow (t) of the total mass in the first scenario, 5 quantile
    classes over the years after ``base_year``, red-purple, temporal on ``date``; the
    title names the quantity, the scenario and the material it draws."""
    scenario = str(f["scenario"].iloc[0]) if len(f) else "baseline"
    sel = (f["scenario"] == scenario) & (f["material"] == "mass")
    if base_year is not None:
        sel &= f["year"] > base_year
    br = class_breaks(f.loc[sel, "outflow_t"].to_numpy(dtype=float))
    return GraduatedStyle(
        expression=flows_expression(scenario),
        breaks=br,
        colors=color_ramp("RdPu", len(br) - 1, 0.15, 1.0),
        labels=range_labels(br, "t"),
        geometry=geom,
        unit="t",
        title=flows_title(scenario, "mass"),
        outline="#6e6e6e",
        outline_width_mm=0.26,
        temporal_field="date",
    )


def flows_title(scenario: str, material: str) -> str:
    """What the flows layer draws: quantity, unit, scenario and material."""
    what = "all materials" if material == "mass" else material
    return f"demolition outflow in the year, t per district, scenario {scenario}, {what}"


#: The style rules that :data:`mfa.outputs.LAYERS` entries name.
STYLE_RULES = {
    "mass": _mass_style,
    "density": _density_style,
    "observed": _observed_style,
    "outflow": _outflow_style,
}


def run_styles(
    layers: Mapping[str, pd.DataFrame],
    base_year: int | None = None,
    geometries: Mapping[str, LayerGeometry] | None = None,
) -> dict[str, GraduatedStyle]:
    """The default style of each of a run's layers, from the values in them, by the
    style rule its entry in :data:`mfa.outputs.LAYERS` names (see the rules above).

    ``geometries`` gives the :class:`LayerGeometry` of layers passed without (or with
    unparsed) geometries; the others' come from their geometry column.
    """
    geo = _geometries(layers, geometries)
    return {
        entry.name: STYLE_RULES[entry.style](
            layers[entry.name], entry.name, _geometry_of(geo[entry.name]), base_year
        )
        for entry in LAYERS
        if entry.name in layers
    }

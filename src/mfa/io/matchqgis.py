"""The QGIS side of a matching: default styles of its layers (in ``matching.gpkg`` and as
``<layer>.qml``) and ``project.qgs``, the layers of ``matching.gpkg`` in two groups.

Built with the run's QGIS writers (:mod:`mfa.io.qgis`): the same XML, relative paths,
the run's CRS, the extent of the data + 3 %. Every layer with the date fields
(:func:`mfa.match.outputs.with_dates`) is temporal, each feature from ``date_from`` to
``date_to``, and the project's temporal controller steps one calendar year at a time
over the years of the data: a student scrubs the years and sees each year's moves, the
supply of that year and the sites building in it. Hubs (``--hubs``) are points sized by
the tonnes they take in and labelled with their ``hub_id``, shown from the first year
material enters to the last it leaves.
"""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd

from mfa.io.classes import class_breaks, color_ramp, range_labels
from mfa.io.qgis.geopackage import write_layer_styles
from mfa.io.qgis.project import ProjectLayer, project_xml
from mfa.io.qgis.styles import GraduatedStyle, qml
from mfa.match.outputs import DATE_FIELDS, YEAR_FIELDS

__all__ = [
    "MATCH_GPKG",
    "MATCH_PROJECT",
    "match_project",
    "match_styles",
    "match_years",
    "write_match_qgis",
]

MATCH_GPKG = "matching.gpkg"
MATCH_PROJECT = "project.qgs"

#: The project's tree: (group, layer, GeoPackage geometry type), first drawn on top.
MATCH_TREE = (
    ("Reuse matching", "hubs", "Point"),
    ("Reuse matching", "demand_coverage", "Point"),
    ("Reuse matching", "matches", "LineString"),
    ("Supply", "supply_fate", "Point"),
)


def match_styles(layers: dict[str, gpd.GeoDataFrame]) -> dict[str, GraduatedStyle]:
    """Default styles of the matching layers, classes from their values: matches by
    tonnes (lines), supply fate by reused tonnes, demand coverage by the share met from
    reuse (fixed classes); hubs sized by the tonnes they take in (one colour, labelled
    with ``hub_id``)."""
    out = {}
    if "hubs" in layers:
        out["hubs"] = hub_style(layers["hubs"])
    specs = {
        "matches": ("t", "line", "t", "tonnes moved (t)", "RdPu", None),
        "supply_fate": ("reused_t", "point", "t", "reused (t)", "YlGnBu", None),
        "demand_coverage": (
            "share",
            "point",
            "%",
            "share met from reuse",
            "RdYlGn",
            (0.0, 0.25, 0.5, 0.75, 1.0),
        ),
    }
    for name, (col, geom, unit, title, ramp, fixed) in specs.items():
        if name not in layers:
            continue
        dated = set(DATE_FIELDS) <= set(layers[name].columns)
        br = fixed or class_breaks(layers[name][col].to_numpy(dtype=float))
        out[name] = GraduatedStyle(
            expression=col,
            breaks=tuple(br),
            colors=color_ramp(ramp, len(br) - 1, 0.2 if fixed is None else 0.0, 1.0),
            labels=range_labels(br, unit, scale=100 if unit == "%" else 1.0),
            geometry=geom,
            unit="" if unit == "%" else unit,
            title=title,
            marker_size_mm=2.6 if name == "demand_coverage" else 1.6,
            method="Pretty" if fixed else "Quantile",
            temporal_field=DATE_FIELDS[0] if dated else None,
            temporal_end_field=DATE_FIELDS[1] if dated else None,
        )
    return out


#: Marker diameters of the hub classes, smallest to largest (mm): a display rule.
HUB_SIZES_MM = (3.0, 7.0)


def hub_style(hubs: gpd.GeoDataFrame) -> GraduatedStyle:
    """Hubs: graduated size by ``in_t`` (tonnes handled: handling is paid on the way in),
    quantile classes from the hubs' values (a hub that takes nothing in the smallest),
    dark purple circles with a white outline, labelled with ``hub_id``."""
    br = class_breaks(hubs["in_t"].to_numpy(dtype=float))
    n = len(br) - 1
    small, large = HUB_SIZES_MM
    sizes = tuple(small + (large - small) * i / max(n - 1, 1) for i in range(n))
    dated = set(DATE_FIELDS) <= set(hubs.columns)
    return GraduatedStyle(
        expression="in_t",
        breaks=br,
        colors=("#54278f",) * n,
        labels=range_labels(br, "t"),
        geometry="point",
        unit="t",
        title="tonnes handled (taken in), t",
        outline="#ffffff",
        outline_width_mm=0.4,
        sizes_mm=sizes,
        method="Quantile",
        temporal_field=DATE_FIELDS[0] if dated else None,
        temporal_end_field=DATE_FIELDS[1] if dated else None,
        label_field="hub_id",
    )


def match_years(layers: dict[str, gpd.GeoDataFrame]) -> tuple[int, int] | None:
    """The first and last year of the matching's layers (None when no layer has a row)."""
    spans = [
        (int(layers[n][a].min()), int(layers[n][b].max()))
        for n, (a, b) in YEAR_FIELDS.items()
        if n in layers and len(layers[n])
    ]
    return (min(s[0] for s in spans), max(s[1] for s in spans)) if spans else None


def match_project(
    layers: dict[str, gpd.GeoDataFrame], styles: dict[str, GraduatedStyle], title: str
) -> str:
    """The ``project.qgs`` of a matching: sites and flow lines in "Reuse matching", the
    supply points in "Supply", all shown; the CRS of the layers; the extent of the data
    (every layer that has rows) + 3 %; the temporal controller over the data's years."""
    crs = next(iter(layers.values())).crs.to_string()
    plan = [
        ProjectLayer(table=name, group=group, style=styles[name], wkb_type=wkb)
        for group, name, wkb in MATCH_TREE
        if name in layers
    ]
    boxes = [layers[p.table].total_bounds for p in plan if len(layers[p.table])]
    if boxes:
        x0, y0 = min(b[0] for b in boxes), min(b[1] for b in boxes)
        x1, y1 = max(b[2] for b in boxes), max(b[3] for b in boxes)
        pad = 0.03 * max(x1 - x0, y1 - y0, 100.0)
        extent = (x0 - pad, y0 - pad, x1 + pad, y1 + pad)
    else:
        extent = (0.0, 0.0, 1.0, 1.0)
    return project_xml(
        plan, crs, tuple(float(v) for v in extent), title, MATCH_GPKG, match_years(layers)
    )


def write_match_qgis(folder: Path, layers: dict[str, gpd.GeoDataFrame], title: str) -> None:
    """Into ``folder`` (where ``matching.gpkg`` is written): the default styles in the
    GeoPackage's ``layer_styles`` and as ``<layer>.qml``, and ``project.qgs``."""
    styles = match_styles(layers)
    texts = {name: qml(style) for name, style in styles.items()}
    for name, text in texts.items():
        (folder / f"{name}.qml").write_text(text, encoding="utf-8")
    write_layer_styles(folder / MATCH_GPKG, texts, {k: True for k in texts})
    (folder / MATCH_PROJECT).write_text(match_project(layers, styles, title), encoding="utf-8")

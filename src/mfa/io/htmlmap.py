"""A self-contained HTML map of a query: the area, the buildings coloured by tonnes, the
run's districts and other buildings around them, a legend that says what is drawn, the
summary table.

The page, frame and context are :mod:`mfa.io.svgmap`'s (shared with the matching map);
the classes are the QGIS styles' (:func:`mfa.io.classes.class_breaks`: quantiles rounded
to two significant digits, so no class reads "0 – 0 t").
"""

from __future__ import annotations

import html
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from mfa.io.classes import class_breaks, color_ramp, range_labels
from mfa.io.svgmap import (
    Frame,
    MapContext,
    context_css,
    context_entries,
    context_svg,
    legend_html,
    page,
    table_html,
    with_credits,
    write_page,
)

__all__ = ["map_quantity", "query_frame", "query_map_html", "write_query_map"]

#: Ramps: the stock yellow-orange-red, an outflow red-purple (as the QGIS flows layer).
STOCK_RAMP, OUTFLOW_RAMP = "YlOrRd", "RdPu"

_STYLE = """
path.area { fill: #dfe9f5; fill-opacity: 0.55; stroke: #2c6fbb; stroke-width: 2;
  stroke-dasharray: 6 4; }
circle.b { stroke: #444; stroke-width: 0.5; }
path.b { stroke: #444; stroke-width: 0.4; }
"""


def map_quantity(
    years: tuple[int, int] | None, scenario: str | None, stock_year: int | None
) -> str:
    """What the map's values are: the stock of a year, or an outflow of years under a
    scenario (for the legend)."""
    if years is not None:
        span = f"{years[0]}–{years[1]}" if years[1] != years[0] else f"{years[0]}"
        return f"expected demolition outflow {span}, scenario {scenario}"
    return f"standing stock at the end of {stock_year}" if stock_year else "standing stock"


def query_frame(area: shapely.Geometry | None, buildings: gpd.GeoDataFrame) -> Frame:
    """The map's frame: the area and the buildings inside it."""
    shapes = [*buildings.geometry.dropna().values, *([area] if area is not None else [])]
    bounds = shapely.total_bounds(np.array(shapes, dtype=object)) if shapes else (np.nan,) * 4
    return Frame.around(bounds)


def query_map_html(
    area: shapely.Geometry | None,
    buildings: gpd.GeoDataFrame,
    summary: pd.DataFrame,
    title: str,
    value_column: str,
    quantity: str,
    crs: str | None = None,
    context: MapContext | None = None,
    attribution: str = "",
) -> str:
    """The HTML document (a string) of a query map.

    ``value_column`` (t per building, ``<material>_t`` or ``mass_t``) colours the
    buildings in quantile classes; ``quantity`` says what it is (see
    :func:`map_quantity`); ``context`` is drawn under them (see
    :func:`mfa.io.svgmap.run_context`).
    """
    geoms = buildings.geometry.values
    frame = query_frame(area, buildings)
    values = buildings[value_column].to_numpy(dtype=float)
    outflow = quantity.startswith("expected")
    edges = class_breaks(values)
    colours = color_ramp(OUTFLOW_RAMP if outflow else STOCK_RAMP, len(edges) - 1, 0.15, 1.0)
    classes = np.clip(np.searchsorted(edges, values, side="right") - 1, 0, len(edges) - 2)
    items = [context_svg(frame, context)]
    if area is not None:
        items.append(f'<path class="area" d="{frame.path(area)}"/>')
    for geom, cls, val, bid in zip(geoms, classes, values, buildings["building_id"], strict=True):
        if geom is None:
            continue
        tip = f"<title>{html.escape(f'{bid}: {val:,.1f} t')}</title>"
        fill = colours[int(cls)]
        if geom.geom_type == "Point":
            (x,), (y,) = frame.xy([geom.x], [geom.y])
            items.append(
                f'<circle class="b" cx="{x:.1f}" cy="{y:.1f}" r="4" fill="{fill}">{tip}</circle>'
            )
        else:
            items.append(f'<path class="b" d="{frame.path(geom)}" fill="{fill}">{tip}</path>')
    items.append(frame.scalebar(crs))
    material = value_column.removesuffix("_t")
    what = "all materials" if material == "mass" else material
    if len(buildings):
        entries = [
            (f"background:{c};border:1px solid #444", label)
            for c, label in zip(colours, range_labels(edges, "t"), strict=True)
        ]
        classes_note = f"classes: quantiles of the {len(buildings):,} buildings inside the area"
    else:
        entries, classes_note = [], "no building of the run lies inside the area"
    entries.append(("background:#dfe9f5;border:2px dashed #2c6fbb", "the area asked about"))
    entries += context_entries(context, "the run's other buildings")
    legend = legend_html(f"{what}, t per building", [quantity, classes_note], entries)
    return page(
        title,
        "".join(items),
        legend,
        "Summary (t)",
        table_html(summary),
        with_credits(attribution, context),
        _STYLE + context_css(context),
    )


def write_query_map(path: Path, **kwargs) -> Path:
    """Write :func:`query_map_html` to ``path`` (a new file beside, then renamed)."""
    return write_page(path, query_map_html(**kwargs))

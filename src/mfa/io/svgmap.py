"""What the offline HTML maps share: one page, one map frame, the run's own context.

The query map (:mod:`mfa.io.htmlmap`) and the matching map (:mod:`mfa.io.matchmap`) are
one HTML page each with an inline SVG in the run's projected CRS (metres, y flipped): no
tiles, scripts or files from elsewhere, so they open offline in any browser. This module
holds their one page template (:func:`page`), the frame that maps metres to pixels
(:class:`Frame`: paths, points, scale bar), the context drawn under the data from the
run's own layers (:func:`run_context`, :func:`context_svg`: district outlines with their
names, the run's other buildings) and, where a pipeline or the command names them, roads
and water (:mod:`mfa.io.maplayers`, muted, under everything else), the legend and the
table. A map without roads and water is the same page as before they existed.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

__all__ = [
    "HEIGHT",
    "PAD",
    "WIDTH",
    "Frame",
    "MapContext",
    "context_css",
    "context_entries",
    "context_svg",
    "legend_html",
    "page",
    "run_context",
    "table_html",
    "with_credits",
    "write_page",
]

WIDTH, HEIGHT, PAD = 900, 640, 20


@dataclass(frozen=True)
class Frame:
    """The map's window: run-CRS metres → SVG pixels (x right, y down), one scale."""

    xmin: float
    ymin: float
    scale: float  # px per metre

    @classmethod
    def around(cls, bounds: Sequence[float], min_span_m: float = 100.0) -> Frame:
        """The frame that shows ``bounds`` (xmin, ymin, xmax, ymax; m) whole, centred,
        at least ``min_span_m`` wide (a single point or site stays readable)."""
        x0, y0, x1, y1 = (float(v) for v in bounds)
        if not all(np.isfinite([x0, y0, x1, y1])):
            x0 = y0 = 0.0
            x1 = y1 = min_span_m
        span_x, span_y = max(x1 - x0, min_span_m), max(y1 - y0, min_span_m)
        scale = min((WIDTH - 2 * PAD) / span_x, (HEIGHT - 2 * PAD) / span_y)
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        return cls(cx - WIDTH / 2 / scale, cy - HEIGHT / 2 / scale, scale)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """What the map shows, in metres of the run's CRS."""
        return (
            self.xmin,
            self.ymin,
            self.xmin + WIDTH / self.scale,
            self.ymin + HEIGHT / self.scale,
        )

    def xy(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pixel coordinates of points in metres."""
        x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
        return (x - self.xmin) * self.scale, HEIGHT - (y - self.ymin) * self.scale

    def path(self, geom: shapely.Geometry) -> str:
        """SVG path data of a (multi)polygon or (multi)line, rings closed."""
        parts = []
        for part in getattr(geom, "geoms", [geom]):
            if part.geom_type == "Polygon":
                rings, close = [part.exterior, *part.interiors], "Z"
            else:
                rings, close = [part], ""
            for ring in rings:
                xy = np.asarray(ring.coords)[:, :2]
                px, py = self.xy(xy[:, 0], xy[:, 1])
                parts.append(
                    "M" + "L".join(f"{a:.1f},{b:.1f}" for a, b in zip(px, py, strict=True)) + close
                )
        return "".join(parts)

    def scalebar(self, crs: str | None = None) -> str:
        """A scale bar of a round number of metres (about a quarter of the map's width)
        and the CRS's name."""
        width_m = WIDTH / self.scale
        bar_m = 10 ** np.floor(np.log10(max(width_m / 4, 1.0)))
        for step in (5, 2):
            if bar_m * step <= width_m / 4:
                bar_m *= step
                break
        label = f"{bar_m / 1000:,.0f} km" if bar_m >= 1000 else f"{bar_m:,.0f} m"
        where = f", {html.escape(crs)}" if crs else ""
        return (
            f'<g id="scalebar"><rect x="{PAD}" y="{HEIGHT - 14}" width="{bar_m * self.scale:.1f}" '
            f'height="4" fill="#222"/><text x="{PAD}" y="{HEIGHT - 18}" font-size="11">'
            f"{label}{where}</text></g>"
        )


@dataclass(frozen=True)
class MapContext:
    """What a map draws under its data, from the run's own layers: the districts in the
    frame (``district_id``, ``district_name``, polygons) and the run's other buildings
    there (their representative points); and from files the pipeline or the command
    names (:mod:`mfa.io.maplayers`): ``roads`` (lines) and ``water`` (polygons), in the
    run's CRS and clipped to the frame, with ``credits`` (where they come from, for the
    attribution line)."""

    districts: gpd.GeoDataFrame | None = None
    buildings: np.ndarray | None = None  # shapely points
    roads: np.ndarray | None = None  # shapely (multi)lines
    water: np.ndarray | None = None  # shapely (multi)polygons
    credits: str = ""

    def has(self, layer: str) -> bool:
        """Whether the context draws anything of ``layer`` (districts, buildings, roads,
        water)."""
        value = getattr(self, layer)
        return value is not None and len(value) > 0


def run_context(
    run: Path, manifest: dict, bounds: Sequence[float], leave_out: Sequence[str] = ()
) -> MapContext:
    """The context of a map of ``bounds`` (m) from a published run: its districts and its
    buildings there but those in ``leave_out`` (ids the map draws itself). A layer that
    cannot be read leaves its part out (the answer is drawn all the same)."""
    from mfa.errors import InputDataError
    from mfa.query import run_layer

    box = tuple(float(v) for v in bounds)
    try:
        d = run_layer(run, manifest, "districts.parquet", bbox=box)
        d = d[d.geometry.notna()][["district_id", "district_name", "geometry"]]
    except InputDataError:
        d = None
    try:
        b = run_layer(
            run, manifest, "buildings.parquet", bbox=box, columns=["building_id", "geometry"]
        )
        b = b[~b["building_id"].isin(list(leave_out))]
        points = shapely.point_on_surface(b.geometry.values)
    except InputDataError:
        points = None
    return MapContext(d, points)


def context_svg(frame: Frame, context: MapContext | None) -> str:
    """Water and roads (muted), district outlines with their names, and the run's other
    buildings as grey dots, in that order (each drawn over the one before)."""
    if context is None:
        return ""
    items = []
    if context.has("water"):
        items += [f'<path class="water" d="{frame.path(g)}"/>' for g in context.water]
    if context.has("roads"):
        items += [f'<path class="road" d="{frame.path(g)}"/>' for g in context.roads]
    if context.districts is not None and len(context.districts):
        window = shapely.box(*frame.bounds)
        for geom, name in zip(
            context.districts.geometry.values,
            context.districts["district_name"].astype(str),
            strict=True,
        ):
            items.append(f'<path class="district" d="{frame.path(geom)}"/>')
            inside = shapely.intersection(geom, window)
            if shapely.area(inside) > 0.01 * shapely.area(window):  # no label on a sliver
                at = shapely.point_on_surface(inside)
                (x,), (y,) = frame.xy([at.x], [at.y])
                items.append(
                    f'<text class="district" x="{x:.1f}" y="{y:.1f}">{html.escape(name)}</text>'
                )
    if context.buildings is not None and len(context.buildings):
        x, y = frame.xy(shapely.get_x(context.buildings), shapely.get_y(context.buildings))
        items += [
            f'<circle class="other" cx="{a:.1f}" cy="{b:.1f}" r="1.6"/>'
            for a, b in zip(x, y, strict=True)
        ]
    return f'<g id="context">{"".join(items)}</g>'


#: The context layers' look: muted, under the data (CSS, only on maps that draw them).
_WATER, _ROAD = "#cfe0ee", "#c9bfae"
_CONTEXT_CSS = {
    "water": f"path.water {{ fill: {_WATER}; stroke: none; }}\n",
    "roads": f"path.road {{ fill: none; stroke: {_ROAD}; stroke-width: 1.6; "
    "stroke-linecap: round; stroke-linejoin: round; }\n",
}


def context_css(context: MapContext | None) -> str:
    """The CSS of the roads and water a map draws (nothing for a map without them)."""
    if context is None:
        return ""
    return "".join(css for layer, css in _CONTEXT_CSS.items() if context.has(layer))


def context_entries(context: MapContext | None, buildings: str) -> list[tuple[str, str]]:
    """The legend rows of the context drawn: district outlines, the run's ``buildings``
    (label), roads, water."""
    if context is None:
        return []
    rows = []
    if context.has("districts"):
        rows.append(("border:1px dashed #8a8a8a", "district outlines (the run's districts)"))
    if context.has("buildings"):
        rows.append(("background:#b8b8b8;border-radius:6px", buildings))
    if context.has("roads"):
        rows.append((f"background:{_ROAD};height:3px", "roads"))
    if context.has("water"):
        rows.append((f"background:{_WATER}", "water"))
    return rows


def with_credits(attribution: str, context: MapContext | None) -> str:
    """The attribution line with the roads' and water's sources added, when drawn."""
    if context is None or not context.credits or not (context.has("roads") or context.has("water")):
        return attribution
    return f"{attribution}. {context.credits}" if attribution else context.credits


def legend_html(heading: str, notes: Sequence[str], entries: Sequence[tuple[str, str]]) -> str:
    """The legend: what is drawn (``heading``: quantity and unit), ``notes`` (scenario,
    years, what the context is), one row per (swatch CSS, label)."""
    rows = "".join(
        f'<li><span style="{style}"></span>{html.escape(label)}</li>' for style, label in entries
    )
    text = "".join(f"<p>{html.escape(n)}</p>" for n in notes)
    return f'<div id="legend"><h3>{html.escape(heading)}</h3>{text}<ul>{rows}</ul></div>'


def table_html(frame: pd.DataFrame, table_id: str = "summary") -> str:
    """A table of ``frame``: text as given, numbers with thousands separators, "–" for a
    missing number."""

    def cell(v: object) -> str:
        if isinstance(v, str):
            return html.escape(v)
        return "–" if pd.isna(v) else f"{v:,.1f}"

    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>"
        for row in frame.itertuples(index=False)
    )
    return f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


_STYLE = """
body { font-family: sans-serif; margin: 16px; color: #222; }
.wrap { display: flex; gap: 20px; align-items: flex-start; }
svg { background: #f4f6f8; border: 1px solid #ccc; }
path { stroke: #555; stroke-width: 0.4; }
path.district { fill: none; stroke: #8a8a8a; stroke-width: 1; stroke-dasharray: 4 3; }
text.district { font-size: 11px; fill: #6b6b6b; text-anchor: middle; }
circle.other { fill: #b8b8b8; stroke: none; }
#legend ul { list-style: none; padding: 0; }
#legend p { margin: 2px 0; font-size: 13px; color: #444; }
#legend li span { display: inline-block; width: 18px; height: 12px; margin-right: 6px;
  vertical-align: middle; }
table { border-collapse: collapse; }
td, th { border: 1px solid #bbb; padding: 3px 8px; text-align: right; }
td:first-child, th:first-child { text-align: left; }
"""


def page(
    title: str,
    svg: str,
    legend: str,
    table_heading: str,
    table: str,
    attribution: str,
    style: str = "",
) -> str:
    """The HTML document: the title, the map (``svg``: the items inside ``<svg>``), and
    beside it the legend, the table and the attribution. ``style`` adds CSS rules."""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{_STYLE}{style}</style></head><body>
<h2>{html.escape(title)}</h2>
<div class="wrap">
<svg id="map" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}">
{svg}
</svg>
<div>
{legend}
<h3>{html.escape(table_heading)}</h3>
{table}
<p style="font-size:11px;color:#666">{html.escape(attribution)}</p>
</div></div></body></html>
"""


def write_page(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a file beside it, renamed into place."""
    from mfa.io.files import replaced_atomically

    path = Path(path)
    with replaced_atomically(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path

"""A self-contained HTML map of a query: area, buildings coloured by tonnes, legend, table.

No tiles, scripts or files from elsewhere: an inline SVG in the run's projected CRS (y
flipped), so it opens offline in any browser.
"""

from __future__ import annotations

import html
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

__all__ = ["query_map_html", "write_query_map"]

#: Sequential colours (light → dark), ColorBrewer YlOrRd, 5 classes.
PALETTE = ["#ffffb2", "#fecc5c", "#fd8d3c", "#f03b20", "#bd0026"]
WIDTH, HEIGHT, PAD = 900, 640, 20


def _path(geom: shapely.Geometry, tx) -> str:
    """SVG path data of a (multi)polygon."""
    parts = []
    for poly in getattr(geom, "geoms", [geom]):
        for ring in [poly.exterior, *poly.interiors]:
            xy = tx(np.asarray(ring.coords)[:, :2])
            parts.append("M" + "L".join(f"{x:.1f},{y:.1f}" for x, y in xy) + "Z")
    return "".join(parts)


def query_map_html(
    area: shapely.Geometry | None,
    buildings: gpd.GeoDataFrame,
    summary: pd.DataFrame,
    title: str,
    value_column: str,
    attribution: str = "",
) -> str:
    """The HTML document (a string) of a query map."""
    geoms = buildings.geometry.values
    shapes = [g for g in geoms if g is not None] + ([area] if area is not None else [])
    if shapes:
        xmin, ymin, xmax, ymax = shapely.total_bounds(np.array(shapes, dtype=object))
    else:
        xmin = ymin = 0.0
        xmax = ymax = 1.0
    span = max(xmax - xmin, ymax - ymin, 1.0)
    scale = min(
        (WIDTH - 2 * PAD) / max(xmax - xmin, 1e-9), (HEIGHT - 2 * PAD) / max(ymax - ymin, 1e-9)
    )
    scale = min(scale, (WIDTH - 2 * PAD) / span * 4)

    def tx(xy: np.ndarray) -> np.ndarray:
        return np.c_[PAD + (xy[:, 0] - xmin) * scale, HEIGHT - PAD - (xy[:, 1] - ymin) * scale]

    values = buildings[value_column].to_numpy(dtype=float) if len(buildings) else np.array([])
    if len(values) and np.nanmax(values) > 0:
        edges = np.unique(np.nanquantile(values, [0, 0.2, 0.4, 0.6, 0.8, 1.0]))
    else:
        edges = np.array([0.0, 1.0])
    classes = np.clip(np.searchsorted(edges, values, side="right") - 1, 0, len(edges) - 2)
    items = []
    if area is not None:
        items.append(f'<path class="area" d="{_path(area, tx)}"/>')
    for geom, cls, val, bid in zip(geoms, classes, values, buildings["building_id"], strict=True):
        colour = PALETTE[min(int(cls), len(PALETTE) - 1)]
        tip = html.escape(f"{bid}: {val:,.1f} t")
        if geom is None:
            continue
        if geom.geom_type == "Point":
            ((x, y),) = tx(np.array([[geom.x, geom.y]]))
            items.append(
                f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4" fill="{colour}">'
                f"<title>{tip}</title></circle>"
            )
        else:
            items.append(f'<path d="{_path(geom, tx)}" fill="{colour}"><title>{tip}</title></path>')
    bar_m = 10 ** np.floor(np.log10(max(span / 4, 1.0)))
    bar_px = bar_m * scale
    legend = "".join(
        f'<li><span style="background:{PALETTE[min(i, len(PALETTE) - 1)]}"></span>'
        f"{edges[i]:,.1f} – {edges[i + 1]:,.1f} t</li>"
        for i in range(len(edges) - 1)
    )
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in summary.columns)
    rows = "".join(
        "<tr>"
        + "".join(f"<td>{html.escape(v) if isinstance(v, str) else f'{v:,.1f}'}</td>" for v in row)
        + "</tr>"
        for row in summary.itertuples(index=False)
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: sans-serif; margin: 16px; color: #222; }}
.wrap {{ display: flex; gap: 20px; align-items: flex-start; }}
svg {{ background: #f4f6f8; border: 1px solid #ccc; }}
path {{ stroke: #555; stroke-width: 0.4; }}
path.area {{ fill: #dfe9f5; stroke: #2c6fbb; stroke-width: 2; stroke-dasharray: 6 4; }}
circle {{ stroke: #555; stroke-width: 0.5; }}
#legend ul {{ list-style: none; padding: 0; }}
#legend li span {{ display: inline-block; width: 18px; height: 12px; margin-right: 6px;
  border: 1px solid #777; }}
table {{ border-collapse: collapse; }}
td, th {{ border: 1px solid #bbb; padding: 3px 8px; text-align: right; }}
td:first-child, th:first-child {{ text-align: left; }}
</style></head><body>
<h2>{html.escape(title)}</h2>
<div class="wrap">
<svg id="map" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}">
{"".join(items)}
<g id="scalebar"><rect x="{PAD}" y="{HEIGHT - 12}" width="{bar_px:.1f}" height="4" fill="#222"/>
<text x="{PAD}" y="{HEIGHT - 16}" font-size="11">{bar_m:,.0f} m</text></g>
</svg>
<div>
<div id="legend"><h3>{html.escape(value_column)} per building</h3><ul>{legend}</ul></div>
<h3>Summary</h3>
<table id="summary"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>
<p style="font-size:11px;color:#666">{html.escape(attribution)}</p>
</div></div></body></html>
"""


def write_query_map(path: Path, **kwargs) -> Path:
    """Write :func:`query_map_html` to ``path``."""
    path = Path(path)
    path.write_text(query_map_html(**kwargs), encoding="utf-8")
    return path

"""A self-contained HTML map of a matching: flow lines scaled by tonnes, sites, a table.

Like the query map (:mod:`mfa.io.htmlmap`): inline SVG in the run's projected CRS, no
tiles or scripts, so it opens offline in any browser.
"""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np
import pandas as pd

from mfa.io.htmlmap import HEIGHT, PAD, WIDTH

__all__ = ["match_map_html", "write_match_map"]

#: One colour per material (ColorBrewer Dark2, 8 classes), in the materials' order.
COLOURS = ["#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d", "#666666"]


def match_map_html(
    matches: pd.DataFrame,
    coverage: pd.DataFrame,
    totals: pd.DataFrame,
    title: str,
    attribution: str = "",
) -> str:
    """The HTML document: one line per match (width ∝ tonnes, colour = material), a
    square per demand site (tooltip: matched and virgin t), the per-material totals."""
    xs = np.r_[matches[["x0", "x1"]].to_numpy(float).ravel(), coverage["x"].to_numpy(float)]
    ys = np.r_[matches[["y0", "y1"]].to_numpy(float).ravel(), coverage["y"].to_numpy(float)]
    xmin, xmax, ymin, ymax = xs.min(), xs.max(), ys.min(), ys.max()
    span = max(xmax - xmin, ymax - ymin, 100.0)
    scale = min((WIDTH - 2 * PAD) / span, (HEIGHT - 2 * PAD) / span)

    def tx(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return PAD + (x - xmin) * scale, HEIGHT - PAD - (y - ymin) * scale

    materials = list(dict.fromkeys(totals["material"]))
    colour = {m: COLOURS[i % len(COLOURS)] for i, m in enumerate(materials)}
    t_max = float(matches["t"].max()) if len(matches) else 1.0
    x0, y0 = tx(matches["x0"].to_numpy(float), matches["y0"].to_numpy(float))
    x1, y1 = tx(matches["x1"].to_numpy(float), matches["y1"].to_numpy(float))
    width = 0.5 + 7.5 * np.sqrt(matches["t"].to_numpy(float) / t_max)
    items = [
        f'<line class="match" x1="{a:.1f}" y1="{b:.1f}" x2="{c:.1f}" y2="{d:.1f}" '
        f'stroke="{colour.get(m, "#333")}" stroke-width="{w:.2f}"><title>'
        f"{html.escape(f'{s} → {t_id}: {t:,.1f} t {m} in {yr}, {km:.1f} km')}</title></line>"
        for a, b, c, d, w, s, t_id, t, m, yr, km in zip(
            x0,
            y0,
            x1,
            y1,
            width,
            matches["supply_id"],
            matches["demand_id"],
            matches["t"],
            matches["material"],
            matches["year_out"],
            matches["km"],
            strict=True,
        )
    ]
    sx, sy = tx(coverage["x"].to_numpy(float), coverage["y"].to_numpy(float))
    items += [
        f'<rect class="site" x="{a - 5:.1f}" y="{b - 5:.1f}" width="10" height="10"><title>'
        f"{html.escape(f'{d}: {m} {t:,.1f} t, {mt:,.1f} t reused, {vt:,.1f} t virgin')}"
        "</title></rect>"
        for a, b, d, m, t, mt, vt in zip(
            sx,
            sy,
            coverage["demand_id"],
            coverage["material"],
            coverage["t"],
            coverage["matched_t"],
            coverage["virgin_t"],
            strict=True,
        )
    ]
    legend = "".join(
        f'<li><span style="background:{colour[m]}"></span>{html.escape(m)}</li>' for m in materials
    )
    cols = ["material", "demand_t", "reused_t", "virgin_t", "mean_km", "net_kgco2e"]
    head = "".join(f"<th>{c}</th>" for c in cols)
    rows = "".join(
        f"<tr><td>{html.escape(str(r[0]))}</td>"
        + "".join(f"<td>{v:,.1f}</td>" for v in r[1:])
        + "</tr>"
        for r in totals[cols].itertuples(index=False)
    )
    bar_m = 10 ** np.floor(np.log10(max(span / 4, 1.0)))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: sans-serif; margin: 16px; color: #222; }}
.wrap {{ display: flex; gap: 20px; align-items: flex-start; }}
svg {{ background: #f4f6f8; border: 1px solid #ccc; }}
line.match {{ stroke-linecap: round; opacity: 0.75; }}
rect.site {{ fill: #fff; stroke: #222; stroke-width: 2; }}
#legend ul {{ list-style: none; padding: 0; }}
#legend li span {{ display: inline-block; width: 18px; height: 4px; margin: 0 6px 3px 0; }}
table {{ border-collapse: collapse; }}
td, th {{ border: 1px solid #bbb; padding: 3px 8px; text-align: right; }}
td:first-child, th:first-child {{ text-align: left; }}
</style></head><body>
<h2>{html.escape(title)}</h2>
<div class="wrap">
<svg id="map" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}">
{"".join(items)}
<g id="scalebar"><rect x="{PAD}" y="{HEIGHT - 12}" width="{bar_m * scale:.1f}" height="4"
fill="#222"/><text x="{PAD}" y="{HEIGHT - 16}" font-size="11">{bar_m:,.0f} m</text></g>
</svg>
<div>
<div id="legend"><h3>Material (line width ∝ √tonnes; squares: sites)</h3><ul>{legend}</ul></div>
<h3>Balance</h3>
<table id="summary"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>
<p style="font-size:11px;color:#666">{html.escape(attribution)}</p>
</div></div></body></html>
"""


def write_match_map(path: Path, **kwargs) -> Path:
    """Write :func:`match_map_html` to ``path`` (a new file beside, then renamed)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(match_map_html(**kwargs), encoding="utf-8")
    tmp.replace(path)
    return path

"""A self-contained HTML map of a matching: flow lines scaled by tonnes, sites, hubs, the
run's districts around them, a legend that says what is drawn, the balance and hub tables.

The page, frame and context are :mod:`mfa.io.svgmap`'s (shared with the query map).
"""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np
import pandas as pd

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

__all__ = ["match_frame", "match_map_html", "write_match_map"]

#: One colour per material (ColorBrewer Dark2, 8 classes), in the materials' order.
COLOURS = ["#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d", "#666666"]

_STYLE = """
line.match { stroke-linecap: round; opacity: 0.75; }
rect.site { fill: #fff; stroke: #222; stroke-width: 2; }
g.hub circle { fill: #54278f; stroke: #fff; stroke-width: 1.5; }
g.hub text { font-size: 11px; font-weight: bold; fill: #3f007d; paint-order: stroke;
  stroke: #fff; stroke-width: 3px; }
"""

#: The hub columns each hub's SVG element carries as ``data-`` attributes (full precision,
#: as in ``match.json``'s ``hubs``) and its table shows.
HUB_FIELDS = (
    "in_t",
    "out_t",
    "capacity_t",
    "peak_held_t",
    "capacity_use",
    "held_t_years",
    "handling_kgco2e",
    "holding_kgco2e",
    "handling_dkk",
    "holding_dkk",
)


def match_frame(
    matches: pd.DataFrame, coverage: pd.DataFrame, hubs: pd.DataFrame | None = None
) -> Frame:
    """The map's frame: every match's ends, every site and every hub."""
    hx = hubs["x"].to_numpy(float) if hubs is not None and len(hubs) else np.zeros(0)
    hy = hubs["y"].to_numpy(float) if hubs is not None and len(hubs) else np.zeros(0)
    xs = np.r_[matches[["x0", "x1"]].to_numpy(float).ravel(), coverage["x"].to_numpy(float), hx]
    ys = np.r_[matches[["y0", "y1"]].to_numpy(float).ravel(), coverage["y"].to_numpy(float), hy]
    return Frame.around((xs.min(), ys.min(), xs.max(), ys.max()) if len(xs) else (np.nan,) * 4)


def match_map_html(
    matches: pd.DataFrame,
    coverage: pd.DataFrame,
    totals: pd.DataFrame,
    title: str,
    attribution: str = "",
    years: tuple[int, int] | None = None,
    scenario: str | None = None,
    crs: str | None = None,
    context: MapContext | None = None,
    hubs: pd.DataFrame | None = None,
) -> str:
    """The HTML document: one line per match (width ∝ √t, colour = material), a square
    per demand site (tooltip: matched and virgin t), a labelled circle per hub
    (:func:`mfa.match.outputs.hub_points`; area ∝ t taken in, tooltip and ``data-``
    attributes: :data:`HUB_FIELDS`), the per-material totals and the hub table; the legend
    names the quantity (t moved per match), the years and the scenario of the supply."""
    frame = match_frame(matches, coverage, hubs)
    materials = list(dict.fromkeys(totals["material"]))
    colour = {m: COLOURS[i % len(COLOURS)] for i, m in enumerate(materials)}
    t_max = float(matches["t"].max()) if len(matches) else 1.0
    x0, y0 = frame.xy(matches["x0"], matches["y0"])
    x1, y1 = frame.xy(matches["x1"], matches["y1"])
    width = 0.5 + 7.5 * np.sqrt(matches["t"].to_numpy(float) / t_max)
    items = [context_svg(frame, context)]
    items += [
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
    sx, sy = frame.xy(coverage["x"], coverage["y"])
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
    has_hubs = hubs is not None and len(hubs) > 0
    if has_hubs:
        items += _hub_items(frame, hubs)
    items.append(frame.scalebar(crs))
    notes = []
    if years is not None:
        notes.append(
            f"reused material that comes free {years[0]}–{years[1]}"
            + (f", scenario {scenario}" if scenario else "")
        )
    notes.append(
        f"line width ∝ √t: the widest {t_max:,.1f} t" if len(matches) else "nothing is reused"
    )
    entries = [(f"background:{colour[m]};height:4px", m) for m in materials]
    entries.append(("background:#fff;border:2px solid #222", "demand site"))
    if has_hubs:
        entries.append(
            ("background:#54278f;border-radius:6px", "hub, area ∝ t taken in (label: hub_id)")
        )
    entries += context_entries(context, "the run's buildings")
    cols = ["material", "demand_t", "reused_t", "virgin_t", "mean_km", "net_kgco2e"]
    return page(
        title,
        "".join(items),
        legend_html("material moved, t per match", notes, entries),
        "Balance",
        table_html(totals[cols])
        + ("<h3>Hubs</h3>" + table_html(hubs[["hub_id", *HUB_FIELDS]], "hubs") if has_hubs else ""),
        with_credits(attribution, context),
        _STYLE + context_css(context),
    )


def _hub_items(frame: Frame, hubs: pd.DataFrame) -> list[str]:
    """One ``<g class="hub">`` per hub: a circle (area ∝ t taken in; 4 px for none), its
    ``hub_id`` beside it, a tooltip, and :data:`HUB_FIELDS` as ``data-`` attributes."""
    x, y = frame.xy(hubs["x"], hubs["y"])
    t_in = hubs["in_t"].to_numpy(float)
    r = 4.0 + 8.0 * np.sqrt(t_in / t_in.max()) if t_in.max() > 0 else np.full(len(t_in), 4.0)
    out = []
    for i, hub in enumerate(hubs.itertuples(index=False)):
        data = " ".join(
            f'data-{f.replace("_", "-")}="{float(getattr(hub, f))!r}"' for f in HUB_FIELDS
        )
        tip = (
            f"{hub.hub_id}: {hub.in_t:,.1f} t in, {hub.out_t:,.1f} t out; held at most "
            f"{hub.peak_held_t:,.1f} t of {hub.capacity_t:,.1f} t ({hub.capacity_use:.0%}), "
            f"{hub.held_t_years:,.1f} t·years; handling {hub.handling_kgco2e:,.0f} + holding "
            f"{hub.holding_kgco2e:,.0f} kg CO2e"
        )
        out.append(
            f'<g class="hub" data-hub-id="{html.escape(str(hub.hub_id))}" {data}>'
            f'<circle cx="{x[i]:.1f}" cy="{y[i]:.1f}" r="{r[i]:.1f}"/>'
            f'<text x="{x[i] + r[i] + 3:.1f}" y="{y[i] + 4:.1f}">{html.escape(str(hub.hub_id))}'
            f"</text><title>{html.escape(tip)}</title></g>"
        )
    return out


def write_match_map(path: Path, **kwargs) -> Path:
    """Write :func:`match_map_html` to ``path`` (a new file beside, then renamed)."""
    return write_page(path, match_map_html(**kwargs))

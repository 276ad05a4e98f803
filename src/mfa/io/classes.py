"""Graduated classes, colour ramps and legend labels: one rule for the QGIS styles
(:mod:`mfa.io.qgis.styles`) and the HTML maps (:mod:`mfa.io.htmlmap`)."""

from __future__ import annotations

import itertools
import math
import sys
from collections.abc import Sequence
from typing import Literal

import numpy as np

__all__ = ["MIN_CLASS_WIDTH", "RAMPS", "class_breaks", "color_ramp", "format_value", "range_labels"]

#: ColorBrewer schemes (9 classes, space-separated), interpolated for other class counts.
RAMPS: dict[str, str] = {
    "YlOrBr": "#ffffe5 #fff7bc #fee391 #fec44f #fe9929 #ec7014 #cc4c02 #993404 #662506",
    "RdPu": "#fff7f3 #fde0dd #fcc5c0 #fa9fb5 #f768a1 #dd3497 #ae017e #7a0177 #49006a",
    "YlGnBu": "#ffffd9 #edf8b1 #c7e9b4 #7fcdbb #41b6c4 #1d91c0 #225ea8 #253494 #081d58",
    "YlOrRd": "#ffffcc #ffeda0 #fed976 #feb24c #fd8d3c #fc4e2a #e31a1c #bd0026 #800026",
    "Greys": "#ffffff #f0f0f0 #d9d9d9 #bdbdbd #969696 #737373 #525252 #252525 #000000",
    "RdYlGn": "#d73027 #f46d43 #fdae61 #fee08b #ffffbf #d9ef8b #a6d96a #66bd63 #1a9850",
}


#: The narrowest first class, as a share of the second class's upper edge above the
#: lowest edge: a quantile that close to it (many near-zero values, such as the outflows of
#: new buildings) makes no class of its own. A display rule, not a number from literature.
MIN_CLASS_WIDTH = 1e-3


def _round_sig(
    x: float, digits: int = 2, how: Literal["nearest", "down", "up"] = "nearest"
) -> float:
    """``x`` rounded to ``digits`` significant digits (down/up: towards −∞/+∞)."""
    if abs(x) < sys.float_info.min or not math.isfinite(x):  # 0 and subnormals (5e-324)
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
    (one more than the classes); fewer than ``n`` classes when values repeat or the first
    class is narrower than :data:`MIN_CLASS_WIDTH` of the second (a class
    "0 – 0.0000074 t" of buildings hardly expected to come down joins the next); one
    class (0, 1) when there is no finite value.
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
    edges = sorted({lo, hi, *(q for q in inner if lo < q < hi)})
    # a first class much narrower than the second is no class (the loop runs < n times)
    while len(edges) > 2 and edges[1] - lo < MIN_CLASS_WIDTH * (edges[2] - lo):
        del edges[1]
    return tuple(edges)


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

"""Hilbert-curve order of layers: spatially coherent row groups, the same however the
rows arrive (ties broken by a unique key)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from geopandas.tools.hilbert_curve import _continuous_to_discrete_coords, _encode

__all__ = ["hilbert_distance", "sorted_by"]

#: Bits per axis of the Hilbert curve (geopandas' default and maximum).
HILBERT_LEVEL = 16


def hilbert_distance(bounds: np.ndarray, total_bounds: np.ndarray) -> np.ndarray:
    """Distance along a Hilbert curve of each box's centre: what
    :meth:`geopandas.GeoSeries.hilbert_distance` gives for geometries with these bounds.

    ``bounds`` is (n, 4): x0, y0, x1, y1 per row (e.g. a GeoParquet covering ``bbox``),
    ``total_bounds`` the extent the curve spans. It uses geopandas' own encoding, so an
    order computed from stored boxes equals one computed from parsed geometries.
    """
    x, y = _continuous_to_discrete_coords(
        np.asarray(bounds, dtype=float), HILBERT_LEVEL, total_bounds
    )
    return np.asarray(_encode(HILBERT_LEVEL, x, y))


def sorted_by(distance: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """The row order that sorts by ``distance``, equal distances by ``keys`` (unique).

    As ``DataFrame.sort_values(["h", "k"], kind="stable")``, but the keys (strings, slow
    to compare) are only compared among rows that share a distance.
    """
    order = np.argsort(distance, kind="stable")
    d = distance[order]
    tie = np.r_[False, d[1:] == d[:-1]]
    tie |= np.r_[tie[1:], False]
    if tie.any():
        rows = order[tie]
        sub = pd.DataFrame({"h": distance[rows], "k": keys[rows]})
        order[tie] = rows[sub.sort_values(["h", "k"], kind="stable").index.to_numpy()]
    return order

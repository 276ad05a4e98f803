"""Hilbert-curve order of layers: spatially coherent row groups, the same however the
rows arrive (ties broken by a unique key)."""

from __future__ import annotations

import numpy as np
from geopandas.tools.hilbert_curve import _continuous_to_discrete_coords, _encode

__all__ = ["hilbert_distance"]

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

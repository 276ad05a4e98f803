"""Row orders: Hilbert order from stored boxes equals geopandas' from parsed geometries;
building-id order as numpy gives it."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st

from mfa.hilbert import hilbert_distance


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 200))
def test_distance_from_bounds_equals_geopandas(seed: int, n: int) -> None:
    rng = np.random.default_rng(seed)
    x, y = rng.uniform(500_000, 520_000, n), rng.uniform(6_100_000, 6_120_000, n)
    w, h = rng.uniform(0, 80, n), rng.uniform(0, 80, n)
    boxes = gpd.GeoSeries(shapely.box(x, y, x + w, y + h), crs="EPSG:25832")
    ours = hilbert_distance(boxes.bounds.to_numpy(), boxes.total_bounds)
    theirs = boxes.hilbert_distance(total_bounds=boxes.total_bounds, level=16).to_numpy()
    np.testing.assert_array_equal(ours, theirs)

"""The point locator (district of each building's point) against GEOS itself: the first
polygon, by position, that intersects the point; on real parish outlines, at their
shared borders and vertices, and on the lines of the locator's own grid."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st

from mfa.buildings.districts import PointLocator
from tests.conftest import SAMPLE

PARISHES = np.asarray(gpd.read_file(SAMPLE / "dagi_sogne_2014_sample.gpkg").geometry.values)


def _oracle(polys: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    point_i, poly_i = shapely.STRtree(polys).query(shapely.points(x, y), predicate="intersects")
    out = np.full(len(x), np.iinfo(np.int64).max)
    np.minimum.at(out, point_i, poly_i)
    return np.where(out == np.iinfo(np.int64).max, -1, out)


def _hard_points(polys: np.ndarray, loc: PointLocator, rng: np.random.Generator):
    """Vertices (shared borders), edge midpoints, grid lines and random points."""
    xy = shapely.get_coordinates(shapely.boundary(polys))
    mid = (xy[:-1] + xy[1:]) / 2
    x0, y0, x1, y1 = shapely.total_bounds(polys)
    gx = loc.origin[0] + loc.size[0] * rng.integers(0, loc.shape[0] + 1, 2_000)
    gy = loc.origin[1] + loc.size[1] * rng.integers(0, loc.shape[1] + 1, 2_000)
    rand = np.column_stack([rng.uniform(x0, x1, 4_000), rng.uniform(y0, y1, 4_000)])
    grid = np.column_stack([np.r_[gx, rand[:2_000, 0]], np.r_[rand[2_000:, 1], gy]])
    pts = np.concatenate([xy[::3], mid[::3], grid, rand])
    return pts[:, 0], pts[:, 1]


def test_real_parishes_borders_and_grid_lines_as_geos_says() -> None:
    loc = PointLocator(PARISHES)
    x, y = _hard_points(PARISHES, loc, np.random.default_rng(3))
    got = loc.locate(x, y)
    assert np.array_equal(got, _oracle(PARISHES, x, y))
    assert 0.1 < (got >= 0).mean() < 0.9  # the test reaches inside and outside


@settings(max_examples=25, deadline=None)
@given(
    cells=st.sampled_from([0.5, 1.0, 4.0, 16.0, 64.0]),
    seed=st.integers(0, 2**32 - 1),
    overlap=st.booleans(),
)
def test_any_grid_and_overlapping_polygons_as_geos_says(
    cells: float, seed: int, overlap: bool
) -> None:
    rng = np.random.default_rng(seed)
    polys = PARISHES[rng.permutation(len(PARISHES))[: rng.integers(1, len(PARISHES))]]
    if overlap:  # overlapping districts: the first by position wins
        polys = np.concatenate([polys, shapely.buffer(polys[:3], 500.0)])
    loc = PointLocator(polys, cells)
    x, y = _hard_points(polys, loc, rng)
    assert np.array_equal(loc.locate(x, y), _oracle(polys, x, y))

"""Conflation in tiles gives the one-search answer (``conflate(..., tile_m=...)``).

Real data: the dk-sample BBR register points (real positions and footprint areas) with a
square footprint per record built around a point near it (so footprints overlap, share
borders and hold several records), and the real Aarhus GeoDanmark footprints with the test
register of ``test_conflate``. Hypothesis: points and polygons put on tile edges.
"""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st

from mfa.buildings.conflate import conflate
from mfa.buildings.register import normalise_bbr
from mfa.config.load import load_pipeline
from mfa.io.register import buildings_from_register
from tests.test_conflate import _register, aarhus_footprints

ROOT = Path(__file__).resolve().parents[1]


def _same(a: gpd.GeoDataFrame, b: gpd.GeoDataFrame) -> None:
    """Same rows, columns, values and geometries (WKB)."""
    assert list(a.columns) == list(b.columns)
    pd.testing.assert_frame_equal(
        pd.DataFrame(a.drop(columns="geometry")), pd.DataFrame(b.drop(columns="geometry"))
    )
    assert (shapely.to_wkb(a.geometry.values) == shapely.to_wkb(b.geometry.values)).all()


def _dk_sample(rules) -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame]:
    p = load_pipeline(ROOT / "pipelines" / "dk-sample.toml")
    assert p.sources.register_ is not None
    reg, _ = buildings_from_register(p.sources.register_, p.crs, rules)
    reg = reg[reg.geometry.geom_type == "Point"].reset_index(drop=True)
    # one square footprint per record, of its register area, centred 0…6 m off its point
    rng = np.random.default_rng(5)
    xy = shapely.get_coordinates(reg.geometry.values) + rng.uniform(-6, 6, (len(reg), 2))
    half = np.sqrt(reg["footprint_area_m2"].fillna(100).clip(20, 5000).to_numpy()) / 2
    boxes = shapely.box(xy[:, 0] - half, xy[:, 1] - half, xy[:, 0] + half, xy[:, 1] + half)
    fps = gpd.GeoDataFrame(
        {
            "building_id": pd.array([f"fp{i:06d}" for i in range(len(reg))], dtype="string"),
            "footprint_area_m2": shapely.area(boxes),
            "footprint_area_source": pd.array(["polygon"] * len(reg), dtype="string"),
        },
        geometry=boxes,
        crs=reg.crs,
    )
    # half the register keeps its own footprint area, half takes the polygon's share
    reg.loc[reg.index % 2 == 0, "footprint_area_m2"] = np.nan
    return reg, fps


@pytest.mark.parametrize("tile_m", [25.0, 100.0, 1000.0, 50_000.0])
def test_dk_sample_tiles_give_one_search_answer(rules, tile_m) -> None:
    reg, fps = _dk_sample(rules)
    one, rep1 = conflate(reg, fps)
    many, rep2 = conflate(reg, fps, tile_m=tile_m)
    assert rep1 == rep2
    assert rep1["matched_by_point"] > 1000  # the layout matches most records
    assert rep1["footprints_with_several_register_buildings"] > 0
    _same(one, many)


@pytest.mark.parametrize("tile_m", [7.0, 60.0, 500.0])
def test_aarhus_tiles_give_one_search_answer(rules, tile_m) -> None:
    fps = aarhus_footprints(rules)
    reg, _ = normalise_bbr(_register(fps), rules, ["6"])
    link = fps.register_link
    fp = fps.drop(columns="register_link")
    one, rep1 = conflate(reg, fp, link)
    many, rep2 = conflate(reg, fp, link, tile_m=tile_m)
    assert rep1 == rep2 and rep1["matched_by_point"] == 10
    _same(one, many)


def _layout(draw_ints: list[tuple[int, int, int, int]], pts: list[tuple[int, int]], tile: int):
    """Squares and points on a 1 m lattice (multiples of the tile are tile edges)."""
    boxes = shapely.box(*np.array([(x, y, x + w, y + h) for x, y, w, h in draw_ints], float).T)
    fps = gpd.GeoDataFrame(
        {
            # ids not in position order: the border rule follows ids
            "building_id": pd.array(
                [f"f{(7 * i) % len(boxes):04d}.{i}" for i in range(len(boxes))], dtype="string"
            ),
            "footprint_area_m2": shapely.area(boxes),
            "footprint_area_source": pd.array(["polygon"] * len(boxes), dtype="string"),
        },
        geometry=boxes,
        crs=25832,
    )
    reg = gpd.GeoDataFrame(
        {
            "building_id": pd.array([f"r{i:04d}" for i in range(len(pts))], dtype="string"),
            "footprint_area_m2": [np.nan if i % 3 else 50.0 for i in range(len(pts))],
            "footprint_area_source": pd.array([None] * len(pts), dtype="string"),
        },
        geometry=shapely.points(np.array(pts, float).reshape(-1, 2)),
        crs=25832,
    )
    return reg, fps


coord = st.integers(-30, 30)


@settings(max_examples=150, deadline=None)
@given(
    boxes=st.lists(
        st.tuples(coord, coord, st.integers(1, 25), st.integers(1, 25)), min_size=1, max_size=25
    ),
    pts=st.lists(st.tuples(coord, coord), min_size=1, max_size=40),
    tile=st.sampled_from([1, 2, 5, 10, 13]),
)
def test_tiles_on_edges_give_one_search_answer(boxes, pts, tile) -> None:
    reg, fps = _layout(boxes, pts, tile)
    one, rep1 = conflate(reg, fps)
    many, rep2 = conflate(reg, fps, tile_m=float(tile))
    assert rep1 == rep2
    _same(one, many)

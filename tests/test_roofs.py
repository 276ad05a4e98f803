"""Floors from the walls' height: OSM ``roof:height`` / ``roof:levels`` (Simple 3D
Buildings: ``height`` includes the roof; roof levels are not in ``building:levels``)."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
from hypothesis import given
from hypothesis import strategies as st

from mfa.buildings.heights import wall_heights
from mfa.buildings.osm import normalise_osm
from mfa.buildings.quality import refine_with_heights
from tests.test_quality import _buildings, box


def test_the_roof_is_not_storeys(rules) -> None:
    storey = {**rules.storey_height_by_function, "*": rules.storey_height_m}
    rs = rules.storey_height_by_function["RS"]
    b = _buildings(
        [box(i * 20) for i in range(5)],
        function=["RM"] * 5,
        archetype_id=["RM-M"] * 5,
        # 3 storeys of walls + a 6 m pitched roof; the same roof as 2 roof levels;
        # no roof tags; a roof taller than the building (mistagged); roof:levels=0
        height_m=[15.3, 15.5, 15.3, 9.0, 9.3],
        height_source=["osm"] * 5,
        roof_height_m=[6.0, None, None, 12.0, None],
        roof_levels=[None, 2.0, None, None, 0.0],
    )
    out, repairs = refine_with_heights(b, None, storey, rules.limits)
    o = out.set_index("building_id")
    assert o.loc["b0", "floors"] == round((15.3 - 6.0) / rs) == 3  # 5 with the roof
    assert o.loc["b1", "floors"] == round((15.5 - 2 * rs) / rs) == 3
    assert o.loc["b2", "floors"] == round(15.3 / rs) == 5  # no roof tags: as before
    assert o.loc["b3", "floors"] == round(9.0 / rs) == 3  # the roof is not used
    assert o.loc["b4", "floors"] == 3
    assert (o["floors_rule"] == "height").all()  # the rule stays: floors from a height
    assert o.loc["b0", "gfa_m2"] == 300.0 and o.loc["b0", "floors_source"] == "osm"
    assert o.loc["b0", "height_m"] == 15.3  # the building's height stays its own
    rec = repairs[repairs["attribute"] == "roof_height_m"]
    assert list(rec["record_id"]) == ["b3"] and "not below" in rec["reason"].iloc[0]


def test_an_osm_extract_reads_the_roof_tags(rules) -> None:
    """From the tags to the floors: a house of 2 storeys under a 4 m roof."""
    ring = shapely.box(24.94, 60.17, 24.9402, 60.1701)
    raw = gpd.GeoDataFrame(
        {
            "element": ["way", "way"],
            "osm_id": [1, 2],
            "building": ["apartments", "apartments"],
            "height": ["10.2 m", "10.2"],
            "roof:height": ["4", None],
            "roof:levels": [None, "1"],
        },
        geometry=[ring, shapely.affinity.translate(ring, 0.001)],
        crs=4326,
    )
    b, _ = normalise_osm(raw, "EPSG:3067", rules)
    assert b["roof_height_m"].tolist()[0] == 4.0 and pd.isna(b["roof_height_m"].iloc[1])
    assert b["roof_levels"].iloc[1] == 1.0
    storey = {**rules.storey_height_by_function, "*": rules.storey_height_m}
    out, _ = refine_with_heights(b, None, storey, rules.limits, rules.height_classes)
    rm = rules.storey_height_by_function["RM"]
    assert out["floors"].tolist() == [round(6.2 / rm), round((10.2 - rm) / rm)] == [2, 2]


@given(
    st.lists(
        st.tuples(
            st.floats(0.5, 300.0),
            st.one_of(st.none(), st.floats(0.0, 400.0)),
            st.one_of(st.none(), st.integers(0, 5)),
            st.floats(2.5, 12.0),
        ),
        min_size=1,
        max_size=40,
    )
)
def test_the_walls_are_never_taller_than_the_building_and_never_below_zero(rows) -> None:
    h, rh, rl, s = (pd.Series(c, dtype="Float64") for c in zip(*rows, strict=True))
    wall, bad = wall_heights(h, rh, rl, s)
    w, hh = wall.to_numpy(float), h.to_numpy(float)
    assert (w > 0).all() and (w <= hh).all()
    roof = rh.fillna(rl * s).to_numpy(float, na_value=np.nan)
    # oracle: the roof is subtracted exactly where it is below the height
    sub = np.isfinite(roof) & (roof < hh)
    assert np.allclose(w[sub], hh[sub] - roof[sub]) and (w[~sub] == hh[~sub]).all()
    assert (bad == (np.isfinite(roof) & (roof >= hh))).all()


def test_a_part_under_a_roof_counts_its_walls_and_a_too_tall_roof_is_repaired(rules) -> None:
    """An office outline of two halves, 20 m parts: one under an 8 m roof (12 m of walls,
    3 storeys of 3.9 m, not 5), one whose tagged roof (25 m) is taller than the part."""
    w, s, e, n = 24.94, 60.17, 24.9404, 60.1702
    mid = (w + e) / 2
    repairs: list[pd.DataFrame] = []
    raw = gpd.GeoDataFrame(
        {
            "element": ["way", "way", "way"],
            "osm_id": [1, 2, 3],
            "building": ["office", None, None],
            "building:part": [None, "yes", "yes"],
            "height": [None, "20", "20"],
            "roof:height": [None, "8", "25"],
        },
        geometry=[shapely.box(w, s, e, n), shapely.box(w, s, mid, n), shapely.box(mid, s, e, n)],
        crs=4326,
    )
    b, dropped = normalise_osm(raw, "EPSG:3067", rules, repairs)
    assert list(b["building_id"]) == ["osm:way/1"] and len(dropped) == 2
    assert rules.height_classes.at["office", "storey_height_m"] == 3.9
    assert b["floors"].iloc[0] == pytest.approx((3 + 5) / 2, rel=1e-3)  # area-weighted
    assert b["floors_rule"].iloc[0] == "parts"
    rec = pd.concat(repairs)
    rec = rec[rec["attribute"] == "roof_height_m"]
    assert list(rec["record_id"]) == ["osm:way/1"] and list(rec["detail"]) == ["osm:way/3"]

"""Conflation of footprints with register records.

The footprints are the real GeoDanmark footprints of central Aarhus with their real
BBRUUID links. The BBR sample holds no Aarhus buildings, so the register records here are
made for the test: they take the linked UUIDs (id link), or points placed in, between or
far from the real footprints (point in footprint), and real BBR attribute values.
"""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely

from mfa.buildings.conflate import conflate
from mfa.buildings.register import normalise_bbr
from mfa.config import FootprintSource
from mfa.io.footprints import buildings_from_footprint_file
from mfa.run import run_pipeline
from tests.conftest import DATA, MODEL, write_pipeline

AARHUS = DATA / "aarhus_geodanmark_bygninger.gpkg"


@pytest.fixture(scope="module")
def footprints(rules) -> gpd.GeoDataFrame:
    return aarhus_footprints(rules)


def aarhus_footprints(rules) -> gpd.GeoDataFrame:
    """The 426 Aarhus footprints, normalised, with their register links."""
    src = FootprintSource(
        file=AARHUS, layer="buildings", id_column="ID_LOKALID", register_link_column="BBRUUID"
    )
    fps, dropped = buildings_from_footprint_file(src, "EPSG:25832", rules)
    assert dropped.empty and len(fps) == 426
    return fps


def _register(footprints: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """30 linked records, 10 points in unlinked footprints (2 of them sharing one),
    5 points far away; attributes from real BBR rows."""
    linked = footprints[footprints.register_link.notna()].iloc[:30]
    unlinked = footprints[footprints.register_link.isna()].iloc[:9]
    pts_in = list(shapely.point_on_surface(unlinked.geometry.values))
    c = unlinked.geometry.iloc[0].centroid
    inner = shapely.point_on_surface(unlinked.geometry.iloc[0])
    pts_in.append(shapely.Point(inner.x + 0.01, inner.y))  # a 2nd record in footprint 0
    far = [shapely.Point(c.x + 5000 + 10 * i, c.y) for i in range(5)]
    ids = (
        list(linked.register_link)
        + [f"00000000-0000-4000-8000-{i:012d}" for i in range(10)]
        + [f"00000000-0000-4000-9000-{i:012d}" for i in range(5)]
    )
    # linked records get points far away: only the id can match them
    away = shapely.points(np.c_[linked.geometry.centroid.x + 10_000, linked.geometry.centroid.y])
    geoms = [*away, *pts_in, *far]
    n = len(ids)
    # footprint areas as the register would have them (two records share footprint 0)
    fp_area = [*linked.geometry.area, *unlinked.geometry.area, 0.0, *[150.0] * 5]
    fp_area[30] = fp_area[39] = unlinked.geometry.iloc[0].area / 2
    return gpd.GeoDataFrame(
        {
            "id_lokalId": ids,
            "status": ["6"] * n,
            "byg021BygningensAnvendelse": ["140"] * n,
            "byg026Opfoerelsesaar": [1932.0] * n,
            "byg032YdervaeggensMateriale": ["1"] * n,
            "byg038SamletBygningsareal": [round(4 * a) for a in fp_area],
            "byg041BebyggetAreal": fp_area,
            "byg054AntalEtager": [4.0] * n,
        },
        geometry=geoms,
        crs=25832,
    )


def test_matches_by_id_then_by_point(footprints, rules) -> None:
    reg, dropped = normalise_bbr(_register(footprints), rules, ["6"])
    assert dropped.empty
    out, report = conflate(reg, footprints.drop(columns="register_link"), footprints.register_link)
    assert report["matched_by_id"] == 30
    assert report["matched_by_point"] == 10
    assert report["register_only"] == 5
    assert report["footprints_with_several_register_buildings"] == 1
    assert report["footprints_matched"] == 39
    assert report["footprints_only"] == 426 - 39
    assert report["register_match_rate"] == pytest.approx(40 / 45, abs=1e-4)
    # every register building once, every footprint at most once on its own
    assert len(out) == 45 + 387
    assert out.building_id.is_unique
    by = out.set_index("building_id")
    assert set(by.match_method) == {
        "id_link",
        "point_in_footprint",
        "register_only",
        "footprint_only",
    }
    linked = by[by.match_method == "id_link"]
    assert (linked.geometry.geom_type == "Polygon").all()
    fp_geom = footprints.set_index("building_id").geometry
    assert all(
        linked.geometry.iloc[i].equals(fp_geom[linked.footprint_id.iloc[i]]) for i in range(5)
    )
    alone = by[by.match_method == "register_only"]
    assert (alone.geometry.geom_type == "Point").all() and alone.footprint_id.isna().all()
    # register attributes survive the match; footprint area comes from the polygon
    matched = by[by.match_method.isin(["id_link", "point_in_footprint"])]
    assert (matched.gfa_source == "register").all()
    assert matched.footprint_area_source.eq("register").all()
    shared = matched[matched.footprint_id.duplicated(keep=False)]
    assert len(shared) == 2
    area = fp_geom[shared.footprint_id.iloc[0]].area
    np.testing.assert_allclose(shared.footprint_area_m2.astype(float), area / 2)


def test_register_without_footprint_area_takes_the_polygons_share(footprints, rules) -> None:
    records = _register(footprints)
    records["byg041BebyggetAreal"] = np.nan
    reg, _ = normalise_bbr(records, rules, ["6"])
    out, _ = conflate(reg, footprints.drop(columns="register_link"), footprints.register_link)
    shared = out[out.footprint_id.duplicated(keep=False) & out.footprint_id.notna()]
    shared = shared[shared.match_method != "footprint_only"]
    area = footprints.set_index("building_id").geometry[shared.footprint_id.iloc[0]].area
    np.testing.assert_allclose(shared.footprint_area_m2.astype(float), area / 2)


def conflation_pipeline(footprints: gpd.GeoDataFrame, tmp_path: Path) -> Path:
    """A pipeline file conflating :func:`_register` with the Aarhus footprints."""
    csv = tmp_path / "register.parquet"
    _register(footprints).to_parquet(csv)
    body = f"""
name = "aarhus-conflation"
crs = "EPSG:25832"
[sources.register]
path = "{csv}"
[sources.footprints]
file = "{AARHUS}"
layer = "buildings"
id_column = "ID_LOKALID"
register_link_column = "BBRUUID"
"""
    return write_pipeline(tmp_path, body + MODEL)


def test_conflation_pipeline(footprints, tmp_path: Path) -> None:
    reg = _register(footprints)
    run = run_pipeline(conflation_pipeline(footprints, tmp_path), tmp_path / "out")
    b = gpd.read_parquet(run / "buildings.parquet")
    import json

    m = json.loads((run / "run.json").read_text())
    assert m["matches"]["matched_by_id"] == 30 and m["matches"]["register_only"] == 5
    assert m["row_counts"]["records_read"] == 45 + 426
    assert len(b) == 45 + 387
    # register floor area for matched rows, footprint × default floors for the rest
    fo = b[b.match_method == "footprint_only"]
    assert (fo.gfa_source == "imputed").all()
    assert b.loc[b.match_method != "footprint_only", "gfa_m2"].sum() == pytest.approx(
        reg["byg038SamletBygningsareal"].sum()
    )
    assert m["repairs"]["counts"] == []
    assert pd.api.types.is_string_dtype(b.match_method)

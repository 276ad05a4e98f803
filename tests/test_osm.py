from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
import shapely.affinity

from mfa.buildings.osm import normalise_osm
from mfa.errors import InputDataError, InputNotFoundError
from mfa.io.osm import read_osm_file
from mfa.schema import check_buildings
from tests.conftest import SAMPLE

XML = SAMPLE / "osm_planet_10.068_48.135_10.071_48.137.osm"
PBF = SAMPLE / "osm_aguascalientes.osm.pbf"


def test_xml_extract(rules) -> None:
    raw = read_osm_file(XML)
    assert {"element", "osm_id", "building", "geometry", "problem", "outer_of"} <= set(raw.columns)
    assert raw.crs.to_epsg() == 4326
    buildings, dropped = normalise_osm(raw, "EPSG:25832", rules)
    check_buildings(buildings, "osm", "EPSG:25832")
    # 33 ways and 1 relation tagged building (geodata/ATTRIBUTION.md); osmnx returns 32
    assert len(buildings) + len(dropped) == len(raw) == 34
    # 11 ways carry building:levels, 3 of them among the elements cut at the extract edge
    tagged = raw.loc[raw.problem.isna(), "building:levels"].notna().sum()
    assert (buildings.floors_source == "osm").sum() == tagged == 8
    assert (buildings.gfa_source == buildings.floors_source).all()
    assert (dropped.reason == "cut at extract edge").sum() == 3
    # way 514007867 is a real sliver of 0.007 m² inside way 275436099: merged into it
    assert dict(zip(dropped.record_id, dropped.reason, strict=True))["osm:way/514007867"] == (
        "overlaps osm:way/275436099 over more than half of its area: merged into it as a part"
    )
    assert buildings.footprint_area_m2.between(5, 5_000).all()


def test_pbf_extract_through_pyosmium(rules) -> None:
    raw = read_osm_file(PBF)
    assert (raw.element == "way").sum() == 35
    buildings, dropped = normalise_osm(raw, "EPSG:32613", rules)
    assert len(buildings) + len(dropped) == len(raw)
    assert len(buildings) >= 30
    church = buildings[buildings.osm_building == "church"]
    assert (church.function == "NR").all() and len(church) >= 1


def test_same_buildings_from_xml_and_pbf(tmp_path, rules) -> None:
    """The same data as XML and as PBF give the same buildings and the same drops."""
    osmium = pytest.importorskip("osmium")
    pbf = tmp_path / "planet.osm.pbf"
    reader = osmium.io.Reader(str(XML))
    header = reader.header()
    reader.close()
    with osmium.SimpleWriter(str(pbf), header=header) as writer:
        for obj in osmium.FileProcessor(str(XML)):
            writer.add(obj)
    a, dropped_a = normalise_osm(read_osm_file(XML), "EPSG:25832", rules)
    b, dropped_b = normalise_osm(read_osm_file(pbf), "EPSG:25832", rules)
    pd.testing.assert_series_equal(a.building_id, b.building_id)
    np.testing.assert_allclose(a.gfa_m2, b.gfa_m2, rtol=1e-9)
    pd.testing.assert_series_equal(a.archetype_id, b.archetype_id)
    pd.testing.assert_frame_equal(dropped_a, dropped_b)


def _raw(**tags) -> gpd.GeoDataFrame:
    square = shapely.Polygon([(10.0, 48.0), (10.0002, 48.0), (10.0002, 48.0001), (10.0, 48.0001)])
    n = len(next(iter(tags.values())))
    return gpd.GeoDataFrame(
        {"element": ["way"] * n, "osm_id": list(range(1, n + 1)), **tags},
        # side by side: footprints that overlap would be one building
        geometry=[shapely.affinity.translate(square, 0.001 * i) for i in range(n)],
        crs="EPSG:4326",
    )


def test_levels_material_year_and_exclusions(rules) -> None:
    raw = _raw(
        building=["house", "apartments", "carport", "yes", "spaceship"],
        **{
            "building:levels": ["2", "4;5", None, "abc", None],
            "building:material": ["brick", "concrete", None, "Wood", None],
            "start_date": ["1932", "c. 1975-05", None, None, "2001"],
        },
    )
    b, dropped = normalise_osm(raw, "EPSG:25832", rules)
    assert list(dropped.record_id) == ["osm:way/3"]
    assert "carport" in dropped.reason.iloc[0]
    b = b.set_index("building_id")
    assert b.loc["osm:way/1", "floors"] == 2 and b.loc["osm:way/1", "floors_source"] == "osm"
    assert b.loc["osm:way/2", "floors"] == 4
    assert b.loc["osm:way/4", "floors_source"] == "imputed"  # 'abc' is not a number
    assert b.loc["osm:way/1", "archetype_id"] == "RS-M"
    assert b.loc["osm:way/2", "archetype_id"] == "RM-C"
    assert b.loc["osm:way/4", "structure"] == "T"  # building:material is case-insensitive
    assert b.loc["osm:way/5", "function_source"] == "imputed"  # unknown tag value
    # building=yes without tagged neighbours: the default function
    assert b.loc["osm:way/2", "construction_year"] == 1975
    area = b.loc["osm:way/1", "footprint_area_m2"]
    assert 100 < area < 200  # 0.0002° x 0.0001° at 48°N ≈ 14.9 m x 11.1 m
    assert b.loc["osm:way/1", "gfa_m2"] == pytest.approx(2 * area)


def test_points_and_open_ways_are_reported(rules) -> None:
    raw = _raw(building=["house", "house", "house"])
    raw.loc[1, "geometry"] = shapely.Point(10, 48)
    raw.loc[2, "geometry"] = None
    b, dropped = normalise_osm(raw, "EPSG:25832", rules)
    assert len(b) == 1
    reasons = dict(zip(dropped.record_id, dropped.reason, strict=True))
    assert "Point, not a footprint" in reasons["osm:way/2"]
    assert reasons["osm:way/3"] == "no geometry"


def test_missing_and_unknown_files(tmp_path) -> None:
    with pytest.raises(InputNotFoundError):
        read_osm_file(tmp_path / "x.osm")
    f = tmp_path / "x.geojson"
    f.write_text("{}")
    with pytest.raises(InputDataError, match="unknown OSM format"):
        read_osm_file(f)
    broken = tmp_path / "broken.osm"
    broken.write_text("<osm><way id='1'>")
    with pytest.raises(InputDataError, match="cannot be read as OpenStreetMap"):
        read_osm_file(broken)

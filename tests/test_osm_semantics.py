"""OSM building semantics: one building per outline, parts refine it, nothing vanishes."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import osmium
import pandas as pd
import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st

from mfa.buildings.osm import normalise_osm
from mfa.io.osm import read_osm_file
from mfa.io.osm_extract import CUT_AT_EDGE
from tests.conftest import DATA, SAMPLE

KLUUVI = DATA / "helsinki_kluuvi.osm.pbf"
EXTRACTS = {
    "planet": (SAMPLE / "osm_planet_10.068_48.135_10.071_48.137.osm", "EPSG:25832"),
    "aguascalientes": (SAMPLE / "osm_aguascalientes.osm.pbf", "EPSG:32613"),
    "west_oakland": (DATA / "osm_west_oakland.osm.bz2", "EPSG:26910"),
    "kluuvi": (KLUUVI, "EPSG:3067"),
}
CRS = "EPSG:25832"


def _ids(raw: pd.DataFrame) -> pd.Series:
    return "osm:" + raw["element"].astype(str) + "/" + raw["osm_id"].astype(str)


@pytest.mark.parametrize("name", sorted(EXTRACTS))
def test_read_equals_kept_plus_dropped(name, rules) -> None:
    """Every element read is a building or a dropped record with a reason, exactly once,
    and no two buildings overlap over more than half of the smaller one."""
    path, crs = EXTRACTS[name]
    raw = read_osm_file(path)
    buildings, dropped = normalise_osm(raw, crs, rules)
    accounted = pd.concat([buildings.building_id, dropped.record_id], ignore_index=True)
    assert not accounted.duplicated().any()
    assert set(accounted) == set(_ids(raw))
    assert dropped.reason.notna().all() and (dropped.reason.str.len() > 0).all()
    relations = set(_ids(raw[raw.element == "relation"]))
    assert relations <= set(accounted)
    # overlaps measured by geopandas' own join (an independent route through GEOS)
    b = buildings[["building_id", "geometry"]]
    pairs = gpd.sjoin(b, b, predicate="intersects")
    pairs = pairs[pairs.building_id_left < pairs.building_id_right]
    left = b.geometry.loc[pairs.index].to_numpy()
    right = b.geometry.loc[pairs.index_right].to_numpy()
    shared = shapely.area(shapely.intersection(left, right))
    smaller = np.minimum(shapely.area(left), shapely.area(right))
    assert (shared <= 0.5 * smaller).all()


def test_edge_cuts_are_missing_from_the_extract() -> None:
    """Oracle for "cut at extract edge": the element's nodes (or member ways) are not all in
    the file, or (osmconvert-style cuts) it touches the header's bounding box."""
    raw = read_osm_file(KLUUVI)
    cut = raw[raw.problem == CUT_AT_EDGE]
    assert {"way", "relation"} <= set(cut.element)
    nodes = {n.id for n in osmium.FileProcessor(str(KLUUVI), osmium.osm.NODE)}
    ways = {}
    for w in osmium.FileProcessor(str(KLUUVI), osmium.osm.WAY):
        ways[w.id] = all(n.ref in nodes for n in w.nodes)
    rels = {}
    for r in osmium.FileProcessor(str(KLUUVI), osmium.osm.RELATION):
        rels[r.id] = all(ways.get(m.ref, False) for m in r.members if m.type == "w")
    for element, osm_id in zip(cut.element, cut.osm_id, strict=True):
        assert not (ways if element == "way" else rels)[osm_id], (element, osm_id)
    complete = raw[raw.problem.isna() & raw.element.isin(["way", "relation"])]
    for element, osm_id in zip(complete.element, complete.osm_id, strict=True):
        assert (ways if element == "way" else rels)[osm_id], (element, osm_id)


def test_osmconvert_cut_ways_touch_the_box(rules) -> None:
    raw = read_osm_file(EXTRACTS["planet"][0])
    cut = raw[raw.problem == CUT_AT_EDGE]
    # relation 318560 misses member ways; ways 275490779 (1 node left) and 275490781 (a
    # ring whose nodes outside the box were removed) end on the box's edge
    assert set(zip(cut.element, cut.osm_id, strict=True)) == {
        ("relation", 318560),
        ("way", 275490779),
        ("way", 275490781),
    }


@pytest.mark.parametrize("name", ["kluuvi", "aguascalientes"])
def test_pyrosm_buildings_are_all_accounted_for(name, rules) -> None:
    """pyrosm (an independent OSM reader) lists building ways/relations; each is read here,
    and each element read that pyrosm does not list is a part, a point or cut at the edge."""
    pyrosm = pytest.importorskip("pyrosm")
    path, crs = EXTRACTS[name]
    theirs = pyrosm.OSM(str(path)).get_buildings()
    their_ids = set("osm:" + theirs.osm_type + "/" + theirs.id.astype(str))
    raw = read_osm_file(path)
    assert their_ids <= set(_ids(raw))
    _, dropped = normalise_osm(raw, crs, rules)
    reasons = dict(zip(dropped.record_id, dropped.reason, strict=True))
    extra = raw[~_ids(raw).isin(their_ids)]
    for rid, element, part in zip(
        _ids(extra),
        extra.element,
        extra.get("building:part", pd.Series(index=extra.index)),
        strict=True,
    ):
        why = reasons.get(rid, "")
        assert (
            pd.notna(part)
            or element == "node"
            or why == CUT_AT_EDGE
            or why.startswith("outer way of")
        ), (rid, why)


def test_outlines_agree_with_osmnx(tmp_path, rules) -> None:
    """osmnx builds the polygons independently: same ids, same areas (to 1e-6)."""
    ox = pytest.importorskip("osmnx")
    xml = tmp_path / "kluuvi.osm"
    nodes = {n.id for n in osmium.FileProcessor(str(KLUUVI), osmium.osm.NODE)}
    whole = {
        w.id
        for w in osmium.FileProcessor(str(KLUUVI), osmium.osm.WAY)
        if all(n.ref in nodes for n in w.nodes)
    }
    with osmium.SimpleWriter(str(xml)) as writer:
        for obj in osmium.FileProcessor(str(KLUUVI)):
            # osmnx 2 fails on relations with incomplete members: leave them out for it
            if obj.is_relation() and not all(m.type != "w" or m.ref in whole for m in obj.members):
                continue
            writer.add(obj)
    for path in (xml, EXTRACTS["planet"][0]):
        theirs = ox.features_from_xml(path, tags={"building": True}).reset_index()
        theirs = theirs[theirs.geometry.geom_type.isin(["Polygon", "MultiPolygon"])]
        theirs.index = "osm:" + theirs.element + "/" + theirs.id.astype(str)
        raw = read_osm_file(path)
        mine = raw.set_index(_ids(raw))
        mine = mine[mine.geometry.notna()]
        common = theirs.index.intersection(mine.index)
        assert len(common) >= 0.9 * len(theirs)
        a = theirs.geometry.loc[common].to_crs(CRS).area
        b = mine.geometry.loc[common].to_crs(CRS).area
        np.testing.assert_allclose(b.to_numpy(), a.to_numpy(), rtol=1e-6)
        # what osmnx builds and mfa does not: only elements cut at the extract edge
        missing = theirs.index.difference(mine.index)
        assert set(raw.set_index(_ids(raw)).loc[missing, "problem"]) <= {CUT_AT_EDGE}


def test_kluuvi_parts_relations_and_min_level(rules) -> None:
    raw = read_osm_file(KLUUVI)
    b, dropped = normalise_osm(raw, "EPSG:3067", rules)
    reasons = dict(zip(dropped.record_id, dropped.reason, strict=True))
    # an old-style multipolygon: relation and outer way both tagged building=yes
    assert reasons["osm:way/122595213"].startswith("outer way of osm:relation/1688819")
    assert "osm:relation/1688819" in set(b.building_id)
    # building=university with building:levels=5, building:min_level=4 (the top floor of
    # the relation 1320784): merged into the relation, adding one floor over its area
    assert reasons["osm:way/89541314"].startswith("overlaps osm:relation/1320784")
    # objects tagged building and building:part inside an outline are parts of it
    both = raw[raw.building.notna() & raw["building:part"].notna() & raw.problem.isna()]
    assert len(both) >= 4
    for rid in _ids(both):
        assert reasons[rid].startswith(("building:part of", "overlaps"))
    assert not set(b.building_id) & {r for r, w in reasons.items() if "part" in w}


# --- hand-built outlines (EPSG:25832 metres: areas are exact) --------------------------


def _box(x0: float, y0: float, x1: float, y1: float) -> shapely.Polygon:
    return shapely.box(x0, y0, x1, y1)


def _raw(rows: list[dict]) -> gpd.GeoDataFrame:
    geom = [r.pop("geometry") for r in rows]
    df = pd.DataFrame(rows)
    df["osm_id"] = df["osm_id"].astype("int64")
    return gpd.GeoDataFrame(df, geometry=geom, crs=CRS)


def test_relation_and_its_outer_way_are_one_building(rules) -> None:
    outer = _box(0, 0, 20, 10)
    hole = _box(5, 2, 10, 8)
    raw = _raw(
        [
            {
                "element": "way",
                "osm_id": 1,
                "building": "house",
                "building:levels": "2",
                "outer_of": 7,
                "geometry": outer,
            },
            {
                "element": "relation",
                "osm_id": 7,
                "building": "house",
                "outer_of": None,
                "geometry": shapely.Polygon(outer.exterior, [hole.exterior]),
            },
        ]
    )
    b, dropped = normalise_osm(raw, CRS, rules)
    assert list(b.building_id) == ["osm:relation/7"]
    assert list(dropped.record_id) == ["osm:way/1"]
    # the way's levels fill the relation's (old-style tagging); the hole has no floors
    assert b.gfa_m2.iloc[0] == pytest.approx((200 - 30) * 2)
    assert b.floors_source.iloc[0] == "osm"


def test_part_with_min_level_adds_only_its_own_floors(rules) -> None:
    raw = _raw(
        [
            {
                "element": "way",
                "osm_id": 1,
                "building": "apartments",
                "building:levels": "2",
                "geometry": _box(0, 0, 10, 10),
            },
            {
                "element": "way",
                "osm_id": 2,
                "building:part": "yes",
                "building:levels": "8",
                "building:min_level": "6",
                "geometry": _box(0, 0, 5, 10),
            },
        ]
    )
    b, dropped = normalise_osm(raw, CRS, rules)
    assert list(b.building_id) == ["osm:way/1"]
    assert dropped.reason.iloc[0] == "building:part of osm:way/1: refines its floor area"
    # the part floats (min_level 6): the whole outline keeps its 2 floors below, the part
    # adds 8 - 6 = 2 floors over 50 m²
    assert b.gfa_m2.iloc[0] == pytest.approx(100 * 2 + 50 * 2)
    assert b.floors.iloc[0] == pytest.approx(3.0)


def test_roof_part_and_parts_from_height(rules) -> None:
    raw = _raw(
        [
            {"element": "way", "osm_id": 1, "building": "office", "geometry": _box(0, 0, 20, 10)},
            {
                "element": "way",
                "osm_id": 2,
                "building:part": "yes",
                "height": "9",
                "geometry": _box(0, 0, 10, 10),
            },
            {
                "element": "way",
                "osm_id": 3,
                "building:part": "roof",
                "min_height": "9",
                "height": "12",
                "geometry": _box(0, 0, 10, 10),
            },
            {
                "element": "way",
                "osm_id": 4,
                "building:part": "yes",
                "building:levels": "1",
                "geometry": _box(10, 0, 20, 10),
            },
        ]
    )
    b, _ = normalise_osm(raw, CRS, rules)
    storey = rules.height_classes.at["office", "storey_height_m"]  # the outline's class
    assert storey == 3.9
    assert b.gfa_m2.iloc[0] == pytest.approx(100 * round(9 / storey) + 0 + 100 * 1)
    assert b.floors_source.iloc[0] == "osm"  # every part tagged, the outline covered
    assert b.floors_rule.iloc[0] == "parts"
    assert b.height_m.isna().all()  # the spire's height is not the outline's


def test_dome_and_tower_parts_of_a_church_are_not_storeys(rules) -> None:
    """The issue's church: a dome part 39 m high became 13 floors at 3 m a storey. Parts
    of a church (and domes, towers) take the outline's floors, with a repair each."""
    raw = _raw(
        [
            {"element": "way", "osm_id": 1, "building": "church", "geometry": _box(0, 0, 40, 20)},
            {  # the dome over the crossing
                "element": "way",
                "osm_id": 2,
                "building:part": "yes",
                "roof:shape": "dome",
                "height": "39",
                "geometry": _box(0, 0, 20, 20),
            },
            {  # the bell tower: slender, and a tower
                "element": "way",
                "osm_id": 3,
                "building:part": "tower",
                "height": "60",
                "geometry": _box(36, 16, 40, 20),
            },
            {  # a side chapel of one tagged level
                "element": "way",
                "osm_id": 4,
                "building:part": "yes",
                "building:levels": "1",
                "geometry": _box(20, 0, 30, 10),
            },
        ]
    )
    repairs: list[pd.DataFrame] = []
    b, _ = normalise_osm(raw, CRS, rules, repairs)
    church = b.iloc[0]
    nr = rules.floors_by_function["NR"]
    assert church.function == "NR" and church.height_class == "worship"
    # every part one floor (the outline's default or its tag): the footprint once
    assert church.gfa_m2 == pytest.approx(800 * nr)
    rep = pd.concat(repairs)
    assert sorted(rep["detail"].str.split(":").str[:2].str.join(":")) == [
        "osm:way/2",
        "osm:way/3",
    ]
    assert (rep["record_id"] == "osm:way/1").all() and (rep["attribute"] == "floors").all()
    assert rep["reason"].str.contains("dome").any() and rep["reason"].str.contains("tower").any()


def test_both_tagged_alone_is_a_building_and_orphan_parts_are_reported(rules) -> None:
    raw = _raw(
        [
            {
                "element": "way",
                "osm_id": 1,
                "building": "yes",
                "building:part": "yes",
                "building:levels": "3",
                "geometry": _box(0, 0, 10, 10),
            },
            {
                "element": "way",
                "osm_id": 2,
                "building:part": "yes",
                "building:levels": "4",
                "geometry": _box(100, 0, 110, 10),
            },
            {
                "element": "node",
                "osm_id": 3,
                "building:part": "yes",
                "geometry": shapely.Point(50, 50),
            },
        ]
    )
    b, dropped = normalise_osm(raw, CRS, rules)
    assert list(b.building_id) == ["osm:way/1"]
    assert b.gfa_m2.iloc[0] == pytest.approx(300)
    reasons = dict(zip(dropped.record_id, dropped.reason, strict=True))
    assert reasons["osm:way/2"].startswith("building:part outside every building outline")
    assert reasons["osm:node/3"] == "building:part without a footprint polygon"


@settings(max_examples=40, deadline=None)
@given(
    levels=st.lists(st.integers(1, 30), min_size=1, max_size=6),
    outline_levels=st.one_of(st.none(), st.integers(1, 30)),
    min_level=st.integers(0, 5),
)
def test_ground_parts_tiling_an_outline_sum_their_floor_areas(
    rules, levels, outline_levels, min_level
) -> None:
    """Invariant: ground parts that tile the outline give Σ area × levels, whatever the
    outline says; a floating part on top adds (levels − min_level) over its area."""
    width = 7.0
    rows = [
        {
            "element": "way",
            "osm_id": 1,
            "building": "yes",
            "building:levels": None if outline_levels is None else str(outline_levels),
            "geometry": _box(0, 0, width * len(levels), 10),
        },
    ]
    for k, lv in enumerate(levels):
        rows.append(
            {
                "element": "way",
                "osm_id": 10 + k,
                "building:part": "yes",
                "building:levels": str(lv),
                "geometry": _box(width * k, 0, width * (k + 1), 10),
            }
        )
    top = min_level + 2
    rows.append(
        {
            "element": "way",
            "osm_id": 99,
            "building:part": "yes",
            "building:levels": str(top),
            "building:min_level": str(min_level),
            "geometry": _box(0, 0, width, 10),
        }
    )
    b, dropped = normalise_osm(_raw(rows), CRS, rules)
    assert len(b) == 1 and len(dropped) == len(rows) - 1
    expected = sum(width * 10 * lv for lv in levels) + width * 10 * (top - min_level)
    assert b.gfa_m2.iloc[0] == pytest.approx(expected)
    assert b.floors_source.iloc[0] == "osm"


def test_without_membership_the_overlap_rule_counts_a_relation_once(rules) -> None:
    """Online queries (osmnx) give no relation membership: the relation and its tagged outer
    way overlap over all of the way, so the way becomes a part; its floors are the same and
    its area outside the relation (the hole) is clipped away."""
    outer = _box(0, 0, 20, 10)
    hole = _box(5, 2, 10, 8)
    raw = _raw(
        [
            {
                "element": "way",
                "osm_id": 1,
                "building": "house",
                "building:levels": "2",
                "geometry": outer,
            },
            {
                "element": "relation",
                "osm_id": 7,
                "building": "house",
                "building:levels": "2",
                "geometry": shapely.Polygon(outer.exterior, [hole.exterior]),
            },
        ]
    )
    b, dropped = normalise_osm(raw, CRS, rules)
    assert list(b.building_id) == ["osm:relation/7"]
    assert dropped.reason.iloc[0].startswith("overlaps osm:relation/7")
    assert b.gfa_m2.iloc[0] == pytest.approx((200 - 30) * 2)


def test_a_self_intersecting_outline_still_takes_its_parts(rules) -> None:
    bowtie = shapely.Polygon([(0, 0), (10, 10), (10, 0), (0, 10)])  # invalid: crosses itself
    raw = _raw(
        [
            {"element": "way", "osm_id": 1, "building": "yes", "geometry": bowtie},
            {
                "element": "way",
                "osm_id": 2,
                "building:part": "yes",
                "building:levels": "3",
                "geometry": shapely.Polygon([(0, 0), (5, 5), (0, 10)]),
            },
        ]
    )
    b, dropped = normalise_osm(raw, CRS, rules)
    assert list(b.building_id) == ["osm:way/1"] and len(dropped) == 1
    assert np.isfinite(b.gfa_m2).all() and b.gfa_m2.iloc[0] >= 25 * 3


def test_a_building_way_is_not_dropped_as_the_outer_way_of_a_part(rules) -> None:
    outline = _box(0, 0, 20, 10)
    raw = _raw(
        [
            {
                "element": "way",
                "osm_id": 1,
                "building": "yes",
                "building:levels": "1",
                "outer_of": 7,
                "geometry": outline,
            },
            {
                "element": "relation",
                "osm_id": 7,
                "building:part": "yes",
                "building:levels": "4",
                "building:min_level": "1",
                "outer_of": None,
                "geometry": outline,
            },
        ]
    )
    b, dropped = normalise_osm(raw, CRS, rules)
    assert list(b.building_id) == ["osm:way/1"]
    assert dropped.reason.iloc[0] == "building:part of osm:way/1: refines its floor area"
    assert b.gfa_m2.iloc[0] == pytest.approx(200 * 1 + 200 * 3)

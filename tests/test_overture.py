"""Overture Maps buildings as a footprint source: reading, the area filter on the bbox
column, the class/subtype → function table, provenance, and accounting (every record read
is a building or a row of dropped.csv). Fixture: real OSM outlines of Helsinki in
Overture's schema, attributes derived from their tags (tests/data/overture_helsinki_kluuvi)."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from mfa.config import FootprintSource
from mfa.errors import InputDataError
from mfa.io.overture import buildings_from_overture, read_overture
from mfa.io.tables import load_archetype_rules
from tests.conftest import MODEL, ROOT, write_pipeline
from tests.pull_helpers import features, pipeline_file, service
from tests.pull_standin import Services

__all__ = ["features", "service"]  # fixtures, imported for pytest

FIXTURE = ROOT / "tests" / "data" / "overture_helsinki_kluuvi" / "buildings.parquet"
CRS = "EPSG:3067"
#: the south-west of the fixture (lon/lat), away from any outline's edge
AREA = (24.9470, 60.1689, 24.9496, 60.16995)


@pytest.fixture(scope="module")
def rules():
    return load_archetype_rules(ROOT / "config" / "archetypes")


def test_whole_file_every_record_a_building_with_its_class_floors_and_height(rules) -> None:
    b, dropped, counts = buildings_from_overture(FIXTURE, None, CRS, rules)
    ref = pq.read_table(FIXTURE).to_pandas().set_index("id")
    assert counts == {"rows": 16, "row_groups": 4, "row_groups_read": 4, "outside_area": 0}
    assert len(b) == 16 and dropped.empty
    b = b.set_index("building_id")
    # class (university, public, cathedral) → NR from the table; no class → unknown, imputed
    has_class = ref["class"].notna()
    assert (b.loc[has_class[has_class].index, "function"] == "NR").all()
    assert (b.loc[has_class[has_class].index, "function_rule"] == "tags").all()
    assert (b.loc[has_class[~has_class].index, "function_source"] == "imputed").all()
    # num_floors → floors (tags: the dataset is OpenStreetMap), GFA = area × floors
    floors = ref["num_floors"].dropna()
    assert (b.loc[floors.index, "floors"].astype(float) == floors).all()
    assert (b.loc[floors.index, "floors_rule"] == "tags").all()
    area = gpd.GeoSeries.from_wkb(ref.loc[floors.index, "geometry"], crs="OGC:CRS84").to_crs(CRS)
    gfa = b.loc[floors.index, "gfa_m2"].to_numpy()
    assert gfa == pytest.approx(area.area.to_numpy() * floors.to_numpy(), rel=1e-9)
    # height → height_m; the cathedral's 13 m
    height = ref["height"].dropna()
    assert (b.loc[height.index, "height_m"].astype(float) == height).all()
    assert (b.loc[height.index, "height_rule"] == "tags").all()
    assert (b.loc[ref.index.difference(height.index), "height_source"] == "missing").all()
    roof = ref["roof_height"].dropna()  # the cathedral's roof: 6.66 m
    assert len(roof) and (b.loc[roof.index, "roof_height_m"].astype(float) == roof).all()


def test_area_skips_row_groups_and_keeps_exactly_the_records_that_touch_it() -> None:
    raw, counts = read_overture(FIXTURE, AREA)
    # oracle: the outlines themselves (not the bbox column) that intersect the area
    every = gpd.read_parquet(FIXTURE)
    touching = every.geometry.envelope.intersects(shapely.box(*AREA))
    assert sorted(raw["building_id"]) == sorted(every.loc[touching, "id"])
    assert 0 < len(raw) < len(every)
    assert counts["row_groups_read"] < counts["row_groups"]  # row groups skipped unread
    assert counts["outside_area"] == len(every) - len(raw)


def _variant(tmp: Path, change) -> Path:
    t = pq.read_table(FIXTURE).to_pylist()
    t = change(t)
    schema = pq.read_schema(FIXTURE)
    if any("type" in r for r in t):
        schema = schema.append(pa.field("type", pa.string()))
        t = [{**r, "type": r.get("type", "building")} for r in t]
    out = tmp / "variant.parquet"
    table = pa.Table.from_pylist(t, schema=schema)
    pq.write_table(table, out, row_group_size=5)
    return out


def test_every_record_is_a_building_or_a_dropped_row_with_its_reason(tmp_path, rules) -> None:
    def change(rows: list[dict]) -> list[dict]:
        rows[0]["class"] = "carport"
        rows[1]["is_underground"] = True
        rows[2]["geometry"] = shapely.to_wkb(shapely.Point(24.95, 60.17))
        part = dict(rows[3], id="part-1", type="building_part")
        twin = dict(rows[4])  # the same id again
        return [*rows, part, twin]

    path = _variant(tmp_path, change)
    rows = pq.read_table(path).to_pylist()
    b, dropped, counts = buildings_from_overture(path, None, CRS, rules)
    assert counts["rows"] == 18 and len(b) + len(dropped) == 18
    reasons = dict(zip(dropped["record_id"], dropped["reason"], strict=True))
    assert reasons.pop(rows[0]["id"]).startswith("excluded carport: open structure")
    assert reasons.pop(rows[1]["id"]).startswith("underground")
    assert "Point, not a footprint polygon" in reasons.pop(rows[2]["id"])
    assert reasons.pop("part-1") == "Overture type building_part: not a building footprint"
    assert reasons.pop(rows[4]["id"]) == "duplicate id: the first was kept"
    assert reasons == {}
    assert b["building_id"].is_unique and rows[4]["id"] in set(b["building_id"])


def test_provenance_follows_the_dataset_of_each_property(tmp_path, rules) -> None:
    """Height from OSM (tags), floors and class from another provider (measured)."""

    def change(rows: list[dict]) -> list[dict]:
        rows[0].update(
            height=12.5,
            num_floors=4,
            subtype="residential",
            sources=[
                {"property": "", "dataset": "Esri Community Maps", "record_id": "x"},
                {"property": "/properties/height", "dataset": "OpenStreetMap", "record_id": "w1"},
            ],
        )
        return rows

    path = _variant(tmp_path, change)
    first = pq.read_table(path).to_pylist()[0]["id"]
    b, _, _ = buildings_from_overture(path, None, CRS, rules)
    row = b.set_index("building_id").loc[first]
    assert (row["height_m"], row["height_source"], row["height_rule"]) == (12.5, "osm", "tags")
    assert (row["floors"], row["floors_source"], row["floors_rule"]) == (4, "register", "measured")
    # no class: the subtype gives the function (residential → RM), from the provider
    assert (row["function"], row["function_source"]) == ("RM", "register")


def test_bad_files_and_keys_are_one_line_errors(tmp_path: Path) -> None:
    not_parquet = tmp_path / "b.parquet"
    not_parquet.write_text("id,geometry\n1,POINT(0 0)\n")
    with pytest.raises(InputDataError, match="not a Parquet file") as info:
        read_overture(not_parquet, None)
    assert "\n" not in str(info.value)
    no_bbox = tmp_path / "c.parquet"
    pq.write_table(pq.read_table(FIXTURE).drop_columns(["bbox"]), no_bbox)
    with pytest.raises(InputDataError, match=r"not an Overture buildings file .*missing: bbox"):
        read_overture(no_bbox, None)
    with pytest.raises(ValidationError, match="bbox goes with"):
        FootprintSource(file=FIXTURE, id_column="id", bbox=(0, 0, 1, 1))
    with pytest.raises(ValidationError, match="min lon, min lat"):
        FootprintSource(schema="overture", file=FIXTURE, bbox=(25, 60, 24, 61))
    with pytest.raises(ValidationError, match="give file"):
        FootprintSource(schema="overture", osm_file=FIXTURE)
    assert FootprintSource(schema="overture", file=FIXTURE).id_column == "id"


def test_a_run_reads_the_area_and_accounts_for_every_record_read(tmp_path: Path) -> None:
    from mfa.run import run_pipeline

    text = (
        f"""
name = "t-overture"
crs = "{CRS}"
[sources.footprints]
schema = "overture"
file = "{FIXTURE}"
bbox = {list(AREA)}
"""
        + MODEL
    )
    run = run_pipeline(write_pipeline(tmp_path, text), tmp_path / "out")
    manifest = json.loads((run / "run.json").read_text())
    raw, counts = read_overture(FIXTURE, AREA)
    layer = gpd.read_parquet(run / "buildings.parquet")
    dropped = (run / "dropped.csv").read_text().splitlines()[1:]
    assert len(layer) + len(dropped) == len(raw)
    assert set(layer["building_id"]) <= set(raw["building_id"])
    (over,) = (i["overture"] for i in manifest["inputs"] if "overture" in i)
    assert over == {**counts, "area_lonlat": list(AREA)}


def test_without_bbox_the_districts_extent_is_the_area(tmp_path: Path) -> None:
    """A district drawn over part of the fixture (EPSG:3067): only the records whose bbox
    meets the district's extent (in lon/lat) are read."""
    from mfa.run import run_pipeline

    district = gpd.GeoDataFrame(
        {"code": ["d1"]}, geometry=[shapely.box(*AREA)], crs="OGC:CRS84"
    ).to_crs(CRS)
    district.to_file(tmp_path / "districts.gpkg", layer="d")
    text = (
        f"""
name = "t-overture-districts"
crs = "{CRS}"
[sources.footprints]
schema = "overture"
file = "{FIXTURE}"
[sources.districts]
path = "{tmp_path / "districts.gpkg"}"
layer = "d"
id_column = "code"
"""
        + MODEL
    )
    run = run_pipeline(write_pipeline(tmp_path, text), tmp_path / "out")
    manifest = json.loads((run / "run.json").read_text())
    (over,) = (i["overture"] for i in manifest["inputs"] if "overture" in i)
    area = over["area_lonlat"]
    assert area == pytest.approx(list(AREA), abs=1e-4)  # the district's extent, round trip
    raw, counts = read_overture(FIXTURE, tuple(area))
    assert over == {**counts, "area_lonlat": area} and 0 < len(raw) < counts["rows"]
    layer = gpd.read_parquet(run / "buildings.parquet")
    dropped = (run / "dropped.csv").read_text().splitlines()[1:]
    assert len(layer) + len(dropped) == len(raw)


def test_an_overture_file_can_be_pulled_over_http_then_read(tmp_path: Path, service: str) -> None:
    """``url`` + ``protocol = "http"`` instead of ``file``: the pull stores the file as a
    snapshot and the reader reads the snapshot (stand-in: tests/pull_standin.py)."""
    from mfa.config import load_pipeline
    from mfa.pull import pull_pipeline
    from mfa.run.sources import _read_footprints

    Services.files = {"buildings.parquet": FIXTURE.read_bytes()}
    text = (
        f"""
name = "t-overture-pull"
crs = "{CRS}"
[sources.footprints]
schema = "overture"
url = "{{BASE}}/files/buildings.parquet"
protocol = "http"
bbox = {list(AREA)}
[cache]
dir = "{{CACHE}}"
"""
        + MODEL
    )
    path = pipeline_file(tmp_path, service, text)
    (rec,) = pull_pipeline(load_pipeline(path))
    assert rec["changed"] and rec["snapshot"]["path"].endswith(".parquet")
    p = load_pipeline(path)
    assert p.sources.footprints.file == Path(rec["snapshot"]["path"])
    inputs: list = []
    rules = load_archetype_rules(ROOT / "config" / "archetypes")
    b, dropped, _ = _read_footprints(p, rules, inputs, "2026-12-07")
    raw, counts = read_overture(FIXTURE, AREA)
    assert sorted(b["building_id"]) == sorted(raw["building_id"]) and dropped.empty
    assert inputs == [{"role": "footprints", "overture": {**counts, "area_lonlat": AREA}}]


@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_each_record_once_and_excluded_uses_exactly_those_left_out(rules, data) -> None:
    """Whatever the classes, subtypes, kinds and flags: buildings + left out = records,
    each id once; the uses with an excluded_reason are exactly the ones left out for it."""
    from mfa.buildings.overture import normalise_overture

    raw, _ = read_overture(FIXTURE, None)
    n = len(raw)
    values = [
        None,
        "unlisted_value",
        *rules.overture_function.index,
        *rules.overture_excluded.index,
    ]
    raw["class"] = data.draw(st.lists(st.sampled_from(values), min_size=n, max_size=n))
    raw["subtype"] = data.draw(st.lists(st.sampled_from(values), min_size=n, max_size=n))
    raw["is_underground"] = data.draw(st.lists(st.booleans(), min_size=n, max_size=n))
    raw["type"] = data.draw(
        st.lists(st.sampled_from(["building", "building_part"]), min_size=n, max_size=n)
    )
    b, dropped = normalise_overture(raw, CRS, rules)
    assert sorted([*b["building_id"], *dropped["record_id"]]) == sorted(raw["building_id"])
    listed = set(rules.overture_function.index) | set(rules.overture_excluded.index)
    pairs = zip(raw["class"], raw["subtype"], strict=True)
    use = [c if c in listed else (s if s is not None else c) for c, s in pairs]
    flags_ok = (raw["type"] == "building") & ~raw["is_underground"]
    excluded = {
        i for i, u, ok in zip(raw["building_id"], use, flags_ok, strict=True)
        if ok and u in set(rules.overture_excluded.index)
    }  # fmt: skip
    reasons = dict(zip(dropped["record_id"], dropped["reason"], strict=True))
    assert {i for i, r in reasons.items() if r.startswith("excluded ")} == excluded
    assert set(b["function"]) <= {"RS", "RM", "NR"}

"""profile = "auto" also chooses the RASMI region: that of the country the data lie in
(config/intensities/regions.csv), found by point in polygon in real country borders
(Natural Earth 1:50m, config/intensities/countries_ne50m.parquet), unless the pipeline
sets [intensities] region."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st

from mfa.config import load_pipeline
from mfa.errors import ConfigError
from mfa.io.location import (
    NEAREST_COUNTRY_KM,
    _country_tables,
    country_at,
    resolve_region,
)
from mfa.run import run_pipeline
from tests.conftest import SAMPLE, write_pipeline

HERE = Path(__file__).parent
ROOT = HERE.parent
INTENSITIES = ROOT / "config" / "intensities"

#: Places (lon, lat) and their country; border towns on both sides, islands, towns whose
#: centre the generalised coastline misses (the nearest country, within 10 km, decides).
PLACES = [
    ("Copenhagen", 12.57, 55.68, "DNK"),  # 0.3 km off the 1:50m coastline; Malmö 25 km
    ("Helsingør", 12.61, 56.03, "DNK"),  # 0.2 km from Denmark's outline, 4.7 from Sweden's
    ("Malmö", 13.0, 55.6, "SWE"),
    ("the Øresund, 2.1 km off Amager", 12.7, 55.6, "DNK"),
    ("the Øresund, 9.0 km off Skåne", 12.8, 55.55, "SWE"),
    ("Helsingborg", 12.69, 56.05, "SWE"),
    ("Aarhus", 10.2, 56.15, "DNK"),
    ("Odense (Funen)", 10.39, 55.4, "DNK"),
    ("Skagen", 10.58, 57.72, "DNK"),
    ("Rønne (Bornholm)", 14.7, 55.1, "DNK"),
    ("Nykøbing Falster", 11.87, 54.77, "DNK"),
    ("Flensburg", 9.43, 54.78, "DEU"),
    ("Hamburg", 10.0, 53.55, "DEU"),
    ("Gothenburg", 11.97, 57.7, "SWE"),
    ("Stockholm", 18.07, 59.33, "SWE"),
    ("Visby (Gotland)", 18.3, 57.64, "SWE"),
    ("Umeå", 20.26, 63.83, "SWE"),
    ("Kiruna", 20.22, 67.85, "SWE"),
    ("Oslo", 10.75, 59.91, "NOR"),
    ("Halden", 11.39, 59.12, "NOR"),  # 6.5 km from Sweden
    ("Bergen", 5.32, 60.39, "NOR"),
    ("Bodø", 14.4, 67.28, "NOR"),
    ("Narvik", 17.43, 68.44, "NOR"),
    ("Tromsø", 18.95, 69.65, "NOR"),
    ("Kirkenes", 30.05, 69.73, "NOR"),  # 12 km from Russia
    ("Helsinki", 24.94, 60.17, "FIN"),
    ("Vaasa", 21.6, 63.1, "FIN"),
    ("Tornio", 24.15, 65.85, "FIN"),  # 0.9 km from Sweden's Haparanda
    ("Mariehamn", 19.94, 60.1, "ALA"),
    ("Tallinn", 24.75, 59.44, "EST"),
    ("Delft", 4.36, 52.01, "NLD"),
    ("Maastricht", 5.69, 50.85, "NLD"),  # 3.4 km from Belgium
    ("Antwerp", 4.4, 51.22, "BEL"),
    ("Vaduz", 9.52, 47.14, "LIE"),
    ("Valletta", 14.51, 35.9, "MLT"),
    ("Aguascalientes", -102.27, 21.87, "MEX"),
    ("Oakland", -122.3, 37.81, "USA"),
    ("Suva (Fiji, across the antimeridian)", 178.44, -18.14, "FJI"),
    ("Anadyr (Chukotka: Russia's ring across the antimeridian)", 177.5, 64.73, "RUS"),
    # the sea, far from any country: none
    ("South Atlantic", -30.0, -30.0, None),
    ("North Sea, 100 km off Jutland", 6.5, 56.0, None),
]


@pytest.fixture(scope="module")
def tables():
    return _country_tables(INTENSITIES)


@pytest.mark.parametrize(("name", "lon", "lat", "iso3"), PLACES)
def test_the_borders_put_places_in_their_country(tables, name, lon, lat, iso3) -> None:
    hit = country_at(lon, lat, tables[1])
    assert (hit.iso3 if hit else None) == iso3, (name, hit)
    if hit is not None:
        assert 0 <= hit.distance_km <= NEAREST_COUNTRY_KM


def test_the_nearest_country_is_taken_only_within_the_tolerance(tables) -> None:
    borders = tables[1]
    hit = country_at(12.57, 55.68, borders)  # Copenhagen's centre: just off the coastline
    assert hit.iso3 == "DNK" and 0.1 < hit.distance_km < 1.0
    assert country_at(12.57, 55.68, borders, tolerance_km=0.1) is None
    assert country_at(10.39, 55.4, borders).distance_km == 0.0  # Odense: inside Funen


def test_every_country_owns_a_point_of_its_own_outline(tables) -> None:
    """The outlines do not overlap: a point on each outline's surface lies in that country
    alone (an antimeridian ring drawn the wrong way round would swallow others)."""
    borders = tables[1]
    pts = shapely.point_on_surface(borders.geometry)
    xy = shapely.get_coordinates(pts)
    owners = [np.flatnonzero(shapely.contains_xy(borders.geometry, x, y)) for x, y in xy]
    assert all(o.tolist() == [i] for i, o in enumerate(owners))
    assert len(borders.country) == 240  # Natural Earth 50m admin-0, Antarctica left out


def test_the_regions_are_rasmis_own(tables) -> None:
    """Every region is one of the intensity table's; every country RASMI's input data
    label on their own (tests/data/rasmi_buildings_v2_countries.csv, from RASMI's
    buildings_v2.xlsx) gets the same region from regions.csv (an independent oracle: the
    table was built from the SSP R32 country list)."""
    regions = tables[0].set_index("iso3")
    table = pd.read_csv(INTENSITIES / "rasmi_2024.csv", usecols=["region"])
    assert set(regions["rasmi_region"]) <= set(table["region"])
    rasmi = pd.read_csv(HERE / "data" / "rasmi_buildings_v2_countries.csv")
    names = {
        "UK": "United Kingdom",
        "USA": "United States of America",
        "New_Zealand": "New Zealand",
        "Korea": "South Korea",
        "Fiji Islands": "Fiji",
        "Scotland": "United Kingdom",
        "Hong Kong/China": "Hong Kong",
        "Macau": "Macao",
    }
    rasmi["country"] = rasmi["country"].replace(names)
    by_name = regions.reset_index().set_index("country")["rasmi_region"]
    single = rasmi[rasmi["country"].isin(by_name.index)]
    assert len(single) >= 40  # the aggregates ("Central European countries" …) drop out
    assert (single["rasmi_region"].to_numpy() == by_name[single["country"]].to_numpy()).all()
    # Norway: EFTA in RASMI's own data (33 records), no longer a guess
    assert regions.loc["NOR", "rasmi_region"] == "OECD_EFTA"
    assert "UNVERIFIED" not in regions.loc["NOR", "note"]
    assert set(regions.loc[["DNK", "SWE", "FIN", "ALA", "NLD", "DEU"], "rasmi_region"]) == {
        "OECD_EU15"
    }
    assert regions.loc["MEX", "rasmi_region"] == "LAM_MEX"
    # every country of the borders file with a region is in regions.csv, and no other
    assert set(regions.index) <= set(tables[1].iso3)


def _pipeline(tmp_path: Path, source: str, crs: str, region: str = "", profile="auto") -> Path:
    body = f"""
name = "auto"
crs = "{crs}"
{source}
[archetypes]
dir = "{ROOT}/config/archetypes"
{f'profile = "{profile}"' if profile else ""}
[intensities]
table = "{INTENSITIES}/rasmi_2024.csv"
{f'region = "{region}"' if region else ""}
"""
    return write_pipeline(tmp_path, body)


def _osm(path: Path) -> str:
    return f'[sources.footprints]\nosm_file = "{path}"'


HELSINKI = _osm(HERE / "data" / "helsinki_kluuvi.osm.pbf")
DK_SAMPLE = f'[sources.register]\npath = "{SAMPLE}/bbr_bygning_2020.parquet"'
DELFT = (
    f'[sources.footprints]\nfile = "{SAMPLE}/delft_bgt_pand.gpkg"\nlayer = "pand"\n'
    'id_column = "identificatiebagpnd"'
)


@pytest.mark.parametrize(
    ("name", "source", "crs", "iso3", "region", "how"),
    [
        ("dk-sample", DK_SAMPLE, "EPSG:25832", "DNK", "OECD_EU15", "is 7.4 km away"),
        ("Delft", DELFT, "EPSG:28992", "NLD", "OECD_EU15", "area of use of EPSG:28992"),
        (
            "German town",
            _osm(SAMPLE / "osm_planet_10.068_48.135_10.071_48.137.osm"),
            "EPSG:25832",
            "DEU",
            "OECD_EU15",
            "lies in Germany",
        ),
        (
            "Aguascalientes",
            _osm(SAMPLE / "osm_aguascalientes.osm.pbf"),
            "EPSG:32613",
            "MEX",
            "LAM_MEX",
            "lies in Mexico",
        ),
        ("Helsinki", HELSINKI, "EPSG:3067", "FIN", "OECD_EU15", "helsinki_kluuvi.osm.pbf"),
    ],
)
def test_the_region_of_real_samples(tmp_path, name, source, crs, iso3, region, how) -> None:
    p, rec = resolve_region(load_pipeline(_pipeline(tmp_path, source, crs)))
    assert (p.intensities.region, rec["iso3"], rec["requested"]) == (region, iso3, "auto")
    assert how in rec["country_from"], (name, rec["country_from"])


def test_an_explicit_region_always_wins_and_without_auto_one_is_needed(tmp_path: Path) -> None:
    path = _pipeline(tmp_path, HELSINKI, "EPSG:3067", "OECD_EFTA")
    p, rec = resolve_region(load_pipeline(path))
    assert p.intensities.region == "OECD_EFTA" and rec["requested"] == "OECD_EFTA"
    with pytest.raises(ConfigError, match=r"region is missing.*profile = \"auto\"") as err:
        load_pipeline(_pipeline(tmp_path, HELSINKI, "EPSG:3067", profile=""))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("polygon", "message"),
    [
        # the mid-Atlantic: no country within 10 km
        (
            "POLYGON((-30 -30, -29.9 -30, -29.9 -29.9, -30 -29.9, -30 -30))",
            r"lies in no country of countries_ne50m.parquet and none is within 10 km\); "
            r"set region",
        ),
        # Nuuk: a country the R32 list (and so regions.csv) gives no region
        (
            "POLYGON((-51.75 64.17, -51.7 64.17, -51.7 64.19, -51.75 64.19, -51.75 64.17))",
            r"the data lie in Greenland, which .*regions.csv gives no RASMI region.*set region",
        ),
    ],
)
def test_a_country_that_cannot_be_told_is_a_one_line_error(tmp_path, polygon, message) -> None:
    path = _pipeline(tmp_path, f'[sources.footprints]\npolygon_wkt = "{polygon}"', "EPSG:32625")
    with pytest.raises(ConfigError, match=message) as err:
        resolve_region(load_pipeline(path))
    assert "\n" not in str(err.value)


def test_an_auto_run_states_the_region_it_chose(tmp_path: Path) -> None:
    run = run_pipeline(_pipeline(tmp_path, HELSINKI, "EPSG:3067"), tmp_path / "out")
    manifest = json.loads((run / "run.json").read_text())
    reg = manifest["archetypes"]["intensities_region"]
    assert reg["region"] == "OECD_EU15" and reg["country"] == "Finland"
    assert manifest["intensities"]["region"] == "OECD_EU15"  # the region the tonnes used
    assert "warning" not in manifest["archetypes"]
    report = (run / "report.md").read_text()
    assert "RASMI region chosen from the data's location: OECD_EU15 (Finland" in report
    assert "lies in Finland (Natural Earth 1:50m borders)" in report
    # where the data lie, and their floor areas against Finland's statistic: Kluuvi's 4
    # houses have a median of 107.7 m² (Statistics Finland: 107.8 m² per dwelling, 2008)
    assert manifest["location"]["iso3"] == "FIN"
    (rs,) = manifest["floor_area_vs_statistics"]
    assert rs["function"] == "RS" and rs["buildings"] == 4
    assert rs["run_median_gfa_m2"] == pytest.approx(107.7, abs=0.05)
    assert "- floor area: RS median 108 m² over 4 buildings, ×1.00 the mean" in report
    # --if-changed: the run key is the file's (the chosen region is not in it) ...
    from mfa.incremental import unchanged_run

    path = tmp_path / "p.toml"
    assert unchanged_run(path, tmp_path / "out") == run.resolve()
    # ... and the tables that chose the region are among its inputs
    roles = {f.role for f in load_pipeline(path).input_files()}
    assert {"regions", "country_borders"} <= roles


def test_damaged_or_missing_country_tables(tmp_path: Path) -> None:
    """A damaged borders file or regions.csv is a one-line error naming the file; a
    custom intensity table without the borders beside it only leaves the location open."""
    import shutil

    from mfa.io.location import locate

    folder = tmp_path / "tables"
    folder.mkdir()
    shutil.copy(INTENSITIES / "rasmi_2024.csv", folder)
    path = _pipeline(tmp_path, HELSINKI, "EPSG:3067", "OECD_EU15")
    path.write_text(path.read_text().replace(str(INTENSITIES), str(folder)))
    loc = locate(load_pipeline(path))
    assert loc["iso3"] is None and "no countries_ne50m.parquet" in loc["how"]
    auto = _pipeline(tmp_path, HELSINKI, "EPSG:3067")
    auto.write_text(auto.read_text().replace(str(INTENSITIES), str(folder)))
    shutil.copy(INTENSITIES / "regions.csv", folder)
    (folder / "countries_ne50m.parquet").write_bytes(b"not parquet")
    with pytest.raises(ConfigError, match=r"countries_ne50m.parquet: cannot be read") as err:
        resolve_region(load_pipeline(auto))
    assert "\n" not in str(err.value)
    shutil.copy(INTENSITIES / "countries_ne50m.parquet", folder)
    text = (INTENSITIES / "regions.csv").read_text(encoding="utf-8")
    (folder / "regions.csv").write_text(text.replace("FIN,OECD_EU15", "FIN,"), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"regions.csv line \d+: fill country, iso3"):
        resolve_region(load_pipeline(auto))


@settings(max_examples=100, deadline=None)
@given(st.floats(12.55, 12.95), st.floats(55.4, 56.1))
def test_in_the_oresund_the_nearer_country_is_taken(tables, lon, lat) -> None:
    """Points in and around the Øresund (Copenhagen against Malmö): inside an outline,
    that country; else the nearer of Denmark and Sweden, as an independent geodesic
    oracle (pyproj.Geod to every vertex of the two outlines, densified) measures it. The
    distance to an outline is at most the distance to its nearest vertex."""
    from pyproj import Geod

    borders = tables[1]
    hit = country_at(lon, lat, borders)
    inside = [
        borders.iso3[i] for i in np.flatnonzero(shapely.contains_xy(borders.geometry, lon, lat))
    ]
    if inside:
        assert hit is not None and [hit.iso3] == inside and hit.distance_km == 0.0
        return
    geod = Geod(ellps="WGS84")
    vertex_km = {}
    for iso3 in ("DNK", "SWE"):
        # densified (0.01°, under ~1.1 km): the 1:50m outlines have edges of tens of km
        # along straight coasts, where the nearest vertex is far from the nearest point
        outline = shapely.segmentize(borders.geometry[borders.iso3 == iso3], 0.01)
        xy = shapely.get_coordinates(outline)
        xy = xy[(np.abs(xy[:, 0] - lon) < 1) & (np.abs(xy[:, 1] - lat) < 1)]
        _, _, m = geod.inv(np.full(len(xy), lon), np.full(len(xy), lat), xy[:, 0], xy[:, 1])
        vertex_km[iso3] = float(m.min()) / 1000
    if hit is None:
        assert min(vertex_km.values()) > NEAREST_COUNTRY_KM - 1e-6
        return
    # (+50 m: a densified vertex lies on the edge as drawn in degrees, mfa measures the
    # edge in a projection; they part by metres over a kilometre)
    assert hit.iso3 in vertex_km and hit.distance_km <= vertex_km[hit.iso3] + 0.05
    other = "SWE" if hit.iso3 == "DNK" else "DNK"
    # the densified vertices are at most ~1.1 km apart: a clear margin decides
    if abs(vertex_km[hit.iso3] - vertex_km[other]) > 3:
        assert vertex_km[hit.iso3] < vertex_km[other]

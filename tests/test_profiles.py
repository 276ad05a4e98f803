"""Regional profiles: the Netherlands profile, and ``profile = "auto"`` choosing a profile
from where the data lie (stated in run.json)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from mfa.config import load_pipeline
from mfa.errors import ConfigError
from mfa.io.location import (
    _read_borders,
    choose_profile,
    country_at,
    data_lonlat_box,
    profile_countries,
    resolve_profile,
)
from mfa.io.tables import load_archetype_rules
from mfa.run import run_pipeline
from tests.conftest import CONFIG, ROOT, SAMPLE, write_pipeline

HERE = Path(__file__).parent

# (lon, lat) of places on both sides of borders, and the profile they must get
PLACES = {
    "Amsterdam": (4.90, 52.37, "nl"),
    "Delft": (4.36, 52.01, "nl"),
    "Maastricht": (5.69, 50.85, "nl"),
    "Antwerp": (4.40, 51.22, None),
    "Copenhagen": (12.57, 55.68, None),
    "Aarhus": (10.20, 56.15, None),
    "Skagen": (10.59, 57.72, None),
    "Bornholm (Rønne)": (14.70, 55.10, None),
    "Hamburg": (9.99, 53.55, None),
    "Helsingør": (12.61, 56.03, None),
    "Malmö": (13.00, 55.60, "nordic"),
    "Halden": (11.39, 59.12, "nordic"),
    "Mariehamn (Åland)": (19.94, 60.10, "nordic"),
    "Tornio": (24.15, 65.85, "nordic"),
    "Kirkenes": (30.05, 69.73, "nordic"),
    "Gothenburg": (11.97, 57.71, "nordic"),
    "Oslo": (10.75, 59.91, "nordic"),
    "Stockholm": (18.07, 59.33, "nordic"),
    "Visby (Gotland)": (18.30, 57.64, "nordic"),
    "Helsinki": (24.94, 60.17, "nordic"),
    "Tromsø": (18.96, 69.65, "nordic"),
    "Tallinn": (24.75, 59.44, None),
    "Riga": (24.11, 56.95, None),
}


def test_auto_profile_countries_put_places_in_their_profile() -> None:
    countries = profile_countries(CONFIG / "archetypes")
    assert countries == {"nl": ["NLD"], "nordic": ["FIN", "ALA", "SWE", "NOR"]}
    borders = _read_borders(CONFIG / "intensities" / "countries_ne50m.parquet")
    got = {
        name: choose_profile(country_at(lon, lat, borders).iso3, countries)
        for name, (lon, lat, _) in PLACES.items()
    }
    assert got == {name: want for name, (_, _, want) in PLACES.items()}


def test_profile_boxes_of_old_files_are_a_one_line_error(tmp_path: Path) -> None:
    (tmp_path / "profile_x.toml").write_text("[auto]\nboxes = [[0, 0, 1, 1]]\n")
    with pytest.raises(ConfigError, match=r"profile_x.toml: \[auto\] boxes are no longer"):
        profile_countries(tmp_path)
    (tmp_path / "profile_x.toml").write_text('[auto]\ncountries = ["nl"]\n')
    with pytest.raises(ConfigError, match=r"alpha-3 codes"):
        profile_countries(tmp_path)


def test_the_netherlands_profile_is_cited_and_changes_only_its_tables() -> None:
    base = load_archetype_rules(CONFIG / "archetypes")
    nl = load_archetype_rules(CONFIG / "archetypes", "nl")
    assert nl.floors_by_function == {**base.floors_by_function, "RS": 2.0}
    assert nl.structure_by_function == base.structure_by_function
    text = (CONFIG / "archetypes" / "profile_nl.toml").read_text()
    assert "delft_3dfier_lod1_building_heights.csv" in text and "verify before" in text
    # the number it cites: the median height of the Delft houses is two storeys and a roof
    h = pd.read_csv(HERE / "data" / "delft_3dfier_lod1_building_heights.csv")
    assert h["height_above_ground"].median() == pytest.approx(8.32, abs=0.005)


def test_extent_from_metadata_without_reading_the_data(tmp_path: Path) -> None:
    def pipeline(body: str) -> object:
        text = (
            body
            + f"""
[archetypes]
dir = "{ROOT}/config/archetypes"
profile = "auto"
[intensities]
table = "{ROOT}/config/intensities/rasmi_2024.csv"
region = "OECD_EU15"
"""
        )
        return load_pipeline(write_pipeline(tmp_path, text))

    dk = pipeline(
        f'name = "dk"\ncrs = "EPSG:25832"\n[sources.register]\n'
        f'path = "{SAMPLE}/bbr_bygning_2020.parquet"\n'
    )
    box, how = data_lonlat_box(dk)
    assert "GeoParquet bbox" in how and 8 < box[0] < box[2] < 13 and 54.5 < box[1] < box[3] < 58
    assert resolve_profile(dk)[0] is None  # Denmark: the defaults
    # a footprint file in the Dutch national CRS: the CRS says where
    nl = pipeline(
        f'name = "nl"\ncrs = "EPSG:28992"\n[sources.footprints]\n'
        f'file = "{SAMPLE}/delft_bgt_pand.gpkg"\nlayer = "pand"\n'
        'id_column = "identificatiebagpnd"\n'
    )
    profile, record = resolve_profile(nl)
    assert profile == "nl" and "EPSG:28992" in record["extent_from"]
    # a UTM zone says nothing (it spans from the Alps to the Arctic)
    utm = pipeline(
        f'name = "u"\ncrs = "EPSG:25832"\n[sources.footprints]\n'
        f'file = "{SAMPLE}/delft_bgt_pand.gpkg"\nlayer = "pand"\n'
        'id_column = "identificatiebagpnd"\n'
    )
    assert resolve_profile(utm) == (
        None,
        {
            "requested": "auto",
            "extent_from": "unknown before reading the data",
            "profile": "default",
            "reason": "the data's location is not known",
        },
    )


def test_auto_run_on_a_helsinki_extract_uses_the_nordic_profile(tmp_path: Path) -> None:
    body = f"""
name = "helsinki"
crs = "EPSG:3067"
[sources.footprints]
osm_file = "{HERE}/data/helsinki_kluuvi.osm.pbf"
[archetypes]
dir = "{ROOT}/config/archetypes"
profile = "auto"
[intensities]
table = "{ROOT}/config/intensities/rasmi_2024.csv"
region = "OECD_EU15"
"""
    run = run_pipeline(write_pipeline(tmp_path, body), tmp_path / "out")
    manifest = json.loads((run / "run.json").read_text())
    arch = manifest["archetypes"]
    assert arch["profile"] == "nordic" and arch["requested"] == "auto"
    assert arch["rasmi_region"] == "OECD_EU15" and "warning" not in arch
    assert "helsinki_kluuvi.osm.pbf" in arch["extent_from"]
    lon, lat = arch["centre_lonlat"]
    assert 24.94 < lon < 24.96 and 60.16 < lat < 60.18
    b = pd.read_parquet(run / "buildings.parquet")
    rs = b[(b["function"] == "RS") & (b["structure_source"] == "imputed")]
    assert (rs["structure"] == "T").all()  # Nordic detached houses are timber
    assert (
        "regional profile chosen from the data's location: nordic"
        in (run / "report.md").read_text()
    )

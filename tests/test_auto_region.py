"""profile = "auto" also chooses the RASMI region: that of the country the data lie in
(config/intensities/regions.csv), unless the pipeline sets [intensities] region."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from mfa.config import load_pipeline
from mfa.errors import ConfigError
from mfa.io.location import _country_tables, country_at, resolve_region
from mfa.run import run_pipeline
from tests.conftest import write_pipeline

HERE = Path(__file__).parent
ROOT = HERE.parent
INTENSITIES = ROOT / "config" / "intensities"

#: Cities (lon, lat) and their country; border towns on both sides.
CITIES = [
    ("Copenhagen", 12.57, 55.68, "DNK"),
    ("Aarhus", 10.2, 56.15, "DNK"),
    ("Skagen", 10.58, 57.72, "DNK"),
    ("Rønne", 14.7, 55.1, "DNK"),
    ("Nykøbing Falster", 11.87, 54.77, "DNK"),
    ("Malmö", 13.0, 55.6, "SWE"),
    ("Helsingborg", 12.69, 56.05, "SWE"),
    ("Gothenburg", 11.97, 57.7, "SWE"),
    ("Stockholm", 18.07, 59.33, "SWE"),
    ("Umeå", 20.26, 63.83, "SWE"),
    ("Luleå", 22.15, 65.58, "SWE"),
    ("Kiruna", 20.22, 67.85, "SWE"),
    ("Oslo", 10.75, 59.91, "NOR"),
    ("Halden", 11.39, 59.12, "NOR"),
    ("Bergen", 5.32, 60.39, "NOR"),
    ("Trondheim", 10.4, 63.43, "NOR"),
    ("Bodø", 14.4, 67.28, "NOR"),
    ("Narvik", 17.43, 68.44, "NOR"),
    ("Tromsø", 18.95, 69.65, "NOR"),
    ("Helsinki", 24.94, 60.17, "FIN"),
    ("Kotka", 26.94, 60.47, "FIN"),
    ("Vaasa", 21.6, 63.1, "FIN"),
    ("Oulu", 25.47, 65.01, "FIN"),
    ("Rovaniemi", 25.73, 66.5, "FIN"),
    ("Mariehamn", 19.94, 60.1, "FIN"),
    ("Delft", 4.36, 52.01, "NLD"),
    ("Maastricht", 5.69, 50.85, "NLD"),
    # left out rather than guessed: next to a border no box can draw
    ("Tornio", 24.15, 65.85, None),
    ("Kirkenes", 30.05, 69.73, None),
    ("Hamburg", 10.0, 53.55, None),
]


@pytest.mark.parametrize(("name", "lon", "lat", "iso3"), CITIES)
def test_the_country_boxes_put_cities_in_their_country(name, lon, lat, iso3) -> None:
    _, boxes = _country_tables(INTENSITIES)
    assert country_at(lon, lat, boxes) == iso3, name


def test_every_boxed_country_has_a_rasmi_region_of_the_table() -> None:
    regions, boxes = _country_tables(INTENSITIES)
    table = pd.read_csv(INTENSITIES / "rasmi_2024.csv", usecols=["region"])
    assert set(regions["rasmi_region"]) <= set(table["region"])
    assert set(boxes["iso3"]) <= set(regions["iso3"])
    assert regions.set_index("iso3").loc["NOR", "rasmi_region"] == "OECD_EFTA"
    assert "UNVERIFIED" in regions.set_index("iso3").loc["NOR", "note"]


def _helsinki(tmp_path: Path, crs: str, region: str = "", profile: str = "auto") -> Path:
    body = f"""
name = "helsinki"
crs = "{crs}"
[sources.footprints]
osm_file = "{HERE}/data/helsinki_kluuvi.osm.pbf"
[archetypes]
dir = "{ROOT}/config/archetypes"
{f'profile = "{profile}"' if profile else ""}
[intensities]
table = "{INTENSITIES}/rasmi_2024.csv"
{f'region = "{region}"' if region else ""}
"""
    return write_pipeline(tmp_path, body)


def test_the_region_comes_from_a_national_crs_or_the_data_centre(tmp_path: Path) -> None:
    p, rec = resolve_region(load_pipeline(_helsinki(tmp_path, "EPSG:3067")))
    assert p.intensities.region == "OECD_EU15"
    assert rec["country"] == "Finland" and rec["requested"] == "auto"
    assert "area of use of EPSG:3067" in rec["country_from"]
    # a UTM zone names no country: the centre of the extract's header box does
    p, rec = resolve_region(load_pipeline(_helsinki(tmp_path, "EPSG:25835")))
    assert (p.intensities.region, rec["country"]) == ("OECD_EU15", "Finland")
    assert "helsinki_kluuvi.osm.pbf" in rec["country_from"]


def test_an_explicit_region_always_wins_and_without_auto_one_is_needed(tmp_path: Path) -> None:
    p, rec = resolve_region(load_pipeline(_helsinki(tmp_path, "EPSG:3067", "OECD_EFTA")))
    assert p.intensities.region == "OECD_EFTA" and rec["requested"] == "OECD_EFTA"
    with pytest.raises(ConfigError, match=r"region is missing.*profile = \"auto\"") as err:
        load_pipeline(_helsinki(tmp_path, "EPSG:3067", profile=""))
    assert "\n" not in str(err.value)


def test_a_country_that_cannot_be_told_is_a_one_line_error(tmp_path: Path) -> None:
    path = _helsinki(tmp_path, "EPSG:25832")  # a town in southern Germany: no box
    path.write_text(
        path.read_text().replace(
            f"{HERE}/data/helsinki_kluuvi.osm.pbf",
            f"{ROOT}/geodata/sample/osm_planet_10.068_48.135_10.071_48.137.osm",
        )
    )
    with pytest.raises(ConfigError, match=r"region is not set.*set region") as err:
        resolve_region(load_pipeline(path))
    assert "\n" not in str(err.value)


def test_an_auto_run_states_the_region_it_chose(tmp_path: Path) -> None:
    run = run_pipeline(_helsinki(tmp_path, "EPSG:3067"), tmp_path / "out")
    manifest = json.loads((run / "run.json").read_text())
    reg = manifest["archetypes"]["intensities_region"]
    assert reg["region"] == "OECD_EU15" and reg["country"] == "Finland"
    assert manifest["intensities"]["region"] == "OECD_EU15"  # the region the tonnes used
    assert "warning" not in manifest["archetypes"]
    report = (run / "report.md").read_text()
    assert "RASMI region chosen from the data's location: OECD_EU15 (Finland" in report
    # --if-changed: the run key is the file's (the chosen region is not in it) ...
    from mfa.incremental import unchanged_run

    path = tmp_path / "p.toml"
    assert unchanged_run(path, tmp_path / "out") == run.resolve()
    # ... and the tables that chose the region are among its inputs
    roles = {f.role for f in load_pipeline(path).input_files()}
    assert {"regions", "country_boxes"} <= roles

from __future__ import annotations

from pathlib import Path

import pytest

from mfa.config import load_pipeline
from mfa.errors import ConfigError, InputNotFoundError
from tests.conftest import ROOT, write_pipeline

GOOD = """
name = "x"
crs = "EPSG:25832"
[sources.footprints]
osm_file = "{ROOT}/geodata/sample/osm_planet_10.068_48.135_10.071_48.137.osm"
[archetypes]
dir = "{ROOT}/config/archetypes"
[intensities]
table = "{ROOT}/config/intensities/rasmi_2024.csv"
region = "OECD_EU15"
"""


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "pipelines").glob("*.toml")))
def test_shipped_pipelines_are_valid(name: str) -> None:
    p = load_pipeline(ROOT / "pipelines" / name)
    assert p.name == name.removesuffix(".toml")
    assert p.archetypes.dir.is_dir()


def test_relative_paths_resolve_against_the_pipeline_file(tmp_path: Path) -> None:
    p = load_pipeline(ROOT / "pipelines" / "dk-sample.toml")
    assert p.sources.register_ is not None
    assert p.sources.register_.path == ROOT / "geodata" / "sample" / "bbr_bygning_2020.parquet"


def test_typo_names_file_key_and_suggestion(tmp_path: Path) -> None:
    f = write_pipeline(tmp_path, GOOD.replace("region =", "regoin ="))
    with pytest.raises(ConfigError) as e:
        load_pipeline(f)
    msg = str(e.value)
    assert str(f) in msg
    assert "intensities.regoin" in msg
    assert "did you mean 'region'" in msg


def test_typo_in_aliased_table_key(tmp_path: Path) -> None:
    body = GOOD.replace("[sources.footprints]", "[sources.registr]\npath='x'\n[sources.footprints]")
    with pytest.raises(ConfigError, match=r"sources\.registr.*did you mean 'register'"):
        load_pipeline(write_pipeline(tmp_path, body))


def test_wrong_type(tmp_path: Path) -> None:
    body = GOOD + "[compute]\nbatch_rows = 'many'\n"
    with pytest.raises(ConfigError, match=r"compute\.batch_rows.*integer"):
        load_pipeline(write_pipeline(tmp_path, body))


def test_geographic_crs_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a projected CRS"):
        load_pipeline(write_pipeline(tmp_path, GOOD.replace("EPSG:25832", "EPSG:4326")))


def test_missing_file_names_key(tmp_path: Path) -> None:
    body = GOOD.replace("osm_planet_10.068_48.135_10.071_48.137.osm", "nope.osm")
    with pytest.raises(InputNotFoundError, match=r"sources\.footprints\.osm_file.*nope\.osm"):
        load_pipeline(write_pipeline(tmp_path, body))


def test_missing_pipeline_file(tmp_path: Path) -> None:
    with pytest.raises(InputNotFoundError, match="pipeline file not found"):
        load_pipeline(tmp_path / "absent.toml")


def test_bad_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_pipeline(write_pipeline(tmp_path, GOOD + "\n[oops\n"))


def test_bad_cron_and_timezone(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"schedule\.cron"):
        load_pipeline(write_pipeline(tmp_path, GOOD + "[schedule]\ncron = '61 * * * *'\n"))
    body = GOOD + "[schedule]\ncron = '0 2 * * *'\ntimezone = 'Mars/Olympus'\n"
    with pytest.raises(ConfigError, match=r"schedule\.timezone"):
        load_pipeline(write_pipeline(tmp_path, body))


def test_needs_a_building_source(tmp_path: Path) -> None:
    body = "\n".join(
        line for line in GOOD.splitlines() if "footprints" not in line and "osm_file" not in line
    )
    body = body.replace('crs = "EPSG:25832"', 'crs = "EPSG:25832"\n[sources]')
    with pytest.raises(ConfigError, match=r"add a \[sources\.register\]"):
        load_pipeline(write_pipeline(tmp_path, body))


def test_unknown_scheduler(tmp_path: Path) -> None:
    body = GOOD + "[compute]\nscheduler = 'gpu'\n"
    with pytest.raises(ConfigError, match="local-cluster"):
        load_pipeline(write_pipeline(tmp_path, body))


def test_bad_name(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="key 'name'"):
        load_pipeline(write_pipeline(tmp_path, GOOD.replace('name = "x"', 'name = "Bad Name"')))

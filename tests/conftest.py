from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"
SAMPLE = ROOT / "geodata" / "sample"
CONFIG = ROOT / "config"


@pytest.fixture(scope="session")
def rules():
    from mfa.io.tables import load_archetype_rules

    return load_archetype_rules(CONFIG / "archetypes")


@pytest.fixture(scope="session")
def materials() -> list[str]:
    from mfa.io.tables import load_materials

    return load_materials(CONFIG / "materials.toml")


#: The model tables of a pipeline file, for tests that write their own sources.
MODEL = """
[archetypes]
dir = "{ROOT}/config/archetypes"
[intensities]
table = "{ROOT}/config/intensities/rasmi_2024.csv"
region = "OECD_EU15"
"""


def write_pipeline(tmp: Path, body: str, name: str = "p.toml") -> Path:
    """A pipeline file in ``tmp`` whose {ROOT} placeholders point at the repository."""
    path = tmp / name
    path.write_text(body.replace("{ROOT}", str(ROOT)))
    return path


BBR_PIPELINE = """
name = "t-bbr"
crs = "EPSG:25832"
[sources.register]
path = "{REGISTER}"
[sources.districts]
path = "{ROOT}/geodata/sample/dagi_sogne_2014_sample.gpkg"
layer = "sogne"
id_column = "SOGNEKODE"
name_column = "SOGNENAVN"
[archetypes]
dir = "{ROOT}/config/archetypes"
[intensities]
table = "{ROOT}/config/intensities/rasmi_2024.csv"
region = "OECD_EU15"
[compute]
scheduler = "{SCHEDULER}"
batch_rows = {BATCH_ROWS}
"""


@pytest.fixture
def bbr_pipeline(tmp_path: Path):
    """Factory: a BBR pipeline file for a register file, scheduler, batch size, workers."""

    def make(
        register: Path = SAMPLE / "bbr_bygning_2020.parquet",
        scheduler: str = "threads",
        batch_rows: int = 100_000,
        name: str = "p.toml",
        workers: int | None = None,
    ) -> Path:
        body = (
            BBR_PIPELINE.replace("{REGISTER}", str(register))
            .replace("{SCHEDULER}", scheduler)
            .replace("{BATCH_ROWS}", str(batch_rows))
        )
        if workers is not None:
            body += f"workers = {workers}\n"
        return write_pipeline(tmp_path, body, name)

    return make


@pytest.fixture(scope="session")
def dk_sample_run(tmp_path_factory) -> Path:
    """One published run of pipelines/dk-sample.toml for every test that only reads it."""
    from mfa.run import run_pipeline

    return run_pipeline(ROOT / "pipelines" / "dk-sample.toml", tmp_path_factory.mktemp("dk"))


@pytest.fixture(scope="session")
def prefect_harness(tmp_path_factory):
    """Prefect's test harness (a temporary local API), started once per session."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


@pytest.fixture
def sample_copy(tmp_path: Path) -> Path:
    """A copy of the repository's pipelines/config/geodata in tmp (for CLI runs)."""
    for d in ("pipelines", "config", "geodata"):
        shutil.copytree(ROOT / d, tmp_path / d, ignore=shutil.ignore_patterns("cache"))
    return tmp_path

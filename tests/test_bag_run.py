"""The Dutch BAG pipeline end to end: `mfa run` pulls pand and verblijfsobject from a
loopback OGC API – Features stand-in (the shape of PDOK's BAG v2) and estimates the stock.

The fixture is real Delft footprints with synthetic BAG attributes
(tests/data/bag_delft_synthetic/README.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import pandas as pd
import pytest

from mfa.config import load_pipeline
from mfa.errors import ConfigError, InputDataError
from tests.conftest import DATA, MODEL, ROOT, write_pipeline
from tests.pull_helpers import features, pipeline_file, service
from tests.pull_standin import Services

__all__ = ["features", "service"]  # fixtures, imported for pytest

FIXTURE = DATA / "bag_delft_synthetic"

BAG_PIPELINE = (
    """
name = "t-bag"
crs = "EPSG:28992"
[sources.register]
schema = "bag"
url = "{BASE}/ogc"
protocol = "oapif"
collection = "pand"
page_size = {PAGE}
id_field = "identificatie"
required_fields = ["identificatie", "bouwjaar", "status"]
filters = { crs = "{CRS}" }
[sources.units]
url = "{BASE}/ogc"
protocol = "oapif"
collection = "verblijfsobject"
page_size = {PAGE}
id_field = "identificatie"
required_fields = ["identificatie", "status", "gebruiksdoel", "oppervlakte", "pand.href"]
filters = { crs = "{CRS}" }
[cache]
dir = "{CACHE}"
"""
    + MODEL
)


def _collection(name: str) -> list[dict]:
    return json.loads((FIXTURE / f"{name}.geojson").read_text())["features"]


@pytest.fixture
def bag_service(service: str) -> str:
    Services.collections = {n: _collection(n) for n in ("pand", "verblijfsobject")}
    return service


def _oracle(rules) -> tuple[set[str], float]:
    """From the GeoJSON alone, unit by unit: the panden kept and the usable m² counted."""
    pand = _collection("pand")
    kept = {
        f["id"]: f["properties"]["identificatie"]
        for f in pand
        if f["properties"]["status"] in set(rules.bag.pand_kept)
    }
    usable = 0.0
    for f in _collection("verblijfsobject"):
        p = f["properties"]
        if p["status"] not in set(rules.bag.unit_kept) or not (p["oppervlakte"] or 0) > 0:
            continue
        if any(h.rsplit("/", 1)[-1] in kept for h in p["pand.href"]):
            usable += p["oppervlakte"]
    return set(kept.values()), usable


def test_mfa_run_pulls_bag_from_a_loopback_oapif_and_accounts_for_every_record(
    tmp_path: Path, bag_service: str, rules
) -> None:
    pipeline = pipeline_file(tmp_path, bag_service, BAG_PIPELINE, page=40)
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}:{ROOT}"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mfa.cli",
            "run",
            str(pipeline),
            "-o",
            str(tmp_path / "out"),
            "--no-prefect",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run = tmp_path / "out" / "t-bag" / "latest"
    manifest = json.loads((run / "run.json").read_text())
    pulled = {r["role"]: r for r in manifest["pulled"]}
    assert pulled["register"]["rows"] == 160 and pulled["units"]["rows"] == 226
    # pages of 40: 4 + 6 requests, each page once
    assert (pulled["register"]["requests"], pulled["units"]["requests"]) == (4, 6)
    rc = manifest["row_counts"]
    assert rc["records_read"] == 160 + 226
    assert rc["buildings"] + rc["dropped"] + rc["counted_in_buildings"] == 386
    buildings = gpd.read_parquet(run / "buildings.parquet")
    kept, usable = _oracle(rules)
    assert set(buildings["building_id"]) == kept
    from_units = buildings["gfa_source"] == "register"
    assert buildings.loc[from_units, "gfa_m2"].sum() == pytest.approx(
        usable * rules.bag.gross_per_usable, rel=1e-9
    )
    assert set(buildings["function"]) == {"RS", "RM", "NR"}
    assert manifest["totals_t"]["mass_t"] > 0
    dropped = pd.read_csv(run / "dropped.csv", dtype=str)
    assert set(dropped["stage"]) == {"register", "units"}
    assert dropped["reason"].str.len().min() > 5
    assert {i["role"] for i in manifest["inputs"]} >= {"register", "units"}


def test_a_renamed_bag_field_is_one_line_naming_the_file_and_the_field(
    tmp_path: Path, rules
) -> None:
    doc = json.loads((FIXTURE / "verblijfsobject.geojson").read_text())
    for f in doc["features"]:
        f["properties"]["oppervlak"] = f["properties"].pop("oppervlakte")
    units = tmp_path / "vbo.geojson"
    units.write_text(json.dumps(doc))
    text = (
        f'name = "t"\ncrs = "EPSG:28992"\n[sources.register]\nschema = "bag"\n'
        f'path = "{FIXTURE / "pand.geojson"}"\n[sources.units]\npath = "{units}"\n' + MODEL
    )
    p = load_pipeline(write_pipeline(tmp_path, text))
    from mfa.io.bag import read_bag

    with pytest.raises(InputDataError) as info:
        read_bag(p.sources.register_, p.sources.units, p.crs)
    msg = str(info.value)
    assert "\n" not in msg and "vbo.geojson" in msg and "'oppervlak' for 'oppervlakte'" in msg


@pytest.mark.parametrize(
    ("tables", "message"),
    [
        ('[sources.register]\nschema = "bag"\npath = "{P}"\n', "needs \\[sources.units\\]"),
        ('[sources.register]\npath = "{P}"\n[sources.units]\npath = "{U}"\n', "goes with a BAG"),
        (
            '[sources.register]\nschema = "bag"\npath = "{P}"\n[sources.units]\npath = "{U}"\n'
            '[sources.footprints]\nfile = "{P}"\nid_column = "identificatie"\n',
            "carries its footprints",
        ),
    ],
)
def test_bag_source_tables_are_checked_on_load(tmp_path: Path, tables: str, message: str) -> None:
    body = tables.replace("{P}", str(FIXTURE / "pand.geojson")).replace(
        "{U}", str(FIXTURE / "verblijfsobject.geojson")
    )
    text = 'name = "t"\ncrs = "EPSG:28992"\n' + body + MODEL
    with pytest.raises(ConfigError, match=message):
        load_pipeline(write_pipeline(tmp_path, text))


@pytest.mark.prefect
@pytest.mark.slow
def test_the_flow_pulls_each_source_in_its_own_task_with_progress(
    prefect_harness, tmp_path: Path, bag_service: str
) -> None:
    from flows.pipeline import mfa_pipeline
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    pipeline = pipeline_file(tmp_path, bag_service, BAG_PIPELINE, page=40)
    state = mfa_pipeline(str(pipeline), str(tmp_path / "out"), return_state=True)
    assert state.is_completed(), state
    run_filter = FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id]))
    with get_client(sync_client=True) as client:
        names = {t.name for t in client.read_task_runs(flow_run_filter=run_filter)}
        keys = {a.key for a in client.read_artifacts(flow_run_filter=run_filter)}
    assert {"pull sources.register", "pull sources.units"} <= names
    assert {"mfa-progress-pull-register", "mfa-progress-pull-units"} <= keys
    manifest = json.loads((Path(state.result()) / "run.json").read_text())
    assert [r["role"] for r in manifest["pulled"]] == ["register", "units"]
    assert manifest["row_counts"]["records_read"] == 386


def test_a_bag_register_takes_raster_heights_for_its_floors(tmp_path: Path, rules) -> None:
    """The BAG outlines are footprints: the one heights rule (mfa.buildings.quality) sets
    their floors (BAG has no storey count); the floor area stays the units'."""
    from mfa.run import run_pipeline

    text = (
        f'name = "t-bag-heights"\ncrs = "EPSG:28992"\n[sources.register]\nschema = "bag"\n'
        f'path = "{FIXTURE / "pand.geojson"}"\n[sources.units]\n'
        f'path = "{FIXTURE / "verblijfsobject.geojson"}"\n[sources.heights]\n'
        f'ndsm = "{ROOT / "geodata" / "sample" / "delft_ahn3_ndsm_0p5m.tif"}"\n' + MODEL
    )
    run = run_pipeline(write_pipeline(tmp_path, text), tmp_path / "out")
    b = gpd.read_parquet(run / "buildings.parquet")
    raster = b["height_source"] == "raster"
    assert raster.mean() > 0.9
    assert (b.loc[raster, "floors_source"] == "raster").all()
    _, usable = _oracle(rules)
    from_units = b["gfa_source"] == "register"
    assert b.loc[from_units, "gfa_m2"].sum() == pytest.approx(
        usable * rules.bag.gross_per_usable, rel=1e-9
    )

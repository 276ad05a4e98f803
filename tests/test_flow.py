"""The Prefect flow, for real, on Prefect's test harness (a temporary local API)."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import pandas as pd
import pytest

from mfa.errors import InputDataError
from mfa.run import run_pipeline
from tests.conftest import DATA, ROOT

pytestmark = [pytest.mark.prefect, pytest.mark.slow]


def test_flow_gives_the_same_layers_as_the_plain_runner(prefect_harness, tmp_path: Path) -> None:
    """dk-sample with the GeoPackage's buildings layer written by its own process, which
    the stocks task starts and the qgis task waits for (tests/test_gpkg_process.py)."""
    from flows.pipeline import mfa_pipeline

    from tests.test_gpkg_process import child_pipeline, gpkg_content, writers

    pipeline = str(child_pipeline(tmp_path))
    state = mfa_pipeline(pipeline, str(tmp_path / "prefect"), return_state=True)
    assert state.is_completed()
    with_prefect = Path(state.result())
    plain = run_pipeline(pipeline, tmp_path / "plain")
    for layer in ("buildings.parquet", "districts.parquet"):
        pd.testing.assert_frame_equal(
            gpd.read_parquet(with_prefect / layer), gpd.read_parquet(plain / layer)
        )
    manifest = json.loads((with_prefect / "run.json").read_text())
    assert manifest["runner"] == "prefect"
    # the qgis task ran too: the same GeoPackage layers, styles and project
    assert manifest["checks"]["geopackage"]["status"] == "passed"
    plain_manifest = json.loads((plain / "run.json").read_text())
    assert manifest["qgis"] == plain_manifest["qgis"]
    assert manifest["compute"]["engine"]["geopackage"]["buildings_layer"] == "separate process"
    assert gpkg_content(with_prefect / "layers.gpkg") == gpkg_content(plain / "layers.gpkg")
    assert not writers(tmp_path)
    assert all(
        (with_prefect / f).is_file()
        for f in ("layers.gpkg", "project.qgs", *manifest["qgis"]["styles"])
    )
    assert (tmp_path / "prefect" / "dk-sample" / "latest").resolve() == with_prefect.resolve()


def test_flow_failure_publishes_nothing(prefect_harness, bbr_pipeline, tmp_path: Path) -> None:
    from flows.pipeline import mfa_pipeline

    bad = tmp_path / "bad.csv"
    df = pd.read_csv(DATA / "bbr_kalundborg_60.csv", dtype=str)
    df.loc[0, "byg041BebyggetAreal"] = "n/a"
    df.to_csv(bad, index=False)
    state = mfa_pipeline(str(bbr_pipeline(register=bad)), str(tmp_path / "out"), return_state=True)
    assert state.is_failed()
    with pytest.raises(InputDataError, match="byg041BebyggetAreal = 'n/a'"):
        state.result()
    assert not (tmp_path / "out" / "t-bbr" / "latest").exists()
    assert not (tmp_path / "out" / "t-bbr" / ".work").exists()


def test_tasks_pass_paths(prefect_harness, tmp_path: Path) -> None:
    from flows import pipeline as f

    work = f.prepare.fn(str(ROOT / "pipelines" / "osm-sample.toml"), str(tmp_path))
    assert isinstance(work, str) and Path(work).is_dir()
    staged = f.TASKS["buildings"].fn(work)
    assert isinstance(staged, str) and Path(staged).is_dir()
    layer = f.TASKS["stocks"].fn(work)
    assert layer.endswith("buildings.parquet") and Path(layer).exists()
    # one task per step of the plain runner, in its order
    from mfa.run import STEPS

    assert list(f.TASKS) == [s.name for s in STEPS]


def test_scheduled_flow_skips_unchanged_runs(prefect_harness, tmp_path: Path) -> None:
    from flows.pipeline import mfa_pipeline

    pipeline = str(ROOT / "pipelines" / "osm-sample.toml")
    first = mfa_pipeline(pipeline, str(tmp_path), force=False)
    second = mfa_pipeline(pipeline, str(tmp_path), force=False)
    assert Path(first).resolve() == Path(second).resolve()
    runs = [p for p in (tmp_path / "osm-sample").iterdir() if p.name[0].isdigit()]
    assert len(runs) == 1


def test_flow_publishes_a_report_artifact(prefect_harness, tmp_path: Path) -> None:
    from flows.pipeline import mfa_pipeline
    from prefect.client.orchestration import get_client

    run_dir = Path(mfa_pipeline(str(ROOT / "pipelines" / "osm-sample.toml"), str(tmp_path)))
    assert (run_dir / "report.md").exists()

    async def artifacts_of(key: str):
        from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

        async with get_client() as client:
            return await client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key]))
            )

    import asyncio

    artifacts = asyncio.run(artifacts_of("mfa-osm-sample"))
    assert artifacts and "# mfa run" in artifacts[-1].data
    # the engine's steps show their progress, up to 100 %
    for step in ("buildings", "stocks"):
        progress = asyncio.run(artifacts_of(f"mfa-progress-{step}"))
        assert any(float(a.data) == 100.0 for a in progress), step


def test_only_transient_failures_are_retried() -> None:
    from flows.pipeline import retry_if_transient
    from prefect.states import Failed

    from mfa.errors import InputDataError, TransientFetchError

    assert retry_if_transient(None, None, Failed(data=TransientFetchError("HTTP 429")))
    assert not retry_if_transient(None, None, Failed(data=InputDataError("bad file")))

"""Pulling with the paged protocols beyond OGC API: WFS 2.0 and Datafordeler GraphQL, and
the nightly path through a Prefect flow, against loopback stand-ins."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import pandas as pd
import pytest

from mfa.config import load_pipeline
from mfa.errors import ConfigError, PullError
from mfa.pull import pull_pipeline
from tests.conftest import MODEL
from tests.pull_helpers import (
    KALUNDBORG,
    OAPIF_PIPELINE,
    features,
    files_under,
    pipeline_file,
    service,
    snapshot_bytes,
    snapshots_in,
)
from tests.pull_standin import Services

__all__ = ["features", "service"]  # fixtures, imported for pytest

WFS_PIPELINE = (
    """
name = "t-pull-wfs"
crs = "EPSG:28992"
[sources.footprints]
url = "{BASE}/wfs"
protocol = "wfs"
collection = "pand"
sort_by = "identificatiebagpnd ASC"
page_size = {PAGE}
id_column = "identificatiebagpnd"
id_field = "identificatiebagpnd"
filters = { srsName = "EPSG:28992" }
[cache]
dir = "{CACHE}"
"""
    + MODEL
)


def test_wfs_pull_pages_by_start_index_in_sort_order(
    tmp_path: Path, service: str, features: list[dict]
) -> None:
    p = load_pipeline(pipeline_file(tmp_path, service, WFS_PIPELINE, page=40))
    (rec,) = pull_pipeline(p)
    assert rec["rows"] == 160 and rec["requests"] == 4  # numberMatched reached: no 5th
    got = gpd.read_file(rec["snapshot"]["path"])
    assert got.crs.to_epsg() == 28992
    ids = sorted(f["properties"]["identificatiebagpnd"] for f in features)
    assert got["identificatiebagpnd"].tolist() == ids
    starts = [int(path.split("startIndex=")[1].split("&")[0]) for path, _ in Services.log]
    assert starts == [0, 40, 80, 120]
    # no ETag: pulled in full again, but identical data is not stored twice
    before = snapshot_bytes(tmp_path / "cache")
    (again,) = pull_pipeline(p)
    assert not again["changed"] and again["requests"] == 4
    assert snapshot_bytes(tmp_path / "cache") == before


def test_wfs_without_sort_key_is_a_config_error(tmp_path: Path) -> None:
    text = WFS_PIPELINE.replace('sort_by = "identificatiebagpnd ASC"\n', "")
    with pytest.raises(ConfigError, match="sort_by"):
        load_pipeline(pipeline_file(tmp_path, "http://127.0.0.1:9", text))


GRAPHQL_PIPELINE = (
    """
name = "t-pull-bbr"
crs = "EPSG:25832"
[sources.register]
url = "{BASE}/graphql/BBR/v2"
protocol = "datafordeler-graphql"
collection = "BBR_Bygning"
filters = { kommunekode = "0326" }
page_size = {PAGE}
api_key_env = "T_DAF_KEY"
[cache]
dir = "{CACHE}"
"""
    + MODEL
)


def test_datafordeler_graphql_pulls_the_register_by_cursor_with_the_key_in_no_file(
    tmp_path: Path, service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mfa.pull.graphql import BBR_FIELDS
    from mfa.run import run_pipeline

    key = "daf-K3y-0123456789"
    Services.key = key
    monkeypatch.setenv("T_DAF_KEY", key)
    pipeline = pipeline_file(tmp_path, service, GRAPHQL_PIPELINE, page=25)
    (rec,) = pull_pipeline(load_pipeline(pipeline))
    assert rec["rows"] == 60 and rec["requests"] == 3  # 25 + 25 + 10
    assert len(Services.log) == 3 and all("apiKey=" in path for path, _ in Services.log)
    got = pd.read_csv(rec["snapshot"]["path"], dtype=str, keep_default_na=False)
    ref = pd.read_csv(KALUNDBORG, dtype=str, keep_default_na=False)[list(BBR_FIELDS)]
    pd.testing.assert_frame_equal(got, ref)
    # the run reads the pulled CSV as its register
    run = run_pipeline(pipeline, tmp_path / "out")
    manifest = json.loads((run / "run.json").read_text())
    assert manifest["row_counts"]["records_read"] == 60
    assert manifest["pulled"][0]["protocol"] == "datafordeler-graphql"
    for data in files_under(tmp_path).values():
        assert key.encode() not in data


def test_datafordeler_graphql_errors_and_renamed_fields_are_one_line(
    tmp_path: Path, service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("T_DAF_KEY", "any")
    text = GRAPHQL_PIPELINE.replace('"BBR_Bygning"', '"BBR_Bygnin"')
    with pytest.raises(PullError, match=r"refused the query .The field does not exist") as info:
        pull_pipeline(load_pipeline(pipeline_file(tmp_path, service, text)))
    assert "\n" not in str(info.value) and "sources.register" in str(info.value)
    text = GRAPHQL_PIPELINE.replace(
        "page_size = {PAGE}",
        'page_size = {PAGE}\nrequired_fields = ["id_lokalId", "byg026Opfoerelsesår"]',
    )
    with pytest.raises(PullError, match=r"byg026Opfoerelsesår. does not exist"):
        pull_pipeline(load_pipeline(pipeline_file(tmp_path, service, text)))
    assert snapshots_in(tmp_path / "cache") == []


@pytest.mark.prefect
@pytest.mark.slow
def test_scheduled_flow_pulls_then_runs_and_skips_when_the_service_is_unchanged(
    prefect_harness, tmp_path: Path, service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The nightly path through Prefect: the flow's pull task fetches the pages, the run
    publishes; the next scheduled run finds the same data and reuses the run."""
    from flows.pipeline import TASKS, mfa_pipeline

    assert "pull" in TASKS
    pipeline = str(pipeline_file(tmp_path, service, OAPIF_PIPELINE, page=50))
    first = Path(mfa_pipeline(pipeline, str(tmp_path / "out"), force=False))
    manifest = json.loads((first / "run.json").read_text())
    assert manifest["runner"] == "prefect" and manifest["pulled"][0]["rows"] == 160
    assert len(Services.log) == 4  # the unchanged task asked; the pull task reused its answer
    assert manifest["pulled"][0]["reused_check"] and manifest["pulled"][0]["changed"]
    monkeypatch.setattr("mfa.pull.RECHECK_S", 0.0)  # the next night
    Services.log.clear()
    second = Path(mfa_pipeline(pipeline, str(tmp_path / "out"), force=False))
    assert second.resolve() == first.resolve()
    assert len(Services.log) == 4  # the pages, once (the unchanged check), no run after it
    runs = [d for d in (tmp_path / "out" / "t-pull-oapif").iterdir() if d.name[0].isdigit()]
    assert len(runs) == 1

"""Height rasters as pulled sources (``[sources.heights] ndsm_url``, protocol http) and
runs pinned to a day (``--as-of``), against the loopback stand-in serving the AHN3 sample
rasters: conditional re-pulls, a cut download resumed with Range, rasters refused before
publishing (an HTML page, another CRS), and a pinned run that makes no request and
repeats the earlier run's layers byte for byte."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio

from mfa.config import load_pipeline
from mfa.errors import ConfigError, InputNotFoundError, PullError, SnapshotCheckError
from mfa.pull import pull_pipeline
from mfa.run import run_pipeline
from tests.conftest import MODEL, ROOT, SAMPLE
from tests.pull_helpers import Sleeps, features, pipeline_file, service, snapshot_bytes
from tests.pull_standin import Services

__all__ = ["features", "service"]  # fixtures, imported for pytest

NDSM = "delft_ahn3_ndsm_0p5m.tif"
RASTER_PIPELINE = (
    """
name = "t-pull-raster"
crs = "EPSG:28992"
[sources.footprints]
file = "{ROOT}/geodata/sample/delft_bgt_pand.gpkg"
layer = "pand"
id_column = "identificatiebagpnd"
[sources.heights]
ndsm_url = "{BASE}/files/delft_ahn3_ndsm_0p5m.tif"
protocol = "http"
percentile = 90
[cache]
dir = "{CACHE}"
"""
    + MODEL
)


def _pipeline(tmp: Path, base: str) -> Path:
    Services.files = {NDSM: (SAMPLE / NDSM).read_bytes()}
    return pipeline_file(tmp, base, RASTER_PIPELINE)


def test_a_raster_is_pulled_checked_and_an_unchanged_rerun_is_one_conditional_request(
    tmp_path: Path, service: str
) -> None:
    pipeline = _pipeline(tmp_path, service)
    assert load_pipeline(pipeline).sources.heights.ndsm is None  # nothing pulled yet
    (rec,) = pull_pipeline(load_pipeline(pipeline))
    assert rec["source"] == "sources.heights.ndsm" and rec["role"] == "raster"
    assert rec["changed"] and rec["requests"] == 1
    snap = Path(rec["snapshot"]["path"])
    assert snap.suffix == ".tif" and snap.read_bytes() == (SAMPLE / NDSM).read_bytes()
    sha = hashlib.sha256(snap.read_bytes()).hexdigest()
    assert json.loads(snap.with_name(snap.name + ".json").read_text())["sha256"] == sha
    assert load_pipeline(pipeline).sources.heights.ndsm == snap  # the run reads it
    before = snapshot_bytes(tmp_path / "cache")
    Services.log.clear()
    (again,) = pull_pipeline(load_pipeline(pipeline))
    assert not again["changed"] and again["requests"] == 1
    ((path, headers),) = Services.log
    assert path.endswith(f"/files/{NDSM}") and headers["If-None-Match"].startswith('"')
    assert snapshot_bytes(tmp_path / "cache") == before  # no new snapshot written


def test_a_cut_raster_download_resumes_with_range(
    tmp_path: Path, service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The connection closes after half the file; the retry asks only for the bytes after
    the last durable checkpoint (256 KiB here) and the snapshot is the whole file."""
    monkeypatch.setattr("mfa.pull.download.CHECKPOINT", 1 << 18)
    monkeypatch.setattr("mfa.pull.download.CHUNK", 1 << 16)  # blocks before the cut
    pipeline = _pipeline(tmp_path, service)
    Services.script = ["cut"]
    (rec,) = pull_pipeline(load_pipeline(pipeline), sleep=Sleeps())
    assert [h.get("Range") for _, h in Services.log] == [None, f"bytes={1 << 18}-"]
    assert Path(rec["snapshot"]["path"]).read_bytes() == (SAMPLE / NDSM).read_bytes()
    assert rec["requests"] == 2


def _other_crs_raster(tmp: Path) -> bytes:
    out = tmp / "utm.tif"
    with rasterio.open(SAMPLE / NDSM) as src:
        profile = {**src.profile, "crs": "EPSG:25832"}
        data = src.read()
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(data)
    return out.read_bytes()


@pytest.mark.parametrize("bad", ["html", "crs", "nodata"])
def test_a_bad_raster_is_one_line_and_the_last_good_snapshot_stays(
    tmp_path: Path, service: str, bad: str
) -> None:
    pipeline = _pipeline(tmp_path, service)
    (good,) = pull_pipeline(load_pipeline(pipeline))
    before = snapshot_bytes(tmp_path / "cache")
    if bad == "html":  # the service's error page with status 200
        Services.files[NDSM] = b"changed"  # a new ETag: the file is asked for in full
        Services.script = ["html"]
    elif bad == "crs":
        Services.files[NDSM] = _other_crs_raster(tmp_path)
    else:
        with rasterio.open(SAMPLE / NDSM) as src:
            profile = {**src.profile, "nodata": -9999.0}
            with rasterio.open(tmp_path / "e.tif", "w", **profile) as dst:
                dst.write(np.full((src.count, src.height, src.width), -9999.0, "float32"))
        Services.files[NDSM] = (tmp_path / "e.tif").read_bytes()
    with pytest.raises(SnapshotCheckError) as info:
        pull_pipeline(load_pipeline(pipeline))
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith("sources.heights.ndsm: http://127.0.0.1:")
    expect = {
        "html": "not a raster GDAL can read (an HTML page",
        "crs": "the raster is in EPSG:25832, the pipeline in EPSG:28992",
        "nodata": "the raster is empty",
    }[bad]
    assert expect in msg
    assert snapshot_bytes(tmp_path / "cache") == before
    assert load_pipeline(pipeline).sources.heights.ndsm == Path(good["snapshot"]["path"])
    assert not list((tmp_path / "cache").rglob("*.part"))


def test_a_pinned_run_makes_no_request_and_repeats_the_earlier_run(
    tmp_path: Path, service: str
) -> None:
    pipeline = _pipeline(tmp_path, service)
    (first,) = pull_pipeline(load_pipeline(pipeline), day="2026-12-01")
    run_a = run_pipeline(pipeline, tmp_path / "out")
    # the service publishes another raster (the DSM: other heights), pulled two days later
    Services.files[NDSM] = (SAMPLE / "delft_ahn3_dsm_0p5m.tif").read_bytes()
    (second,) = pull_pipeline(load_pipeline(pipeline), day="2026-12-03")
    assert second["changed"]
    newest = load_pipeline(pipeline).sources.heights.ndsm
    assert newest == Path(second["snapshot"]["path"])
    service_log = list(Services.log)
    Services.server.shutdown()  # the stand-in stops: a request would be refused
    Services.server.server_close()

    run_b = run_pipeline(pipeline, tmp_path / "out", as_of="2026-12-02")
    assert Services.log == service_log  # not one request
    manifest = json.loads((run_b / "run.json").read_text())
    assert manifest["as_of"] == "2026-12-02"
    (rec,) = manifest["pulled"]
    assert rec["requests"] == 0 and rec["as_of"] == "2026-12-02"
    assert rec["snapshot"]["sha256"] == first["snapshot"]["sha256"]
    assert rec["snapshot"]["day"].startswith("2026-12-01")
    layers = sorted(f.name for f in run_a.iterdir() if f.suffix in (".parquet", ".tif"))
    assert "buildings.parquet" in layers
    heights = gpd.read_parquet(run_b / "buildings.parquet")["height_m"]
    assert heights.notna().sum() > 100  # the pulled nDSM gave the heights
    for name in layers:
        assert (run_a / name).read_bytes() == (run_b / name).read_bytes(), name
    # --if-changed, pinned: nothing pulled, the same snapshots: the run is reused
    again = run_pipeline(pipeline, tmp_path / "out", force=False, as_of="2026-12-02")
    assert again.resolve() == run_b.resolve() and Services.log == service_log
    with pytest.raises(PullError):  # unpinned, the stopped service is an error
        pull_pipeline(load_pipeline(pipeline))
    # a later pinned day reads the newer snapshot
    assert load_pipeline(pipeline, "2026-12-03").sources.heights.ndsm == newest


def test_a_day_before_every_snapshot_is_one_line_naming_the_source(
    tmp_path: Path, service: str
) -> None:
    pipeline = _pipeline(tmp_path, service)
    pull_pipeline(load_pipeline(pipeline), day="2026-12-01")
    with pytest.raises(InputNotFoundError) as info:
        load_pipeline(pipeline, "2026-11-30")
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith("sources.heights.ndsm: no snapshot published on")
    assert "2026-12-01 … 2026-12-01" in msg
    with pytest.raises(ConfigError, match="give YYYY-MM-DD"):
        load_pipeline(pipeline, "last tuesday")
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}:{ROOT}"}
    env.pop("MFA_FAILPOINT", None)
    n = len(Services.log)
    for cmd in (["pull"], ["run", "--no-prefect"]):
        proc = subprocess.run(
            [sys.executable, "-m", "mfa.cli", *cmd, str(pipeline), "--as-of", "2026-11-30"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode != 0
        assert "sources.heights.ndsm: no snapshot published on or before 2026-11-30" in (
            proc.stderr
        )
        assert "Traceback" not in proc.stderr
    proc = subprocess.run(
        [sys.executable, "-m", "mfa.cli", "pull", str(pipeline), "--as-of", "2026-12-05"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "as of 2026-12-05" in proc.stdout
    assert len(Services.log) == n  # neither asked the service


@pytest.mark.parametrize(
    ("keys", "expect"),
    [
        ('ndsm_url = "{BASE}/files/a.tif"', 'needs protocol = "http"'),
        ('ndsm = "{ROOT}/x.tif"\nndsm_url = "{BASE}/a.tif"\nprotocol = "http"', "not both"),
        ('ndsm_url = "ftp://x/a.tif"\nprotocol = "http"', "http(s) address"),
        ('dsm_url = "{BASE}/files/a.tif"\nprotocol = "http"', "dsm and dtm go together"),
    ],
)
def test_raster_url_keys_are_checked_without_network(
    tmp_path: Path, keys: str, expect: str
) -> None:
    text = RASTER_PIPELINE.replace(
        'ndsm_url = "{BASE}/files/delft_ahn3_ndsm_0p5m.tif"\nprotocol = "http"\n', keys + "\n"
    )
    with pytest.raises(ConfigError) as info:
        load_pipeline(pipeline_file(tmp_path, "http://127.0.0.1:9", text))
    assert expect in str(info.value) and "\n" not in str(info.value)


@pytest.mark.prefect
@pytest.mark.slow
def test_a_pinned_run_through_prefect_reads_the_pinned_raster(
    prefect_harness, tmp_path: Path, service: str
) -> None:
    """The flow's pull task of the raster, pinned: no request, the day's snapshot."""
    from flows.pipeline import mfa_pipeline

    pipeline = _pipeline(tmp_path, service)
    (first,) = pull_pipeline(load_pipeline(pipeline), day="2026-12-01")
    Services.files[NDSM] = (SAMPLE / "delft_ahn3_dsm_0p5m.tif").read_bytes()
    pull_pipeline(load_pipeline(pipeline), day="2026-12-03")
    Services.server.shutdown()
    Services.server.server_close()
    n = len(Services.log)
    run = Path(mfa_pipeline(str(pipeline), str(tmp_path / "out"), True, "2026-12-02"))
    manifest = json.loads((run / "run.json").read_text())
    assert manifest["runner"] == "prefect" and manifest["as_of"] == "2026-12-02"
    (rec,) = manifest["pulled"]
    assert rec["snapshot"]["sha256"] == first["snapshot"]["sha256"] and rec["requests"] == 0
    assert len(Services.log) == n

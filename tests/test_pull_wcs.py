"""Height rasters by OGC WCS 2.0.1 GetCoverage (``[sources.heights] protocol = "wcs"``),
against a stand-in process (tests/wcs_standin.py) that cuts the Delft AHN3 sample rasters
and answers with real GeoTIFF bytes or OWS ExceptionReports."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import requests
from rasterio.windows import from_bounds

from mfa.config import load_pipeline
from mfa.errors import ConfigError, PullError, SnapshotCheckError
from mfa.pull import pull_pipeline
from mfa.pull.wcs import ows_exception
from mfa.run import run_pipeline
from tests.conftest import MODEL, ROOT, SAMPLE, write_pipeline
from tests.pull_helpers import Sleeps, snapshot_bytes

NDSM = SAMPLE / "delft_ahn3_ndsm_0p5m.tif"
WHOLE = (84808.0, 447412.0, 85073.0, 447642.0)  # the sample rasters' extent (EPSG:28992)
INSIDE = (84850.0, 447450.0, 85000.25, 447600.0)

PIPELINE = (
    """
name = "t-wcs"
crs = "EPSG:28992"
[sources.footprints]
file = "{ROOT}/geodata/sample/delft_bgt_pand.gpkg"
layer = "pand"
id_column = "identificatiebagpnd"
[sources.heights]
{HEIGHTS}
percentile = 90
[cache]
dir = "{CACHE}"
"""
    + MODEL
)


def _heights(base: str, bbox=INSIDE, coverage: str = "ahn3_ndsm") -> str:
    return (
        f'ndsm_url = "{base}/wcs"\nprotocol = "wcs"\nndsm_coverage = "{coverage}"\n'
        f"bbox = [{', '.join(map(str, bbox))}]"
    )


def _pipeline(tmp: Path, heights: str, name: str = "p.toml") -> Path:
    text = PIPELINE.replace("{HEIGHTS}", heights).replace("{CACHE}", str(tmp / "cache"))
    return write_pipeline(tmp, text, name)


@pytest.fixture(scope="module")
def stand_in() -> Iterator[str]:
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "wcs_standin.py")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        yield proc.stdout.readline().strip()  # type: ignore[union-attr]
    finally:
        proc.stdin.close()  # type: ignore[union-attr]
        proc.wait(timeout=30)


@pytest.fixture
def wcs(stand_in: str) -> str:
    requests.post(f"{stand_in}/reset", data=b"{}", timeout=10)
    return stand_in


def _log(base: str) -> list[dict]:
    return requests.get(f"{base}/log", timeout=10).json()


def _script(base: str, modes: list[str]) -> None:
    requests.post(f"{base}/script", data=json.dumps(modes), timeout=10)


def test_wcs_keys_are_checked_without_network(tmp_path: Path) -> None:
    base = "http://127.0.0.1:9"  # nothing listens: loading must not ask
    p = load_pipeline(_pipeline(tmp_path, _heights(base)))
    assert p.sources.heights.ndsm is None and p.sources.heights.ndsm_coverage == "ahn3_ndsm"
    bad = {
        "no coverage": (
            _heights(base).replace('ndsm_coverage = "ahn3_ndsm"\n', ""),
            "give ndsm_coverage",
        ),
        "no bbox": (_heights(base).split("\nbbox")[0], "protocol wcs needs bbox"),
        "bbox order": (_heights(base, (85000, 447600, 84850, 447450)), "min below max"),
        "coverage id": (_heights(base, coverage="a b"), "is not a coverageId"),
        "http with coverage": (
            _heights(base).replace('protocol = "wcs"', 'protocol = "http"'),
            'ndsm_coverage, bbox go with protocol = "wcs"',
        ),
    }
    for what, (heights, expect) in bad.items():
        with pytest.raises(ConfigError) as info:
            load_pipeline(_pipeline(tmp_path, heights, f"{what}.toml"))
        assert expect in str(info.value) and "\n" not in str(info.value), what
    register = PIPELINE.replace(
        "[sources.footprints]",
        f'[sources.register]\nurl = "{base}/wcs"\nprotocol = "wcs"\ncollection = "x"\n'
        "[sources.footprints]",
    ).replace("{HEIGHTS}", 'ndsm = "{ROOT}/geodata/sample/delft_ahn3_ndsm_0p5m.tif"')
    with pytest.raises(ConfigError, match="protocol wcs fetches a height raster"):
        load_pipeline(write_pipeline(tmp_path, register.replace("{CACHE}", "c"), "r.toml"))


def test_getcoverage_is_sent_as_wcs_2_0_1_and_the_answer_is_the_coverages_pixels(
    tmp_path: Path, wcs: str
) -> None:
    pipeline = _pipeline(tmp_path, _heights(wcs))
    (rec,) = pull_pipeline(load_pipeline(pipeline))
    assert rec["protocol"] == "wcs" and rec["changed"] and rec["requests"] == 1
    ((sent,),) = [[r["query"] for r in _log(wcs)]]
    q = parse_qs(sent)
    assert {k: v for k, v in q.items() if k != "subset"} == {
        "service": ["WCS"],
        "version": ["2.0.1"],
        "request": ["GetCoverage"],
        "coverageId": ["ahn3_ndsm"],
        "subsettingCrs": ["http://www.opengis.net/def/crs/EPSG/0/28992"],
        "outputCrs": ["http://www.opengis.net/def/crs/EPSG/0/28992"],
        "format": ["image/tiff"],
    }
    assert q["subset"] == ["x(84850,85000.25)", "y(447450,447600)"]
    snap = Path(rec["snapshot"]["path"])
    assert snap.suffix == ".tif" and snap.read_bytes()[:4] == b"II*\x00"
    # an independent read: the sample raster's pixels over the same area
    with rasterio.open(snap) as got, rasterio.open(NDSM) as src:
        assert got.crs == src.crs and got.res == src.res
        b = got.bounds
        assert b.left <= INSIDE[0] and b.bottom <= INSIDE[1]
        assert b.right >= INSIDE[2] and b.top >= INSIDE[3]
        window = from_bounds(*b, src.transform)
        np.testing.assert_array_equal(got.read(1), src.read(1, window=window))
    assert load_pipeline(pipeline).sources.heights.ndsm == snap  # the run reads it
    # unchanged: one conditional request, nothing written
    before = snapshot_bytes(tmp_path / "cache")
    (again,) = pull_pipeline(load_pipeline(pipeline))
    assert not again["changed"] and again["requests"] == 1
    assert _log(wcs)[-1]["if_none_match"] is not None
    assert snapshot_bytes(tmp_path / "cache") == before


def test_a_run_on_the_wcs_ndsm_has_the_heights_of_the_local_ndsm(tmp_path: Path, wcs: str) -> None:
    local = run_pipeline(
        _pipeline(tmp_path, f'ndsm = "{NDSM}"', "local.toml"), tmp_path / "out-local"
    )
    pulled = run_pipeline(_pipeline(tmp_path, _heights(wcs, WHOLE)), tmp_path / "out-wcs")
    a = gpd.read_parquet(local / "buildings.parquet").set_index("building_id").sort_index()
    b = gpd.read_parquet(pulled / "buildings.parquet").set_index("building_id").sort_index()
    assert (b["height_source"] == "raster").sum() > 100
    np.testing.assert_array_equal(a["height_m"].to_numpy(), b["height_m"].to_numpy())
    assert json.loads((pulled / "run.json").read_text())["pulled"][0]["protocol"] == "wcs"


@pytest.mark.parametrize(
    ("mode", "expect", "error"),
    [
        (
            "exception200",
            "the WCS answered an exception: NoApplicableCode: Internal error",
            SnapshotCheckError,
        ),
        ("html", "not a raster GDAL can read (an HTML page", SnapshotCheckError),
        ("png", "not a raster GDAL can read", SnapshotCheckError),
    ],
)
def test_a_bad_answer_is_one_line_and_the_last_good_snapshot_stays(
    tmp_path: Path, wcs: str, mode: str, expect: str, error: type
) -> None:
    pipeline = _pipeline(tmp_path, _heights(wcs))
    (good,) = pull_pipeline(load_pipeline(pipeline))
    before = snapshot_bytes(tmp_path / "cache")
    _script(wcs, [mode])
    with pytest.raises(error) as info:
        pull_pipeline(load_pipeline(pipeline))
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith("sources.heights.ndsm: http://127.0.0.1:")
    assert expect in msg
    assert snapshot_bytes(tmp_path / "cache") == before
    assert load_pipeline(pipeline).sources.heights.ndsm == Path(good["snapshot"]["path"])
    assert not list((tmp_path / "cache").rglob("*.part"))


def test_service_exceptions_and_a_raster_short_of_the_bbox_are_one_line(
    tmp_path: Path, wcs: str
) -> None:
    cases = {
        "unknown": (
            _heights(wcs, coverage="ahn4_ndsm"),
            PullError,
            "HTTP 404, the service answered an exception: NoSuchCoverage (coverageId): "
            "no coverage ahn4_ndsm",
        ),
        "outside": (
            _heights(wcs, (10.0, 10.0, 20.0, 20.0)),
            PullError,
            "InvalidSubsetting (subset)",
        ),
        "axes": (
            _heights(wcs) + '\nwcs_axes = ["E", "N"]',
            PullError,
            "InvalidAxisLabel (subset)",
        ),
        "short": (  # the coverage ends 27 m inside the bbox: the server clips it
            _heights(wcs, (84808.0, 447412.0, 85100.0, 447642.0)),
            SnapshotCheckError,
            "the raster covers 84808,447412,85073,447642, not the bbox 84808,447412,85100,447642",
        ),
    }
    for what, (heights, error, expect) in cases.items():
        pipeline = _pipeline(tmp_path, heights, f"{what}.toml")
        with pytest.raises(error) as info:
            pull_pipeline(load_pipeline(pipeline))
        msg = str(info.value)
        assert expect in msg and "\n" not in msg, (what, msg)
        assert load_pipeline(pipeline).sources.heights.ndsm is None  # nothing published
    assert not list((tmp_path / "cache").rglob("*.tif"))


def test_a_503_is_survived(tmp_path: Path, wcs: str) -> None:
    _script(wcs, ["503"])
    sleeps = Sleeps()
    (rec,) = pull_pipeline(load_pipeline(_pipeline(tmp_path, _heights(wcs))), sleep=sleeps)
    assert rec["changed"] and rec["requests"] == 2 and len(sleeps) == 1


def test_ows_exception_reads_ows_2_and_wcs_1_reports() -> None:
    from tests.wcs_standin import exception_report

    assert ows_exception(exception_report("NoSuchCoverage", "coverageId", "gone")) == (
        "NoSuchCoverage (coverageId): gone"
    )
    wcs1 = (
        b'<?xml version="1.0"?><ServiceExceptionReport version="1.2.0">'
        b'<ServiceException code="InvalidParameterValue">bad bbox</ServiceException>'
        b"</ServiceExceptionReport>"
    )
    assert ows_exception(wcs1) == "InvalidParameterValue: bad bbox"
    assert ows_exception(b"II*\x00" + b"\x00" * 100) is None
    assert ows_exception(b"<html>ExceptionReport</html>") == "ExceptionReport"

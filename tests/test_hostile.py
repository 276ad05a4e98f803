"""Hostile inputs (issue 19): files that are programs, numbers that read two ways, text that
becomes markup, a published run that was edited, settings without bounds, housekeeping
that reaches too far. Each case builds its input here and checks the one-line error (exit
code 2 from the CLI, no traceback) or the correct result, and that the published
``latest`` is byte-identical afterwards. The table is in docs/guide-analyst.md ("When an
input is bad").
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pytest
import rasterio
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from mfa.cli import app
from mfa.config import load_pipeline
from mfa.errors import InputDataError, MfaError
from mfa.io.files import file_record
from mfa.numbers import parse_numbers
from mfa.run import run_pipeline
from tests.conftest import ROOT, SAMPLE
from tests.test_bad_inputs import (
    HEIGHTS_PIPELINE,
    REGISTER_PIPELINE,
    Base,
    _csv_register,
    _digest,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def reg(tmp_path_factory) -> Base:
    """A published register run (300 records, 52 parishes) that every case must leave alone."""
    return published_base(tmp_path_factory)


def published_base(tmp_path_factory) -> Base:
    """Publish the register run the hostile cases of a module share."""
    tmp = tmp_path_factory.mktemp("hostile")
    gpd.read_parquet(SAMPLE / "bbr_bygning_2020.parquet").iloc[:300].to_parquet(
        tmp / "register.parquet"
    )
    values = {
        "root": str(ROOT),
        "register": str(tmp / "register.parquet"),
        "register_extra": "",
        "districts": str(SAMPLE / "dagi_sogne_2014_sample.gpkg"),
        "districts_layer": 'layer = "sogne"',
        "district_id": "SOGNEKODE",
        "intensities": str(ROOT / "config/intensities/rasmi_2024.csv"),
        "lifetimes": str(ROOT / "config/lifetimes.toml"),
        "draws": "50",
        "cell": "100",
    }
    base = Base(tmp, tmp / "out", values, REGISTER_PIPELINE, tmp)
    base.latest = run_pipeline(base.pipeline("good.toml"), base.out).parent / "latest"
    return base


def _refused(base: Base, pipeline: Path, error: type[MfaError], *patterns: str) -> str:
    """The run fails with ``error`` whose one-line message matches ``patterns``; the CLI
    exits 2 without a traceback; ``latest`` is byte-identical. Returns the message."""
    before, target = _digest(base.latest), base.latest.resolve()
    with pytest.raises(error) as info:
        run_pipeline(pipeline, base.out)
    message = str(info.value)
    assert "\n" not in message, message
    for pattern in patterns:
        assert re.search(pattern, message), (pattern, message)
    result = CliRunner().invoke(app, ["run", str(pipeline), "--no-prefect", "-o", str(base.out)])
    assert result.exit_code == 2, result.output
    assert "error:" in result.output and "Traceback" not in result.output, result.output
    assert base.latest.resolve() == target
    assert _digest(base.latest) == before
    return message


# ------------------------------------------------------------------ files opened by content

VRT_PASSWD = """<OGRVRTDataSource>
  <OGRVRTLayer name="sogne">
    <SrcDataSource>CSV:/etc/passwd</SrcDataSource>
    <SrcLayer>passwd</SrcLayer>
  </OGRVRTLayer>
</OGRVRTDataSource>
"""


def test_vrt_named_gpkg_is_refused(reg: Base) -> None:
    """An OGR VRT saved as districts.gpkg: GDAL alone would read /etc/passwd through it."""
    vrt = reg.tmp / "districts.gpkg"
    vrt.write_text(VRT_PASSWD)
    assert len(pyogrio.read_dataframe(vrt, read_geometry=False)) > 0  # the threat is real
    message = _refused(
        reg,
        reg.pipeline("case.toml", districts=str(vrt), districts_layer=""),
        InputDataError,
        "districts.gpkg",
        "content is XML",
        "not GPKG",
    )
    assert "root:x:0:0" not in message


def test_vrt_with_network_source_makes_no_request(reg: Base, tmp_path: Path) -> None:
    """A VRT (named .gpkg) whose source is a URL on a loopback server: no request is made."""
    log = tmp_path / "requests.log"
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", "0", "--bind", "127.0.0.1"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=open(log, "w"),  # noqa: SIM115 - the server writes its log there
        text=True,
    )
    try:
        line = server.stdout.readline()  # "Serving HTTP on 127.0.0.1 port N ..."
        port = int(re.search(r"port (\d+)", line).group(1))
        (tmp_path / "f.geojson").write_text('{"type": "FeatureCollection", "features": []}')
        vrt = reg.tmp / "net.gpkg"
        vrt.write_text(
            VRT_PASSWD.replace(
                "CSV:/etc/passwd", f"/vsicurl/http://127.0.0.1:{port}/f.geojson"
            ).replace("passwd</SrcLayer>", "f</SrcLayer>")
        )
        _refused(
            reg,
            reg.pipeline("case.toml", districts=str(vrt), districts_layer=""),
            InputDataError,
            "content is XML",
        )
        time.sleep(0.2)
        assert "GET" not in log.read_text()
    finally:
        server.terminate()
        server.wait(10)


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("geojson-as-gpkg.gpkg", b'{"type": "FeatureCollection", "features": []}', "JSON"),
        ("text.gpkg", b"SOGNEKODE,geometry\n1,POINT (1 2)\n", "text"),
        ("xml.geojson", VRT_PASSWD.encode(), "XML"),
        ("zeros.fgb", b"\x00" * 4096, "binary data"),
    ],
)
def test_vector_content_must_match_its_extension(
    reg: Base, name: str, content: bytes, expected: str
) -> None:
    bad = reg.tmp / name
    bad.write_bytes(content)
    _refused(
        reg,
        reg.pipeline("case.toml", districts=str(bad), districts_layer=""),
        InputDataError,
        re.escape(name),
        expected,
    )


def test_vector_extension_not_allowed(reg: Base) -> None:
    vrt = reg.tmp / "districts.vrt"
    vrt.write_text(VRT_PASSWD)
    _refused(
        reg,
        reg.pipeline("case.toml", districts=str(vrt), districts_layer=""),
        InputDataError,
        "extension '.vrt' is not one mfa reads",
        "allowed: .fgb, .geojson",
    )


def test_geopackage_renamed_geojson_is_refused(reg: Base) -> None:
    bad = reg.tmp / "sogne.geojson"
    shutil.copy(SAMPLE / "dagi_sogne_2014_sample.gpkg", bad)
    _refused(
        reg,
        reg.pipeline("case.toml", districts=str(bad), districts_layer=""),
        InputDataError,
        "a GPKG file, not GeoJSON",
    )


def test_real_formats_are_read(reg: Base, tmp_path: Path) -> None:
    """The same districts as GeoJSON, FlatGeobuf and Shapefile give the same run totals;
    the Shapefile's sidecars are hashed into run.json with it."""
    src = gpd.read_file(SAMPLE / "dagi_sogne_2014_sample.gpkg", layer="sogne")
    totals = {}
    for ext, driver in ((".geojson", "GeoJSON"), (".fgb", "FlatGeobuf"), (".shp", None)):
        f = tmp_path / f"sogne{ext}"
        src.to_file(f, driver=driver) if driver else src.to_file(f)
        run = run_pipeline(
            reg.pipeline("case.toml", districts=str(f), districts_layer=""), tmp_path / "o"
        )
        manifest = json.loads((run / "run.json").read_text())
        totals[ext] = manifest["totals_t"]
        if ext == ".shp":
            record = next(i for i in manifest["inputs"] if i["role"] == "districts")
            names = {Path(s["path"]).suffix for s in record["sidecars"]}
            assert {".dbf", ".shx", ".prj"} <= names
    reference = json.loads((reg.latest / "run.json").read_text())["totals_t"]
    for got in totals.values():
        assert got == pytest.approx(reference, rel=1e-9)


def _heights_base(tmp: Path) -> Base:
    values = {
        "root": str(ROOT),
        "footprints": str(SAMPLE / "delft_bgt_pand.gpkg"),
        "ndsm": str(SAMPLE / "delft_ahn3_ndsm_0p5m.tif"),
    }
    return Base(tmp, tmp / "out", values, HEIGHTS_PIPELINE, tmp)


def test_raster_sidecar_is_not_read(tmp_path: Path) -> None:
    """A .aux.xml beside the nDSM that moves its grid 1 km east is ignored: the heights
    are those of the file hashed into run.json (without the guard GDAL applies it)."""
    from mfa.io.rasters import footprint_heights

    tif = tmp_path / "ndsm.tif"
    shutil.copy(SAMPLE / "delft_ahn3_ndsm_0p5m.tif", tif)
    fp = gpd.read_file(SAMPLE / "delft_bgt_pand.gpkg", layer="pand").iloc[:40]
    plain, _ = footprint_heights(fp.geometry, ndsm=tif)
    with rasterio.open(tif) as ds:
        t = ds.transform
    gt = f"{t.c + 1000}, {t.a}, 0, {t.f}, 0, {t.e}"
    (tmp_path / "ndsm.tif.aux.xml").write_text(
        f"<PAMDataset><GeoTransform>{gt}</GeoTransform></PAMDataset>"
    )
    with rasterio.open(tif) as ds:
        assert ds.transform.c == pytest.approx(t.c + 1000)  # GDAL itself would use it
    guarded, _ = footprint_heights(fp.geometry, ndsm=tif)
    pd.testing.assert_series_equal(plain, guarded)


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("vrt.tif", VRT_PASSWD.encode(), "content is XML"),
        ("gpkg.tif", (SAMPLE / "dagi_sogne_2014_sample.gpkg").read_bytes()[:8192], "GPKG file"),
        ("heights.jp2", b"\x00\x00\x00\x0cjP  ", "extension '.jp2'"),
        (
            "net.vrt",
            b"<VRTDataset><VRTRasterBand><SimpleSource><SourceFilename>/vsicurl/http://"
            b"127.0.0.1:9/t.tif</SourceFilename></SimpleSource></VRTRasterBand></VRTDataset>",
            "not a local file",
        ),
        (
            "passwd.vrt",
            b'<VRTDataset><VRTRasterBand><SimpleSource><SourceFilename relativeToVRT="0">'
            b"/etc/passwd</SourceFilename></SimpleSource></VRTRasterBand></VRTDataset>",
            "not a GeoTIFF file",
        ),
    ],
)
def test_raster_content_must_match_its_extension(
    tmp_path: Path, name: str, content: bytes, expected: str
) -> None:
    base = _heights_base(tmp_path)
    bad = tmp_path / name
    bad.write_bytes(content)
    with pytest.raises(InputDataError, match=expected):
        run_pipeline(base.pipeline("case.toml", ndsm=str(bad)), base.out)


def _raster_like(tmp: Path, name: str, change) -> Path:
    with rasterio.open(SAMPLE / "delft_ahn3_ndsm_0p5m.tif") as src:
        profile, data = src.profile, src.read(1)
    profile, data = change(profile, data)
    out = tmp / name
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(data, 1)
    return out


def test_rotated_raster_is_refused(tmp_path: Path) -> None:
    from affine import Affine

    def rotate(profile, data):
        return {**profile, "transform": profile["transform"] * Affine.rotation(15)}, data

    base = _heights_base(tmp_path)
    bad = _raster_like(tmp_path, "rotated.tif", rotate)
    with pytest.raises(InputDataError, match="rotated, sheared or flipped"):
        run_pipeline(base.pipeline("case.toml", ndsm=str(bad)), base.out)


def test_all_nodata_raster_is_refused(tmp_path: Path) -> None:
    def blank(profile, data):
        nodata = profile["nodata"] if profile["nodata"] is not None else -9999.0
        return {**profile, "nodata": nodata}, np.full_like(data, nodata)

    base = _heights_base(tmp_path)
    bad = _raster_like(tmp_path, "blank.tif", blank)
    with pytest.raises(InputDataError, match=r"no valid \(non-nodata\) cell under any"):
        run_pipeline(base.pipeline("case.toml", ndsm=str(bad)), base.out)


# ------------------------------------------------------------------ paths that are not files


def test_fifo_is_refused(reg: Base) -> None:
    fifo = reg.tmp / "pipe.csv"
    os.mkfifo(fifo)
    _refused(reg, reg.pipeline("case.toml", register=str(fifo)), InputDataError, "FIFO")


def test_device_is_refused(reg: Base) -> None:
    _refused(reg, reg.pipeline("case.toml", register="/dev/zero"), InputDataError, "is a device")


def test_symlink_loop_is_refused(reg: Base) -> None:
    loop = reg.tmp / "loop.parquet"
    loop.symlink_to(loop)
    _refused(reg, reg.pipeline("case.toml", register=str(loop)), InputDataError, "link loop")


def test_name_too_long(reg: Base) -> None:
    long = reg.tmp / ("x" * 300 + ".parquet")
    _refused(reg, reg.pipeline("case.toml", register=str(long)), InputDataError, "too long")


def test_nul_filled_csv_is_refused_before_parsing(reg: Base) -> None:
    bad = reg.tmp / "zeros.csv"
    bad.write_bytes(b"\x00" * (1 << 20))
    _refused(
        reg, reg.pipeline("case.toml", register=str(bad)), InputDataError, "NUL byte at position 0"
    )


def test_pipeline_with_bom_is_read(reg: Base) -> None:
    good = reg.tmp / "good.toml"
    bom = reg.tmp / "bom.toml"
    bom.write_bytes(b"\xef\xbb\xbf" + good.read_bytes())
    assert load_pipeline(bom).name == load_pipeline(good).name


# ------------------------------------------------------------------ numbers read wrongly


def _semicolon_csv(tmp: Path, name: str, value: str) -> tuple[Path, pd.DataFrame]:
    df = _csv_register(tmp)
    row = int(np.flatnonzero(df["byg038SamletBygningsareal"].astype(int) > 50)[0])
    df.loc[row, "byg038SamletBygningsareal"] = value
    df.to_csv(tmp / name, index=False, sep=";")
    return tmp / name, df.iloc[[row]]


@pytest.mark.parametrize("value", ["2.700", "2,700", "12.345"])
def test_thousands_or_decimal_is_an_error(reg: Base, value: str) -> None:
    path, _ = _semicolon_csv(reg.tmp, "thousands.csv", value)
    _refused(
        reg,
        reg.pipeline("case.toml", register=str(path)),
        InputDataError,
        r"line \d+",
        re.escape(f"byg038SamletBygningsareal = '{value}'"),
        "decimal_separator",
    )


def test_declared_danish_locale_reads_thousands(reg: Base, tmp_path: Path) -> None:
    path, row = _semicolon_csv(reg.tmp, "danish.csv", "2.700")
    extra = 'crs = "EPSG:25832"\ndecimal_separator = ","'
    run = run_pipeline(
        reg.pipeline("case.toml", register=str(path), register_extra=extra), tmp_path / "o"
    )
    b = gpd.read_parquet(run / "buildings.parquet")
    got = b.loc[b["building_id"] == row["id_lokalId"].iloc[0]]
    assert len(got) == 1
    repaired = pd.read_csv(run / "repairs.csv")
    if not (repaired["record_id"] == row["id_lokalId"].iloc[0]).any():
        assert float(got["gfa_m2"].iloc[0]) == 2700.0


def test_declared_locale_rejects_the_other(reg: Base) -> None:
    path, _ = _semicolon_csv(reg.tmp, "mixed.csv", "120.5")
    extra = 'decimal_separator = ","'
    _refused(
        reg,
        reg.pipeline("case.toml", register=str(path), register_extra=extra),
        InputDataError,
        "'120.5' is not a number with decimal separator ','",
    )


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 10**9), st.integers(0, 99), st.booleans())
def test_numbers_read_as_written(whole: int, cents: int, with_cents: bool) -> None:
    """Python's own formatting is the oracle: a number written with grouping in either
    locale reads back exactly when the locale is declared; 'auto' reads it exactly or
    calls it ambiguous, never a different number."""
    en = f"{whole:,}" + (f".{cents:02d}" if with_cents else "")
    da = en.replace(",", "_").replace(".", ",").replace("_", ".")
    want = whole + (cents / 100 if with_cents else 0)
    text = pd.Series([en, da], dtype="string")
    got_en = parse_numbers(text.iloc[[0]], ".")[0].iloc[0]
    got_da = parse_numbers(text.iloc[[1]], ",")[0].iloc[0]
    assert got_en == pytest.approx(want) and got_da == pytest.approx(want)
    values, malformed, ambiguous = parse_numbers(text, "auto")
    for v, bad, amb in zip(values, malformed, ambiguous, strict=True):
        assert bad or amb or v == pytest.approx(want)
        if whole >= 1000 and not with_cents and whole < 10**6:
            assert amb  # '2,700' / '2.700' alone cannot be read


def test_duplicated_csv_header_is_refused(reg: Base) -> None:
    df = _csv_register(reg.tmp)
    df.insert(3, "byg038SamletBygningsareal_x", df["byg038SamletBygningsareal"])
    names = [
        "byg038SamletBygningsareal" if c.endswith("_x") else c for c in df.columns
    ]  # the header names the column twice
    df.columns = names
    df.to_csv(reg.tmp / "dup.csv", index=False)
    _refused(
        reg,
        reg.pipeline("case.toml", register=str(reg.tmp / "dup.csv")),
        InputDataError,
        "line 1",
        "'byg038SamletBygningsareal' occurs twice",
    )


def test_implausible_floor_area_is_repaired(reg: Base, tmp_path: Path) -> None:
    """9,000,000 m² on a one-floor building without a footprint area: replaced, recorded."""
    df = gpd.read_parquet(reg.tmp / "register.parquet")
    row = int(np.flatnonzero((df["byg038SamletBygningsareal"] > 50) & (df["status"] == "6"))[0])
    at = df.index[row]
    df.loc[at, ["byg038SamletBygningsareal", "byg054AntalEtager"]] = [9_000_000, 1]
    df.loc[at, "byg041BebyggetAreal"] = pd.NA  # no footprint area to compare with
    df.to_parquet(tmp_path / "huge.parquet")
    run = run_pipeline(reg.pipeline("case.toml", register=str(tmp_path / "huge.parquet")), tmp_path)
    dropped = pd.read_csv(run / "dropped.csv")
    rid = df["id_lokalId"].iloc[row]
    assert dropped.loc[dropped["record_id"] == rid, "reason"].str.contains("larger than any").any()
    gfa = json.loads((run / "run.json").read_text())["total_gfa_m2"]
    reference = json.loads((reg.latest / "run.json").read_text())["total_gfa_m2"]
    assert gfa < reference + 10_000


# ------------------------------------------------------------------ districts


def test_overlapping_districts_are_refused(reg: Base) -> None:
    d = gpd.read_file(SAMPLE / "dagi_sogne_2014_sample.gpkg", layer="sogne")
    whole = d.iloc[[0]].copy()
    whole["SOGNEKODE"] = "9999"
    whole["geometry"] = [shapely.union_all(d.geometry.values)]  # a 'municipality' on top
    pd.concat([d, whole]).to_file(reg.tmp / "overlap.gpkg", layer="sogne")
    _refused(
        reg,
        reg.pipeline("case.toml", districts=str(reg.tmp / "overlap.gpkg")),
        InputDataError,
        "'9999' overlap by|and '9999' overlap by",
    )


def test_geoparquet_with_two_geometry_columns(reg: Base) -> None:
    import pyarrow.parquet as pq

    d = gpd.read_file(SAMPLE / "dagi_sogne_2014_sample.gpkg", layer="sogne")
    d["centre"] = d.geometry.centroid
    d.to_parquet(reg.tmp / "two.parquet")
    assert len(json.loads(pq.read_schema(reg.tmp / "two.parquet").metadata[b"geo"])["columns"]) == 2
    _refused(
        reg,
        reg.pipeline("case.toml", districts=str(reg.tmp / "two.parquet"), districts_layer=""),
        InputDataError,
        "2 geometry columns",
        "'centre'",
    )


def test_file_record_hashes_shapefile_sidecars(tmp_path: Path) -> None:
    gpd.GeoDataFrame({"a": [1]}, geometry=[shapely.box(0, 0, 1, 1)], crs=25832).to_file(
        tmp_path / "x.shp"
    )
    record = file_record(tmp_path / "x.shp")
    assert {Path(s["path"]).suffix for s in record["sidecars"]} >= {".dbf", ".shx", ".prj"}

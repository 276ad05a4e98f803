"""`mfa query` as a newcomer uses it on the shipped sample (issue 19, item 9): an id or an
area the run does not cover is an error with a hint, never "0 buildings" with exit 0;
``--within`` takes WKT, GeoJSON and GeoPackage files (and WKT text) and answers what GEOS
finds inside; a damaged run folder is one line, never a traceback."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from mfa.cli import app
from mfa.errors import InputDataError
from mfa.query import availability

SITE = (643786.0, 6150882.0)  # among the sample's Kalundborg buildings (EPSG:25832)


def _query(run: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["query", str(run), *args])
    assert "Traceback" not in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result.exit_code, " ".join(result.output.split())  # Rich wraps long lines


def _csv(output: str) -> pd.Series:
    lines = [ln for ln in output.replace(" ", "\n").splitlines() if "," in ln]
    rows = [ln.split(",") for ln in lines[1:]]
    return pd.Series({r[0]: float(r[1]) for r in rows})


def _direct(run: Path, area: shapely.Geometry) -> pd.Series:
    """The oracle: the buildings whose representative point GEOS puts inside the area."""
    b = gpd.read_parquet(run / "buildings.parquet")
    inside = shapely.contains(area, shapely.point_on_surface(b.geometry.values))
    return b.loc[inside, ["concrete_t", "brick_t", "mass_t"]].sum()


@pytest.fixture(scope="module")
def run(dk_sample_run: Path) -> Path:
    return dk_sample_run


@pytest.fixture(scope="module")
def districts(run: Path) -> gpd.GeoDataFrame:
    return gpd.read_parquet(run / "districts.parquet")


# ----------------------------------------------------------------- ids and areas not in the run


def test_unknown_district_names_the_busiest(run: Path, districts: gpd.GeoDataFrame) -> None:
    code, out = _query(run, "--district", "7175")  # the student guide's old example
    busiest = districts.sort_values("building_count").iloc[-1]
    assert code == 2 and "district(s) 7175 not in this run, which has 52 districts" in out
    assert f"{busiest.district_id} ({busiest.district_name}): {busiest.building_count:,}" in out


def test_district_given_by_its_name(run: Path, districts: gpd.GeoDataFrame) -> None:
    row = districts.iloc[3]
    code, out = _query(run, "--district", row.district_name.upper())
    assert code == 2 and f"did you mean --district {row.district_id} ({row.district_name})?" in out


def test_lonlat_given_to_around(run: Path) -> None:
    code, out = _query(run, "--around", "11.2754,55.4828")
    assert code == 2 and "outside the run's buildings" in out
    assert "did you mean --around-lonlat 11.2754,55.4828?" in out


def test_lonlat_swapped(run: Path) -> None:
    code, out = _query(run, "--around-lonlat", "55.4828,11.2754")
    assert code == 2 and "if you swapped them: --around-lonlat 11.2754,55.4828" in out
    code, out = _query(run, "--around-lonlat", "200,11")
    assert code == 2 and "longitude must lie within ±180°" in out


def test_area_in_the_extent_but_outside_every_district(run, districts) -> None:
    """The sample is a transect: its bounding box holds much land of no district."""
    b = gpd.read_parquet(run / "buildings.parquet")
    x0, y0, x1, y1 = b.total_bounds
    cover = districts.geometry.union_all()
    gaps = [
        (x, y)
        for x in np.linspace(x0, x1, 25)
        for y in np.linspace(y0, y1, 25)
        if not cover.intersects(shapely.Point(x, y).buffer(600))
    ]
    x, y = gaps[len(gaps) // 2]
    code, out = _query(run, "--around", f"{x:.0f},{y:.0f}", "--radius", "500")
    assert code == 2 and "outside every district of the run" in out


def test_area_in_a_district_without_buildings_warns(run: Path) -> None:
    triangle = "POLYGON ((643000 6150000, 644000 6150000, 644000 6151000, 643000 6150000))"
    assert _direct(run, shapely.from_wkt(triangle))["mass_t"] == 0
    code, out = _query(run, "--within", triangle)
    assert code == 0 and "warning: no building of this run lies inside the area" in out
    assert "0 buildings inside the area" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--around", "643786,6150882", "--radius", "nan"], "--radius must be a number"),
        (["--around", "643786,6150882", "--radius", "inf"], "--radius must be a number"),
        (["--around", "643786,6150882", "--radius", "0"], "--radius must be a number"),
        (["--around", "643786"], "give two numbers separated by a comma"),
        (["--around", "1,2", "--district", "7192"], "give one of --around and --district"),
        (["--district", "7192", "--radius", "50"], "--radius goes with --around"),
        (["--around", "643786,6150882", "--years", "soon"], "--years 'soon': give FIRST-LAST"),
        (["--around", "643786,6150882", "--years", "2030-2026"], "comes after the last"),
        (["--around", "643786,6150882", "--format", "xml"], "--format 'xml': use one of"),
        (["--around", "643786,6150882", "--format", "geojson"], "needs --output FILE"),
        (["--within", "POLYGON ((0 0, 1"], "neither a file nor WKT"),
        (["--within", "nowhere/site.gpkg"], "--within nowhere/site.gpkg: does not exist"),
        ([], "give an area"),
    ],
)
def test_one_line_errors(run: Path, args: list[str], message: str) -> None:
    code, out = _query(run, *args)
    assert code == 2 and out.startswith("error:") and message in out


# --------------------------------------------------------------------------- --within files


@pytest.fixture(scope="module")
def site() -> shapely.Geometry:
    return shapely.Point(*SITE).buffer(1500, quad_segs=16)


@pytest.mark.parametrize("kind", ["wkt", "wkt-text", "geojson-wgs84", "gpkg", "gpkg-no-crs", "fgb"])
def test_within_files_answer_what_geos_finds(run, site, tmp_path: Path, kind: str) -> None:
    frame = gpd.GeoDataFrame(geometry=[site], crs="EPSG:25832")
    arg = str(tmp_path / f"site.{kind.split('-')[0]}")
    if kind == "wkt":
        Path(arg).write_text(site.wkt)
    elif kind == "wkt-text":
        arg = site.wkt
    elif kind == "geojson-wgs84":
        frame.to_crs("EPSG:4326").to_file(arg, driver="GeoJSON")
    elif kind == "gpkg-no-crs":
        with pytest.warns(UserWarning, match="'crs' was not provided"):
            frame.set_crs(None, allow_override=True).to_file(arg)
    else:
        frame.to_file(arg)
    code, out = _query(run, "--within", arg, "--format", "csv")
    assert code == 0, out
    got, want = _csv(out), _direct(run, site)
    assert want["mass_t"] > 1000
    # a GeoJSON in WGS 84 is reprojected: its circle moves by millimetres
    rtol = 1e-6 if kind == "geojson-wgs84" else 1e-12
    for m in ("concrete", "brick", "mass"):
        assert got[m] == pytest.approx(want[f"{m}_t"], rel=rtol)


def test_within_a_point_or_lonlat_wkt_is_refused(run: Path, tmp_path: Path) -> None:
    gpd.GeoDataFrame(geometry=[shapely.Point(*SITE)], crs="EPSG:25832").to_file(tmp_path / "p.gpkg")
    code, out = _query(run, "--within", str(tmp_path / "p.gpkg"))
    assert code == 2 and "the area is a Point, not a polygon" in out and "--around" in out
    (tmp_path / "ll.wkt").write_text("POLYGON ((11.2 55.4, 11.3 55.4, 11.3 55.5, 11.2 55.4))")
    code, out = _query(run, "--within", str(tmp_path / "ll.wkt"))
    assert code == 2 and "WKT is read as metres in EPSG:25832" in out and "GeoJSON" in out
    gpd.GeoDataFrame(geometry=[], crs="EPSG:25832").to_file(tmp_path / "none.gpkg")
    code, out = _query(run, "--within", str(tmp_path / "none.gpkg"))
    assert code == 2 and "holds no feature" in out


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    dx=st.floats(-4000, 4000),
    dy=st.floats(-4000, 4000),
    w=st.floats(50, 3000),
    h=st.floats(50, 3000),
)
def test_any_box_answers_what_geos_finds(run: Path, dx, dy, w, h) -> None:
    """Every rectangle near the site: the answer's tonnes are those of the buildings GEOS
    puts inside it, or, with none inside, a warning (inside a district) or an error."""
    box = shapely.box(SITE[0] + dx, SITE[1] + dy, SITE[0] + dx + w, SITE[1] + dy + h)
    want = _direct(run, box)
    try:
        res = availability(run, box)
    except InputDataError as exc:
        assert want["mass_t"] == 0 and "outside every district" in str(exc)
        return
    got = res.summary.set_index("material")["t"]
    assert got["mass"] == pytest.approx(want["mass_t"], rel=1e-12, abs=1e-9)
    assert bool(res.warnings) == (len(res.buildings) == 0)


# ------------------------------------------------------------------------ damaged run folders


def _damage(run: Path, tmp_path: Path, how: str) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    manifest = json.loads((copy / "run.json").read_text())
    if how == "cut buildings":
        data = (copy / "buildings.parquet").read_bytes()
        (copy / "buildings.parquet").write_bytes(data[: len(data) // 3])
    elif how == "no buildings":
        (copy / "buildings.parquet").unlink()
    elif how == "cut districts":
        (copy / "districts.parquet").write_bytes(b"PAR1")
    elif how == "garbled buildings":  # the same size, other bytes: read fails
        data = bytearray((copy / "buildings.parquet").read_bytes())
        data[-200:-8] = b"\xff" * 192
        (copy / "buildings.parquet").write_bytes(bytes(data))
    elif how == "no intensities":
        del manifest["intensities"]
    elif how == "intensities without a table":
        del manifest["intensities"]["table"]
    elif how == "flows without lifetimes":
        del manifest["flows"]["lifetimes"]
    elif how == "run.json a list":
        manifest = [manifest]
    elif how == "run.json cut":
        (copy / "run.json").write_text((copy / "run.json").read_text()[:500])
        return copy
    (copy / "run.json").write_text(json.dumps(manifest))
    return copy


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ("cut buildings", "run.json lists"),
        ("no buildings", "buildings.parquet: missing"),
        ("cut districts", "districts.parquet: 4 bytes"),
        ("garbled buildings", "buildings.parquet: unreadable"),
        ("no intensities", "'intensities' is missing"),
        ("intensities without a table", "intensities/uncertainty lack 'table'"),
        ("flows without lifetimes", "the flows' settings are incomplete"),
        ("run.json a list", "unreadable (not a JSON object)"),
        ("run.json cut", "unreadable"),
    ],
)
def test_damaged_run_folder(run: Path, tmp_path: Path, how: str, message: str) -> None:
    damaged = _damage(run, tmp_path, how)
    args = ["--district", "7192"] if how == "cut districts" else ["--around", "643786,6150882"]
    code, out = _query(damaged, *args, "--years", "2026-2035")
    assert code == 2 and message in out and "damaged" in out, out


def test_query_process_imports_no_scipy(run: Path) -> None:
    """`mfa query` answers on the sample in under 2 s as a whole process: scipy.stats alone
    took 1 s to import, so the survival functions no longer need scipy (see
    mfa.dynamics._log_ndtr); this guards the import list, not the clock."""
    import subprocess
    import sys

    code = (
        "import sys; from mfa.cli import app\n"
        "try:\n    app()\nexcept SystemExit as e:\n    assert e.code in (0, None), e.code\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'scipy'))"
    )
    args = ["query", str(run), "--around", "643786,6150882", "--radius", "3000"]
    done = subprocess.run(
        [sys.executable, "-c", code, *args, "--years", "2026-2035", "--format", "csv"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stdout[-500:]


def test_within_file_over_the_size_bound(run: Path, tmp_path: Path) -> None:
    """A --within file larger than mfa reads whole (a sparse 1.1 GB file: no disk used) is
    refused by name and size before a byte of it is read."""
    huge = tmp_path / "site.geojson"
    with huge.open("wb") as f:
        f.truncate(1_100_000_000)
    code, out = _query(run, "--within", str(huge))
    assert code == 2 and f"{huge}: 1,100.0 MB, more than mfa query's limit = 1024 MB" in out

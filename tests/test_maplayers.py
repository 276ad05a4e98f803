"""Roads and water under the HTML maps (issue 19): drawn from real GeoDanmark lines and
polygons, reprojected, clipped to the map, muted, in the legend and the attribution;
bad files are one line at `mfa validate` and `mfa query`; a map without them is the page
it was before they existed (byte for byte)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import warnings
import xml.etree.ElementTree as ET
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely

from mfa.errors import InputDataError
from mfa.io.maplayers import check_map_layer, read_map_layer
from tests.conftest import DATA, SAMPLE, write_pipeline

ROADS = SAMPLE / "kalundborg_1km_6173_632_roads.geojson"
WATER = SAMPLE / "kalundborg_1km_6173_632_water.geojson"
CREDIT = "Indeholder data fra GeoDanmark / Danmarks Højdemodel, SDFI"
SVG = ""  # the inline <svg> of an HTML page has no xmlns


def _inputs():
    """The maps' inputs of tests/data/map_*_no_context.html (drawn by main before roads
    and water existed): six buildings, a district, another building, a matching."""
    from mfa.io.svgmap import MapContext

    pts = [shapely.Point(632100 + 40 * i, 6173150 + 25 * (i % 3)) for i in range(6)]
    b = gpd.GeoDataFrame(
        {"building_id": [f"b{i}" for i in range(6)], "mass_t": [1.0, 5, 12, 40, 90, 300]},
        geometry=[*pts[:5], shapely.box(632300, 6173200, 632320, 6173230)],
        crs="EPSG:25832",
    )
    d = gpd.GeoDataFrame(
        {"district_id": ["1"], "district_name": ["Asnæs"]},
        geometry=[shapely.box(631900, 6172900, 632700, 6173600)],
        crs="EPSG:25832",
    )
    ctx = MapContext(d, np.array([shapely.Point(632050, 6173300)], dtype=object))
    summary = pd.DataFrame({"material": ["mass"], "t": [448.0]})
    area = shapely.Point(632200, 6173180).buffer(200)
    matches = pd.DataFrame(
        {
            "x0": [632100.0],
            "y0": [6173150.0],
            "x1": [632400.0],
            "y1": [6173300.0],
            "t": [12.5],
            "supply_id": ["s"],
            "demand_id": ["d"],
            "material": ["brick"],
            "year_out": [2027],
            "km": [1.2],
        }
    )
    coverage = pd.DataFrame(
        {
            "x": [632400.0],
            "y": [6173300.0],
            "demand_id": ["d"],
            "material": ["brick"],
            "t": [20.0],
            "matched_t": [12.5],
            "virgin_t": [7.5],
        }
    )
    totals = pd.DataFrame(
        {
            "material": ["brick"],
            "demand_t": [20.0],
            "reused_t": [12.5],
            "virgin_t": [7.5],
            "mean_km": [np.nan],
            "net_kgco2e": [-10.0],
        }
    )
    return b, ctx, summary, area, matches, coverage, totals


def _query_page(ctx) -> str:
    from mfa.io.htmlmap import query_map_html

    b, _, summary, area, *_ = _inputs()
    return query_map_html(
        area,
        b,
        summary,
        "q",
        "mass_t",
        "standing stock at the end of 2020",
        crs="EPSG:25832",
        context=ctx,
        attribution="a",
    )


def _match_page(ctx) -> str:
    from mfa.io.matchmap import match_map_html

    _, _, _, _, matches, coverage, totals = _inputs()
    return match_map_html(
        matches,
        coverage,
        totals,
        "m",
        attribution="a",
        years=(2026, 2030),
        scenario="baseline",
        crs="EPSG:25832",
        context=ctx,
    )


def _svg(page: str) -> ET.Element:
    return ET.fromstring(page[page.index("<svg") : page.index("</svg>") + 6])


def _with_layers(ctx, frame_bounds, crs="EPSG:25832", roads=ROADS, water=WATER):
    import dataclasses

    return dataclasses.replace(
        ctx,
        roads=read_map_layer(roads, "roads", crs, frame_bounds, "k"),
        water=read_map_layer(water, "water", crs, frame_bounds, "k"),
        credits=f"Map context (roads: r; water: w): {CREDIT}",
    )


def test_maps_without_roads_and_water_are_unchanged() -> None:
    """Pages drawn by main (before roads and water) are drawn byte for byte the same."""
    from mfa.io.svgmap import MapContext

    _, ctx, *_ = _inputs()
    assert _query_page(ctx) == (DATA / "map_query_no_context.html").read_text()
    match_ctx = MapContext(ctx.districts, None)
    assert _match_page(match_ctx) == (DATA / "map_match_no_context.html").read_text()
    # empty layers (none in the window) draw nothing either
    empty = MapContext(ctx.districts, ctx.buildings, np.array([]), np.array([]), "x")
    assert _query_page(empty) == (DATA / "map_query_no_context.html").read_text()


def test_query_map_draws_the_real_roads_and_water_under_the_data() -> None:
    from mfa.io.htmlmap import query_frame
    from mfa.io.svgmap import HEIGHT, WIDTH

    b, ctx, _, area, *_ = _inputs()
    frame = query_frame(area, b)
    page = _query_page(_with_layers(ctx, frame.bounds))
    svg = _svg(page)
    context = svg.find(f"{SVG}g[@id='context']")
    roads = context.findall(f"{SVG}path[@class='road']")
    water = context.findall(f"{SVG}path[@class='water']")
    # the oracle: the files themselves, features that meet the window
    window = shapely.box(*frame.bounds)
    r = gpd.read_file(ROADS)
    w = gpd.read_file(WATER)
    assert len(roads) == int(r.intersects(window).sum()) == 13
    assert len(water) == int(w.intersects(window).sum()) == 2
    # under the data: the context group comes before every building, water before roads
    order = [el.get("class") for el in svg.iter() if el.get("class")]
    assert order.index("water") < order.index("road") < order.index("b")
    assert order.count("b") == len(b)
    # clipped to the map: every vertex inside the drawing (the water is 1 km, the map less)
    for el in [*roads, *water]:
        xy = np.array(re.findall(r"(-?[\d.]+),(-?[\d.]+)", el.get("d")), dtype=float)
        assert (xy[:, 0] >= -0.05).all() and (xy[:, 0] <= WIDTH + 0.05).all()
        assert (xy[:, 1] >= -0.05).all() and (xy[:, 1] <= HEIGHT + 0.05).all()
    # a road vertex lands where the file puts it (pixel → metres)
    x0, y0 = r.geometry.iloc[0].coords[0][:2]
    assert window.contains(shapely.Point(x0, y0))
    (px,), (py,) = frame.xy([x0], [y0])
    assert f"{px:.1f},{py:.1f}" in roads[0].get("d")
    # muted colours, a legend row each, the source in the attribution line
    assert "path.road { fill: none; stroke: #c9bfae" in page
    assert "path.water { fill: #cfe0ee; stroke: none; }" in page
    legend = re.search(r'<div id="legend">(.*?)</div>', page, re.S).group(1)
    assert "roads</li>" in legend and "water</li>" in legend
    assert CREDIT in page[page.index("</table>") :]


def test_match_map_draws_them_too() -> None:
    from mfa.io.matchmap import match_frame
    from mfa.io.svgmap import MapContext

    _, ctx, _, _, matches, coverage, _ = _inputs()
    frame = match_frame(matches, coverage)
    page = _match_page(_with_layers(MapContext(ctx.districts, None), frame.bounds))
    svg = _svg(page)
    window = shapely.box(*frame.bounds)
    for kind, file in (("road", ROADS), ("water", WATER)):
        meet = int(gpd.read_file(file).intersects(window).sum())
        assert len(svg.findall(f".//{SVG}path[@class='{kind}']")) == meet >= 1
    order = [el.tag.removeprefix(SVG) for el in svg.iter()]
    assert order.index("path") < order.index("line")  # context before the flow lines


def test_layers_in_another_crs_are_reprojected(tmp_path: Path) -> None:
    """The same roads and water as WGS 84 GeoJSON and an EPSG:3857 GeoPackage land where
    the EPSG:25832 originals are (to a centimetre)."""
    window = (631900.0, 6172900.0, 632700.0, 6173600.0)
    original = read_map_layer(ROADS, "roads", "EPSG:25832", window, "k")
    lonlat = tmp_path / "roads.geojson"
    gpd.read_file(ROADS).to_crs("EPSG:4326").to_file(lonlat, driver="GeoJSON")
    merc = tmp_path / "water.gpkg"
    gpd.read_file(WATER).to_crs("EPSG:3857").to_file(merc, driver="GPKG")
    back = read_map_layer(lonlat, "roads", "EPSG:25832", window, "k")
    assert len(back) == len(original) == 13
    for a, b in zip(original, back, strict=True):
        assert shapely.hausdorff_distance(a, b) < 0.01
    water = read_map_layer(merc, "water", "EPSG:25832", window, "k")
    clipped = shapely.clip_by_rect(gpd.read_file(WATER).geometry.values, *window)
    assert len(water) == 2
    assert abs(shapely.area(water).sum() - shapely.area(clipped).sum()) < 1.0  # m²
    # a window with no road: nothing, not an error
    assert len(read_map_layer(ROADS, "roads", "EPSG:25832", (0, 0, 10, 10), "k")) == 0


def _bad_files(tmp: Path) -> dict[str, tuple[Path, str, str]]:
    """kind of mistake → (file, layer it is given as, what the one line must say)."""
    no_crs = tmp / "nocrs.gpkg"
    with warnings.catch_warnings():  # the point of this file: it has no CRS
        warnings.simplefilter("ignore", UserWarning)
        gpd.read_file(ROADS).set_crs(None, allow_override=True).to_file(no_crs, driver="GPKG")
    broken = tmp / "broken.geojson"
    broken.write_bytes(ROADS.read_bytes()[:700])
    vrt = tmp / "roads.gpkg"
    vrt.write_text(
        '<OGRVRTDataSource><OGRVRTLayer name="x"><SrcDataSource>/etc/passwd'
        "</SrcDataSource></OGRVRTLayer></OGRVRTDataSource>"
    )
    points = tmp / "points.geojson"
    gpd.GeoDataFrame(geometry=[shapely.Point(632100, 6173100)], crs="EPSG:25832").to_file(
        points, driver="GeoJSON"
    )
    return {
        "polygons as roads": (WATER, "roads", "holds Polygon geometries; roads must be lines"),
        "lines as water": (ROADS, "water", "holds LineString geometries; water must be"),
        "points as roads": (points, "roads", "holds Point geometries"),
        "no CRS": (no_crs, "roads", "has no CRS"),
        "broken": (broken, "roads", "cannot be read as a GeoJSON roads map layer"),
        "VRT named .gpkg": (vrt, "roads", "its content is XML"),
        "missing": (tmp / "gone.geojson", "water", "does not exist"),
    }


def test_bad_map_files_are_one_line(tmp_path: Path) -> None:
    for case, (path, kind, said) in _bad_files(tmp_path).items():
        with pytest.raises(InputDataError, match=re.escape(said)) as info:
            check_map_layer(path, kind, f"--{kind}")
        assert "\n" not in str(info.value) and str(path) in str(info.value), case
    check_map_layer(ROADS, "roads", "k")
    check_map_layer(WATER, "water", "k")


PIPELINE = """
name = "t-map"
crs = "EPSG:25832"
[sources.register]
path = "{ROOT}/geodata/sample/bbr_bygning_2020.parquet"
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
[map]
roads = "{ROADS}"
water = "{WATER}"
attribution = "Indeholder data fra GeoDanmark / Danmarks Højdemodel, SDFI"
"""


def _mfa(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mfa.cli", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
    )


def test_validate_checks_the_map_layers(tmp_path: Path) -> None:
    good = write_pipeline(
        tmp_path, PIPELINE.replace("{ROADS}", str(ROADS)).replace("{WATER}", str(WATER))
    )
    r = _mfa("validate", good)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr
    for case, (path, kind, said) in _bad_files(tmp_path).items():
        roads, water = (path, WATER) if kind == "roads" else (ROADS, path)
        body = PIPELINE.replace("{ROADS}", str(roads)).replace("{WATER}", str(water))
        p = write_pipeline(tmp_path, body, "bad.toml")
        r = _mfa("validate", p)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1, (case, r.stderr)
        assert str(path) in lines[0] and f"map.{kind}" in lines[0], (case, lines[0])
        if case != "missing":  # a missing file is named by the path checks
            assert said in lines[0], (case, lines[0])
        assert "Traceback" not in r.stderr


#: From the Kalundborg tile to the nearest sample buildings (24 km south-east).
AREA = "POLYGON ((631900 6149000, 640000 6149000, 640000 6174100, 631900 6174100, 631900 6149000))"


@pytest.fixture(scope="module")
def map_run(tmp_path_factory) -> tuple[Path, Path]:
    """A run of the dk sample with [map] roads and water (copies, to be removed later)."""
    from mfa.run import run_pipeline

    tmp = tmp_path_factory.mktemp("maprun")
    roads, water = tmp / ROADS.name, tmp / WATER.name
    shutil.copyfile(ROADS, roads)
    shutil.copyfile(WATER, water)
    body = PIPELINE.replace("{ROADS}", str(roads)).replace("{WATER}", str(water))
    return run_pipeline(write_pipeline(tmp, body), tmp / "out"), tmp


def test_run_records_its_map_layers_and_query_draws_them(map_run, tmp_path: Path) -> None:
    run, tmp = map_run
    manifest = json.loads((run / "run.json").read_text())
    assert manifest["map_context"]["roads"] == str(tmp / ROADS.name)
    assert manifest["map_context"]["attribution"] == CREDIT
    roles = {i["role"]: i for i in manifest["inputs"]}
    import hashlib

    assert roles["map_roads"]["sha256"] == hashlib.sha256(ROADS.read_bytes()).hexdigest()
    (tmp_path / "area.wkt").write_text(AREA)
    out = tmp_path / "q.html"
    r = _mfa("query", run, "--within", tmp_path / "area.wkt", "--map", out)
    assert r.returncode == 0, r.stderr
    page = out.read_text()
    svg = _svg(page)
    assert len(svg.findall(f".//{SVG}path[@class='road']")) == 13
    assert len(svg.findall(f".//{SVG}path[@class='water']")) == 2
    tail = page[page.index("</table>") :]
    assert ROADS.name in tail and CREDIT in tail
    # --roads on the command line wins; a pipeline file gone since the run is a warning
    (tmp / WATER.name).unlink()
    r = _mfa("query", run, "--within", tmp_path / "area.wkt", "--map", out, "--roads", WATER)
    assert r.returncode == 2 and "roads must be lines" in r.stderr
    r = _mfa("query", run, "--within", tmp_path / "area.wkt", "--map", out)
    assert r.returncode == 0 and "water file is gone; the map has no water" in r.stderr
    svg = _svg(out.read_text())
    assert len(svg.findall(f".//{SVG}path[@class='water']")) == 0
    assert len(svg.findall(f".//{SVG}path[@class='road']")) == 13


def test_match_refuses_a_bad_roads_file_before_any_work(map_run, tmp_path: Path) -> None:
    run, _ = map_run
    out = tmp_path / "matching"
    r = _mfa(
        "match",
        run,
        "--demand",
        DATA / "match_demand_kalundborg.csv",
        "-o",
        out,
        "--map",
        tmp_path / "m.html",
        "--roads",
        WATER,
    )
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and "roads must be lines" in lines[0]
    assert "--roads" in lines[0] and not out.exists() and not (tmp_path / "m.html").exists()

"""The HTML maps (query and matching): what the legend says, classes that are not
degenerate, the run's districts as context, one page template; rendered for real in
headless Chromium."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
from hypothesis import given
from hypothesis import strategies as st

from mfa.io.classes import class_breaks, range_labels

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def map_file(tmp_path_factory, dk_sample_run: Path) -> Path:
    tmp = tmp_path_factory.mktemp("map")
    run = dk_sample_run
    out = tmp / "query.html"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "mfa.cli",
            "query",
            str(run),
            "--around",
            "643786,6150882",
            "--radius",
            "3000",
            "--years",
            "2026-2035",
            "--map",
            str(out),
        ],
        check=True,
        capture_output=True,
    )
    return out


def _legend(text: str) -> str:
    return re.search(r'<div id="legend">(.*?)</div>', text, re.S).group(1)


def _classes(text: str) -> list[tuple[str, str]]:
    """(colour, label) of each class row of the legend."""
    return re.findall(
        r'<li><span style="background:(#[0-9a-f]{6});border:1px solid #444">'
        r"</span>([^<]*)</li>",
        _legend(text),
    )


def test_legend_names_quantity_unit_scenario_and_years(map_file: Path) -> None:
    legend = _legend(map_file.read_text())
    assert "all materials, t per building" in legend
    assert "expected demolition outflow 2026–2035, scenario baseline" in legend
    assert "district outlines" in legend


def test_stock_map_of_one_material(dk_sample_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "brick.html"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "mfa.cli",
            "query",
            str(dk_sample_run),
            "--district",
            "7192",
            "--material",
            "brick",
            "--map",
            str(out),
        ],
        check=True,
        capture_output=True,
    )
    text = out.read_text()
    legend = _legend(text)
    assert "brick, t per building" in legend and "standing stock at the end of 2020" in legend
    # the district asked about is the area; its neighbours are drawn as context
    assert text.count('class="district"') >= 4 and "Store Magleby" in text


def test_classes_are_not_degenerate(map_file: Path) -> None:
    """The issue's map began "0.0 – 0.0 t": every class now has two different edges, and
    each building's colour is the class its tonnes fall in."""
    classes = _classes(map_file.read_text())
    assert len(classes) >= 3
    for _, label in classes:
        lo, hi = label.removesuffix(" t").split(" – ")
        assert lo != hi, label
    assert len({c for c, _ in classes}) == len(classes)


@given(st.lists(st.floats(0, 1e7, allow_nan=False), min_size=1, max_size=300))
def test_class_labels_are_distinct_ranges(values: list[float]) -> None:
    labels = range_labels(class_breaks(values), "t")
    assert len(set(labels)) == len(labels)
    for label in labels:
        lo, hi = label.removesuffix(" t").split(" – ")
        assert lo != hi, (values, labels)
    edges = class_breaks(values)
    assert edges[0] <= min(values) and edges[-1] >= max(values)


def test_context_is_the_runs_districts(map_file: Path, dk_sample_run: Path) -> None:
    """The district outlines drawn are the run's districts that meet the map's window."""
    text = map_file.read_text()
    d = gpd.read_parquet(dk_sample_run / "districts.parquet")
    near = d[d.intersects(shapely.Point(643786, 6150882).buffer(3000))]
    names = set(re.findall(r'<text class="district"[^>]*>([^<]*)</text>', text))
    assert len(near) >= 2 and names <= set(d.district_name) and names & set(near.district_name)
    assert text.count('<path class="district"') >= len(near)


def test_match_map_legend_and_shared_template(tmp_path: Path) -> None:
    from mfa.io.htmlmap import query_map_html
    from mfa.io.matchmap import match_map_html

    matches = pd.DataFrame(
        {
            "x0": [0.0],
            "y0": [0.0],
            "x1": [900.0],
            "y1": [400.0],
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
            "x": [900.0],
            "y": [400.0],
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
    page = match_map_html(matches, coverage, totals, "m", years=(2026, 2030), scenario="growth")
    legend = _legend(page)
    assert "material moved, t per match" in legend
    assert "2026–2030, scenario growth" in legend and "the widest 12.5 t" in legend
    assert "<td>–</td>" in page  # a mean distance that does not exist is not "nan"
    b = gpd.GeoDataFrame(
        {"building_id": ["b"], "mass_t": [3.0]}, geometry=[shapely.Point(10, 10)], crs="EPSG:25832"
    )
    other = query_map_html(None, b, totals[["material"]], "q", "mass_t", "standing stock")
    # one template: the same page around different maps
    head = lambda t: t[: t.index("<title>")]  # noqa: E731
    assert head(page) == head(other)
    tail = lambda t: t[t.index('<svg id="map"') : t.index(">", t.index('<svg id="map"'))]  # noqa: E731
    assert tail(page) == tail(other)


def test_map_is_self_contained(map_file: Path) -> None:
    text = map_file.read_text()
    assert "<svg" in text and 'id="legend"' in text and 'id="summary"' in text
    assert "http://" not in text.replace("http://www.w3.org", "") and "https://" not in text
    assert "<script" not in text  # opens offline, nothing to load
    assert text.count("<path") + text.count("<circle") > 50  # the area and the buildings


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (installed by .ci/run)")
def test_map_renders_in_headless_chromium(map_file: Path, tmp_path: Path) -> None:
    from PIL import Image

    shot = tmp_path / "map.png"
    subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--window-size=1400,900",
            f"--screenshot={shot}",
            map_file.as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    img = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    assert img.shape[0] >= 800 and img.shape[1] >= 1300
    colours = {tuple(c) for c in img.reshape(-1, 3)[::97]}
    assert len(colours) > 20  # not blank: map, legend and table drawn
    # the legend's darkest class, the area outline (#2c6fbb) and the district outlines
    # (#8a8a8a) are visible
    darkest = _classes(map_file.read_text())[-1][0]
    rgb = tuple(int(darkest[i : i + 2], 16) for i in (1, 3, 5))
    near = lambda rgb: (np.abs(img - np.array(rgb)).sum(axis=2) < 40).sum()  # noqa: E731
    assert near(rgb) > 10 and near((0x2C, 0x6F, 0xBB)) > 10 and near((0x8A, 0x8A, 0x8A)) > 10

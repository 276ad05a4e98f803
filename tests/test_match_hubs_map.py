"""Hubs on the matching's maps: a point layer in matching.gpkg and project.qgs (sized by the
tonnes taken in, labelled, on the time slider) and circles on the HTML map, whose per-hub
tonnes, capacity use and holding totals equal match.json's, which equal the match rows
(an independent year-by-year count here)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
import pyogrio
import pytest

from mfa.match.outputs import hub_points

DEMAND = Path("tests/data/match_demand_kalundborg.csv")
#: the depot of tests/data/match_hubs_kalundborg.csv, and a hub for wood only: no site
#: wants wood from a hub within reach of supply, so it takes nothing
HUBS = (
    "hub_id,x,y,capacity_t,handling_kgco2e_per_t,holding_kgco2e_per_t_year,materials\n"
    "depot,645000,6151000,100,2.0,0.5,brick;concrete\n"
    "wood-shed,690000,6151000,40,1.0,0.25,wood\n"
)
FIELDS = ["in_t", "out_t", "capacity_t", "peak_held_t", "capacity_use", "held_t_years"]
FIELDS += ["handling_kgco2e", "holding_kgco2e", "handling_dkk", "holding_dkk"]


@pytest.fixture(scope="module")
def matching(dk_sample_run: Path, tmp_path_factory) -> tuple[Path, Path]:
    """``mfa match`` through the CLI with two hubs, a site that builds after the supply
    (brick) and one that takes wood directly: the matching folder and its HTML map."""
    tmp = tmp_path_factory.mktemp("hubs")
    sites = tmp / "sites.csv"
    head, *rows = DEMAND.read_text().splitlines()
    wood = [r for r in rows if ",wood," in r]
    sites.write_text("\n".join([head, *wood, "late-site,644500,6151200,brick,300,2030,2030,0,\n"]))
    hubs = tmp / "hubs.csv"
    hubs.write_text(HUBS)
    out, page = tmp / "m", tmp / "map.html"
    args = [str(dk_sample_run), "--demand", str(sites), "-o", str(out), "--map", str(page)]
    args += ["--years", "2026-2027", "--hubs", str(hubs)]
    res = subprocess.run(
        [sys.executable, "-m", "mfa.cli", "match", *args],
        capture_output=True,
        text=True,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    return out, page


def _oracle(m: pd.DataFrame, hub: str) -> dict[str, float]:
    """Per hub from the match rows, year by year in plain Python: in and out t, the most
    held from one year to the next and the t·years held."""
    rows = m[m["via_hub"] == hub]
    entering = rows[rows["demand_id"] == ""]
    leaving = rows[rows["supply_id"] == ""]
    held, peak, t_years = 0.0, 0.0, 0.0
    if len(rows):
        for year in range(int(rows["year_in"].min()), int(rows["year_in"].max()) + 1):
            held += entering.loc[entering["year_in"] == year, "t"].sum()
            held -= leaving.loc[leaving["year_in"] == year, "t"].sum()
            peak, t_years = max(peak, held), t_years + held
    return {
        "in_t": entering["t"].sum(),
        "out_t": leaving["t"].sum(),
        "peak_held_t": peak,
        "held_t_years": t_years,
        "holding_kgco2e": leaving["holding_kgco2e"].sum(),
        "handling_kgco2e": entering["handling_kgco2e"].sum(),
    }


def test_match_json_hubs_equal_the_match_rows(matching: tuple[Path, Path]) -> None:
    out, _ = matching
    record = json.loads((out / "match.json").read_text())
    hubs = pd.DataFrame(record["hubs"]).set_index("hub_id")
    assert list(hubs.index) == ["depot", "wood-shed"]  # every hub, used or not
    m = pd.read_parquet(out / "matches.parquet")
    for hub, price in (("depot", 0.5), ("wood-shed", 0.25)):
        want = _oracle(m, hub)
        for key, value in want.items():
            assert hubs.loc[hub, key] == pytest.approx(value, abs=1e-6), (hub, key)
        # holding is paid per t·year held: the price × t·years is the rows' holding
        assert hubs.loc[hub, "holding_kgco2e"] == pytest.approx(
            price * hubs.loc[hub, "held_t_years"], abs=1e-6
        )
        use = hubs.loc[hub, "peak_held_t"] / hubs.loc[hub, "capacity_t"]
        assert hubs.loc[hub, "capacity_use"] == pytest.approx(use)
    # the depot fills its 100 t until the site builds in 2030 (it wants 300 t of brick)
    assert hubs.loc["depot", "peak_held_t"] == pytest.approx(100.0)
    assert hubs.loc["depot", "capacity_use"] == pytest.approx(1.0)
    assert 300.0 <= hubs.loc["depot", "held_t_years"] <= 400.0
    assert (hubs.loc["depot", "year_from"], hubs.loc["depot", "year_to"]) == (2026, 2030)
    assert hubs.loc["wood-shed", ["in_t", "out_t", "peak_held_t", "capacity_use"]].eq(0).all()
    years = record["years"]
    assert hubs.loc["wood-shed", "year_from"] <= years[0]  # unused: the whole span
    # the GeoPackage layer and the CSV carry the same numbers
    layer = pyogrio.read_dataframe(out / "matching.gpkg", layer="hubs").set_index("hub_id")
    assert (layer.geom_type == "Point").all() and layer.crs.to_epsg() == 25832
    assert list(layer.index) == list(hubs.index)
    np.testing.assert_allclose(layer[FIELDS].to_numpy(float), hubs[FIELDS].to_numpy(float))
    assert layer.geometry.x.tolist() == [645000.0, 690000.0]
    summary = (out / "summary.md").read_text()
    assert "| hub | in t | out t | peak held t | capacity use |" in summary
    assert "| wood-shed | 0.0 | 0.0 | 0.0 | 0% |" in summary
    assert f"| depot | {hubs.loc['depot', 'in_t']:,.1f} |" in summary
    csv = pd.read_csv(out / "hubs.csv").set_index("hub_id")
    np.testing.assert_allclose(csv[FIELDS].to_numpy(float), hubs[FIELDS].to_numpy(float))


def test_the_html_map_draws_each_hub_with_the_match_json_numbers(
    matching: tuple[Path, Path],
) -> None:
    out, page = matching
    record = json.loads((out / "match.json").read_text())
    text = page.read_text()
    svg = ET.fromstring(text[text.index("<svg") : text.index("</svg>") + 6])
    groups = [g for g in svg.iter("{http://www.w3.org/2000/svg}g") if g.get("class") == "hub"]
    groups = groups or [g for g in svg.iter("g") if g.get("class") == "hub"]
    by_id = {g.get("data-hub-id"): g for g in groups}
    assert sorted(by_id) == ["depot", "wood-shed"]
    for hub in record["hubs"]:
        g = by_id[hub["hub_id"]]
        for f in FIELDS:
            assert float(g.get("data-" + f.replace("_", "-"))) == hub[f], (hub["hub_id"], f)
        assert g.find("text").text == hub["hub_id"]  # labelled
        assert f"{hub['in_t']:,.1f} t in" in g.find("title").text
    r = {k: float(g.find("circle").get("r")) for k, g in by_id.items()}
    assert r["depot"] > r["wood-shed"]  # sized by tonnes taken in
    assert "hub, area ∝ t taken in" in text and '<table id="hubs">' in text


def test_the_hub_style_sizes_by_tonnes_and_labels_the_name(matching: tuple[Path, Path]) -> None:
    out, _ = matching
    root = ET.fromstring((out / "hubs.qml").read_text())
    assert root.get("labelsEnabled") == "1"
    r = root.find("renderer-v2")
    assert (r.get("type"), r.get("attr"), r.get("graduatedMethod")) == (
        "graduatedSymbol",
        "in_t",
        "GraduatedSize",
    )
    sizes = [
        float(p.get("v")) for p in r.iterfind("symbols/symbol/layer/prop") if p.get("k") == "size"
    ]
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1]
    assert root.find("labeling/settings/text-style").get("fieldName") == "hub_id"
    assert root.find("temporal").get("startField") == "date_from"
    project = ET.fromstring((out / "project.qgs").read_text())
    hub_layer = [
        ml for ml in project.iter("maplayer") if ml.findtext("datasource").endswith("=hubs")
    ]
    assert len(hub_layer) == 1 and hub_layer[0].get("labelsEnabled") == "1"


def test_hub_points_without_hub_rows() -> None:
    from mfa.match.allocate import Allocation

    empty = pd.DataFrame(
        {c: [] for c in ["via_hub", "supply_id", "demand_id", "t", "year_in"]}
    ).astype({"t": float, "year_in": int, "via_hub": str})
    for c in ("handling", "holding"):
        for u in ("kgco2e", "dkk"):
            empty[f"{c}_{u}"] = pd.Series(dtype=float)
    a = Allocation(empty, pd.DataFrame(), pd.DataFrame(), 0.0, "ortools", 0, 0)
    hubs = pd.DataFrame(
        {"hub_id": ["b", "a"], "x": [1.0, 2.0], "y": [3.0, 4.0], "capacity_t": [5.0, 6.0]}
    ).assign(materials="")
    pts = hub_points(a, hubs, (2026, 2030))
    assert pts["hub_id"].tolist() == ["a", "b"] and pts["x"].tolist() == [2.0, 1.0]
    assert pts[["in_t", "peak_held_t", "capacity_use", "held_t_years"]].eq(0).all().all()
    assert pts["year_from"].tolist() == [2026, 2026] and pts["year_to"].tolist() == [2030, 2030]


@pytest.mark.slow
def test_qgis_draws_the_hubs_sized_labelled_and_on_the_time_slider(
    matching: tuple[Path, Path], tmp_path: Path
) -> None:
    qgis_python = "/usr/bin/python3"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["QT_QPA_PLATFORM"] = "offscreen"
    if (
        not Path(qgis_python).exists()
        or subprocess.run(
            [qgis_python, "-c", "import qgis.core"], capture_output=True, env=env, timeout=120
        ).returncode
    ):
        pytest.skip("needs QGIS's Python bindings in /usr/bin/python3 (python3-qgis)")
    out, _ = matching
    done = subprocess.run(
        [
            qgis_python,
            str(Path(__file__).with_name("qgis_match_check.py")),
            str(out),
            str(tmp_path / "hubs.png"),
            "hubs",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    record = json.loads((out / "match.json").read_text())
    hubs = pd.DataFrame(record["hubs"])
    assert seen["direct"]["hubs"] == {
        "valid": True,
        "features": len(hubs),
        "renderer": "graduatedSymbol",
    }
    layer = seen["layers"]["hubs"]
    assert layer["group"] == "Reuse matching" and layer["visible"] and layer["valid"]
    assert layer["attribute"] == "in_t" and layer["features"] == 2
    assert layer["labels"] == {"enabled": True, "field": "hub_id"}
    assert layer["size_method"] is True  # QgsGraduatedSymbolRenderer::GraduatedSize
    assert layer["sizes"] == sorted(layer["sizes"]) and layer["sizes"][0] < layer["sizes"][-1]
    assert layer["temporal"] == {
        "active": True,
        "mode": 2,
        "start_field": "date_from",
        "end_field": "date_to",
    }
    # each year's frame shows the hubs whose years include it (oracle: match.json)
    for year, rows in layer["frames"].items():
        y = int(year)
        want = hubs[(hubs["year_from"] <= y) & (hubs["year_to"] >= y)]
        pairs = zip(want["year_from"], want["year_to"], strict=True)
        assert rows == sorted([int(a), int(b)] for a, b in pairs)
    assert any(len(rows) < len(hubs) for rows in layer["frames"].values())  # it filters
    assert seen["drawing_order"][0] == "hubs"  # drawn on top
    assert seen["drawn_pixels"] > 50

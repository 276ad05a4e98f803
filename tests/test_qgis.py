"""QGIS-ready outputs: style and project XML, the GeoPackage, and the files in real QGIS.

The last tests open a run's ``project.qgs`` and ``layers.gpkg`` in Debian's QGIS (its
Python bindings live in the system Python, not in the venv): ``tests/qgis_check.py`` runs
there and reports what QGIS sees as JSON.
"""

from __future__ import annotations

import itertools
import json
import os
import sqlite3
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pytest
import shapely

from mfa.errors import ValidationError
from mfa.io.qgis import (
    FLOWS_TABLE,
    GPKG,
    PROJECT,
    GraduatedStyle,
    ProjectLayer,
    check_geopackage,
    class_breaks,
    color_ramp,
    flows_expression,
    format_value,
    project_xml,
    qml,
    range_labels,
    write_geopackage,
    write_qgis_outputs,
)
from mfa.run import STEPS, prepare, publish, run_pipeline

QGIS_PYTHON = "/usr/bin/python3"
CHECK = Path(__file__).with_name("qgis_check.py")
CRS = "EPSG:25832"
LAYERS = ("buildings", "districts", "grid", "quality", "flows")


def _sig_digits(x: float) -> int:
    digits = f"{x:.10e}".split("e")[0].replace(".", "").rstrip("0")
    return max(1, len(digits.lstrip("-")))


# --------------------------------------------------------------------------- pure parts


def test_class_breaks_are_rounded_quantiles_that_cover_the_data() -> None:
    v = np.random.default_rng(1).lognormal(4, 1.5, 5000)
    b = class_breaks(v, 5)
    assert len(b) == 6 and b[0] == 0 and b[-1] >= v.max()
    assert all(lo < hi for lo, hi in itertools.pairwise(b))
    assert all(_sig_digits(x) <= 2 for x in b[1:])
    share = np.histogram(v, bins=b)[0] / len(v)
    assert share.sum() == 1 and (np.abs(share - 0.2) < 0.05).all()  # quantile classes


def test_class_breaks_edge_cases() -> None:
    assert class_breaks([]) == (0.0, 1.0)
    assert class_breaks([np.nan, np.inf]) == (0.0, 1.0)
    assert class_breaks([7.0] * 10) == (0.0, 7.0)
    assert class_breaks([0.0, 0.0]) == (0.0, 1.0)
    assert class_breaks([1, 1, 1, 2, 2, 2], 5) == (0.0, 1.0, 2.0)  # repeats: fewer classes
    neg = class_breaks([-123.0, 5.0, 40.0, 900.0])
    assert neg[0] <= -123 and neg[-1] >= 900


def test_colours_and_labels() -> None:
    assert color_ramp("YlOrBr", 9) == (
        "#ffffe5",
        "#fff7bc",
        "#fee391",
        "#fec44f",
        "#fe9929",
        "#ec7014",
        "#cc4c02",
        "#993404",
        "#662506",
    )
    five = color_ramp("RdYlGn", 5)
    assert five[0] == "#d73027" and five[-1] == "#1a9850" and len(set(five)) == 5
    assert [format_value(x) for x in (0, 0.045, 0.45, 1.2, 21, 14_000)] == [
        "0",
        "0.045",
        "0.45",
        "1.2",
        "21",
        "14,000",
    ]
    assert range_labels((0, 0.5, 1), "%", scale=100) == ("0 – 50 %", "50 – 100 %")
    assert range_labels((0, 21, 15_000), "t") == ("0 – 21 t", "21 – 15,000 t")


def _style(**kw) -> GraduatedStyle:
    base = {
        "expression": "mass_t_per_ha",
        "breaks": (0.0, 10.0, 100.0),
        "colors": ("#ffffcc", "#800026"),
        "labels": ("0 – 10 t/ha", "10 – 100 t/ha"),
        "geometry": "polygon",
        "unit": "t/ha",
    }
    return GraduatedStyle(**{**base, **kw})


def test_qml_is_a_graduated_style_qgis_reads() -> None:
    root = ET.fromstring(qml(_style()).split("\n", 1)[1])
    r = root.find("renderer-v2")
    assert r is not None and r.get("type") == "graduatedSymbol"
    assert r.get("attr") == "mass_t_per_ha"
    ranges = r.findall("ranges/range")
    assert [(x.get("lower"), x.get("upper"), x.get("label")) for x in ranges] == [
        ("0", "10", "0 – 10 t/ha"),
        ("10", "100", "10 – 100 t/ha"),
    ]
    colours = [s.find("layer/prop[@k='color']").get("v") for s in r.findall("symbols/symbol")]
    assert colours == ["255,255,204,255", "128,0,38,255"]
    assert root.find("temporal").get("enabled") == "0"
    t = ET.fromstring(qml(_style(temporal_field="date")).split("\n", 1)[1]).find("temporal")
    assert (t.get("enabled"), t.get("mode"), t.get("startField")) == ("1", "1", "date")
    assert t.get("endField") == ""
    ranged = _style(temporal_field="date_from", temporal_end_field="date_to")
    t = ET.fromstring(qml(ranged).split("\n", 1)[1]).find("temporal")
    got = (t.get("enabled"), t.get("mode"), t.get("startField"), t.get("endField"))
    assert got == ("1", "2", "date_from", "date_to")  # ModeFeatureDateTimeStartAndEndFromFields
    with pytest.raises(ValueError, match="3 edges need 2 colours"):
        _style(colors=("#ffffff",))


def test_flows_expression_picks_one_scenario_and_material() -> None:
    e = flows_expression("Bob's plan")
    assert "coalesce(@mfa_flows_scenario, 'Bob''s plan')" in e
    assert "coalesce(@mfa_flows_material, 'mass')" in e and '"outflow_t"' in e


def test_project_xml_layers_groups_and_relative_paths() -> None:
    layers = [
        ProjectLayer("buildings", "Stocks", _style(geometry="point"), "Point"),
        ProjectLayer("districts", "Stocks", _style(), "MultiPolygon"),
        ProjectLayer(
            "flows", "Flows", _style(temporal_field="date"), "MultiPolygon", visible=False
        ),
    ]
    text = project_xml(layers, CRS, (0, 0, 10, 10), "t", years=(2020, 2035))
    root = ET.fromstring(text.split("\n", 1)[1])
    assert root.find("projectCrs/spatialrefsys/authid").text == CRS
    groups = root.findall("layer-tree-group/layer-tree-group")
    assert [g.get("name") for g in groups] == ["Stocks", "Flows"]
    assert [g.get("checked") for g in groups] == ["Qt::Checked", "Qt::Unchecked"]
    sources = [m.find("datasource").text for m in root.iter("maplayer")]
    assert sources == [f"./{GPKG}|layername={n}" for n in ("buildings", "districts", "flows")]
    assert root.find("properties/Paths/Absolute").text == "false"
    # QGIS replaces a layer id of 10 characters or fewer, which breaks the tree
    assert all(len(m.find("id").text) > 10 for m in root.iter("maplayer"))
    assert root.find("ProjectTimeSettings/TemporalRange/start").text == "2020-01-01T00:00:00"
    assert root.find("ProjectTimeSettings/TemporalRange/end").text == "2036-01-01T00:00:00"


def _small_run() -> dict[str, gpd.GeoDataFrame]:
    """Two districts, three buildings, and flows that include an unassigned district."""
    districts = gpd.GeoDataFrame(
        {"district_id": ["a", "b"], "mass_t_per_ha": [1.5, 40.0]},
        geometry=[shapely.box(0, 0, 100, 100), shapely.box(100, 0, 300, 100)],
        crs=CRS,
    )
    buildings = gpd.GeoDataFrame(
        {"building_id": ["1", "2", "3"], "mass_t": [10.0, 250.0, 3000.0]},
        geometry=shapely.points([(10, 10), (150, 50), (250, 50)]),
        crs=CRS,
    )
    rows = [
        (s, d, y, m)
        for s in ("baseline", "growth")
        for d in ("a", "b", "_unassigned")
        for y in (2020, 2021)
        for m in ("brick", "mass")
    ]
    flows = pd.DataFrame(rows, columns=["scenario", "district_id", "year", "material"])
    flows["outflow_t"] = np.arange(len(flows), dtype=float)
    flows["date"] = pd.to_datetime(flows["year"].astype(str) + "-12-31").dt.date
    geoms = flows["district_id"].map(districts.set_index("district_id").geometry)
    flows = gpd.GeoDataFrame(flows, geometry=geoms.to_numpy(), crs=CRS)
    return {"buildings": buildings, "districts": districts, "flows": flows}


def test_geopackage_view_styles_and_check(tmp_path: Path) -> None:
    layers = _small_run()
    report = write_qgis_outputs(tmp_path, layers, CRS, "small", (2020, 2021))
    gpkg = tmp_path / GPKG
    with sqlite3.connect(gpkg) as con:
        assert con.execute("PRAGMA application_id").fetchone()[0] == 0x47504B47  # "GPKG"
        assert con.execute("PRAGMA user_version").fetchone()[0] == 10300  # 1.3
        styles = dict(
            con.execute("SELECT f_table_name, styleQML FROM layer_styles WHERE useAsDefault")
        )
        kinds = dict(con.execute("SELECT table_name, data_type FROM gpkg_contents"))
    con.close()
    assert kinds == {
        "buildings": "features",
        "districts": "features",
        FLOWS_TABLE: "attributes",
        "flows": "features",
        "layer_styles": "attributes",
    }
    for name in layers:
        assert styles[name] == (tmp_path / f"{name}.qml").read_text()
    # the flows view gives every row its district's polygon (none for _unassigned)
    view = pyogrio.read_dataframe(gpkg, layer="flows")
    assert len(view) == len(layers["flows"]) == report["layers"]["flows"]["rows"]
    merged = view.merge(layers["districts"], on="district_id", how="left")
    assigned = view["district_id"] != "_unassigned"
    assert view.geometry[assigned].geom_equals(merged.geometry_y[assigned]).all()
    assert view.geometry[~assigned].isna().all()
    assert (view["date"].dt.year == view["year"]).all()
    assert report["layers"]["flows"]["field"] == flows_expression("baseline")
    rows = {n: len(g) for n, g in layers.items()}
    assert check_geopackage(gpkg, rows)["status"] == "passed"
    with pytest.raises(ValidationError, match="layer buildings has 3 rows, its GeoParquet 4"):
        check_geopackage(gpkg, {**rows, "buildings": 4})
    with pytest.raises(ValidationError, match=r"layers \['grid'\] missing"):
        check_geopackage(gpkg, {**rows, "grid": 1})
    project = (tmp_path / PROJECT).read_text()
    assert str(tmp_path) not in project and f"./{GPKG}|layername=flows" in project


def test_flows_without_districts_are_a_table(tmp_path: Path) -> None:
    layers = _small_run()
    del layers["districts"]
    flows = layers["flows"]
    layers["flows"] = gpd.GeoDataFrame(
        flows.drop(columns="geometry"), geometry=gpd.GeoSeries([None] * len(flows)), crs=CRS
    )
    report = write_qgis_outputs(tmp_path, layers, CRS, "small", (2020, 2021))
    assert report["layers"]["flows"] == {"rows": 24, "field": None, "classes": 0, "breaks": []}
    with sqlite3.connect(tmp_path / GPKG) as con:
        kinds = dict(con.execute("SELECT table_name, data_type FROM gpkg_contents"))
        column = con.execute(
            "SELECT f_geometry_column FROM layer_styles WHERE f_table_name = 'flows'"
        ).fetchone()[0]
    con.close()
    assert kinds["flows"] == "attributes" and FLOWS_TABLE not in kinds and column == ""
    root = ET.fromstring((tmp_path / PROJECT).read_text().split("\n", 1)[1])
    flows_layer = next(
        m for m in root.iter("maplayer") if m.find("layername").text.startswith("flows: ")
    )
    assert flows_layer.get("geometry") == "No geometry" and flows_layer.find("renderer-v2") is None
    assert flows_layer.find("temporal").get("startField") == "date"


def test_publish_rejects_a_geopackage_that_does_not_match(bbr_pipeline, tmp_path: Path) -> None:
    pipeline = bbr_pipeline()
    out = tmp_path / "out"
    work = prepare(pipeline, out)
    for step in STEPS[:-1]:  # all but publish
        step.run(work)
    layers = {n: gpd.read_parquet(work / f"{n}.parquet") for n in ("districts", "quality")}
    layers["buildings"] = gpd.read_parquet(work / "buildings.parquet").iloc[:-1]
    write_geopackage(work / GPKG, layers)  # one building short
    with pytest.raises(ValidationError, match="layer buildings has"):
        publish(work)
    assert not (out / "t-bbr" / "latest").exists()


# --------------------------------------------------------------------------- a real run


@pytest.fixture(scope="module")
def dk_run(dk_sample_run: Path) -> Path:
    return dk_sample_run


def test_run_folder_has_the_qgis_files(dk_run: Path) -> None:
    m = json.loads((dk_run / "run.json").read_text())
    assert m["checks"]["geopackage"]["status"] == "passed"
    in_tree_order = ("buildings", "grid", "districts", "flows", "quality")
    assert m["qgis"]["styles"] == [f"{n}.qml" for n in in_tree_order]
    assert "qgis" in m["timings_s"] and "## Open in QGIS" in (dk_run / "report.md").read_text()
    for name in LAYERS:
        assert (dk_run / f"{name}.qml").is_file()
        assert pyogrio.read_info(dk_run / GPKG, layer=name, force_feature_count=True)[
            "features"
        ] == len(gpd.read_parquet(dk_run / f"{name}.parquet"))
    assert str(dk_run) not in (dk_run / PROJECT).read_text()


@pytest.fixture(scope="session")
def qgis_python() -> str:
    """The system Python with QGIS's bindings, or a skip that says how to get it."""
    reason = (
        f"needs QGIS's Python bindings in {QGIS_PYTHON} "
        "(apt-get install --no-install-recommends python3-qgis qgis-providers; .ci/run does)"
    )
    if not Path(QGIS_PYTHON).exists():
        pytest.skip(reason)
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    found = subprocess.run(
        [QGIS_PYTHON, "-c", "import qgis.core"], capture_output=True, env=env, timeout=120
    )
    if found.returncode != 0:
        pytest.skip(reason)
    return QGIS_PYTHON


def _qgis_check(python: str, run: Path, images: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["QT_QPA_PLATFORM"] = "offscreen"
    done = subprocess.run(
        [python, str(CHECK), str(run), str(images)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _colours(png: Path) -> tuple[int, float]:
    """Distinct colours and the share of pixels that are not the white background."""
    from PIL import Image

    rgb = np.asarray(Image.open(png).convert("RGB")).reshape(-1, 3)
    distinct = len(np.unique(rgb, axis=0))
    return distinct, float((rgb != 255).any(axis=1).mean())


def _classes(style_file: Path) -> int:
    return len(ET.parse(style_file).getroot().findall("renderer-v2/ranges/range"))


@pytest.mark.slow
def test_qgis_opens_the_styled_project(qgis_python: str, dk_run: Path, tmp_path: Path) -> None:
    images = tmp_path / "png"
    r = _qgis_check(qgis_python, dk_run, images)
    assert r["read"] and r["crs"] == CRS and r["absolute_paths"] is False
    frames = {n: gpd.read_parquet(dk_run / f"{n}.parquet") for n in LAYERS}
    # the tree names each layer by its table and what its colours show
    names = {v["table"]: n for n, v in r["layers"].items()}
    assert set(names) == set(LAYERS) and len(names) == len(r["layers"])
    assert names["buildings"] == "buildings: all materials, t per building"
    assert names["grid"] == "grid: all materials, t per hectare of the grid cell"
    assert names["districts"] == "districts: all materials, t per hectare of the whole district"
    assert names["flows"] == (
        "flows: demolition outflow in the year, t per district, scenario baseline, all materials"
    )
    r["layers"] = {v["table"]: v for v in r["layers"].values()}
    r["drawing_order"] = [n.split(":")[0] for n in r["drawing_order"]]
    attribute = {
        "buildings": "mass_t",
        "districts": "mass_t_per_ha",
        "grid": "mass_t_per_ha",
        "quality": "gfa_observed",
    }
    unit = {"buildings": " t", "districts": " t/ha", "grid": " t/ha", "quality": " %"}
    for name, frame in frames.items():
        info = r["layers"][name]
        assert info["valid"], name
        assert info["features"] == len(frame), name
        assert info["crs"] == CRS, name
        assert info["renderer"] == "graduatedSymbol", name
        assert info["classes"] == _classes(dk_run / f"{name}.qml") >= 3, name
        assert info["attribute"] == attribute.get(name, flows_expression("baseline")), name
        assert all(label.endswith(unit.get(name, " t")) for label in info["labels"]), name
        assert len(set(info["colors"])) == info["classes"], name
        # the layer opened straight from the GeoPackage gets its stored default style
        direct = r["direct"][name]
        assert direct["valid"] and direct["features"] == len(frame), name
        assert (direct["renderer"], direct["classes"]) == ("graduatedSymbol", info["classes"])
        assert direct["without_default_style"] == "singleSymbol", name
        assert direct["default_style"]["loaded"] and direct["qml"]["loaded"], name
        assert direct["qml"]["attribute"] == info["attribute"], name
    groups = {n: (v["group"], v["visible"]) for n, v in r["layers"].items()}
    assert groups == {
        "buildings": ("Stocks", True),
        "grid": ("Stocks", True),
        "districts": ("Stocks", True),
        "flows": ("Flows", False),
        "quality": ("Data quality", False),
    }
    assert r["drawing_order"][:3] == ["buildings", "grid", "districts"]
    # grid, districts and buildings in clearly different palettes: districts grey, grid
    # yellow to brown (red ≥ green ≥ blue), buildings yellow-green to blue (its darker
    # half blue over red); no colour shared
    rgb = {
        n: [tuple(int(c[i : i + 2], 16) for i in (1, 3, 5)) for c in r["layers"][n]["colors"]]
        for n in ("buildings", "grid", "districts")
    }
    assert all(max(c) - min(c) <= 2 for c in rgb["districts"])
    assert all(red >= green >= blue and red - blue > 40 for red, green, blue in rgb["grid"])
    darker = rgb["buildings"][len(rgb["buildings"]) // 2 :]
    assert all(blue > red + 40 for red, _, blue in darker)
    colours = [set(v) for v in rgb.values()]
    assert not (colours[0] & colours[1] or colours[0] & colours[2] or colours[1] & colours[2])
    x0, y0, x1, y1 = r["view_extent"]
    for frame in frames.values():
        bx0, by0, bx1, by1 = frame.total_bounds
        assert x0 <= bx0 and y0 <= by0 and x1 >= bx1 and y1 >= by1

    # flows: temporal on the date field, one calendar year per frame, one series drawn
    flows = frames["flows"]
    temporal = {"active": True, "mode": 1, "start_field": "date"}  # instant from field
    assert r["layers"]["flows"]["temporal"] == temporal
    assert r["direct"]["flows"]["default_style"]["temporal"] == temporal
    assert r["direct"]["flows"]["qml"]["temporal"] == temporal
    assert r["layers"]["districts"]["temporal"]["active"] is False
    assert r["time"] == {"start": "2020-01-01", "end": "2036-01-01", "step": 1.0, "unit": "years"}
    year = r["flows_frame"]["year"]
    assert r["flows_frame"]["years"] == [year]
    assert r["flows_frame"]["rows"] == int((flows["year"] == year).sum())
    one_series = (flows["scenario"] == "baseline") & (flows["material"] == "mass")
    assert r["flows_drawn_rows"] == int(one_series.sum())
    assert r["variables"] == {"mfa_flows_scenario": "baseline", "mfa_flows_material": "mass"}

    # the rendered maps are not blank
    assert r["images"] == ["flows.png", "project.png"]
    for png, min_colours in (("project.png", 20), ("flows.png", 5)):
        distinct, drawn = _colours(images / png)
        assert distinct >= min_colours and drawn > 0.02, (png, distinct, drawn)


@pytest.mark.slow
def test_qgis_splits_a_layer_of_points_and_polygons(
    qgis_python: str, rules, tmp_path: Path
) -> None:
    """A conflated run keeps register-only points among the footprints: two layers."""
    from tests.test_conflate import aarhus_footprints, conflation_pipeline

    pipeline = conflation_pipeline(aarhus_footprints(rules), tmp_path)
    run = run_pipeline(pipeline, tmp_path / "out")
    buildings = gpd.read_parquet(run / "buildings.parquet")
    points = int((buildings.geom_type == "Point").sum())
    assert 0 < points < len(buildings)
    r = _qgis_check(qgis_python, run, tmp_path / "png")
    title = "all materials, t per building"
    assert set(r["layers"]) == {f"buildings: {title}", f"buildings (points): {title}"}
    assert r["layers"][f"buildings (points): {title}"]["features"] == points
    assert r["layers"][f"buildings: {title}"]["features"] == len(buildings) - points
    assert all(v["renderer"] == "graduatedSymbol" for v in r["layers"].values())
    assert r["drawing_order"] == [f"buildings (points): {title}", f"buildings: {title}"]
    assert _colours(tmp_path / "png" / "project.png")[0] >= 5

"""Reuse matching end to end: supply from a real run equals `mfa query`'s outflows, road
km equal networkx shortest paths on a real OSM extract, bad input gives one-line errors,
outputs are written atomically and never inside a run."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import geopandas as gpd
import networkx as nx
import numpy as np
import osmnx as ox
import pandas as pd
import pyogrio
import pytest
import shapely

from mfa.errors import ConfigError, InputDataError, PublishError
from mfa.io.match import DRIVE, load_road_network
from mfa.match import match_run
from mfa.match.distances import pairs_within, road_km
from mfa.query import availability

DEMAND = Path("tests/data/match_demand_kalundborg.csv")
OAKLAND = Path("tests/data/osm_west_oakland.osm.bz2")


@pytest.fixture(scope="module")
def run(dk_sample_run: Path) -> Path:
    return dk_sample_run


@pytest.mark.parametrize("unit", ["building", "grid"])
def test_run_supply_sums_to_the_query_outflow(run: Path, tmp_path: Path, unit: str) -> None:
    r = match_run(run, DEMAND, years=(2026, 2030), unit=unit)
    fate = r.allocation.supply_fate
    b = gpd.read_parquet(run / "buildings.parquet")
    area = shapely.box(*b.total_bounds).buffer(1)
    q = availability(run, area, years=(2026, 2030)).summary.set_index("material")
    got = fate.groupby("material")["t"].sum()
    for m in ("concrete", "brick", "wood"):
        assert got[m] == pytest.approx(q.loc[m, "t"], rel=1e-9)
    assert set(fate["year_from"]) == set(range(2026, 2031))
    assert (fate["t_p05"] <= fate["t_p50"] + 1e-12).all() and (
        fate["t_p50"] <= fate["t_p95"] + 1e-12
    ).all()


def test_hazardous_buildings_are_never_matched(run: Path) -> None:
    r = match_run(run, DEMAND, years=(2026, 2035), unit="building")
    fate = r.allocation.supply_fate
    haz = fate[fate["fate"] == "hazardous"]
    assert len(haz) > 0 and (haz["reused_t"] == 0).all()
    b = gpd.read_parquet(run / "buildings.parquet")
    flagged = set(b.loc[b["hazard"].notna(), "building_id"])
    used = {s.split("@")[0] for s in r.allocation.matches["supply_id"]}
    assert not (used & flagged)


def test_cli_writes_the_outputs_and_a_student_gets_an_answer(run: Path, tmp_path: Path) -> None:
    out = tmp_path / "kalundborg"
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "mfa.cli",
            "match",
            str(run),
            "--demand",
            str(DEMAND),
            "-o",
            str(out),
            "--map",
            str(tmp_path / "map.html"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    assert "come from reuse" in res.stdout and "Sensitivity to the haul limit" in res.stdout
    assert "Objective: minimise 1 × kg CO2e + 0 × DKK (net CO2 only)" in res.stdout
    lines = gpd.read_parquet(out / "matches.parquet")
    assert len(lines) > 0 and (lines.geom_type == "LineString").all()
    assert lines.crs.to_epsg() == 25832
    assert (lines["km"] <= 25 + 1e-9).all() and set(lines["distance_kind"]) == {"straight_detour"}
    np.testing.assert_allclose(
        lines["net_kgco2e"], lines["transport_kgco2e"] - lines["avoided_kgco2e"]
    )
    np.testing.assert_allclose(lines["net_dkk"], lines["transport_dkk"] - lines["avoided_dkk"])
    gpkg = {name: kind for name, kind in pyogrio.list_layers(out / "matching.gpkg")}
    gpkg.pop("layer_styles")  # the attribute table of the default styles
    assert gpkg == {"matches": "LineString", "supply_fate": "Point", "demand_coverage": "Point"}
    assert pyogrio.read_info(out / "matching.gpkg", layer="matches")["features"] == len(lines)
    with sqlite3.connect(out / "matching.gpkg") as con:
        styled = {r[0] for r in con.execute("SELECT f_table_name FROM layer_styles")}
    con.close()
    assert styled == set(gpkg)
    for name in gpkg:
        root = ET.fromstring((out / f"{name}.qml").read_text())
        assert root.find("renderer-v2").get("type") == "graduatedSymbol"
    page = (tmp_path / "map.html").read_text()
    assert page.count('<line class="match"') == len(lines) and page.count('class="site"') == 5
    assert "http" not in page.split("<svg")[1]  # nothing fetched from elsewhere
    record = json.loads((out / "match.json").read_text())
    assert record["balance_residual_kg"] == 0 and record["solver"] == "ortools"
    assert record["weights"] == {"co2_per_kgco2e": 1.0, "cost_per_dkk": 0.0}
    assert record["objective"] == record["objective_kgco2e"]
    assert record["objective_dkk"] == pytest.approx(lines["net_dkk"].sum(), abs=0.0005 * 1e4)
    assert record["seconds"] < 30
    cov = pd.read_csv(out / "demand_coverage.csv")
    np.testing.assert_allclose(cov["matched_t"] + cov["virgin_t"], cov["t"], atol=1e-6)
    # sensitivity: a larger haul limit never reuses less
    sens = pd.DataFrame(record["sensitivity"]).sort_values("max_km")
    assert sens["reused_t"].is_monotonic_increasing
    # a second matching into the same folder replaces it; a folder mfa did not write is kept
    match_run(run, DEMAND, out=out)
    other = tmp_path / "notes"
    other.mkdir()
    (other / "mine.txt").write_text("keep")
    with pytest.raises(PublishError, match="not written by mfa match"):
        match_run(run, DEMAND, out=other)
    assert (other / "mine.txt").read_text() == "keep"
    with pytest.raises(PublishError, match="inside the run folder"):
        match_run(run, DEMAND, out=run / "matching")
    assert not (run / "matching").exists()


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("a,644500,6151200,gold,5,2026,2030", "row 1 (line 2): material 'gold' is unknown"),
        ("a,644500,6151200,brick,-5,2026,2030", "row 1 (line 2): t is -5 (negative)"),
        ("a,644500,6151200,brick,5,2030,2026", "year_to 2026 is before year_from 2030; swap them"),
        ("a,11.08,55.68,brick,5,2026,2030", "outside the run's extent"),
        ("a,644500,6151200,brick,five,2026,2030", "t 'five' is not a number"),
    ],
)
def test_bad_demand_rows_give_one_line_errors(
    run: Path, tmp_path: Path, row: str, message: str
) -> None:
    f = tmp_path / "demand.csv"
    f.write_text("demand_id,x,y,material,t,year_from,year_to\n" + row + "\n")
    with pytest.raises(InputDataError) as exc:
        match_run(run, f)
    text = str(exc.value)
    assert str(f) in text and "\n" not in text
    assert message in text


def _drive_graph(path: Path, crs: str) -> nx.MultiDiGraph:
    g = ox.project_graph(ox.graph_from_xml(path, simplify=True, retain_all=True), to_crs=crs)
    keep = [
        (u, v, k)
        for u, v, k, d in g.edges(keys=True, data=True)
        if any(str(h) in DRIVE for h in np.atleast_1d(d.get("highway")))
    ]
    return g.edge_subgraph(keep).copy()


def test_road_km_equals_networkx_shortest_paths_on_a_real_extract(tmp_path: Path) -> None:
    crs = "EPSG:32610"  # UTM 10N: Oakland
    net = load_road_network(OAKLAND, crs, tmp_path)
    again = load_road_network(OAKLAND, crs, tmp_path)  # from the cache
    assert len(list(tmp_path.glob("network-*.npz"))) == 1
    np.testing.assert_array_equal(net.xy, again.xy)
    g = _drive_graph(OAKLAND, crs)
    nodes = list(g.nodes)
    nx_xy = np.array([[g.nodes[n]["x"], g.nodes[n]["y"]] for n in nodes])
    assert len(nodes) == net.n
    rng = np.random.default_rng(7)
    # points near random road nodes (within 60 m): sites and buildings beside the roads
    sp = nx_xy[rng.integers(0, len(nodes), 15)] + rng.uniform(-60, 60, (15, 2))
    dp = nx_xy[rng.integers(0, len(nodes), 5)] + rng.uniform(-60, 60, (5, 2))
    si, di, straight = pairs_within(sp[:, 0], sp[:, 1], dp[:, 0], dp[:, 1], 10_000.0)
    assert len(si) == 75
    km, on_net = road_km(net, sp[:, 0], sp[:, 1], dp[:, 0], dp[:, 1], si, di, 10_000.0, 500.0)
    assert on_net.all()
    routed = 0
    for s, d, k in zip(si, di, km, strict=True):
        sn = int(np.argmin(np.hypot(*(nx_xy - sp[s]).T)))
        dn = int(np.argmin(np.hypot(*(nx_xy - dp[d]).T)))
        snap = np.hypot(*(nx_xy[sn] - sp[s])) + np.hypot(*(nx_xy[dn] - dp[d]))
        try:
            road = nx.shortest_path_length(g, nodes[sn], nodes[dn], weight="length")
        except nx.NetworkXNoPath:
            assert np.isnan(k)
            continue
        assert k == pytest.approx((road + snap) / 1000, rel=1e-9, abs=1e-9)
        routed += 1
    assert routed >= 20
    # road km is never shorter than the straight line; a tight cutoff leaves pairs out
    ok = np.isfinite(km)
    assert (km[ok] * 1000 >= straight[ok] - 1e-6).all()
    short, _ = road_km(net, sp[:, 0], sp[:, 1], dp[:, 0], dp[:, 1], si, di, 300.0, 500.0)
    assert np.isnan(short).sum() > np.isnan(km).sum()


def test_a_site_off_the_network_is_an_error(tmp_path: Path) -> None:
    net = load_road_network(OAKLAND, "EPSG:32610", None)
    x0, y0 = net.xy.mean(axis=0)
    with pytest.raises(InputDataError, match="from the nearest road of the network extract"):
        road_km(
            net,
            np.array([x0]),
            np.array([y0]),
            np.array([x0 + 5000]),
            np.array([y0]),
            np.array([0]),
            np.array([0]),
            10_000.0,
            500.0,
            "sites.csv",
        )


def test_supply_files_and_a_geojson_demand_in_lonlat(run: Path, tmp_path: Path) -> None:
    # a demolition plan beside the dune path (one row hazardous), and the demand as GeoJSON
    # in WGS 84: the site is reprojected to the run's CRS.
    plan = tmp_path / "plan.csv"
    plan.write_text(
        "supply_id,x,y,material,t,year_from,year_to,grade,hazardous\n"
        "plan-1,640050,6150500,concrete,50,2030,2031,3,false\n"
        "plan-2,640020,6150480,concrete,500,2030,2031,3,true\n"
    )
    site = gpd.GeoDataFrame(
        {
            "demand_id": ["dune-path"],
            "material": ["concrete"],
            "t": [80.0],
            "year_from": [2030],
            "year_to": [2035],
            "min_grade": [3],
        },
        geometry=gpd.points_from_xy([640000.0], [6150500.0]),
        crs="EPSG:25832",
    ).to_crs("EPSG:4326")
    dem = tmp_path / "sites.geojson"
    site.to_file(dem, driver="GeoJSON")
    r = match_run(run, dem, supply_files=(plan,))
    m = r.allocation.matches
    # min_grade 3: only the plan's grade-3 concrete qualifies, the hazardous row never
    assert set(m["supply_id"]) == {"plan-1"}
    assert m["t"].sum() == pytest.approx(50.0)
    assert m["km"].iloc[0] == pytest.approx(0.05 * 1.2, rel=1e-6)
    cov = r.allocation.coverage.iloc[0]
    assert cov["matched_t"] == pytest.approx(50.0) and cov["virgin_t"] == pytest.approx(30.0)
    fate = r.allocation.supply_fate.set_index("supply_id")
    assert fate.loc["plan-2", "fate"] == "hazardous" and fate.loc["plan-2", "end_of_life_t"] == 500


def test_a_supply_file_without_grade_is_an_error(run: Path, tmp_path: Path) -> None:
    plan = tmp_path / "plan.csv"
    plan.write_text(
        "supply_id,x,y,material,t,year_from,year_to\np,640050,6150500,brick,5,2030,2031\n"
    )
    with pytest.raises(InputDataError, match=r"plan.csv: no grade column; add grade"):
        match_run(run, DEMAND, supply_files=(plan,))


def test_demand_out_of_reach_is_met_from_virgin_material(run: Path, tmp_path: Path) -> None:
    b = gpd.read_parquet(run / "buildings.parquet")
    xmax, ymax = b.total_bounds[2], b.total_bounds[3]
    f = tmp_path / "far.csv"
    f.write_text(
        "demand_id,x,y,material,t,year_from,year_to\n"
        f"far,{xmax + 40_000},{ymax},brick,30,2026,2030\n"
    )
    r = match_run(run, f)
    assert len(r.allocation.matches) == 0
    cov = r.allocation.coverage.iloc[0]
    assert cov["matched_t"] == 0 and cov["virgin_t"] == pytest.approx(30.0)
    assert "Nothing is reused" in r.summary and r.allocation.objective_kgco2e == 0
    from mfa.io.matchmap import match_map_html
    from mfa.match.outputs import totals_by_material

    page = match_map_html(
        r.allocation.matches, r.allocation.coverage, totals_by_material(r.allocation), "far"
    )
    assert page.count('class="site"') == 1 and '<line class="match"' not in page


HUBS = Path("tests/data/match_hubs_kalundborg.csv")


def test_a_hub_bridges_the_years_between_demolition_and_construction(
    run: Path, tmp_path: Path
) -> None:
    # supply only from 2026-2027, the site builds in 2030: without a hub nothing is reused
    f = tmp_path / "later.csv"
    f.write_text(
        "demand_id,x,y,material,t,year_from,year_to\nlate-site,644500,6151200,brick,300,2030,2030\n"
    )
    direct = match_run(run, f, years=(2026, 2027))
    assert direct.allocation.matches.empty
    r = match_run(run, f, years=(2026, 2027), hubs=HUBS, out=tmp_path / "out")
    m = r.allocation.matches
    assert set(m["via_hub"]) == {"depot"}
    into, out_of = m[m["demand_id"] == ""], m[m["supply_id"] == ""]
    assert into["t"].sum() == pytest.approx(out_of["t"].sum())
    assert out_of["t"].sum() == pytest.approx(100.0)  # the depot holds 100 t over the years
    assert (out_of["year_out"] == 2030).all() and (into["year_in"] <= 2027).all()
    cov = r.allocation.coverage.iloc[0]
    assert cov["matched_t"] == pytest.approx(100.0) and cov["virgin_t"] == pytest.approx(200.0)
    assert r.allocation.objective_kgco2e < 0
    lines = gpd.read_parquet(tmp_path / "out" / "matches.parquet")
    assert len(lines) == len(m) and "via_hub" in lines.columns


def test_a_hub_without_capacity_is_an_error(run: Path, tmp_path: Path) -> None:
    f = tmp_path / "hubs.csv"
    f.write_text("hub_id,x,y,capacity_t\ndepot,645000,6151000,0\n")
    with pytest.raises(
        InputDataError, match=r"hubs.csv row 1 \(line 2\): hub 'depot' has no capacity"
    ):
        match_run(run, DEMAND, hubs=f)


@pytest.mark.slow
def test_qgis_opens_the_styled_matching_and_its_project(run: Path, tmp_path: Path) -> None:
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
    r = match_run(run, DEMAND, out=tmp_path / "m", hubs=HUBS)
    # the project points at its GeoPackage by a relative path: it opens after a move
    moved = tmp_path / "elsewhere" / "kalundborg"
    moved.parent.mkdir()
    (tmp_path / "m").rename(moved)
    names = ["matches", "supply_fate", "demand_coverage"]
    done = subprocess.run(
        [
            qgis_python,
            str(Path(__file__).with_name("qgis_match_check.py")),
            str(moved),
            str(tmp_path / "matching.png"),
            *names,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    counts = {
        "matches": len(r.allocation.matches),
        "supply_fate": len(r.allocation.supply_fate),
        "demand_coverage": len(r.allocation.coverage),
    }
    assert counts["matches"] > 0
    for name in names:
        assert seen["direct"][name] == {
            "valid": True,
            "features": counts[name],
            "renderer": "graduatedSymbol",
        }
    assert seen["read"] and seen["crs"] == "EPSG:25832" and seen["absolute_paths"] is False
    attribute = {"matches": "t", "supply_fate": "reused_t", "demand_coverage": "share"}
    group = {"matches": "Reuse matching", "demand_coverage": "Reuse matching"}
    # the time slider: every layer a range from date_from to date_to (mode 2 =
    # ModeFeatureDateTimeStartAndEndFromFields), the controller one year a step over the
    # data's years; QGIS's filter for one year's frame selects exactly the rows whose
    # years include it (independent oracle: the tables in pandas)
    years = {
        "matches": ("year_out", "year_in"),
        "supply_fate": ("year_from", "year_to"),
        "demand_coverage": ("year_from", "year_to"),
    }
    tables = {
        "matches": r.allocation.matches,
        "supply_fate": r.allocation.supply_fate,
        "demand_coverage": r.allocation.coverage,
    }
    first = min(int(tables[n][years[n][0]].min()) for n in names)
    last = max(int(tables[n][years[n][1]].max()) for n in names)
    assert seen["time"] == {
        "start": f"{first}-01-01",
        "end": f"{last + 1}-01-01",
        "step": 1.0,
        "unit": "years",
    }
    for name in names:
        assert seen["layers"][name].pop("temporal") == {
            "active": True,
            "mode": 2,
            "start_field": "date_from",
            "end_field": "date_to",
        }
        frames = seen["layers"][name].pop("frames")
        assert sorted(map(int, frames)) == list(range(first, last + 1))
        a, b = years[name]
        for year, rows in frames.items():
            y = int(year)
            t = tables[name]
            want = t[(t[a] <= y) & (t[b] >= y)]
            assert rows == sorted([int(p), int(q)] for p, q in zip(want[a], want[b], strict=True))
            assert all(p <= y <= q for p, q in rows)
        # the frames between them show every row
        assert sum(len(v) for v in frames.values()) >= counts[name]
    assert r.allocation.matches["year_out"].nunique() > 1  # so one year's frame filters
    for name in names:
        assert seen["layers"][name].pop("name").startswith(name)
        assert seen["layers"][name] == {
            "valid": True,
            "table": name,
            "features": counts[name],
            "group": group.get(name, "Supply"),
            "visible": True,
            "renderer": "graduatedSymbol",
            "attribute": attribute[name],
            "crs": "EPSG:25832",
        }
    assert seen["drawing_order"] == ["hubs", "demand_coverage", "matches", "supply_fate"]
    assert seen["drawn_pixels"] > 100  # the map is not blank
    assert (tmp_path / "matching.png").stat().st_size > 0


def _grid_osm(path: Path, x0: float, y0: float, x1: float, y1: float, step: float) -> Path:
    """An OSM XML street grid (residential ways every ``step`` m) over a box in EPSG:25832."""
    from pyproj import Transformer

    to_ll = Transformer.from_crs("EPSG:25832", "EPSG:4326", always_xy=True)
    xs, ys = np.arange(x0, x1 + 1, step), np.arange(y0, y1 + 1, step)
    ids = np.arange(1, len(xs) * len(ys) + 1).reshape(len(ys), len(xs))
    gx, gy = np.meshgrid(xs, ys)
    lon, lat = to_ll.transform(gx.ravel(), gy.ravel())
    parts = ['<?xml version="1.0" encoding="UTF-8"?>\n<osm version="0.6" generator="test">']
    parts += [
        f'<node id="{i}" version="1" lat="{la:.8f}" lon="{lo:.8f}"/>'
        for i, lo, la in zip(ids.ravel(), lon, lat, strict=True)
    ]
    lines = [ids[r, :] for r in range(len(ys))] + [ids[:, c] for c in range(len(xs))]
    for w, nodes in enumerate(lines, start=1):
        refs = "".join(f'<nd ref="{n}"/>' for n in nodes)
        parts.append(f'<way id="{w}" version="1">{refs}<tag k="highway" v="residential"/></way>')
    parts.append("</osm>")
    path.write_text("\n".join(parts))
    return path


def test_road_km_end_to_end_on_a_street_grid(run: Path, tmp_path: Path) -> None:
    osm = _grid_osm(tmp_path / "grid.osm", 643000, 6150000, 648000, 6152500, 250)
    sites = tmp_path / "sites.csv"
    sites.write_text(
        "demand_id,x,y,material,t,year_from,year_to\n"
        "harbour-park,644500,6151200,brick,120,2026,2030\n"
        "school-yard,647100,6151500,concrete,60,2026,2035\n"
    )
    r = match_run(run, sites, network=osm, cache_dir=tmp_path / "cache")
    m = r.allocation.matches
    assert "road" in set(m["distance_kind"])
    road = m[m["distance_kind"] == "road"]
    straight = np.hypot(road["x1"] - road["x0"], road["y1"] - road["y0"]) / 1000
    assert (road["km"] >= straight - 1e-9).all()  # a road is never shorter than the line
    # on a square grid the road is at most √2 × the line plus the two snaps (≤ 500 m each)
    assert (road["km"] <= straight * 2**0.5 + 1.0 + 1e-9).all()
    assert (m["km"] <= 25 + 1e-9).all() and r.manifest["balance_residual_kg"] == 0
    assert len(list((tmp_path / "cache").glob("network-*.npz"))) == 1
    # a site beyond the extract's roads is an error naming the sites file
    sites.write_text(
        "demand_id,x,y,material,t,year_from,year_to\ndune-path,640000,6150500,brick,5,2030,2035\n"
    )
    with pytest.raises(InputDataError, match=r"sites.csv row 1: site \(640000, 6150500\) is"):
        match_run(run, sites, network=osm, cache_dir=tmp_path / "cache")


def test_weights_choose_what_is_minimised(run: Path) -> None:
    """Cost only: the optimum is the net DKK; it is never dearer than the CO2 optimum's
    cost, and the CO2 optimum never emits more than the cost optimum (each is optimal
    for its own objective)."""
    co2 = match_run(run, DEMAND).allocation
    cost = match_run(run, DEMAND, weights=(0.0, 1.0)).allocation
    assert cost.objective == cost.objective_dkk and cost.weights == (0.0, 1.0)
    assert cost.objective_dkk <= co2.objective_dkk + 1e-6
    assert co2.objective_kgco2e <= cost.objective_kgco2e + 1e-6
    with pytest.raises(ConfigError, match="both 0"):
        match_run(run, DEMAND, weights=(0.0, 0.0))

"""The scale benchmark (benchmarks/): peers against a hand-computed city, the harness.

The synthetic city of ``mfa synth`` has only rectangles, all inside a district, so the
stock-only rules of the peers that it never exercises (holes, a representative point away
from the centroid, no district, byg038 and byg054 missing or <= 0, excluded and unknown
use codes, unmapped wall codes) are checked here on a small hand-made city whose results
are known. The harness itself (``mfa run`` beside the peers) runs once at a small size.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import shapely
from shapely.geometry import Polygon, box

from tests.conftest import CONFIG, ROOT

BENCH = ROOT / "benchmarks"
if str(BENCH) not in sys.path:  # the benchmark's modules are scripts, not a package
    sys.path.insert(0, str(BENCH))

import bench_agree  # noqa: E402
import lookup  # noqa: E402
from bench_child import one  # noqa: E402

X0, Y0 = 600_000.0, 6_150_000.0
PEERS = ["geopandas", "duckdb", "sedonadb"]


def _at(g: shapely.Geometry) -> shapely.Geometry:
    return shapely.affinity.translate(g, X0, Y0)


#: Districts: D1 | D2 side by side, D3 above D1 (no buildings).
DISTRICTS = {"D1": box(0, 0, 100, 100), "D2": box(100, 0, 200, 100), "D3": box(0, 100, 100, 200)}
#: A ring across the D1|D2 border: its centroid lies in the hole, in D2; the widest
#: piece of the horizontal line through its middle (point on surface) is in D1.
DONUT = Polygon(
    [(88, 0), (118, 0), (118, 30), (88, 30)], [[(100, 8), (114, 8), (114, 22), (100, 22)]]
)
#: A U across the border with a long base: centroid in the notch (D2), point on surface
#: in the wide left arm (D1).
U_SHAPE = Polygon(
    [
        (80, 40),
        (160, 40),
        (160, 44),
        (110, 44),
        (110, 70),
        (104, 70),
        (104, 44),
        (92, 44),
        (92, 70),
        (80, 70),
    ]
)
#: An L across the border: its centroid is inside it, in D2, but its point on surface (the
#: representative point, as in mfa run) is in D1: the centroid is not used.
L_SHAPE = Polygon([(90, 0), (130, 0), (130, 20), (96, 20), (96, 60), (90, 60)])

#: building id, status, use, wall, byg038, byg054, footprint, district, archetype, gfa_m2
CASES = [
    ("rect", "6", "120", "1", 150.0, 1.0, box(10, 10, 20, 25), "D1", "RS-M", 150.0),
    ("gfa-zero", "6", "140", "6", 0.0, 2.0, box(150, 10, 160, 20), "D2", "RM-C", 200.0),
    ("gfa-negative", "6", "320", None, -5.0, 0.0, box(30, 30, 40, 35), "D1", "NR-M", 50.0),
    ("gfa-missing", "6", "140", "80", np.nan, np.nan, box(50, 50, 54, 55), "D1", "RM-M", 60.0),
    ("wall-unknown", "6", "120", "99", 0.0, 0.0, box(60, 60, 70, 70), "D1", "RS-M", 100.0),
    ("donut", "6", "120", "5", 0.0, 1.0, DONUT, "D1", "RS-T", 704.0),
    ("u-shape", "6", "210", "8", 0.0, 2.0, U_SHAPE, "D1", "NR-S", 2 * U_SHAPE.area),
    ("l-shape", "6", "210", "2", 0.0, 0.0, L_SHAPE, "D1", "NR-M", L_SHAPE.area),
    ("outside", "6", "510", "12", 80.0, 1.0, box(300, 300, 310, 310), None, "RS-S", 80.0),
    ("carport", "6", "920", "1", 30.0, 1.0, box(20, 60, 25, 66), None, None, None),
    ("unknown-use", "6", "000", "1", 30.0, 1.0, box(20, 70, 25, 76), None, None, None),
    ("not-built", "3", "120", "1", 30.0, 1.0, box(20, 80, 25, 86), None, None, None),
]
KEPT = [c for c in CASES if c[8] is not None]


def test_the_hand_made_city_is_what_it_claims() -> None:
    for shape in (DONUT, U_SHAPE):
        c, p = shape.centroid, shape.point_on_surface()
        assert not shape.contains(c)
        assert DISTRICTS["D2"].contains(c) and DISTRICTS["D1"].contains(p)
    c, p = L_SHAPE.centroid, L_SHAPE.point_on_surface()
    assert L_SHAPE.contains(c) and DISTRICTS["D2"].contains(c) and DISTRICTS["D1"].contains(p)
    assert DONUT.area == 30 * 30 - 14 * 14


def write_city(folder: Path) -> Path:
    """The hand-made city, with the dtypes of ``mfa synth``'s output."""
    folder.mkdir(parents=True, exist_ok=True)
    reg = gpd.GeoDataFrame(
        {
            "id_lokalId": [c[0] for c in CASES],
            "status": [c[1] for c in CASES],
            "byg021BygningensAnvendelse": [c[2] for c in CASES],
            "byg026Opfoerelsesaar": np.full(len(CASES), 1970, dtype="int64"),
            "byg032YdervaeggensMateriale": pd.array([c[3] for c in CASES], dtype="string"),
            "byg038SamletBygningsareal": [c[4] for c in CASES],
            "byg041BebyggetAreal": [round(c[6].area, 1) for c in CASES],
            "byg054AntalEtager": [c[5] for c in CASES],
        },
        geometry=[_at(c[6]) for c in CASES],
        crs="EPSG:25832",
    )
    reg.to_parquet(folder / "register.parquet", write_covering_bbox=True)
    districts = gpd.GeoDataFrame(
        {"district_id": list(DISTRICTS), "name": [f"District {d}" for d in DISTRICTS]},
        geometry=[_at(g) for g in DISTRICTS.values()],
        crs="EPSG:25832",
    )
    districts.to_parquet(folder / "districts.parquet", write_covering_bbox=True)
    return folder


@pytest.fixture(scope="module")
def city(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_city(tmp_path_factory.mktemp("edge-city"))


@pytest.fixture(scope="module")
def lookups(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return lookup.write_lookups(CONFIG, tmp_path_factory.mktemp("lookups"))


def run_engine(engine: str, city: Path, lookups: Path, out: Path) -> Path:
    """A peer in this process, through the harness's child entry point."""
    if engine == "sedonadb" and importlib.util.find_spec("sedonadb") is None:
        pytest.skip("sedonadb is not installed")
    result = out.with_name(out.name + ".result.json")
    args = ["--engine", engine, "--city", str(city), "--lookups", str(lookups)]
    one([*args, "--output", str(out), "--result", str(result)])
    assert json.loads(result.read_text())["compute_s"] > 0
    return out


def test_lookups_use_the_register_code_strings(lookups: Path) -> None:
    use = pd.read_parquet(lookups / "use_function.parquet")
    wall = pd.read_parquet(lookups / "wall_structure.parquet")
    assert use.set_index("code").loc["120", "function"] == "RS"
    assert "920" not in set(use["code"])  # excluded (carport)
    assert wall.set_index("code").loc["1", "structure"] == "M"
    assert not {"80", "90"} & set(wall["code"])  # no structure: function default
    assert lookup.materials_of(lookups)[0] == "concrete"
    assert len(pd.read_parquet(lookups / "intensity.parquet")) == 12


@pytest.mark.parametrize("engine", PEERS)
def test_peer_on_the_hand_made_city(engine: str, city: Path, lookups: Path, tmp_path) -> None:
    out = run_engine(engine, city, lookups, tmp_path / engine)
    intensity = pd.read_parquet(lookups / "intensity.parquet").set_index("archetype_id")
    materials = lookup.materials_of(lookups)

    b = gpd.read_parquet(out / "buildings.parquet")
    assert b.crs is not None and b.crs.to_epsg() == 25832
    assert sorted(b["building_id"]) == sorted(c[0] for c in KEPT)
    b = b.set_index("building_id")
    for bid, *_, footprint, district, archetype, gfa in KEPT:
        row = b.loc[bid]
        assert (None if pd.isna(row["district_id"]) else row["district_id"]) == district, bid
        assert row["archetype_id"] == archetype, bid
        assert row["gfa_m2"] == pytest.approx(gfa, rel=1e-12), bid
        kg = intensity.loc[archetype, materials].to_numpy(float)
        got = row[[f"{m}_t" for m in materials]].to_numpy(float)
        np.testing.assert_allclose(got, gfa * kg / 1000, rtol=1e-12, err_msg=bid)
        assert row["mass_t"] == pytest.approx(gfa * kg.sum() / 1000, rel=1e-12), bid
        assert shapely.equals_exact(b.loc[bid].geometry, _at(footprint), tolerance=0), bid

    d = gpd.read_parquet(out / "districts.parquet").set_index("district_id")
    assert d.crs is not None and d.crs.to_epsg() == 25832
    assert sorted(d.index) == ["D1", "D2", "D3"]
    for did in DISTRICTS:
        mine = [c for c in KEPT if c[7] == did]
        assert d.loc[did, "n_buildings"] == len(mine), did
        assert d.loc[did, "gfa_m2"] == pytest.approx(sum(c[9] for c in mine), rel=1e-12)
        assert d.loc[did, "mass_t"] == pytest.approx(b.loc[[c[0] for c in mine], "mass_t"].sum())
    assert d.loc["D3", "n_buildings"] == 0 and d.loc["D3", "mass_t"] == 0
    assert shapely.equals_exact(d.loc["D3"].geometry, _at(DISTRICTS["D3"]), tolerance=0)


def _rewrite(path: Path, change) -> None:
    table = change(pq.read_table(path))
    pq.write_table(table, path)


def test_the_agreement_check_catches_wrong_outputs(city: Path, lookups: Path, tmp_path) -> None:
    import pyarrow as pa
    import pyarrow.compute as pc

    materials = lookup.materials_of(lookups)
    ids = list(DISTRICTS)
    ref_dir = run_engine("geopandas", city, lookups, tmp_path / "ref")
    ref = bench_agree.summarise(ref_dir, materials, ids, 25832)
    assert ref.problems == [] and bench_agree.compare(ref, ref) == []
    assert ref.n_buildings == len(KEPT)

    def fresh(name: str) -> Path:
        return run_engine("duckdb", city, lookups, tmp_path / name)

    def check(out: Path) -> list[str]:
        return bench_agree.compare(ref, bench_agree.summarise(out, materials, ids, 25832))

    assert check(fresh("same")) == []

    # one building lost
    out = fresh("lost")
    _rewrite(out / "buildings.parquet", lambda t: t.slice(1))
    assert any("buildings, reference" in p for p in check(out))

    # a district's mass off by 1e-8 relative
    out = fresh("mass")

    def nudge(t: pa.Table) -> pa.Table:
        i = t.schema.get_field_index("mass_t")
        bumped = pc.if_else(
            pc.equal(t["district_id"], "D2"), pc.multiply(t["mass_t"], 1 + 1e-8), t["mass_t"]
        )
        return t.set_column(i, "mass_t", bumped)

    _rewrite(out / "districts.parquet", nudge)
    assert any("mass_t differs in 1 districts" in p for p in check(out))

    # a building counted in another district
    out = fresh("moved")

    def move(t: pa.Table) -> pa.Table:
        n = t["n_buildings"].to_pylist()
        n[0], n[1] = n[0] - 1, n[1] + 1
        return t.set_column(t.schema.get_field_index("n_buildings"), "n_buildings", pa.array(n))

    _rewrite(out / "districts.parquet", move)
    assert any("n_buildings differs in 2 districts" in p for p in check(out))

    # the CRS left out of the GeoParquet metadata
    out = fresh("nocrs")

    def strip_crs(t: pa.Table) -> pa.Table:
        geo = json.loads(t.schema.metadata[b"geo"])
        geo["columns"]["geometry"].pop("crs")
        return t.replace_schema_metadata({**t.schema.metadata, b"geo": json.dumps(geo)})

    _rewrite(out / "buildings.parquet", strip_crs)
    assert any("no CRS" in p for p in check(out))


def test_versus_mfa_counts_ids_and_relative_totals(tmp_path) -> None:
    import pyarrow as pa

    mfa = bench_agree.MfaLayers(
        pa.array(["a", "b", "c", "d"]), {"gfa_m2": 100.0, "mass_t": 50.0}, []
    )
    peer = tmp_path / "peer"
    peer.mkdir()
    table = pa.table(
        {"building_id": ["a", "b", "e"], "gfa_m2": [40.0, 50.0, 20.0], "mass_t": [20.0, 20.0, 15.0]}
    )
    pq.write_table(table, peer / "buildings.parquet")
    v = bench_agree.versus_mfa(mfa, peer)
    assert (v["n_peer"], v["n_mfa"], v["only_peer"], v["only_mfa"]) == (3, 4, 1, 2)
    assert v["gfa_m2_rel_diff"] == pytest.approx(0.10)
    assert v["mass_t_rel_diff"] == pytest.approx(0.10)
    assert len(v["failures"]) == 1 and "3 buildings against mfa's 4" in v["failures"][0]


@pytest.mark.slow
def test_harness_smoke_mfa_run_beside_the_peers(tmp_path) -> None:
    """The one command at 20,000 buildings, one repeat: mfa run, geopandas and duckdb."""
    engines = ["mfa", "geopandas", "duckdb"]
    cmd = [sys.executable, str(BENCH / "scale.py"), "--sizes", "20000", "--repeats", "1"]
    cmd += ["--engines", *engines, "--workdir", str(tmp_path), "--timeout", "600"]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "N = 20,000 buildings (seed 1), 1 repeat(s)" in out
    table = out.split("N = 20,000", 1)[1]
    lines = {ln.split(" ", 1)[0]: ln for ln in table.splitlines()}
    assert lines["geopandas"].endswith("reference") and lines["duckdb"].endswith("agrees")
    assert "mfa steps (s, run.json timings_s): buildings " in out
    assert "against mfa's buildings.parquet" in out
    assert "mfa ÷ geopandas script: throughput " in out

    (results,) = tmp_path.glob("runs/*/results.json")
    payload = json.loads(results.read_text())
    rows = {r["engine"]: r for r in payload["summary"]}
    assert set(rows) == set(engines)
    for row in rows.values():
        assert row["repeats_ok"] == 1, row
        assert row["wall_s_median"] > 0 and row["buildings_per_s_median"] > 0
        assert row["peak_rss_mb_max"] > 50
    mfa = rows["mfa"]
    assert {"buildings", "stocks", "districts", "flows", "qgis", "publish"} <= set(
        mfa["timings_s_median"]
    )
    assert mfa["row_counts"]["records_read"] == 20_000
    assert mfa["mfa_over_engine_speed"] == 1.0
    assert rows["geopandas"]["mfa_over_engine_speed"] > 0
    assert rows["duckdb"]["agrees"] is True and rows["duckdb"]["reference"] == "geopandas"
    for peer in ("geopandas", "duckdb"):
        v = rows[peer]["versus_mfa"]
        # on the synthetic city the peers keep exactly mfa's buildings; totals differ a little
        assert v["n_peer"] == v["n_mfa"] == mfa["row_counts"]["buildings"]
        assert v["only_peer"] == v["only_mfa"] == 0
        assert abs(v["mass_t_rel_diff"]) < 0.05 and abs(v["gfa_m2_rel_diff"]) < 0.05
        assert v["failures"] == []
    assert (tmp_path / "cities" / "n20000-s1" / "pipeline.toml").is_file()
    assert (tmp_path / "runs").is_dir() and list(tmp_path.glob("runs/*/results.csv"))


def test_duckdb_peer_puts_a_missing_crs_back(city: Path, tmp_path) -> None:
    """DuckDB builds that write GeoParquet without a CRS get it from the input."""
    from peers.duckdb_spatial import _ensure_crs, _input_crs

    path = tmp_path / "nocrs.parquet"
    table = pq.read_table(city / "districts.parquet")
    geo = json.loads(table.schema.metadata[b"geo"])
    geo["columns"]["geometry"].pop("crs")
    pq.write_table(
        table.replace_schema_metadata({**table.schema.metadata, b"geo": json.dumps(geo)}), path
    )
    assert bench_agree.crs_problem(path, 25832) is not None
    _ensure_crs(path, _input_crs(city / "register.parquet"))
    assert bench_agree.crs_problem(path, 25832) is None
    assert pq.read_table(path).num_rows == len(DISTRICTS)

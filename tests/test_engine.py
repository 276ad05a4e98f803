"""The streaming engine: array geometry equals GEOS, results equal an independent
geopandas computation, and are identical for any worker count and scheduler."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st

from mfa.buildings.districts import PointLocator, assign_districts
from mfa.engine import EngineTables, estimate_file
from mfa.errors import InputDataError, InputNotFoundError
from mfa.synth import synthetic_city
from mfa.wkb import polygon_measures
from tests.conftest import CONFIG, SAMPLE

CRS = "EPSG:25832"


def _reference_points(geoms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """SPEC's representative point through GEOS: centroid if inside, else PointOnSurface."""
    cen = shapely.centroid(geoms)
    pts = np.where(shapely.contains(geoms, cen), cen, shapely.point_on_surface(geoms))
    return shapely.get_x(pts), shapely.get_y(pts)


ODD_SHAPES = [
    shapely.Polygon([(0, 0), (10, 0), (10, 2), (2, 2), (2, 10), (0, 10)]),  # L: centroid out
    shapely.Polygon([(0, 0), (10, 0), (10, 10), (8, 10), (8, 2), (2, 2), (2, 10), (0, 10)]),
    shapely.Polygon([(0, 0), (10, 0), (10, 10), (0, 10)], [[(1, 1), (9, 1), (9, 9), (1, 9)]]),
    shapely.Polygon([(0, 0), (9, 0), (9, 9), (0, 9)], [[(2, 2), (4, 2), (4, 4), (2, 4)]]),
    shapely.MultiPolygon([shapely.box(0, 0, 1, 1), shapely.box(5, 5, 8, 9)]),
    shapely.Polygon([(0, 0), (4, 0), (4, 4), (0, 4)]).reverse(),  # clockwise exterior
]


def _odd_footprints(x0: float, y0: float) -> list[shapely.Geometry]:
    return [shapely.affinity.translate(g, x0, y0) for g in ODD_SHAPES]


def test_array_measures_equal_geos() -> None:
    rng = np.random.default_rng(3)
    x = rng.uniform(6e5, 7e5, 5000)
    y = rng.uniform(6.1e6, 6.2e6, 5000)
    boxes = list(shapely.box(x, y, x + rng.uniform(3, 30, 5000), y + rng.uniform(3, 30, 5000)))
    rotated = [shapely.affinity.rotate(g, 33) for g in _odd_footprints(650_000, 6_150_000)]
    geoms = np.array(boxes + _odd_footprints(650_000, 6_150_000) + rotated, dtype=object)
    blobs = list(shapely.to_wkb(geoms))
    # not on the array path: big-endian, 3D, a bowtie, an empty polygon; and a null
    blobs += [shapely.to_wkb(geoms[-1], byte_order=0), shapely.to_wkb(shapely.force_3d(geoms[0]))]
    blobs += [shapely.to_wkb(shapely.from_wkt("POLYGON ((0 0, 2 2, 2 0, 0 2, 0 0))"))]
    blobs += [shapely.to_wkb(shapely.from_wkt("POLYGON EMPTY")), None]
    m = polygon_measures(pa.array(blobs, type=pa.binary()))
    ref = shapely.from_wkb(np.array(blobs, dtype=object))
    known = ~shapely.is_missing(ref) & ~shapely.is_empty(ref)
    np.testing.assert_allclose(m.area[known], shapely.area(ref[known]), rtol=1e-12, atol=1e-9)
    rx, ry = _reference_points(ref[known])
    np.testing.assert_allclose(m.x[known], rx, rtol=0, atol=1e-6)
    np.testing.assert_allclose(m.y[known], ry, rtol=0, atol=1e-6)
    np.testing.assert_allclose(
        np.c_[m.xmin, m.ymin, m.xmax, m.ymax][known], shapely.bounds(ref[known]), rtol=0, atol=0
    )
    assert np.isnan(m.area[-1]) and np.isnan(m.x[-1])  # null stays null
    assert m.fast[: len(boxes) + 12].all() and not m.fast[len(boxes) + 12 :].any()


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(-50, 50), st.floats(-50, 50), st.floats(0.5, 40), st.floats(0.5, 40)),
        min_size=1,
        max_size=6,
    ),
    st.floats(0, 360),
)
def test_array_measures_equal_geos_for_any_union_of_boxes(boxes, angle) -> None:
    """Unions of random boxes: polygons with holes, concave shapes, multipolygons."""
    shape = shapely.union_all([shapely.box(x, y, x + w, y + h) for x, y, w, h in boxes])
    shape = shapely.affinity.translate(shapely.affinity.rotate(shape, angle), 6e5, 6.1e6)
    m = polygon_measures(pa.array([shapely.to_wkb(shape)], type=pa.binary()))
    assert m.area[0] == pytest.approx(shape.area, rel=1e-12)
    rx, ry = _reference_points(np.array([shape]))
    assert (m.x[0], m.y[0]) == (pytest.approx(rx[0], abs=1e-6), pytest.approx(ry[0], abs=1e-6))
    assert shape.intersects(shapely.Point(m.x[0], m.y[0]))


def test_point_locator_equals_assign_districts() -> None:
    d = gpd.read_file(SAMPLE / "dagi_sogne_2014_sample.gpkg", layer="sogne")
    d = d.rename(columns={"SOGNEKODE": "district_id"})
    rng = np.random.default_rng(5)
    parts = [shapely.get_coordinates(d.geometry.values[:10])[::7]]  # vertices: on borders
    for g in d.geometry.values[:20]:
        b = g.bounds
        parts.append(np.c_[rng.uniform(b[0], b[2], 500), rng.uniform(b[1], b[3], 500)])
    xy = np.vstack(parts)
    got = PointLocator(d.geometry.values).locate(xy[:, 0], xy[:, 1])
    ref = assign_districts(gpd.GeoSeries(shapely.points(xy), crs=d.crs), d)
    ids = d["district_id"].astype(str).to_numpy()
    mine = pd.Series(np.where(got >= 0, ids[np.maximum(got, 0)], None), dtype="string")
    pd.testing.assert_series_equal(mine, ref.reset_index(drop=True), check_names=False)
    assert (got >= 0).sum() > 5000


@pytest.fixture(scope="module")
def city(tmp_path_factory) -> Path:
    """A 30k-building synthetic city plus odd footprints, codes and values (SPEC's cases)."""
    out = tmp_path_factory.mktemp("city")
    like = pd.read_parquet(SAMPLE / "bbr_bygning_2020.parquet")
    reg, districts = synthetic_city(30_000, 11, like)
    x0, y0 = reg.total_bounds[:2]
    odd = gpd.GeoDataFrame(
        reg.iloc[: 3 * len(ODD_SHAPES)].drop(columns="geometry").reset_index(drop=True),
        geometry=[
            g
            for k in range(3)
            for g in _odd_footprints(x0 + 100 + 40 * k, y0 + 100 + 30 * len(ODD_SHAPES))
        ],
        crs=CRS,
    )
    odd["id_lokalId"] = [f"odd-{i}" for i in range(len(odd))]
    odd["byg038SamletBygningsareal"] = 0.0  # floor area from the footprint
    reg = pd.concat([reg, odd], ignore_index=True)
    # outside every district, unknown and excluded uses, not standing, no wall code
    far = shapely.affinity.translate(reg.geometry.iloc[0], -50_000, 0)
    reg.loc[len(reg)] = {**reg.iloc[1].to_dict(), "id_lokalId": "far", "geometry": far}
    reg.loc[5, "byg021BygningensAnvendelse"] = "123"
    reg.loc[6, "byg021BygningensAnvendelse"] = "920"
    reg.loc[7, "status"] = "4"
    reg.loc[8, "byg032YdervaeggensMateriale"] = None
    reg.loc[9, "byg054AntalEtager"] = np.nan
    reg.loc[9, "byg038SamletBygningsareal"] = 0.0
    reg = gpd.GeoDataFrame(reg, geometry="geometry", crs=CRS)
    reg.to_parquet(out / "register.parquet", row_group_size=4_000)
    districts.to_parquet(out / "districts.parquet")
    return out


def _reference(city: Path, tables: EngineTables) -> pd.DataFrame:
    """SPEC's job with geopandas and GEOS, written independently of the engine."""
    reg = gpd.read_parquet(city / "register.parquet")
    districts = gpd.read_parquet(city / "districts.parquet")
    function = reg["byg021BygningensAnvendelse"].map(tables.use_function)
    reg = reg[(reg["status"] == "6") & function.notna()].copy()
    reg["function"] = function[reg.index]
    floors = reg["byg054AntalEtager"].where(reg["byg054AntalEtager"] > 0)
    floors = floors.fillna(reg["function"].map(tables.floors_default))
    gfa = reg["byg038SamletBygningsareal"]
    reg["gfa_m2"] = gfa.where(gfa > 0, reg.geometry.area * floors)
    structure = reg["byg032YdervaeggensMateriale"].map(tables.wall_structure)
    structure = structure.fillna(reg["function"].map(tables.structure_default))
    reg["archetype_id"] = reg["function"] + "-" + structure
    kg = pd.DataFrame(tables.kg_m2, index=list(tables.archetypes), columns=tables.materials)
    for mat in tables.materials:
        reg[f"{mat}_t"] = reg["gfa_m2"] * reg["archetype_id"].map(kg[mat]) / 1000
    reg["mass_t"] = reg[[f"{m}_t" for m in tables.materials]].sum(axis=1)
    x, y = _reference_points(reg.geometry.values)
    pts = gpd.GeoSeries(shapely.points(x, y), index=reg.index, crs=CRS)
    reg["district_id"] = assign_districts(pts, districts)
    return reg.rename(columns={"id_lokalId": "building_id"}).set_index("building_id")


@pytest.fixture(scope="module")
def tables() -> EngineTables:
    return EngineTables.from_config(CONFIG)


@pytest.fixture(scope="module")
def run_threads(city, tables, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("engine2")
    return out, estimate_file(
        city / "register.parquet", city / "districts.parquet", out, tables=tables, workers=2
    )


def test_engine_equals_independent_geopandas_computation(city, tables, run_threads) -> None:
    out, summary = run_threads
    got = gpd.read_parquet(out / "buildings.parquet").set_index("building_id")
    ref = _reference(city, tables)
    assert len(got) == len(ref) == summary["buildings"]
    assert {"odd-0", "far"} <= set(got.index)
    ids = pd.read_parquet(city / "register.parquet", columns=["id_lokalId"])["id_lokalId"]
    assert not set(ids.iloc[[5, 6, 7]]) & set(got.index)  # unknown use, carport, not built
    got = got.loc[ref.index]
    assert got.crs.equals(CRS)
    pd.testing.assert_series_equal(
        got["district_id"].astype("string"), ref["district_id"], check_names=False
    )
    assert pd.isna(got.loc["far", "district_id"])
    assert (got["archetype_id"].astype(str) == ref["archetype_id"]).all()
    cols = ["gfa_m2", *(f"{m}_t" for m in tables.materials), "mass_t"]
    np.testing.assert_allclose(got[cols].to_numpy(), ref[cols].to_numpy(), rtol=1e-9)
    assert got.geometry.geom_equals_exact(ref.geometry, tolerance=0).all()
    # district layer: every district, sums of the building rows
    d = gpd.read_parquet(out / "districts.parquet").set_index("district_id")
    by = ref.groupby("district_id")[cols].sum()
    assert len(d) == len(gpd.read_parquet(city / "districts.parquet"))
    np.testing.assert_allclose(d.loc[by.index, cols].to_numpy(), by.to_numpy(), rtol=1e-9)
    counts = ref.groupby("district_id").size()
    assert (d.loc[counts.index, "n_buildings"] == counts).all()
    assert summary["outside_districts"] == 1
    assert summary["totals_t"]["mass_t"] == pytest.approx(ref["mass_t"].sum(), rel=1e-12)
    geo = json.loads(pq.read_schema(out / "buildings.parquet").metadata[b"geo"])
    assert geo["columns"]["geometry"]["covering"]["bbox"]["xmin"] == ["bbox", "xmin"]


def _digest(path: Path) -> str:
    """Content digest of a Parquet table (independent of writer metadata)."""
    t = pq.read_table(path)
    return hashlib.sha256(t.to_pandas().to_csv(index=False).encode()).hexdigest()


def test_identical_for_one_worker_and_two(city, tables, run_threads, tmp_path) -> None:
    out2, _ = run_threads
    estimate_file(
        city / "register.parquet",
        city / "districts.parquet",
        tmp_path,
        tables=tables,
        scheduler="synchronous",
    )
    for layer in ("buildings.parquet", "districts.parquet"):
        assert _digest(tmp_path / layer) == _digest(out2 / layer)


@pytest.mark.slow
def test_identical_on_a_local_dask_cluster(city, tables, run_threads, tmp_path) -> None:
    out2, _ = run_threads
    seen: list[tuple[int, int]] = []
    summary = estimate_file(
        city / "register.parquet",
        city / "districts.parquet",
        tmp_path,
        tables=tables,
        scheduler="local-cluster",
        workers=2,
        progress=lambda done, total: seen.append((done, total)),
    )
    assert summary["workers"] == 2 and summary["scheduler"] == "local-cluster"
    for layer in ("buildings.parquet", "districts.parquet"):
        assert _digest(tmp_path / layer) == _digest(out2 / layer)
    assert seen[-1][0] == seen[-1][1] == summary["records_read"]
    assert len(seen) == pq.ParquetFile(city / "register.parquet").num_row_groups


def _good_outputs(city: Path, tables: EngineTables, out: Path) -> dict[str, str]:
    estimate_file(city / "register.parquet", city / "districts.parquet", out, tables=tables)
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in out.iterdir()}


@pytest.mark.parametrize(
    ("case", "error", "message"),
    [
        ("missing", InputNotFoundError, "register file not found"),
        ("not-parquet", InputDataError, "not a readable Parquet file"),
        ("no-geo", InputDataError, "not a GeoParquet file"),
        ("no-crs", InputDataError, "has no CRS"),
        ("no-floors", InputDataError, "missing column(s) byg054AntalEtager"),
        ("text-floors", InputDataError, "must hold numbers"),
    ],
)
def test_bad_register_is_named_and_earlier_outputs_stay(
    city, tables, tmp_path, case, error, message
) -> None:
    out = tmp_path / "out"
    before = _good_outputs(city, tables, out)
    bad = tmp_path / "bad.parquet"
    reg = gpd.read_parquet(city / "register.parquet").iloc[:500]
    if case == "not-parquet":
        bad.write_text("id;status\n1;6\n")
    elif case == "no-geo":
        pd.DataFrame(reg.drop(columns="geometry")).assign(
            geometry=reg.geometry.to_wkb()
        ).to_parquet(bad)
    elif case == "no-crs":
        reg.set_crs(None, allow_override=True).to_parquet(bad)
    elif case == "no-floors":
        reg.drop(columns="byg054AntalEtager").to_parquet(bad)
    elif case == "text-floors":
        reg.assign(byg054AntalEtager="two").to_parquet(bad)
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")) as exc:
        estimate_file(bad, city / "districts.parquet", out, tables=tables)
    assert str(bad) in str(exc.value)
    after = {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in out.iterdir()}
    assert after == before  # no temp files left, earlier layers byte-identical


@pytest.mark.slow
@pytest.mark.prefect
def test_pipeline_file_cli_and_prefect_flow_agree(tmp_path, prefect_harness) -> None:
    """`mfa stream` on a synthetic city's pipeline.toml, then the Prefect flow: same layers,
    progress shown in the terminal and as a Prefect progress artifact at 100 %."""
    import asyncio

    from flows.stream import mfa_stream
    from prefect.client.orchestration import get_client
    from typer.testing import CliRunner

    from mfa.cli import app
    from mfa.synth import write_synthetic_city

    pipeline = write_synthetic_city(
        20_000, 4, tmp_path / "city", SAMPLE / "bbr_bygning_2020.parquet", CONFIG
    )
    res = CliRunner().invoke(app, ["stream", str(pipeline), "-o", str(tmp_path / "cli")])
    assert res.exit_code == 0, res.output
    assert "20000/20000 records" in res.output and "buildings of 20,000 records" in res.output
    state = mfa_stream(str(pipeline), str(tmp_path / "flow"), return_state=True)
    assert state.is_completed()
    for layer in ("buildings.parquet", "districts.parquet"):
        assert _digest(tmp_path / "cli" / layer) == _digest(tmp_path / "flow" / layer)

    async def latest_progress() -> float:
        async with get_client() as client:
            arts = await client.read_latest_artifacts()
            return next(a.data for a in arts if a.key == "mfa-stream-progress")

    assert asyncio.run(latest_progress()) == pytest.approx(100.0)


def test_a_second_run_with_other_districts_uses_them(city, tables, tmp_path) -> None:
    """The per-process district index is keyed by content: other districts, other answer."""
    districts = gpd.read_parquet(city / "districts.parquet")
    one = districts.iloc[:1].copy()
    one.to_parquet(tmp_path / "one.parquet")
    first = estimate_file(
        city / "register.parquet", city / "districts.parquet", tmp_path / "a", tables=tables
    )
    second = estimate_file(
        city / "register.parquet", tmp_path / "one.parquet", tmp_path / "b", tables=tables
    )
    assert first["outside_districts"] == 1
    inside = gpd.read_parquet(tmp_path / "b" / "districts.parquet")["n_buildings"].sum()
    assert second["outside_districts"] == second["buildings"] - inside > first["outside_districts"]

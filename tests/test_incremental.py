"""Incremental per-district recompute: the result equals a full recompute on the same inputs."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import shapely

from mfa.buildings.districts import assign_districts
from mfa.buildings.parts import NO_DISTRICT, part_digests, split_parts
from mfa.config import load_pipeline
from mfa.io.districts import read_districts
from mfa.io.files import sha256_file
from mfa.run import run_pipeline

LAYERS = ("buildings", "districts", "grid", "quality", "flows")
SORT = {
    "buildings": ["building_id"],
    "districts": ["district_id"],
    "grid": ["cell_id"],
    "quality": ["district_id"],
    "flows": ["scenario", "district_id", "material", "year"],
}


def assert_same_outputs(a: Path, b: Path) -> None:
    """Every layer equal as a table (sorted), rasters and CSVs byte-identical, same totals."""
    for layer in LAYERS:
        assert (a / f"{layer}.parquet").exists() == (b / f"{layer}.parquet").exists(), layer
        if not (a / f"{layer}.parquet").exists():
            continue
        x = gpd.read_parquet(a / f"{layer}.parquet").sort_values(SORT[layer])
        y = gpd.read_parquet(b / f"{layer}.parquet").sort_values(SORT[layer])
        assert x.reset_index(drop=True).equals(y.reset_index(drop=True)), layer
        # the same row order too (Hilbert order is part of the layer)
        assert gpd.read_parquet(a / f"{layer}.parquet").equals(
            gpd.read_parquet(b / f"{layer}.parquet")
        ), layer
        # the same GeoParquet metadata (bbox, geometry types, CRS) and row groups
        ma, mb = (pq.read_metadata(r / f"{layer}.parquet") for r in (a, b))
        assert json.loads(ma.metadata[b"geo"]) == json.loads(mb.metadata[b"geo"]), layer
        assert ma.num_row_groups == mb.num_row_groups, layer
        assert ma.schema.to_arrow_schema() == mb.schema.to_arrow_schema(), layer
        # and the very same file
        assert sha256_file(a / f"{layer}.parquet") == sha256_file(b / f"{layer}.parquet"), layer
    for f in [*sorted(p.name for p in a.glob("stock_*.tif")), "dropped.csv", "repairs.csv"]:
        assert (a / f).read_bytes() == (b / f).read_bytes(), f
    ma, mb = (json.loads((r / "run.json").read_text()) for r in (a, b))
    for key in ("totals_t", "total_gfa_m2", "row_counts", "provenance", "quality", "flows"):
        if key == "flows":
            assert (ma[key] or {}).get("summary") == (mb[key] or {}).get("summary")
        else:
            assert ma[key] == mb[key], key
    assert ma["uncertainty"]["totals_t"] == mb["uncertainty"]["totals_t"]
    assert ma["imputed_from_cohort_peers"] == mb["imputed_from_cohort_peers"]


def _edit_register(path: Path, ids: pd.Series, column: str, factor: float) -> None:
    reg = gpd.read_parquet(path)
    rows = reg["id_lokalId"].isin(ids)
    reg.loc[rows, column] = (reg.loc[rows, column] * factor).round()
    reg.to_parquet(path)


@pytest.fixture
def dk(sample_copy: Path, tmp_path: Path):
    pipeline = sample_copy / "pipelines" / "dk-sample.toml"
    first = run_pipeline(pipeline, tmp_path / "out")
    return pipeline, first, sample_copy / "geodata" / "sample" / "bbr_bygning_2020.parquet"


@pytest.mark.slow
def test_one_changed_district_is_recomputed_and_equals_full(dk, tmp_path: Path) -> None:
    pipeline, first, register = dk
    b = pd.read_parquet(first / "buildings.parquet", columns=["building_id", "district_id"])
    target = b["district_id"].value_counts().index[3]
    ids = b.loc[b["district_id"] == target, "building_id"].head(6)
    _edit_register(register, ids, "byg038SamletBygningsareal", 1.25)

    inc = run_pipeline(pipeline, tmp_path / "out", force=False)
    full = run_pipeline(pipeline, tmp_path / "full", force=True)
    m = json.loads((inc / "run.json").read_text())["incremental"]
    assert m["mode"] == "incremental" and m["recomputed"] == [target]
    # 52 parishes and _unassigned: register records outside every parish or without
    # coordinates (most of them left out later, e.g. demolished buildings)
    assert m["reused_count"] == m["districts"] - 1 == 52
    report = (inc / "report.md").read_text()
    assert f"recomputed 1 of 53 districts: {target}; reused 52" in report
    assert json.loads((full / "run.json").read_text())["incremental"]["mode"] == "full"
    assert_same_outputs(inc, full)
    # the Monte Carlo aggregates: only the changed district's rows, its grid cells and its
    # flows; new-housing spreads construction by each district's share of the (changed)
    # total floor area, so that scenario is recomputed whole
    agg = m["aggregates_computed"]
    assert agg["districts"] == 1 and agg["of_districts"] == 52
    mine = gpd.read_parquet(inc / "buildings.parquet")
    mine = mine[mine["district_id"] == target]
    points = mine.geometry.representative_point()
    cells = {(int(x // 100), int(y // 100)) for x, y in zip(points.x, points.y, strict=True)}
    assert len(cells) <= agg["grid_cells"] <= len(cells) + 3  # + bbox-centre part edges
    assert agg["grid_cells"] < agg["of_grid_cells"] / 5
    flows = agg["flow_districts_by_scenario"]
    assert flows == {"baseline": 1, "longer-life": 1, "new-housing": 52, "growth": 1}
    assert "Monte Carlo percentiles recomputed for 1 of 52 district rows" in report
    before = json.loads((first / "run.json").read_text())["totals_t"]["mass_t"]
    assert json.loads((inc / "run.json").read_text())["totals_t"]["mass_t"] > before


@pytest.mark.slow
def test_a_change_that_moves_the_extent_reorders_and_equals_full(dk, tmp_path: Path) -> None:
    """The easternmost building is demolished: the layer's extent shrinks, so the Hilbert
    curve moves and the reused rows change order; the files still equal a forced run's."""
    pipeline, first, register = dk
    b = gpd.read_parquet(first / "buildings.parquet", columns=["building_id", "geometry"])
    east = b.loc[b.geometry.bounds["maxx"].idxmax(), "building_id"]
    reg = gpd.read_parquet(register)
    reg = reg[reg["id_lokalId"] != east]
    reg.to_parquet(register)
    inc = run_pipeline(pipeline, tmp_path / "out", force=False)
    full = run_pipeline(pipeline, tmp_path / "full", force=True)
    m = json.loads((inc / "run.json").read_text())
    assert m["incremental"]["mode"] == "incremental" and m["incremental"]["recomputed_count"] == 1
    before = json.loads(pq.read_metadata(first / "buildings.parquet").metadata[b"geo"])
    after = json.loads(pq.read_metadata(inc / "buildings.parquet").metadata[b"geo"])
    assert after["columns"]["geometry"]["bbox"] != before["columns"]["geometry"]["bbox"]
    assert_same_outputs(inc, full)
    for f in ["project.qgs", *sorted(x.name for x in full.glob("*.qml"))]:
        assert (inc / f).read_text() == (full / f).read_text(), f


@pytest.mark.slow
def test_an_incremental_run_left_with_no_building_fails_clearly(
    sample_copy: Path, tmp_path: Path
) -> None:
    """Every record but one parish's is demolished; then that parish's too. The reused
    parts hold only left-out records, so the run stops with the error a full run gives,
    and the previous run stays published."""
    from mfa.errors import InputDataError

    pipeline = sample_copy / "pipelines" / "dk-sample.toml"
    register = sample_copy / "geodata" / "sample" / "bbr_bygning_2020.parquet"
    full = run_pipeline(pipeline, tmp_path / "probe")
    b = pd.read_parquet(full / "buildings.parquet", columns=["building_id", "district_id"])
    small = b["district_id"].value_counts().index[-1]  # well under 40 % of the records
    reg = gpd.read_parquet(register)
    keep = reg["id_lokalId"].isin(b.loc[b["district_id"] == small, "building_id"])
    reg.loc[~keep, "status"] = "9"  # not a standing building
    reg.to_parquet(register)
    first = run_pipeline(pipeline, tmp_path / "out")
    assert json.loads((first / "run.json").read_text())["row_counts"]["buildings"] == keep.sum()
    reg.loc[keep, "status"] = "9"
    reg.to_parquet(register)
    with pytest.raises(InputDataError, match=r"none of the \d+ records is a building"):
        run_pipeline(pipeline, tmp_path / "out", force=False)
    assert (tmp_path / "out" / "dk-sample" / "latest").resolve() == first.resolve()


@pytest.mark.slow
def test_nothing_result_relevant_changed_reuses_every_district(dk, tmp_path: Path) -> None:
    pipeline, first, _ = dk
    pipeline.write_text(pipeline.read_text().replace("partitions = 4", "partitions = 3"))
    inc = run_pipeline(pipeline, tmp_path / "out", force=False)  # run_key changed: a run
    m = json.loads((inc / "run.json").read_text())["incremental"]
    assert m["mode"] == "incremental" and m["recomputed"] == [] and m["reused_count"] == 53
    agg = m["aggregates_computed"]
    assert agg["districts"] == 0 and agg["grid_cells"] == 0
    assert set(agg["flow_districts_by_scenario"].values()) == {0}
    assert_same_outputs(inc, first)


@pytest.mark.slow
def test_a_moved_cohort_statistic_recomputes_everything(dk, tmp_path: Path) -> None:
    """Floor counts of one district move a run-wide cohort median: imputed floors of
    buildings in other districts may change, so nothing is reused."""
    pipeline, first, register = dk
    b = pd.read_parquet(first / "buildings.parquet")
    big = b["district_id"].value_counts().index[0]
    ids = b.loc[(b["district_id"] == big) & (b["floors_source"] == "register"), "building_id"]
    _edit_register(register, ids, "byg054AntalEtager", 3.0)
    inc = run_pipeline(pipeline, tmp_path / "out", force=False)
    full = run_pipeline(pipeline, tmp_path / "full", force=True)
    m = json.loads((inc / "run.json").read_text())["incremental"]
    assert m["mode"] == "full"
    assert m["reason"] == "the cohort statistics used for imputation changed"
    assert m["recomputed_count"] == 53
    assert_same_outputs(inc, full)


@pytest.mark.slow
def test_a_change_to_most_districts_recomputes_everything(dk, tmp_path: Path) -> None:
    """Past FULL_RECOMPUTE_SHARE of the records in changed districts, a merge costs more
    than it saves: the run recomputes all, says why, and equals a forced run."""
    from mfa.run import FULL_RECOMPUTE_SHARE

    pipeline, first, register = dk
    b = pd.read_parquet(first / "buildings.parquet", columns=["building_id", "district_id"])
    counts = b["district_id"].value_counts()
    many = counts.index[: int((counts.cumsum() < 0.6 * len(b)).sum()) + 1]
    ids = b[b["district_id"].isin(many)].groupby("district_id").head(1)["building_id"]
    reg = gpd.read_parquet(register)
    rows = reg["id_lokalId"].isin(ids)
    reg.loc[rows, "byg038SamletBygningsareal"] = reg.loc[rows, "byg038SamletBygningsareal"] + 10
    reg.to_parquet(register)
    inc = run_pipeline(pipeline, tmp_path / "out", force=False)
    full = run_pipeline(pipeline, tmp_path / "full", force=True)
    m = json.loads((inc / "run.json").read_text())["incremental"]
    assert m["mode"] == "full" and m["recomputed_count"] == 53, m["reason"]
    assert "recomputing all is cheaper than merging" in m["reason"]
    assert f"more than {FULL_RECOMPUTE_SHARE:.0%}" in m["reason"]
    assert_same_outputs(inc, full)


@pytest.mark.slow
def test_changed_settings_recompute_everything(dk, tmp_path: Path) -> None:
    pipeline, _, _ = dk
    pipeline.write_text(pipeline.read_text().replace("seed = 42", "seed = 7"))
    inc = run_pipeline(pipeline, tmp_path / "out", force=False)
    m = json.loads((inc / "run.json").read_text())["incremental"]
    assert m["mode"] == "full" and m["recomputed_count"] == 53
    assert "settings" in m["reason"]


def test_split_parts_is_the_district_of_the_bbox_centre(sample_copy: Path) -> None:
    """The fast locator gives each record the district assign_districts gives its
    bounding-box centre (first district on shared borders), _unassigned outside."""
    reg = gpd.read_parquet(sample_copy / "geodata" / "sample" / "bbr_bygning_2020.parquet")
    p = load_pipeline(sample_copy / "pipelines" / "dk-sample.toml")
    assert p.sources.districts is not None
    districts = read_districts(p.sources.districts, p.crs)
    geometry = reg.geometry.to_crs(p.crs)
    geometry = geometry[geometry.notna() & ~geometry.is_empty].reset_index(drop=True)
    b = geometry.bounds
    centres = gpd.GeoSeries(
        gpd.points_from_xy((b.minx + b.maxx) / 2, (b.miny + b.maxy) / 2), crs=p.crs
    )
    # plus points exactly on the first district's vertices (shared borders)
    ring = shapely.get_coordinates(shapely.boundary(districts.geometry.iloc[0]))[:50]
    extra = gpd.GeoSeries(gpd.points_from_xy(ring[:, 0], ring[:, 1]), crs=p.crs)
    geometry = pd.concat([geometry, extra], ignore_index=True)
    centres = pd.concat([centres, extra], ignore_index=True)
    expected = assign_districts(centres, districts).fillna(NO_DISTRICT)
    got = split_parts(geometry, districts)
    assert (got.to_numpy() == expected.to_numpy()).all()
    assert (got != NO_DISTRICT).sum() > 1000
    nothing = gpd.GeoSeries([None, shapely.Point()], crs=p.crs)
    assert split_parts(nothing, districts).tolist() == [NO_DISTRICT, NO_DISTRICT]


def test_part_digests_change_with_any_value_geometry_or_order_of_a_part() -> None:
    """Each edit changes its own part's digest and no other; missing geometries count."""
    records = gpd.GeoDataFrame(
        {
            "id": ["a", "b", "c", "d", "e"],
            "area": pd.array([100.0, None, 80.0, 75.5, 10.0], dtype="Float64"),
        },
        geometry=[shapely.Point(0, 0), shapely.Point(1, 1), None, shapely.Point(3, 3), None],
        crs="EPSG:25832",
    )
    part = pd.Series(["p1", "p1", "p2", "p2", "p3"], dtype="string")
    base = part_digests(records, part)
    assert list(base.index) == ["p1", "p2", "p3"] and base.is_unique

    def changed(frame: gpd.GeoDataFrame, parts: pd.Series = part) -> set[str]:
        new = part_digests(frame, parts)
        return {k for k in base.index if new.get(k) != base[k]}

    edits = records.copy()
    edits.loc[1, "area"] = 101.0  # a missing value filled in
    assert changed(edits) == {"p1"}
    edits = records.copy()
    edits.loc[3, "geometry"] = shapely.Point(3, 3.000001)
    assert changed(edits) == {"p2"}
    edits = records.copy()
    edits.loc[2, "geometry"] = shapely.Point(2, 2)  # a missing geometry given
    assert changed(edits) == {"p2"}
    swapped = records.iloc[[1, 0, 2, 3, 4]].reset_index(drop=True)  # order within p1
    assert changed(swapped, part.iloc[[1, 0, 2, 3, 4]].reset_index(drop=True)) == {"p1"}
    moved = part.copy()
    moved[3] = "p3"  # a record moves from p2 to p3
    assert changed(records, moved) == {"p2", "p3"}
    assert part_digests(records.copy(), part.copy()).equals(base)  # deterministic


def _gpkg_tables(path: Path) -> dict[str, pd.DataFrame]:
    """Every GeoPackage layer as a table sorted by its key (geometry as WKB), and styles."""
    import sqlite3

    import pyogrio

    out = {}
    for name, _ in pyogrio.list_layers(path):
        df = pyogrio.read_dataframe(path, layer=name, fid_as_index=False)
        if "geometry" in df:
            df = pd.DataFrame(df).assign(geometry=shapely.to_wkb(df.geometry.values))
        key = [
            c
            for c in ("building_id", "cell_id", "district_id", "scenario", "material", "year")
            if c in df.columns
        ]
        out[name] = df.sort_values(key).reset_index(drop=True) if key else df
    with sqlite3.connect(path) as con:
        out["layer_styles"] = pd.read_sql(
            "SELECT f_table_name, f_geometry_column, styleName, styleQML, useAsDefault "
            "FROM layer_styles ORDER BY f_table_name",
            con,
        )
        out["extent"] = pd.read_sql(
            "SELECT table_name, min_x, min_y, max_x, max_y FROM gpkg_contents ORDER BY table_name",
            con,
        )
        counts = pd.read_sql("SELECT * FROM gpkg_ogr_contents ORDER BY table_name", con)
        out["counts"] = counts
    return out


@pytest.mark.slow
def test_the_updated_geopackage_holds_what_a_full_write_holds(dk, tmp_path: Path) -> None:
    """An incremental run updates the previous run's GeoPackage (deletes the replaced
    buildings, appends the recomputed ones, rewrites the small layers and the styles):
    every layer, style, extent and feature count equals a full run's."""
    pipeline, first, register = dk
    b = pd.read_parquet(first / "buildings.parquet", columns=["building_id", "district_id"])
    target = b["district_id"].value_counts().index[5]
    ids = b.loc[b["district_id"] == target, "building_id"].head(4)
    _edit_register(register, ids, "byg038SamletBygningsareal", 1.5)
    before = sha256_file(first / "layers.gpkg")
    inc = run_pipeline(pipeline, tmp_path / "out", force=False)
    full = run_pipeline(pipeline, tmp_path / "full", force=True)
    m = json.loads((inc / "run.json").read_text())
    assert m["qgis"]["geopackage_from"] == str(first.resolve() / "layers.gpkg")
    a, f = _gpkg_tables(inc / "layers.gpkg"), _gpkg_tables(full / "layers.gpkg")
    assert a.keys() == f.keys()
    for name in a:
        pd.testing.assert_frame_equal(a[name], f[name], check_exact=True, obj=name)
    # the spatial index answers as after a full write
    import sqlite3

    declared = "SELECT * FROM gpkg_geometry_columns ORDER BY table_name"
    with sqlite3.connect(inc / "layers.gpkg") as ca, sqlite3.connect(full / "layers.gpkg") as cf:
        assert ca.execute(declared).fetchall() == cf.execute(declared).fetchall()

    for run in (inc, full):
        with sqlite3.connect(run / "layers.gpkg") as con:
            (n,) = con.execute("SELECT count(*) FROM rtree_buildings_geom").fetchone()
        assert n == m["row_counts"]["buildings"]
    # the project (layer geometry types, extents) and the styles, made without parsing
    # the buildings' geometries, are a full run's
    for f in ["project.qgs", *sorted(x.name for x in full.glob("*.qml"))]:
        assert (inc / f).read_text() == (full / f).read_text(), f
    # and the earlier run's GeoPackage is untouched
    assert sha256_file(first / "layers.gpkg") == before


@pytest.mark.slow
def test_parts_with_duplicate_or_missing_ids_are_always_recomputed(
    sample_copy: Path, tmp_path: Path
) -> None:
    """Normalisation keeps the first of two records with the same id, across parts: the
    parts holding such records (or records without an id) are never reused, and the run
    equals a full one."""
    pipeline = sample_copy / "pipelines" / "dk-sample.toml"
    register = sample_copy / "geodata" / "sample" / "bbr_bygning_2020.parquet"
    reg = gpd.read_parquet(register)
    first = run_pipeline(pipeline, tmp_path / "out")
    b = pd.read_parquet(first / "buildings.parquet", columns=["building_id", "district_id"])
    by = b["district_id"].value_counts()
    a_id = b.loc[b["district_id"] == by.index[0], "building_id"].iloc[0]
    far = b.loc[b["district_id"] == by.index[1], "building_id"].iloc[0]
    twin = reg[reg["id_lokalId"] == a_id].copy()
    twin["geometry"] = reg.loc[reg["id_lokalId"] == far, "geometry"].to_numpy()
    nameless = reg[reg["id_lokalId"] == b["building_id"].iloc[-1]].copy()
    nameless["id_lokalId"] = ""
    pd.concat([reg, twin, nameless]).to_parquet(register)
    run_pipeline(pipeline, tmp_path / "out", force=False)  # recomputes the parts they are in
    target = by.index[4]
    ids = b.loc[b["district_id"] == target, "building_id"].head(3)
    _edit_register(register, ids, "byg038SamletBygningsareal", 1.25)
    inc = run_pipeline(pipeline, tmp_path / "out", force=False)
    full = run_pipeline(pipeline, tmp_path / "full", force=True)
    m = json.loads((inc / "run.json").read_text())["incremental"]
    assert m["mode"] == "incremental"
    assert {target, by.index[0], by.index[1]} <= set(m["recomputed"])
    assert len(m["recomputed"]) <= 4  # and the nameless record's part
    assert_same_outputs(inc, full)
    dropped = pd.read_csv(inc / "dropped.csv", dtype="string")
    assert (dropped["reason"] == "duplicate id_lokalId: an earlier record was kept").sum() == 1


def test_wkb_geometry_types_are_those_geopandas_writes(tmp_path: Path) -> None:
    """Geometry types read from WKB headers (no parsing) equal geopandas' metadata, for
    mixed, 3-D, big-endian, empty and null geometries."""
    import pyarrow as pa

    from mfa.io.geoparquet import wkb_geometry_types, wkb_type_ids

    geoms = [
        shapely.Point(1, 2),
        shapely.box(0, 0, 1, 1),
        shapely.MultiPolygon([shapely.box(0, 0, 1, 1), shapely.box(2, 2, 3, 3)]),
        shapely.Point(1, 2, 3),
        shapely.Polygon(),
        None,
        shapely.LineString([(0, 0), (1, 1)]),
    ]
    for subset in ([0], [1, 2], [3, 5], [4], [5], list(range(len(geoms)))):
        frame = gpd.GeoDataFrame({"k": range(len(subset))}, geometry=[geoms[i] for i in subset])
        frame.to_parquet(tmp_path / "g.parquet")
        geo = json.loads(pq.read_metadata(tmp_path / "g.parquet").metadata[b"geo"])
        column = pq.read_table(tmp_path / "g.parquet")["geometry"]
        assert wkb_geometry_types(column) == geo["columns"]["geometry"]["geometry_types"]
    big = pa.array([shapely.to_wkb(g, byte_order=0) for g in geoms[:4]] + [None], pa.binary())
    assert wkb_geometry_types(big) == ["MultiPolygon", "Point", "Point Z", "Polygon"]
    ewkb = pa.array([shapely.to_wkb(geoms[3], flavor="extended")], pa.binary())
    assert wkb_geometry_types(ewkb) == ["Point Z"]
    # and the type id of each row, as shapely gives it (-1 for null)
    geoms += [shapely.MultiPoint([(0, 0), (1, 1)]), shapely.GeometryCollection([geoms[0]])]
    for order in (1, 0):
        wkb = [None if g is None else shapely.to_wkb(g, byte_order=order) for g in geoms]
        ids = wkb_type_ids(pa.array(wkb, pa.binary()))
        assert ids.tolist() == shapely.get_type_id(np.array(geoms, dtype=object)).tolist()

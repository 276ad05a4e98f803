"""`mfa query` reads only the row groups and columns it needs, and answers as a full read.

The oracle is the whole ``buildings.parquet`` read by geopandas (every row group, every
column) and the query's rule applied to it by hand: representative point inside the area,
tonnes × the outflow share. The answers must be equal to the bit.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import shapely
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mfa.errors import InputDataError
from mfa.io.bboxread import read_bbox, row_groups_meeting
from mfa.io.geoparquet import read_layer
from mfa.query import area_around, availability, outflow_factor, run_draws, run_manifest
from mfa.run import run_pipeline
from mfa.stocks.uncertainty import group_percentiles
from mfa.synth import write_synthetic_city
from tests.conftest import CONFIG, SAMPLE

KALUNDBORG = (643786.0, 6150882.0)  # among the sample's Kalundborg buildings (EPSG:25832)
FIELDS = ["xmin", "ymin", "xmax", "ymax"]


@pytest.fixture(scope="module")
def strips(tmp_path_factory) -> Path:
    """A synthetic city of 10,000 records in south-to-north order, 1,000 per batch (the least): a
    buildings layer of about a dozen row groups, each a strip of the city (so a small
    area's row groups can be told from the others by their statistics)."""
    city = tmp_path_factory.mktemp("strips")
    pipeline = write_synthetic_city(10_000, 5, city, SAMPLE / "bbr_bygning_2020.parquet", CONFIG)
    reg = gpd.read_parquet(city / "register.parquet")
    reg = reg.iloc[np.argsort(reg.geometry.bounds["miny"].to_numpy(), kind="stable")]
    reg.to_parquet(city / "register.parquet", write_covering_bbox=True)
    text = pipeline.read_text().replace("batch_rows = 100000", "batch_rows = 1000")
    pipeline.write_text(text)
    return run_pipeline(pipeline)


def _extents(path: Path) -> np.ndarray:
    """Per row group: min xmin, min ymin, max xmax, max ymax of the covering bbox."""
    meta = pq.read_metadata(path)
    first = meta.row_group(0)
    where = {first.column(i).path_in_schema: i for i in range(first.num_columns)}
    out = []
    for g in range(meta.num_row_groups):
        s = [meta.row_group(g).column(where[f"bbox.{f}"]).statistics for f in FIELDS]
        out.append([s[0].min, s[1].min, s[2].max, s[3].max])
    return np.array(out)


def _oracle_rows(path: Path, bbox: tuple[float, ...], columns: list[str] | None) -> pd.DataFrame:
    """The rows whose covering bbox meets ``bbox``, from a full read of the file."""
    full = gpd.read_parquet(path)
    box = pq.read_table(path, columns=["bbox"]).column("bbox").combine_chunks().flatten()
    x0, y0, x1, y1 = (b.to_numpy(zero_copy_only=False) for b in box)
    with np.errstate(invalid="ignore"):
        meet = (x0 <= bbox[2]) & (y0 <= bbox[3]) & (x1 >= bbox[0]) & (y1 >= bbox[1])
    rows = full.loc[meet].reset_index(drop=True)
    return rows if columns is None else rows[columns]


def _oracle_answer(run: Path, area: shapely.Geometry, years: tuple[int, int] | None):
    """The buildings, tonnes and percentiles of a query, from the whole layer."""
    manifest = run_manifest(run)
    full = gpd.read_parquet(run / "buildings.parquet")
    pts = shapely.point_on_surface(full.geometry.values)
    b = full.loc[shapely.contains_xy(area, shapely.get_x(pts), shapely.get_y(pts))]
    b = b.reset_index(drop=True)
    factor = np.ones(len(b))
    if years is not None:
        factor = outflow_factor(b, manifest, "baseline", *years)
    archetypes, draws, materials = run_draws(manifest)
    floor = np.zeros((1, len(archetypes)))
    a_idx = pd.Index(archetypes).get_indexer(b["archetype_id"].astype(object))
    np.add.at(floor, (0, a_idx), b["gfa_m2"].to_numpy(dtype=float) * factor)
    q = tuple(float(x) for x in manifest["uncertainty"]["percentiles"])
    pct = group_percentiles(floor, draws, materials, q)[0].iloc[0]
    tonnes = {m: float((b[f"{m}_t"].to_numpy(dtype=float) * factor).sum()) for m in materials}
    tonnes["mass"] = float((b["mass_t"].to_numpy(dtype=float) * factor).sum())
    return b, factor, tonnes, pct


def _assert_same_answer(run: Path, area: shapely.Geometry, years=None) -> int:
    res = availability(run, area, years=years)
    b, factor, tonnes, pct = _oracle_answer(run, area, years)
    got = res.buildings
    assert got["building_id"].tolist() == b["building_id"].tolist()
    assert shapely.equals_exact(got.geometry.values, b.geometry.values, tolerance=0).all()
    np.testing.assert_array_equal(got["share"].to_numpy(), factor)
    for m, t in tonnes.items():
        row = res.summary.set_index("material").loc[m]
        assert row["t"] == t  # to the bit: same rows, same order, same arithmetic
        for p in ("p05", "p50", "p95"):
            assert row[f"t_{p}"] == pct[f"{m}_t_{p}"]
        if m != "mass":
            np.testing.assert_array_equal(got[f"{m}_t"].to_numpy(), b[f"{m}_t"] * factor)
    return len(got)


def test_layers_have_bbox_statistics_in_every_row_group(strips: Path, dk_sample_run) -> None:
    for run in (strips, dk_sample_run):
        for name in ("buildings.parquet", "districts.parquet"):
            meta = pq.read_metadata(run / name)
            first = meta.row_group(0)
            where = {first.column(i).path_in_schema: i for i in range(first.num_columns)}
            for g in range(meta.num_row_groups):
                for f in FIELDS:
                    stats = meta.row_group(g).column(where[f"bbox.{f}"]).statistics
                    assert stats is not None and stats.has_min_max, (run, name, g, f)
    path = strips / "buildings.parquet"
    assert pq.read_metadata(path).num_row_groups >= 10
    # the layer's extent (the file's key-value ``geo``) is all batches'
    ext = _extents(path)
    extent = [*ext[:, :2].min(axis=0), *ext[:, 2:].max(axis=0)]
    geo = json.loads(pq.read_metadata(path).metadata[b"geo"])
    assert geo["columns"]["geometry"]["bbox"] == extent


def test_small_areas_read_few_row_groups_and_answer_as_the_full_read(strips: Path) -> None:
    path = strips / "buildings.parquet"
    ext = _extents(path)
    n = len(ext)
    x = float(np.median((ext[:, 0] + ext[:, 2]) / 2))
    # a circle on the border of two strips (row groups k and k + 1), and one inside one
    k = n // 2
    border = (ext[k, 3] + ext[k + 1, 1]) / 2
    crossing = area_around(x, border, 60.0)
    meet = row_groups_meeting(pq.read_metadata(path), "bbox", FIELDS, shapely.bounds(crossing))
    assert {k, k + 1} <= set(meet) and len(meet) < n
    assert _assert_same_answer(strips, crossing, years=(2026, 2035)) > 0
    inside = area_around(x, (ext[2, 1] + ext[2, 3]) / 2, 15.0)
    assert len(row_groups_meeting(pq.read_metadata(path), "bbox", FIELDS, inside.bounds)) < n
    _assert_same_answer(strips, inside)
    # the whole city: every row group, the same answer
    whole = shapely.box(*ext[:, :2].min(axis=0), *ext[:, 2:].max(axis=0)).buffer(1.0)
    assert _assert_same_answer(strips, whole, years=(2026, 2035)) == len(
        pq.read_table(path, columns=["building_id"])
    )


def test_an_area_matching_nothing_still_warns_or_fails(strips: Path) -> None:
    full = gpd.read_parquet(strips / "buildings.parquet")
    x0, y0, x1, y1 = full.total_bounds
    gx, gy = np.meshgrid(np.linspace(x0, x1, 60), np.linspace(y0, y1, 60))
    cands = shapely.points(gx.ravel(), gy.ravel())
    tree = shapely.STRtree(full.geometry.values)
    _, dist = tree.query_nearest(cands, return_distance=True, all_matches=False)
    gap = cands[np.flatnonzero(dist > 3.0)[0]]  # in a street: no footprint within 3 m
    res = availability(strips, area_around(shapely.get_x(gap), shapely.get_y(gap), 2.0))
    assert len(res.buildings) == 0 and (res.summary["t"] == 0).all()
    assert "no building of this run lies inside the area" in res.warnings[0]
    with pytest.raises(InputDataError, match="outside the run's buildings"):
        availability(strips, area_around(x1 + 5000, y1 + 5000, 100.0))


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.floats(0, 1),
    st.floats(0, 1),
    st.floats(0, 0.4),
    st.floats(0, 0.4),
)
def test_any_box_reads_the_rows_a_full_read_gives(strips: Path, fx, fy, fw, fh) -> None:
    path = strips / "buildings.parquet"
    geo = json.loads(pq.read_metadata(path).metadata[b"geo"])
    x0, y0, x1, y1 = geo["columns"]["geometry"]["bbox"]
    bx, by = x0 + fx * (x1 - x0), y0 + fy * (y1 - y0)
    box = (bx, by, bx + fw * (x1 - x0), by + fh * (y1 - y0))
    columns = ["building_id", "district_id", "construction_year", "brick_t", "geometry"]
    got = read_layer(path, bbox=box, columns=columns)
    pd.testing.assert_frame_equal(got, _oracle_rows(path, box, columns), check_exact=True)


def test_dk_sample_answers_as_the_full_read(dk_sample_run: Path) -> None:
    path = dk_sample_run / "buildings.parquet"
    for radius in (300.0, 3000.0):
        area = area_around(*KALUNDBORG, radius)
        assert _assert_same_answer(dk_sample_run, area, years=(2026, 2035)) > 0
        box = tuple(shapely.bounds(area))
        # all columns, as geopandas' own bbox read gives them
        pd.testing.assert_frame_equal(
            read_layer(path, bbox=box), gpd.read_parquet(path, bbox=box), check_exact=True
        )


def test_missing_boxes_and_files_without_statistics(tmp_path: Path) -> None:
    polys = [shapely.box(i * 10.0, 0, i * 10.0 + 5, 5) for i in range(6)]
    geoms = [polys[0], None, shapely.Polygon(), polys[3], polys[4], polys[5]]
    gdf = gpd.GeoDataFrame({"i": range(6)}, geometry=geoms, crs="EPSG:25832")
    box = (0.0, 0.0, 35.0, 5.0)
    for stats in (True, False):
        path = tmp_path / f"s{stats}.parquet"
        gdf.to_parquet(path, write_covering_bbox=True, row_group_size=2, write_statistics=stats)
        meta = pq.read_metadata(path)
        kept = row_groups_meeting(meta, "bbox", FIELDS, box)
        assert kept == ([0, 1] if stats else [0, 1, 2])  # 4 and 5 lie beyond x = 35
        assert read_layer(path, bbox=box)["i"].tolist() == [0, 3]  # no box: meets nothing
        assert read_layer(path, bbox=(35.0, 5.0, 38.0, 9.0))["i"].tolist() == [3]  # a corner
        assert read_bbox(path, (100.0, 100.0, 200.0, 200.0)).num_rows == 0
    gdf.to_parquet(tmp_path / "plain.parquet")  # no covering column: geopandas reads it
    assert read_bbox(tmp_path / "plain.parquet", box) is None
    with pytest.raises(ValueError, match="bbox"):  # as before: geopandas' own answer
        read_layer(tmp_path / "plain.parquet", bbox=box)


def test_district_queries_read_their_row_groups_and_answer_as_the_full_read(
    strips: Path, dk_sample_run: Path, caplog
) -> None:
    for run in (strips, dk_sample_run):
        path = run / "buildings.parquet"
        full = gpd.read_parquet(path)
        counts = full["district_id"].value_counts()
        ids = [str(counts.index[0]), str(counts.index[-1])]
        res = availability(run, districts=ids, years=(2026, 2035))
        b = full[full["district_id"].isin(ids)].reset_index(drop=True)
        assert res.buildings["building_id"].tolist() == b["building_id"].tolist()
        factor = outflow_factor(b, run_manifest(run), "baseline", 2026, 2035)
        row = res.summary.set_index("material").loc["brick"]
        assert row["t"] == float((b["brick_t"].to_numpy(dtype=float) * factor).sum())
        for wanted in ([ids[0]], ids, ["no such district"]):
            filters = [("district_id", "in", wanted)]
            pd.testing.assert_frame_equal(
                read_layer(path, filters=filters),
                gpd.read_parquet(path, filters=filters),
                check_exact=True,
            )
    # the strips' districts lie in a few row groups: the others are not read
    path = strips / "buildings.parquet"
    one = str(pq.read_table(path, columns=["district_id"]).column(0)[0])
    with caplog.at_level(logging.DEBUG, logger="mfa.io.bboxread"):
        read_layer(
            path, filters=[("district_id", "in", [one])], columns=["district_id", "geometry"]
        )
    read, total = map(int, re.search(r"from (\d+) of (\d+) row groups", caplog.text).groups())
    assert 1 <= read < total


def test_the_layer_metadata_holds_every_batch(strips: Path) -> None:
    """Written batch by batch (strips: south to north), the buildings layer's ``geo``
    has the whole layer's bounding box for every reader, not the first batch's: pyarrow's
    schema, the file's key-value metadata and geopandas agree, with one ``geo`` key."""
    path = strips / "buildings.parquet"
    keys = [k for k in pq.read_metadata(path).metadata if k == b"geo"]
    assert keys == [b"geo"]
    whole = gpd.read_parquet(path, columns=["geometry"]).total_bounds
    for raw in (pq.read_schema(path).metadata[b"geo"], pq.read_metadata(path).metadata[b"geo"]):
        box = json.loads(raw)["columns"]["geometry"]["bbox"]
        np.testing.assert_allclose(box, whole, rtol=0, atol=1e-6)

"""Grid cells, stock rasters, densities per capita and hazard shares."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st

from mfa.config import DistrictSource
from mfa.errors import InputDataError
from mfa.io.districts import read_districts
from mfa.stocks.aggregate import aggregate_districts
from mfa.stocks.grid import aggregate_grid, grid_array, grid_index

MATERIALS = ["concrete", "brick", "wood", "steel", "glass", "aluminium", "copper", "plastics"]


@pytest.fixture(scope="module")
def dk_run(dk_sample_run: Path) -> Path:
    return dk_sample_run


def test_grid_and_rasters_sum_to_the_district_totals(dk_run: Path) -> None:
    grid = gpd.read_parquet(dk_run / "grid.parquet")
    d = gpd.read_parquet(dk_run / "districts.parquet")
    b = pd.read_parquet(dk_run / "buildings.parquet")
    assert grid.crs.to_epsg() == 25832 and grid.cell_id.is_unique
    assert grid.building_count.sum() == len(b)
    assert np.allclose(grid.geometry.area, 100 * 100)
    for col in ["mass_t", *[f"{m}_t" for m in MATERIALS]]:
        assert grid[col].sum() == pytest.approx(d[col].sum(), rel=1e-9)
        name = col.removesuffix("_t")
        with rasterio.open(dk_run / f"stock_{name}.tif") as src:
            assert src.crs.to_epsg() == 25832
            assert src.res == (100.0, 100.0)
            assert src.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
            assert src.tags(1)["unit"] == "t/ha"
            t_per_ha = src.read(1).astype(float)
        # t/ha × 1 ha per cell = t; float32 cells hold ~7 significant digits
        assert t_per_ha.sum() == pytest.approx(d[col].sum(), rel=1e-5)
    m = json.loads((dk_run / "run.json").read_text())
    assert m["checks"]["grid_mass_balance"]["draw_by_draw_max_rel_error"] < 1e-9


def test_raster_cell_holds_its_grid_cell(dk_run: Path) -> None:
    grid = gpd.read_parquet(dk_run / "grid.parquet")
    top = grid.sort_values("mass_t", ascending=False).iloc[0]
    with rasterio.open(dk_run / "stock_mass.tif") as src:
        centre = top.geometry.centroid
        (value,) = next(src.sample([(centre.x, centre.y)]))
    assert value == pytest.approx(top.mass_t_per_ha, rel=1e-6)


@settings(max_examples=50, deadline=None)
@given(
    xs=st.lists(st.integers(-1000, 1000), min_size=1, max_size=50),
    size=st.sampled_from([1.0, 50.0, 100.0, 250.0]),
)
def test_every_building_in_exactly_one_cell(xs, size) -> None:
    pts = shapely.points(np.array(xs, float), np.array(xs, float)[::-1])
    vals = pd.DataFrame({"mass_t": np.arange(1, len(xs) + 1, dtype=float)})
    cells, cell_of = aggregate_grid(pts, vals, size, "EPSG:25832")
    assert cells.building_count.sum() == len(xs)
    assert cells.mass_t.sum() == pytest.approx(vals.mass_t.sum())
    # each point lies in (or on the lower/left edge of) its cell
    for p, c in zip(pts, cell_of, strict=True):
        x0, y0, x1, y1 = cells.geometry.iloc[c].bounds
        assert x0 <= p.x < x1 and y0 <= p.y < y1


def test_grid_index_on_edges_and_array_layout() -> None:
    ix, _ = grid_index(np.array([0.0, 99.999, 100.0, -0.001]), np.array([0.0, 0, 0, 0]), 100)
    assert ix.tolist() == [0, 0, 1, -1]
    arr, col0, top = grid_array(np.array([0, 2]), np.array([5, 3]), np.array([1.0, 2.0]))
    assert (col0, top) == (0, 5) and arr.shape == (3, 3)
    assert arr[0, 0] == 1.0 and arr[2, 2] == 2.0 and arr.sum() == 3.0


def test_per_capita_and_population_errors(tmp_path: Path) -> None:
    polys = [shapely.box(0, 0, 100, 100), shapely.box(100, 0, 200, 100)]
    f = tmp_path / "d.gpkg"
    gpd.GeoDataFrame({"id": ["a", "b"], "pop": [200, 0]}, geometry=polys, crs=25832).to_file(f)
    d = read_districts(
        DistrictSource(path=f, id_column="id", population_column="pop"), "EPSG:25832"
    )
    b = pd.DataFrame({"district_id": ["a", "b"], "gfa_m2": [1.0, 1.0], "mass_t": [50.0, 10.0]})
    out = aggregate_districts(b, d, ["mass_t"]).set_index("district_id")
    assert out.loc["a", "mass_t_per_capita"] == pytest.approx(0.25)
    assert pd.isna(out.loc["b", "mass_t_per_capita"])  # nobody lives there
    bad = tmp_path / "bad.gpkg"
    gpd.GeoDataFrame({"id": ["a"], "pop": ["many"]}, geometry=polys[:1], crs=25832).to_file(bad)
    with pytest.raises(InputDataError, match="pop = 'many' is not a number"):
        read_districts(
            DistrictSource(path=bad, id_column="id", population_column="pop"), "EPSG:25832"
        )


def test_asbestos_flag_and_district_share(dk_run: Path) -> None:
    b = pd.read_parquet(dk_run / "buildings.parquet")
    d = gpd.read_parquet(dk_run / "districts.parquet")
    flagged = b[b.hazard.notna()]
    # the BBR sample records asbestos roofing (byg036 = 2) on one standing building
    assert list(flagged.hazard) == ["asbestos_roof"]
    row = d.set_index("district_id").loc[flagged.district_id.iloc[0]]
    assert row.hazard_building_count == 1
    assert row.hazard_mass_share == pytest.approx(flagged.mass_t.iloc[0] / row.mass_t)
    assert (d.hazard_mass_share.between(0, 1)).all()


@pytest.mark.parametrize("layer", ["grid", "districts"])
def test_the_publish_check_of_group_layers_reads_batches_and_finds_changes(
    dk_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, layer: str
) -> None:
    """Read 7 groups at a time without the polygons, the check passes the published layer
    and fails a changed tonnage, percentiles out of order, a building count, a column."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    import mfa.run.checks as checks
    from mfa.config.load import load_pipeline
    from mfa.errors import ValidationError
    from tests.conftest import ROOT

    monkeypatch.setattr(checks, "GROUP_CHECK_BATCH", 7)
    p = load_pipeline(ROOT / "pipelines" / "dk-sample.toml")
    materials = json.loads((dk_run / "run.json").read_text())["intensities"]["materials"]
    found = checks._check_buildings_layer(dk_run / "buildings.parquet", p, materials)
    table = pq.read_table(dk_run / f"{layer}.parquet")
    ok = checks._check_groups(dk_run / f"{layer}.parquet", layer, found, p, materials, 0.0)
    assert ok["status"] == "passed"
    row = table.num_rows // 2

    def changed(column: str, value: float) -> Path:
        data = table[column].to_numpy().copy()
        data[row] = value
        out = tmp_path / f"{column}.parquet"
        i = table.schema.get_field_index(column)
        pq.write_table(table.set_column(i, column, pa.array(data)), out)
        return out

    cases = [
        ("mass_t", float(table["mass_t"][row].as_py()) * 1.01 + 1.0, "mass balance"),
        ("mass_t_p05", float(table["mass_t_p50"][row].as_py()) * 2 + 1.0, "not increasing"),
        ("building_count", int(table["building_count"][row].as_py()) + 1, "does not add up"),
    ]
    for column, value, message in cases:
        with pytest.raises(ValidationError, match=message):
            checks._check_groups(changed(column, value), layer, found, p, materials, 0.0)
    dropped = tmp_path / "dropped.parquet"
    pq.write_table(table.drop_columns(["brick_t"]), dropped)
    with pytest.raises(ValidationError, match="missing columns"):
        checks._check_groups(dropped, layer, found, p, materials, 0.0)

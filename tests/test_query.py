"""`mfa query`: availability in an area, equal to a direct computation from the layers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely

from mfa.errors import ConfigError, InputDataError
from mfa.query import area_around, availability

KALUNDBORG = (643786.0, 6150882.0)  # among the sample's Kalundborg buildings (EPSG:25832)


@pytest.fixture(scope="module")
def run(dk_sample_run: Path) -> Path:
    return dk_sample_run


def test_radius_query_equals_direct_computation(run: Path) -> None:
    res = availability(run, area_around(*KALUNDBORG, 3000))
    b = gpd.read_parquet(run / "buildings.parquet")
    pts = shapely.point_on_surface(b.geometry.values)
    near = b[shapely.distance(pts, shapely.Point(*KALUNDBORG)) <= 3000 * (1 - 1e-4)]
    assert len(res.buildings) > 50 and set(near.building_id) <= set(res.buildings.building_id)
    chosen = b[b.building_id.isin(res.buildings.building_id)]
    s = res.summary.set_index("material")
    for m in ["concrete", "brick", "wood", "mass"]:
        assert s.loc[m, "t"] == pytest.approx(chosen[f"{m}_t"].sum(), rel=1e-12)
        assert s.loc[m, "t_p05"] <= s.loc[m, "t_p50"] <= s.loc[m, "t_p95"]


def test_district_query_matches_the_district_layer(run: Path) -> None:
    d = gpd.read_parquet(run / "districts.parquet").set_index("district_id")
    busy = d.building_count.idxmax()
    s = availability(run, districts=[busy]).summary.set_index("material")
    for m in ["mass", "brick", "steel"]:
        assert s.loc[m, "t"] == pytest.approx(d.loc[busy, f"{m}_t"], rel=1e-12)
        # the same seeded draws: identical percentiles
        assert s.loc[m, "t_p95"] == pytest.approx(d.loc[busy, f"{m}_t_p95"], rel=1e-9)


def test_outflow_query_matches_flows_layer(run: Path) -> None:
    flows = gpd.read_parquet(run / "flows.parquet")
    d = flows.groupby("district_id").stock_m2.max().idxmax()
    for sc in ("baseline", "longer-life"):
        s = availability(run, districts=[d], years=(2026, 2035), scenario=sc).summary
        s = s.set_index("material")
        f = flows[
            (flows.scenario == sc) & (flows.district_id == d) & flows.year.between(2026, 2035)
        ]
        per_material = f.groupby("material").outflow_t.sum()
        for m in ["mass", "concrete", "brick", "wood"]:
            assert s.loc[m, "t"] == pytest.approx(per_material[m], rel=1e-9)


def test_material_subset_and_errors(run: Path) -> None:
    res = availability(run, area_around(*KALUNDBORG, 500), materials=["brick"])
    assert list(res.summary.material) == ["brick"]
    with pytest.raises(InputDataError, match="scenario 'mars'"):
        availability(run, area_around(*KALUNDBORG, 500), years=(2026, 2030), scenario="mars")
    with pytest.raises(InputDataError, match="after the run's base year"):
        availability(run, area_around(*KALUNDBORG, 500), years=(2019, 2030))
    with pytest.raises(InputDataError, match="not a run folder"):
        availability(run.parent, area_around(*KALUNDBORG, 500))


def test_changed_intensity_table_is_refused(run: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    m = json.loads((copy / "run.json").read_text())
    m["intensities"]["sha256"] = "0" * 64
    (copy / "run.json").write_text(json.dumps(m))
    with pytest.raises(ConfigError, match="changed since the run"):
        availability(copy, area_around(*KALUNDBORG, 500))


def test_cli_formats(run: Path, tmp_path: Path) -> None:
    base = [
        sys.executable,
        "-m",
        "mfa.cli",
        "query",
        str(run),
        "--around-lonlat",
        "11.2754,55.4828",
        "--radius",
        "3000",
        "--years",
        "2026-2035",
    ]
    csv = subprocess.run([*base, "--format", "csv"], capture_output=True, text=True, check=True)
    table = pd.read_csv(pd.io.common.StringIO(csv.stdout))
    assert list(table.columns) == ["material", "t_central", "t_p05", "t_p50", "t_p95"]
    assert (table.t_p05 <= table.t_p95).all() and table.t_central.sum() > 0
    gj = tmp_path / "b.geojson"
    subprocess.run([*base, "--format", "geojson", "-o", str(gj)], check=True, capture_output=True)
    g = gpd.read_file(gj)
    assert g.crs.to_epsg() == 4326 and len(g) > 50 and "brick_t" in g.columns
    np.testing.assert_allclose(
        g.brick_t.sum(), table.set_index("material").t_central["brick"], rtol=1e-6
    )
    bad = subprocess.run([*base[:5], "--radius", "5"], capture_output=True, text=True)
    assert bad.returncode == 2 and "give an area" in bad.stderr

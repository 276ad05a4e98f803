"""`mfa match` reads only the buildings' columns its supply needs, the footprints a row
group at a time, and matches as it did from the whole layer.

The oracle is the old read: the whole ``buildings.parquet`` by geopandas (every column,
every footprint), ``shapely.point_on_surface`` of all footprints, :func:`outflow_factor`
year by year, and :func:`run_supply` of that. The supply a matching solves must equal it
to the bit; and a matching of the same run whose layer is cut into many small row groups
must give the same match rows and the same match.json (apart from its seconds).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import shapely

from mfa.errors import InputDataError
from mfa.io.bboxread import read_points
from mfa.io.tables import load_materials
from mfa.match import match_run
from mfa.match.supply import SUPPLY_COLUMNS, check_supply_table, run_supply, supply_columns
from mfa.query import outflow_factor, outflow_factors, run_draws, run_manifest

DEMAND = Path("tests/data/match_demand_kalundborg.csv")
HUBS = Path("tests/data/match_hubs_kalundborg.csv")
MATERIALS = load_materials(Path("config/materials.toml"))


@pytest.fixture(scope="module")
def plan(tmp_path_factory) -> Path:
    """The demolition plan of the student guide's example (one row hazardous)."""
    path = tmp_path_factory.mktemp("plan") / "plan.csv"
    path.write_text(
        "supply_id,x,y,material,t,year_from,year_to,grade,hazardous\n"
        "plan-1,640050,6150500,concrete,50,2030,2031,3,false\n"
        "plan-2,640020,6150480,concrete,500,2030,2031,3,true\n"
    )
    return path


def _copy_run(run: Path, dest: Path) -> Path:
    shutil.copytree(run, dest, symlinks=True)
    return dest


def _rewrite_buildings(run: Path, **write: object) -> None:
    """Write the run's buildings layer again (``write``: pq.write_table options, or
    ``drop=`` a column) and record its new size in run.json, as a publish would."""
    path = run / "buildings.parquet"
    table = pq.read_table(path)
    drop = write.pop("drop", None)
    if drop:
        table = table.drop_columns([drop])
    pq.write_table(table, path, write_statistics=True, **write)
    manifest = json.loads((run / "run.json").read_text())
    manifest["files"]["buildings.parquet"]["bytes"] = path.stat().st_size
    (run / "run.json").write_text(json.dumps(manifest))


def _oracle_supply(run: Path, unit: str, years: tuple[int, int], plan: Path) -> pd.DataFrame:
    """The supply as match_run made it before: the whole layer read, all points taken."""
    manifest = run_manifest(run)
    b = gpd.read_parquet(run / "buildings.parquet")
    pts = shapely.point_on_surface(b.geometry.values)
    shares = {
        y: outflow_factor(b, manifest, "baseline", y, y) for y in range(years[0], years[1] + 1)
    }
    archetypes, draws, _ = run_draws(manifest) if unit != "building" else (None, None, None)
    sup = run_supply(
        b,
        shapely.get_x(pts),
        shapely.get_y(pts),
        shares,
        MATERIALS,
        unit,
        2,
        250.0,
        archetypes,
        draws,
    )
    frame = pd.read_csv(plan)
    extra = check_supply_table(frame, str(plan), MATERIALS)
    return pd.concat([sup, extra], ignore_index=True)


def _record(r) -> dict:
    return {k: v for k, v in r.manifest.items() if k != "seconds"}


@pytest.mark.parametrize("unit", ["building", "grid", "district"])
def test_the_supply_solved_is_the_whole_layers(dk_sample_run: Path, plan: Path, unit: str) -> None:
    r = match_run(dk_sample_run, DEMAND, supply_files=(plan,), unit=unit, hubs=HUBS)
    years = tuple(r.manifest["years"])
    want = _oracle_supply(dk_sample_run, unit, years, plan)
    got = r.allocation.supply_fate
    cols = [c for c in SUPPLY_COLUMNS if c in got.columns]
    assert len(got) == len(want) > 100
    pd.testing.assert_frame_equal(
        got[cols].reset_index(drop=True),
        want[cols].reset_index(drop=True),
        check_exact=True,
        check_dtype=False,  # the fate table's own dtypes (object ids) beside the oracle's
    )
    fate_haz = (got["fate"] == "hazardous").to_numpy()
    np.testing.assert_array_equal(fate_haz, want["hazardous"].to_numpy(bool))
    # the reach of the sites (50 km) covers part of the run (a 200 km transect): supply
    # beyond it is still the run's, published as end of life (why no row group is skipped)
    far = np.hypot(got["x"] - 644500.0, got["y"] - 6151200.0) > 60_000
    assert far.any() and (got.loc[far, "reused_t"] == 0).all()


def test_many_row_groups_match_as_one(dk_sample_run: Path, plan: Path, tmp_path: Path) -> None:
    cut = _copy_run(dk_sample_run, tmp_path / "cut")
    _rewrite_buildings(cut, row_group_size=97)
    assert pq.read_metadata(cut / "buildings.parquet").num_row_groups > 20
    for unit in ("grid", "building"):
        a = match_run(dk_sample_run, DEMAND, supply_files=(plan,), unit=unit, hubs=HUBS)
        b = match_run(cut, DEMAND, supply_files=(plan,), unit=unit, hubs=HUBS)
        rec_a, rec_b = _record(a), _record(b)
        rec_a["run"].pop("dir"), rec_b["run"].pop("dir")
        assert json.dumps(rec_a, sort_keys=True) == json.dumps(rec_b, sort_keys=True)
        pd.testing.assert_frame_equal(a.allocation.matches, b.allocation.matches, check_exact=True)
        pd.testing.assert_frame_equal(
            a.allocation.supply_fate, b.allocation.supply_fate, check_exact=True
        )
        assert a.summary == b.summary
        assert len(a.allocation.matches) > 0


def test_read_points_is_the_whole_read(dk_sample_run: Path, tmp_path: Path) -> None:
    cut = _copy_run(dk_sample_run, tmp_path / "cut")
    _rewrite_buildings(cut, row_group_size=150)
    path = cut / "buildings.parquet"
    cols = ["building_id", "district_id", "hazard", "concrete_t", "construction_year"]
    table, x, y = read_points(path, cols)
    full = gpd.read_parquet(dk_sample_run / "buildings.parquet")
    pts = shapely.point_on_surface(full.geometry.values)
    np.testing.assert_array_equal(x, shapely.get_x(pts))
    np.testing.assert_array_equal(y, shapely.get_y(pts))
    pd.testing.assert_frame_equal(table.to_pandas(), pd.DataFrame(full[cols]), check_exact=True)


def test_outflow_factors_are_outflow_factor_year_by_year(dk_sample_run: Path) -> None:
    manifest = run_manifest(dk_sample_run)
    b = gpd.read_parquet(dk_sample_run / "buildings.parquet")
    spans = [(2026, 2026), (2027, 2030), (2031, 2031), (2021, 2035)]
    for scenario in ("baseline", "longer-life"):
        got = outflow_factors(b, manifest, scenario, spans)
        for span, factor in zip(spans, got, strict=True):
            np.testing.assert_array_equal(factor, outflow_factor(b, manifest, scenario, *span))
    with pytest.raises(InputDataError, match="after the run's base year"):
        outflow_factors(b, manifest, "baseline", [(2026, 2026), (2020, 2021)])


def test_only_the_supplys_columns_are_read(dk_sample_run: Path) -> None:
    names = pq.read_schema(dk_sample_run / "buildings.parquet").names
    for unit in ("grid", "district", "building"):
        needed, optional = supply_columns(MATERIALS, unit)
        assert set(needed) <= set(names) and optional == ["hazard"]
        assert "geometry" not in needed
        assert len(needed) + len(optional) < len(names) / 2 or unit == "building"


def test_a_layer_without_a_materials_column_is_a_one_line_error(
    dk_sample_run: Path, tmp_path: Path
) -> None:
    cut = _copy_run(dk_sample_run, tmp_path / "cut")
    _rewrite_buildings(cut, drop="wood_t")
    with pytest.raises(InputDataError) as err:
        match_run(cut, DEMAND)
    msg = str(err.value)
    assert "buildings.parquet: no column 'wood_t'" in msg and "\n" not in msg

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest

from mfa.buildings.register import normalise_bbr
from mfa.config import RegisterSource
from mfa.errors import InputDataError
from mfa.io.register import read_register
from mfa.schema import check_buildings
from tests.conftest import DATA, SAMPLE

CSV = DATA / "bbr_kalundborg_60.csv"


def test_csv_register_is_read_with_crs_from_byg406() -> None:
    gdf = read_register(RegisterSource(path=CSV), "EPSG:25832")
    assert len(gdf) == 60
    assert gdf.crs.to_epsg() == 25832
    located = gdf[~gdf.geometry.is_empty & gdf.geometry.notna()]
    # Kalundborg lies around E 640-660 km, N 6170-6190 km in UTM 32N
    assert located.geometry.x.between(600_000, 700_000).all()
    assert located.geometry.y.between(6_100_000, 6_250_000).all()


def test_normalise_keeps_standing_buildings_and_explains_the_rest(rules) -> None:
    records = read_register(RegisterSource(path=CSV), "EPSG:25832")
    buildings, dropped = normalise_bbr(records, rules, ["6"])
    check_buildings(buildings, "test", "EPSG:25832")
    # every record is either a building or dropped with a reason, never both
    assert len(buildings) + len(dropped) == 60
    assert set(buildings.building_id).isdisjoint(set(dropped.record_id))
    assert dropped.reason.str.len().gt(10).all()
    standing = records[records.status == "6"]
    carports = standing[standing.byg021BygningensAnvendelse == "920"]
    assert set(carports.id_lokalId) <= set(dropped.record_id)
    assert (dropped.reason.str.startswith("status ")).sum() == (records.status != "6").sum()


def test_floor_area_rules(rules) -> None:
    records = read_register(RegisterSource(path=CSV), "EPSG:25832")
    buildings, _ = normalise_bbr(records, rules, ["6"])
    rec = records.set_index("id_lokalId").loc[buildings.building_id]
    gfa_reg = rec.byg038SamletBygningsareal.to_numpy(dtype=float)
    from_register = buildings.gfa_source.to_numpy() == "register"
    # byg038 where positive ...
    np.testing.assert_allclose(buildings.gfa_m2[from_register], gfa_reg[from_register])
    assert (gfa_reg[from_register] > 0).all()
    # ... else footprint (byg041) x floors, marked imputed
    imp = ~from_register
    assert imp.any()
    expect = (
        rec.byg041BebyggetAreal.to_numpy(dtype=float)[imp]
        * buildings.floors.to_numpy(dtype=float)[imp]
    )
    np.testing.assert_allclose(buildings.gfa_m2[imp], expect)
    # floor count 0 means unknown: imputed, never 0
    assert (buildings.floors > 0).all()
    zero = rec.byg054AntalEtager.to_numpy(dtype=float) == 0
    assert (buildings.floors_source[zero] == "imputed").all()


def test_year_zero_is_missing_not_year_zero(rules) -> None:
    records = read_register(RegisterSource(path=CSV), "EPSG:25832")
    records = records[~records.geometry.is_empty & records.geometry.notna()].copy()
    records.loc[records.index[:5], "byg026Opfoerelsesaar"] = 0
    records.loc[records.index[:5], "status"] = "6"
    records.loc[records.index[:5], "byg021BygningensAnvendelse"] = "120"
    records.loc[records.index[:5], "byg041BebyggetAreal"] = 120.0
    buildings, _ = normalise_bbr(records, rules, ["6"])
    ids = set(records.id_lokalId.iloc[:5])
    sub = buildings[buildings.building_id.isin(ids)]
    assert len(sub) == 5
    assert sub.construction_year.isna().all()
    assert (sub.construction_year_source == "missing").all()


def test_csv_and_geoparquet_give_the_same_buildings(rules) -> None:
    from_csv = read_register(RegisterSource(path=CSV), "EPSG:25832")
    full = read_register(RegisterSource(path=SAMPLE / "bbr_bygning_2020.parquet"), "EPSG:25832")
    full = full[full.id_lokalId.isin(from_csv.id_lokalId)]
    a, _ = normalise_bbr(from_csv, rules, ["6"])
    b, _ = normalise_bbr(full, rules, ["6"])
    # both in their file's order
    a = a.sort_values("building_id").reset_index(drop=True)
    b = b.sort_values("building_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(
        a.drop(columns="geometry"), b.drop(columns="geometry"), check_dtype=True
    )
    assert a.geometry.geom_equals_exact(b.geometry, tolerance=0.01).all()


def test_geopackage_register(tmp_path: Path, rules) -> None:
    gdf = gpd.read_parquet(SAMPLE / "bbr_bygning_2020.parquet").head(40)
    gdf = gdf[~gdf.geometry.is_empty]
    f = tmp_path / "bbr.gpkg"
    gdf.drop(columns=["byg404Koordinat"]).to_file(f, layer="bygning")
    out = read_register(RegisterSource(path=f, layer="bygning"), "EPSG:25832")
    assert len(out) == len(gdf)
    buildings, dropped = normalise_bbr(out, rules, ["6"])
    assert len(buildings) + len(dropped) == len(gdf)


def test_non_numeric_area_names_file_row_and_field(tmp_path: Path) -> None:
    df = pd.read_csv(CSV, dtype=str, keep_default_na=False)
    df.loc[7, "byg038SamletBygningsareal"] = "12O"
    f = tmp_path / "bad.csv"
    df.to_csv(f, index=False)
    with pytest.raises(InputDataError) as e:
        read_register(RegisterSource(path=f), "EPSG:25832")
    msg = str(e.value)
    assert str(f) in msg and "line 9" in msg and df.loc[7, "id_lokalId"] in msg
    assert "byg038SamletBygningsareal = '12O' is not a number" in msg
    assert "\n" not in msg


def test_missing_columns(tmp_path: Path) -> None:
    df = pd.read_csv(CSV, dtype=str).drop(columns=["byg038SamletBygningsareal", "status"])
    f = tmp_path / "cols.csv"
    df.to_csv(f, index=False)
    with pytest.raises(InputDataError, match=r"missing BBR columns \['status', 'byg038"):
        read_register(RegisterSource(path=f), "EPSG:25832")


def test_csv_without_crs_needs_one(tmp_path: Path) -> None:
    df = pd.read_csv(CSV, dtype=str).drop(columns=["byg406Koordinatsystem"])
    f = tmp_path / "nocrs.csv"
    df.to_csv(f, index=False)
    with pytest.raises(InputDataError, match=r"set sources\.register\.crs"):
        read_register(RegisterSource(path=f), "EPSG:25832")
    ok = read_register(RegisterSource(path=f, crs="EPSG:25832"), "EPSG:25832")
    assert len(ok) == 60


def test_geoparquet_without_crs(tmp_path: Path) -> None:
    gdf = (
        gpd.read_parquet(SAMPLE / "bbr_bygning_2020.parquet")
        .head(10)
        .set_crs(None, allow_override=True)
    )
    f = tmp_path / "nocrs.parquet"
    gdf.to_parquet(f)
    with pytest.raises(InputDataError, match=r"nocrs\.parquet: the geometry has no CRS"):
        read_register(RegisterSource(path=f), "EPSG:25832")


def test_unknown_format(tmp_path: Path) -> None:
    f = tmp_path / "bbr.xlsx"
    f.write_bytes(b"x")
    with pytest.raises(InputDataError, match="unknown register format"):
        read_register(RegisterSource(path=f), "EPSG:25832")


def test_duplicate_ids_keep_the_first(rules) -> None:
    records = read_register(RegisterSource(path=CSV), "EPSG:25832")
    records = records[(records.status == "6") & (records.byg021BygningensAnvendelse == "120")]
    doubled = pd.concat([records, records.iloc[:2]])
    buildings, dropped = normalise_bbr(gpd.GeoDataFrame(doubled, crs=records.crs), rules, ["6"])
    assert len(buildings) == len(records)
    assert (dropped.reason.str.startswith("duplicate")).sum() == 2

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from mfa.buildings.districts import assign_districts
from mfa.buildings.floor_area import gross_floor_area
from mfa.errors import ConfigError
from mfa.io.tables import load_intensity_table
from mfa.stocks import UNASSIGNED, aggregate_districts, intensity_matrix, material_mass
from tests.conftest import CONFIG

TABLE = CONFIG / "intensities" / "rasmi_2024.csv"
ARCHETYPES = [f"{f}-{s}" for f in ("RS", "RM", "NR") for s in ("C", "M", "S", "T")]


@pytest.fixture(scope="module")
def table(materials):
    return load_intensity_table(TABLE, materials)


def test_rasmi_known_values(table, materials) -> None:
    # SOURCES: a masonry single-family house in OECD_EU15 has concrete p50 = 621 kg/m²
    # and brick p50 = 693 kg/m² (Fishman et al. 2024)
    m = intensity_matrix(table, "OECD_EU15", "p50", materials, ARCHETYPES)
    assert m.loc["RS-M", "concrete"] == pytest.approx(621, abs=1)
    assert m.loc["RS-M", "brick"] == pytest.approx(693, abs=1)
    assert m.shape == (12, 8)
    assert (m.to_numpy() >= 0).all()


def test_rasmi_covers_every_region_and_archetype(table, materials) -> None:
    for region in table.region.unique():
        intensity_matrix(table, region, "p50", materials, ARCHETYPES)
    assert table.region.nunique() == 32


def _broken(tmp_path, edit) -> str:
    df = pd.read_csv(TABLE)
    edit(df)
    f = tmp_path / "t.csv"
    df.to_csv(f, index=False)
    return str(f)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.__setitem__("unit", "t/m2"), "line 2: unit must be kg/m2"),
        (lambda d: d.loc.__setitem__((3, "p50"), -1.0), "line 5: negative intensity"),
        (lambda d: d.loc.__setitem__((4, "p05"), 1e9), "line 6: percentiles are not in increasing"),
        (lambda d: d.loc.__setitem__((0, "material"), "unobtainium"), "line 2: material is not"),
        (lambda d: d.loc.__setitem__((7, "structure"), "X"), "line 9: structure must be one of"),
    ],
)
def test_intensity_table_errors_name_the_line(tmp_path, materials, edit, message) -> None:
    with pytest.raises(ConfigError, match=message):
        load_intensity_table(_broken(tmp_path, edit), materials)


def test_missing_archetype_row(table, materials) -> None:
    sub = table[
        ~((table.region == "OECD_EU15") & (table.function == "NR") & (table.structure == "T"))
    ]
    with pytest.raises(ConfigError, match="no p50 intensity for archetype NR-T"):
        intensity_matrix(sub, "OECD_EU15", "p50", materials, ARCHETYPES)
    with pytest.raises(ConfigError, match="no rows for region 'MARS'"):
        intensity_matrix(table, "MARS", "p50", materials, ARCHETYPES)


def test_material_mass_units() -> None:
    matrix = pd.DataFrame({"concrete": [1000.0, 0.0], "wood": [0.0, 200.0]}, index=["A", "B"])
    out = material_mass(pd.Series([100.0, 50.0]), pd.Series(["A", "B"]), matrix)
    # 100 m² x 1000 kg/m² = 100 t; 50 m² x 200 kg/m² = 10 t
    assert out["concrete_t"].tolist() == [100.0, 0.0]
    assert out["wood_t"].tolist() == [0.0, 10.0]
    assert out["mass_t"].tolist() == [100.0, 10.0]
    with pytest.raises(KeyError):
        material_mass(pd.Series([1.0]), pd.Series(["Z"]), matrix)


@given(
    area=arrays(float, 20, elements=st.floats(0, 1e5)),
    floors=arrays(float, 20, elements=st.floats(0, 100)),
    extra=st.floats(0, 10),
)
def test_gfa_non_negative_and_monotone_in_floors(area, floors, extra) -> None:
    a = gross_floor_area(pd.Series(area), pd.Series(floors))
    b = gross_floor_area(pd.Series(area), pd.Series(floors + extra))
    assert (a >= 0).all()
    assert (b >= a).all()


def _strips(k: int) -> gpd.GeoDataFrame:
    """k vertical strips of width 100 m sharing borders, ids in reverse order."""
    polys = [shapely.box(i * 100, 0, (i + 1) * 100, 100) for i in range(k)]
    return gpd.GeoDataFrame(
        {"district_id": [f"d{k - i:03d}" for i in range(k)]}, geometry=polys, crs="EPSG:25832"
    )


@settings(max_examples=60, deadline=None)
@given(
    k=st.integers(1, 6),
    xs=st.lists(st.integers(-50, 650), min_size=1, max_size=60),
    seed=st.integers(0, 2**32 - 1),
)
def test_district_sums_equal_building_sums(k, xs, seed, materials) -> None:
    """Mass is conserved: on borders, outside every district, for every material."""
    rng = np.random.default_rng(seed)
    n = len(xs)
    # integer x: many points fall exactly on a shared border (x = 100, 200, ...)
    pts = gpd.GeoSeries(
        shapely.points(np.array(xs, float), rng.uniform(0, 100, n)), crs="EPSG:25832"
    )
    districts = _strips(k)
    tonnes = pd.DataFrame(
        rng.gamma(1.0, 50.0, (n, len(materials))), columns=[f"{m}_t" for m in materials]
    )
    tonnes["mass_t"] = tonnes.sum(axis=1)
    buildings = pd.DataFrame(
        {"district_id": assign_districts(pts, districts), "gfa_m2": rng.uniform(10, 500, n)}
    )
    buildings = pd.concat([buildings, tonnes], axis=1)
    cols = ["mass_t", *[f"{m}_t" for m in materials]]
    out = aggregate_districts(buildings, districts, cols)
    assert out["building_count"].sum() == n
    for c in ["gfa_m2", *cols]:
        assert out[c].sum() == pytest.approx(buildings[c].sum(), rel=1e-12)
    inside = (np.array(xs) >= 0) & (np.array(xs) <= 100 * k)
    unassigned = out.loc[out.district_id == UNASSIGNED, "building_count"]
    assert int(unassigned.sum()) == int((~inside).sum())


def test_border_point_goes_to_exactly_one_district() -> None:
    districts = _strips(2)  # d002 = [0,100], d001 = [100,200]
    pts = gpd.GeoSeries(
        [shapely.Point(100, 50), shapely.Point(50, 50), shapely.Point(500, 0)], crs="EPSG:25832"
    )
    ids = assign_districts(pts, districts)
    assert ids.iloc[0] == "d002"  # first district in file order
    assert ids.iloc[1] == "d002"
    assert pd.isna(ids.iloc[2])


def test_footprint_counts_by_representative_point() -> None:
    districts = _strips(2)
    # a footprint straddling the border with most of its area in the second strip
    fp = gpd.GeoSeries([shapely.box(90, 10, 190, 20)], crs="EPSG:25832")
    ids = assign_districts(fp, districts)
    point = shapely.point_on_surface(fp.iloc[0])
    expected = "d002" if point.x <= 100 else "d001"
    assert ids.iloc[0] == expected


def test_densities_per_hectare() -> None:
    districts = _strips(1)  # 100 m x 100 m = 1 ha
    b = pd.DataFrame({"district_id": ["d001"], "gfa_m2": [10.0], "mass_t": [42.0]})
    out = aggregate_districts(b, districts, ["mass_t"])
    assert out["area_ha"].iloc[0] == pytest.approx(1.0)
    assert out["mass_t_per_ha"].iloc[0] == pytest.approx(42.0)


def test_override_table_replaces_and_extends(tmp_path, materials, bbr_pipeline) -> None:
    """A municipality's own audit values replace RASMI's for one archetype and material."""
    import json

    from mfa.run import run_pipeline

    audit = tmp_path / "audits.csv"
    row = pd.read_csv(TABLE).query(
        "region == 'OECD_EU15' and function == 'RS' and structure == 'M' and material == 'brick'"
    )
    row = row.assign(
        p00=0.0,
        p05=100.0,
        p25=200.0,
        p50=300.0,
        p75=400.0,
        p95=500.0,
        p100=600.0,
        source="kalundborg2026audit",
    )
    extra = row.assign(region="DK_KALUNDBORG")
    pd.concat([row, extra]).to_csv(audit, index=False)
    merged = load_intensity_table(TABLE, materials, [audit])
    assert len(merged) == 3072 + 1
    m = intensity_matrix(merged, "OECD_EU15", "p50", materials, ARCHETYPES)
    assert m.loc["RS-M", "brick"] == 300.0 and m.loc["RS-M", "concrete"] == pytest.approx(
        621, abs=1
    )

    pipeline = bbr_pipeline()
    pipeline.write_text(
        pipeline.read_text().replace(
            'region = "OECD_EU15"', f'region = "OECD_EU15"\noverrides = ["{audit}"]'
        )
    )
    run = run_pipeline(pipeline, tmp_path / "out")
    b = pd.read_parquet(run / "buildings.parquet")
    rs_m = b[b.archetype_id == "RS-M"]
    np.testing.assert_allclose(rs_m.brick_t, rs_m.gfa_m2 * 300.0 / 1000)
    manifest = json.loads((run / "run.json").read_text())
    assert manifest["intensities"]["overrides"][0]["path"] == str(audit)
    bad = tmp_path / "bad.csv"
    row.assign(p50=-1.0).to_csv(bad, index=False)
    with pytest.raises(ConfigError, match=r"bad\.csv line 2: negative intensity"):
        load_intensity_table(TABLE, materials, [bad])

"""Geometry hygiene, plausibility limits and the order of preference."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely

from mfa.buildings.provenance import with_rules
from mfa.buildings.quality import (
    Limits,
    area_of_use_bounds,
    check_ranges,
    clean_geometries,
    impute_from_cohort_peers,
    refine_with_heights,
)
from mfa.schema import BUILDING_COLUMNS

BOUNDS = area_of_use_bounds("EPSG:25832")
X0, Y0 = 700_000, 6_170_000  # Copenhagen


def _buildings(geoms, **cols) -> gpd.GeoDataFrame:
    n = len(geoms)
    base = {
        "building_id": [f"b{i}" for i in range(n)],
        "district_id": [None] * n,
        "function": ["RS"] * n,
        "function_source": ["register"] * n,
        "structure": ["M"] * n,
        "structure_source": ["register"] * n,
        "archetype_id": ["RS-M"] * n,
        "use_code": ["120"] * n,
        "osm_building": [None] * n,
        "wall_material": ["1"] * n,
        "construction_year": [1970] * n,
        "construction_year_source": ["register"] * n,
        "height_m": [None] * n,
        "height_source": ["missing"] * n,
        "floors": [1.0] * n,
        "floors_source": ["imputed"] * n,
        "footprint_area_m2": [100.0] * n,
        "footprint_area_source": ["osm"] * n,
        "gfa_m2": [100.0] * n,
        "gfa_source": ["imputed"] * n,
        "footprint_id": [None] * n,
        "match_method": ["not_conflated"] * n,
        "hazard": [None] * n,
        "height_class": [None] * n,
        "roof_height_m": [None] * n,
        "roof_levels": [None] * n,
    }
    base.update(cols)
    frame = with_rules(pd.DataFrame(base)).astype(BUILDING_COLUMNS)
    return gpd.GeoDataFrame(frame, geometry=geoms, crs=25832)


def box(dx=0.0, size=10.0):
    return shapely.box(X0 + dx, Y0, X0 + dx + size, Y0 + size)


def test_hygiene_repairs_rejects_and_counts_everything() -> None:
    bow = shapely.Polygon([(X0, Y0), (X0 + 10, Y0 + 10), (X0 + 10, Y0), (X0, Y0 + 10)])
    geoms = [
        bow,  # invalid, repaired
        box(100),  # fine
        box(100),  # duplicate of the previous
        box(200, size=0.5),  # 0.25 m² sliver
        shapely.Point(12.5, 55.7),  # lon/lat in a metre CRS
        shapely.LineString([(X0, Y0), (X0 + 5, Y0)]),  # not a footprint
        None,  # null
        shapely.Point(X0, Y0),  # a register point is fine
    ]
    b = _buildings(geoms, footprint_area_m2=[100.0] * 8, gfa_m2=[100.0] * 8)
    out, dropped, repairs = clean_geometries(b, BOUNDS, min_footprint_m2=1.0)
    assert len(out) + len(dropped) == len(b)
    reasons = dict(zip(dropped.record_id, dropped.reason, strict=True))
    assert reasons["b2"].startswith("duplicate geometry")
    assert reasons["b3"].startswith("degenerate footprint: area 0.25")
    assert reasons["b4"].startswith("coordinates far outside")
    assert "neither a footprint polygon nor a point" in reasons["b5"]
    assert reasons["b6"] == "empty or null geometry"
    assert set(out.building_id) == {"b0", "b1", "b7"}
    fixed = out.set_index("building_id").loc["b0"]
    assert fixed.geometry.is_valid and fixed.footprint_area_m2 == pytest.approx(50.0)
    assert fixed.gfa_m2 == pytest.approx(50.0)  # derived floor area follows the repair
    (rep,) = repairs.itertuples()
    assert rep.record_id == "b0" and rep.attribute == "geometry" and "100.00 → 50.00" in rep.detail


def test_bornholm_is_inside_the_widened_area_of_use() -> None:
    from pyproj import Transformer

    x, y = Transformer.from_crs(4326, 25832, always_xy=True).transform(14.9, 55.1)
    b = _buildings([shapely.Point(x, y)])
    out, dropped, _ = clean_geometries(b, BOUNDS, 1.0)
    assert len(out) == 1 and dropped.empty


def test_range_checks_repair_from_the_next_source() -> None:
    b = _buildings(
        [box(i * 20) for i in range(5)],
        construction_year=[0, 2999, 1850, 1970, 1970],
        floors=[1.0, 2.0, 150.0, 2.0, 2.0],
        floors_source=["register"] * 5,
        gfa_m2=[100.0, 200.0, 100.0, 900.0, 190.0],
        gfa_source=["register"] * 5,
        height_m=[None, None, None, -3.0, 12.0],
        height_source=["missing", "missing", "missing", "osm", "osm"],
    )
    out, repairs = check_ranges(b, Limits(), max_year=2026, floors_by_function={"RS": 1.0})
    o = out.set_index("building_id")
    assert pd.isna(o.loc["b0", "construction_year"]) and pd.isna(o.loc["b1", "construction_year"])
    assert o.loc["b2", "construction_year"] == 1850
    assert o.loc["b2", "floors"] == 1 and o.loc["b2", "floors_source"] == "imputed"
    assert (
        o.loc["b3", "gfa_m2"] == 200.0 and o.loc["b3", "gfa_source"] == "imputed"
    )  # 900 > 3 × 200
    assert o.loc["b4", "gfa_m2"] == 190.0 and o.loc["b4", "gfa_source"] == "register"
    assert pd.isna(o.loc["b3", "height_m"]) and o.loc["b4", "height_m"] == 12.0
    counts = repairs.groupby("attribute").size().to_dict()
    assert counts == {"construction_year": 2, "floors": 1, "gfa_m2": 1, "height_m": 1}


def test_order_of_preference_for_heights_and_floors() -> None:
    b = _buildings(
        [box(i * 20) for i in range(4)],
        height_m=[15.0, None, None, None],
        height_source=["osm", "missing", "missing", "missing"],
        floors=[1.0, 4.0, 1.0, 1.0],
        floors_source=["imputed", "register", "imputed", "imputed"],
        gfa_source=["imputed", "register", "imputed", "imputed"],
    )
    raster = pd.Series([9.0, 9.0, 9.0, 0.4])
    out, repairs = refine_with_heights(b, raster, 3.0, Limits())
    o = out.set_index("building_id")
    # OSM height beats the raster; floors follow the height they come from
    assert o.loc["b0", "height_m"] == 15.0 and o.loc["b0", "floors"] == 5
    assert o.loc["b0", "floors_source"] == "osm" and o.loc["b0", "gfa_m2"] == 500.0
    # a register floor count beats a raster-derived one
    assert o.loc["b1", "floors"] == 4 and o.loc["b1", "height_source"] == "raster"
    assert o.loc["b2", "floors"] == 3 and o.loc["b2", "gfa_source"] == "raster"
    # 0.4 m is not a building height: not used, recorded, the default stays
    assert pd.isna(o.loc["b3", "height_m"]) and o.loc["b3", "floors_source"] == "imputed"
    assert list(repairs.record_id) == ["b3"]
    assert np.isfinite(out.gfa_m2).all()


def test_imputation_by_use_and_cohort() -> None:
    """An unknown structure takes the most frequent observed one of the same function and
    decade; floors the median; archetype and derived floor area follow."""
    n = 9
    b = _buildings(
        [box(i * 20) for i in range(n)],
        construction_year=[1965] * 6 + [1965, 1820, 1965],
        structure=["C", "C", "C", "C", "C", "M", "M", "M", "M"],
        structure_source=["register"] * 6 + ["imputed"] * 3,
        floors=[4.0, 4.0, 5.0, 4.0, 4.0, 3.0, 1.0, 1.0, 1.0],
        floors_source=["register"] * 6 + ["imputed"] * 3,
        gfa_m2=[400.0] * 6 + [100.0] * 3,
        gfa_source=["register"] * 6 + ["imputed"] * 3,
    )
    b.loc[8, "function"] = "NR"  # no NR peers: keeps the default
    out, counts = impute_from_cohort_peers(b, min_peers=5)
    assert counts == {"structure": 1, "floors": 1}
    assert out.loc[6, "structure"] == "C" and out.loc[6, "archetype_id"] == "RS-C"
    assert out.loc[6, "structure_source"] == "imputed"
    assert out.loc[6, "floors"] == 4 and out.loc[6, "gfa_m2"] == 400.0
    assert out.loc[7, "structure"] == "M"  # 1820s: no peers
    assert out.loc[8, "structure"] == "M"

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st

from mfa.config import DistrictSource
from mfa.errors import InputDataError, InputNotFoundError
from mfa.io.districts import MAX_OVERLAP_SHARE, district_overlaps, read_districts
from tests.conftest import SAMPLE

GPKG = SAMPLE / "dagi_sogne_2014_sample.gpkg"


def test_reads_parishes() -> None:
    d = read_districts(
        DistrictSource(path=GPKG, layer="sogne", id_column="SOGNEKODE", name_column="SOGNENAVN"),
        "EPSG:25832",
    )
    assert len(d) == 52 and d.district_id.is_unique
    assert list(d.columns) == ["district_id", "district_name", "geometry"]
    assert d.district_id.is_monotonic_increasing
    assert d.crs.to_epsg() == 25832


def _write(tmp_path: Path, gdf: gpd.GeoDataFrame, name: str = "d.geojson") -> Path:
    f = tmp_path / name
    gdf.to_file(f)
    return f


def test_reprojects_any_ogr_file(tmp_path: Path) -> None:
    d = gpd.read_file(GPKG, layer="sogne").to_crs(4326)
    f = _write(tmp_path, d)
    out = read_districts(DistrictSource(path=f, id_column="SOGNEKODE"), "EPSG:25832")
    assert out.crs.to_epsg() == 25832
    assert out.total_bounds[0] > 400_000  # metres, not degrees


def test_duplicate_ids(tmp_path: Path) -> None:
    d = gpd.GeoDataFrame({"id": ["a", "a"]}, geometry=[shapely.box(0, 0, 1, 1)] * 2, crs=25832)
    with pytest.raises(InputDataError, match="'a' occurs more than once"):
        read_districts(DistrictSource(path=_write(tmp_path, d), id_column="id"), "EPSG:25832")


def test_missing_column_lists_the_columns(tmp_path: Path) -> None:
    d = gpd.GeoDataFrame({"code": ["a"]}, geometry=[shapely.box(0, 0, 1, 1)], crs=25832)
    with pytest.raises(InputDataError, match=r"no column 'id' \(columns: code\)"):
        read_districts(DistrictSource(path=_write(tmp_path, d), id_column="id"), "EPSG:25832")


def test_no_crs(tmp_path: Path) -> None:
    d = gpd.GeoDataFrame({"id": ["a"]}, geometry=[shapely.box(0, 0, 1, 1)])
    with pytest.warns(UserWarning, match="'crs' was not provided"):
        f = _write(tmp_path, d, "d.gpkg")
    with pytest.raises(InputDataError, match="has no CRS"):
        read_districts(DistrictSource(path=f, id_column="id"), "EPSG:25832")


def test_points_are_not_districts(tmp_path: Path) -> None:
    d = gpd.GeoDataFrame({"id": ["a"]}, geometry=[shapely.Point(0, 0)], crs=25832)
    with pytest.raises(InputDataError, match="is a Point, not a polygon"):
        read_districts(DistrictSource(path=_write(tmp_path, d), id_column="id"), "EPSG:25832")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputNotFoundError):
        read_districts(DistrictSource(path=tmp_path / "x.gpkg", id_column="id"), "EPSG:25832")


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 6), st.integers(0, 6), st.integers(1, 3), st.integers(1, 3)),
        min_size=1,
        max_size=12,
    ),
    st.floats(0.0, 0.9),
)
def test_overlaps_found_as_by_every_pair(cells, shift: float) -> None:
    """:func:`district_overlaps` checks only the polygons that do not meet their
    neighbours edge to edge; the answer equals GEOS's intersection of every pair."""
    boxes = np.array(
        [
            shapely.box(x + shift * (k % 2), y, x + w + shift * (k % 2), y + h)
            for k, (x, y, w, h) in enumerate(cells)
        ]
    )
    i, j, area = district_overlaps(boxes)
    a, b = np.triu_indices(len(boxes), 1)
    every = shapely.area(shapely.intersection(boxes[a], boxes[b]))
    smaller = np.minimum(shapely.area(boxes[a]), shapely.area(boxes[b]))
    big = every > MAX_OVERLAP_SHARE * smaller
    found = sorted(zip(i.tolist(), j.tolist(), strict=True))
    assert found == sorted(zip(a[big].tolist(), b[big].tolist(), strict=True))
    assert np.allclose(np.sort(area), np.sort(every[big]))

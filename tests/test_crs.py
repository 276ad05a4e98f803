"""CRS you can trust: one comparison for every representation (pyproj, GeoParquet's
PROJJSON, GeoTIFF through rasterio's GDAL, GeoPackage), refusal of CRSs that cannot
measure areas, and a check of the data against the CRS, for many national CRSs."""

from __future__ import annotations

import functools
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyproj
import pytest
import shapely
from pyproj.database import query_crs_info
from pyproj.enums import PJType

from mfa.config import load_pipeline
from mfa.crs import (
    MAX_AREA_ERROR,
    MAX_AREA_ERROR_AREA_OF_USE,
    check_area_crs,
    check_data_extent,
    same_crs,
)
from mfa.errors import ConfigError, InputDataError, ValidationError
from mfa.io.geoparquet import check_geoparquet, write_layer
from mfa.io.rasters import check_raster_total, write_cog
from tests.conftest import MODEL, SAMPLE, write_pipeline

#: National grids and UTM zones in use in Europe and beyond (EPSG:3067 failed to publish).
NATIONAL = [3067, 25832, 25833, 3006, 2056, 27700, 28992, 5514, 2180, 3035, 2154, 3763]
NATIONAL += [3416, 2100, 3059, 3346, 2193, 3044, 32632, 5070, 3577, 31287, 2039, 3301]


@functools.cache
def _metre_crss(step: int) -> list[int]:
    """Every ``step``-th non-deprecated EPSG projected CRS in metres from pyproj's
    database (a spread over the world's national and regional CRSs)."""
    out = []
    for info in query_crs_info(auth_name="EPSG", pj_types=[PJType.PROJECTED_CRS]):
        if info.deprecated or info.area_of_use is None:
            continue
        c = pyproj.CRS.from_epsg(int(info.code))
        if c.axis_info and c.axis_info[0].unit_name == "metre":
            out.append(int(info.code))
    return sorted(out)[::step]


def _inside(code: int) -> tuple[float, float]:
    """A point (x, y in the CRS) at the centre of its area of use."""
    c = pyproj.CRS.from_epsg(code)
    w, s, e, n = c.area_of_use.bounds
    lon = (w + e) / 2 if e >= w else ((w + e + 360) / 2 + 180) % 360 - 180
    t = pyproj.Transformer.from_crs("EPSG:4326", c, always_xy=True)
    return t.transform(lon, (s + n) / 2)


@pytest.mark.parametrize("code", sorted(set(NATIONAL + _metre_crss(40))))
def test_every_representation_of_a_crs_is_the_same_crs(code: int, tmp_path: Path) -> None:
    crs = f"EPSG:{code}"
    try:
        x, y = _inside(code)
    except pyproj.exceptions.ProjError:
        pytest.skip(f"{crs}: PROJ cannot project it (mfa refuses it: see below)")
    if not (np.isfinite(x) and np.isfinite(y)):
        pytest.skip(f"{crs}: the centre of its area of use does not project")
    frame = gpd.GeoDataFrame({"a": [1]}, geometry=[shapely.box(x, y, x + 10, y + 10)], crs=crs)
    # GeoParquet (PROJJSON), as a run writes and checks its layers
    path = write_layer(frame, tmp_path / "layer.parquet")
    check_geoparquet(path, crs)
    assert same_crs(gpd.read_parquet(path).crs, crs)
    # GeoPackage (WKT through pyogrio's GDAL)
    frame.to_file(tmp_path / "layer.gpkg", engine="pyogrio")
    assert same_crs(gpd.read_file(tmp_path / "layer.gpkg").crs, crs)
    # GeoTIFF through rasterio's GDAL, as the stock rasters are written and checked
    tif = write_cog(
        tmp_path / "r.tif",
        np.full((2, 2), 3.0, dtype="float32"),
        west=x,
        north=y,
        cell_size=100.0,
        crs=pyproj.CRS(crs),
        description="t",
        unit="t/ha",
    )
    check_raster_total(tif, crs, 4 * 3.0, rtol=1e-6)


def test_different_crss_stay_different() -> None:
    for a, b in [(25832, 25833), (3067, 3006), (2056, 21781), (28992, 3035), (27700, 32630)]:
        assert not same_crs(f"EPSG:{a}", f"EPSG:{b}"), (a, b)
        assert same_crs(f"EPSG:{a}", pyproj.CRS.from_epsg(a).to_wkt())


def test_a_raster_in_another_crs_is_still_refused(tmp_path: Path) -> None:
    tif = write_cog(
        tmp_path / "r.tif",
        np.ones((2, 2), dtype="float32"),
        west=500_000,
        north=6_200_000,
        cell_size=100.0,
        crs=pyproj.CRS("EPSG:25833"),
        description="t",
        unit="t/ha",
    )
    with pytest.raises(ValidationError, match="expected EPSG:25832"):
        check_raster_total(tif, "EPSG:25832", 4.0, rtol=1e-6)


def _geodesic_area_error(crs: str, lon: float, lat: float) -> float:
    """Independent oracle: planar area in ``crs`` of a 1 km × 1 km geodesic cell
    against its area on the WGS 84 ellipsoid (pyproj.Geod), relative."""
    geod = pyproj.Geod(ellps="WGS84")
    d_lat = 1000 / 111_000
    d_lon = d_lat / max(np.cos(np.radians(lat)), 1e-6)
    lons = [lon, lon + d_lon, lon + d_lon, lon]
    lats = [lat, lat, lat + d_lat, lat + d_lat]
    true, _ = geod.polygon_area_perimeter(lons, lats)
    xs, ys = pyproj.Transformer.from_crs("EPSG:4326", crs, always_xy=True).transform(lons, lats)
    return shapely.Polygon(zip(xs, ys, strict=True)).area / abs(true) - 1


def test_area_crs_check_refuses_geographic_and_web_mercator_with_the_fix() -> None:
    with pytest.raises(ValueError, match="not a projected CRS") as err:
        check_area_crs("EPSG:4326")
    assert "EPSG:" in str(err.value).split("such as")[1]
    with pytest.raises(ValueError, match="distorts areas") as err:
        check_area_crs("EPSG:3857")
    assert "EPSG:3067 for Finland" in str(err.value) and "\n" not in str(err.value)
    # the oracle agrees: Web Mercator makes a square kilometre in Helsinki ×4.0
    assert _geodesic_area_error("EPSG:3857", 24.94, 60.17) == pytest.approx(3.03, abs=0.05)
    for code in NATIONAL:
        check_area_crs(f"EPSG:{code}")


def test_the_pipeline_file_refuses_web_mercator(tmp_path: Path) -> None:
    body = f"""name = "wm"
crs = "EPSG:3857"
[sources.register]
path = "{SAMPLE}/bbr_bygning_2020.parquet"
{MODEL}"""
    with pytest.raises(ConfigError, match=r"EPSG:3857.*distorts areas.*EPSG:25832 for Denmark"):
        load_pipeline(write_pipeline(tmp_path, body))


@pytest.mark.parametrize(
    ("crs", "lon", "lat", "ok"),
    [
        ("EPSG:25832", 10.2, 56.15, True),  # Aarhus in its UTM zone
        ("EPSG:25832", 14.9, 55.1, True),  # Bornholm: outside the area of use, areas fine
        ("EPSG:3067", 24.94, 60.17, True),  # Helsinki in TM35FIN
        ("EPSG:25832", 24.94, 60.17, False),  # Helsinki in the Danish zone: +1.9 %
        ("EPSG:3006", 18.07, 59.33, True),  # Stockholm in SWEREF99 TM
        ("EPSG:28992", 4.36, 52.01, True),  # Delft in RD New
        ("EPSG:27700", -1.26, 51.75, True),  # Oxford in the British grid
        ("EPSG:2056", 24.94, 60.17, False),  # Helsinki in the Swiss grid
    ],
)
def test_data_extent_check_agrees_with_geodesic_areas(crs, lon, lat, ok) -> None:
    x, y = pyproj.Transformer.from_crs("EPSG:4326", crs, always_xy=True).transform(lon, lat)
    truth = abs(_geodesic_area_error(crs, lon, lat))
    assert (truth <= MAX_AREA_ERROR) == ok  # the oracle says which case it is
    bounds = (x - 500, y - 500, x + 500, y + 500)
    if ok:
        found = check_data_extent(crs, bounds)
        assert found["max_area_error"] == pytest.approx(truth, abs=2e-4)
        assert found["outside_area_of_use"] == (lon > 12 and crs == "EPSG:25832")
    else:
        with pytest.raises(InputDataError, match=r"off.*set crs = \"EPSG:") as err:
            check_data_extent(crs, bounds)
        fix = str(err.value).split('crs = "')[1].split('"')[0]
        assert abs(_geodesic_area_error(fix, lon, lat)) <= MAX_AREA_ERROR  # a fitting CRS
        assert "\n" not in str(err.value)


def test_area_of_use_bound_separates_national_grids_from_world_projections() -> None:
    """Over a spread of pyproj's database: what the area-of-use rule refuses distorts a
    square kilometre somewhere in its area of use by more than the bound (oracle)."""
    refused = []
    for code in _metre_crss(20):
        try:
            check_area_crs(f"EPSG:{code}")
        except ValueError as exc:
            if "PROJ cannot project" not in str(exc):  # (those are refused as well)
                refused.append(code)
    assert 3857 in refused or 3857 not in _metre_crss(20)
    for code in refused:
        c = pyproj.CRS.from_epsg(code)
        w, s, e, n = c.area_of_use.bounds
        grid = [
            (lo, la)
            for lo in np.linspace(w, e if e > w else e + 360, 7)
            for la in np.linspace(max(s, -80), min(n, 80), 7)
        ]
        worst = 0.0
        for lo, la in grid:
            lo = (lo + 180) % 360 - 180
            with np.errstate(all="ignore"):
                try:
                    err = abs(_geodesic_area_error(f"EPSG:{code}", lo, la))
                except Exception:  # noqa: BLE001 - PROJ cannot project there
                    continue
            if np.isfinite(err):
                worst = max(worst, err)
        assert worst > MAX_AREA_ERROR_AREA_OF_USE * 0.5, code
    assert len(refused) < 0.05 * len(_metre_crss(20))


def test_a_run_in_a_crs_that_distorts_areas_at_the_data_stops_with_the_fix(
    bbr_pipeline, tmp_path: Path
) -> None:
    """The Danish sample in Finland's UTM zone (EPSG:25835): areas 2 % off at the data,
    so the run stops naming Denmark's zone, and publishes nothing."""
    path = bbr_pipeline()
    path.write_text(path.read_text().replace('crs = "EPSG:25832"', 'crs = "EPSG:25835"'))
    load_pipeline(path)  # a fine CRS in itself: only the data tell
    with pytest.raises(InputDataError, match=r'off.*set crs = "EPSG:25832"') as err:
        from mfa.run import run_pipeline

        run_pipeline(path, tmp_path / "out")
    assert "\n" not in str(err.value)
    assert not (tmp_path / "out" / "t-bbr" / "latest").exists()


@pytest.mark.parametrize(
    ("lon", "lat", "code"),
    [(24.94, 60.17, 25835), (10.2, 56.15, 25832), (-74.0, 40.7, 32618), (151.2, -33.9, 32756)],
)
def test_the_suggested_crs_is_the_utm_zone_and_fits(lon, lat, code) -> None:
    from mfa.crs import suggest_crs

    got = suggest_crs(lon, lat, lon, lat)
    assert got.startswith(f"EPSG:{code} (") and "UTM zone" in got
    w, s, e, n = pyproj.CRS.from_epsg(code).area_of_use.bounds
    assert w <= lon <= e and s <= lat <= n
    assert abs(_geodesic_area_error(f"EPSG:{code}", lon, lat)) <= MAX_AREA_ERROR

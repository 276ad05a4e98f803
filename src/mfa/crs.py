"""Coordinate reference systems: parsed once per process, compared one way, and checked
for what mfa does with them (areas in m²).

- :func:`same_crs` is the one CRS comparison of mfa (layers, rasters, GeoParquet
  metadata, districts, conflation).
- :func:`check_area_crs` rejects, before any data is read, a CRS that cannot measure
  areas: geographic (degrees), or a projection whose areas are off by more than
  :data:`MAX_AREA_ERROR_AREA_OF_USE` somewhere in its own area of use (Web Mercator:
  ×4 in Finland).
- :func:`check_data_extent` checks the data once read: the projection's area error at the
  data must stay within :data:`MAX_AREA_ERROR` (a Danish UTM zone on Finnish data: +1.9 %),
  and data outside the CRS's area of use are reported.

Areal scale is pyproj's ``Proj.get_factors(...).areal_scale`` (PROJ's analytic scale
factors): projected area / true area on the ellipsoid at a point.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np
from pyproj import CRS
from pyproj.exceptions import ProjError

__all__ = [
    "MAX_AREA_ERROR",
    "MAX_AREA_ERROR_AREA_OF_USE",
    "area_error",
    "as_crs",
    "check_area_crs",
    "check_data_extent",
    "same_crs",
    "suggest_crs",
]

#: Largest relative error of an area (|areal scale − 1|) accepted where the data lie:
#: 1 % (UTM zones stay within 0.2 %, national grids such as SWEREF99 TM within 0.8 %).
MAX_AREA_ERROR = 0.01

#: Largest area error a CRS may have anywhere in its own area of use to be accepted
#: before the data are read: 5 % lets every national grid of the EPSG database pass and
#: refuses world and continental conformal projections (Web Mercator: 134 × at 85°).
MAX_AREA_ERROR_AREA_OF_USE = 0.05


@lru_cache(maxsize=64)
def as_crs(crs: str) -> CRS:
    """The pyproj CRS of ``crs`` (e.g. ``"EPSG:25832"``), parsed once.

    Parsing takes about 10 ms, and geopandas parses a CRS given as text again for every
    frame and series it builds: a run built hundreds (0.5 s of a 200,000-building run).
    """
    return CRS.from_user_input(crs)


def _parse(crs: Any) -> CRS:
    if isinstance(crs, CRS):
        return crs
    if isinstance(crs, str):
        return as_crs(crs)
    if hasattr(crs, "to_wkt"):  # rasterio's CRS and others carrying WKT
        return CRS.from_wkt(crs.to_wkt())
    return CRS.from_user_input(crs)


def _declared_id(crs: CRS) -> tuple[str, str] | None:
    """The authority code the CRS declares, else the one PROJ identifies it as with at
    least 70 % confidence (pyproj's default; an ESRI .prj declares none)."""
    ident = crs.to_json_dict().get("id")
    if ident:
        return str(ident.get("authority")), str(ident.get("code"))
    found = crs.to_authority(min_confidence=70)
    return (str(found[0]), str(found[1])) if found else None


def _projection_numbers(crs: CRS) -> tuple[Any, ...] | None:
    """The ellipsoid and the map projection's method and parameter values."""
    op, ell = crs.coordinate_operation, crs.ellipsoid
    if op is None or ell is None:
        return None
    params = tuple(round(float(p.value), 9) for p in op.params)
    return (
        round(ell.semi_major_metre, 4),
        round(ell.inverse_flattening, 6),
        op.method_code,
        params,
    )


def same_crs(a: Any, b: Any) -> bool:
    """Whether two CRSs (text, pyproj, rasterio or geopandas CRS objects) are the same.

    Equal as pyproj compares them (axis order ignored: mfa's arrays are always x, y), or
    declaring the same authority code with the same ellipsoid and map projection. The
    second rule is needed because GDAL and PROJ releases describe one EPSG code with
    different datum names (rasterio's GDAL writes EPSG:3067 with the datum "EUREF-FIN",
    pyproj's PROJ reads it as "ETRS89"), which made a run in EPSG:3067 fail with
    "CRS is EPSG:3067, expected EPSG:3067". A CRS that declares no code (an ESRI .prj
    of SWEREF99 TM, EPSG:3006, which ``equals`` did not match either) takes the code PROJ
    identifies; the ellipsoid and projection numbers must still agree.
    """
    if a is None or b is None:
        return a is None and b is None
    ca, cb = _parse(a), _parse(b)
    if ca.equals(cb, ignore_axis_order=True):
        return True
    ida, idb = _declared_id(ca), _declared_id(cb)
    if ida is None or ida != idb:
        return False
    na, nb = _projection_numbers(ca), _projection_numbers(cb)
    return na is not None and na == nb


def area_error(crs: Any, lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """|areal scale − 1| of ``crs``'s projection at the points (degrees, WGS 84): the
    relative error of an area measured in that CRS (NaN where PROJ cannot tell)."""
    from pyproj import Proj

    c = _parse(crs)
    factors = Proj(c).get_factors(
        np.asarray(lon, dtype=float), np.asarray(lat, dtype=float), errcheck=False
    )
    return np.abs(np.asarray(factors.areal_scale, dtype=float) - 1.0)


def _grid(west: float, south: float, east: float, north: float, n: int = 7):
    if east < west:  # crosses the antimeridian
        east += 360.0
    lon, lat = np.meshgrid(np.linspace(west, east, n), np.linspace(south, north, n))
    return ((lon.ravel() + 180.0) % 360.0) - 180.0, lat.ravel()


def suggest_crs(west: float, south: float, east: float, north: float) -> str:
    """A projected CRS fit for areas in a lon/lat box: the UTM zone of its centre, on
    ETRS89 in Europe (EPSG:25828…25838), else on WGS 84 (EPSG:326xx north, 327xx south),
    as ``"EPSG:25835 (ETRS89 / UTM zone 35N)"``."""
    lon = (west + east) / 2 if east >= west else ((west + east + 360) / 2 + 180) % 360 - 180
    lat = (south + north) / 2
    zone = min(int((lon + 180) // 6) + 1, 60)
    europe = as_crs("EPSG:4258").area_of_use  # ETRS89
    assert europe is not None
    if (
        28 <= zone <= 38
        and europe.south <= lat <= europe.north
        and europe.west <= lon <= europe.east
    ):
        code = 25800 + zone
    else:
        code = (32600 if lat >= 0 else 32700) + zone
    return f"EPSG:{code} ({as_crs(f'EPSG:{code}').name})"


def check_area_crs(crs: str) -> None:
    """Refuse a CRS in which areas cannot be measured: geographic, or with an area error
    above :data:`MAX_AREA_ERROR_AREA_OF_USE` somewhere in its area of use.

    Raises
    ------
    ValueError
        One line: what is wrong and which CRS to use instead.
    """
    c = as_crs(crs)
    aou = c.area_of_use
    if not c.is_projected:
        fix = suggest_crs(*aou.bounds) if aou is not None else None
        raise ValueError(
            f"{crs} is not a projected CRS; areas need metres: use a projected CRS such as "
            + (f"{fix} for its area of use" if fix else "the UTM zone of the data")
            + " or the national CRS of the data"
        )
    if aou is None:
        return
    try:
        err = area_error(c, *_grid(*aou.bounds))
    except ProjError as exc:
        raise ValueError(
            f"{crs} ({c.name}): PROJ cannot project with it ({exc}); use the UTM zone of "
            f"the data, e.g. {suggest_crs(*aou.bounds)}"
        ) from exc
    worst = float(np.nanmax(err)) if np.isfinite(err).any() else 0.0
    if worst > MAX_AREA_ERROR_AREA_OF_USE:
        raise ValueError(
            f"{crs} ({c.name}) distorts areas by up to {worst:.0%} within its area of use, "
            "so tonnes would be wrong; use an equal-area or local projected CRS: the "
            "national CRS of the data or its UTM zone, e.g. EPSG:25832 for Denmark, "
            "EPSG:3067 for Finland, EPSG:3035 (equal-area) for Europe"
        )


def check_data_extent(crs: str, bounds: tuple[float, float, float, float]) -> dict[str, Any]:
    """Check data with ``bounds`` (xmin, ymin, xmax, ymax in ``crs``) against the CRS.

    Returns the data's lon/lat box, the largest area error at its corners, edge midpoints
    and centre, and whether the data leave the CRS's area of use (reported, not refused:
    national practice projects beyond it, e.g. Bornholm in EPSG:25832).

    Raises
    ------
    InputDataError
        When the area error there exceeds :data:`MAX_AREA_ERROR`, naming a fitting CRS.
    """
    from pyproj import Transformer

    from mfa.errors import InputDataError

    c = as_crs(crs)
    to_ll = Transformer.from_crs(c, "EPSG:4326", always_xy=True)
    west, south, east, north = to_ll.transform_bounds(*bounds, densify_pts=11)
    lon, lat = _grid(west, south, east, north, n=3)
    err = area_error(c, lon, lat)
    worst = float(np.nanmax(err)) if np.isfinite(err).any() else float("nan")
    aou = c.area_of_use
    outside = bool(
        aou is not None
        and (west < aou.west or east > aou.east or south < aou.south or north > aou.north)
    )
    if not worst <= MAX_AREA_ERROR:
        fix = suggest_crs(west, south, east, north)
        raise InputDataError(
            f"the buildings lie at {west:.2f}…{east:.2f}°E, {south:.2f}…{north:.2f}°N, where "
            f"{crs} ({c.name}) measures areas {worst:.1%} off"
            + (" (outside its area of use)" if outside else "")
            + f'; set crs = "{fix.split(" ", 1)[0]}" {fix.split(" ", 1)[1]} or the national '
            "CRS of the data"
        )
    return {
        "lonlat_bounds": [round(v, 5) for v in (west, south, east, north)],
        "max_area_error": worst,
        "outside_area_of_use": outside,
        "area_of_use": aou.name if aou is not None else None,
    }

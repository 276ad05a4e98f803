"""Where a run's building data lie (lon/lat), known before the data are read, and the
regional profile ``[archetypes] profile = "auto"`` chooses from it.

The extent comes from metadata only: an OSM extract's header box (pyosmium), a GeoParquet
file's ``geo`` bbox (pyarrow), an online query's polygon; otherwise from the pipeline
CRS's area of use when it is national (spans less than :data:`NATIONAL_SPAN_DEG` in both
directions: EPSG:28992, 3067, 3006; not a UTM zone). The centre of that extent gives the
country (:func:`country_at`: real borders, see below); the profile is the first
``profile_<name>.toml`` (in name order) whose ``[auto] countries`` list it; none:
``defaults.toml`` (Denmark and the rest of the world).

With ``profile = "auto"`` and no ``[intensities] region``, the RASMI region is that of the
country the data lie in (``regions.csv`` beside the intensity table): the country whose
border (Natural Earth 1:50m, ``countries_ne50m.parquet`` beside it) holds the centre of the
extent, else the nearest within :data:`NEAREST_COUNTRY_KM` (a coastal town against a
generalised coastline); none: the run stops, naming ``region`` as the fix.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from mfa.config import Pipeline
from mfa.errors import ConfigError

__all__ = [
    "BORDERS_FILE",
    "NATIONAL_SPAN_DEG",
    "NEAREST_COUNTRY_KM",
    "Borders",
    "CountryHit",
    "choose_profile",
    "country_at",
    "data_lonlat_box",
    "detect_country",
    "locate",
    "profile_countries",
    "resolve_profile",
    "resolve_region",
]

#: A CRS whose area of use spans less than this (degrees, both ways) is national: the
#: centre of its area of use says in which country the data lie.
NATIONAL_SPAN_DEG = 15.0

Box = tuple[float, float, float, float]


def _to_lonlat(box: tuple[float, ...], crs: Any) -> Box:
    from pyproj import CRS, Transformer

    t = Transformer.from_crs(CRS.from_user_input(crs), "EPSG:4326", always_xy=True)
    return tuple(float(v) for v in t.transform_bounds(*box, densify_pts=21))  # type: ignore[return-value]


def _parquet_box(path: Path) -> Box | None:
    import pyarrow.parquet as pq

    try:
        meta = pq.read_schema(path).metadata or {}
        geo = json.loads(meta[b"geo"])
        col = geo["columns"][geo["primary_column"]]
        box = col.get("bbox")
        if not box or len(box) != 4:
            return None
        return _to_lonlat(tuple(box), col.get("crs") or "OGC:CRS84")
    except (OSError, KeyError, ValueError, TypeError):
        return None


def _osm_header_box(path: Path) -> Box | None:
    from mfa.io.osm_extract import _header_box

    try:
        return _header_box(str(path))
    except (RuntimeError, OSError):
        return None


def _crs_box(crs: str) -> Box | None:
    from pyproj import CRS

    aou = CRS.from_user_input(crs).area_of_use
    if aou is None:
        return None
    w, s, e, n = aou.bounds
    if e - w >= NATIONAL_SPAN_DEG or n - s >= NATIONAL_SPAN_DEG:
        return None
    return (w, s, e, n)


def data_lonlat_box(p: Pipeline) -> tuple[Box | None, str]:
    """The lon/lat box of the run's building data from metadata, and where it came from."""
    fp, reg = p.sources.footprints, p.sources.register_
    if fp is not None and fp.osm_file is not None:
        box = _osm_header_box(Path(fp.osm_file))
        if box is not None:
            return box, f"the header of {Path(fp.osm_file).name}"
    if fp is not None and fp.polygon_wkt:
        import shapely

        return tuple(shapely.from_wkt(fp.polygon_wkt).bounds), "the query polygon"  # type: ignore[return-value]
    for src, path in ((reg, getattr(reg, "path", None)), (fp, getattr(fp, "file", None))):
        if (
            src is not None
            and path is not None
            and Path(path).suffix.lower()
            in (
                ".parquet",
                ".geoparquet",
            )
        ):
            box = _parquet_box(Path(path))
            if box is not None:
                return box, f"the GeoParquet bbox of {Path(path).name}"
    box = _crs_box(p.crs)
    if box is not None:
        return box, f"the area of use of {p.crs} (a national CRS)"
    return None, "unknown before reading the data"


def profile_countries(folder: Path) -> dict[str, list[str]]:
    """``[auto] countries`` (ISO 3166-1 alpha-3) of every ``profile_<name>.toml`` in
    ``folder``, by name."""
    import tomllib

    out: dict[str, list[str]] = {}
    for f in sorted(Path(folder).glob("profile_*.toml")):
        try:
            auto = tomllib.loads(f.read_text(encoding="utf-8")).get("auto", {})
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{f}: cannot be read ({exc})") from exc
        if "boxes" in auto:
            raise ConfigError(
                f"{f}: [auto] boxes are no longer read; list the countries, e.g. countries = "
                '["NLD"] (ISO 3166-1 alpha-3)'
            )
        codes = auto.get("countries", [])
        if not isinstance(codes, list) or not all(
            isinstance(c, str) and len(c) == 3 and c.isupper() for c in codes
        ):
            raise ConfigError(
                f'{f}: [auto] countries must be ISO 3166-1 alpha-3 codes, e.g. ["NLD"]'
            )
        out[f.stem.removeprefix("profile_")] = codes
    return out


def choose_profile(iso3: str, countries: dict[str, list[str]]) -> str | None:
    """The first profile (in name order) whose ``[auto] countries`` list ``iso3``; None:
    the defaults."""
    for name in sorted(countries):
        if iso3 and iso3 in countries[name]:
            return name
    return None


def resolve_profile(p: Pipeline) -> tuple[str | None, dict[str, Any]]:
    """The profile the run uses and the record of the choice for ``run.json``
    (``requested``, ``profile``, and for ``auto`` the centre, the country and where the
    extent came from)."""
    requested = p.archetypes.profile
    if requested != "auto":
        return requested, {"requested": requested, "profile": requested or "default"}
    box, how = data_lonlat_box(p)
    record: dict[str, Any] = {"requested": "auto", "extent_from": how}
    if box is None:
        record |= {"profile": "default", "reason": "the data's location is not known"}
        return None, record
    lon, lat = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    record["centre_lonlat"] = [round(lon, 4), round(lat, 4)]
    borders = _read_borders(Path(p.intensities.table).parent / BORDERS_FILE)
    hit = country_at(lon, lat, borders)
    if hit is None:
        record |= {"profile": "default", "reason": "the centre lies in no country"}
        return None, record
    chosen = choose_profile(hit.iso3, profile_countries(Path(p.archetypes.dir)))
    record |= {
        "profile": chosen or "default",
        "country": hit.country,
        "reason": (
            f"the centre lies in {hit.country}, a country of profile_{chosen}.toml"
            if chosen
            else f"the centre lies in {hit.country}, in no profile's [auto] countries"
        )
        + (f" (the nearest, {hit.distance_km:.1f} km away)" if hit.distance_km else ""),
    }
    return chosen, record


#: The country borders beside the intensity table: Natural Earth 1:50m admin-0 countries
#: (``config/README.md`` gives the source and how it was made).
BORDERS_FILE = "countries_ne50m.parquet"

#: When the centre lies in no country's outline (a coastal town against a generalised
#: coastline, a harbour, a bay), the nearest country is taken if its outline is this close
#: (km). The 1:50m coastlines miss the centres of Copenhagen, Stockholm, Tromsø, Venice
#: and Lisbon by 0.3–3.3 km; Helsingør, 0.2 km from Denmark's outline, is 4.7 km from
#: Sweden's, so the nearest outline, not the first within reach, decides.
NEAREST_COUNTRY_KM = 10.0

_KM_PER_DEG = 111.32  # km per degree of latitude (and of longitude at the equator)


class Borders(NamedTuple):
    """Country outlines (lon/lat, EPSG:4326), one row per country, index-aligned."""

    iso3: np.ndarray  # ISO 3166-1 alpha-3, "" where Natural Earth gives none (Kosovo …)
    country: np.ndarray  # Natural Earth's short name
    geometry: np.ndarray  # shapely (Multi)Polygons


class CountryHit(NamedTuple):
    """The country a point lies in, or the nearest one within the tolerance."""

    iso3: str
    country: str
    distance_km: float  # 0: the point lies inside the outline


def _read_borders(path: Path) -> Borders:
    """The borders file, read once per path and modification time."""
    try:
        stamp = Path(path).stat().st_mtime_ns
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read ({exc}); restore it from config/") from exc
    return _read_borders_cached(str(path), stamp)


@functools.lru_cache(maxsize=4)
def _read_borders_cached(path: str, _stamp: int) -> Borders:
    import pyarrow.parquet as pq
    import shapely

    try:
        t = pq.read_table(path, columns=["iso3", "country", "geometry"])
        geoms = shapely.from_wkb(t.column("geometry").to_numpy(zero_copy_only=False))
    except (OSError, ValueError, KeyError, shapely.errors.GEOSException) as exc:
        raise ConfigError(f"{path}: cannot be read ({exc}); restore it from config/") from exc
    if t.num_rows == 0 or shapely.is_missing(geoms).any():
        raise ConfigError(f"{path}: every country needs an outline; restore it from config/")
    iso3 = np.asarray(t.column("iso3").fill_null("").to_pylist(), dtype=object)
    names = np.asarray(t.column("country").to_pylist(), dtype=object)
    return Borders(iso3, names, geoms)


def _country_tables(folder: Path) -> tuple[Any, Borders]:
    """``regions.csv`` (country, iso3, rasmi_region) and the country borders of
    ``folder``, checked."""
    import pandas as pd

    path = folder / "regions.csv"
    cols = ("country", "iso3", "rasmi_region")
    try:
        regions = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: cannot be read ({exc}); restore it from config/") from exc
    if not set(cols) <= set(regions.columns):
        raise ConfigError(f"{path}: columns {', '.join(cols)} are needed")
    empty = (regions[list(cols)] == "").any(axis=1).to_numpy()
    if empty.any():
        raise ConfigError(f"{path} line {int(empty.argmax()) + 2}: fill {', '.join(cols)}")
    dup = regions["iso3"].duplicated().to_numpy()
    if dup.any():
        i = int(dup.argmax())
        raise ConfigError(f"{path} line {i + 2}: {regions['iso3'].iloc[i]} is given twice")
    return regions, _read_borders(folder / BORDERS_FILE)


def country_at(
    lon: float, lat: float, borders: Borders, tolerance_km: float = NEAREST_COUNTRY_KM
) -> CountryHit | None:
    """The country whose outline holds (lon, lat); else the one whose outline is nearest,
    if within ``tolerance_km`` (geodesic distance from the point, km, measured in an
    azimuthal equidistant projection centred on it); else None."""
    import shapely
    from pyproj import CRS, Transformer

    inside = np.flatnonzero(shapely.contains_xy(borders.geometry, lon, lat))
    if inside.size:
        i = int(inside[0])
        return CountryHit(str(borders.iso3[i]), str(borders.country[i]), 0.0)
    # only outlines whose box comes within the tolerance can be within it
    dlat = tolerance_km / _KM_PER_DEG
    dlon = min(180.0, dlat / max(np.cos(np.radians(lat)), 1e-6))
    b = shapely.bounds(borders.geometry)
    near = np.flatnonzero(
        (b[:, 0] - dlon <= lon)
        & (lon <= b[:, 2] + dlon)
        & (b[:, 1] - dlat <= lat)
        & (lat <= b[:, 3] + dlat)
    )
    if near.size == 0:
        return None
    aeqd = CRS.from_proj4(f"+proj=aeqd +lat_0={lat} +lon_0={lon} +datum=WGS84 +units=m")
    fwd = Transformer.from_crs("EPSG:4326", aeqd, always_xy=True)
    projected = shapely.transform(
        borders.geometry[near], lambda xy: np.column_stack(fwd.transform(xy[:, 0], xy[:, 1]))
    )
    km = shapely.distance(projected, shapely.Point(0.0, 0.0)) / 1000.0
    j = int(np.argmin(km))
    if not km[j] <= tolerance_km:
        return None
    i = int(near[j])
    return CountryHit(str(borders.iso3[i]), str(borders.country[i]), float(km[j]))


def detect_country(p: Pipeline, borders: Borders) -> tuple[CountryHit | None, str]:
    """The country the run's data lie in (None: unknown), and how it was found: the
    country whose border holds the centre of the data's extent (:func:`data_lonlat_box`),
    else the nearest within :data:`NEAREST_COUNTRY_KM`."""
    box, how = data_lonlat_box(p)
    if box is None:
        return None, how
    lon, lat = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    hit = country_at(lon, lat, borders)
    where = f"the centre {lon:.4f}, {lat:.4f} (from {how})"
    if hit is None:
        return None, (
            f"{where} lies in no country of {BORDERS_FILE} and none is within "
            f"{NEAREST_COUNTRY_KM:g} km"
        )
    if hit.distance_km == 0.0:
        return hit, f"{where} lies in {hit.country} (Natural Earth 1:50m borders)"
    return hit, (
        f"{where} lies in no country's outline (Natural Earth 1:50m); the nearest, "
        f"{hit.country}, is {hit.distance_km:.1f} km away (taken: within "
        f"{NEAREST_COUNTRY_KM:g} km)"
    )


def locate(p: Pipeline) -> dict[str, Any]:
    """Where the run's data lie, for ``run.json`` ``location``: ``iso3``, ``country``,
    ``distance_km`` and ``how`` (:func:`detect_country`); ``iso3`` None when it cannot be
    told or the borders file is not beside the intensity table (a custom table's folder
    need not hold it: the location only labels the run and picks the statistics the
    report compares with); a damaged borders file is a :class:`ConfigError`."""
    path = Path(p.intensities.table).parent / BORDERS_FILE
    if not path.is_file():
        return {"iso3": None, "country": None, "how": f"no {BORDERS_FILE} beside the table"}
    hit, how = detect_country(p, _read_borders(path))
    if hit is None:
        return {"iso3": None, "country": None, "how": how}
    out = {"iso3": hit.iso3 or None, "country": hit.country, "how": how}
    return out | {"distance_km": round(hit.distance_km, 3)}


def resolve_region(p: Pipeline) -> tuple[Pipeline, dict[str, Any]]:
    """The pipeline with its RASMI region, and the record of the choice for ``run.json``.

    An explicit ``[intensities] region`` always wins. Without one (allowed only with
    ``profile = "auto"``), the region of the country the data lie in (:func:`detect_country`,
    ``regions.csv``); a country that cannot be told, or one that ``regions.csv`` gives no
    region (Greenland, Kosovo …), is a :class:`ConfigError` naming the fix.
    """
    if p.intensities.region is not None:
        return p, {"region": p.intensities.region, "requested": p.intensities.region}
    folder = Path(p.intensities.table).parent
    regions, borders = _country_tables(folder)
    hit, how = detect_country(p, borders)
    fix = f'set region, e.g. region = "OECD_EU15" (see {folder / "regions.csv"})'
    if hit is None:
        raise ConfigError(
            f"{p.source_file}: [intensities] region is not set and the country of the data "
            f"could not be told ({how}); {fix}"
        )
    rows = regions[regions["iso3"] == hit.iso3] if hit.iso3 else regions.iloc[:0]
    if rows.empty:
        raise ConfigError(
            f"{p.source_file}: [intensities] region is not set and the data lie in "
            f"{hit.country}, which {folder / 'regions.csv'} gives no RASMI region ({how}); "
            f"{fix}"
        )
    row = rows.iloc[0]
    region = str(row["rasmi_region"])
    record = {
        "region": region,
        "requested": "auto",
        "country": str(row["country"]),
        "iso3": hit.iso3,
        "country_from": how,
        "distance_km": round(hit.distance_km, 3),
        "source": f"{folder / 'regions.csv'}: {row.get('note', '')}",
    }
    update = {"intensities": p.intensities.model_copy(update={"region": region})}
    return p.model_copy(update=update), record

"""OpenStreetMap building footprints: local extracts (.osm XML, .osm.pbf) and online queries.

Every path ends in the same raw table (``element``, ``osm_id``, tag columns, lon/lat
geometry) that :func:`mfa.buildings.osm.normalise_osm` turns into canonical buildings.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import geopandas as gpd
import pandas as pd
import shapely

from mfa.buildings.archetypes import ArchetypeRules
from mfa.buildings.osm import OSM_TAGS, normalise_osm
from mfa.config import FootprintSource
from mfa.config.sources import ATTIC_START, attic_date, pinned_query_date
from mfa.errors import InputDataError, InputNotFoundError, TransientFetchError
from mfa.io.cache import (
    OSM_KIND,
    Snapshot,
    find_snapshot,
    osm_snapshot_name,
    pinned_snapshot,
    store_snapshot,
)
from mfa.io.osm_extract import LANDUSE_VALUES, read_osm_extract

__all__ = [
    "ATTIC_START",
    "attic_date",
    "buildings_from_osm",
    "chosen_osm_snapshot",
    "fetch_osm",
    "osm_snapshot",
    "read_osm_file",
    "read_osm_file_with_landuse",
    "read_snapshot",
]

log = logging.getLogger("mfa")

_TAGS = {"building": True, "building:part": True}

#: osmnx's query settings (``settings.overpass_settings``) with a ``[date:…]`` added.
_DATED_SETTINGS = '[out:json][timeout:{{timeout}}]{{maxsize}}[date:"{date}"]'


def _from_osmnx(gdf: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    raw = gdf.reset_index().rename(columns={"id": "osm_id"})
    cols = ["element", "osm_id", *[t for t in OSM_TAGS if t in raw.columns], "geometry"]
    return gpd.GeoDataFrame(raw[cols], geometry="geometry", crs=gdf.crs or "EPSG:4326")


def read_osm_file(path: Path) -> gpd.GeoDataFrame:
    """Every building and building-part element of a local extract (``.osm``, ``.osm.bz2``,
    ``.osm.pbf``), read with pyosmium (:func:`mfa.io.osm_extract.read_osm_elements`)."""
    return read_osm_file_with_landuse(path, landuse=())[0]


def read_osm_file_with_landuse(
    path: Path, landuse: tuple[str, ...] = LANDUSE_VALUES
) -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame]:
    """The building elements of a local extract and its ``landuse`` polygons (the values
    in ``landuse``), read in one pass (:func:`mfa.io.osm_extract.read_osm_extract`)."""
    path = Path(path)
    if not path.is_file():
        raise InputNotFoundError(f"{path}: OSM extract not found; fix sources.footprints.osm_file")
    name = path.name.lower()
    try:
        if name.endswith((".pbf", ".osm", ".osm.bz2", ".xml")):
            return read_osm_extract(path, OSM_TAGS, landuse)
    except (
        RuntimeError,
        ValueError,
        OSError,
        SyntaxError,
    ) as exc:  # XML ParseError is a SyntaxError
        raise InputDataError(f"{path}: cannot be read as OpenStreetMap data ({exc})") from exc
    raise InputDataError(f"{path}: unknown OSM format; use .osm, .osm.bz2 or .osm.pbf")


@contextmanager
def _osmnx_settings(**values: object) -> Iterator[None]:
    """Set osmnx's module-level settings for one call and restore them afterwards."""
    import osmnx as ox

    saved = {k: getattr(ox.settings, k) for k in values}
    try:
        for k, v in values.items():
            setattr(ox.settings, k, v)
        yield
    finally:
        for k, v in saved.items():
            setattr(ox.settings, k, v)


def _fail_fast_when_busy(response, *args, **kwargs):
    """requests hook: stop osmnx from waiting and retrying forever on 429/504."""
    if response.status_code in (429, 502, 503, 504):
        raise TransientFetchError(
            f"{response.url}: HTTP {response.status_code} {response.reason} (server busy)"
        )
    return response


def _fetch_once(place: str | None, polygon_wkt: str | None) -> gpd.GeoDataFrame:
    import osmnx as ox
    import requests
    from osmnx._errors import InsufficientResponseError, ResponseStatusCodeError

    try:
        if place is not None:
            return ox.features_from_place(place, tags=_TAGS)
        try:
            poly = shapely.from_wkt(polygon_wkt)
        except shapely.errors.GEOSException as exc:
            raise InputDataError(f"polygon_wkt is not valid WKT ({exc})") from exc
        if poly.geom_type not in ("Polygon", "MultiPolygon"):
            raise InputDataError(f"polygon_wkt is a {poly.geom_type}; give a lon/lat polygon")
        return ox.features_from_polygon(poly, tags=_TAGS)
    except InsufficientResponseError as exc:
        if "No matching features" in str(exc):
            raise InputDataError(
                "OpenStreetMap has no buildings in the requested area; check the place name "
                "or polygon (lon/lat order)"
            ) from exc
        raise TransientFetchError(f"incomplete or non-JSON response from Overpass: {exc}") from exc
    except ResponseStatusCodeError as exc:
        raise TransientFetchError(f"Overpass error response: {str(exc)[:300]}") from exc
    except (requests.Timeout, requests.ConnectionError) as exc:
        raise TransientFetchError(f"Overpass unreachable: {exc}") from exc


def fetch_osm(
    place: str | None = None,
    polygon_wkt: str | None = None,
    cache_dir: Path | None = None,
    timeout_s: int = 180,
    overpass_url: str | None = None,
    attempts: int = 3,
    backoff_s: float = 10.0,
    date: str | None = None,
) -> gpd.GeoDataFrame:
    """Raw building features from the Overpass API for a place name or a lon/lat polygon.

    Transient failures (HTTP 429/502/503/504, timeouts, a cut-off or non-JSON body) are
    retried ``attempts`` times in all, waiting ``backoff_s`` × 2^k between tries, then
    raised as :class:`~mfa.errors.TransientFetchError`; an area without buildings is an
    :class:`~mfa.errors.InputDataError` at once. ``cache_dir`` keeps osmnx's response
    cache (only complete, parsed responses are cached); ``overpass_url`` selects another
    Overpass instance than osmnx's default; ``date`` (``YYYY-MM-DDTHH:MM:SSZ``) asks for
    OSM as it was then (the query's ``[date:"…"]`` setting: Overpass's attic data).
    """
    import time

    if place is None and polygon_wkt is None:
        raise InputDataError("give a place or a polygon_wkt to fetch OSM buildings")
    settings: dict[str, object] = {
        "requests_timeout": timeout_s,
        "use_cache": cache_dir is not None,
        "requests_kwargs": {"hooks": {"response": _fail_fast_when_busy}},
    }
    if cache_dir is not None:
        settings["cache_folder"] = str(cache_dir)
    if overpass_url is not None:
        settings["overpass_url"] = overpass_url
    if date is not None:
        settings["overpass_settings"] = _DATED_SETTINGS.format(date=date)
    with _osmnx_settings(**settings):
        for attempt in range(attempts):
            try:
                return _from_osmnx(_fetch_once(place, polygon_wkt))
            except TransientFetchError as exc:
                if attempt == attempts - 1:
                    raise TransientFetchError(
                        f"{exc}; gave up after {attempts} attempts: try again later, or use a "
                        "local extract (sources.footprints.osm_file)"
                    ) from exc
                log.warning("attempt %d/%d failed: %s", attempt + 1, attempts, exc)
                time.sleep(backoff_s * 2**attempt)
    raise AssertionError("unreachable")  # pragma: no cover


def chosen_osm_snapshot(
    source: FootprintSource, cache_root: Path, day: str, as_of: str | None = None
) -> tuple[Snapshot | None, str | None, str]:
    """Which snapshot an online query reads, looked up without network: the snapshot (None
    when it must be downloaded), the Overpass ``[date:…]`` to download it with (None: the
    current state) and its name.

    - ``source.snapshot`` (a day or ``latest``): that snapshot, never downloaded;
    - a pinned run (``as_of``, ``YYYY-MM-DD``): the snapshot a run of that day downloaded,
      else OSM as it was at 00:00 UTC that day (``[date:"<as_of>T00:00:00Z"]``, the as-of
      day in the snapshot's name), downloaded once and then reused by every run pinned
      to that day;
    - else the snapshot of ``day`` (the run's), downloaded once that day.
    """
    name = osm_snapshot_name(source.place, source.polygon_wkt)
    if as_of is not None:
        date = pinned_query_date(source, as_of)
        that_day = find_snapshot(cache_root, OSM_KIND, name, as_of)
        if that_day is not None:
            return that_day, None, name
        name = osm_snapshot_name(source.place, source.polygon_wkt, date)
        return find_snapshot(cache_root, OSM_KIND, name, "latest"), date, name
    if source.snapshot is not None:
        key = "sources.footprints.snapshot"
        return pinned_snapshot(cache_root, OSM_KIND, name, source.snapshot, key), None, name
    return find_snapshot(cache_root, OSM_KIND, name, day), None, name


def osm_snapshot(
    source: FootprintSource,
    cache_root: Path,
    day: str,
    backoff_s: float = 10.0,
    as_of: str | None = None,
) -> tuple[Snapshot, bool]:
    """The snapshot of an online query (:func:`chosen_osm_snapshot`), downloaded now when
    there is none yet.

    The download goes to Overpass (:func:`fetch_osm`, with retries; with the ``[date:…]``
    of a pinned run), and the parsed features are written as a GeoParquet snapshot in the
    folder of ``day`` (atomically, with a sidecar whose query holds the date). A failed or
    cut-off download writes nothing. Returns the snapshot and whether it was reused.
    """
    found, date, name = chosen_osm_snapshot(source, cache_root, day, as_of)
    if found is not None:
        return found, True
    raw = fetch_osm(
        source.place,
        source.polygon_wkt,
        overpass_url=source.overpass_url,
        backoff_s=backoff_s,
        date=date,
    )
    query = {
        "place": source.place,
        "polygon_wkt": source.polygon_wkt,
        "tags": _TAGS,
        "overpass_url": source.overpass_url or "osmnx default",
        **({"date": date} if date is not None else {}),
    }
    snap = store_snapshot(
        cache_root, OSM_KIND, day, name, query, lambda tmp: raw.to_parquet(tmp, index=False)
    )
    return snap, False


def read_snapshot(snap: Snapshot) -> gpd.GeoDataFrame:
    """The raw OSM features of a snapshot (as :func:`fetch_osm` returned them)."""
    try:
        return gpd.read_parquet(snap.path)
    except (OSError, ValueError) as exc:
        raise InputDataError(
            f"{snap.path}: cached OSM snapshot cannot be read ({exc}); delete it to download again"
        ) from exc


def buildings_from_osm(
    source: FootprintSource,
    crs: str,
    rules: ArchetypeRules,
    cache_root: Path | None = None,
    day: str | None = None,
    as_of: str | None = None,
) -> tuple[gpd.GeoDataFrame, pd.DataFrame, pd.DataFrame, dict[str, object] | None]:
    """Read or fetch OSM buildings and normalise them.

    Returns the canonical buildings, the dropped ones, the repairs made while normalising
    (:func:`mfa.buildings.osm.normalise_osm`), and for an online query the record of the
    snapshot used (None for a local extract). Online queries need ``cache_root`` and
    ``day`` (``YYYY-MM-DD``, the run's UTC day); ``as_of`` pins them to a day
    (:func:`chosen_osm_snapshot`).
    """
    repairs: list[pd.DataFrame] = []
    landuse = None  # online queries ask for buildings only
    if source.osm_file is not None:
        raw, landuse = read_osm_file_with_landuse(source.osm_file)
        record = None
    else:
        if cache_root is None or day is None:
            raise ValueError("an online OSM query needs a cache root and the run's day")
        snap, reused = osm_snapshot(source, cache_root, day, as_of=as_of)
        if reused:
            log.info("using the OSM snapshot %s (no download)", snap.path)
        raw = read_snapshot(snap)
        record = snap.record(reused)
    buildings, dropped = normalise_osm(raw, crs, rules, repairs, landuse)
    return buildings, dropped, pd.concat([_no_repairs(), *repairs], ignore_index=True), record


def _no_repairs() -> pd.DataFrame:
    from mfa.buildings.quality import REPAIR_COLUMNS

    return pd.DataFrame({c: pd.Series(dtype="string") for c in REPAIR_COLUMNS})

"""Where a run's building data lie (lon/lat), known before the data are read, and the
regional profile ``[archetypes] profile = "auto"`` chooses from it.

The extent comes from metadata only: an OSM extract's header box (pyosmium), a GeoParquet
file's ``geo`` bbox (pyarrow), an online query's polygon; otherwise from the pipeline
CRS's area of use when it is national (spans less than :data:`NATIONAL_SPAN_DEG` in both
directions: EPSG:28992, 3067, 3006; not a UTM zone). The profile is the first
``profile_<name>.toml`` (in name order) whose ``[auto] boxes`` hold the centre of that
extent; none: ``defaults.toml`` (Denmark and the rest of Europe).

With ``profile = "auto"`` and no ``[intensities] region``, the RASMI region is that of the
country the data lie in (``regions.csv`` beside the intensity table): the one country of
that table that a national CRS's area of use names (EPSG:3067: Finland), else the country
of the first row of ``country_boxes.csv`` whose lon/lat box holds the centre of the extent.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mfa.config import Pipeline
from mfa.errors import ConfigError

__all__ = [
    "NATIONAL_SPAN_DEG",
    "choose_profile",
    "country_at",
    "data_lonlat_box",
    "detect_country",
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


def profile_boxes(folder: Path) -> dict[str, list[Box]]:
    """``[auto] boxes`` of every ``profile_<name>.toml`` in ``folder``, by name."""
    import tomllib

    out: dict[str, list[Box]] = {}
    for f in sorted(Path(folder).glob("profile_*.toml")):
        try:
            boxes = tomllib.loads(f.read_text(encoding="utf-8")).get("auto", {}).get("boxes", [])
            parsed = [tuple(float(v) for v in b) for b in boxes]
        except (tomllib.TOMLDecodeError, TypeError, ValueError) as exc:
            raise ConfigError(
                f"{f}: [auto] boxes must be [[west, south, east, north], …] ({exc})"
            ) from exc
        if any(len(b) != 4 or b[0] >= b[2] or b[1] >= b[3] for b in parsed):
            raise ConfigError(f"{f}: [auto] boxes must be [[west, south, east, north], …]")
        out[f.stem.removeprefix("profile_")] = parsed  # type: ignore[assignment]
    return out


def choose_profile(lon: float, lat: float, boxes: dict[str, list[Box]]) -> str | None:
    """The first profile (in name order) with a box holding (lon, lat); None: defaults."""
    for name in sorted(boxes):
        if any(w <= lon <= e and s <= lat <= n for w, s, e, n in boxes[name]):
            return name
    return None


def resolve_profile(p: Pipeline) -> tuple[str | None, dict[str, Any]]:
    """The profile the run uses and the record of the choice for ``run.json``
    (``requested``, ``profile``, and for ``auto`` the centre and where it came from)."""
    requested = p.archetypes.profile
    folder = Path(p.archetypes.dir)
    if requested != "auto":
        return requested, {"requested": requested, "profile": requested or "default"}
    box, how = data_lonlat_box(p)
    record: dict[str, Any] = {"requested": "auto", "extent_from": how}
    if box is None:
        record |= {"profile": "default", "reason": "the data's location is not known"}
        return None, record
    lon, lat = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    chosen = choose_profile(lon, lat, profile_boxes(folder))
    record |= {
        "profile": chosen or "default",
        "centre_lonlat": [round(lon, 4), round(lat, 4)],
        "reason": (
            f"the centre lies in a box of profile_{chosen}.toml"
            if chosen
            else "the centre lies in no profile's [auto] boxes"
        ),
    }
    return chosen, record


def _country_tables(folder: Path) -> tuple[Any, Any]:
    """``regions.csv`` (country, iso3, rasmi_region) and ``country_boxes.csv`` (iso3, west,
    south, east, north) of ``folder``, checked."""
    import pandas as pd

    out = []
    for name, cols in (
        ("regions.csv", ("country", "iso3", "rasmi_region")),
        ("country_boxes.csv", ("iso3", "west", "south", "east", "north")),
    ):
        path = folder / name
        try:
            t = pd.read_csv(path, dtype={"iso3": str, "country": str, "rasmi_region": str})
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{path}: cannot be read ({exc}); restore it from config/") from exc
        if not set(cols) <= set(t.columns) or t[list(cols)].isna().any().any():
            raise ConfigError(f"{path}: columns {', '.join(cols)} must be filled on every line")
        out.append(t)
    regions, boxes = out
    unknown = ~boxes["iso3"].isin(regions["iso3"])
    if unknown.any():
        i = int(unknown.to_numpy().argmax())
        raise ConfigError(
            f"{folder / 'country_boxes.csv'} line {i + 2}: {boxes['iso3'].iloc[i]} is not in "
            "regions.csv; add the country there"
        )
    return regions, boxes


def detect_country(p: Pipeline, regions: Any, boxes: Any) -> tuple[str | None, str]:
    """ISO3 of the country the run's data lie in (None: unknown), and how it was found."""
    from pyproj import CRS

    aou = CRS.from_user_input(p.crs).area_of_use
    if _crs_box(p.crs) is not None and aou is not None:
        named = [c for c in regions["country"] if aou.name.startswith(c)]
        if len(named) == 1:
            iso3 = regions.loc[regions["country"] == named[0], "iso3"].iloc[0]
            return str(iso3), f"the area of use of {p.crs} ({aou.name.split(' - ')[0]})"
    box, how = data_lonlat_box(p)
    if box is None:
        return None, how
    lon, lat = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    iso3 = country_at(lon, lat, boxes)
    where = f"centre {lon:.4f}, {lat:.4f} (from {how})"
    if iso3 is None:
        return None, f"the {where} lies in no box of country_boxes.csv"
    return iso3, f"the {where} lies in a box of country_boxes.csv"


def country_at(lon: float, lat: float, boxes: Any) -> str | None:
    """ISO3 of the first row of ``boxes`` (``country_boxes.csv``) holding (lon, lat)."""
    hit = boxes[
        (boxes["west"] <= lon)
        & (lon <= boxes["east"])
        & (boxes["south"] <= lat)
        & (lat <= boxes["north"])
    ]
    return None if hit.empty else str(hit["iso3"].iloc[0])


def resolve_region(p: Pipeline) -> tuple[Pipeline, dict[str, Any]]:
    """The pipeline with its RASMI region, and the record of the choice for ``run.json``.

    An explicit ``[intensities] region`` always wins. Without one (allowed only with
    ``profile = "auto"``), the region of the country the data lie in (:func:`detect_country`,
    ``regions.csv``); a country that cannot be told is a :class:`ConfigError` naming the fix.
    """
    if p.intensities.region is not None:
        return p, {"region": p.intensities.region, "requested": p.intensities.region}
    folder = Path(p.intensities.table).parent
    regions, boxes = _country_tables(folder)
    iso3, how = detect_country(p, regions, boxes)
    if iso3 is None:
        raise ConfigError(
            f"{p.source_file}: [intensities] region is not set and the country of the data "
            f'could not be told ({how}); set region, e.g. region = "OECD_EU15" (see '
            f"{folder / 'regions.csv'})"
        )
    row = regions[regions["iso3"] == iso3].iloc[0]
    region = str(row["rasmi_region"])
    record = {
        "region": region,
        "requested": "auto",
        "country": str(row["country"]),
        "country_from": how,
        "source": f"{folder / 'regions.csv'}: {row.get('note', '')}",
    }
    update = {"intensities": p.intensities.model_copy(update={"region": region})}
    return p.model_copy(update=update), record

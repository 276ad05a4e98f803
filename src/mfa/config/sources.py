"""The source tables of a pipeline file (``[sources.*]``) as pydantic models."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from mfa.config.remote import MAX_DOWNLOAD_MB, RemoteFields, check_remote
from mfa.errors import ConfigError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class RegisterSource(RemoteFields, _Strict):
    """A building register: BBR (Datafordeler field names; CSV, GeoParquet or GeoPackage)
    or the Dutch BAG (``schema = "bag"``: pand footprints in any OGR-readable file, with
    the verblijfsobjecten in ``[sources.units]``).

    ``url`` and ``protocol`` instead of ``path``: pulled (see :mod:`mfa.config.remote`).
    """

    schema_: Literal["bbr", "bag"] = Field(
        default="bbr",
        alias="schema",
        description="bbr: Danish BBR `Bygning` records; bag: Dutch BAG `pand` records",
    )
    path: Path | None = None
    layer: str | None = None
    existing_status: list[str] | None = Field(
        default=None,
        description="statuses that count as standing buildings (BBR life-cycle codes, "
        "default ['6']; BAG pand statuses, default: config/archetypes/bag_pand_status.csv)",
    )
    crs: str | None = Field(
        default=None,
        description="CRS of `byg404Koordinat` for CSV files (WKT points carry none).",
    )
    decimal_separator: Literal["auto", ",", "."] = Field(
        default="auto",
        description="decimal separator of numbers written as text (CSV): ',' for Danish "
        "Excel exports (thousands '.'), '.' for English (thousands ','); 'auto' reads only "
        "values whose meaning is certain and rejects e.g. '2.700' (mfa.numbers)",
    )

    @model_validator(mode="before")
    @classmethod
    def _bbr_default_status(cls, data: Any) -> Any:
        """BBR: status 6 (Opført) is standing unless the file says otherwise."""
        bbr = isinstance(data, dict) and data.get("schema", "bbr") == "bbr"
        if bbr and data.get("existing_status") is None:
            data = {**data, "existing_status": ["6"]}
        return data

    @model_validator(mode="after")
    def _local_or_remote(self) -> RegisterSource:
        check_remote(self, "path", self.path)
        if self.schema_ == "bag" and self.decimal_separator != "auto":
            raise ValueError("decimal_separator goes with a BBR CSV, not a BAG register")
        return self


class UnitSource(RemoteFields, _Strict):
    """The units of a BAG register (verblijfsobjecten: use, usable floor area, their pand),
    any OGR-readable file, or pulled (``url`` and ``protocol``)."""

    path: Path | None = None
    layer: str | None = None
    link_field: str = Field(
        default="pand.href",
        description="the field naming each unit's panden: PDOK v2 `pand.href` (links), BAG "
        "extracts `pand_identificatie`",
    )

    @model_validator(mode="after")
    def _local_or_remote(self) -> UnitSource:
        check_remote(self, "path", self.path)
        return self


class FootprintSource(RemoteFields, _Strict):
    """Building footprints: an OSM extract, an online OSM query, or a footprint file
    (``schema = "overture"``: an Overture Maps buildings GeoParquet file)."""

    schema_: Literal["footprints", "overture"] = Field(
        default="footprints",
        alias="schema",
        description="footprints: any OGR-readable file with OSM-style tag columns; "
        "overture: an Overture Maps buildings GeoParquet file (id, geometry, bbox, height, "
        "num_floors, class, subtype, sources)",
    )
    bbox: tuple[float, float, float, float] | None = Field(
        default=None,
        description="overture: the area to read, lon/lat (min lon, min lat, max lon, max "
        "lat); records whose bbox column misses it are not read (default: the districts' "
        "extent, else the whole file)",
    )
    osm_file: Path | None = Field(default=None, description=".osm, .osm.bz2 or .osm.pbf")
    file: Path | None = Field(
        default=None, description="any OGR-readable polygon file (e.g. GeoDanmark, BGT)"
    )
    layer: str | None = Field(default=None, description="layer of `file`")
    id_column: str | None = Field(default=None, description="unique building id in `file`")
    register_link_column: str | None = Field(
        default=None,
        description="column of `file` with the register id (e.g. GeoDanmark BBRUUID)",
    )
    place: str | None = Field(default=None, description="a place name for the online query")
    polygon_wkt: str | None = Field(
        default=None, description="a polygon in lon/lat (EPSG:4326) for the online query"
    )
    overpass_url: str | None = Field(
        default=None, description="another Overpass API than osmnx's default (online only)"
    )
    snapshot: str | None = Field(
        default=None,
        description="online only: use the cached snapshot of this day (YYYY-MM-DD) or the "
        "newest one ('latest') instead of downloading; default: today's, downloaded once",
    )

    @model_validator(mode="before")
    @classmethod
    def _overture_id(cls, data: Any) -> Any:
        """Overture features carry their GERS id in ``id``."""
        if isinstance(data, dict) and data.get("schema") == "overture":
            data = {"id_column": "id", **data}
        return data

    @model_validator(mode="after")
    def _exactly_one(self) -> FootprintSource:
        if self.schema_ == "overture":
            if self.file is None and self.url is None:
                raise ValueError('schema = "overture" reads a GeoParquet file: give file')
            if self.url is not None and self.protocol != "http":
                raise ValueError('schema = "overture" is a file: protocol "http", not a paged one')
            if self.layer is not None or self.register_link_column is not None:
                raise ValueError("layer and register_link_column do not go with an Overture file")
        elif self.bbox is not None:
            raise ValueError('bbox goes with schema = "overture"')
        if self.bbox is not None:
            x0, y0, x1, y1 = self.bbox
            if not (-180 <= x0 < x1 <= 180 and -90 <= y0 < y1 <= 90):
                raise ValueError(
                    f"bbox {list(self.bbox)} is not min lon, min lat, max lon, max lat in "
                    "degrees (e.g. [24.94, 60.16, 24.96, 60.18])"
                )
        keys = ("osm_file", "place", "polygon_wkt", "file", "url")
        given = [k for k in keys if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of osm_file, place, polygon_wkt, file or url"
                + (f" (got {', '.join(given)})" if given else "")
            )
        check_remote(self, "file", self.file, required=False)
        if self.url is not None and self.protocol != "http" and self.layer is not None:
            raise ValueError("layer goes with a file (or protocol http); a paged pull is one layer")
        has_file = self.file is not None or self.url is not None
        if has_file and self.id_column is None:
            raise ValueError("a footprint file needs id_column (a unique building id)")
        if not has_file and (self.layer or self.id_column or self.register_link_column):
            raise ValueError("layer, id_column and register_link_column go with file or url")
        if self.snapshot is not None:
            if self.place is None and self.polygon_wkt is None:
                raise ValueError("snapshot goes with an online query (place or polygon_wkt)")
            if self.snapshot != "latest" and not _valid_day(self.snapshot):
                raise ValueError(
                    f"snapshot must be a day such as '2026-11-24' or 'latest', got "
                    f"{self.snapshot!r}"
                )
        return self

    @property
    def online(self) -> bool:
        """True when the footprints come from an online query (cached as dated snapshots)."""
        return self.place is not None or self.polygon_wkt is not None


def _valid_day(text: str) -> bool:
    from datetime import date

    try:
        date.fromisoformat(text)
    except ValueError:
        return False
    return len(text) == 10


class HeightSource(_Strict):
    """Elevation rasters for building heights: an nDSM, or a DSM and a DTM on one grid."""

    ndsm: Path | None = None
    dsm: Path | None = None
    dtm: Path | None = None
    percentile: Annotated[float, Field(ge=0, le=100)] = 90.0
    storey_height_m: Annotated[float, Field(gt=0, le=20)] | None = Field(
        default=None, description="default: [heights] storey_height_m in defaults.toml"
    )
    max_window_pixels: Annotated[int, Field(ge=1024)] = 4_000_000
    # pulled rasters (mfa.pull): a GeoTIFF/COG file by http instead of the local path
    ndsm_url: str | None = Field(default=None, description="the nDSM by http, instead of ndsm")
    dsm_url: str | None = Field(default=None, description="the DSM by http, instead of dsm")
    dtm_url: str | None = Field(default=None, description="the DTM by http, instead of dtm")
    protocol: Literal["http", "wcs"] | None = Field(
        default=None,
        description='how to fetch the *_url rasters: "http" (one GeoTIFF file each) or '
        '"wcs" (*_url is an OGC WCS 2.0.1 service: GetCoverage of *_coverage over bbox)',
    )
    # wcs: the coverage of each raster and the area asked for
    ndsm_coverage: str | None = Field(default=None, description="wcs: the nDSM's coverageId")
    dsm_coverage: str | None = Field(default=None, description="wcs: the DSM's coverageId")
    dtm_coverage: str | None = Field(default=None, description="wcs: the DTM's coverageId")
    bbox: tuple[float, float, float, float] | None = Field(
        default=None,
        description="wcs: the area to fetch (min x, min y, max x, max y in the pipeline's "
        "CRS, metres): the GetCoverage subset",
    )
    wcs_axes: tuple[str, str] = Field(
        default=("x", "y"),
        description="wcs: the coverage's axis labels for east and north (its "
        "DescribeCoverage axisLabels, e.g. x y, E N)",
    )
    retries: Annotated[int, Field(ge=0, le=10)] = 4
    timeout_s: Annotated[float, Field(gt=0, le=3600)] = 60.0
    max_download_mb: Annotated[float, Field(gt=0, le=1_000_000)] = Field(
        default=MAX_DOWNLOAD_MB,
        description="the largest raster file a pull downloads (MB, 10^6 bytes)",
    )

    @model_validator(mode="after")
    def _one_model(self) -> HeightSource:
        given = {k: self.raster(k) is not None for k in RASTERS}
        if any(getattr(self, f"{k}_url") for k in RASTERS) and self.protocol is None:
            raise ValueError('a *_url raster needs protocol = "http" (a file) or "wcs"')
        self._check_wcs()
        for k in RASTERS:
            url = getattr(self, f"{k}_url")
            if url is None:
                continue
            if getattr(self, k) is not None:
                raise ValueError(f"give {k} or {k}_url, not both")
            check_remote(self.remote(k), k, None, raster=True)
        if self.protocol is not None and not any(getattr(self, f"{k}_url") for k in RASTERS):
            raise ValueError("protocol goes with ndsm_url, dsm_url or dtm_url")
        if given["ndsm"] == (given["dsm"] or given["dtm"]):
            raise ValueError("give either ndsm, or dsm and dtm (a path or a *_url each)")
        if given["dsm"] != given["dtm"]:
            raise ValueError("dsm and dtm go together")
        return self

    def _check_wcs(self) -> None:
        """The keys of protocol wcs: a coverage id per raster url, a bbox, axis labels."""
        wcs_keys = [f"{k}_coverage" for k in RASTERS if getattr(self, f"{k}_coverage")]
        if self.protocol != "wcs":
            given = wcs_keys + (["bbox"] if self.bbox is not None else [])
            if given:
                raise ValueError(f'{", ".join(given)} go with protocol = "wcs"')
            return
        for k in RASTERS:
            url, coverage = getattr(self, f"{k}_url"), getattr(self, f"{k}_coverage")
            if url is not None and not coverage:
                raise ValueError(f"{k}_url is a WCS: give {k}_coverage (its coverageId)")
            if coverage is not None and url is None:
                raise ValueError(f"{k}_coverage goes with {k}_url (the WCS address)")
            if coverage is not None and not _NCNAME.match(coverage):
                raise ValueError(f"{k}_coverage {coverage!r} is not a coverageId (an NCName)")
        if self.bbox is None:
            raise ValueError(
                "protocol wcs needs bbox = [min x, min y, max x, max y] in the pipeline's "
                "CRS: the area whose heights are fetched"
            )
        import math

        x0, y0, x1, y1 = self.bbox
        if not all(math.isfinite(v) for v in self.bbox) or not (x0 < x1 and y0 < y1):
            raise ValueError(
                f"bbox {list(self.bbox)} is not min x, min y, max x, max y (in the "
                "pipeline's CRS, min below max)"
            )
        if not all(_NCNAME.match(a) for a in self.wcs_axes) or len(set(self.wcs_axes)) != 2:
            raise ValueError(f"wcs_axes {list(self.wcs_axes)}: two different axis labels")

    def raster(self, which: str) -> Path | str | None:
        """The local path of raster ``which`` (ndsm, dsm, dtm), else its url, else None."""
        return getattr(self, which) or getattr(self, f"{which}_url")

    def remote(self, which: str, crs: str | None = None) -> RemoteFields:
        """Raster ``which`` as a remote source (:mod:`mfa.pull`): protocol http, or wcs
        with the coverage id as ``collection`` and the subset (bbox, axes, the pipeline's
        ``crs``) as ``filters`` (so they name its snapshot)."""
        wcs = {}
        if self.protocol == "wcs":
            assert self.bbox is not None
            wcs = {
                "collection": getattr(self, f"{which}_coverage"),
                "filters": {
                    "bbox": ",".join(number_text(v) for v in self.bbox),
                    "axes": ",".join(self.wcs_axes),
                    **({"crs": crs} if crs is not None else {}),
                },
            }
        return RemoteFields(
            url=getattr(self, f"{which}_url"),
            protocol=self.protocol,
            retries=self.retries,
            timeout_s=self.timeout_s,
            max_download_mb=self.max_download_mb,
            **wcs,
        )


def number_text(v: float) -> str:
    """A coordinate as the shortest text that reads back as the same float (85000.25, 84850)."""
    text = repr(float(v))
    return text.removesuffix(".0")


#: A coverageId or axis label: an XML NCName (WCS 2.0, OGC 09-110r4), ASCII here.
_NCNAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")

#: The rasters of [sources.heights].
RASTERS = ("ndsm", "dsm", "dtm")


class DistrictSource(RemoteFields, _Strict):
    """District polygons from any OGR-readable file (or pulled: ``url`` and ``protocol``)."""

    path: Path | None = None
    layer: str | None = None
    id_column: str
    name_column: str | None = None
    population_column: str | None = Field(
        default=None, description="inhabitants per district, for t per capita"
    )

    @model_validator(mode="after")
    def _local_or_remote(self) -> DistrictSource:
        check_remote(self, "path", self.path)
        return self


class Sources(_Strict):
    # `register` would shadow BaseModel.register, so the attribute has a trailing underscore
    register_: RegisterSource | None = Field(default=None, alias="register")
    units: UnitSource | None = None
    footprints: FootprintSource | None = None
    districts: DistrictSource | None = None
    heights: HeightSource | None = None

    @model_validator(mode="after")
    def _some_buildings(self) -> Sources:
        if self.register_ is None and self.footprints is None:
            raise ValueError("add a [sources.register] or a [sources.footprints] table")
        bag = self.register_ is not None and self.register_.schema_ == "bag"
        if self.heights is not None and self.footprints is None and not bag:
            raise ValueError("[sources.heights] needs footprints: add [sources.footprints]")
        if bag and self.units is None:
            raise ValueError(
                "a BAG register needs [sources.units]: the verblijfsobjecten that give use "
                "and floor area (PDOK collection 'verblijfsobject')"
            )
        if bag and self.footprints is not None:
            raise ValueError(
                "a BAG register carries its footprints (the pand outlines): remove "
                "[sources.footprints]"
            )
        if self.units is not None and not bag:
            raise ValueError('[sources.units] goes with a BAG register (schema = "bag")')
        return self


#: The oldest state of OpenStreetMap the Overpass API can query with ``[date:…]`` (its
#: "attic" data begins at the ODbL licence change; an earlier date gets this state):
#: Overpass QL reference, wiki.openstreetmap.org/wiki/Overpass_API/Overpass_QL#Date.
ATTIC_START = "2012-09-12T06:55:00Z"


def attic_date(as_of: str, today: str) -> str:
    """The Overpass ``[date:…]`` of a pinned day ``as_of`` (``YYYY-MM-DD``): its first
    instant, ``YYYY-MM-DDT00:00:00Z`` (what OSM held when that day began, UTC). A text that
    is not a day, a day after ``today`` or before Overpass's history (:data:`ATTIC_START`)
    is a one-line :class:`~mfa.errors.ConfigError`."""
    from datetime import date

    try:
        day = date.fromisoformat(as_of)
        if len(as_of) != 10:
            raise ValueError(as_of)
    except ValueError:
        raise ConfigError(
            f"--as-of {as_of!r}: not a day; give YYYY-MM-DD, e.g. 2026-12-01"
        ) from None
    stamp = f"{day.isoformat()}T00:00:00Z"
    if stamp < ATTIC_START:
        raise ConfigError(
            f"--as-of {as_of}: the Overpass API keeps OpenStreetMap's history from "
            f"{ATTIC_START[:10]} on (sources.footprints is an online query); pin "
            f"{ATTIC_START[:8]}13 or later"
        )
    if as_of > today:
        raise ConfigError(
            f"--as-of {as_of}: after today ({today}, UTC); OpenStreetMap has no state of that "
            "day yet: pin today or an earlier day"
        )
    return stamp


def pinned_query_date(source: FootprintSource, as_of: str) -> str:
    """The ``[date:…]`` with which a run pinned to ``as_of`` queries an online OSM source
    (:func:`attic_date`, against today in UTC); a source that pins its own snapshot
    (``snapshot``) is a one-line :class:`~mfa.errors.ConfigError`: two pins."""
    from datetime import UTC, datetime

    if source.snapshot is not None:
        raise ConfigError(
            f"--as-of {as_of} and sources.footprints.snapshot = {source.snapshot!r} both "
            "pin the OSM query; remove snapshot from the pipeline file or run without --as-of"
        )
    return attic_date(as_of, datetime.now(UTC).date().isoformat())

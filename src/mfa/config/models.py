"""The pipeline file's tables as pydantic models (see :mod:`mfa.config`)."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mfa.config.match import MatchSection
from mfa.config.sources import Sources, _Strict
from mfa.io.files import MAX_WHOLE_FILE_MB

NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]*$"


class Archetypes(_Strict):
    """Folder with the archetype rule tables (see config/archetypes/README.md)."""

    dir: Path
    profile: str | None = Field(
        default=None,
        description="regional profile: profile_<name>.toml in dir overrides defaults.toml; "
        "'auto': the profile whose [auto] countries hold the centre of the data (else none)",
    )


class Intensities(_Strict):
    """A long-format material-intensity table and which slice of it to use."""

    table: Path
    region: str | None = Field(
        default=None,
        description="RASMI region (e.g. OECD_EU15); may be left out only with [archetypes] "
        "profile = 'auto': then the region of the country the data lie in (regions.csv)",
    )
    statistic: Literal["p05", "p25", "p50", "p75", "p95"] = "p50"
    materials: list[str] | None = Field(
        default=None, description="materials to estimate; default: all in config/materials.toml"
    )
    vocabulary: Path | None = Field(
        default=None,
        description="material vocabulary; default: materials.toml beside the table's folder",
    )
    overrides: list[Path] = Field(
        default_factory=list,
        description="tables whose rows replace (same region, function, structure, material) "
        "or extend the main table, in order; e.g. a municipality's demolition audits",
    )

    @property
    def vocabulary_file(self) -> Path:
        """The material vocabulary: ``vocabulary``, else ``materials.toml`` beside the
        table's folder."""
        return self.vocabulary or self.table.parent.parent / "materials.toml"


class Uncertainty(_Strict):
    """Monte Carlo draws of the intensities (see mfa.stocks.uncertainty)."""

    draws: Annotated[int, Field(ge=10, le=100_000)] = 1000
    seed: Annotated[int, Field(ge=0)] = 42
    percentiles: list[Annotated[float, Field(gt=0, lt=100)]] = Field(
        default_factory=lambda: [5.0, 50.0, 95.0]
    )

    @field_validator("percentiles")
    @classmethod
    def _sorted(cls, v: list[float]) -> list[float]:
        if v != sorted(set(v)) or not v:
            raise ValueError("give increasing, distinct percentiles such as [5, 50, 95]")
        if any(round(x) != x for x in v):
            raise ValueError("percentiles must be whole numbers (they name columns: _p05)")
        return v


class Grid(_Strict):
    """A regular square grid for the grid layer and the stock rasters."""

    cell_size_m: Annotated[float, Field(gt=0, le=100_000)] = 100.0
    rasters: bool = Field(default=True, description="write stock_<material>.tif (t/ha)")
    max_raster_cells: Annotated[int, Field(gt=0)] = Field(
        default=50_000_000,
        description="largest stock raster (cells over the buildings' extent; 8 bytes each "
        "while written): a smaller cell size over a larger extent is an error, not 30 GiB",
    )


class Scenario(_Strict):
    """One labelled future: levers on lifetimes, demolition and new construction."""

    name: Annotated[str, Field(pattern=NAME_PATTERN)]
    lifetime_factor: Annotated[float, Field(gt=0, le=10)] = 1.0
    extra_demolition_rate: Annotated[float, Field(ge=0, lt=1)] = 0.0
    construction_m2_per_year: Annotated[float, Field(ge=0)] = 0.0
    construction_archetype: str = "RM-C"
    stock_growth_per_year: Annotated[float, Field(gt=-0.5, lt=0.5)] | None = Field(
        default=None,
        description="stock-driven: floor area grows by this share a year; construction "
        "is what it takes (each district x archetype keeps its own mix)",
    )

    @model_validator(mode="after")
    def _one_driver(self) -> Scenario:
        if self.stock_growth_per_year is not None and self.construction_m2_per_year > 0:
            raise ValueError("give construction_m2_per_year or stock_growth_per_year, not both")
        return self

    @field_validator("construction_archetype")
    @classmethod
    def _archetype(cls, v: str) -> str:
        f, _, s = v.partition("-")
        if f not in ("RS", "RM", "NR") or s not in ("C", "M", "S", "T"):
            raise ValueError("use an archetype id such as RM-C (function-structure)")
        return v


class Dynamics(_Strict):
    """The cohort stock model run on the register's age structure."""

    lifetimes: Path
    base_year: Annotated[int, Field(ge=1000, le=3000)]
    horizon: Annotated[int, Field(ge=1000, le=3100)]
    scenarios: list[Scenario] = Field(default_factory=lambda: [Scenario(name="baseline")])
    fallback_construction_year: Annotated[int, Field(ge=1000, le=3000)] | None = Field(
        default=None,
        description="the year given to every building when none has a known year "
        "(a stated guess; without it such a run stops with an error)",
    )

    @model_validator(mode="after")
    def _years(self) -> Dynamics:
        if self.horizon <= self.base_year:
            raise ValueError("horizon must be after base_year")
        if self.horizon - self.base_year > 200:
            raise ValueError("a horizon of more than 200 years is not meaningful here")
        names = [s.name for s in self.scenarios]
        if len(set(names)) != len(names) or not names:
            raise ValueError("scenario names must be unique (and at least one scenario given)")
        return self


class Output(_Strict):
    dir: Path | None = None
    keep_runs: Annotated[int, Field(ge=1, le=10_000)] = 10


class MapLayers(_Strict):
    """Roads and water drawn under the HTML maps (``mfa query``/``mfa match`` ``--map``)
    to orient a reader: any OGR file mfa reads (GeoPackage, GeoJSON, FlatGeobuf,
    Shapefile), in any CRS. They change no number of a run (:mod:`mfa.io.maplayers`)."""

    roads: Path | None = Field(default=None, description="road lines (LineString)")
    water: Path | None = Field(default=None, description="water areas (Polygon)")
    attribution: str = Field(
        default="", description="their source's attribution, printed under the maps"
    )


class Cache(_Strict):
    """Where downloads are kept as dated snapshots (see mfa.io.cache)."""

    dir: Path | None = Field(
        default=None, description="default: geodata/cache beside the pipeline file's folder"
    )


#: Below this many buildings the qgis step writes the GeoPackage's buildings layer itself:
#: a writer process costs ~0.6 CPU-s to start (its imports), the write ~5 µs a building,
#: so below ~100,000 buildings it would not save time (docs/design.md, "The GeoPackage").
GEOPACKAGE_PROCESS_MIN_BUILDINGS = 100_000


class Compute(_Strict):
    """How the per-building steps run on Dask."""

    scheduler: Annotated[
        str,
        Field(
            description="threads | processes | synchronous | local-cluster | tcp://host:port",
        ),
    ] = "threads"
    batch_rows: Annotated[
        int,
        Field(ge=1_000, le=10_000_000, description="records per batch (memory ∝ batch × workers)"),
    ] = 100_000
    workers: Annotated[
        int | None,
        Field(ge=1, le=4096, description="threads or local-cluster processes (default: cores)"),
    ] = None
    max_whole_file_mb: Annotated[
        float,
        Field(
            gt=0,
            le=1_000_000,
            description="largest input mfa reads whole (CSV, GeoPackage, GeoJSON, OSM "
            "extract, config tables; a GeoParquet register and a footprint file without a "
            "register are read in batches), MB",
        ),
    ] = MAX_WHOLE_FILE_MB
    geopackage_process_min_buildings: Annotated[
        int,
        Field(
            ge=0,
            description="buildings from which the GeoPackage's buildings layer is written "
            "by a separate process beside the districts and flows steps (0: always; never "
            "with one worker or the synchronous scheduler)",
        ),
    ] = GEOPACKAGE_PROCESS_MIN_BUILDINGS

    @field_validator("scheduler")
    @classmethod
    def _known_scheduler(cls, v: str) -> str:
        if v in {"threads", "processes", "synchronous", "local-cluster"}:
            return v
        if v.startswith(("tcp://", "tls://", "inproc://")):
            return v
        raise ValueError(
            "use threads, processes, synchronous, local-cluster or the address of a Dask "
            "scheduler such as tcp://127.0.0.1:8786"
        )


#: The shortest interval between two scheduled runs of a pipeline (minutes).
MIN_SCHEDULE_MINUTES = 15


class Schedule(_Strict):
    cron: str
    timezone: str = "UTC"

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, v: str) -> str:
        from datetime import datetime

        import cronsim

        if len(v.split()) != 5:
            raise ValueError(
                f"{v!r} has {len(v.split())} fields; a schedule has 5 (minute hour day month "
                "weekday), e.g. '0 2 * * *'"
            )
        try:
            times = cronsim.CronSim(v, datetime(2000, 1, 1))
            fires = [next(times) for _ in range(2 * 24 * 60 // MIN_SCHEDULE_MINUTES + 2)]
        except (cronsim.CronSimError, StopIteration) as exc:
            raise ValueError(f"not a valid cron expression ({exc}); e.g. '0 2 * * *'") from exc
        gap = min(b - a for a, b in itertools.pairwise(fires))
        if gap.total_seconds() < MIN_SCHEDULE_MINUTES * 60:
            raise ValueError(
                f"{v!r} starts a run every {gap.total_seconds() / 60:g} min; runs may start at "
                f"most every {MIN_SCHEDULE_MINUTES} min (a run takes minutes), e.g. '0 2 * * *'"
            )
        return v

    @field_validator("timezone")
    @classmethod
    def _valid_tz(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError("use an IANA time zone name such as Europe/Copenhagen") from exc
        return v


class Pipeline(_Strict):
    """A validated pipeline file. Paths are absolute (resolved against the file's folder)."""

    name: Annotated[str, Field(pattern=NAME_PATTERN)]
    description: str = ""
    crs: str
    sources: Sources
    archetypes: Archetypes
    intensities: Intensities
    uncertainty: Uncertainty = Uncertainty()
    grid: Grid | None = None
    dynamics: Dynamics | None = None
    output: Output = Output()
    cache: Cache = Cache()
    compute: Compute = Compute()
    schedule: Schedule | None = None
    match: MatchSection | None = None
    map: MapLayers | None = None
    source_file: Path | None = Field(default=None, exclude=True)

    @model_validator(mode="after")
    def _region_or_auto(self) -> Pipeline:
        if self.intensities.region is None and self.archetypes.profile != "auto":
            raise ValueError(
                '[intensities] region is missing: set it (e.g. region = "OECD_EU15"), or '
                'set [archetypes] profile = "auto" to take the region of the data\'s country'
            )
        return self

    @model_validator(mode="after")
    def _match_needs_flows(self) -> Pipeline:
        if self.match is not None:
            known = [s.name for s in self.dynamics.scenarios] if self.dynamics else []
            if self.match.scenario not in known:
                raise ValueError(
                    f"[match] scenario {self.match.scenario!r} is not a scenario of [dynamics] "
                    f"({known or 'none: add [dynamics], matching needs its outflows'})"
                )
        return self

    @field_validator("crs")
    @classmethod
    def _projected(cls, v: str) -> str:
        from pyproj import CRS
        from pyproj.exceptions import CRSError

        try:
            crs = CRS.from_user_input(v)
        except CRSError as exc:
            raise ValueError(f"unknown CRS {v!r}; use an EPSG code such as EPSG:25832") from exc
        from mfa.crs import check_area_crs

        del crs
        check_area_crs(v)  # geographic, or distorting areas (Web Mercator): refused
        return v

    def output_root(self, override: Path | None = None) -> Path:
        """The output root: the CLI override, else ``[output] dir``, else ``./outputs``."""
        if override is not None:
            return Path(override).resolve()
        if self.output.dir is not None:
            return self.output.dir
        return Path("outputs").resolve()

    def cache_root(self) -> Path:
        """The download cache: ``[cache] dir``, else ``geodata/cache`` one folder above the
        pipeline file (the repository's, for files in ``pipelines/``)."""
        if self.cache.dir is not None:
            return self.cache.dir
        base = self.source_file.parent.parent if self.source_file else Path.cwd()
        return base / "geodata" / "cache"

    def input_files(self) -> list[InputFile]:
        """Every local file a run of this pipeline reads, with its role: the one list the
        run key (``--if-changed``), the manifest's ``inputs`` and ``config_files`` and the
        config digest are made from. Files that do not exist are left out (the readers
        name them)."""
        src = self.sources
        data: list[tuple[str, Path | None]] = [
            ("register", src.register_.path if src.register_ else None),
            ("units", src.units.path if src.units else None),
            ("footprints", src.footprints.osm_file if src.footprints else None),
            ("footprints", src.footprints.file if src.footprints else None),
            ("districts", src.districts.path if src.districts else None),
        ]
        if src.heights is not None:
            data += [("ndsm", src.heights.ndsm), ("dsm", src.heights.dsm), ("dtm", src.heights.dtm)]
        if self.map is not None:  # drawn on the maps only; recorded with their sha256
            data += [("map_roads", self.map.roads), ("map_water", self.map.water)]
        config: list[tuple[str, Path | None]] = [
            ("pipeline", self.source_file),
            *(("archetype_rules", f) for f in sorted(self.archetypes.dir.glob("*"))),
            ("intensities", self.intensities.table),
            # the tables that choose the region when the pipeline sets none ("auto"),
            # the borders that say where the data lie (the profile, the location) and the
            # statistics the report compares the floor areas with
            *(
                (role, self.intensities.table.parent / name)
                for role, name, needed in (
                    ("regions", "regions.csv", self.intensities.region is None),
                    ("country_borders", "countries_ne50m.parquet", True),  # run.json location
                    ("floor_area_statistics", "floor_area_statistics.csv", True),
                )
                if needed
            ),
            *(("intensity_override", f) for f in self.intensities.overrides),
            ("materials", self.intensities.vocabulary_file),
            ("lifetimes", self.dynamics.lifetimes if self.dynamics else None),
        ]
        return [
            InputFile(role, path, kind)
            for kind, files in (("data", data), ("config", config))
            for role, path in files
            if path is not None and path.is_file()
        ]


class InputFile(BaseModel):
    """A local file a run reads (see :meth:`Pipeline.input_files`)."""

    model_config = ConfigDict(frozen=True)

    role: str
    path: Path
    kind: Literal["data", "config"]

    def __init__(self, role: str, path: Path, kind: str) -> None:
        super().__init__(role=role, path=path, kind=kind)

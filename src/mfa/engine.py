"""The streaming stock engine: millions of register footprints with memory flat in N.

The register GeoParquet is read one row group at a time; each row group is a task that
runs :func:`estimate_batch` (pure: Arrow in, Arrow out, plus per-district partial sums) on
a pool of workers: local threads, or a Dask ``distributed`` cluster (a local one or the
address of an existing scheduler). Finished batches are written in input order as row
groups of ``buildings.parquet`` while later ones compute, with a bounded number in flight,
so peak memory depends on the row-group size and the worker count, not on N. District sums
are added up in batch order, so results are identical for any number of workers.

The geometry column is carried through untouched (WKB bytes); areas, representative points
and bounding boxes come from :func:`mfa.wkb.polygon_measures` without creating geometry
objects. The job is the one in ``benchmarks/SPEC.md``.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import shapely

from mfa.buildings.districts import PointLocator
from mfa.buildings.register import BBR
from mfa.errors import InputDataError, InputNotFoundError
from mfa.io.files import fsync_dir
from mfa.schema import FUNCTIONS, STRUCTURES
from mfa.wkb import polygon_measures

__all__ = ["EngineTables", "estimate_batch", "estimate_file", "estimate_pipeline"]

#: BBR columns the engine reads (Datafordeler names, from :class:`mfa.buildings.register.BBR`).
ID, STATUS, USE, WALL, GFA, FLOORS = BBR.ID, BBR.STATUS, BBR.USE, BBR.WALL, BBR.GFA, BBR.FLOORS
_CODES = (STATUS, USE, WALL)
#: Parquet writer settings: dictionaries only where values repeat, statistics only where a
#: reader filters (the bbox covering columns, district and archetype); the rest is wasted
#: encoding work on millions of distinct floats and WKB blobs.
_WRITE_OPTIONS: dict[str, Any] = {
    "use_dictionary": ["district_id", "archetype_id"],
    "write_statistics": [
        "district_id",
        "archetype_id",
        *(f"bbox.{k}" for k in ("xmin", "ymin", "xmax", "ymax")),
    ],
    "compression": "snappy",
}


@dataclass(frozen=True)
class EngineTables:
    """Lookup tables of the engine, as arrays indexed by archetype position.

    Attributes
    ----------
    use_function
        BBR use code → function (RS/RM/NR); excluded and unknown codes are absent.
    wall_structure
        BBR wall code → structure (C/M/S/T).
    floors_default, structure_default
        Per function: floors and structure where the register has none.
    archetypes
        Archetype ids ``<function>-<structure>``, the rows of ``kg_m2``.
    materials
        Material ids, the columns of ``kg_m2``.
    kg_m2
        Intensities (kg/m² gross floor area), archetypes × materials.
    existing_status
        Status codes of standing buildings (BBR ``6``).
    """

    use_function: dict[str, str]
    wall_structure: dict[str, str]
    floors_default: dict[str, float]
    structure_default: dict[str, str]
    archetypes: tuple[str, ...]
    materials: tuple[str, ...]
    kg_m2: np.ndarray
    existing_status: tuple[str, ...] = ("6",)

    @classmethod
    def load(
        cls,
        archetypes_dir: Path,
        vocabulary: Path,
        intensity_table: Path,
        region: str,
        statistic: str = "p50",
        overrides: list[Path] | None = None,
        materials: list[str] | None = None,
        existing_status: tuple[str, ...] = ("6",),
    ) -> EngineTables:
        """Tables from archetype rules, a material vocabulary and an intensity table
        (with overrides; ``materials`` keeps a subset of the vocabulary)."""
        from mfa.io.tables import load_archetype_rules, load_intensity_table, load_materials
        from mfa.stocks.intensity import intensity_matrix

        rules = load_archetype_rules(archetypes_dir)
        mats = load_materials(vocabulary)
        if materials:
            mats = [m for m in mats if m in materials]
        table = load_intensity_table(intensity_table, mats, overrides)
        archetypes = tuple(f"{f}-{s}" for f in FUNCTIONS for s in STRUCTURES)
        matrix = intensity_matrix(table, region, statistic, mats, archetypes)
        return cls(
            use_function={str(k): str(v) for k, v in rules.bbr_use_function.items()},
            wall_structure={str(k): str(v) for k, v in rules.bbr_wall_structure.items()},
            floors_default=dict(rules.floors_by_function),
            structure_default=dict(rules.structure_by_function),
            archetypes=tuple(matrix.index),
            materials=tuple(mats),
            kg_m2=matrix.to_numpy(dtype=float),
            existing_status=tuple(existing_status),
        )

    @classmethod
    def from_config(
        cls,
        config_dir: str | Path = "config",
        region: str = "OECD_EU15",
        statistic: str = "p50",
        intensity_table: str | Path | None = None,
    ) -> EngineTables:
        """Tables from mfa's config folder (archetype rules, materials, RASMI intensities)."""
        cfg = Path(config_dir)
        return cls.load(
            cfg / "archetypes",
            cfg / "materials.toml",
            Path(intensity_table or cfg / "intensities" / "rasmi_2024.csv"),
            region,
            statistic,
        )

    @property
    def output_columns(self) -> list[str]:
        """Numeric columns summed per district: count, floor area, materials, total."""
        return ["n_buildings", "gfa_m2", *(f"{m}_t" for m in self.materials), "mass_t"]


def _clean_codes(values: list[Any]) -> list[str | None]:
    """Codes as clean strings: '6', '120' (also from 120.0 or ' 120 ')."""
    out: list[str | None] = []
    for v in values:
        if v is None:
            out.append(None)
            continue
        s = str(v).strip()
        out.append(s[:-2] if s.endswith(".0") else s)
    return out


def _code_lookup(arr: pa.Array, mapping: dict[str, int]) -> np.ndarray:
    """Map a code column through ``mapping`` (code → int); unknown or null codes give -1.

    Works on the dictionary (the few distinct codes), then on integer indices.
    """
    if not pa.types.is_dictionary(arr.type):
        arr = pc.dictionary_encode(arr)
    keys = _clean_codes(arr.dictionary.to_pylist())
    table = np.array([mapping.get(k, -1) if k is not None else -1 for k in keys] + [-1])
    idx = arr.indices.fill_null(len(keys)).to_numpy(zero_copy_only=False)
    return table[idx]


def _floats(arr: pa.Array) -> np.ndarray:
    """A numeric column as float64 with NaN for nulls (non-numbers raise)."""
    if not (pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type)):
        raise TypeError(f"expected numbers, got {arr.type}")
    return np.asarray(arr.to_numpy(zero_copy_only=False), dtype=float)


def estimate_batch(
    batch: pa.RecordBatch | pa.Table,
    tables: EngineTables,
    locator: PointLocator,
    district_ids: pa.Array,
) -> tuple[pa.Table, np.ndarray]:
    """Stocks of one batch of register records with footprints (pure).

    Parameters
    ----------
    batch
        Register columns (:data:`ID`, :data:`STATUS`, :data:`USE`, :data:`WALL`, :data:`GFA`,
        :data:`FLOORS`) and a WKB ``geometry`` column in a metric CRS.
    tables
        Lookups and intensities (kg/m²).
    locator, district_ids
        District polygons and their ids (same order).

    Returns
    -------
    buildings
        One row per standing building of a known use: ``building_id``, ``district_id``,
        ``archetype_id``, ``gfa_m2`` (m²), ``<material>_t`` and ``mass_t`` (t), ``bbox``
        and the untouched ``geometry``.
    sums
        Array (districts + 1) × ``tables.output_columns``: per-district sums, the last row
        for buildings outside every district.
    """
    if isinstance(batch, pa.Table):
        batch = batch.combine_chunks().to_batches()[0] if batch.num_rows else batch
    functions = {f: i for i, f in enumerate(FUNCTIONS)}
    structures = {s: i for i, s in enumerate(STRUCTURES)}
    status_ok = _code_lookup(batch.column(STATUS), dict.fromkeys(tables.existing_status, 1)) == 1
    func = _code_lookup(
        batch.column(USE), {k: functions[v] for k, v in tables.use_function.items()}
    )
    keep = status_ok & (func >= 0)
    struct = _code_lookup(
        batch.column(WALL), {k: structures[v] for k, v in tables.wall_structure.items()}
    )
    default_struct = np.array([structures[tables.structure_default[f]] for f in FUNCTIONS])
    default_floors = np.array([tables.floors_default[f] for f in FUNCTIONS])
    rows = np.flatnonzero(keep)
    func, struct = func[rows], struct[rows]
    struct = np.where(struct >= 0, struct, default_struct[func])
    arch_names = [f"{f}-{s}" for f in FUNCTIONS for s in STRUCTURES]
    arch_pos = {a: i for i, a in enumerate(tables.archetypes)}
    arch_table = np.array([arch_pos.get(a, -1) for a in arch_names])
    arch = arch_table[func * len(STRUCTURES) + struct]
    if (arch < 0).any():
        missing = arch_names[int((func * len(STRUCTURES) + struct)[arch < 0][0])]
        raise InputDataError(f"archetype {missing} has no intensity row; add it to the table")
    mask = pa.array(keep)
    geometry = batch.column("geometry").filter(mask)
    m = polygon_measures(geometry)
    floors = _floats(batch.column(FLOORS))[rows]
    floors = np.where(floors > 0, floors, default_floors[func])
    gfa_reg = _floats(batch.column(GFA))[rows]
    gfa = np.where(gfa_reg > 0, gfa_reg, m.area * floors)
    # materials × buildings, each row contiguous (Arrow takes it without a copy); one
    # gather per material from its small intensity column (archetypes fit in cache)
    gfa_kt = gfa / 1000.0
    per_material = np.ascontiguousarray(tables.kg_m2.T)
    tonnes = np.empty((len(tables.materials), len(rows)))
    for j in range(len(tables.materials)):
        np.multiply(per_material[j][arch], gfa_kt, out=tonnes[j])
    mass = tonnes.sum(axis=0)
    district = locator.locate(m.x, m.y)
    n_d = len(district_ids)
    slot = np.where(district >= 0, district, n_d)
    # district sums: count and floor area per district × archetype, then × intensity
    cell = slot * len(tables.archetypes) + arch
    shape = (n_d + 1, len(tables.archetypes))
    size = shape[0] * shape[1]
    count = np.bincount(cell, minlength=size).reshape(shape)
    area = np.bincount(cell, gfa, minlength=size).reshape(shape)
    mat_sums = area @ tables.kg_m2 / 1000.0
    sums = np.column_stack([count.sum(axis=1), area.sum(axis=1), mat_sums, mat_sums.sum(axis=1)])
    arrays: dict[str, pa.Array] = {
        "building_id": batch.column(ID).filter(mask),
        "district_id": pa.DictionaryArray.from_arrays(
            pa.array(district.astype(np.int32), mask=district < 0), district_ids
        ),
        "archetype_id": pa.DictionaryArray.from_arrays(
            pa.array(arch.astype(np.int32)), pa.array(list(tables.archetypes))
        ),
        "gfa_m2": pa.array(gfa),
    }
    for j, mat in enumerate(tables.materials):
        arrays[f"{mat}_t"] = pa.array(tonnes[j])
    arrays["mass_t"] = pa.array(mass)
    arrays["bbox"] = pa.StructArray.from_arrays(
        [pa.array(m.xmin), pa.array(m.ymin), pa.array(m.xmax), pa.array(m.ymax)],
        names=["xmin", "ymin", "xmax", "ymax"],
    )
    arrays["geometry"] = geometry
    return pa.table(arrays), sums


def _geo_metadata(source: pq.ParquetFile, path: Path) -> dict[str, Any]:
    raw = (source.schema_arrow.metadata or {}).get(b"geo")
    if raw is None:
        raise InputDataError(
            f"{path}: not a GeoParquet file (no 'geo' metadata); write it with geopandas "
            "to_parquet or GDAL"
        )
    try:
        geo = json.loads(raw)
        col = geo["columns"][geo["primary_column"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise InputDataError(f"{path}: broken GeoParquet 'geo' metadata ({exc})") from exc
    if geo["primary_column"] != "geometry" or col.get("encoding", "WKB").upper() != "WKB":
        raise InputDataError(
            f"{path}: the engine reads a WKB column named 'geometry'; rewrite the file with "
            "geopandas to_parquet"
        )
    if col.get("crs") is None:
        raise InputDataError(
            f"{path}: the geometry column has no CRS (GeoParquet readers would assume "
            "lon/lat); set the projected CRS when writing the file"
        )
    return col


def _read_districts(path: Path, crs: Any) -> tuple[pd.DataFrame, np.ndarray]:
    from pyproj import CRS

    if not path.is_file():
        raise InputNotFoundError(f"{path}: districts file not found")
    d = gpd.read_parquet(path)
    if "district_id" not in d.columns:
        raise InputDataError(f"{path}: no 'district_id' column")
    if d["district_id"].duplicated().any():
        dup = d.loc[d["district_id"].duplicated(), "district_id"].iloc[0]
        raise InputDataError(f"{path}: district_id {dup!r} occurs twice; ids must be unique")
    if d.crs is None or not d.crs.equals(CRS.from_user_input(crs)):
        raise InputDataError(f"{path}: CRS {d.crs} differs from the buildings' CRS {crs}")
    return d, d.geometry.values


@contextmanager
def _pool(scheduler: str, workers: int) -> Iterator[Callable[..., Future]]:
    """``submit(fn, *args) -> future`` on local threads or a Dask distributed cluster."""
    if scheduler in ("threads", "synchronous"):
        with ThreadPoolExecutor(max_workers=1 if scheduler == "synchronous" else workers) as ex:
            yield ex.submit
        return
    from distributed import Client, LocalCluster

    if scheduler in ("processes", "local-cluster"):
        with (
            LocalCluster(
                n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
            ) as cluster,
            Client(cluster) as client,
        ):
            yield lambda fn, *a: client.submit(fn, *a, pure=False)
        return
    with Client(scheduler, timeout="30s") as client:
        yield lambda fn, *a: client.submit(fn, *a, pure=False)


def _task(
    path: str,
    row_group: int,
    tables: EngineTables,
    district_geoms: np.ndarray,
    district_ids: pa.Array,
) -> tuple[pa.Table, np.ndarray, tuple[float, float]]:
    """Read one row group and estimate it (runs on a worker); also the seconds each took."""
    t0 = time.perf_counter()
    f = pq.ParquetFile(path, read_dictionary=list(_CODES))
    # one thread per task: the tasks themselves are the parallelism
    batch = f.read_row_group(
        row_group, columns=[ID, *_CODES, GFA, FLOORS, "geometry"], use_threads=False
    )
    t1 = time.perf_counter()
    table, sums = estimate_batch(batch, tables, _locator(district_geoms), district_ids)
    return table, sums, (t1 - t0, time.perf_counter() - t1)


_LOCATOR: dict[str, PointLocator] = {}


def _locator(geoms: np.ndarray) -> PointLocator:
    """One locator per set of district polygons per process, reused by every task.

    Keyed by the polygons' content (their WKB digest): on a Dask cluster each task gets its
    own unpickled copy of the array, and a later run with other districts must never get
    this run's locator."""
    key = hashlib.sha256(b"".join(shapely.to_wkb(geoms))).hexdigest()
    if key not in _LOCATOR:
        _LOCATOR.clear()
        _LOCATOR[key] = PointLocator(geoms)
    return _LOCATOR[key]


def estimate_file(
    register: str | Path,
    districts: str | Path | gpd.GeoDataFrame,
    output: str | Path,
    config_dir: str | Path = "config",
    region: str = "OECD_EU15",
    scheduler: str = "threads",
    workers: int | None = None,
    tables: EngineTables | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Estimate the stock of every building of a register GeoParquet, streaming.

    Writes ``output/buildings.parquet`` (one row per building, see :func:`estimate_batch`)
    and ``output/districts.parquet`` (per district: buildings, m², t), each first under a
    temporary name and renamed once complete, so a failed run leaves earlier files intact.

    Parameters
    ----------
    register, districts
        GeoParquet files: footprints with BBR columns; polygons with ``district_id``.
    scheduler
        ``threads`` (default), ``synchronous``, ``processes``/``local-cluster`` (a Dask
        LocalCluster of ``workers`` processes) or the address of a Dask scheduler.
    workers
        Worker count (default: the machine's cores).
    progress
        Called with (rows done, rows total) after each row group.

    Returns
    -------
    dict
        Row counts, seconds, throughput and totals (t).
    """
    t0 = time.perf_counter()
    register, output = Path(register), Path(output)
    if not register.is_file():
        raise InputNotFoundError(f"{register}: register file not found")
    tables = tables or EngineTables.from_config(config_dir, region)
    workers = workers or os.cpu_count() or 1
    try:
        source = pq.ParquetFile(register)
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputDataError(f"{register}: not a readable Parquet file ({exc})") from exc
    geo_col = _geo_metadata(source, register)
    missing = [
        c for c in (ID, *_CODES, GFA, FLOORS, "geometry") if c not in source.schema_arrow.names
    ]
    if missing:
        raise InputDataError(f"{register}: missing column(s) {', '.join(missing)}")
    from pyproj import CRS

    crs = CRS.from_user_input(json.dumps(geo_col["crs"]))
    if isinstance(districts, gpd.GeoDataFrame):
        if districts.crs is None or not districts.crs.equals(crs):
            raise InputDataError(
                f"{register}: CRS {crs.to_string()} differs from the districts' {districts.crs}; "
                "reproject the footprints to the pipeline CRS"
            )
        d, d_geoms = districts, districts.geometry.values
    else:
        d, d_geoms = _read_districts(Path(districts), crs)
    d_ids = pa.array(d["district_id"].astype(str).tolist())
    n_groups = source.num_row_groups
    total_rows = source.metadata.num_rows
    columns = tables.output_columns
    sums = np.zeros((len(d) + 1, len(columns)))
    output.mkdir(parents=True, exist_ok=True)
    tmp_b = output / f".buildings.parquet.{os.getpid()}.tmp"
    tmp_d = output / f".districts.parquet.{os.getpid()}.tmp"
    geo = {
        "version": "1.1.0",
        "primary_column": "geometry",
        "columns": {
            "geometry": {
                "encoding": "WKB",
                "geometry_types": geo_col.get("geometry_types", []),
                "crs": geo_col["crs"],
                "covering": {"bbox": {k: ["bbox", k] for k in ("xmin", "ymin", "xmax", "ymax")}},
            }
        },
    }
    writer: pq.ParquetWriter | None = None
    rows_done = written = 0
    # worker-side read/compute seconds (summed over tasks), client-side wait/write seconds
    profile = dict.fromkeys(("read_s", "compute_s", "wait_s", "write_s"), 0.0)
    try:
        with _pool(scheduler, workers) as submit:
            pending: deque[tuple[int, Any]] = deque()
            nxt = 0
            window = 2 * workers
            while nxt < n_groups or pending:
                while nxt < n_groups and len(pending) < window:
                    fut = submit(_task, str(register), nxt, tables, d_geoms, d_ids)
                    pending.append((nxt, fut))
                    nxt += 1
                rg, fut = pending.popleft()
                tw = time.perf_counter()
                try:
                    table, part, (read_s, compute_s) = fut.result()
                except (TypeError, pa.ArrowInvalid) as exc:
                    raise InputDataError(
                        f"{register} row group {rg}: unreadable values ({exc}); numeric "
                        f"columns {GFA} and {FLOORS} must hold numbers"
                    ) from exc
                profile["wait_s"] += time.perf_counter() - tw
                profile["read_s"] += read_s
                profile["compute_s"] += compute_s
                tw = time.perf_counter()
                if writer is None:
                    schema = table.schema.with_metadata({b"geo": json.dumps(geo).encode()})
                    writer = pq.ParquetWriter(tmp_b, schema, **_WRITE_OPTIONS)
                writer.write_table(table)
                profile["write_s"] += time.perf_counter() - tw
                sums += part
                written += table.num_rows
                rows_done += source.metadata.row_group(rg).num_rows
                if progress is not None:
                    progress(rows_done, total_rows)
        if writer is None:  # no row groups: an empty layer with the right columns
            empty, _ = estimate_batch(_empty_batch(source), tables, _locator(d_geoms), d_ids)
            writer = pq.ParquetWriter(
                tmp_b,
                empty.schema.with_metadata({b"geo": json.dumps(geo).encode()}),
                **_WRITE_OPTIONS,
            )
            writer.write_table(empty)
        writer.close()
        writer = None
        _write_districts(d, sums[:-1], columns, tmp_d)
        for tmp in (tmp_b, tmp_d):
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp_b, output / "buildings.parquet")
        os.replace(tmp_d, output / "districts.parquet")
        fsync_dir(output)
    finally:
        if writer is not None:
            writer.close()
        for tmp in (tmp_b, tmp_d):
            tmp.unlink(missing_ok=True)
    seconds = time.perf_counter() - t0
    totals = dict(zip(columns, sums.sum(axis=0), strict=True))
    return {
        "records_read": int(total_rows),
        "buildings": int(written),
        "outside_districts": int(sums[-1, 0]),
        "districts": len(d),
        "row_groups": n_groups,
        "scheduler": scheduler,
        "workers": workers,
        "seconds": round(seconds, 3),
        "buildings_per_s": round(total_rows / seconds) if seconds > 0 else None,
        "profile_s": {k: round(v, 3) for k, v in profile.items()},
        "totals_t": {k: float(v) for k, v in totals.items() if k.endswith("_t")},
        "gfa_m2": float(totals["gfa_m2"]),
    }


def _empty_batch(source: pq.ParquetFile) -> pa.RecordBatch:
    schema = source.schema_arrow
    cols = [ID, *_CODES, GFA, FLOORS, "geometry"]
    return pa.RecordBatch.from_arrays(
        [pa.array([], type=schema.field(c).type) for c in cols], names=cols
    )


def _write_districts(d: pd.DataFrame, sums: np.ndarray, columns: list[str], path: Path) -> None:
    out = pd.DataFrame(sums, columns=columns)
    out["n_buildings"] = out["n_buildings"].round().astype("int64")
    frame = gpd.GeoDataFrame(
        pd.concat([d[["district_id"]].reset_index(drop=True).astype(str), out], axis=1),
        geometry=d.geometry.values,
        crs=d.crs,
    )
    frame.to_parquet(path, write_covering_bbox=True)


def estimate_pipeline(
    pipeline_file: str | Path,
    output: str | Path | None = None,
    scheduler: str | None = None,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Run the streaming engine on a pipeline file's register (with footprint polygons),
    districts, archetype rules and intensities, on the pipeline's ``[compute]`` scheduler.

    Output folder: ``output`` or ``<output.dir>/<name>/stream``. Returns it and the summary
    (also written there as ``summary.json``).
    """
    from mfa.config import load_pipeline
    from mfa.io.districts import read_districts

    p = load_pipeline(pipeline_file)
    if p.sources.register_ is None or p.sources.districts is None:
        raise InputDataError(
            f"{pipeline_file}: the streaming engine needs [sources.register] (a GeoParquet "
            "with footprint polygons) and [sources.districts]"
        )
    tables = EngineTables.load(
        p.archetypes.dir,
        p.intensities.vocabulary or p.intensities.table.parent.parent / "materials.toml",
        p.intensities.table,
        p.intensities.region,
        p.intensities.statistic,
        overrides=p.intensities.overrides,
        materials=p.intensities.materials,
        existing_status=tuple(p.sources.register_.existing_status),
    )
    districts = read_districts(p.sources.districts, p.crs)
    out = Path(output) if output is not None else p.output_root(None) / p.name / "stream"
    summary = estimate_file(
        p.sources.register_.path,
        districts[["district_id", "district_name", "geometry"]],
        out,
        scheduler=scheduler or p.compute.scheduler,
        workers=workers or p.compute.workers,
        tables=tables,
        progress=progress,
    )
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return out, summary

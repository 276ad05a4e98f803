"""Incremental per-district recompute: what the previous published run can lend this one.

Composition (reads the previous run's files; the pure parts are in
:mod:`mfa.buildings.parts`). A run records in ``run.json`` (``incremental``) the digest of
every part's input records, the *run-wide key* (everything else a building's result rows
depend on) and the digest of the cohort statistics, and in ``incremental.parquet`` the
cohort counts per part. The next run (``--if-changed``) reuses a part's result rows —
buildings, left-out records and repairs — when its input digest, the run-wide key and the
cohort statistics are all unchanged; every other part is recomputed. Beyond the
buildings, :class:`Dirty` names the districts and grid cells the change touches: only
their Monte Carlo aggregates and flows are recomputed, the others' rows are reused.
"""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import geopandas as gpd
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import shapely

from mfa.config import Pipeline
from mfa.incremental import code_digest
from mfa.io.files import sha256_file
from mfa.stocks.grid import grid_index

__all__ = [
    "STATE",
    "Dirty",
    "PreviousRun",
    "dirty_groups",
    "previous_run",
    "reused_records",
    "run_wide_key",
]

#: Per-part cohort counts of a run (for the next run's run-wide cohort statistics).
STATE = "incremental.parquet"
#: The published buildings layer.
BUILDINGS = "buildings.parquet"

#: Pipeline keys that name files: their content counts, not their path.
_PATHS = (
    ("sources", "register", "path"),
    ("sources", "footprints", "osm_file"),
    ("sources", "footprints", "file"),
    ("sources", "footprints", "snapshot"),
    ("sources", "footprints", "overpass_url"),
    ("sources", "districts", "path"),
    ("sources", "heights", "ndsm"),
    ("sources", "heights", "dsm"),
    ("sources", "heights", "dtm"),
    ("archetypes", "dir"),
    ("intensities", "table"),
    ("intensities", "vocabulary"),
    ("intensities", "overrides"),
    ("dynamics", "lifetimes"),
)

#: Pipeline tables that do not change any building's result.
_NOT_RESULTS = ("name", "description", "output", "cache", "compute", "schedule")


def run_wide_key(p: Pipeline, run_year: int) -> str:
    """sha256 of everything but the building records that a building's result rows depend on.

    The validated pipeline without file paths and without the tables that do not change
    results (name, output, cache, compute, schedule), the content of the model tables, the
    district polygons and the height rasters, mfa's code, and the run year (plausibility
    limit of construction years). The records themselves count per part.
    """
    dump: dict[str, Any] = p.model_dump(mode="json")
    for key in _NOT_RESULTS:
        dump.pop(key, None)
    for keys in _PATHS:
        node: Any = dump
        for k in keys[:-1]:
            node = node.get(k) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(keys[-1], None)
    src = p.sources
    files: list[tuple[str, Path | None]] = [
        ("districts", src.districts.path if src.districts else None),
        *[
            (role, getattr(src.heights, role) if src.heights else None)
            for role in ("ndsm", "dsm", "dtm")
        ],
        ("intensities", p.intensities.table),
        *[(f"override{i}", o) for i, o in enumerate(p.intensities.overrides)],
        (
            "vocabulary",
            p.intensities.vocabulary or p.intensities.table.parent.parent / "materials.toml",
        ),
        ("lifetimes", p.dynamics.lifetimes if p.dynamics else None),
        *[(f"archetypes/{f.name}", f) for f in sorted(p.archetypes.dir.glob("*")) if f.is_file()],
    ]
    h = hashlib.sha256()
    h.update(code_digest().encode())
    h.update(json.dumps(dump, sort_keys=True).encode())
    h.update(str(run_year).encode())
    for role, f in files:
        h.update(role.encode())
        h.update(sha256_file(f).encode() if f is not None and f.is_file() else b"-")
    return h.hexdigest()


@dataclass
class PreviousRun:
    """The published run an incremental run may reuse parts of."""

    folder: Path
    run_id: str
    run_wide_key: str
    cohort_digest: str
    parts: dict[str, dict[str, Any]]
    counts: pd.DataFrame = field(repr=False)


def previous_run(pipeline_dir: Path) -> tuple[PreviousRun | None, str]:
    """The latest published run with incremental state, or None and the reason why not."""
    latest = Path(pipeline_dir) / "latest"
    manifest = latest / "run.json"
    if not manifest.is_file():
        return None, "no previous run"
    try:
        m = json.loads(manifest.read_text())
    except (OSError, json.JSONDecodeError):
        return None, "the previous run's run.json is unreadable"
    state = m.get("incremental") or {}
    if not state.get("parts") or not (latest / STATE).is_file():
        return None, "the previous run kept no per-district state"
    return (
        PreviousRun(
            folder=latest.resolve(),
            run_id=m.get("run_id", latest.resolve().name),
            run_wide_key=state.get("run_wide_key", ""),
            cohort_digest=state.get("cohort_digest", ""),
            parts=state["parts"],
            counts=pd.read_parquet(latest / STATE),
        ),
        "",
    )


def reused_records(
    prev: PreviousRun, ids: pd.Series, stages: tuple[str, ...] = ("geometry",)
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The previous run's left-out records and repairs of the records ``ids`` (of the
    reused parts): those left out at ``stages`` (``register``: normalising a register,
    ``geometry``: cleaning geometries), in the previous run's order. (Their building rows
    are copied by the stocks step.)
    """
    wanted = _id_array(ids)
    dropped = _read_strings(prev.folder / "dropped.csv", empty_is_missing=False)
    dropped = dropped.filter(
        pc.and_(
            pc.is_in(dropped["stage"], value_set=pa.array(list(stages), pa.string())),
            pc.is_in(dropped["record_id"], value_set=wanted),
        )
    )
    repairs = _read_strings(prev.folder / "repairs.csv", empty_is_missing=True)
    repairs = repairs.filter(pc.is_in(repairs["record_id"], value_set=wanted))
    return _strings(dropped), _strings(repairs)


def _read_strings(path: Path, empty_is_missing: bool) -> pa.Table:
    """A CSV mfa wrote, every column as text (Arrow's reader: several times pandas')."""
    with open(path, newline="", encoding="utf-8") as f:
        names = next(csv.reader(f), [])
    return pacsv.read_csv(
        path,
        convert_options=pacsv.ConvertOptions(
            column_types={n: pa.string() for n in names},
            strings_can_be_null=empty_is_missing,
            null_values=[""],
            quoted_strings_can_be_null=empty_is_missing,
        ),
    )


def _strings(table: pa.Table) -> pd.DataFrame:
    """An Arrow table of text as pandas ``string`` columns (as ``read_csv(dtype="string")``)."""
    return pd.DataFrame(
        {
            n: pd.array(table[n].to_numpy(zero_copy_only=False), dtype="string")
            for n in table.column_names
        }
    )


def _id_array(ids: pd.Series) -> pa.Array:
    """The distinct ids as an Arrow string array (Arrow-backed strings are not copied)."""
    return pc.unique(pa.array(ids.astype("string"), from_pandas=True).cast(pa.string()))


@dataclass(frozen=True)
class Dirty:
    """What an incremental run must recompute beyond the buildings: the districts and grid
    cells that hold a recomputed building now or held a replaced one in the previous run.

    Every other district, grid cell and district flow series has the same buildings with
    the same values as in the previous run, so its published rows can be reused.
    """

    previous: Path
    districts: frozenset[str]
    cells: frozenset[tuple[int, int]]

    def to_json(self) -> dict[str, Any]:
        return {
            "previous": str(self.previous),
            "districts": sorted(self.districts),
            "cells": sorted([int(x), int(y)] for x, y in self.cells),
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Dirty:
        return cls(
            Path(d["previous"]),
            frozenset(d["districts"]),
            frozenset((int(x), int(y)) for x, y in d["cells"]),
        )


def dirty_groups(
    previous: Path,
    recomputed: gpd.GeoDataFrame,
    replaced: gpd.GeoDataFrame,
    cell_size_m: float | None,
    unassigned: str,
) -> Dirty:
    """The districts and grid cells touched by the change (see :class:`Dirty`).

    ``recomputed`` are this run's recomputed buildings, ``replaced`` the previous run's
    buildings that were not reused (both with ``district_id`` and geometry).
    """
    districts: set[str] = set()
    cells: set[tuple[int, int]] = set()
    for frame in (recomputed, replaced):
        districts |= set(frame["district_id"].astype("string").fillna(unassigned).tolist())
        if cell_size_m is not None and len(frame):
            points = shapely.point_on_surface(frame.geometry.values)
            ix, iy = grid_index(shapely.get_x(points), shapely.get_y(points), cell_size_m)
            cells |= set(zip(ix.tolist(), iy.tolist(), strict=True))
    return Dirty(Path(previous), frozenset(districts), frozenset(cells))

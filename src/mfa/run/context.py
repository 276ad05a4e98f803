"""The run context: the work folder's files and names, the pipeline and model tables
of a run, and :func:`prepare`, which validates the pipeline file and makes the work
folder. Every step takes the work folder and finds what it needs here."""

from __future__ import annotations

import functools
import json
import logging
import os
import pickle
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mfa.config import Pipeline, load_pipeline
from mfa.core.kernel import Model
from mfa.incremental import run_key
from mfa.io.tables import (
    load_intensity_table,
    load_materials,
)
from mfa.outputs import LAYERS, layer
from mfa.stocks.intensity import intensity_matrix, intensity_percentiles
from mfa.stocks.uncertainty import (
    intensity_draws,
)

log = logging.getLogger("mfa")


BUILDINGS = layer("buildings").file


DISTRICTS = layer("districts").file


MANIFEST = "run.json"
#: The name of a run folder, as :func:`prepare` makes it: start time in UTC (to the
#: millisecond; earlier versions to the second), then six hex digits (housekeeping
#: touches only folders so named).
RUN_ID = re.compile(r"\d{8}T\d{6}(\d{3})?Z-[0-9a-f]{6}")


DROPPED = "dropped.csv"


REPAIRS = "repairs.csv"


QUALITY = layer("quality").file


GRID = layer("grid").file


FLOWS = layer("flows").file


REPORT = "report.md"


FAILURE = "last-failure.md"


#: Left-out records listed in run.json (all of them are in dropped.csv).
MANIFEST_RECORDS = 1_000


#: The run's model (rules, intensities, districts), made once by the buildings step.
MODEL = "model.pickle"


#: The GeoParquet layers that also go into the GeoPackage and the QGIS project, by name.
QGIS_LAYERS = {entry.name: entry.file for entry in LAYERS}


def _ctx(work_dir: Path) -> dict[str, Any]:
    return json.loads((Path(work_dir) / "context.json").read_text())


#: The run's settings as validated once by :func:`prepare` (pipeline and model tables).
SETTINGS = "settings.pickle"


@dataclass(frozen=True)
class Tables:
    """The model tables of a run, read and drawn once by :func:`prepare`."""

    materials: list[str]
    archetypes: list[str]
    draws: np.ndarray  # draws × archetypes × materials (kg/m²), seeded
    central: pd.DataFrame  # archetype × material (kg/m²) at the pipeline's statistic


def _tables(p: Pipeline) -> Tables:
    """Read the material vocabulary and the intensity table; draw the intensities."""
    vocab = p.intensities.vocabulary_file
    known = load_materials(vocab)
    chosen = p.intensities.materials or known
    unknown = [m for m in chosen if m not in known]
    if unknown:
        from mfa.errors import ConfigError

        raise ConfigError(
            f"{p.source_file}: key 'intensities.materials': {unknown} not in {vocab}; "
            f"use some of {known}"
        )
    materials = list(chosen)
    where = str(p.intensities.table)
    table = load_intensity_table(p.intensities.table, materials, p.intensities.overrides)
    archetypes, pct = intensity_percentiles(table, p.intensities.region, materials, where=where)
    draws = intensity_draws(pct, p.uncertainty.draws, p.uncertainty.seed)
    central = intensity_matrix(
        table, p.intensities.region, p.intensities.statistic, materials, archetypes, where=where
    )
    return Tables(materials, list(archetypes), draws, central)


def _keep_settings(work: Path, p: Pipeline, tables: Tables) -> None:
    """Keep the run's pipeline and tables in its work folder (atomically), for the steps."""
    tmp = work / "stage" / f"{SETTINGS}.part"
    with open(tmp, "wb") as f:
        pickle.dump((p, tables), f)
    os.replace(tmp, work / "stage" / SETTINGS)
    _settings.cache_clear()


@functools.lru_cache(maxsize=4)
def _settings(work_dir: str) -> tuple[Pipeline, Tables]:
    with open(Path(work_dir) / "stage" / SETTINGS, "rb") as f:
        return pickle.load(f)


def _pipeline(work_dir: Path) -> Pipeline:
    """The run's pipeline as :func:`prepare` validated it (a file edited during the run
    does not change the later steps)."""
    return _settings(str(work_dir))[0]


def _run_tables(work_dir: Path) -> Tables:
    """The run's materials, intensities and draws as :func:`prepare` read them."""
    return _settings(str(work_dir))[1]


def as_written(p: Pipeline, ctx: dict[str, Any]) -> Pipeline:
    """The run's pipeline as its file gives it, for the run key: a RASMI region chosen from
    the data's country (``prepare``) is left out again, as ``--if-changed`` reads the file."""
    if (ctx.get("intensities_region") or {}).get("requested") != "auto":
        return p
    return p.model_copy(update={"intensities": p.intensities.model_copy(update={"region": None})})


def _report(work_dir: Path, step: str, data: dict[str, Any]) -> None:
    path = Path(work_dir) / "reports" / f"{step}.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=str))


def prepare(
    pipeline_file: str | Path,
    output_dir: str | Path | None = None,
    runner: str = "plain",
    as_of: str | None = None,
) -> Path:
    """Validate the pipeline file and create the run's work folder; return its path.

    ``as_of`` (``YYYY-MM-DD``) pins the run to that day: every pulled source reads the
    newest snapshot published on or before it and the pull step makes no request; the
    run's day (its year: building ages, flows) is that day too, so the run repeats the
    one of that day."""
    from mfa.io.location import locate, resolve_region

    as_written = load_pipeline(pipeline_file, as_of)
    p, region = resolve_region(as_written)  # "auto": the data's country, from metadata
    tables = _tables(p)
    root = p.output_root(Path(output_dir) if output_dir is not None else None)
    started = datetime.now(UTC)
    # milliseconds in the id: runs sort by start time even when several start in a second
    stamp = started.strftime("%Y%m%dT%H%M%S") + f"{started.microsecond // 1000:03d}Z"
    run_id = stamp + "-" + uuid.uuid4().hex[:6]
    work = root / p.name / ".work" / run_id
    context = {
        "pipeline": p.name,
        "pipeline_file": str(p.source_file),
        "output_root": str(root),
        "run_id": run_id,
        "started_at": started.isoformat(),
        "runner": runner,
        "run_key": run_key(as_written, started.date().isoformat(), as_of),
        "as_of": as_of,
        "intensities_region": region,
        "location": locate(as_written),  # the data's country, for run.json and the report
    }
    try:
        (work / "stage").mkdir(parents=True)
        (work / "context.json").write_text(json.dumps(context, indent=2))
        _keep_settings(work, p, tables)
    except OSError as exc:  # a full or read-only disk: no half-made work folder is left
        from mfa.run.housekeeping import discard, run_storage_error

        disk = run_storage_error(exc, root / p.name)
        discard(work)
        if disk is not None:
            raise disk from exc
        raise
    log.info("run %s of %s in %s", run_id, p.name, work)
    return work


def _load_model(work: Path) -> Model:
    with open(work / "stage" / MODEL, "rb") as f:
        return pickle.load(f)

"""Run a pipeline: the steps, each path in → path out, and the plain (no-Prefect) runner.

A run works in ``<output root>/<pipeline>/.work/<run_id>/``. Only when every step has
succeeded and every check has passed does :func:`publish` move it to
``<output root>/<pipeline>/<run_id>/`` and switch the ``latest`` link to it, atomically.
A failed or interrupted run never touches ``latest`` or earlier runs.

:data:`STEPS` is the one list of steps: :func:`run_pipeline` loops over it and the Prefect
flow in ``flows/pipeline.py`` makes one task of each. The package: ``context`` (the work
folder and the run's tables), ``sources`` (building sources as engine batches),
``buildings`` (the engine's two passes), ``layers`` (aggregates), ``flows``,
``qgisfiles`` (GeoPackage, styles, project; the GeoPackage's buildings layer in a
process the stocks step starts), ``checks`` and ``publish``, ``housekeeping`` (lock,
leftovers, retention), ``pull`` (remote sources fetched into the snapshot store,
:mod:`mfa.pull`), ``match`` (a pipeline's ``[match]`` after the run).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mfa.executor import run_scope
from mfa.incremental import run_key, unchanged_run
from mfa.run.buildings import build_buildings, estimate_stocks
from mfa.run.context import (
    BUILDINGS,
    DISTRICTS,
    DROPPED,
    FAILURE,
    FLOWS,
    GRID,
    MANIFEST,
    QUALITY,
    REPAIRS,
    REPORT,
    log,
    prepare,
)
from mfa.run.flows import forecast_flows
from mfa.run.housekeeping import RunLockedError, discard, prune_runs, record_failure, run_lock
from mfa.run.layers import aggregate
from mfa.run.publish import publish
from mfa.run.pull import finish_pull, pull_part, pull_parts, pull_sources
from mfa.run.qgisfiles import qgis_outputs

__all__ = [
    "BUILDINGS",
    "DISTRICTS",
    "DROPPED",
    "FAILURE",
    "FLOWS",
    "GRID",
    "MANIFEST",
    "QUALITY",
    "REPAIRS",
    "REPORT",
    "STEPS",
    "RunLockedError",
    "Step",
    "aggregate",
    "build_buildings",
    "discard",
    "estimate_stocks",
    "finish_pull",
    "forecast_flows",
    "prepare",
    "prune_runs",
    "publish",
    "pull_part",
    "pull_parts",
    "pull_sources",
    "qgis_outputs",
    "record_failure",
    "run_key",
    "run_lock",
    "run_pipeline",
    "unchanged_run",
]


@dataclass(frozen=True)
class Step:
    """A step of a run after :func:`prepare`: a function of the work folder.

    ``name`` is its task name in Prefect; ``transient`` says it may fail on a transient
    download error (and only then is it retried, by the Prefect task). A step with
    ``parts`` runs each part first (the Prefect flow: one task per part, concurrently).
    """

    name: str
    run: Callable[[Path], Path | None]
    transient: bool = False
    #: a step done in independent parts first (one per pulled source): ``parts(work)``
    #: names them, ``part(work, name)`` does one; ``run`` then finishes the step
    parts: Callable[[Path], list[str]] | None = None
    part: Callable[[Path, str], object] | None = None


#: The steps after :func:`prepare`, in order: the plain runner and the Prefect flow
#: (``flows/pipeline.py``) are both made from this list.
STEPS: tuple[Step, ...] = (
    # not transient: mfa.pull retries transient failures itself (one layer, not stacked)
    Step("pull", finish_pull, parts=pull_parts, part=pull_part),
    Step("buildings", build_buildings, transient=True),
    Step("stocks", estimate_stocks),
    Step("districts", aggregate),
    Step("flows", forecast_flows),
    Step("qgis", qgis_outputs),
    Step("publish", publish),
)


def run_pipeline(
    pipeline_file: str | Path,
    output_dir: str | Path | None = None,
    force: bool = True,
    as_of: str | None = None,
) -> Path:
    """Run every step without Prefect; return the published run folder.

    With ``force=False`` a run whose inputs, config and code are unchanged since the
    latest published run does nothing and returns that run; otherwise it recomputes
    everything. A pipeline with a ``[match]`` table then matches the run (new or
    unchanged), as the Prefect flow does (:func:`mfa.run.match.match_after_run`).
    ``as_of`` (``YYYY-MM-DD``) pins the pulled sources to that day's snapshots, without
    network (:func:`mfa.run.context.prepare`).
    """
    if not force:
        previous = unchanged_run(pipeline_file, output_dir, as_of)
        if previous is not None:
            log.info("unchanged since run %s: nothing to do", previous.name)
            _match(pipeline_file, previous, output_dir)
            return previous
    with run_lock(pipeline_file, output_dir):
        work = prepare(pipeline_file, output_dir, runner="plain", as_of=as_of)
        step_name = "prepare"
        try:
            with run_scope():  # one executor (Dask cluster) for every step of the run
                for step in STEPS:
                    step_name = step.name
                    for part in step.parts(work) if step.parts and step.part else ():
                        step_name = f"{step.name} {part}"
                        step.part(work, part)
                    step_name = step.name
                    result = step.run(work)
            run_dir = Path(result)  # publish returns the run folder
        except BaseException as exc:
            disk = record_failure(work, step_name, exc)
            if disk is not None:
                raise disk from exc
            raise
    _match(pipeline_file, run_dir, output_dir)
    return run_dir


def _match(pipeline_file: str | Path, run_dir: Path, output_dir: str | Path | None) -> None:
    from mfa.errors import MfaError
    from mfa.run.match import match_after_run, match_failed

    try:
        match_after_run(pipeline_file, run_dir, output_dir)
    except MfaError as exc:
        raise match_failed(exc, run_dir) from exc

"""The Prefect flow that runs an mfa pipeline: one task per step, tasks pass paths.

The tasks are thin wrappers around :mod:`mfa.run`'s step functions; all logic lives
there, so ``mfa run --no-prefect`` produces the same layers.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from mfa import run as steps
from mfa.errors import TransientFetchError


@task(name="prepare")
def prepare(pipeline_file: str, output_dir: str | None, incremental: bool = False) -> str:
    """Validate the pipeline file, create the run's work folder."""
    return str(steps.prepare(pipeline_file, output_dir, runner="prefect", incremental=incremental))


def retry_if_transient(task, task_run, state) -> bool:
    """Retry a task only when it failed on a transient download error (busy server...)."""
    try:
        state.result()
    except TransientFetchError:
        return True
    except BaseException:  # noqa: BLE001 - anything else is not worth a retry
        return False
    return False


@task(name="buildings", retries=2, retry_delay_seconds=60, retry_condition_fn=retry_if_transient)
def buildings(work_dir: str) -> str:
    """Read sources → canonical buildings (staged GeoParquet)."""
    return str(steps.build_buildings(Path(work_dir)))


@task(name="stocks")
def stocks(work_dir: str) -> str:
    """Districts and material tonnes per building, over Dask partitions."""
    return str(steps.estimate_stocks(Path(work_dir)))


@task(name="districts")
def districts(work_dir: str) -> str | None:
    """Exact sums per district."""
    out = steps.aggregate(Path(work_dir))
    return None if out is None else str(out)


@task(name="flows")
def flows(work_dir: str) -> str | None:
    """Demolition and construction flows per district, year, material and scenario."""
    out = steps.forecast_flows(Path(work_dir))
    return None if out is None else str(out)


@task(name="qgis")
def qgis(work_dir: str) -> str:
    """The layers for QGIS: a styled GeoPackage, .qml styles and a QGIS project."""
    return str(steps.qgis_outputs(Path(work_dir)))


@task(name="publish")
def publish(work_dir: str) -> str:
    """Check every layer, write run.json, switch `latest` atomically; report as an artifact."""
    run_dir = steps.publish(Path(work_dir))
    name = run_dir.parent.name.replace("_", "-").lower()
    create_markdown_artifact(
        markdown=(run_dir / steps.REPORT).read_text(),
        key=f"mfa-{name}",
        description=f"mfa run report: {run_dir}",
    )
    return str(run_dir)


@task(name="unchanged")
def unchanged(pipeline_file: str, output_dir: str | None) -> str | None:
    """The latest run, if no input, config or code changed since it."""
    previous = steps.unchanged_run(pipeline_file, output_dir)
    return None if previous is None else str(previous)


@flow(name="mfa-pipeline", validate_parameters=True)
def mfa_pipeline(pipeline_file: str, output_dir: str | None = None, force: bool = True) -> str:
    """Run the pipeline file ``pipeline_file``; return the published run folder.

    ``force=False`` (scheduled runs) returns the latest run without recomputing when
    nothing it depends on changed, and otherwise recomputes only the changed districts.
    """
    if not force:
        previous = unchanged(pipeline_file, output_dir)
        if previous is not None:
            get_run_logger().info("unchanged since %s: nothing to do", previous)
            return previous
    with steps.run_lock(pipeline_file, output_dir):
        work = prepare(pipeline_file, output_dir, not force)
        step = "buildings"
        try:
            for name, task_fn in (
                ("build_buildings", buildings),
                ("estimate_stocks", stocks),
                ("aggregate", districts),
                ("forecast_flows", flows),
                ("qgis_outputs", qgis),
            ):
                step = name
                task_fn(work)
            step = "publish"
            return publish(work)
        except BaseException as exc:
            steps.record_failure(Path(work), step, exc)
            raise

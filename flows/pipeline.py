"""The Prefect flow that runs an mfa pipeline: one task per step, tasks pass paths.

A step with parts (the pull) runs one task per part first, concurrently: each pulled
source is its own task run, with its own logs, progress and failure.

The tasks are made from :data:`mfa.run.STEPS`, the list the plain runner (``mfa run
--no-prefect``) loops over, so both run the same steps and produce the same layers; all
logic lives in :mod:`mfa`. The engine inside the buildings and stocks steps spreads the
batches over its own executor (local threads or Dask): one level of parallelism.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    update_progress_artifact,
)
from prefect.context import TaskRunContext
from prefect.futures import wait

from flows.match import flow_parameters, mfa_match
from flows.orphans import record_process
from mfa import run as steps
from mfa.errors import MfaError, TransientFetchError
from mfa.executor import PROGRESS, run_scope


@task(name="prepare")
def prepare(pipeline_file: str, output_dir: str | None, as_of: str | None = None) -> str:
    """Validate the pipeline file, create the run's work folder."""
    return str(steps.prepare(pipeline_file, output_dir, runner="prefect", as_of=as_of))


def retry_if_transient(task, task_run, state) -> bool:
    """Retry a task only when it failed on a transient download error (busy server...)."""
    try:
        state.result()
    except TransientFetchError:
        return True
    except BaseException:  # noqa: BLE001 - anything else is not worth a retry
        return False
    return False


def _as_task(step: steps.Step):
    def run(work_dir: str) -> str | None:
        token = PROGRESS.set(_ProgressArtifact(Path(work_dir).name))
        try:
            out = step.run(Path(work_dir))
        finally:
            PROGRESS.reset(token)
        return None if out is None else str(out)

    run.__doc__ = step.run.__doc__
    retries = {"retries": 2, "retry_delay_seconds": 60} if step.transient else {}
    return task(name=step.name, retry_condition_fn=retry_if_transient, **retries)(run)


class _ProgressArtifact:
    """The engine's progress in a step as a Prefect progress artifact (created on the
    first report; updated every 5 % and at the end: a few API calls per step)."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.artifact = None
        self.last = -100.0

    def __call__(self, what: str, done: int, total: int) -> None:
        if TaskRunContext.get() is None:  # the task's function called directly: no UI
            return
        pct = 100.0 * done / max(total, 1)
        if self.artifact is None:
            self.artifact = create_progress_artifact(
                pct, key=f"mfa-progress-{what}", description=f"mfa run {self.run_id}: {what}"
            )
            self.last = pct
        elif pct - self.last >= 5 or done >= total:
            update_progress_artifact(self.artifact, pct)
            self.last = pct


#: One Prefect task per step of :data:`mfa.run.STEPS`, by step name.
TASKS = {s.name: _as_task(s) for s in steps.STEPS}


def _as_part_task(step: steps.Step):
    def run(work_dir: str, part: str) -> None:
        token = PROGRESS.set(_ProgressArtifact(Path(work_dir).name))
        try:
            step.part(Path(work_dir), part)  # type: ignore[misc]
        finally:
            PROGRESS.reset(token)

    run.__doc__ = getattr(step.part, "__doc__", None)
    return task(name=f"{step.name}-part")(run)


#: One Prefect task per part of a step with parts (the pull: one per pulled source).
PART_TASKS = {s.name: _as_part_task(s) for s in steps.STEPS if s.parts and s.part}


def _run_parts(step: steps.Step, work: str) -> None:
    """Each part of ``step`` as its own task run (named after the part), concurrently;
    every part ends before the first failure is raised."""
    if step.parts is None:
        return
    run = PART_TASKS[step.name]
    futures = [
        run.with_options(task_run_name=f"{step.name} {part}").submit(work, part)
        for part in step.parts(Path(work))
    ]
    wait(futures)
    for f in futures:
        f.result()


def _report_artifact(run_dir: Path) -> None:
    name = run_dir.parent.name.replace("_", "-").lower()
    create_markdown_artifact(
        markdown=(run_dir / steps.REPORT).read_text(),
        key=f"mfa-{name}",
        description=f"mfa run report: {run_dir}",
    )


@task(name="unchanged")
def unchanged(pipeline_file: str, output_dir: str | None, as_of: str | None = None) -> str | None:
    """The latest run, if no input, config or code changed since it."""
    previous = steps.unchanged_run(pipeline_file, output_dir, as_of)
    return None if previous is None else str(previous)


def _match_after(pipeline_file: str, run_dir: str, output_dir: str | None) -> None:
    """The pipeline's ``[match]``, if it has one, as the ``mfa-match`` subflow."""
    from mfa.config import load_pipeline
    from mfa.run.match import match_arguments, match_failed

    p = load_pipeline(pipeline_file)
    if p.match is None:
        return
    args = match_arguments(p, Path(run_dir), None if output_dir is None else Path(output_dir))
    try:
        mfa_match(**flow_parameters(args))
    except MfaError as exc:
        raise match_failed(exc, run_dir) from exc


@flow(name="mfa-pipeline", validate_parameters=True)
def mfa_pipeline(
    pipeline_file: str,
    output_dir: str | None = None,
    force: bool = True,
    as_of: str | None = None,
) -> str:
    """Run the pipeline file ``pipeline_file``; return the published run folder.

    ``force=False`` (scheduled runs) returns the latest run without recomputing when
    nothing it depends on changed (inputs, config, code). A pipeline with a ``[match]``
    table then matches the run (new or unchanged: the demand may have changed) in the
    ``mfa-match`` subflow; a failed matching fails the flow run, the run stays published.
    A deployment run first records its process (:func:`flows.orphans.record_process`).
    """
    record_process()
    if not force:
        previous = unchanged(pipeline_file, output_dir, as_of)
        if previous is not None:
            get_run_logger().info("unchanged since %s: nothing to do", previous)
            _match_after(pipeline_file, previous, output_dir)
            return previous
    run_dir = _run(pipeline_file, output_dir, as_of)
    _match_after(pipeline_file, run_dir, output_dir)
    return run_dir


def _run(pipeline_file: str, output_dir: str | None, as_of: str | None = None) -> str:
    with steps.run_lock(pipeline_file, output_dir):
        work = prepare(pipeline_file, output_dir, as_of)
        name = "prepare"
        try:
            result = None
            with run_scope():  # one executor (Dask cluster) for every step of the run
                for step in steps.STEPS:
                    name = step.name
                    _run_parts(step, work)
                    result = TASKS[step.name](work)
            run_dir = Path(str(result))  # publish returns the run folder
            _report_artifact(run_dir)
            return str(run_dir)
        except BaseException as exc:
            disk = steps.record_failure(Path(work), name, exc)
            if disk is not None:
                raise disk from exc
            raise

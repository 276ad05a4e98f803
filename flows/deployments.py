"""Prefect deployments from pipeline files: one per pipeline, scheduled by its [schedule]."""

from __future__ import annotations

from pathlib import Path

from prefect.schedules import Cron

from flows.pipeline import mfa_pipeline
from mfa.config import load_pipeline


def deployments_for(pipeline_files: list[Path], output_dir: Path | None = None) -> list:
    """A RunnerDeployment per pipeline file (named after the pipeline).

    Scheduled runs pass ``force=False``: they recompute only when an input, the config or
    the code changed since the latest run. Pipelines without a [schedule] get a deployment
    that runs only when triggered.
    """
    out = []
    for f in pipeline_files:
        p = load_pipeline(f)
        schedules = [Cron(p.schedule.cron, timezone=p.schedule.timezone)] if p.schedule else None
        out.append(
            mfa_pipeline.to_deployment(
                name=p.name,
                schedules=schedules,
                parameters={
                    "pipeline_file": str(p.source_file),
                    "output_dir": None if output_dir is None else str(Path(output_dir).resolve()),
                    "force": False,
                },
                description=p.description or f"mfa pipeline {p.name}",
                tags=["mfa"],
            )
        )
    return out

"""The Prefect flow of the streaming engine: a stock of millions of buildings, with its
progress visible in the Prefect UI (a progress artifact updated per row group)."""

from __future__ import annotations

from pathlib import Path

from prefect import flow, task
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    update_progress_artifact,
)

from mfa.engine import estimate_pipeline


@task(name="stream")
def stream(pipeline_file: str, output: str | None) -> dict:
    """Estimate every building, row group by row group; progress in a Prefect artifact."""
    artifact = create_progress_artifact(
        0.0, key="mfa-stream-progress", description=f"records of {Path(pipeline_file).name}"
    )
    step = {"last": 0.0}

    def progress(done: int, total: int) -> None:
        pct = 100.0 * done / max(total, 1)
        if pct - step["last"] >= 5 or done == total:  # at most ~20 API calls
            update_progress_artifact(artifact, pct)
            step["last"] = pct

    folder, summary = estimate_pipeline(pipeline_file, output, progress=progress)
    return {**summary, "folder": str(folder)}


@flow(name="mfa-stream")
def mfa_stream(pipeline_file: str, output: str | None = None) -> str:
    """Stream a pipeline's register through the engine; returns the output folder."""
    summary = stream(pipeline_file, output)
    rows = "\n".join(
        f"| {k.removesuffix('_t')} | {v:,.0f} |" for k, v in summary["totals_t"].items()
    )
    create_markdown_artifact(
        f"# mfa stream: {summary['buildings']:,} buildings\n\n"
        f"{summary['records_read']:,} records in {summary['seconds']} s "
        f"({summary['buildings_per_s']:,}/s, {summary['workers']} workers, "
        f"{summary['scheduler']}).\n\n| material | t |\n|---|---:|\n{rows}\n",
        key="mfa-stream-report",
    )
    return summary["folder"]

"""The Prefect flow of reuse matching: match the latest published run to the demand sites.

Thin: one task calls :func:`mfa.match.match_run` (all logic lives there) and the summary
becomes a markdown artifact. Run it after the nightly pipeline, e.g. as a second
deployment on a later cron, or chained: ``mfa_match(mfa_pipeline(...), demand, out)``.
"""

from __future__ import annotations

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact

from mfa.match import match_run


@task(name="match")
def match_task(
    run_dir: str,
    demand: str,
    output: str,
    supply: list[str] | None = None,
    max_km: float | None = None,
    network: str | None = None,
    unit: str = "grid",
    cache_dir: str | None = None,
    hubs: str | None = None,
) -> str:
    """Solve and write the matching; returns the output folder."""
    result = match_run(
        run_dir,
        demand,
        tuple(supply or ()),
        max_km=max_km,
        network=network,
        unit=unit,
        out=output,
        cache_dir=cache_dir,
        hubs=hubs,
    )
    create_markdown_artifact(key="mfa-match-summary", markdown=result.summary)
    return str(result.out)


@flow(name="mfa-match", validate_parameters=True)
def mfa_match(
    run_dir: str,
    demand: str,
    output: str,
    supply: list[str] | None = None,
    max_km: float | None = None,
    network: str | None = None,
    unit: str = "grid",
    cache_dir: str | None = None,
    hubs: str | None = None,
) -> str:
    """Match the run in ``run_dir`` (e.g. ``outputs/dk-sample/latest``) to ``demand``."""
    return match_task(run_dir, demand, output, supply, max_km, network, unit, cache_dir, hubs)

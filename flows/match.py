"""The Prefect flow of reuse matching: match a published run to the demand sites.

Thin: one task calls :func:`mfa.match.match_run` (all logic lives there) and the summary
becomes a markdown artifact. The nightly flow (``flows/pipeline.py``) runs it as a subflow
after every successful run of a pipeline that has a ``[match]`` table, with the
arguments :func:`mfa.run.match.match_arguments` makes of it; it can also be run alone.
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
    years: list[int] | None = None,
    scenario: str = "baseline",
    cell_size_m: float = 250.0,
    solver: str = "ortools",
    config_dir: str = "config",
    weights: list[float] | None = None,
) -> str:
    """Solve and write the matching; returns the output folder."""
    result = match_run(
        run_dir,
        demand,
        tuple(supply or ()),
        years=None if years is None else (int(years[0]), int(years[1])),
        max_km=max_km,
        network=network,
        unit=unit,
        cell_size_m=cell_size_m,
        scenario=scenario,
        solver=solver,
        config_dir=config_dir,
        out=output,
        cache_dir=cache_dir,
        hubs=hubs,
        weights=None if weights is None else (float(weights[0]), float(weights[1])),
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
    years: list[int] | None = None,
    scenario: str = "baseline",
    cell_size_m: float = 250.0,
    solver: str = "ortools",
    config_dir: str = "config",
    weights: list[float] | None = None,
) -> str:
    """Match the run in ``run_dir`` (e.g. ``outputs/dk-sample/latest``) to ``demand``."""
    return match_task(
        run_dir,
        demand,
        output,
        supply,
        max_km,
        network,
        unit,
        cache_dir,
        hubs,
        years,
        scenario,
        cell_size_m,
        solver,
        config_dir,
        weights,
    )


def flow_parameters(args: dict) -> dict:
    """:func:`mfa.run.match.match_arguments` as the parameters of :func:`mfa_match`."""
    renamed = {"supply_files": "supply", "out": "output"}
    out = {renamed.get(k, k): v for k, v in args.items()}
    out["supply"] = list(out["supply"])
    for key in ("years", "weights"):
        out[key] = None if out[key] is None else list(out[key])
    return out

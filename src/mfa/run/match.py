"""Reuse matching after a run: a pipeline's ``[match]`` table turned into a
:func:`mfa.match.match_run` call on the run just published (or found unchanged).

The plain runner (:func:`mfa.run.run_pipeline`) calls :func:`match_after_run`; the nightly
Prefect flow passes the same :func:`match_arguments` to its ``mfa-match`` subflow
(``flows/match.py``), which calls ``match_run`` with them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mfa.config import Pipeline, load_pipeline
from mfa.errors import MfaError
from mfa.run.context import log

__all__ = ["match_after_run", "match_arguments", "match_failed"]


def match_arguments(p: Pipeline, run_dir: Path, output_dir: Path | None = None) -> dict[str, Any]:
    """The keyword arguments of :func:`mfa.match.match_run` that ``p``'s ``[match]`` names.

    The matching goes to ``[match] output``, else ``<output root>/<pipeline>/matching``
    (beside the runs, never in one; housekeeping only removes run folders); the config
    folder (``match.toml``) is ``[match] config``, else the vocabulary's folder.
    """
    m = p.match
    if m is None:
        raise ValueError(f"{p.source_file}: the pipeline has no [match] table")
    out = m.output or p.output_root(output_dir) / p.name / "matching"
    return {
        "run_dir": str(run_dir),
        "demand": str(m.demand),
        "supply_files": tuple(str(f) for f in m.supply),
        "years": m.years,
        "max_km": m.max_km,
        "network": None if m.network is None else str(m.network),
        "unit": m.unit,
        "cell_size_m": m.cell_size_m,
        "scenario": m.scenario,
        "solver": m.solver,
        "config_dir": str(m.config or p.intensities.vocabulary_file.parent),
        "out": str(out),
        "cache_dir": str(p.cache_root()),
        "hubs": None if m.hubs is None else str(m.hubs),
        "weights": m.weights,
    }


def match_after_run(
    pipeline_file: str | Path, run_dir: str | Path, output_dir: str | Path | None = None
) -> Path | None:
    """Match the run in ``run_dir`` as the pipeline's ``[match]`` says; the matching's
    folder, or None when the pipeline has no ``[match]``."""
    p = load_pipeline(pipeline_file)
    if p.match is None:
        return None
    from mfa.match import match_run

    args = match_arguments(p, Path(run_dir), None if output_dir is None else Path(output_dir))
    result = match_run(**args)
    log.info("matching of %s written to %s", Path(run_dir).name, result.out)
    return result.out


def match_failed(exc: MfaError, run_dir: str | Path) -> MfaError:
    """The error of a failed ``[match]``, saying that the run itself is published."""
    return type(exc)(f"run {run_dir} is published; its [match] failed: {exc}")

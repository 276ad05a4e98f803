"""The pull step: fetch the pipeline's remote sources before the buildings step reads them."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from mfa.incremental import run_key
from mfa.run.context import _ctx, _keep_settings, _pipeline, _report, _run_tables, log

__all__ = ["pull_sources"]


def pull_sources(work_dir: Path) -> None:
    """Pull every remote source of the run's pipeline (:func:`mfa.pull.pull_pipeline`).

    Writes ``reports/pull.json`` (one record per source, for ``run.json``'s ``pulled``)
    and, when a source was pulled, recomputes the run key in ``context.json``: it was made
    in :func:`~mfa.run.context.prepare`, before this step knew the newest snapshots. A
    pipeline without remote sources passes through (no network), and a source pulled in the
    last :data:`~mfa.pull.RECHECK_S` seconds (by the ``--if-changed`` check that started
    this run) is not asked again.
    """
    from mfa import pull  # RECHECK_S read at call time

    t0 = time.perf_counter()
    work = Path(work_dir)
    ctx = _ctx(work)
    p = _pipeline(work)
    remote = pull.pulled_sources(p)
    records = pull.pull_pipeline(p, reuse_within_s=pull.RECHECK_S) if remote else []
    if records:
        # the later steps read the snapshots this pull published
        p = pull.resolve_pulled(p)
        _keep_settings(work, p, _run_tables(work))
        ctx["run_key"] = run_key(p, ctx["started_at"][:10])
        tmp = work / "context.json.part"
        tmp.write_text(json.dumps(ctx, indent=2))
        os.replace(tmp, work / "context.json")
        changed = sum(r["changed"] for r in records)
        log.info("pulled %d sources, %d changed", len(records), changed)
    _report(work, "pull", {"sources": records, "seconds": round(time.perf_counter() - t0, 3)})

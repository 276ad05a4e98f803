"""The pull step: fetch the pipeline's remote sources before the buildings step reads them.

One part per pulled source (:func:`pull_parts`, :func:`pull_part`: the Prefect flow makes
a task of each, so each source shows, logs and fails on its own), then
:func:`finish_pull`, which points the run at the snapshots published. The plain runner
runs the same parts in order, then the finish (:func:`pull_sources` does both).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from mfa.incremental import run_key
from mfa.run.context import (
    _ctx,
    _keep_settings,
    _pipeline,
    _report,
    _run_tables,
    as_written,
    log,
)

__all__ = ["finish_pull", "pull_part", "pull_parts", "pull_sources"]

#: Where each part leaves its record, in the work folder.
PARTS = Path("reports") / "pull"


def pull_parts(work_dir: Path) -> list[str]:
    """The keys of the run's pulled sources (``sources.register``, …), in order; empty
    when the pipeline has none (no network)."""
    from mfa import pull

    return [ps.key for ps in pull.pulled_sources(_pipeline(Path(work_dir)))]


def pull_part(work_dir: Path, key: str) -> dict:
    """Pull the source ``key`` (:func:`mfa.pull.pull_source`); keep its record in the work
    folder. A source pulled in the last :data:`~mfa.pull.RECHECK_S` seconds (by the
    ``--if-changed`` check that started this run) is not asked again."""
    from mfa import pull  # RECHECK_S read at call time

    work = Path(work_dir)
    p = _pipeline(work)
    as_of = _ctx(work).get("as_of")
    (ps,) = [s for s in pull.pulled_sources(p) if s.key == key]
    t0 = time.perf_counter()
    if as_of:  # a pinned run: the snapshot of that day, no request
        record = pull.pinned_record(ps, pull.pinned_snapshots(p, as_of)[ps.key], as_of)
    else:
        record = pull.pull_source(ps, p.cache_root(), reuse_within_s=pull.RECHECK_S)
    record["seconds"] = round(time.perf_counter() - t0, 3)
    folder = work / PARTS
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f"{ps.part}.json.part"
    tmp.write_text(json.dumps(record, indent=2))
    os.replace(tmp, folder / f"{ps.part}.json")
    return record


def finish_pull(work_dir: Path) -> None:
    """Gather the parts' records into ``reports/pull.json`` (``run.json``'s ``pulled``)
    and, when a source was pulled, recompute the run key in ``context.json``: it was made
    in :func:`~mfa.run.context.prepare`, before the newest snapshots were known."""
    from mfa import pull

    work = Path(work_dir)
    ctx = _ctx(work)
    p = _pipeline(work)
    records = []
    for ps in pull.pulled_sources(p):
        part = work / PARTS / f"{ps.part}.json"
        if not part.is_file():
            raise RuntimeError(f"{ps.key}: its pull part did not run; run the pull step again")
        records.append(json.loads(part.read_text()))
    if records:
        # the later steps read the snapshots this pull published
        p = pull.resolve_pulled(p, ctx.get("as_of"))
        _keep_settings(work, p, _run_tables(work))
        ctx["run_key"] = run_key(as_written(p, ctx), ctx["started_at"][:10], ctx.get("as_of"))
        tmp = work / "context.json.part"
        tmp.write_text(json.dumps(ctx, indent=2))
        os.replace(tmp, work / "context.json")
        changed = sum(r["changed"] for r in records)
        log.info("pulled %d sources, %d changed", len(records), changed)
    seconds = sum(r.pop("seconds", 0.0) for r in records)
    _report(
        work,
        "pull",
        {"sources": records, "seconds": round(seconds, 3), "as_of": ctx.get("as_of")},
    )


def pull_sources(work_dir: Path) -> None:
    """Pull every remote source of the run's pipeline, one after the other, then
    :func:`finish_pull`. A pipeline without remote sources passes through."""
    for key in pull_parts(work_dir):
        pull_part(work_dir, key)
    finish_pull(work_dir)

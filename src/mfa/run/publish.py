"""Publish a checked run: ``run.json``, ``report.md``, then the atomic switch of
``latest``."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import time
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

import mfa
from mfa.buildings.provenance import rule_shares
from mfa.buildings.report import guess_shares
from mfa.config import Pipeline, config_digest
from mfa.errors import PublishError, ValidationError
from mfa.failpoints import failpoint
from mfa.io.files import fsync_dir, sha256_file
from mfa.parallel import without_cyclic_gc
from mfa.report import report_markdown
from mfa.run.checks import _checks, _quality_summary, _record_table
from mfa.run.context import (
    BUILDINGS,
    DISTRICTS,
    DROPPED,
    MANIFEST,
    REPAIRS,
    REPORT,
    _ctx,
    _pipeline,
    _run_tables,
    log,
)
from mfa.run.housekeeping import prune_runs


def _versions() -> dict[str, str]:
    names = ["geopandas", "shapely", "pyarrow", "pandas", "numpy", "dask", "pyproj", "osmnx"]
    out = {"python": platform.python_version(), "mfa": mfa.__version__}
    for n in names:
        try:
            out[n] = version(n)
        except Exception:  # noqa: BLE001 - a missing optional package is reported as absent
            out[n] = "absent"
    return out


#: What a run folder holds that :func:`published_files` does not list: the manifest itself,
#: the report written from it, and the work files removed before the run is published.
_UNLISTED = {MANIFEST, REPORT, "context.json", "stage", "reports"}


def published_files(run_dir: Path) -> dict[str, dict[str, object]]:
    """Bytes and sha256 of every file a run publishes (relative path → record), for
    ``run.json``; ``--if-changed`` checks ``latest`` against them
    (:func:`mfa.incremental.published_problem`)."""
    from concurrent.futures import ThreadPoolExecutor

    files = [
        f
        for f in sorted(run_dir.rglob("*"))
        if f.relative_to(run_dir).parts[0] not in _UNLISTED and f.is_file()
    ]
    # hashed side by side (hashlib lets go of the GIL): the GeoPackage and the buildings
    # layer are each hundreds of MB on a national run
    with ThreadPoolExecutor(max_workers=min(4, max(1, len(files)))) as pool:
        digests = list(pool.map(sha256_file, files))
    return {
        f.relative_to(run_dir).as_posix(): {"bytes": f.stat().st_size, "sha256": d}
        for f, d in zip(files, digests, strict=True)
    }


def _previous_manifest(path: Path) -> dict | None:
    """The manifest of the run being replaced, for the report's changes; a damaged one
    (hand-edited, truncated) is left out with a warning: it never blocks the next run."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        log.warning("%s: unreadable (%s); the report shows no changes since it", path, exc)
        return None
    return data if isinstance(data, dict) and isinstance(data.get("totals_t"), dict) else None


@without_cyclic_gc
def _floor_area_check(
    work: Path, p: Pipeline, location: dict[str, Any]
) -> list[dict[str, Any]] | None:
    """The run's median floor area per function against the national statistics of its
    country (``floor_area_statistics.csv`` beside the intensity table); None without."""
    import pandas as pd
    import pyarrow.parquet as pq

    from mfa.buildings.statistics import floor_area_against_statistics, floor_area_medians
    from mfa.io.statistics import STATISTICS_FILE, read_floor_area_statistics

    path = Path(p.intensities.table).parent / STATISTICS_FILE
    if not location.get("iso3") or not path.is_file():
        return None
    t = pq.read_table(work / BUILDINGS, columns=["function", "gfa_m2"])
    medians = floor_area_medians(
        pd.Series(t.column("function").to_numpy(zero_copy_only=False)),
        pd.Series(t.column("gfa_m2").to_numpy()),
    )
    found = floor_area_against_statistics(
        medians, read_floor_area_statistics(path), location["iso3"]
    )
    return found or None


def publish(work_dir: Path) -> Path:
    """Check every layer, write ``run.json``, move the run in place, switch ``latest``.

    Returns the published run folder. On any failed check nothing is published.
    """
    t0 = time.perf_counter()
    work = Path(work_dir)
    ctx = _ctx(work)
    p = _pipeline(work)
    materials = _run_tables(work).materials
    reports = {f.stem: json.loads(f.read_text()) for f in sorted((work / "reports").glob("*.json"))}
    checks, found = _checks(work, p, materials, reports.get("districts", {}))
    dropped = _record_table(work / "stage" / "dropped.parquet", work / DROPPED, ["stage", "reason"])
    repairs = _record_table(
        work / "stage" / "repairs.parquet", work / REPAIRS, ["attribute", "reason"]
    )
    b0 = reports.get("buildings", {})
    within = int(b0.get("counted_in_buildings") or 0)  # BAG units counted in their pand
    accounted = found.rows + dropped.rows + within
    if b0.get("matches") is None and b0.get("records_read") not in (None, accounted):
        raise ValidationError(
            f"{b0['records_read']} records read but {found.rows} buildings, {within} counted "
            f"in a building and {dropped.rows} left out: every record must be in one of them"
        )
    b = reports.get("buildings", {})
    files = b.get("config_files", [])  # the pipeline's declaration (Pipeline.input_files)
    manifest = {
        "pipeline": p.name,
        "pipeline_file": ctx["pipeline_file"],
        "run_id": ctx["run_id"],
        "status": "succeeded",
        "runner": ctx["runner"],
        "started_at": ctx["started_at"],
        "finished_at": datetime.now(UTC).isoformat(),
        "crs": p.crs,
        "run_key": ctx.get("run_key"),
        "config_digest": config_digest(p, [Path(f["path"]) for f in b.get("config_files", [])]),
        "versions": _versions(),
        "inputs": b.get("inputs", []),
        "as_of": ctx.get("as_of"),  # a pinned run's day (mfa run --as-of), else None
        "pulled": reports.get("pull", {}).get("sources", []),
        "config_files": files,
        "intensities": reports.get("stocks", {}).get("intensities"),
        "uncertainty": reports.get("stocks", {}).get("uncertainty"),
        "compute": {
            "scheduler": reports.get("stocks", {}).get("scheduler"),
            "workers": reports.get("stocks", {}).get("workers"),
            "batch_rows": p.compute.batch_rows,
            "batches": reports.get("stocks", {}).get("batches"),
            "engine": {
                "buildings": reports.get("buildings", {}).get("engine"),
                "stocks": reports.get("stocks", {}).get("engine"),
                # the GeoPackage's buildings layer: in line or its own process (its CPU
                # and memory, and how long the qgis step waited for it)
                "geopackage": reports.get("qgis", {}).get("engine"),
            },
        },
        "row_counts": {
            "records_read": b.get("records_read"),
            "buildings": int(checks["layers"][BUILDINGS]["rows"]),
            "districts": int(checks["layers"].get(DISTRICTS, {}).get("rows", 0)),
            "dropped": dropped.rows,
            # records that are part of a building (BAG units), where a source has them
            **({"counted_in_buildings": within} if within else {}),
        },
        "provenance": found.provenance,
        "quality": {
            attr: {k.removeprefix(f"{attr}_"): round(float(v), 4) for k, v in row.items()}
            for attr, row in _quality_summary(found.quality).items()
        },
        "totals_t": {k: v for k, v in checks["totals"].items() if k != "gfa_m2"},
        "total_gfa_m2": checks["totals"]["gfa_m2"],
        "checks": {k: v for k, v in checks.items() if k != "totals"},
        "dropped": {
            "counts_by_reason": dropped.counts.sort_values("count", ascending=False).to_dict(
                orient="records"
            ),
            # the first ones; dropped.csv beside it lists them all
            "records": dropped.head.to_dict(orient="records"),
            "records_listed": len(dropped.head),
        },
        "repairs": {
            "counts": repairs.counts.sort_values(
                ["count", "attribute"], ascending=[False, True]
            ).to_dict(orient="records"),
            "file": REPAIRS,
        },
        "matches": b.get("matches"),
        "imputed_from_cohort_peers": reports.get("stocks", {}).get("imputed_from_cohort_peers"),
        "flows": reports.get("flows"),
        "guessed": guess_shares(found.guessed) if found.guessed is not None else None,
        "guessed_by_rule": rule_shares(found.rules) if found.rules is not None else None,
        "coverage": reports.get("districts", {}).get("coverage"),
        "crs_extent": reports.get("stocks", {}).get("crs_extent"),
        "qgis": {k: v for k, v in reports.get("qgis", {}).items() if k not in ("seconds", "engine")}
        or None,
        "heights": b.get("heights"),
        "storey_height_m": b.get("storey_height_m"),
        "archetypes": b.get("archetypes"),
        "location": ctx.get("location"),
        "floor_area_vs_statistics": _floor_area_check(work, p, ctx.get("location") or {}),
        # roads and water for the maps of mfa query / match (their sha256 are in inputs)
        "map_context": p.map.model_dump(mode="json") if p.map else None,
        "timings_s": {step: r.get("seconds") for step, r in reports.items() if isinstance(r, dict)},
    }
    manifest["files"] = published_files(work)
    manifest["timings_s"]["publish"] = round(time.perf_counter() - t0, 3)
    (work / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str))
    previous = _previous_manifest(work.parent.parent / "latest" / MANIFEST)
    (work / REPORT).write_text(report_markdown(manifest, previous))
    shutil.rmtree(work / "stage")
    shutil.rmtree(work / "reports")
    (work / "context.json").unlink()
    for f in work.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    fsync_dir(work)
    failpoint("publish:checked")

    pipeline_dir = work.parent.parent
    final = pipeline_dir / ctx["run_id"]
    try:
        os.rename(work, final)
        with contextlib.suppress(OSError):
            work.parent.rmdir()  # .work/, when no other run is in progress
        fsync_dir(pipeline_dir)
        failpoint("publish:renamed")
        link_tmp = pipeline_dir / f".latest-{ctx['run_id']}"
        os.symlink(ctx["run_id"], link_tmp, target_is_directory=True)
        failpoint("publish:linked")
        os.replace(link_tmp, pipeline_dir / "latest")
        fsync_dir(pipeline_dir)
        failpoint("publish:switched")
    except OSError as exc:
        raise PublishError(
            f"{final}: could not publish the run ({exc}); the previous 'latest' is unchanged"
        ) from exc
    pruned = prune_runs(pipeline_dir, p.output.keep_runs)
    if pruned:
        log.info("pruned %d old run(s) beyond keep_runs=%d", len(pruned), p.output.keep_runs)
    log.info("published %s", final)
    return final

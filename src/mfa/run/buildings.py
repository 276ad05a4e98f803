"""The two engine steps: ``buildings`` (pass 1: read, normalise, clean, check; the
run-wide rules) and ``stocks`` (pass 2: impute, locate, tonnes; the buildings layer and
the run's sums). See :mod:`mfa.engine`."""

from __future__ import annotations

import json
import pickle
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq

from mfa.config import Pipeline
from mfa.crs import as_crs, check_data_extent
from mfa.engine import check_buildings, finish_buildings, read_sums
from mfa.errors import InputDataError
from mfa.executor import worker_count
from mfa.failpoints import failpoint
from mfa.incremental import run_key
from mfa.io.districts import read_districts
from mfa.io.files import file_record
from mfa.io.geoparquet import write_layer
from mfa.io.location import resolve_profile
from mfa.io.tables import (
    load_archetype_rules,
)
from mfa.parallel import without_cyclic_gc
from mfa.run.context import (
    BUILDINGS,
    MODEL,
    _ctx,
    _load_model,
    _pipeline,
    _report,
    _run_tables,
    as_written,
    log,
)
from mfa.run.qgisfiles import start_buildings_layer
from mfa.run.sources import _engine_source, _model, _no_buildings
from mfa.stocks.aggregate import UNASSIGNED
from mfa.stocks.uncertainty import (
    group_percentiles,
)


def _region_check(p: Pipeline, profile: str | None) -> dict[str, Any]:
    """The profile's RASMI region (``rasmi_region``), and a warning when the pipeline's
    ``[intensities] region`` is another one."""
    import tomllib

    if profile is None:
        return {}
    path = Path(p.archetypes.dir) / f"profile_{profile}.toml"
    region = tomllib.loads(path.read_text(encoding="utf-8")).get("rasmi_region")
    if region is None:
        return {}
    out: dict[str, Any] = {"rasmi_region": region}
    if region != p.intensities.region:
        out["warning"] = (
            f"profile {profile} is for RASMI region {region}, the pipeline uses "
            f'{p.intensities.region}: set [intensities] region = "{region}" if the data '
            "lie there"
        )
    return out


@without_cyclic_gc
def build_buildings(work_dir: Path) -> Path:
    """Pass 1 of the engine: read the sources in batches; normalise, clean, check, add
    heights; leave out repeated ids and footprints; sum the cohort statistics; stage."""
    t0 = time.perf_counter()
    work = Path(work_dir)
    ctx = _ctx(work)
    p = _pipeline(work)
    profile, chosen = resolve_profile(p)  # "auto": from where the data lie
    rules = load_archetype_rules(p.archetypes.dir, profile)
    region = ctx.get("intensities_region") or {"requested": p.intensities.region}
    chosen["intensities_region"] = region
    if region.get("requested") != "auto":  # a region chosen from the country is not checked
        chosen |= _region_check(p, profile)
    inputs: list[dict[str, Any]] = []
    started = datetime.fromisoformat(ctx["started_at"])
    day = started.date().isoformat()  # the folder of a new online OSM snapshot
    # a pinned run (--as-of) is the run of that day: its year ages the buildings
    run_year = int((ctx.get("as_of") or day)[:4])
    h = p.sources.heights
    storey: float | dict[str, float] = rules.storey_height_m
    if h is not None and h.storey_height_m:  # the pipeline's one value, for every function
        storey = h.storey_height_m
    elif rules.storey_height_by_function:
        storey = {**rules.storey_height_by_function, "*": rules.storey_height_m}
    districts = read_districts(p.sources.districts, p.crs) if p.sources.districts else None
    model = _model(p, _run_tables(work), rules, run_year, storey, districts)
    stage = work / "stage"
    if districts is not None:
        write_layer(districts, stage / "districts_input.parquet")
    with open(stage / MODEL, "wb") as f:
        pickle.dump(model, f)
    source, matches = _engine_source(p, rules, inputs, day, ctx.get("as_of"))
    checked = check_buildings(source, model, h, stage, p.compute.scheduler, p.compute.workers)
    failpoint("buildings:computed")
    if checked["buildings"] == 0:
        raise _no_buildings(
            p, checked["records_read"], [pd.read_parquet(stage / "dropped_checked.parquet")]
        )
    # the online snapshot (if any) first, then every local file the pipeline declares
    declared = p.input_files()
    inputs += [{"role": f.role, **file_record(f.path)} for f in declared if f.kind == "data"]
    if ctx.get("run_key") is None:  # an online source: known now that its snapshot is
        ctx["run_key"] = run_key(as_written(p, ctx), day, ctx.get("as_of"))
        (work / "context.json").write_text(json.dumps(ctx, indent=2))
    repairs = pq.read_metadata(stage / "repairs.parquet").num_rows
    _report(
        work,
        "buildings",
        {
            "inputs": inputs,
            "config_files": [
                {"role": f.role, **file_record(f.path)} for f in declared if f.kind == "config"
            ],
            "records_read": checked["records_read"],
            "counted_in_buildings": checked["counted_in_buildings"],
            "buildings_computed": checked["buildings"],
            "repairs": repairs,
            "matches": matches,
            "heights": checked["raster"],
            "storey_height_m": storey,
            "archetypes": chosen,
            "engine": {
                k: checked[k]
                for k in (
                    "batches",
                    "batches_read_by_workers",
                    "repeated_footprints",
                    "worker_seconds",
                )
            },
            "seconds": round(time.perf_counter() - t0, 3),
        },
    )
    log.info("%d buildings checked in %d batches", checked["buildings"], checked["batches"])
    return stage


@without_cyclic_gc
def estimate_stocks(work_dir: Path) -> Path:
    """Pass 2 of the engine: impute, locate, tonnes and percentiles → buildings layer;
    the run's additive sums for the aggregate layers."""
    t0 = time.perf_counter()
    work = Path(work_dir)
    p = _pipeline(work)
    model = _load_model(work)
    done = finish_buildings(
        model,
        work / "stage",
        work / BUILDINGS,
        as_crs(p.crs),
        p.compute.scheduler,
        p.compute.workers,
    )
    # the layer is complete: the GeoPackage's copy of it is written beside the next steps
    start_buildings_layer(work, done["buildings"])
    extent = None
    if done["buildings"]:  # areas must be right where the buildings are (mfa.crs)
        geo = json.loads(pq.read_metadata(work / BUILDINGS).metadata[b"geo"])
        bbox = geo["columns"][geo["primary_column"]].get("bbox")
        if bbox:
            extent = check_data_extent(p.crs, tuple(bbox))
            if extent["outside_area_of_use"]:
                log.info(
                    "the buildings lie outside the area of use of %s (%s); areas are within "
                    "%.2f%% there",
                    p.crs,
                    extent["area_of_use"],
                    100 * extent["max_area_error"],
                )
    sums = read_sums(work / "stage")
    if p.sources.districts is not None and done["buildings"]:
        inside = sums.districts.drop(index=UNASSIGNED, errors="ignore")["building_count"].sum()
        if inside == 0:
            raise InputDataError(
                f"{p.sources.districts.path}: none of the {done['buildings']} buildings lies in "
                "a district; check that the districts cover the buildings' area and that both "
                "files have the right CRS"
            )
    materials = list(model.materials)
    tables = _run_tables(work)
    archetypes, draws = tables.archetypes, tables.draws
    whole = sums.district_archetypes.groupby(level="archetype_id").sum()
    floor = whole.reindex(archetypes, fill_value=0.0).to_numpy(dtype=float)[None, :]
    band, _ = group_percentiles(floor, draws, materials, tuple(p.uncertainty.percentiles))
    _report(
        work,
        "stocks",
        {
            "intensities": {
                "table": str(p.intensities.table),
                "sha256": file_record(p.intensities.table)["sha256"],
                "overrides": [file_record(o) for o in p.intensities.overrides],
                "region": p.intensities.region,
                "statistic": p.intensities.statistic,
                "materials": materials,
                "kg_per_m2": model.kg_m2.loc[
                    sorted(set(sums.district_archetypes.index.get_level_values("archetype_id")))
                ]
                .round(4)
                .to_dict(orient="index"),
            },
            "uncertainty": {
                "method": "Monte Carlo, one draw per archetype and material shared by its "
                "buildings; piecewise-linear quantile function through p00…p100",
                "draws": p.uncertainty.draws,
                "seed": p.uncertainty.seed,
                "percentiles": list(p.uncertainty.percentiles),
                "totals_t": band.iloc[0].round(3).to_dict(),
            },
            "imputed_from_cohort_peers": done["imputed_from_cohort_peers"],
            "crs_extent": extent,
            "scheduler": p.compute.scheduler,
            "workers": worker_count(p.compute.workers),
            "batches": done["batches"],
            "engine": {k: done[k] for k in ("worker_seconds", "write_seconds")},
            "seconds": round(time.perf_counter() - t0, 3),
        },
    )
    return work / BUILDINGS

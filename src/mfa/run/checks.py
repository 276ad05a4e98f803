"""The checks :func:`mfa.run.publish.publish` runs on the written layers before a run
is published: each layer read back (the buildings row group by row group), sums
balanced, percentiles ordered, flows balanced, the GeoPackage complete."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from mfa.buildings.provenance import rule_sums
from mfa.buildings.report import guess_sums, provenance_counts, shares_from_counts
from mfa.config import Pipeline
from mfa.core.keys import hash128, later_repeats
from mfa.dynamics import check_stock_balance
from mfa.errors import ValidationError
from mfa.executor import executor, ordered_map, worker_count
from mfa.io.geoparquet import check_geoparquet
from mfa.io.qgis import GPKG, PROJECT, check_geopackage
from mfa.io.rasters import check_raster_total
from mfa.outputs import LAYERS
from mfa.run.context import (
    GRID,
    MANIFEST_RECORDS,
    QGIS_LAYERS,
)
from mfa.schema import check_building_rows, material_columns
from mfa.textsafe import csv_neutralise


@dataclass
class _Records:
    """A table of left-out records or repairs as published: rows, counts per key, head."""

    rows: int
    counts: pd.DataFrame  # the key columns and ``count``
    head: pd.DataFrame  # the first MANIFEST_RECORDS rows


def _record_table(staged: Path, csv: Path, key: list[str]) -> _Records:
    """Write the staged table as CSV, sorted by every column in order (so the file does
    not depend on the batches the records came in), batch by batch; count its rows per
    ``key``. The sort holds the table as Arrow strings (the records, not the buildings)."""
    table = pq.read_table(staged)
    names = table.column_names
    table = table.sort_by([(c, "ascending") for c in names])
    counts, head, n = [], [], 0
    with open(csv, "w", encoding="utf-8", newline="") as out:
        pd.DataFrame(columns=names).to_csv(out, index=False)
        for batch in table.to_batches(max_chunksize=100_000):
            df = batch.to_pandas()
            safe = df.apply(lambda c: csv_neutralise(c) if c.dtype.kind in "OUT" else c)
            safe.to_csv(out, index=False, header=False)  # formulas neutralised: textsafe
            counts.append(df.groupby(key, dropna=False).size())
            if n < MANIFEST_RECORDS:
                head.append(df.head(MANIFEST_RECORDS - n))
            n += len(df)
    total = (
        pd.concat(counts).groupby(level=list(range(len(key))), dropna=False).sum()
        if counts
        else pd.Series(dtype="int64", index=pd.MultiIndex.from_arrays([[]] * len(key), names=key))
    )
    first = pd.concat(head, ignore_index=True) if head else pd.DataFrame(columns=names)
    return _Records(n, total.rename("count").reset_index(), first)


@dataclass
class _LayerCheck:
    """What checking the buildings layer row group by row group found."""

    rows: int
    totals: dict[str, float]
    provenance: dict[str, dict[str, int]]
    quality: pd.DataFrame  # provenance counts, one row (mfa.buildings.report)
    guessed: pd.Series | None = None  # buildings and tonnes imputed (guess_sums)
    rules: pd.Series | None = None  # buildings and tonnes per attribute and rule (rule_sums)


@dataclass
class _RowGroupCheck:
    """The sums of one checked row group of the buildings layer."""

    rows: int
    totals: dict[str, float]
    keys: np.ndarray  # 128-bit hashes of the building ids
    counts: pd.DataFrame  # provenance_counts
    guessed: pd.Series  # guess_sums
    rules: pd.Series  # rule_sums
    provenance: pd.Series  # value counts of the *_source columns and match_method


def _empty_rows(source: pq.ParquetFile, names: list[str]) -> pd.DataFrame:
    return source.schema_arrow.empty_table().select(names).drop_columns(["bbox"]).to_pandas()


def _check_row_group(
    path: Path, i: int, names: list[str], tonnes: list[str], materials: list[str], q: list[str]
) -> _RowGroupCheck:
    """Check row group ``i`` of the buildings layer (runs on a worker thread)."""
    where = str(path)
    table = pq.ParquetFile(path).read_row_group(i, columns=names)
    box = table["bbox"].combine_chunks()
    if not np.isfinite(box.field("xmin").to_numpy(zero_copy_only=False)).all():
        raise ValidationError(f"{where}: some buildings have no geometry; drop them")
    df = table.drop_columns(["bbox"]).to_pandas()
    check_building_rows(df, where)
    if df[tonnes].isna().any().any():
        raise ValidationError(f"{where}: material tonnes have missing values")
    mass = df[material_columns(materials)].sum(axis=1).to_numpy()
    if not (abs(mass - df["mass_t"].to_numpy()) <= 1e-9 * abs(mass).clip(min=1)).all():
        raise ValidationError(f"{where}: mass_t is not the sum of the materials")
    _check_percentiles(df, ["mass", *materials], q, where)
    cols = [c for c in df.columns if c.endswith("_source") or c == "match_method"]
    return _RowGroupCheck(
        rows=len(df),
        totals={c: float(df[c].to_numpy(dtype=float).sum()) for c in ["gfa_m2", *tonnes]},
        keys=hash128(df["building_id"].astype(str).to_numpy(object)),
        counts=provenance_counts(df),
        guessed=guess_sums(df),
        rules=rule_sums(df),
        provenance=pd.concat({c: df[c].value_counts() for c in cols}, names=["column", "value"]),
    )


def _check_buildings_layer(path: Path, p: Pipeline, materials: list[str]) -> _LayerCheck:
    """Check the buildings layer as written, one row group at a time (memory bounded by
    the row group): schema and values of every row, tonnes and their sum, percentiles,
    a geometry per row (covering bbox), ids unique across the layer; sum what the
    manifest reports."""
    where = str(path)
    tonnes = ["mass_t", *material_columns(materials)]
    q = [f"p{int(x):02d}" for x in p.uncertainty.percentiles]
    source = pq.ParquetFile(path)
    names = [c for c in source.schema_arrow.names if c != "geometry"]
    totals = dict.fromkeys(["gfa_m2", *tonnes], 0.0)
    keys, counts, prov, n = [], [], [], 0
    guessed: pd.Series | None = None
    by_rule: pd.Series | None = None
    # row groups checked on the run's threads, their sums added up in file order
    args = ((path, i, names, tonnes, materials, q) for i in range(source.num_row_groups))
    with executor("threads", p.compute.workers) as submit:
        for part in ordered_map(
            submit, _check_row_group, args, 2 * worker_count(p.compute.workers)
        ):
            for c in totals:
                totals[c] += part.totals[c]
            keys.append(part.keys)
            counts.append(part.counts)
            guessed = part.guessed if guessed is None else guessed + part.guessed
            by_rule = part.rules if by_rule is None else by_rule.add(part.rules, fill_value=0.0)
            prov.append(part.provenance)
            n += part.rows
    for i, rep in enumerate(later_repeats(keys)):
        if rep.any():
            table = source.read_row_group(i, columns=["building_id"])
            first = table["building_id"][int(np.argmax(rep))].as_py()
            raise ValidationError(f"{where}: building_id {first!r} occurs more than once")
    quality = (
        pd.concat(counts).sum().to_frame().T
        if counts
        else provenance_counts(_empty_rows(source, names))
    )
    by_value = pd.concat(prov).groupby(level=[0, 1]).sum() if prov else pd.Series(dtype=int)
    provenance: dict[str, dict[str, int]] = {}
    for (col, value), count in by_value.sort_index().items():
        provenance.setdefault(str(col), {})[str(value)] = int(count)
    return _LayerCheck(n, totals, provenance, quality, guessed, by_rule)


def _checks(
    work: Path, p: Pipeline, materials: list[str], reports_districts: dict[str, Any]
) -> tuple[dict[str, Any], _LayerCheck]:
    """Check every layer of the work folder; returns the checks and the buildings' sums."""
    layers: dict[str, Any] = {}
    checks: dict[str, Any] = {"schema": "passed", "materials_sum": "passed"}
    found = None
    for entry in LAYERS:  # buildings first: the other checks compare with its sums
        path = work / entry.file
        if not path.exists():
            if entry.check == "buildings":
                raise ValidationError(f"{path} missing; the stocks step writes it")
            continue
        layers[entry.file] = check_geoparquet(path, p.crs)
        if entry.check == "buildings":
            found = _check_buildings_layer(path, p, materials)
            continue
        assert found is not None, "the buildings layer comes first in mfa.outputs.LAYERS"
        if entry.check == "groups":
            checks[entry.check_name] = _check_groups(
                path, entry.what, found, p, materials, reports_districts.get(entry.conservation)
            )
        elif entry.check == "flows":
            checks[entry.check_name] = _check_flows(path, p, found.totals)
    assert found is not None
    totals = found.totals
    checks = {"layers": layers, **checks}
    if (work / GRID).exists():
        rasters = {}
        for name in reports_districts.get("rasters", []):
            col = name.removeprefix("stock_").removesuffix(".tif") + "_t"
            rasters[name] = check_raster_total(
                work / name, p.crs, totals[col], rtol=1e-5
            )  # float32 cells
        if rasters:
            checks["rasters"] = rasters
    checks["totals"] = totals
    checks["percentiles_ordered"] = "passed"
    expected = {name: int(layers[f]["rows"]) for name, f in QGIS_LAYERS.items() if f in layers}
    checks["geopackage"] = check_geopackage(work / GPKG, expected)
    missing = [f for f in (PROJECT, *(f"{n}.qml" for n in expected)) if not (work / f).is_file()]
    if missing:
        raise ValidationError(f"{work}: {missing} missing; the qgis_outputs step writes them")
    return checks, found


def _check_groups(
    path: Path,
    what: str,
    found: _LayerCheck,
    p: Pipeline,
    materials: list[str],
    conservation: float | None,
) -> dict[str, Any]:
    """Check a layer of group sums (districts, grid cells) against the buildings: its
    ordered percentiles, every sum and the building count. Read a batch at a time and
    without the polygons (a national grid has about a million cells)."""
    q = [f"p{int(x):02d}" for x in p.uncertainty.percentiles]
    names = ["mass", *materials]
    summed = ["gfa_m2", "mass_t", *material_columns(materials)]
    source = pq.ParquetFile(path)
    have = set(source.schema_arrow.names)
    missing = [c for c in [*summed, "building_count"] if c not in have]
    if missing:
        raise ValidationError(f"{path}: missing columns {missing}")
    _check_percentiles(source.schema_arrow.empty_table().to_pandas(), names, q, str(path))
    columns = [*summed, "building_count", *(f"{n}_t_{x}" for n in names for x in q)]
    sums, count = dict.fromkeys(summed, 0.0), 0
    for batch in source.iter_batches(GROUP_CHECK_BATCH, columns=columns):
        groups = batch.to_pandas()
        _check_percentiles(groups, names, q, str(path))
        for col in summed:
            sums[col] += float(groups[col].to_numpy(dtype=float).sum())
        count += int(groups["building_count"].sum())
    _balance(found.totals, sums, what)
    if count != found.rows:
        raise ValidationError(f"{what}: building_count does not add up to the buildings")
    return {"status": "passed", "rtol": 1e-9, "draw_by_draw_max_rel_error": conservation}


#: Groups (districts, grid cells) read at a time by the publish check.
GROUP_CHECK_BATCH = 65_536


def _balance(totals: dict[str, float], sums: dict[str, float], what: str) -> None:
    """Every sum over the groups equals the buildings' sum (rtol 1e-9)."""
    for col, g in sums.items():
        b = totals[col]
        if not np.isclose(b, g, rtol=1e-9, atol=0.0):
            raise ValidationError(
                f"mass balance: {col} sums to {b!r} over buildings but {g!r} over {what}; "
                "a building is counted twice or not at all: check the district assignment"
            )


_FLOW_CHECK_COLUMNS = [
    "scenario",
    "district_id",
    "material",
    "year",
    *(f"{k}_{u}" for k in ("stock", "inflow", "outflow") for u in ("m2", "t")),
]
#: Flow rows read at a time by the publish check.
FLOW_CHECK_BATCH = 65_536


def _check_flows(path: Path, p: Pipeline, totals: dict[str, float]) -> dict[str, Any]:
    """Every district × material × scenario series balances; the base year is today's
    stock. Read a row group at a time, a district's rows together (the layer lists the
    districts one after the other): a national run has millions of flow rows."""
    assert p.dynamics is not None
    worst, start = 0.0, {}
    finished: set[str] = set()
    held = pd.DataFrame()
    batches = pq.ParquetFile(path).iter_batches(FLOW_CHECK_BATCH, columns=_FLOW_CHECK_COLUMNS)
    for batch in (*batches, None):
        rows = held if batch is None else pd.concat([held, batch.to_pandas()], ignore_index=True)
        if batch is not None and len(rows):  # the last district may go on: keep it
            last = rows["district_id"].to_numpy(object) == rows["district_id"].iloc[-1]
            rows, held = rows[~last], rows[last]
        if not len(rows):
            continue
        ids = set(rows["district_id"].unique())
        if ids & finished:
            raise ValidationError(f"{path}: the rows of a district are not together")
        finished |= ids
        worst = max(worst, _flows_balance(rows))
        base = rows[(rows["year"] == p.dynamics.base_year) & (rows["material"] == "mass")]
        for name, t in base.groupby("scenario")["stock_t"].sum().items():
            start[name] = start.get(name, 0.0) + float(t)
    for name, t in start.items():
        if not np.isclose(t, totals["mass_t"], rtol=1e-9):
            raise ValidationError(
                f"flows: scenario {name} starts from {t} t, the buildings hold {totals['mass_t']} t"
            )
    return {"status": "passed", "max_rel_error": worst}


def _flows_balance(flows: pd.DataFrame) -> float:
    """The largest relative error of the stock balance of the series of ``flows``."""
    worst = 0.0
    for col in ("m2", "t"):
        wide = {
            k: flows.pivot_table(
                index=["scenario", "district_id", "material"], columns="year", values=f"{k}_{col}"
            ).to_numpy()
            for k in ("stock", "inflow", "outflow")
        }
        s = wide["stock"]
        worst = max(
            worst,
            check_stock_balance(s, wide["inflow"], wide["outflow"], initial_stock=s[:, 0]),
        )
    return worst


def _check_percentiles(df: pd.DataFrame, names: list[str], q: list[str], where: str) -> None:
    """Percentile columns exist, are finite, non-negative and increasing (p05 ≤ p50 ≤ p95)."""
    for name in names:
        cols = [f"{name}_t_{x}" for x in q]
        missing = [c for c in cols if c not in df.columns]
        if missing:
            raise ValidationError(f"{where}: missing percentile columns {missing}")
        v = df[cols].to_numpy(dtype=float)
        if not np.isfinite(v).all() or (v < 0).any():
            raise ValidationError(f"{where}: {name} percentiles are negative or not finite")
        if (np.diff(v, axis=1) < -1e-9 * np.abs(v[:, 1:]).clip(min=1)).any():
            raise ValidationError(f"{where}: {name} percentiles are not increasing")


def _quality_summary(counts: pd.DataFrame) -> dict[str, dict[str, float]]:
    """Run-level shares observed / imputed / missing per attribute (from the one row of
    provenance counts)."""
    shares = shares_from_counts(counts).iloc[0]
    out: dict[str, dict[str, float]] = {}
    for col, value in shares.drop("building_count").items():
        if str(col).startswith("match_"):
            out.setdefault("match", {})[f"match_{str(col).removeprefix('match_')}"] = float(value)
            continue
        attr, kind = str(col).rsplit("_", 1)
        out.setdefault(attr, {})[f"{attr}_{kind}"] = float(value)
    return out

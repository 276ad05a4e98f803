"""The flows step: demolition and construction flows per district, year, material and
scenario, made and written a piece of districts at a time.

A district's flow rows depend only on its own cohorts and on the run's cohort years and
floor area (:func:`mfa.dynamics.flows.district_flows`), so the districts are cut into
pieces of about :data:`PIECE_ROWS` rows that the run's workers compute side by side; the
pieces are written in district order, each as soon as the ones before it are. Memory
holds a few pieces, not the flows of the whole run (a national run has millions of flow
rows), and the file is the same bytes as one written from all rows at once
(:class:`~mfa.io.layerwriter.LayerWriter` with ``regroup``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import shapely

from mfa.crs import as_crs
from mfa.dynamics.flows import ScenarioLevers, district_flows, impute_cohort_years
from mfa.engine import read_sums
from mfa.executor import executor, ordered_map, worker_count
from mfa.io.geoparquet import ROW_GROUP_SIZE, geometry_type_names, read_layer, wkb_layer_table
from mfa.io.layerwriter import LayerWriter
from mfa.io.tables import load_lifetimes
from mfa.parallel import without_cyclic_gc
from mfa.run.context import FLOWS, _pipeline, _report, _run_tables
from mfa.staging import read_year_fill
from mfa.stocks.uncertainty import PartsMap

__all__ = ["PIECE_ROWS", "forecast_flows"]

#: Flow rows made at a time (whole districts; a district has scenarios × years ×
#: (materials + 1) rows): small enough that a few pieces fit in memory, large enough that
#: the work per piece dwarfs its overhead.
PIECE_ROWS = ROW_GROUP_SIZE // 2


@dataclass(frozen=True)
class _Shapes:
    """The districts' polygons as the flows layer stores them: one WKB per district in a
    dictionary that every piece's rows point into (so a row group holds each polygon it
    uses once)."""

    names: pd.Index
    wkb: pa.Array
    bounds: np.ndarray
    types: np.ndarray
    has_z: np.ndarray

    @staticmethod
    def of(districts: pd.DataFrame | None) -> _Shapes:
        if districts is None or not len(districts):
            empty = np.zeros(0)
            return _Shapes(pd.Index([]), pa.array([], pa.binary()), np.zeros((0, 4)), empty, empty)
        shapes = np.asarray(districts.geometry.values)
        return _Shapes(
            pd.Index(districts["district_id"].astype(object)),
            pa.array(list(shapely.to_wkb(shapes, flavor="iso")), pa.binary()),
            shapely.bounds(shapes),
            shapely.get_type_id(shapes),
            shapely.has_z(shapes),
        )


@without_cyclic_gc
def forecast_flows(work_dir: Path) -> Path | None:
    """Demolition and construction flows per district, year, material and scenario."""
    t0 = time.perf_counter()
    work = Path(work_dir)
    p = _pipeline(work)
    if p.dynamics is None:
        _report(work, "flows", {"skipped": "no [dynamics] in the pipeline file"})
        return None
    dyn = p.dynamics
    tables = _run_tables(work)
    lifetimes = load_lifetimes(dyn.lifetimes)
    # floor area and buildings per district, archetype and construction year (0: unknown)
    attrs = read_sums(work / "stage").cohorts.reset_index()
    attrs["construction_year"] = attrs["construction_year"].astype("Int64").replace(0, pd.NA)
    # the fill the buildings layer stores (made once, after the buildings step)
    fill = read_year_fill(work / "stage")
    years, n_imputed, fill = impute_cohort_years(attrs, dyn.fallback_construction_year, fill)
    too_new = years > dyn.base_year
    attrs = attrs.assign(construction_year=years.clip(upper=dyn.base_year))
    q = tuple(p.uncertainty.percentiles)
    common = (
        lifetimes,
        dyn.base_year,
        dyn.horizon,
        tables.central,
        tables.draws,
        tables.archetypes,
        q,
        np.sort(attrs["construction_year"].unique()),
        float(attrs["gfa_m2"].sum()),
    )
    scenarios = [ScenarioLevers(**sc.model_dump()) for sc in dyn.scenarios]
    districts = None
    if p.sources.districts is not None:
        districts = read_layer(work / "stage" / "districts_input.parquet")
    shapes, crs = _Shapes.of(districts), as_crs(p.crs)
    n_materials = len(tables.central.columns) + 1
    per_district = len(scenarios) * (dyn.horizon - dyn.base_year + 1) * n_materials
    pieces = _pieces(attrs, max(1, PIECE_ROWS // per_district))
    workers = worker_count(p.compute.workers)
    summary = _Summary(dyn.base_year, [s.name for s in scenarios])
    rows = 0
    with (
        executor(p.compute.scheduler, p.compute.workers) as submit,
        LayerWriter(work / FLOWS, regroup=True) as writer,
    ):

        def map_parts(fn, args):
            return ordered_map(submit, fn, args, 2 * workers)

        if len(pieces) > 1:  # pieces side by side, each in one thread
            args = ((piece, scenarios, common, shapes, crs, None) for piece in pieces)
            done = map_parts(_piece, args)
        else:  # one piece: its scenarios side by side, or its percentiles in parts
            done = iter([_piece(pieces[0], scenarios, common, shapes, crs, map_parts)])
        for table, part in done:
            writer.write(table)
            summary.add(part)
            rows += table.num_rows
    _report(
        work,
        "flows",
        {
            "scenarios": [s.model_dump() for s in dyn.scenarios],
            "base_year": dyn.base_year,
            "horizon": dyn.horizon,
            "lifetimes": {f: {"kind": lt.kind, **lt.params} for f, lt in lifetimes.items()},
            "construction_years_imputed": n_imputed,
            "construction_years_imputed_share": round(
                n_imputed / max(int(attrs["building_count"].sum()), 1), 6
            ),
            "year_fill": fill.to_json(),
            "construction_years_after_base_year": int(attrs["building_count"][too_new].sum()),
            "summary": summary.report(),
            "rows": rows,
            "pieces": len(pieces),
            "seconds": round(time.perf_counter() - t0, 3),
        },
    )
    return work / FLOWS


def _pieces(attrs: pd.DataFrame, per_piece: int) -> list[pd.DataFrame]:
    """The cohort rows cut into pieces of ``per_piece`` whole districts, in the order the
    flows layer lists districts (sorted ids)."""
    ids = attrs["district_id"].astype(object)
    order = np.sort(ids.unique())
    piece = pd.Index(order).get_indexer(ids) // per_piece
    n = max(int(piece.max()) + 1, 1) if len(piece) else 1
    return [attrs[piece == k] for k in range(n)]


def _piece(
    attrs: pd.DataFrame,
    scenarios: list[ScenarioLevers],
    common: tuple,
    shapes: _Shapes,
    crs: Any,
    map_parts: PartsMap | None,
) -> tuple[pa.Table, dict[str, Any]]:
    """The flows layer's rows of one piece of districts (every scenario), and its part of
    the step's summary."""
    lifetimes, base_year, horizon, central, draws, archetypes, q, cohorts, total = common

    def one(sc: ScenarioLevers, parts: PartsMap | None) -> pd.DataFrame:
        return district_flows(
            attrs, lifetimes, base_year, horizon, sc, central, draws, archetypes, q,
            cohorts, total, parts,
        )  # fmt: skip

    if map_parts is not None and len(scenarios) >= 2:  # the scenarios side by side
        frames = list(map_parts(one, ((sc, None) for sc in scenarios)))
    else:
        frames = [one(sc, map_parts) for sc in scenarios]
    # district by district (scenarios, years, materials within): a row group then holds
    # each district's polygon once, not once per scenario
    flows = pd.concat(frames, ignore_index=True)
    del frames
    flows = flows.sort_values("district_id", kind="stable", ignore_index=True)
    for column in ("scenario", "district_id", "material"):
        if flows[column].dtype != object:
            flows[column] = flows[column].astype(object)
    # 31 December of each row's year as Arrow date32 (days since 1970)
    year = flows["year"].to_numpy(dtype=np.int64)
    dec31 = (year + 1 - 1970).astype("datetime64[Y]").astype("datetime64[D]") - 1
    flows["date"] = pd.arrays.ArrowExtensionArray(pa.array(dec31.astype(np.int32), pa.date32()))
    return _flows_table(flows, shapes, crs), _Summary.part(flows, base_year)


def _flows_table(flows: pd.DataFrame, shapes: _Shapes, crs: Any) -> pa.Table:
    """The flows layer's rows, each with its district's polygon (none without districts),
    dictionary-encoded so that the rows of a district share one copy of the polygon.

    A national run has ~1.4 M flow rows (2,000 parishes × 4 scenarios × 16 years × 10
    materials) and a parish polygon of thousands of vertices (tens of kB of WKB): a copy
    per row would need tens of GB in memory and on disk.
    """
    index = shapes.names.get_indexer(flows["district_id"].astype(object))
    known = index >= 0
    row_bounds = np.full((len(flows), 4), np.nan)
    row_bounds[known] = shapes.bounds[index[known]]
    used = np.unique(index[known])
    geometry = pa.DictionaryArray.from_arrays(
        pa.array(np.where(known, index, 0).astype(np.int32), mask=~known), shapes.wkb
    )
    kinds = geometry_type_names(shapes.types[used], shapes.has_z[used])
    return wkb_layer_table(flows, geometry, row_bounds, kinds, crs)


class _Summary:
    """The flows step's summary per scenario, added up piece by piece: tonnes coming free
    in the ten years after the base year per material, and the demolition rate (floor
    area demolished in those years / 10 / floor area in the base year)."""

    def __init__(self, base_year: int, scenarios: list[str]) -> None:
        self.scenarios = scenarios
        self.out_t: dict[str, pd.Series] = {}
        self.out_m2: dict[str, float] = dict.fromkeys(scenarios, 0.0)
        self.stock_m2: dict[str, float] = dict.fromkeys(scenarios, 0.0)

    @staticmethod
    def part(flows: pd.DataFrame, base_year: int) -> dict[str, Any]:
        """A piece's sums (tonnes per scenario and material, floor areas per scenario)."""
        year = flows["year"]
        mass = flows["material"] == "mass"
        first10 = flows[(year > base_year) & (year <= base_year + 10)]
        return {
            "out_t": first10.groupby(["scenario", "material"])["outflow_t"].sum(),
            "out_m2": first10[first10["material"] == "mass"]
            .groupby("scenario")["outflow_m2"]
            .sum(),
            "stock_m2": flows[(year == base_year) & mass].groupby("scenario")["stock_m2"].sum(),
        }

    def add(self, part: dict[str, Any]) -> None:
        t = part["out_t"]
        for sc in self.scenarios:
            mine = t[t.index.get_level_values("scenario") == sc].droplevel("scenario")
            self.out_t[sc] = (
                mine if sc not in self.out_t else self.out_t[sc].add(mine, fill_value=0.0)
            )
            self.out_m2[sc] += float(part["out_m2"].get(sc, 0.0))
            self.stock_m2[sc] += float(part["stock_m2"].get(sc, 0.0))

    def report(self) -> dict[str, Any]:
        return {
            sc: {
                "outflow_t_next_10_years": self.out_t.get(sc, pd.Series(dtype=float))
                .round(1)
                .to_dict(),
                "demolition_rate_per_year": round(self.out_m2[sc] / 10 / self.stock_m2[sc], 6)
                if self.stock_m2[sc]
                else None,
            }
            for sc in self.scenarios
        }

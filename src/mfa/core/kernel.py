"""The estimation kernel: every per-building rule of a run, one batch at a time (pure).

A run passes over its building records twice (see :mod:`mfa.engine`):

1. :func:`clean_batch` then :func:`check_batch` on each batch of source records:
   normalise to the canonical schema (a register's rules; footprint sources arrive
   normalised), geometry hygiene, plausibility repairs, heights and floors from heights.
   Rows left out get a reason; repaired values a record. Every rule here looks at one
   record only; the two that look across records (a repeated register id, a repeated
   footprint) are applied across the whole input with :mod:`mfa.core.keys`, and the
   cohort statistics that fill imputed structures and floor counts are summed over every
   batch (:func:`mfa.buildings.cohorts.cohort_counts` are additive).
2. :func:`finish_batch` on each checked batch, with those run-wide results: drop the
   repeated footprints, impute from cohort peers, one representative point per building
   (GEOS PointOnSurface, computed in pass 1 with the other :class:`Shapes`) for its
   district and its grid cell, tonnes per material (floor area × intensity) with
   percentiles, and the batch's additive sums (:class:`mfa.core.sums.Sums`) from which
   every aggregate layer is made. Pass 2 never parses a geometry.

The same functions run for one batch holding a whole municipality and for hundreds of
batches of a national register; the results are the same (tested).
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from dataclasses import dataclass

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from mfa.buildings._dropped import DropLog
from mfa.buildings.archetypes import ArchetypeRules
from mfa.buildings.districts import PointLocator
from mfa.buildings.provenance import derive_gfa_rule, with_rules
from mfa.buildings.quality import (
    DUPLICATE_GEOMETRY,
    check_ranges,
    clean_geometries,
    impute_from_cohort_peers,
    refine_with_heights,
)
from mfa.core.keys import box_keys
from mfa.core.sums import Sums, batch_sums
from mfa.dynamics.flows import YearFill, fill_years
from mfa.errors import InputDataError
from mfa.hilbert import hilbert_distance
from mfa.schema import empty_dropped
from mfa.stocks.aggregate import UNASSIGNED
from mfa.stocks.grid import grid_index
from mfa.stocks.mass import material_mass

__all__ = [
    "Model",
    "Normaliser",
    "Shapes",
    "check_batch",
    "clean_batch",
    "finish_batch",
    "forget_locators",
]

#: Source records (a batch) → canonical buildings and the records left out.
Normaliser = Callable[[gpd.GeoDataFrame], tuple[gpd.GeoDataFrame, pd.DataFrame]]


@dataclass(frozen=True)
class Model:
    """The run-wide, read-only inputs of the per-building rules, made once per run.

    Attributes
    ----------
    rules
        Archetype rules and plausibility limits (``config/archetypes``).
    run_year
        Latest plausible construction year.
    storey_height_m
        Height of one storey (m), for floors from heights: one value, or per function
        (``"*"``: the others).
    valid_bounds
        The CRS's area of use in CRS units (x0, y0, x1, y1); also the extent of the
        Hilbert curve that orders each batch's rows.
    materials
        Material ids, in vocabulary order.
    kg_m2
        Archetype × material intensities (kg/m² floor area) at the pipeline's statistic.
    unit_quantiles
        Per archetype, the percentiles of t/m² (``<material>_t_pXX``, ``mass_t_pXX``).
    archetypes
        The archetypes the Monte Carlo draws cover: the columns of the group sums.
    district_ids, district_geoms
        District ids and polygons in the same order (None: no districts).
    district_key
        A digest of the polygons (their WKB), which names their point locator in each
        process (on a Dask cluster every task unpickles its own copy of the polygons).
    cell_size_m
        Edge of a grid cell (m) (None: no grid).
    fallback_construction_year
        The pipeline's stated year for a run where no building has one (``[dynamics]``).
    """

    rules: ArchetypeRules
    run_year: int
    storey_height_m: float | dict[str, float]
    valid_bounds: tuple[float, float, float, float]
    materials: tuple[str, ...]
    kg_m2: pd.DataFrame
    unit_quantiles: pd.DataFrame
    archetypes: tuple[str, ...]
    district_ids: np.ndarray | None = None
    district_geoms: np.ndarray | None = None
    district_key: str = ""
    cell_size_m: float | None = None
    fallback_construction_year: int | None = None


def clean_batch(
    records: gpd.GeoDataFrame, normalise: Normaliser | None, model: Model
) -> tuple[gpd.GeoDataFrame, list[pd.DataFrame], pd.DataFrame]:
    """Normalise a batch of source records and clean their geometries.

    Returns the canonical buildings (repeated footprints not yet removed), the tables of
    records left out, and the geometry repairs.
    """
    rows, dropped = (records, empty_dropped()) if normalise is None else normalise(records)
    rows, dropped_geometry, repairs = clean_geometries(
        rows, model.valid_bounds, model.rules.limits.min_footprint_m2, dedupe=False
    )
    return rows, [dropped, dropped_geometry], repairs


def check_batch(
    rows: gpd.GeoDataFrame, raster_height_m: pd.Series | None, model: Model
) -> tuple[gpd.GeoDataFrame, pd.DataFrame]:
    """Plausibility limits, raster heights and floors from heights.

    ``raster_height_m`` (aligned with ``rows``; None without a height raster) is read by
    the caller. Returns the rows and their repairs.
    """
    limits = model.rules.limits
    rows = with_rules(rows)
    rows, repairs_range = check_ranges(rows, limits, model.run_year, model.rules.floors_by_function)
    rows, repairs_height = refine_with_heights(
        rows, raster_height_m, model.storey_height_m, limits, model.rules.height_classes
    )
    return rows, pd.concat([repairs_range, repairs_height], ignore_index=True)


_LOCATORS: dict[str, PointLocator] = {}
_LOCATORS_LOCK = threading.Lock()


def district_key(geoms: np.ndarray) -> str:
    """The :attr:`Model.district_key` of these polygons."""
    return hashlib.sha256(b"".join(shapely.to_wkb(geoms))).hexdigest()


def _locator(geoms: np.ndarray, key: str = "") -> PointLocator:
    """One point locator per set of district polygons per process, named by ``key``
    (default: their :func:`district_key`, 0.1 s for 1,300 parish outlines, too much to
    repeat per batch), built by the first batch that needs it while the others wait."""
    key = key or district_key(geoms)
    with _LOCATORS_LOCK:
        if key not in _LOCATORS:
            _LOCATORS.clear()
            _LOCATORS[key] = PointLocator(geoms)
        return _LOCATORS[key]


def forget_locators() -> None:
    """Drop this process's point locators (their outlines cut to grid cells: about 0.56 GB
    for 4,356 parish outlines of 3,000 vertices), once pass 2 is done; a later pass builds
    anew."""
    with _LOCATORS_LOCK:
        _LOCATORS.clear()


@dataclass(frozen=True)
class Shapes:
    """What the second pass needs of a batch's geometries, computed once in the first:
    the representative point (GEOS PointOnSurface; the point itself for points) of each
    row, its bounds (x0, y0, x1, y1), ISO WKB, type id and Z flag."""

    x: np.ndarray
    y: np.ndarray
    bounds: np.ndarray
    wkb: np.ndarray
    type_id: np.ndarray
    has_z: np.ndarray
    n_coords: np.ndarray

    @classmethod
    def of(cls, geometry: np.ndarray) -> Shapes:
        geometry = np.asarray(geometry)
        points = shapely.point_on_surface(geometry)
        return cls(
            x=shapely.get_x(points),
            y=shapely.get_y(points),
            bounds=shapely.bounds(geometry),
            wkb=shapely.to_wkb(geometry, flavor="iso"),
            type_id=shapely.get_type_id(geometry),
            has_z=shapely.has_z(geometry),
            n_coords=shapely.get_num_coordinates(geometry),
        )

    def box_keys(self) -> np.ndarray:
        """:func:`mfa.core.keys.box_keys` of the rows."""
        return box_keys(self.bounds, self.type_id, self.n_coords)


def finish_batch(
    rows: pd.DataFrame,
    shapes: Shapes,
    repeated: np.ndarray,
    statistics: tuple[pd.Series, pd.Series],
    model: Model,
    year_fill: YearFill | None = None,
) -> tuple[pd.DataFrame, np.ndarray, pd.DataFrame, Sums]:
    """Districts, grid cells, tonnes and percentiles of a checked batch, and its sums.

    Parameters
    ----------
    rows
        Output of :func:`check_batch` without its geometry (attributes only).
    shapes
        The rows' :class:`Shapes`.
    repeated
        Rows whose footprint an earlier row of the input has (left out).
    statistics
        Run-wide cohort statistics (:func:`mfa.buildings.cohorts.cohort_statistics`).
    year_fill
        The run's fill of unknown construction years (made after pass 1 from every
        batch); stored in the buildings (:func:`mfa.dynamics.flows.fill_years`).

    Returns
    -------
    buildings
        The buildings layer's attributes: canonical columns with ``district_id``,
        ``mass_t`` and ``<material>_t`` (t) and their percentile columns, in the layer's
        order: along a Hilbert curve over the CRS's area of use, ties in input order.
    rows_taken
        For each output row, its position in ``rows`` (to take the geometries with).
    dropped
        The repeated footprints, with their reason.
    sums
        The batch's additive sums per district, grid cell, archetype and cohort.
    """
    log = DropLog(rows["building_id"], "geometry")
    log.drop(pd.Series(repeated, index=rows.index), DUPLICATE_GEOMETRY)
    kept = np.flatnonzero(log.keep.to_numpy())
    if len(kept):
        distance = hilbert_distance(shapes.bounds[kept], np.asarray(model.valid_bounds))
        kept = kept[np.argsort(distance, kind="stable")]
    rows = rows.iloc[kept].reset_index(drop=True)
    rows, peer_counts = impute_from_cohort_peers(rows, statistics=statistics)
    rows = fill_years(rows, year_fill)
    rows["gfa_rule"] = derive_gfa_rule(rows)
    x, y = shapes.x[kept], shapes.y[kept]
    if model.district_ids is not None and model.district_geoms is not None:
        where = (
            _locator(model.district_geoms, model.district_key).locate(x, y)
            if len(rows)
            else np.zeros(0, int)
        )
        ids = np.where(where >= 0, model.district_ids[np.maximum(where, 0)], None)
        rows["district_id"] = pd.array(ids, dtype="string")
    cells = grid_index(x, y, model.cell_size_m) if model.cell_size_m else None

    unknown = ~rows["archetype_id"].isin(model.kg_m2.index)
    if unknown.any():
        raise InputDataError(
            f"building {rows['building_id'][unknown].iloc[0]}: archetype "
            f"{rows['archetype_id'][unknown].iloc[0]} has no intensity row; add it to the "
            "intensity table or an override"
        )
    mass = material_mass(rows["gfa_m2"], rows["archetype_id"], model.kg_m2)
    per_m2 = model.unit_quantiles.reindex(rows["archetype_id"].astype(object)).to_numpy()
    pct = pd.DataFrame(
        per_m2 * rows["gfa_m2"].to_numpy(dtype=float)[:, None],
        columns=model.unit_quantiles.columns,
    )
    table = pd.concat([rows, mass[["mass_t", *mass.columns.drop("mass_t")]], pct], axis=1)
    sums = batch_sums(table, cells, model.archetypes, model.materials, peer_counts, UNASSIGNED)
    return table, kept, log.table(), sums

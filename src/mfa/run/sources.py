"""The building sources of a run as engine batches (:class:`mfa.engine.Source`), and
the run's :class:`mfa.core.kernel.Model`."""

from __future__ import annotations

from typing import Any

import geopandas as gpd
import pandas as pd

from mfa.buildings.archetypes import ArchetypeRules
from mfa.buildings.conflate import conflate
from mfa.buildings.quality import area_of_use_bounds, clean_geometries
from mfa.config import Pipeline
from mfa.config.load import streamed_footprints
from mfa.core.kernel import Model
from mfa.engine import Source, rules_model
from mfa.errors import InputDataError
from mfa.io.footprints import FootprintBatches, buildings_from_footprint_file
from mfa.io.osm import buildings_from_osm
from mfa.io.register import (
    buildings_from_register,
    iter_register,
    iter_register_ids,
    register_parts,
    register_size,
)
from mfa.run.context import Tables
from mfa.stocks.uncertainty import (
    unit_quantiles,
)


def _read_footprints(
    p: Pipeline,
    rules: ArchetypeRules,
    inputs: list[dict[str, Any]],
    day: str,
    as_of: str | None = None,
) -> tuple[gpd.GeoDataFrame, pd.DataFrame, pd.DataFrame | None]:
    """The footprints, the ones left out and the repairs made while reading them
    (``as_of``: a pinned run's day, for an online OSM query)."""
    fp = p.sources.footprints
    assert fp is not None
    if fp.schema_ == "overture":
        from mfa.io.overture import buildings_from_overture

        assert fp.file is not None
        area = fp.bbox or _districts_lonlat(p)
        buildings, dropped, counts = buildings_from_overture(fp.file, area, p.crs, rules)
        inputs.append({"role": "footprints", "overture": {**counts, "area_lonlat": area}})
        return buildings, dropped, None
    if fp.file is not None:
        return (*buildings_from_footprint_file(fp, p.crs, rules), None)
    if fp.osm_file is not None:
        buildings, dropped, repairs, _ = buildings_from_osm(fp, p.crs, rules)
        return buildings, dropped, repairs
    buildings, dropped, repairs, snapshot = buildings_from_osm(
        fp, p.crs, rules, p.cache_root(), day, as_of
    )
    inputs.append(
        {
            "role": "footprints",
            "query": fp.place or fp.polygon_wkt,
            "snapshot": snapshot,
            **({"as_of": as_of} if as_of is not None else {}),
        }
    )
    return buildings, dropped, repairs


def _districts_lonlat(p: Pipeline) -> tuple[float, float, float, float] | None:
    """The districts' extent in lon/lat (the pipeline's area), None without districts."""
    d = p.sources.districts
    if d is None or d.path is None:
        return None
    import pyogrio
    from pyproj import Transformer

    info = pyogrio.read_info(d.path, layer=d.layer, force_total_bounds=True)
    x0, y0, x1, y1 = info["total_bounds"]
    t = Transformer.from_crs(info["crs"], "OGC:CRS84", always_xy=True)
    lon0, lat0, lon1, lat1 = t.transform_bounds(x0, y0, x1, y1)
    return (float(lon0), float(lat0), float(lon1), float(lat1))


def _sources(
    p: Pipeline,
    rules: ArchetypeRules,
    inputs: list[dict[str, Any]],
    day: str,
    as_of: str | None = None,
) -> tuple[gpd.GeoDataFrame, list[pd.DataFrame], list[pd.DataFrame], dict[str, Any] | None, int]:
    """Read, normalise and clean every building source; conflate when there are two.

    Returns the buildings, the dropped and repair tables, the match report (or None)
    and the number of records read. ``day`` (the run's UTC day) names the snapshot of an
    online source.
    """
    bounds = area_of_use_bounds(p.crs)
    min_area = rules.limits.min_footprint_m2
    dropped: list[pd.DataFrame] = []
    repairs: list[pd.DataFrame] = []
    parts: dict[str, gpd.GeoDataFrame] = {}
    n_records = 0
    if p.sources.register_ is not None:
        src = p.sources.register_
        reg, d = buildings_from_register(src, p.crs, rules)
        n_records += len(reg) + len(d)
        reg, d2, r = clean_geometries(reg, bounds, min_area)
        parts["register"] = reg
        dropped += [d, d2]
        repairs.append(r)
    if p.sources.footprints is not None:
        fps, d, r0 = _read_footprints(p, rules, inputs, day, as_of)
        n_records += len(fps) + len(d)
        fps, d2, r = clean_geometries(fps, bounds, min_area)
        parts["footprints"] = fps
        dropped += [d, d2]
        repairs += [r] if r0 is None else [r0, r]
    if len(parts) == 2:
        fps = parts["footprints"]
        link = fps["register_link"] if "register_link" in fps.columns else None
        buildings, report = conflate(
            parts["register"], fps.drop(columns=["register_link"], errors="ignore"), link
        )
        return buildings, dropped, repairs, report, n_records
    (buildings,) = parts.values()
    return (
        buildings.drop(columns=["register_link"], errors="ignore"),
        dropped,
        repairs,
        None,
        n_records,
    )


def _no_buildings(p: Pipeline, n_records: int, dropped: list[pd.DataFrame]) -> InputDataError:
    """The error for a run left with no building: what was read and why it was left out."""
    src = p.sources
    where = (
        src.register_.path
        if src.register_ is not None
        else (
            src.footprints.file
            or src.footprints.osm_file
            or src.footprints.place
            or src.footprints.polygon_wkt
        )
        if src.footprints is not None
        else "?"
    )
    if n_records == 0:
        return InputDataError(f"{where}: no building records; check the file (and its layer)")
    table = pd.concat(dropped, ignore_index=True)
    reasons = ", ".join(
        f"{reason}: {count}" for reason, count in table["reason"].value_counts().head(3).items()
    )
    key = "sources.register.existing_status" if src.register_ is not None else "the source"
    return InputDataError(
        f"{where}: none of the {n_records} records is a building mfa can use ({reasons}); "
        f"check the file and {key}"
    )


def _engine_source(
    p: Pipeline,
    rules: ArchetypeRules,
    inputs: list[dict[str, Any]],
    day: str,
    as_of: str | None = None,
) -> tuple[Source, dict[str, Any] | None]:
    """The run's building records as engine batches, and the conflation report
    (``as_of``: a pinned run's day)."""
    batch = p.compute.batch_rows
    reg = p.sources.register_
    if reg is not None and reg.schema_ == "bag" and p.sources.units is not None:
        from mfa.io.bag import buildings_from_bag

        bag, dropped, counts = buildings_from_bag(reg, p.sources.units, p.crs, rules)
        bag = bag.reset_index(drop=True)
        cuts = range(0, max(1, len(bag)), batch)
        return Source(
            batches=(bag.iloc[i : i + batch] for i in cuts),
            register=False,
            dropped=dropped,
            records_read=counts["panden"] + counts["units"],
            counted_in_buildings=counts["units_counted"],
        ), None
    if p.sources.register_ is not None and p.sources.footprints is None:
        src = p.sources.register_
        parts = register_parts(src, p.crs, batch)  # read by the workers, where it can be
        return (
            Source(
                batches=iter(parts) if parts is not None else iter_register(src, p.crs, batch),
                register=True,
                existing_status=tuple(src.existing_status),
                ids=iter_register_ids(src, p.crs, batch),
                total_records=register_size(src),
            ),
            None,
        )
    fp = p.sources.footprints
    if fp is not None and streamed_footprints(p) is not None:
        # a footprint file (a pulled OGC API / WFS snapshot too): read batch by batch
        batches = FootprintBatches(fp, p.crs, rules, batch)
        return Source(batches=iter(batches), register=False, dropped=batches.dropped), None
    if p.sources.register_ is None:
        fps, dropped, repairs = _read_footprints(p, rules, inputs, day, as_of)
        fps = fps.drop(columns=["register_link"], errors="ignore").reset_index(drop=True)
        cuts = range(0, max(1, len(fps)), batch)
        return Source(
            batches=(fps.iloc[i : i + batch] for i in cuts),
            register=False,
            dropped=dropped,
            repairs=repairs,
        ), None
    # register and footprints: cleaned and conflated across the whole area, one batch
    buildings, dropped, repairs, matches, n_records = _sources(p, rules, inputs, day, as_of)
    return (
        Source(
            batches=iter([buildings.reset_index(drop=True)]),
            register=False,
            dropped=pd.concat(dropped, ignore_index=True),
            repairs=pd.concat(repairs, ignore_index=True),
            clean=False,
            records_read=n_records,
        ),
        matches,
    )


def _model(
    p: Pipeline,
    tables: Tables,
    rules: ArchetypeRules,
    run_year: int,
    storey: float,
    districts: gpd.GeoDataFrame | None,
) -> Model:
    """The run's model: rules, intensities, draws' quantiles, districts (as
    :func:`mfa.io.districts.read_districts` read them), grid."""
    materials, archetypes, draws = tables.materials, tables.archetypes, tables.draws
    kg_m2 = tables.central
    unit_q = unit_quantiles(draws, archetypes, materials, tuple(p.uncertainty.percentiles))
    return rules_model(rules, p, run_year, storey, materials, kg_m2, unit_q, archetypes, districts)

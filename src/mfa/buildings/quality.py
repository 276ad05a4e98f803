"""Geometry hygiene, plausibility checks and repairs, heights → floors (pure).

Order of preference for every attribute: register, OSM tags, raster, per-function default.
A value that fails a plausibility limit is not used; the next source fills it, and the
change is recorded as a *repair* (``record_id``, ``attribute``, ``reason``). A building
that cannot be kept at all is *dropped* with a reason. Nothing disappears silently.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from mfa.buildings._dropped import DropLog
from mfa.buildings.floor_area import gross_floor_area
from mfa.buildings.heights import (
    floor_limits,
    floors_from_height,
    plausible_height,
    storey_heights,
    wall_heights,
)
from mfa.buildings.provenance import set_rule

__all__ = [
    "REPAIR_COLUMNS",
    "Limits",
    "area_of_use_bounds",
    "check_ranges",
    "clean_geometries",
    "geometry_keys",
    "refine_with_heights",
]

REPAIR_COLUMNS = ("record_id", "attribute", "reason", "detail")


@dataclass(frozen=True)
class Limits:
    """Plausibility limits (see config/archetypes/defaults.toml, [limits])."""

    min_height_m: float = 2.0
    max_height_m: float = 300.0
    max_floors: float = 100
    min_year: int = 1000
    min_gfa_ratio: float = 1 / 3
    max_gfa_ratio: float = 3.0
    min_footprint_m2: float = 1.0
    max_gfa_m2: float = 2_000_000.0
    max_storey_area_m2: float = 520_000.0
    #: Most floors a building height may give per function (RS/RM/NR); above it the
    #: height is of a tower, dome or spire, not of storeys, and the floors are not used.
    max_floors_from_height: dict[str, float] = field(default_factory=dict)
    #: Most height per √footprint (m/m) a building's storeys may have: above it the
    #: height is of a tower, spire or chimney, and the floors are not taken from it.
    max_height_to_width: float = 10.0


@lru_cache(maxsize=16)
def area_of_use_bounds(crs: str, margin: float = 0.5) -> tuple[float, float, float, float]:
    """The CRS's area of use in its own units, widened by ``margin`` × its extent per side.

    The margin keeps real data that national practice projects beyond the EPSG area of use
    (Bornholm lies ~100 km east of the 12°E limit of EPSG:25832) while still rejecting
    coordinates in the wrong CRS (degrees read as metres, swapped axes, another zone).
    """
    from pyproj import CRS, Transformer

    c = CRS.from_user_input(crs)
    aou = c.area_of_use
    if aou is None:
        raise ValueError(f"{crs} has no area of use")
    t = Transformer.from_crs("EPSG:4326", c, always_xy=True)
    xmin, ymin, xmax, ymax = t.transform_bounds(*aou.bounds, densify_pts=21)
    pad = margin * max(xmax - xmin, ymax - ymin)
    return (xmin - pad, ymin - pad, xmax + pad, ymax + pad)


def _repairs(
    ids: pd.Series, mask: pd.Series | np.ndarray, attribute: str, reason: str
) -> pd.DataFrame:
    mask = np.asarray(mask, dtype=bool)
    n = int(mask.sum())
    return pd.DataFrame(
        {
            "record_id": ids[mask].astype("string").to_numpy(),
            "attribute": pd.array([attribute] * n, dtype="string"),
            "reason": pd.array([reason] * n, dtype="string"),
            "detail": pd.array([pd.NA] * n, dtype="string"),
        }
    )


def _empty_repairs() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="string") for c in REPAIR_COLUMNS})


def geometry_keys(geometry: np.ndarray) -> np.ndarray:
    """What makes two geometries "the same footprint": the WKB of the normalised shape
    (vertex order, ring start and orientation do not matter). Object array of bytes."""
    return shapely.to_wkb(shapely.normalize(geometry))


#: Reason of a record left out because an earlier record has the same geometry.
DUPLICATE_GEOMETRY = "duplicate geometry: the same footprint as an earlier building"


def clean_geometries(
    buildings: gpd.GeoDataFrame,
    valid_bounds: tuple[float, float, float, float] | None,
    min_footprint_m2: float,
    dedupe: bool = True,
) -> tuple[gpd.GeoDataFrame, pd.DataFrame, pd.DataFrame]:
    """Repair invalid footprints, reject unusable geometries, remove duplicates.

    Parameters
    ----------
    buildings
        Canonical buildings in a projected CRS (footprints or register points).
    valid_bounds
        (xmin, ymin, xmax, ymax) of the CRS's area of use in CRS units; geometries whose
        bounding-box centre lies outside are rejected. None skips the check.
    min_footprint_m2
        Footprints smaller than this (m²) are degenerate slivers and rejected.
    dedupe
        Leave out a geometry equal to an earlier one's (:func:`geometry_keys`). The
        streaming engine passes False and applies the same rule across its batches.

    Returns
    -------
    buildings, dropped, repairs
        Invalid polygons are repaired with ``make_valid`` (keeping the polygonal parts) and
        ``footprint_area_m2`` updated; the area change is in the repair reason. Where the
        floor area was derived from the footprint it is recomputed.
    """
    ids = buildings["building_id"].astype("string")
    log = DropLog(ids, "geometry")
    geom = buildings.geometry.values
    log.drop(
        pd.Series(shapely.is_missing(geom) | shapely.is_empty(geom), index=buildings.index),
        "empty or null geometry",
    )
    types = pd.Series(shapely.get_type_id(geom), index=buildings.index)
    polygonal = types.isin([3, 6])
    log.drop(~(polygonal | (types == 0)), "geometry is neither a footprint polygon nor a point")

    repairs = [_empty_repairs()]
    invalid = polygonal & ~pd.Series(shapely.is_valid(geom), index=buildings.index) & log.keep
    fixed = geom.copy()
    if invalid.any():
        bad = geom[invalid.to_numpy()]
        made = shapely.make_valid(bad)
        # keep only the polygonal parts of what make_valid returns
        parts, index = shapely.get_parts(made, return_index=True)
        poly_mask = np.isin(shapely.get_type_id(parts), [3, 6])
        merged = np.array([None] * len(bad), dtype=object)
        if poly_mask.any():
            owners, dense = np.unique(index[poly_mask], return_inverse=True)
            merged[owners] = shapely.multipolygons(parts[poly_mask], indices=dense)
            one = shapely.get_num_geometries(merged[owners]) == 1
            merged[owners[one]] = shapely.get_geometry(merged[owners[one]], 0)
        before = buildings.loc[invalid, "footprint_area_m2"].astype(float).fillna(0.0).to_numpy()
        after = np.where(pd.isna(merged), 0.0, shapely.area(merged.astype(object)))
        fixed[invalid.to_numpy()] = merged
        rep = _repairs(
            ids, invalid.to_numpy(), "geometry", "invalid footprint repaired with make_valid"
        )
        rep["detail"] = pd.array(
            [f"area {b:.2f} → {a:.2f} m²" for b, a in zip(before, after, strict=True)],
            dtype="string",
        )
        repairs.append(rep)
    out = buildings.set_geometry(gpd.GeoSeries(fixed, index=buildings.index, crs=buildings.crs))
    geom = out.geometry.values
    log.drop(
        pd.Series(shapely.is_missing(geom) | shapely.is_empty(geom), index=out.index),
        "invalid footprint without a polygonal part after make_valid",
    )
    area = pd.Series(np.where(polygonal, shapely.area(geom), np.nan), index=out.index)
    log.drop(
        polygonal & (area < min_footprint_m2),
        "degenerate footprint: area "
        + area.round(3).astype("string").fillna("")
        + f" m² < {min_footprint_m2} m²",
    )
    if valid_bounds is not None:
        box = shapely.bounds(geom)  # the box's centre: a building is far smaller than
        x, y = (box[:, 0] + box[:, 2]) / 2, (box[:, 1] + box[:, 3]) / 2  # the margin
        xmin, ymin, xmax, ymax = valid_bounds
        outside = ~((x >= xmin) & (x <= xmax) & (y >= ymin) & (y <= ymax))
        log.drop(
            pd.Series(outside, index=out.index),
            "coordinates far outside the area of use of the pipeline CRS (wrong CRS?)",
        )
    if dedupe:
        key = pd.Series(geometry_keys(geom), index=out.index)
        dup = key[log.keep].duplicated().reindex(out.index, fill_value=False)
        log.drop(dup, DUPLICATE_GEOMETRY)

    out = out.loc[log.keep]
    changed = invalid[log.keep]
    if changed.any():
        new_area = pd.Series(shapely.area(out.geometry.values), index=out.index)
        out.loc[changed, "footprint_area_m2"] = new_area[changed]
        from_fp = changed & (out["gfa_source"] != "register")
        out.loc[from_fp, "gfa_m2"] = (new_area * out["floors"].astype(float))[from_fp]
    out = out.reset_index(drop=True)
    return out, log.table(), pd.concat(repairs, ignore_index=True).astype("string")


def check_ranges(
    buildings: gpd.GeoDataFrame,
    limits: Limits,
    max_year: int,
    floors_by_function: dict[str, float],
) -> tuple[gpd.GeoDataFrame, pd.DataFrame]:
    """Apply the plausibility limits; repair from the next source; return the repairs.

    - construction year outside [min_year, max_year] → missing;
    - floors > max_floors or ≤ 0 → the per-function default (imputed);
    - height outside [min_height_m, max_height_m] → missing;
    - register floor area outside [min_gfa_ratio, max_gfa_ratio] × footprint × floors →
      footprint × floors (imputed);
    - register floor area above ``max_gfa_m2``, or above ``max_storey_area_m2`` × floors
      → footprint × floors (imputed; without a footprint area the register reader drops
      the record).
    """
    b = buildings.copy(deep=False)  # copy-on-write: the caller's frame stays as it is
    ids = b["building_id"]
    out = [_empty_repairs()]

    year = b["construction_year"]
    bad = (
        (year.notna() & ((year < limits.min_year) | (year > max_year))).fillna(False).to_numpy(bool)
    )
    if bad.any():
        out.append(_repairs(ids, bad, "construction_year", f"outside {limits.min_year}…{max_year}"))
        b.loc[bad, "construction_year"] = pd.NA
        b.loc[bad, "construction_year_source"] = "missing"
        set_rule(b, bad, "construction_year", "missing")

    h = b["height_m"]
    bad = (h.notna() & ~plausible_height(h, limits.min_height_m, limits.max_height_m)).to_numpy(
        bool
    )
    if bad.any():
        out.append(
            _repairs(ids, bad, "height_m", f"outside {limits.min_height_m}…{limits.max_height_m} m")
        )
        b.loc[bad, "height_m"] = pd.NA
        b.loc[bad, "height_source"] = "missing"
        set_rule(b, bad, "height", "missing")

    floors = b["floors"]
    bad = ((floors > limits.max_floors) | (floors <= 0)).fillna(False).to_numpy(bool)
    if bad.any():
        out.append(_repairs(ids, bad, "floors", f"not in 1…{limits.max_floors:g}"))
        default = b["function"].map(floors_by_function).astype("Float64")
        b.loc[bad, "floors"] = default[bad]
        b.loc[bad, "floors_source"] = "imputed"
        set_rule(b, bad, "floors", "repaired")
        derived = bad & (b["gfa_source"] != "register").to_numpy()
        b.loc[derived, "gfa_m2"] = (b["footprint_area_m2"] * b["floors"]).astype(float)[derived]
        b.loc[derived, "gfa_source"] = "imputed"

    expected = (b["footprint_area_m2"] * b["floors"]).astype(float)
    ratio = b["gfa_m2"] / expected
    bad = (
        (
            (b["gfa_source"] == "register")
            & expected.notna()
            & ((ratio < limits.min_gfa_ratio) | (ratio > limits.max_gfa_ratio))
        )
        .fillna(False)
        .to_numpy(bool)
    )
    if bad.any():
        out.append(
            _repairs(
                ids,
                bad,
                "gfa_m2",
                f"register floor area is not {limits.min_gfa_ratio:g}…{limits.max_gfa_ratio:g} "
                "× footprint × floors; replaced by footprint × floors",
            )
        )
        b.loc[bad, "gfa_m2"] = expected[bad]
        b.loc[bad, "gfa_source"] = "imputed"
        set_rule(b, bad, "gfa", "repaired")

    storeys = b["floors"].where(b["floors"] > 0).fillna(1).astype(float)
    gfa = b["gfa_m2"].astype(float)
    bad = (
        (
            (b["gfa_source"] == "register")
            & expected.notna()  # without a footprint area the reader drops such a record
            & ((gfa > limits.max_gfa_m2) | (gfa / storeys > limits.max_storey_area_m2))
        )
        .fillna(False)
        .to_numpy(bool)
    )
    if bad.any():
        out.append(
            _repairs(
                ids,
                bad,
                "gfa_m2",
                f"register floor area above {limits.max_gfa_m2:,.0f} m² or "
                f"{limits.max_storey_area_m2:,.0f} m² per storey (larger than any building); "
                "replaced by footprint × floors",
            )
        )
        b.loc[bad, "gfa_m2"] = expected[bad]
        b.loc[bad, "gfa_source"] = "imputed"
        set_rule(b, bad, "gfa", "repaired")
    return b, pd.concat(out, ignore_index=True).astype("string")


def _floors_beyond_limits(
    b: pd.DataFrame,
    from_h: pd.Series,
    height_class: pd.Series | None,
    classes: pd.DataFrame | None,
    limits: Limits,
) -> tuple[np.ndarray, np.ndarray]:
    """Where floors from a height must not be used, and why (one reason per building):
    more floors than its height class allows (a church, a tower, a dome), a height of
    more than ``max_height_to_width`` × √footprint (a spire, a chimney), or more floors
    than its function allows."""
    cap, by_class = floor_limits(
        b["function"], height_class, classes, limits.max_floors_from_height, limits.max_floors
    )
    over = (from_h > cap).fillna(False).to_numpy(bool)
    side = np.sqrt(b["footprint_area_m2"].astype("Float64").to_numpy(float, na_value=np.nan))
    h = b["height_m"].astype("Float64").to_numpy(float, na_value=np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        slender = h / side > limits.max_height_to_width
    why = np.full(len(b), "", dtype=object)
    cls = (
        height_class.astype(object).fillna("").to_numpy()
        if height_class is not None
        else np.full(len(b), "", dtype=object)
    )
    generic = over & ~by_class.to_numpy(bool)
    why[generic] = (
        "height / storey height gives more floors than the function's limit "
        "(a tower, dome or spire?): floors from height not used"
    )
    for c in pd.unique(cls[over & by_class.to_numpy(bool)]):
        n = float(classes.at[c, "max_floors_from_height"]) if classes is not None else 0
        why[over & (cls == c)] = (
            f"the height of a {c} building (config/archetypes/height_classes.csv) is not "
            + (f"more than {n:g} storey{'s' if n != 1 else ''}" if n > 0 else "storeys")
            + ": floors from height not used"
        )
    thin = slender & (why == "")
    why[thin] = (
        f"height above {limits.max_height_to_width:g} × √footprint (a spire, tower or "
        "chimney?): floors from height not used"
    )
    return over | slender, why


def _walls(b: pd.DataFrame, storey: pd.Series) -> tuple[pd.Series, np.ndarray]:
    """The walls' height (m) of each building: :func:`mfa.buildings.heights.wall_heights`
    of its height and OSM roof tags (none: the height itself)."""
    none = pd.Series(pd.NA, index=b.index, dtype="Float64")
    roof_h = b["roof_height_m"] if "roof_height_m" in b.columns else none
    roof_l = b["roof_levels"] if "roof_levels" in b.columns else none
    return wall_heights(b["height_m"], roof_h, roof_l, storey)


def refine_with_heights(
    buildings: gpd.GeoDataFrame,
    raster_height_m: pd.Series | None,
    storey_height_m: float | dict[str, float],
    limits: Limits,
    classes: pd.DataFrame | None = None,
) -> tuple[gpd.GeoDataFrame, pd.DataFrame]:
    """Fill heights from a raster and floors from heights, in the order of preference.

    - ``height_m``: an observed (OSM) height stays; where missing, a plausible raster
      height is used (``height_source`` = ``raster``). Implausible raster heights (e.g.
      0 m where the nDSM sees no building) are recorded as repairs and not used.
    - ``floors``: where the floor count was imputed and a height exists,
      floors = the walls' height (height − ``roof_height_m``, else − ``roof_levels`` ×
      storey height; a roof not below the height is not subtracted, with a repair) /
      storey height of the building's height class (``classes``, from
      its OSM tags: a warehouse's storeys are 8.53 m) or function (rounded, ≥ 1), with
      the height's source; unless that gives more floors than its height class
      (a church: 1; a tower or dome: 0) or function (``limits.max_floors_from_height``,
      else ``max_floors``) allows, or the height is more than
      ``limits.max_height_to_width`` × √footprint (a spire): then the floors stay
      imputed, their rule is ``repaired`` and a repair is recorded.
    - ``gfa_m2``: where it was footprint × floors, recomputed with the new floors.
    """
    b = buildings.copy(deep=False)  # copy-on-write: the caller's frame stays as it is
    repairs = [_empty_repairs()]
    if raster_height_m is not None:
        r = raster_height_m.reindex(b.index).astype("Float64")
        ok = plausible_height(r, limits.min_height_m, limits.max_height_m)
        implausible = (r.notna() & ~ok).to_numpy(bool)
        if implausible.any():
            repairs.append(
                _repairs(
                    b["building_id"],
                    implausible,
                    "height_m",
                    f"raster height outside {limits.min_height_m}…{limits.max_height_m} m: "
                    "not used",
                )
            )
        use = (b["height_source"] == "missing").to_numpy(bool) & ok.to_numpy(bool)
        b.loc[use, "height_m"] = r[use]
        b.loc[use, "height_source"] = "raster"
        set_rule(b, use, "height", "measured")
    has_h = b["height_m"].notna().to_numpy(bool)
    imputed = (b["floors_source"] == "imputed").to_numpy(bool)
    upd = has_h & imputed
    if upd.any():
        cls = b["height_class"] if "height_class" in b.columns else None
        storey = storey_heights(b["function"], storey_height_m, cls, classes)
        wall, roof_too_tall = _walls(b, storey)
        roof_too_tall &= upd
        if roof_too_tall.any():
            repairs.append(
                _repairs(
                    b["building_id"],
                    roof_too_tall,
                    "roof_height_m",
                    "roof:height (or roof:levels × storey height) not below the building's "
                    "height: the roof is not subtracted, floors from the full height",
                )
            )
        from_h = floors_from_height(wall, storey)
        too_many, why = _floors_beyond_limits(b, from_h, cls, classes, limits)
        too_many &= upd
        for reason in pd.unique(why[too_many]):
            repairs.append(_repairs(b["building_id"], too_many & (why == reason), "floors", reason))
        set_rule(b, too_many, "floors", "repaired")
        upd &= ~too_many
        b.loc[upd, "floors"] = from_h[upd]
        b.loc[upd, "floors_source"] = b.loc[upd, "height_source"]
        set_rule(b, upd, "floors", "height")
        derived = upd & (b["gfa_source"] != "register").to_numpy(bool)
        gfa = gross_floor_area(b["footprint_area_m2"].astype(float), b["floors"].astype(float))
        b.loc[derived, "gfa_m2"] = gfa[derived]
        b.loc[derived, "gfa_source"] = b.loc[derived, "floors_source"]
    return b, pd.concat(repairs, ignore_index=True).astype("string")


def impute_from_cohort_peers(
    buildings: gpd.GeoDataFrame,
    min_peers: int = 5,
    statistics: tuple[pd.Series, pd.Series] | None = None,
) -> tuple[gpd.GeoDataFrame, dict[str, int]]:
    """Refine imputed structure and floors from observed buildings of the same function
    and construction decade ("archetype default by use and cohort").

    Where a value fell back to the per-function default, it becomes the most frequent
    observed structure (median observed floor count) of buildings with the same function
    and decade in the same run, if there are at least ``min_peers`` of them; the
    ``*_source`` stays ``imputed``. The archetype id and a floor area derived from
    footprint × floors follow. Returns the counts of values refined this way.

    ``statistics`` (structure and floors per cohort, from
    :func:`mfa.buildings.cohorts.cohort_statistics`) gives run-wide statistics when
    ``buildings`` is only part of the run; by default they come from ``buildings``.
    """
    from mfa.buildings.cohorts import cohort_counts, cohort_keys, cohort_statistics, cohort_targets

    if statistics is None:
        whole = pd.Series("all", index=buildings.index, dtype="string")
        statistics = cohort_statistics(cohort_counts(buildings, whole), min_peers)
    structure, floors = statistics
    b = buildings.copy(deep=False)  # copy-on-write: the caller's frame stays as it is
    key, _ = cohort_keys(b)
    s_todo, f_todo = cohort_targets(b, statistics)

    b.loc[s_todo, "structure"] = key[s_todo].map(structure).astype("string")
    b.loc[f_todo, "floors"] = key[f_todo].map(floors).astype("Float64")
    set_rule(b, f_todo, "floors", "peers")
    derived = f_todo & (b["gfa_source"] == "imputed")
    b.loc[derived, "gfa_m2"] = (b["footprint_area_m2"] * b["floors"]).astype(float)[derived]
    counts = {"structure": int(s_todo.sum()), "floors": int(f_todo.sum())}

    b["archetype_id"] = (b["function"] + "-" + b["structure"]).astype("string")
    return b, counts

"""Function and floors of OSM buildings with generic tags, from tagged neighbours.

Pure and vectorised (one shapely STRtree ``dwithin`` query, pandas group statistics).
The rules (``docs/design.md``, "OSM building semantics"; numbers in
``config/archetypes/defaults.toml`` ``[osm]``):

- ``building=residential`` is a single-family house (RS) up to
  ``max_house_footprint_m2`` of footprint, a multi-family building (RM) above;
- a building with a generic tag (``generic_tags``, e.g. ``building=yes``) and a use tag
  (``amenity``, ``shop``, ``office``, ``tourism``: a school, a mall, a hotel) is
  non-residential (NR);
- a building with a generic tag and no function from its tags inside an OSM
  ``landuse=*`` polygon of ``osm_landuse.csv`` takes that polygon's function (the smallest
  polygon holding its representative point; ``residential``: single- or multi-family by
  footprint, as ``building=residential``);
- a building with a generic tag and no function from its tags takes the most frequent
  function of the buildings with a tagged function within ``neighbour_radius_m`` (at
  least ``neighbour_min_count`` of them);
- a building with a generic tag and no floor count takes the median floors of the
  buildings with tagged floors within the same radius (at least the same count);
- a building with a generic tag still without a function but with more than
  ``max_house_floors`` floors (tagged or from neighbours) is multi-family (RM), not a house;
- otherwise the per-function defaults stay. Every value set here is marked ``imputed``.
"""

from __future__ import annotations

import logging

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from mfa.buildings.archetypes import ArchetypeRules, archetype_id
from mfa.buildings.floor_area import gross_floor_area
from mfa.buildings.provenance import set_rule

__all__ = ["impute_generic"]

log = logging.getLogger("mfa")


def _neighbour_pairs(
    points: np.ndarray, donors: np.ndarray, takers: np.ndarray, radius_m: float
) -> tuple[np.ndarray, np.ndarray]:
    """(taker, donor) positions of the donors within ``radius_m`` of each taker (no self)."""
    if not len(donors) or not len(takers):
        return np.empty(0, int), np.empty(0, int)
    t, d = shapely.STRtree(points[donors]).query(
        points[takers], predicate="dwithin", distance=radius_m
    )
    t, d = takers[t], donors[d]
    other = t != d
    return t[other], d[other]


def _landuse_functions(
    points: np.ndarray, takers: np.ndarray, landuse: gpd.GeoDataFrame | None, rules: ArchetypeRules
) -> tuple[np.ndarray, np.ndarray]:
    """(taker positions, landuse value) for the takers whose representative point lies in
    a landuse polygon with a rule: the smallest such polygon (shapely STRtree)."""
    if landuse is None or landuse.empty or not len(takers):
        return np.empty(0, int), np.empty(0, object)
    land = landuse[landuse["landuse"].isin(rules.osm_landuse_function.index)]
    if land.empty:
        return np.empty(0, int), np.empty(0, object)
    geoms = land.geometry.to_numpy()
    t, p = shapely.STRtree(geoms).query(points[takers], predicate="within")
    if not len(t):
        return np.empty(0, int), np.empty(0, object)
    order = np.lexsort((shapely.area(geoms[p]), t))  # the smallest polygon first
    t, p = t[order], p[order]
    first = np.unique(t, return_index=True)[1]
    return takers[t[first]], land["landuse"].to_numpy(object)[p[first]]


def impute_generic(
    buildings: gpd.GeoDataFrame,
    rules: ArchetypeRules,
    use_tag: pd.Series | None = None,
    landuse: gpd.GeoDataFrame | None = None,
) -> gpd.GeoDataFrame:
    """Resolve function and floors of generically tagged buildings (see the module docstring).

    ``buildings``: canonical buildings from OSM (``osm_building`` holds the tag), geometry
    in a projected CRS (m). ``use_tag``: aligned booleans, True where the element carries a
    use tag (``amenity``, ``shop``, ``office``, ``tourism``). ``landuse``: OSM landuse
    polygons (column ``landuse``) in the same CRS, or None. Returns them with
    ``function``, ``structure``, ``archetype_id``, ``floors`` and ``gfa_m2`` (m² =
    footprint area × floors) updated where a rule applied.
    """
    if buildings.empty:
        return buildings
    o = rules.osm_neighbours
    b = buildings.copy()
    tagv = b["osm_building"].astype("string").str.lower()
    generic = tagv.isin(list(o.generic_tags)).fillna(False).to_numpy()
    floors_tagged = (b["floors_source"] == "osm").to_numpy()
    points = shapely.point_on_surface(b.geometry.to_numpy())
    fn = b["function"].astype("string").copy()
    fn_imputed = (b["function_source"] == "imputed").to_numpy()

    residential = (tagv == "residential").fillna(False).to_numpy()
    house = b["footprint_area_m2"].to_numpy(float) <= o.max_house_footprint_m2
    fn[residential] = np.where(house[residential], "RS", "RM")
    fn_set = residential.copy()

    by_use = np.zeros(len(b), bool) if use_tag is None else use_tag.to_numpy(bool)
    by_use = by_use & generic & fn_imputed
    fn[by_use] = "NR"
    fn_set |= by_use
    at_land, value = _landuse_functions(
        points, np.flatnonzero(generic & fn_imputed & ~residential & ~by_use), landuse, rules
    )
    by_land = np.zeros(len(b), bool)
    by_land[at_land] = True
    land_fn = pd.Series(value, dtype=object).map(rules.osm_landuse_function).to_numpy(object)
    homes = land_fn == "residential"
    land_fn[homes] = np.where(house[at_land[homes]], "RS", "RM")
    fn.iloc[at_land] = land_fn
    fn_set |= by_land
    takers = np.flatnonzero(generic & fn_imputed & ~residential & ~by_use & ~by_land)
    donors = np.flatnonzero(~fn_imputed)
    t, d = _neighbour_pairs(points, donors, takers, o.radius_m)
    if len(t):
        votes = pd.DataFrame({"t": t, "f": fn.to_numpy(object)[d]})
        counts = votes.groupby(["t", "f"]).size().rename("n").reset_index()
        total = counts.groupby("t")["n"].transform("sum")
        counts = counts[total >= o.min_count]
        mode = counts.sort_values(["t", "n", "f"], ascending=[True, False, True]).drop_duplicates(
            "t"
        )
        at = mode["t"].to_numpy()
        fn.iloc[at] = mode["f"].to_numpy()
        fn_set[at] = True
    else:
        at = np.empty(0, int)
    b["function"] = fn
    b.loc[fn_set, "function_source"] = "imputed"
    set_rule(b, residential | by_use, "function", "tags")
    set_rule(b, by_land, "function", "landuse")
    set_rule(b, np.isin(np.arange(len(b)), at), "function", "neighbours")
    redo_structure = fn_set & (b["structure_source"] == "imputed").to_numpy()
    b.loc[redo_structure, "structure"] = fn[redo_structure].map(rules.structure_by_function)

    floors = b["floors"].astype("Float64").copy()
    floors_imputed = (b["floors_source"] == "imputed").to_numpy()
    redo_floors = fn_set & floors_imputed
    floors[redo_floors] = fn[redo_floors].map(rules.floors_by_function).astype("Float64")
    set_rule(b, redo_floors, "floors", "default")
    takers = np.flatnonzero(generic & floors_imputed)
    t, d = _neighbour_pairs(points, np.flatnonzero(floors_tagged), takers, o.radius_m)
    if len(t):
        donor_floors = pd.Series(b["floors"].to_numpy(float)[d], index=t)
        stats = donor_floors.groupby(level=0).agg(["median", "size"])
        stats = stats[stats["size"] >= o.min_count]
        floors.iloc[stats.index.to_numpy()] = stats["median"].to_numpy()
        set_rule(b, np.isin(np.arange(len(b)), stats.index.to_numpy()), "floors", "neighbours")
        n_floors = len(stats)
    else:
        n_floors = 0
    # still no function from tags or neighbours, but more floors than a house has
    tall = generic & fn_imputed & ~fn_set & (floors > o.max_house_floors).fillna(False).to_numpy()
    fn[tall] = "RM"
    b["function"] = fn
    set_rule(b, tall, "function", "default")
    b.loc[tall & (b["structure_source"] == "imputed").to_numpy(), "structure"] = (
        rules.structure_by_function["RM"]
    )
    log.info(
        "OSM generic tags: %d building=residential by footprint, %d non-residential by a use "
        "tag, %d functions from landuse polygons, %d functions and %d floor counts from "
        "tagged neighbours, %d multi-family by floors; %d generic buildings keep the "
        "default function",
        residential.sum(),
        by_use.sum(),
        by_land.sum(),
        len(at),
        n_floors,
        tall.sum(),
        (generic & fn_imputed & ~fn_set & ~tall).sum(),
    )
    b["floors"] = floors
    b["gfa_m2"] = gross_floor_area(
        b["footprint_area_m2"].astype(float), floors.astype(float)
    ).astype("float64")
    b["archetype_id"] = archetype_id(b["function"], b["structure"])
    return b.astype({c: buildings[c].dtype for c in buildings.columns if c != "geometry"})

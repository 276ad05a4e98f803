"""OSM building semantics: one building per outline, parts refine their outline.

Pure and vectorised (shapely 2 STRtree queries, numpy/pandas group sums). The rules follow
the OSM wiki's *Simple 3D Buildings* (https://wiki.openstreetmap.org/wiki/Simple_3D_Buildings)
and *Relation:multipolygon*; ``docs/design.md`` ("OSM building semantics") states them:

1. Elements without a footprint are left out with the reader's reason (``cut at extract
   edge``, ``way is not closed`` …).
2. A way that is an outer member of a building multipolygon relation (and a building if
   the relation is one, a part if the relation is one) is the same outline:
   its tags fill the relation's missing tags, and the way is left out (counted once, as
   the relation).
3. ``building:part`` elements are never buildings. A part is assigned to the smallest
   building outline containing its representative point; a part outside every outline is
   left out with that reason. An object tagged both ``building`` and ``building:part`` is
   a part when it lies inside another (building-only) outline, otherwise a building.
4. Two outlines that overlap over more than half of the smaller one are one building: the
   relation (else the larger, else the lower id) is kept and the other one becomes a part
   of it (a tower tagged ``building`` inside a church outline, an old-style outer way).
5. The floor area of an outline with parts is the sum over its parts of part area (within
   the outline) × part floors, where part floors = ``building:levels`` − ``building:min_level``
   (else (``height`` − ``min_height``) / storey height, else the outline's floors −
   ``min_level``; ``building:part=roof``: 0), plus the outline area not covered by a ground
   part (``min_level`` = ``min_height`` = 0) × the outline's floors.
"""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from mfa.buildings._dropped import DropLog
from mfa.buildings.archetypes import ArchetypeRules, archetype_id, map_codes
from mfa.buildings.footprints import _first_number
from mfa.buildings.footprints import _tag as tag
from mfa.buildings.heights import (
    floor_limits,
    floors_from_height,
    height_classes,
    storey_heights,
    wall_heights,
)
from mfa.buildings.provenance import set_rule

__all__ = ["PART_TAGS", "refine_with_parts", "resolve_outlines"]

#: Tags of building parts (Simple 3D Buildings) read besides the footprint tags.
PART_TAGS = ("building:part", "building:min_level", "min_height")
_POLYGONAL = ("Polygon", "MultiPolygon")


def number(raw: pd.DataFrame, name: str) -> pd.Series:
    """The first number of a tag, as the footprint normaliser reads it (<NA> if none)."""
    return _first_number(tag(raw, name)).astype("Float64")


def _yes(raw: pd.DataFrame, name: str) -> pd.Series:
    t = tag(raw, name)
    return (t.notna() & (t.str.lower() != "no")).fillna(False).astype(bool)


def _fill_relation_tags(raw: pd.DataFrame, outer_rel: pd.Series, outer: pd.Series) -> pd.DataFrame:
    """Old-style multipolygons carry their tags on the outer way: fill the relation's gaps."""
    cols = [c for c in raw.columns if c not in ("element", "osm_id", "building_id", "geometry")]
    cols = [c for c in cols if c not in ("problem", "outer_of")]
    donors = raw.loc[outer, cols].assign(_rel=outer_rel[outer]).drop_duplicates("_rel")
    donors = donors.set_index("_rel")
    rel = raw["building_id"].isin(donors.index)
    if rel.any():
        filled = raw.loc[rel, cols].copy()
        ids = raw.loc[rel, "building_id"]
        for c in cols:
            filled[c] = filled[c].where(filled[c].notna(), ids.map(donors[c]).to_numpy())
        raw = raw.copy()
        raw.loc[rel, cols] = filled
    return raw


def resolve_outlines(
    raw: gpd.GeoDataFrame, crs: str
) -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame, pd.DataFrame]:
    """Split raw OSM elements into building outlines, their parts and the left-out ones.

    Parameters
    ----------
    raw
        Raw elements with ``building_id``, ``element``, tag columns, optional ``problem``
        and ``outer_of`` (see :mod:`mfa.io.osm_extract`), lon/lat geometry.
    crs
        Projected CRS in which overlaps are measured (m²).

    Returns
    -------
    outlines, parts, dropped
        ``outlines``: the raw rows to normalise as buildings (elements without a polygon
        among them are reported by the footprint normaliser). ``parts``: the assigned
        parts, geometry in ``crs``, with ``outline_id``. ``dropped``: every other element
        with its reason (assigned parts: ``building:part of <id>``).
    """
    ids = raw["building_id"].astype("string")
    log = DropLog(ids, "osm")
    if "problem" in raw.columns:
        problem = raw["problem"].astype("string")
        log.drop(problem.notna(), problem)
    element = raw["element"].astype("string")
    if "outer_of" in raw.columns:
        rel_id = "osm:relation/" + raw["outer_of"].astype("Int64").astype("string")
        kept_rel = ids[log.keep & (element == "relation")]
        # the same kind of outline only: a building way is not the outer way of a part
        kind = _yes(raw, "building").set_axis(ids)
        same_kind = rel_id.map(kind.groupby(level=0).first()) == kind.to_numpy()
        outer = rel_id.isin(kept_rel) & log.keep & (element == "way") & same_kind
        outer = outer.fillna(False).astype(bool)
        raw = _fill_relation_tags(raw, rel_id, outer)
        log.drop(
            outer, "outer way of " + rel_id + ": the same outline, counted once as the relation"
        )

    is_part = _yes(raw, "building:part")
    is_bldg = _yes(raw, "building")
    polygonal = raw.geometry.geom_type.isin(_POLYGONAL).fillna(False) & log.keep
    log.drop(is_part & ~polygonal, "building:part without a footprint polygon")
    geom = shapely.make_valid(raw.geometry.to_crs(crs).to_numpy())
    area = shapely.area(geom)
    points = shapely.point_on_surface(geom)

    # objects tagged building and building:part: a part inside another outline
    only_bldg = np.flatnonzero((polygonal & is_bldg & ~is_part).to_numpy())
    both = np.flatnonzero((polygonal & is_bldg & is_part).to_numpy())
    inside = np.zeros(len(raw), dtype=bool)
    if len(both) and len(only_bldg):
        hit = shapely.STRtree(geom[only_bldg]).query(points[both], predicate="within")
        inside[both[np.unique(hit[0])]] = True
    part = is_part.to_numpy() & (~is_bldg.to_numpy() | inside) & polygonal.to_numpy()

    # outlines overlapping over more than half of the smaller one: one building, the
    # other merged into it as a part (its floors refine, its area is clipped to the outline)
    merged_into = np.full(len(raw), -1)
    cand = np.flatnonzero(polygonal.to_numpy() & ~part)
    if len(cand) > 1:
        i, j = shapely.STRtree(geom[cand]).query(geom[cand], predicate="intersects")
        i, j = cand[i], cand[j]
        ij = i < j
        i, j = i[ij], j[ij]
        shared = shapely.area(shapely.intersection(geom[i], geom[j]))
        big = shared > 0.5 * np.minimum(area[i], area[j])
        i, j = i[big], j[big]
        rel = (element.to_numpy() == "relation").astype(int)
        osm_id = raw["osm_id"].to_numpy()
        i_wins = (rel[i] > rel[j]) | (
            (rel[i] == rel[j])
            & ((area[i] > area[j]) | ((area[i] == area[j]) & (osm_id[i] < osm_id[j])))
        )
        winner = np.where(i_wins, i, j)
        loser = np.where(i_wins, j, i)
        first = pd.Series(winner, index=loser).groupby(level=0).first()
        merged_into[first.index.to_numpy()] = first.to_numpy()
        for _ in range(len(first)):  # follow chains a → b → c to the kept outline
            nxt = merged_into[merged_into[first.index.to_numpy()]]
            hop = nxt >= 0
            if not hop.any():
                break
            merged_into[first.index.to_numpy()[hop]] = nxt[hop]
    merged = merged_into >= 0

    # parts: into the smallest outline that contains their representative point
    outl = np.flatnonzero(log.keep.to_numpy() & ~part & ~merged & polygonal.to_numpy())
    parts_at = np.flatnonzero(part & log.keep.to_numpy())
    owner = np.full(len(parts_at), -1)
    if len(parts_at) and len(outl):
        p, o = shapely.STRtree(geom[outl]).query(points[parts_at], predicate="within")
        order = np.lexsort((area[outl[o]], p))
        p, o = p[order], o[order]
        firsts = np.unique(p, return_index=True)[1]
        owner[p[firsts]] = outl[o[firsts]]
    orphan = pd.Series(False, index=raw.index)
    orphan.iloc[parts_at[owner < 0]] = True
    log.drop(
        orphan,
        "building:part outside every building outline (Simple 3D Buildings: a part lies "
        "inside its building's outline)",
    )
    has = owner >= 0
    owner_id = pd.Series("", index=raw.index, dtype="string")
    owner_id.iloc[parts_at[has]] = ids.iloc[owner[has]].to_numpy()
    assigned = pd.Series(False, index=raw.index)
    assigned.iloc[parts_at[has]] = True
    log.drop(assigned, "building:part of " + owner_id + ": refines its floor area")
    into = np.flatnonzero(merged)
    owner_id.iloc[into] = ids.iloc[merged_into[into]].to_numpy()
    log.drop(
        pd.Series(merged, index=raw.index),
        "overlaps " + owner_id + " over more than half of its area: merged into it as a part",
    )
    parts_at = np.concatenate([parts_at[has], into])
    owner = np.concatenate([owner[has], merged_into[into]])
    parts = gpd.GeoDataFrame(
        raw.iloc[parts_at].drop(columns="geometry").assign(outline_id=ids.iloc[owner].to_numpy()),
        geometry=geom[parts_at],
        crs=crs,
    )
    outline_rows = log.keep & ~pd.Series(part, index=raw.index)
    return raw.loc[outline_rows], parts, log.table()


def _part_floors_from_height(
    parts: gpd.GeoDataFrame,
    b: pd.DataFrame,
    pos: np.ndarray,
    part_area: np.ndarray,
    rules: ArchetypeRules,
    wanted: np.ndarray,
) -> tuple[pd.Series, pd.DataFrame]:
    """Floors of each part from its walls' height (``height`` − ``min_height`` − its roof:
    ``roof:height``, else ``roof:levels`` × storey height) / storey height of its height
    class (its own tags', else its outline's: a dome part of a church) or of its outline's
    function; NA where that exceeds the class's or function's limit or the part is more
    than ``max_height_to_width`` × √area tall (a spire), with a repair each. A roof not
    below the part's height is not subtracted (repaired)."""
    height = number(parts, "height")
    min_height = number(parts, "min_height").fillna(0)
    part_h = (height - min_height).where(height > min_height)
    function = pd.Series(b["function"].to_numpy(object)[pos], index=parts.index)
    outline_cls = (
        pd.Series(b["height_class"].to_numpy(object)[pos], index=parts.index).astype("string")
        if "height_class" in b.columns
        else pd.Series(pd.NA, index=parts.index, dtype="string")
    )
    cls = height_classes(parts, rules.height_tags).fillna(outline_cls)
    by_function = rules.storey_height_by_function or rules.storey_height_m
    storey = storey_heights(function, by_function, cls, rules.height_classes)
    wall, roof_bad = wall_heights(
        part_h, number(parts, "roof:height"), number(parts, "roof:levels"), storey
    )
    roof_bad &= wanted
    floors = floors_from_height(wall, storey)
    lim = rules.limits
    cap, by_class = floor_limits(
        function, cls, rules.height_classes, lim.max_floors_from_height, lim.max_floors
    )
    with np.errstate(invalid="ignore", divide="ignore"):
        slender = part_h.to_numpy(float, na_value=np.nan) / np.sqrt(part_area)
    over = (floors > cap).fillna(False).to_numpy(bool) | (slender > lim.max_height_to_width)
    bad = over & floors.notna().to_numpy(bool) & wanted
    why = np.where(
        by_class.to_numpy(bool),
        "building:part: its height is not storeys of a " + cls.fillna("").astype(str) + " building",
        f"building:part: height / storey height gives more floors than the limit, or it is "
        f"taller than {lim.max_height_to_width:g} × √area (a tower, dome or spire?)",
    )
    repairs = pd.DataFrame(
        {
            "record_id": b["building_id"].astype("string").to_numpy(object)[pos][bad],
            "attribute": "floors",
            "reason": [w + ": the outline's floors used for it" for w in why[bad]],
            "detail": [
                f"{i}: {h:g} m / {s:g} m = {f:g} floors"
                for i, h, s, f in zip(
                    parts["building_id"].astype(str).to_numpy()[bad],
                    part_h.to_numpy(float, na_value=np.nan)[bad],
                    storey.to_numpy(float)[bad],
                    floors.to_numpy(float, na_value=np.nan)[bad],
                    strict=True,
                )
            ],
        }
    ).astype("string")
    roofs = pd.DataFrame(
        {
            "record_id": b["building_id"].astype("string").to_numpy(object)[pos][roof_bad],
            "attribute": "roof_height_m",
            "reason": "building:part: roof:height (or roof:levels × storey height) not below "
            "the part's height: the roof is not subtracted",
            "detail": parts["building_id"].astype(str).to_numpy()[roof_bad],
        }
    ).astype("string")
    return floors.where(~bad), pd.concat([repairs, roofs], ignore_index=True)


def refine_with_parts(
    buildings: gpd.GeoDataFrame,
    parts: gpd.GeoDataFrame,
    rules: ArchetypeRules,
    repairs: list[pd.DataFrame] | None = None,
) -> gpd.GeoDataFrame:
    """Floor area, floors and structure of outlines from their ``building:part``s.

    ``buildings`` are canonical buildings (geometry in the CRS of ``parts``); ``parts`` as
    :func:`resolve_outlines` returns them. ``gfa_m2`` (m²) follows rule 5 of the module
    docstring; ``floors`` becomes the mean floors (``gfa_m2`` / footprint area).
    ``floors_source`` is ``osm`` where every part's floors came from its tags and the rest
    of the outline (if any) has observed floors; otherwise the outline's source stays
    (``imputed``: later rules, cohort peers or a raster height, may replace the floors).
    ``height_m`` stays the outline's own: the tallest part (a spire, a dome) is not the
    height of the whole outline. A part's floors from its height use the storey height of
    its height class (or its outline's) and its limits; a part whose height exceeds them
    (a dome, a tower, a spire) takes the outline's floors, with a repair appended to
    ``repairs`` (when given).
    An imputed structure is replaced by the material of the part with the largest floor
    area that has a known ``building:material``.
    """
    b = buildings.reset_index(drop=True)
    pos = pd.Index(b["building_id"]).get_indexer(parts["outline_id"])
    parts = parts.iloc[pos >= 0]
    pos = pos[pos >= 0]
    if not len(parts):
        return buildings
    n = len(b)
    outline = shapely.make_valid(b.geometry.to_numpy()[pos])  # repaired later, if at all
    part_area = shapely.area(shapely.intersection(parts.geometry.to_numpy(), outline))
    levels = number(parts, "building:levels")
    min_level = number(parts, "building:min_level").fillna(0)
    min_height = number(parts, "min_height").fillna(0)
    roof = tag(parts, "building:part").str.lower().eq("roof").fillna(False)
    from_levels = (levels - min_level).where(levels.notna())
    wanted = (levels.isna() & ~roof).to_numpy(bool)  # where a height gives the floors
    from_height, repaired = _part_floors_from_height(parts, b, pos, part_area, rules, wanted)
    if repairs is not None:
        repairs.append(repaired)
    observed = from_levels.fillna(from_height).where(~roof, 0.0)
    outline_floors = pd.Series(b["floors"].to_numpy(dtype=float)[pos], index=parts.index)
    floors = observed.fillna(outline_floors - min_level).clip(lower=0).fillna(0).to_numpy(float)
    ground = ((min_level == 0) & (min_height == 0)).to_numpy(bool)

    gfa_parts = np.bincount(pos, part_area * floors, minlength=n)
    covered = np.bincount(pos, part_area * ground, minlength=n)
    guessed = np.bincount(pos, observed.isna().to_numpy(float), minlength=n)
    has = np.bincount(pos, minlength=n) > 0
    fp_area = b["footprint_area_m2"].to_numpy(dtype=float)
    remainder = np.clip(fp_area - covered, 0, None)
    outline_fl = b["floors"].to_numpy(dtype=float)
    gfa = gfa_parts + remainder * np.nan_to_num(outline_fl)
    out = b.copy()
    out.loc[has, "gfa_m2"] = gfa[has]
    mean_floors = np.divide(gfa, fp_area, out=np.full(n, np.nan), where=fp_area > 0)
    out.loc[has, "floors"] = mean_floors[has]
    rest_known = (remainder <= 0.01 * fp_area) | (b["floors_source"] == "osm").to_numpy()
    tagged = has & (guessed == 0) & rest_known
    out.loc[tagged, "floors_source"] = "osm"
    set_rule(out, has, "floors", "parts")
    out.loc[has, "gfa_source"] = out.loc[has, "floors_source"]

    structure = map_codes(tag(parts, "building:material").str.lower(), rules.osm_material_structure)
    ranked = pd.DataFrame(
        {"at": pos, "gfa": part_area * floors, "structure": structure.to_numpy(object)}
    ).dropna(subset=["structure"])
    best = ranked.sort_values(["at", "gfa"], ascending=[True, False]).drop_duplicates("at")
    best = best[(out.loc[best["at"], "structure_source"] == "imputed").to_numpy()]
    out.loc[best["at"].to_numpy(), "structure"] = best["structure"].to_numpy()
    out.loc[best["at"].to_numpy(), "structure_source"] = "osm"
    out["archetype_id"] = archetype_id(out["function"], out["structure"])
    out = out.astype({c: buildings[c].dtype for c in buildings.columns if c != "geometry"})
    out.index = buildings.index
    return out

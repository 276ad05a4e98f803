"""Normalise OpenStreetMap building features to canonical buildings.

Pure: the raw features (``element``, ``osm_id``, tag columns, lon/lat geometry; from a
local extract also ``problem`` and ``outer_of``, see :mod:`mfa.io.osm_extract`) go in;
canonical buildings come out. The OSM building semantics (one building per outline,
``building:part`` refines its outline: :mod:`mfa.buildings.osm_outlines`; generic tags
from tagged neighbours: :mod:`mfa.buildings.osm_defaults`) wrap the one footprint
normaliser, :func:`mfa.buildings.footprints.normalise_footprints`.
"""

from __future__ import annotations

import geopandas as gpd
import pandas as pd
import shapely

from mfa.buildings.archetypes import ArchetypeRules
from mfa.buildings.footprints import FOOTPRINT_TAGS, HEIGHT_TAGS, normalise_footprints
from mfa.buildings.osm_defaults import impute_generic
from mfa.buildings.osm_outlines import PART_TAGS, refine_with_parts, resolve_outlines
from mfa.errors import ValidationError

__all__ = ["OSM_TAGS", "normalise_osm"]

#: Tags that name a building's use (``amenity=school``, ``shop=mall``, ``office=*``,
#: ``tourism=hotel``): a generically tagged building carrying one is non-residential.
USE_TAGS = ("amenity", "shop", "office", "tourism")
#: The OSM tags mfa reads.
OSM_TAGS = (*FOOTPRINT_TAGS, *PART_TAGS, *USE_TAGS, *HEIGHT_TAGS)


def normalise_osm(
    raw: gpd.GeoDataFrame,
    crs: str,
    rules: ArchetypeRules,
    repairs: list[pd.DataFrame] | None = None,
    landuse: gpd.GeoDataFrame | None = None,
) -> tuple[gpd.GeoDataFrame, pd.DataFrame]:
    """Turn raw OSM building features into canonical buildings (ids ``osm:<element>/<id>``).

    ``repairs``, when given, receives the repairs made here (a ``building:part`` whose
    height is not storeys: a dome, a tower, a spire). ``landuse``: the extract's
    ``landuse=*`` polygons (column ``landuse``, any CRS), whose function goes to the
    generically tagged buildings inside them (:mod:`mfa.buildings.osm_defaults`).

    Every raw element is either a building or a row of the dropped table (with its reason;
    parts merged into their outline included), so ``len(buildings) + len(dropped) ==
    len(raw)``: checked on every call (a :class:`~mfa.errors.ValidationError` otherwise).
    """
    ids = "osm:" + raw["element"].astype("string") + "/" + raw["osm_id"].astype("string")
    raw = raw.assign(building_id=ids.astype("string"))
    outlines, parts, dropped = resolve_outlines(raw, crs)
    buildings, dropped_fp = normalise_footprints(
        outlines, crs, rules, stage="osm", tag_source="osm"
    )
    use_tag = pd.Series(False, index=outlines.index)
    for key in USE_TAGS:
        if key in outlines.columns:
            use_tag |= outlines[key].notna() & outlines[key].astype("string").ne("no")
    use_tag = outlines["building_id"][use_tag.fillna(False).astype(bool)]
    land = None
    if landuse is not None and not landuse.empty:
        land = landuse.to_crs(crs)
        land = land.set_geometry(shapely.make_valid(land.geometry.to_numpy()), crs=crs)
    buildings = impute_generic(buildings, rules, buildings["building_id"].isin(use_tag), land)
    buildings = refine_with_parts(buildings, parts, rules, repairs)
    dropped = pd.concat([dropped, dropped_fp], ignore_index=True)
    accounted = pd.concat([buildings["building_id"], dropped["record_id"]], ignore_index=True)
    if len(accounted) != len(raw) or accounted.duplicated().any():
        raise ValidationError(
            f"OSM elements: {len(raw)} read but {len(buildings)} buildings and {len(dropped)} "
            "left out, or one of them twice: every element must be in exactly one; report "
            "this as a bug of mfa with the extract"
        )
    return buildings, dropped

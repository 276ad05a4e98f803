"""Normalise OpenStreetMap building features to canonical buildings.

Pure: the raw features (``element``, ``osm_id``, tag columns, lon/lat geometry) as
:mod:`mfa.io.osm` reads them from osmnx or a PBF file go in; canonical buildings come out
through the one footprint normaliser, :func:`mfa.buildings.footprints.normalise_footprints`.
"""

from __future__ import annotations

import geopandas as gpd
import pandas as pd

from mfa.buildings.archetypes import ArchetypeRules
from mfa.buildings.footprints import FOOTPRINT_TAGS, normalise_footprints

__all__ = ["OSM_TAGS", "normalise_osm"]

#: The OSM tags mfa reads.
OSM_TAGS = FOOTPRINT_TAGS


def normalise_osm(
    raw: gpd.GeoDataFrame, crs: str, rules: ArchetypeRules
) -> tuple[gpd.GeoDataFrame, pd.DataFrame]:
    """Turn raw OSM building features into canonical buildings (ids ``osm:<element>/<id>``)."""
    ids = "osm:" + raw["element"].astype("string") + "/" + raw["osm_id"].astype("string")
    raw = raw.assign(building_id=ids.astype("string"))
    return normalise_footprints(raw, crs, rules, stage="osm", tag_source="osm")

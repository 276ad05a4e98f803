"""Normalise OpenStreetMap building features to canonical buildings.

Pure: the raw features (one row per OSM element, tag columns, lon/lat geometry) as
:mod:`mfa.io.osm` reads them from osmnx or a PBF file go in; canonical buildings in the
pipeline CRS and the dropped elements with reasons come out. One normaliser for every
OSM source (XML extract, PBF extract, online query).
"""

from __future__ import annotations

import geopandas as gpd
import pandas as pd

from mfa.buildings._dropped import DropLog
from mfa.buildings.archetypes import ArchetypeRules, archetype_id, impute_by_function, map_codes
from mfa.buildings.floor_area import gross_floor_area
from mfa.schema import BUILDING_COLUMNS

__all__ = ["OSM_TAGS", "normalise_osm"]

#: The OSM tags mfa reads.
OSM_TAGS = ("building", "building:levels", "building:material", "start_date")


def _tag(raw: pd.DataFrame, name: str) -> pd.Series:
    if name in raw.columns:
        return raw[name].astype("string").str.strip()
    return pd.Series(pd.NA, index=raw.index, dtype="string")


def _first_number(s: pd.Series) -> pd.Series:
    """The first decimal number in a tag value ('2', '2.5', '2;3' → 2.0), else <NA>."""
    return pd.to_numeric(s.str.extract(r"(\d+(?:\.\d+)?)", expand=False), errors="coerce")


def normalise_osm(
    raw: gpd.GeoDataFrame, crs: str, rules: ArchetypeRules
) -> tuple[gpd.GeoDataFrame, pd.DataFrame]:
    """Turn raw OSM building features into canonical buildings.

    Parameters
    ----------
    raw
        Columns ``element`` (node/way/relation), ``osm_id`` and tag columns (see
        :data:`OSM_TAGS`), geometry in any CRS (usually EPSG:4326).
    crs
        The pipeline's projected CRS; footprint areas (m²) are computed in it.
    rules
        Archetype rules (OSM tag tables and fallbacks).

    Returns
    -------
    buildings, dropped
        ``gfa_m2`` = footprint area × ``building:levels``, or × the per-function default
        storeys (``gfa_source`` = ``imputed``) where the tag is missing.
    """
    ids = "osm:" + raw["element"].astype("string") + "/" + raw["osm_id"].astype("string")
    ids = ids.astype("string")
    log = DropLog(ids, "osm")
    drop = log.drop

    geom_type = raw.geometry.geom_type.astype("string")
    drop(raw.geometry.isna() | raw.geometry.is_empty, "no geometry")
    drop(
        ~geom_type.isin(["Polygon", "MultiPolygon"]),
        "geometry is " + geom_type.fillna("empty") + ", not a footprint polygon",
    )
    drop(
        ids[log.keep].duplicated().reindex(ids.index, fill_value=False),
        "duplicate OSM element: the first was kept",
    )
    building = _tag(raw, "building")
    excluded = map_codes(building, rules.osm_building_excluded)
    drop(excluded.notna(), "excluded building=" + building.fillna("") + ": " + excluded.fillna(""))

    keep = log.keep
    raw = raw.loc[keep]
    ids = ids[keep]
    building = building[keep]
    projected = raw.geometry.to_crs(crs)
    area = pd.Series(projected.area.to_numpy(), index=raw.index, dtype="Float64")

    function_obs = map_codes(building, rules.osm_building_function)
    function = function_obs.fillna(rules.osm_unknown_function).astype("string")
    function_source = pd.Series("osm", index=raw.index, dtype="string").where(
        function_obs.notna(), "imputed"
    )

    levels = _first_number(_tag(raw, "building:levels")).astype("Float64")
    levels = levels.where(levels > 0)
    floors, floors_source = impute_by_function(levels, function, rules.floors_by_function, "osm")
    floors = floors.astype("Float64")
    gfa = gross_floor_area(area.astype(float), floors.astype(float))
    gfa_source = floors_source  # osm where building:levels was tagged, else imputed

    material = _tag(raw, "building:material").str.lower()
    structure_obs = map_codes(material, rules.osm_material_structure)
    structure, structure_source = impute_by_function(
        structure_obs, function, rules.structure_by_function, "osm"
    )

    year = pd.to_numeric(
        _tag(raw, "start_date").str.extract(r"(\d{4})", expand=False), errors="coerce"
    ).astype("Int64")

    out = pd.DataFrame(
        {
            "building_id": ids,
            "district_id": pd.Series(pd.NA, index=raw.index, dtype="string"),
            "function": function,
            "function_source": function_source,
            "structure": structure.astype("string"),
            "structure_source": structure_source,
            "archetype_id": archetype_id(function, structure),
            "use_code": pd.Series(pd.NA, index=raw.index, dtype="string"),
            "osm_building": building,
            "wall_material": material,
            "construction_year": year,
            "construction_year_source": pd.Series("osm", index=raw.index, dtype="string").where(
                year.notna(), "missing"
            ),
            "floors": floors,
            "floors_source": floors_source,
            "footprint_area_m2": area,
            "footprint_area_source": pd.Series("osm", index=raw.index, dtype="string"),
            "gfa_m2": gfa.astype("float64"),
            "gfa_source": gfa_source,
        }
    ).astype(BUILDING_COLUMNS)
    zero = ~(out["gfa_m2"] > 0)
    drop(zero.reindex(log.keep.index, fill_value=False), "footprint has zero area")
    out = out.loc[~zero]
    buildings = gpd.GeoDataFrame(out, geometry=projected.values[~zero.to_numpy()], crs=crs)
    buildings = buildings.sort_values("building_id", kind="stable").reset_index(drop=True)
    return buildings, log.table()

"""Normalise building footprints (OSM features or a footprint file) to canonical buildings.

Pure: footprints with an id and optional OSM-style tag columns go in; canonical buildings
in the pipeline CRS and the dropped features with reasons come out. One normaliser for
every footprint source (OSM XML, OSM PBF, online OSM, municipal footprint files).
"""

from __future__ import annotations

import geopandas as gpd
import pandas as pd

from mfa.buildings._dropped import DropLog
from mfa.buildings.archetypes import ArchetypeRules, archetype_id, impute_by_function, map_codes
from mfa.buildings.floor_area import gross_floor_area
from mfa.buildings.heights import height_classes
from mfa.buildings.provenance import with_rules
from mfa.core.keys import SeenKeys, hash128
from mfa.schema import BUILDING_COLUMNS

__all__ = ["FOOTPRINT_TAGS", "normalise_footprints"]

#: OSM-style tags read where present.
FOOTPRINT_TAGS = ("building", "building:levels", "building:material", "start_date", "height")
#: Tags that put a building in a height class (``config/archetypes/osm_height_tags.csv``)
#: besides the ones read anyway.
HEIGHT_TAGS = ("man_made", "roof:shape", "roof:height", "roof:levels")


def _tag(raw: pd.DataFrame, name: str) -> pd.Series:
    if name in raw.columns:
        return raw[name].astype("string").str.strip()
    return pd.Series(pd.NA, index=raw.index, dtype="string")


def _first_number(s: pd.Series) -> pd.Series:
    """The first decimal number in a tag value ('2', '2.5', '2;3', '12 m' → float), else <NA>."""
    return pd.to_numeric(s.str.extract(r"(\d+(?:\.\d+)?)", expand=False), errors="coerce")


def normalise_footprints(
    raw: gpd.GeoDataFrame,
    crs: str,
    rules: ArchetypeRules,
    stage: str,
    tag_source: str = "osm",
    carry: tuple[str, ...] = (),
    seen: SeenKeys | None = None,
) -> tuple[gpd.GeoDataFrame, pd.DataFrame]:
    """Turn footprints into canonical buildings.

    Parameters
    ----------
    raw
        A ``building_id`` column, optional tag columns (:data:`FOOTPRINT_TAGS`), geometry
        in any CRS.
    crs
        The pipeline's projected CRS; footprint areas (m²) are computed in it.
    rules
        Archetype rules (OSM tag tables and fallbacks).
    stage
        Name of the stage in the dropped-records table (``osm``, ``footprints``).
    tag_source
        The ``*_source`` value of attributes read from the tags.
    carry
        Columns of ``raw`` to carry through unchanged (e.g. a register link).
    seen
        For one batch of a file read in batches: the ids the earlier batches kept past
        the geometry checks. An id among them is a duplicate as one repeated within the
        batch is (the first in the file is kept); this batch's ids are added.

    Returns
    -------
    buildings, dropped
        ``gfa_m2`` = footprint area × ``building:levels``, or × the per-function default
        storeys (``gfa_source`` = ``imputed``) where the tag is missing. ``height_m`` from
        the ``height`` tag where present. Geometries are not checked here: run
        :func:`mfa.buildings.quality.clean_geometries` next.
    """
    ids = raw["building_id"].astype("string")
    log = DropLog(ids, stage)
    drop = log.drop

    geom_type = raw.geometry.geom_type.astype("string")
    drop(raw.geometry.isna() | raw.geometry.is_empty, "no geometry")
    drop(
        ~geom_type.isin(["Polygon", "MultiPolygon"]),
        "geometry is " + geom_type.fillna("empty") + ", not a footprint polygon",
    )
    kept_ids = ids[log.keep]
    if seen is None:
        repeated = kept_ids.duplicated()
    else:
        keys = hash128(kept_ids.to_numpy(dtype=object, na_value=""))
        repeated = pd.Series(seen.repeats(keys), index=kept_ids.index)
    drop(repeated.reindex(ids.index, fill_value=False), "duplicate id: the first was kept")
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
    function_source = pd.Series(tag_source, index=raw.index, dtype="string").where(
        function_obs.notna(), "imputed"
    )

    levels = _first_number(_tag(raw, "building:levels")).astype("Float64")
    levels = levels.where(levels > 0)
    floors, floors_source = impute_by_function(
        levels, function, rules.floors_by_function, tag_source
    )
    floors = floors.astype("Float64")
    gfa = gross_floor_area(area.astype(float), floors.astype(float))

    material = _tag(raw, "building:material").str.lower()
    structure_obs = map_codes(material, rules.osm_material_structure)
    structure, structure_source = impute_by_function(
        structure_obs, function, rules.structure_by_function, tag_source
    )

    year = pd.to_numeric(
        _tag(raw, "start_date").str.extract(r"(\d{4})", expand=False), errors="coerce"
    ).astype("Int64")
    height = _first_number(_tag(raw, "height")).astype("Float64")

    def source(values: pd.Series) -> pd.Series:
        return pd.Series(tag_source, index=raw.index, dtype="string").where(
            values.notna(), "missing"
        )

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
            "construction_year_source": source(year),
            "height_m": height,
            "height_source": source(height),
            "floors": floors,
            "floors_source": floors_source,
            "footprint_area_m2": area,
            "footprint_area_source": pd.Series(tag_source, index=raw.index, dtype="string"),
            "gfa_m2": gfa.astype("float64"),
            "gfa_source": floors_source,  # as observed as the floor count it multiplies
            "footprint_id": ids,
            "match_method": pd.Series("not_conflated", index=raw.index, dtype="string"),
            "hazard": pd.Series(pd.NA, index=raw.index, dtype="string"),
            "height_class": height_classes(raw, rules.height_tags),
            "roof_height_m": _first_number(_tag(raw, "roof:height")).astype("Float64"),
            "roof_levels": _first_number(_tag(raw, "roof:levels")).astype("Float64"),
        }
    )
    out = with_rules(out).astype(BUILDING_COLUMNS)
    for col in carry:
        out[col] = raw[col]
    # invalid or degenerate footprints are repaired or rejected by clean_geometries
    buildings = gpd.GeoDataFrame(out, geometry=projected.values, crs=crs)
    buildings = buildings.sort_values("building_id", kind="stable").reset_index(drop=True)
    return buildings, log.table()

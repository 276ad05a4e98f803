"""Normalise BBR register records (Datafordeler field names) to canonical buildings.

Pure: a GeoDataFrame of register records in the pipeline CRS in, canonical buildings and a
table of dropped records (with reasons) out. Reading files is :mod:`mfa.io.register`'s job.
"""

from __future__ import annotations

import geopandas as gpd
import pandas as pd

from mfa.buildings._dropped import DropLog
from mfa.buildings.archetypes import (
    ArchetypeRules,
    archetype_id,
    impute_by_function,
    map_codes,
    take_strings,
)
from mfa.buildings.floor_area import gross_floor_area
from mfa.buildings.provenance import with_rules
from mfa.schema import BUILDING_COLUMNS

__all__ = ["BBR", "BBR_NUMERIC", "BBR_REQUIRED", "normalise_bbr", "standing_with_id"]


class BBR:
    """Datafordeler field names of the BBR ``Bygning`` entity used by mfa."""

    ID = "id_lokalId"
    STATUS = "status"
    USE = "byg021BygningensAnvendelse"
    YEAR = "byg026Opfoerelsesaar"
    WALL = "byg032YdervaeggensMateriale"
    ASBESTOS = "byg036AsbestholdigtMateriale"
    GFA = "byg038SamletBygningsareal"
    FOOTPRINT = "byg041BebyggetAreal"
    FLOORS = "byg054AntalEtager"
    POINT = "byg404Koordinat"
    POINT_CRS = "byg406Koordinatsystem"


#: Columns a register file must have.
BBR_REQUIRED = (BBR.ID, BBR.STATUS, BBR.USE, BBR.YEAR, BBR.WALL, BBR.GFA, BBR.FOOTPRINT, BBR.FLOORS)
#: Columns that must be numbers (m², years, counts) where they are filled.
BBR_NUMERIC = (BBR.YEAR, BBR.GFA, BBR.FOOTPRINT, BBR.FLOORS)


def _code_str(s: pd.Series) -> pd.Series:
    """Codes as clean strings: '6', '120' (also from floats like 120.0).

    Works on the distinct values (few codes among many records)."""
    index, uniques = pd.factorize(s, use_na_sentinel=True)
    clean = pd.Series(uniques, dtype=object).astype("string").str.strip()
    clean = clean.str.replace(r"\.0$", "", regex=True).to_numpy(dtype=object, na_value=None)
    return take_strings(index, clean, s.index)


def standing_with_id(records: pd.DataFrame, existing_status: list[str]) -> pd.Series:
    """Records that have an id and a standing status: among these an id must be unique.

    The duplicate-id rule of :func:`normalise_bbr` (the first such record with an id is
    kept, later ones are left out) is taken over these records; the streaming engine
    applies it across batches with this same mask (:mod:`mfa.core.keys`).
    """
    ids = records[BBR.ID].astype("string")
    status = _code_str(records[BBR.STATUS])
    has_id = ids.notna() & (ids.str.len() > 0)
    return (has_id & status.isin(existing_status)).fillna(False).astype(bool)


def normalise_bbr(
    records: gpd.GeoDataFrame,
    rules: ArchetypeRules,
    existing_status: list[str],
    duplicate: pd.Series | None = None,
) -> tuple[gpd.GeoDataFrame, pd.DataFrame]:
    """Turn BBR ``Bygning`` records into canonical buildings.

    Parameters
    ----------
    records
        Register rows with at least :data:`BBR_REQUIRED`, numeric columns already numeric,
        point geometry (``byg404Koordinat``) as the active geometry in a projected CRS.
    rules
        Archetype rules (BBR use and wall code tables, fallbacks).
    existing_status
        Life-cycle codes that mean "standing building" (BBR: ``6`` = Opført).
    duplicate
        Records whose id an earlier standing record already has (aligned with
        ``records``), when the records are one batch of a larger register; by default
        found among ``records`` themselves.

    Returns
    -------
    buildings
        Canonical buildings (:data:`mfa.schema.BUILDING_COLUMNS`) in input order.
        ``gfa_m2`` is ``byg038`` where positive, else footprint (``byg041``) × floors.
    dropped
        One row per left-out record: ``record_id``, ``stage`` and ``reason``.
    """
    df = records.copy(deep=False)  # copy-on-write: the caller's frame stays as it is
    ids = df[BBR.ID].astype("string")
    status = _code_str(df[BBR.STATUS])
    use = _code_str(df[BBR.USE])
    wall = _code_str(df[BBR.WALL])
    log = DropLog(ids, "register")
    drop = log.drop

    drop(ids.isna() | (ids.str.len() == 0), "no building id (id_lokalId empty)")
    drop(
        ~status.isin(existing_status),
        "status "
        + status.fillna("empty")
        + ": not a standing building (kept: "
        + ", ".join(existing_status)
        + ")",
    )
    if duplicate is None:
        standing = standing_with_id(df, existing_status)
        duplicate = ids[standing].duplicated().reindex(ids.index, fill_value=False)
    drop(duplicate, "duplicate id_lokalId: an earlier record was kept")
    geom = df.geometry
    drop(geom.isna() | geom.is_empty, "no coordinates (byg404Koordinat empty)")

    excluded = map_codes(use, rules.bbr_use_excluded)
    drop(excluded.notna(), "excluded use " + use.fillna("") + ": " + excluded.fillna(""))
    function = map_codes(use, rules.bbr_use_function)
    drop(
        function.isna(),
        "use code "
        + use.fillna("empty")
        + " is not in the BBR use-code rules: add it to config/archetypes/bbr_use_codes.csv",
    )

    footprint = pd.to_numeric(df[BBR.FOOTPRINT], errors="raise").astype("Float64")
    footprint = footprint.where(footprint > 0)
    gfa_reg = pd.to_numeric(df[BBR.GFA], errors="raise").astype("Float64")
    gfa_reg = gfa_reg.where(gfa_reg > 0)
    drop(
        gfa_reg.isna() & footprint.isna(),
        "no floor area: byg038SamletBygningsareal and byg041BebyggetAreal are empty or 0",
    )
    lim = rules.limits  # larger than any building: nothing to replace it with without byg041
    storeys = pd.to_numeric(df[BBR.FLOORS], errors="coerce").astype("Float64")
    storeys = storeys.where(storeys > 0).fillna(1)
    huge = (gfa_reg > lim.max_gfa_m2) | (gfa_reg / storeys > lim.max_storey_area_m2)
    no_check = footprint.isna() | (footprint > lim.max_storey_area_m2)
    drop(
        (huge & no_check).fillna(False),
        f"byg038SamletBygningsareal above {lim.max_gfa_m2:,.0f} m² or "
        f"{lim.max_storey_area_m2:,.0f} m² per storey (larger than any building) and no "
        "plausible byg041BebyggetAreal to replace it",
    )

    keep = log.keep
    df = df.loc[keep]
    function = function[keep]
    footprint = footprint[keep]
    gfa_reg = gfa_reg[keep]
    wall = wall[keep]
    use = use[keep]

    floors_obs = pd.to_numeric(df[BBR.FLOORS], errors="raise").astype("Float64")
    floors_obs = floors_obs.where(floors_obs > 0)
    floors, floors_source = impute_by_function(
        floors_obs, function, rules.floors_by_function, "register"
    )
    floors = floors.astype("Float64")

    gfa_imp = gross_floor_area(footprint.astype(float), floors.astype(float))
    gfa = gfa_reg.astype(float).where(gfa_reg.notna(), gfa_imp)
    gfa_source = pd.Series("register", index=df.index, dtype="string").where(
        gfa_reg.notna(), "imputed"
    )

    structure_obs = map_codes(wall, rules.bbr_wall_structure)
    structure, structure_source = impute_by_function(
        structure_obs, function, rules.structure_by_function, "register"
    )

    year = pd.to_numeric(df[BBR.YEAR], errors="raise").astype("Int64")
    year = year.where(year > 0)  # BBR writes 0 for "unknown"

    out = pd.DataFrame(
        {
            "building_id": ids[keep],
            "district_id": pd.Series(pd.NA, index=df.index, dtype="string"),
            "function": function,
            "function_source": pd.Series("register", index=df.index, dtype="string"),
            "structure": structure.astype("string"),
            "structure_source": structure_source,
            "archetype_id": archetype_id(function, structure),
            "use_code": use,
            "osm_building": pd.Series(pd.NA, index=df.index, dtype="string"),
            "wall_material": wall,
            "construction_year": year,
            "construction_year_source": pd.Series("register", index=df.index, dtype="string").where(
                year.notna(), "missing"
            ),
            "height_m": pd.Series(pd.NA, index=df.index, dtype="Float64"),
            "height_source": pd.Series("missing", index=df.index, dtype="string"),
            "floors": floors,
            "floors_source": floors_source,
            "footprint_area_m2": footprint,
            "footprint_area_source": pd.Series("register", index=df.index, dtype="string").where(
                footprint.notna(), "missing"
            ),
            "gfa_m2": gfa.astype("float64"),
            "gfa_source": gfa_source,
            "footprint_id": pd.Series(pd.NA, index=df.index, dtype="string"),
            "match_method": pd.Series("not_conflated", index=df.index, dtype="string"),
            "hazard": (
                map_codes(_code_str(df[BBR.ASBESTOS]), rules.bbr_hazard)
                if BBR.ASBESTOS in df.columns
                else pd.Series(pd.NA, index=df.index, dtype="string")
            ),
            # the use code's height class (storey height and floor limit for a raster height)
            "height_class": map_codes(use, rules.bbr_height_class),
            "roof_height_m": pd.Series(pd.NA, index=df.index, dtype="Float64"),
            "roof_levels": pd.Series(pd.NA, index=df.index, dtype="Float64"),
        }
    )
    out = with_rules(out).astype(BUILDING_COLUMNS)
    buildings = gpd.GeoDataFrame(out, geometry=df.geometry.values, crs=records.crs)
    buildings = buildings.reset_index(drop=True)
    return buildings, log.table()

"""The canonical building schema and the checks run at layer boundaries.

Every building source (register, OSM) is normalised to :data:`BUILDING_COLUMNS`; the checks
here run right after normalising and right before publishing.
"""

from __future__ import annotations

from collections.abc import Iterable

import geopandas as gpd
import numpy as np
import pandas as pd

from mfa.errors import ValidationError

__all__ = [
    "BUILDING_COLUMNS",
    "DROPPED_COLUMNS",
    "FUNCTIONS",
    "SOURCE_VALUES",
    "STRUCTURES",
    "check_building_rows",
    "check_buildings",
    "check_mass_balance",
    "empty_dropped",
    "material_columns",
]

#: Building functions (RASMI codes): single-family, multi-family, non-residential.
FUNCTIONS = ("RS", "RM", "NR")
#: Load-bearing structures (RASMI codes): reinforced concrete, masonry, steel, timber.
STRUCTURES = ("C", "M", "S", "T")
#: Where a derived attribute came from.
SOURCE_VALUES = ("register", "osm", "raster", "imputed", "missing")

#: Canonical building columns and their pandas dtypes (geometry comes last).
BUILDING_COLUMNS: dict[str, str] = {
    "building_id": "string",
    "district_id": "string",
    "function": "string",
    "function_source": "string",
    "structure": "string",
    "structure_source": "string",
    "archetype_id": "string",
    "use_code": "string",
    "osm_building": "string",
    "wall_material": "string",
    "construction_year": "Int64",
    "construction_year_source": "string",
    "height_m": "Float64",
    "height_source": "string",
    "floors": "Float64",
    "floors_source": "string",
    "footprint_area_m2": "Float64",
    "footprint_area_source": "string",
    "gfa_m2": "float64",
    "gfa_source": "string",
    "footprint_id": "string",
    "match_method": "string",
    "hazard": "string",
    # the OSM tags' height class (config/archetypes/height_classes.csv): storey height
    # and the most floors a height may give
    "height_class": "string",
    # the roof of an OSM height (Simple 3D Buildings: `height` includes it): `roof:height`
    # (m) and `roof:levels` (storeys within the roof); floors come from the walls' height
    "roof_height_m": "Float64",
    "roof_levels": "Float64",
    # which rule gave the value (mfa.buildings.provenance.RULES)
    "function_rule": "string",
    "floors_rule": "string",
    "construction_year_rule": "string",
    "gfa_rule": "string",
    "height_rule": "string",
}

#: Columns of the table of records that were left out, with the reason.
DROPPED_COLUMNS = ("record_id", "stage", "reason")


def empty_dropped() -> pd.DataFrame:
    """An empty dropped-records table."""
    return pd.DataFrame({c: pd.Series(dtype="string") for c in DROPPED_COLUMNS})


def material_columns(materials: Iterable[str]) -> list[str]:
    """Column names ``<material>_t`` (tonnes) for the given material ids."""
    return [f"{m}_t" for m in materials]


def _fail(where: str, what: str, fix: str) -> None:
    raise ValidationError(f"{where}: {what}; {fix}")


def check_buildings(gdf: gpd.GeoDataFrame, where: str, crs: object | None = None) -> None:
    """Check a canonical buildings table: columns, dtypes, ids, values, sources and CRS.

    Raises
    ------
    ValidationError
        Naming the layer (``where``), the column and the first offending building.
    """
    check_building_rows(pd.DataFrame(gdf.drop(columns=gdf.geometry.name)), where)
    from mfa.crs import same_crs

    if crs is not None and (gdf.crs is None or not same_crs(gdf.crs, crs)):
        _fail(where, f"CRS is {gdf.crs}, expected {crs}", "reproject with to_crs()")
    ids = gdf["building_id"]
    dup = ids[ids.duplicated()]
    if len(dup):
        _fail(where, f"building_id {dup.iloc[0]!r} occurs more than once", "deduplicate")
    if gdf.geometry.isna().any() or gdf.geometry.is_empty.any():
        _fail(where, "some buildings have no geometry", "drop them with a reason")


def check_building_rows(df: pd.DataFrame, where: str) -> None:
    """The row-wise part of :func:`check_buildings` (no geometry, no cross-row rule), for
    one batch of a layer checked batch by batch."""
    missing = [c for c in BUILDING_COLUMNS if c not in df.columns]
    if missing:
        _fail(where, f"missing columns {missing}", "normalise the source with mfa.buildings")
    for col, dtype in BUILDING_COLUMNS.items():
        if str(df[col].dtype) != dtype:
            _fail(where, f"column {col} has dtype {df[col].dtype}, expected {dtype}", "cast it")
    if df["building_id"].isna().any():
        _fail(where, "building_id has missing values", "every building needs an id")
    gfa = df["gfa_m2"].to_numpy(dtype=float)
    bad = ~np.isfinite(gfa) | (gfa <= 0)
    if bad.any():
        first = df["building_id"].iloc[int(np.argmax(bad))]
        _fail(where, f"gfa_m2 is not a positive number for building {first}", "drop or impute it")
    for col in ("function", "structure"):
        allowed = FUNCTIONS if col == "function" else STRUCTURES
        out = ~df[col].isin(allowed)
        if out.any():
            first = df.loc[out, "building_id"].iloc[0]
            _fail(where, f"{col} of building {first} is not one of {allowed}", "fix the rules")
    for col in [c for c in BUILDING_COLUMNS if c.endswith("_source")]:
        out = ~df[col].isin(SOURCE_VALUES)
        if out.any():
            first = df.loc[out, "building_id"].iloc[0]
            _fail(where, f"{col} of building {first} is not one of {SOURCE_VALUES}", "fix it")
    from mfa.buildings.provenance import RULE_ATTRIBUTES, RULES

    for col in [f"{a}_rule" for a in RULE_ATTRIBUTES]:
        out = ~df[col].isin(list(RULES))
        if out.any():
            first = df.loc[out, "building_id"].iloc[0]
            _fail(where, f"{col} of building {first} is not one of {tuple(RULES)}", "fix it")
    from mfa.buildings.conflate import MATCH_METHODS

    out = ~df["match_method"].isin(MATCH_METHODS)
    if out.any():
        first = df.loc[out, "building_id"].iloc[0]
        _fail(where, f"match_method of building {first} is not one of {MATCH_METHODS}", "fix it")


def check_mass_balance(
    buildings: pd.DataFrame,
    districts: pd.DataFrame,
    columns: Iterable[str],
    rtol: float = 1e-9,
) -> dict[str, float]:
    """Check that every district sum equals the building sum to ``rtol``; return the totals (t)."""
    totals: dict[str, float] = {}
    for col in columns:
        b = float(np.sum(buildings[col].to_numpy(dtype=float)))
        d = float(np.sum(districts[col].to_numpy(dtype=float)))
        if not np.isclose(b, d, rtol=rtol, atol=0.0):
            raise ValidationError(
                f"mass balance: {col} sums to {b!r} over buildings but {d!r} over districts; "
                "a building is counted twice or not at all: check the district assignment"
            )
        totals[col] = b
    return totals

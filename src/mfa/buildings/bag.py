"""Normalise the Dutch BAG register (pand + verblijfsobject) to canonical buildings.

Pure: pand records (footprint polygons in the pipeline CRS) and verblijfsobject records
(units) in, canonical buildings and a table of left-out records (with reasons) out. Reading
files is :mod:`mfa.io.bag`'s job. Field names are those of PDOK's BAG OGC API (v2) and of
the BAG extracts (Catalogus BAG 2018):

- a **pand** is a building: ``identificatie``, ``status``, ``bouwjaar`` (construction
  year), its outline; PDOK also gives the feature ``id`` (a UUID) that units link to;
- a **verblijfsobject** is a unit in one or more panden: ``identificatie``, ``status``,
  ``gebruiksdoel`` (one or more of the eleven uses of the Bouwbesluit, a list or a
  comma-separated text), ``oppervlakte`` (usable floor area, m², NEN 2580) and its panden
  (PDOK v2: ``pand.href``, links ending in the pand's feature id; BAG extracts:
  ``pand_identificatie``, the pand's identificatie).

Rules (numbers and tables in ``config/archetypes``; :class:`~mfa.buildings.archetypes.BagRules`):

- a pand counts when its status is kept (``bag_pand_status.csv``: in use, in use not yet
  surveyed, being altered); a unit's floor area counts when its status is kept
  (``bag_unit_status.csv``); every other record is left out with the table's reason;
- a unit's floor area is shared equally among its panden found in the register;
- floor area (GFA, m²) = Σ counted unit floor area × ``gross_per_usable`` (register);
  a pand without a counted unit: footprint × the function's default floors (imputed);
- function: residential (``woonfunctie``) when at least ``residential_min_share`` of the
  floor area is; then RS up to ``max_single_family_dwellings`` dwellings, RM above; else NR.
  Without a counted unit: the pand's own ``gebruiksdoel`` when the service gives one, else
  ``no_units_function`` (imputed);
- floors = GFA / footprint area, rounded, at least 1 (imputed: BAG has no storey count);
  structure: the function's default (imputed: BAG has no material);
- construction year = ``bouwjaar`` where > 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from mfa.buildings._dropped import DropLog
from mfa.buildings.archetypes import ArchetypeRules, archetype_id, impute_by_function, map_codes
from mfa.buildings.floor_area import gross_floor_area
from mfa.buildings.provenance import with_rules
from mfa.schema import BUILDING_COLUMNS

__all__ = [
    "BAG",
    "BAG_PAND_REQUIRED",
    "BAG_UNIT_REQUIRED",
    "UnitAreas",
    "normalise_bag",
    "unit_areas",
]


class BAG:
    """BAG field names (PDOK OGC API v2 and BAG extracts)."""

    ID = "identificatie"
    FEATURE_ID = "id"  # the OGC API feature id: what PDOK v2's pand.href links end in
    STATUS = "status"
    YEAR = "bouwjaar"
    USE = "gebruiksdoel"
    AREA = "oppervlakte"
    UNITS_DECLARED = "aantal_verblijfsobjecten"
    LINK = "pand.href"  # PDOK v2; BAG extracts: pand_identificatie


#: Columns a pand file must have.
BAG_PAND_REQUIRED = (BAG.ID, BAG.STATUS, BAG.YEAR)
#: Columns a verblijfsobject file must have (and its link field).
BAG_UNIT_REQUIRED = (BAG.ID, BAG.STATUS, BAG.USE, BAG.AREA)


def _strings(s: pd.Series) -> pd.Series:
    return s.astype("string").str.strip().replace("", pd.NA)


def _listed(values: pd.Series) -> pd.Series:
    """A column of lists and/or comma-separated texts as one row per item, indexed by the
    record it came from (empty items left out)."""
    items = values.explode().astype("string").str.split(",").explode().str.strip()
    return items[items.notna() & (items != "")]


def _link_key(links: pd.Series) -> pd.Series:
    """The pand a link names: the last path segment of a URL (``…/pand/items/<id>``), or
    the text itself (an identificatie)."""
    path = links.str.replace(r"[?#].*$", "", regex=True).str.rstrip("/")
    return path.str.rsplit("/", n=1).str[-1]


def _status_drop(
    log: DropLog,
    status: pd.Series,
    kept: pd.Series,
    excluded: pd.Series,
    what: str,
    table: str,
    override: list[str] | None,
) -> None:
    """Leave out the records whose status is not kept, with the table's reason."""
    keep = status.isin(override if override is not None else list(kept))
    reason = map_codes(status, excluded)
    known = reason.notna() | status.isin(list(kept))
    shown = "'" + status.fillna("empty") + "'"
    log.drop(
        ~keep & known, f"{what} status " + shown + ": " + reason.fillna("not in existing_status")
    )
    log.drop(
        ~keep & ~known,
        f"{what} status " + shown + f" is not in config/archetypes/{table}: add it there",
    )


@dataclass(frozen=True)
class UnitAreas:
    """Per pand (aligned with the pand records): what its counted units add up to.

    ``usable_m2`` and ``residential_m2`` (m² usable floor area, shares of units in several
    panden), ``dwellings`` and ``units`` (counts of units with woonfunctie and of all
    counted units), ``main_use`` (the use with the most floor area; ties: the first in
    alphabetical order). ``counted`` marks the unit records whose area counts in a kept
    pand (aligned with the unit records).
    """

    usable_m2: np.ndarray
    residential_m2: np.ndarray
    dwellings: np.ndarray
    units: np.ndarray
    main_use: pd.Series
    counted: pd.Series


def unit_areas(
    units: pd.DataFrame,
    pand: pd.DataFrame,
    pand_kept: pd.Series,
    rules: ArchetypeRules,
    link_field: str = BAG.LINK,
) -> tuple[UnitAreas, pd.DataFrame]:
    """Sum the counted units' floor area per pand; every unit is counted or left out.

    Parameters
    ----------
    units
        Verblijfsobject records: :data:`BAG_UNIT_REQUIRED` and ``link_field``;
        ``oppervlakte`` numeric (m²).
    pand
        The pand records (``identificatie``, optional feature ``id``), in register order.
    pand_kept
        Panden that are buildings (aligned with ``pand``): units of the others are left out.
    link_field
        The column naming each unit's panden (links or identificaties).

    Returns
    -------
    areas, dropped
        :class:`UnitAreas` per pand, and one row per left-out unit (stage ``units``).
    """
    bag = rules.bag
    units = units.reset_index(drop=True)
    pand_kept = pd.Series(np.asarray(pand_kept, dtype=bool))
    ids = _strings(units[BAG.ID])
    log = DropLog(ids, "units")

    def drop(mask: object, reason: pd.Series | str) -> None:
        log.drop(pd.Series(np.asarray(mask, dtype=bool), index=units.index), reason)

    drop(ids.isna(), "no identificatie")
    drop(ids.duplicated() & ids.notna(), "duplicate identificatie: the first was kept")
    status = _strings(units[BAG.STATUS])
    _status_drop(
        log,
        status,
        bag.unit_kept,
        bag.unit_excluded,
        "verblijfsobject",
        "bag_unit_status.csv",
        None,
    )
    area = pd.to_numeric(units[BAG.AREA], errors="raise").astype("Float64")
    drop(~(area > 0).fillna(False), "no floor area (oppervlakte empty or 0)")

    uses = _listed(units[BAG.USE])
    unknown = uses[
        map_codes(uses, bag.use_function).isna() & map_codes(uses, bag.use_excluded).isna()
    ]
    bad_use = pd.Series(pd.NA, index=units.index, dtype="string")
    bad_use.loc[unknown.index.unique()] = unknown.groupby(level=0).first()
    drop(
        bad_use.notna(),
        "gebruiksdoel '"
        + bad_use.fillna("")
        + "' is not in config/archetypes/bag_use_codes.csv: add it",
    )
    excluded = map_codes(uses, bag.use_excluded).dropna()
    why = pd.Series(pd.NA, index=units.index, dtype="string")
    why.loc[excluded.index.unique()] = excluded.groupby(level=0).first()
    drop(why.notna(), "excluded use: " + why.fillna(""))
    drop(~units.index.isin(uses.index), "no gebruiksdoel")

    links = _listed(units[link_field]) if link_field in units.columns else pd.Series(dtype="string")
    drop(~units.index.isin(links.index), f"no pand ({link_field} empty)")

    # pand keys: identificatie and, where given, the feature id; position in `pand`
    pand_ids = [_strings(pand[BAG.ID])]
    if BAG.FEATURE_ID in pand.columns:
        pand_ids.append(_strings(pand[BAG.FEATURE_ID]))
    keys = pd.concat([pd.Series(np.arange(len(pand)), index=k.to_numpy()) for k in pand_ids])
    keys = keys[keys.index.notna()]
    keys = keys[~keys.index.duplicated()]
    key = _link_key(links)
    at = keys.reindex(key.to_numpy()).to_numpy()  # NaN: a pand not in the register
    pairs = pd.DataFrame({"unit": links.index.to_numpy(), "pand": at, "key": key.to_numpy()})
    found = pairs.dropna(subset=["pand"]).astype({"pand": np.int64})
    first_missing = pairs[pairs["pand"].isna()].groupby("unit")["key"].first()
    none_found = ~units.index.isin(found["unit"]) & units.index.isin(pairs["unit"])
    missing = pd.Series(first_missing.reindex(units.index).to_numpy(), index=units.index)
    drop(
        pd.Series(none_found, index=units.index),
        "pand " + missing.astype("string").fillna("") + " is not in the register (outside the "
        "area pulled or read? grow the units' area by a building's size)",
    )
    kept_pand = pand_kept.to_numpy(bool)
    found = found[kept_pand[found["pand"].to_numpy()]] if len(found) else found
    drop(
        pd.Series(~units.index.isin(found["unit"]), index=units.index),
        "its pand was left out (see the pand's row)",
    )
    counted = log.keep.copy()
    found = found[counted.reindex(found["unit"]).to_numpy(bool)]

    # shares: a unit in k kept panden gives each 1/k of its area
    n_pand = len(pand)
    share = 1.0 / found.groupby("unit")["pand"].transform("size").to_numpy(float)
    unit_area = area.astype(float).reindex(found["unit"]).to_numpy() * share
    residential_use = map_codes(uses, bag.use_function).isin(["RS", "RM"])
    is_home = residential_use.groupby(level=0).any().reindex(found["unit"]).fillna(False)
    is_home = is_home.to_numpy(bool)
    pos = found["pand"].to_numpy()
    usable = np.bincount(pos, weights=unit_area, minlength=n_pand)
    residential = np.bincount(pos, weights=unit_area * is_home, minlength=n_pand)
    dwellings = np.bincount(pos, weights=is_home.astype(float), minlength=n_pand)
    n_units = np.bincount(pos, minlength=n_pand).astype(float)

    # the main use: area per (pand, use), a unit's area shared equally among its uses
    u = uses[uses.index.isin(found["unit"])]
    per_use = pd.DataFrame({"unit": u.index.to_numpy(), "use": u.to_numpy()})
    per_use["n"] = per_use.groupby("unit")["use"].transform("size")
    by = found.assign(a=unit_area).merge(per_use, on="unit")
    by["a"] = by["a"] / by["n"]
    sums = by.groupby(["pand", "use"], sort=True)["a"].sum().reset_index()
    sums = sums.sort_values(["pand", "a", "use"], ascending=[True, False, True], kind="stable")
    main = sums.drop_duplicates("pand").set_index("pand")["use"]
    main_use = pd.Series(
        main.reindex(np.arange(n_pand)).to_numpy(), index=pand.index, dtype="string"
    )
    return (
        UnitAreas(usable, residential, dwellings, n_units, main_use, counted),
        log.table(),
    )


def normalise_bag(
    pand: gpd.GeoDataFrame,
    units: pd.DataFrame,
    rules: ArchetypeRules,
    existing_status: list[str] | None = None,
    link_field: str = BAG.LINK,
) -> tuple[gpd.GeoDataFrame, pd.DataFrame]:
    """Turn BAG panden and their verblijfsobjecten into canonical buildings.

    Parameters
    ----------
    pand
        Pand records with :data:`BAG_PAND_REQUIRED` (``bouwjaar`` numeric), optional
        ``id``, ``gebruiksdoel`` and ``aantal_verblijfsobjecten``, footprint polygons as the
        active geometry in a projected CRS (areas in m²).
    units
        Verblijfsobject records (see :func:`unit_areas`).
    rules
        Archetype rules; the BAG ones are ``rules.bag``.
    existing_status
        Pand statuses kept as standing buildings (default: ``bag_pand_status.csv``).
    link_field
        The units' column naming their panden.

    Returns
    -------
    buildings
        Canonical buildings (:data:`mfa.schema.BUILDING_COLUMNS`) in input order;
        ``building_id`` and ``footprint_id`` are the pand's ``identificatie``.
    dropped
        One row per left-out pand (stage ``register``) and unit (stage ``units``):
        ``record_id``, ``stage``, ``reason``. Every record is a building, counted in one,
        or a row here.
    """
    bag = rules.bag
    df = pand.copy(deep=False)
    ids = _strings(df[BAG.ID])
    log = DropLog(ids, "register")
    drop = log.drop
    drop(ids.isna(), "no identificatie")
    status = _strings(df[BAG.STATUS])
    _status_drop(
        log,
        status,
        bag.pand_kept,
        bag.pand_excluded,
        "pand",
        "bag_pand_status.csv",
        existing_status,
    )
    drop(
        ids[log.keep].duplicated().reindex(ids.index, fill_value=False),
        "duplicate identificatie: the first was kept",
    )
    geom = df.geometry.values
    kind = pd.Series(shapely.get_type_id(geom), index=df.index)
    drop(
        pd.Series(shapely.is_missing(geom) | shapely.is_empty(geom), index=df.index), "no geometry"
    )
    drop(~kind.isin([3, 6]), "geometry is not a footprint polygon")

    areas, dropped_units = unit_areas(units, df, log.keep, rules, link_field)
    keep = log.keep.to_numpy(bool)
    df = df.loc[keep]
    idx = df.index
    usable = pd.Series(areas.usable_m2[keep], index=idx)
    home_share = pd.Series(areas.residential_m2[keep], index=idx) / usable.where(usable > 0)
    dwellings = pd.Series(areas.dwellings[keep], index=idx)
    has_units = usable > 0

    # without counted units: the pand's own gebruiksdoel (PDOK gives it), else the default
    own = pd.Series(pd.NA, index=idx, dtype="string")
    own_homes = pd.Series(np.nan, index=idx)
    if BAG.USE in df.columns:
        own_uses = _listed(df[BAG.USE])
        own_home = map_codes(own_uses, bag.use_function).isin(["RS", "RM"]).groupby(level=0).any()
        own = own_uses.groupby(level=0).first().reindex(idx).astype("string")
        own_homes = own_home.reindex(idx).astype(float)
    declared = (
        pd.to_numeric(df[BAG.UNITS_DECLARED], errors="coerce").astype(float)
        if BAG.UNITS_DECLARED in df.columns
        else pd.Series(np.nan, index=idx)
    )
    residential = (home_share >= bag.residential_min_share).where(has_units, own_homes == 1)
    homes = dwellings.where(has_units, declared.fillna(1))
    single = homes <= bag.max_single_family_dwellings
    function = pd.Series(np.where(single, "RS", "RM"), index=idx).where(
        residential.fillna(False).astype(bool), "NR"
    )
    known_function = has_units | own.notna()
    function = function.where(known_function, bag.no_units_function).astype("string")
    function_source = pd.Series("register", index=idx, dtype="string").where(
        known_function, "imputed"
    )
    use_code = areas.main_use[keep].astype("string").where(has_units, own)

    footprint = pd.Series(shapely.area(df.geometry.values), index=idx, dtype="Float64")
    gfa_reg = (usable * bag.gross_per_usable).where(has_units)
    by_area = (gfa_reg / footprint.astype(float)).round().clip(lower=1)
    default_floors = function.map(rules.floors_by_function).astype(float)
    floors = by_area.where(has_units, default_floors).astype("Float64")
    gfa = gfa_reg.where(has_units, gross_floor_area(footprint.astype(float), floors.astype(float)))
    gfa_source = pd.Series("register", index=idx, dtype="string").where(has_units, "imputed")
    structure, structure_source = impute_by_function(
        pd.Series(pd.NA, index=idx, dtype="string"),
        function,
        rules.structure_by_function,
        "register",
    )
    year = pd.to_numeric(df[BAG.YEAR], errors="raise").astype("Int64")
    year = year.where(year > 0)

    def constant(value: object, dtype: str = "string") -> pd.Series:
        return pd.Series(value, index=idx, dtype=dtype)

    out = pd.DataFrame(
        {
            "building_id": ids[keep],
            "district_id": constant(pd.NA),
            "function": function,
            "function_source": function_source,
            "structure": structure.astype("string"),
            "structure_source": structure_source,
            "archetype_id": archetype_id(function, structure),
            "use_code": use_code,
            "osm_building": constant(pd.NA),
            "wall_material": constant(pd.NA),
            "construction_year": year,
            "construction_year_source": constant("register").where(year.notna(), "missing"),
            "height_m": constant(pd.NA, "Float64"),
            "height_source": constant("missing"),
            "floors": floors,
            "floors_source": constant("imputed"),
            "footprint_area_m2": footprint,
            "footprint_area_source": constant("register"),
            "gfa_m2": gfa.astype("float64"),
            "gfa_source": gfa_source,
            "footprint_id": ids[keep],
            "match_method": constant("not_conflated"),
            "hazard": constant(pd.NA),
            "height_class": use_code.map(bag.height_class).astype("string"),
            "roof_height_m": constant(pd.NA, "Float64"),
            "roof_levels": constant(pd.NA, "Float64"),
        }
    )
    out = with_rules(out)
    out["floors_rule"] = out["floors_rule"].where(out["floors"].isna(), "floor_area")
    out = out.astype(BUILDING_COLUMNS)
    buildings = gpd.GeoDataFrame(out, geometry=df.geometry.values, crs=pand.crs)
    buildings = buildings.reset_index(drop=True)
    return buildings, pd.concat([log.table(), dropped_units], ignore_index=True)

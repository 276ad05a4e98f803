"""Archetype rules: register codes and OSM tags to function, structure and archetype id.

The rules are tables in ``config/archetypes/`` (read by :mod:`mfa.io.tables`); the
functions here are pure and vectorised over Series of codes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa

from mfa.buildings.quality import Limits

__all__ = [
    "ArchetypeRules",
    "BagRules",
    "OsmNeighbours",
    "archetype_id",
    "impute_by_function",
    "map_codes",
]


@dataclass(frozen=True)
class OsmNeighbours:
    """Rules for OSM buildings with generic tags (``[osm]`` of ``defaults.toml``).

    Attributes
    ----------
    generic_tags
        ``building=*`` values whose function and floors come from tagged neighbours.
    radius_m
        Search radius (m) around a building's representative point.
    min_count
        Fewest tagged neighbours for a neighbour value to be used.
    max_house_footprint_m2
        ``building=residential`` up to this footprint (m²) is a single-family house.
    max_house_floors
        A generically tagged building with more floors is not a single-family house.
    """

    generic_tags: tuple[str, ...] = ("yes",)
    radius_m: float = 100.0
    min_count: int = 3
    max_house_footprint_m2: float = 250.0
    max_house_floors: float = 2.0


@dataclass(frozen=True)
class BagRules:
    """Rules of the Dutch BAG register (``bag_*.csv`` and ``[bag]`` of ``defaults.toml``).

    Attributes
    ----------
    use_function, use_excluded
        ``gebruiksdoel`` of a verblijfsobject → function (``woonfunctie`` → RS), or the
        reason a use is left out.
    pand_kept, pand_excluded
        Pand statuses counted as standing buildings (index), and the reason for the others.
    unit_kept, unit_excluded
        The same for verblijfsobject statuses (whose floor area counts).
    gross_per_usable
        Gross floor area per m² of usable floor area (``oppervlakte``, NEN 2580).
    max_single_family_dwellings
        A pand with more dwellings is multi-family (RM).
    residential_min_share
        Share of a pand's counted floor area with woonfunctie that makes it residential.
    no_units_function
        Function of a pand without a counted verblijfsobject (marked ``imputed``).
    height_class
        ``gebruiksdoel`` → height class (``bag_height_classes.csv``) of the pand's main use,
        for floors from a height: a sports hall or an industrial hall is not many storeys.
    """

    use_function: pd.Series = field(default_factory=lambda: pd.Series(dtype="string"))
    use_excluded: pd.Series = field(default_factory=lambda: pd.Series(dtype="string"))
    pand_kept: pd.Series = field(default_factory=lambda: pd.Series(dtype="string"))
    pand_excluded: pd.Series = field(default_factory=lambda: pd.Series(dtype="string"))
    unit_kept: pd.Series = field(default_factory=lambda: pd.Series(dtype="string"))
    unit_excluded: pd.Series = field(default_factory=lambda: pd.Series(dtype="string"))
    gross_per_usable: float = 1.0
    max_single_family_dwellings: int = 1
    residential_min_share: float = 0.5
    no_units_function: str = "NR"
    height_class: pd.Series = field(default_factory=lambda: pd.Series(dtype="string"))


@dataclass(frozen=True)
class ArchetypeRules:
    """Mappings from source codes to RASMI function / structure codes.

    Attributes
    ----------
    bbr_use_function
        BBR use code (``byg021``) → function (RS/RM/NR); excluded codes are absent here.
    bbr_use_excluded
        BBR use code → the reason it is deliberately left out of the stock.
    bbr_wall_structure
        BBR wall code (``byg032``) → structure (C/M/S/T); codes without one are absent.
    osm_building_function, osm_building_excluded
        The same for OSM ``building=*`` values.
    osm_material_structure
        OSM ``building:material`` value → structure.
    bbr_hazard
        BBR asbestos code (``byg036``) → hazard flag (``asbestos_roof``, ...).
    structure_by_function, floors_by_function
        Fallbacks used where nothing was observed (marked ``imputed``).
    osm_unknown_function
        Function for ``building=yes`` and unlisted values (marked ``imputed``).
    storey_height_m, storey_height_by_function
        Storey height (m) to derive floors from a building height: per function where
        given, else the one value.
    limits
        Plausibility limits for repairs and rejects.
    osm_neighbours
        Rules for generic OSM tags (:mod:`mfa.buildings.osm_defaults`).
    height_tags
        OSM ``key``, ``value`` (``*``: any but ``no``) → ``height_class``, in order of
        preference (``osm_height_tags.csv``; :func:`mfa.buildings.heights.height_classes`).
    height_classes
        Per height class (index): ``storey_height_m`` and ``max_floors_from_height``
        (NaN: the function's), from ``height_classes.csv``.
    bbr_height_class
        BBR use code (``byg021``) → height class (``bbr_height_classes.csv``): a church,
        a hall or an industrial building of the register gets its storey height and limit.
    osm_landuse_function
        OSM ``landuse=*`` value → function (or ``residential``: by footprint) of the
        generically tagged buildings inside such a polygon (``osm_landuse.csv``).
    bag
        Rules of the Dutch BAG register (:mod:`mfa.buildings.bag`).
    overture_function, overture_excluded
        Overture Maps building ``class`` (else ``subtype``) → function, or the reason it is
        left out (``overture_building_classes.csv``; :mod:`mfa.buildings.overture`).
    """

    bbr_use_function: pd.Series
    bbr_use_excluded: pd.Series
    bbr_wall_structure: pd.Series
    osm_building_function: pd.Series
    osm_building_excluded: pd.Series
    osm_material_structure: pd.Series
    structure_by_function: dict[str, str]
    floors_by_function: dict[str, float]
    osm_unknown_function: str
    bbr_hazard: pd.Series = field(default_factory=lambda: pd.Series(dtype="string"))
    storey_height_m: float = 3.0
    storey_height_by_function: dict[str, float] = field(default_factory=dict)
    limits: Limits = field(default_factory=Limits)
    osm_neighbours: OsmNeighbours = field(default_factory=OsmNeighbours)
    height_tags: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame(columns=["key", "value", "height_class"])
    )
    height_classes: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame(
            columns=["storey_height_m", "max_floors_from_height"], dtype=float
        )
    )
    bbr_height_class: pd.Series = field(default_factory=lambda: pd.Series(dtype="string"))
    osm_landuse_function: pd.Series = field(default_factory=lambda: pd.Series(dtype="string"))
    bag: BagRules = field(default_factory=BagRules)
    overture_function: pd.Series = field(default_factory=lambda: pd.Series(dtype="string"))
    overture_excluded: pd.Series = field(default_factory=lambda: pd.Series(dtype="string"))
    files: tuple[str, ...] = field(default=())


def map_codes(codes: pd.Series, mapping: pd.Series) -> pd.Series:
    """Map codes (as strings, stripped) through ``mapping``; unknown or missing codes give <NA>.

    Works on the distinct codes (a register has a few hundred among millions of rows).
    """
    index, uniques = pd.factorize(codes, use_na_sentinel=True)
    key = pd.Series(uniques, dtype=object).astype("string").str.strip()
    mapped = key.map(mapping).astype("string").to_numpy(dtype=object, na_value=None)
    return take_strings(index, mapped, codes.index)


def take_strings(index: np.ndarray, values: np.ndarray, at: pd.Index) -> pd.Series:
    """A string Series of ``values[index]`` (<NA> where ``index`` is -1 or the value is
    None), made by Arrow from the few distinct values."""
    codes = pa.array(np.asarray(index, dtype=np.int32), mask=np.asarray(index) < 0)
    dictionary = pa.array(list(values), pa.large_string())
    decoded = pa.DictionaryArray.from_arrays(codes, dictionary).cast(pa.large_string())
    return pd.Series(pd.arrays.ArrowStringArray(decoded), index=at)


def impute_by_function(
    observed: pd.Series, function: pd.Series, defaults: dict[str, object], observed_source: str
) -> tuple[pd.Series, pd.Series]:
    """Fill missing values from a per-function default; return the values and their source.

    ``observed_source`` names where present values came from (``register`` or ``osm``);
    filled values are marked ``imputed``.
    """
    fallback = function.map(defaults)
    values = observed.where(observed.notna(), fallback)
    source = pd.Series(observed_source, index=observed.index, dtype="string")
    source = source.where(observed.notna(), "imputed")
    return values, source


def archetype_id(function: pd.Series, structure: pd.Series) -> pd.Series:
    """Archetype id ``<function>-<structure>``, e.g. ``RS-M`` (single-family, masonry)."""
    return (function.astype("string") + "-" + structure.astype("string")).astype("string")

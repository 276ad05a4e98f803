"""Overture Maps buildings as footprints (pure): records of an Overture buildings file in,
canonical buildings and the records left out (with reasons) out.

Overture's building (schema reference, docs.overturemaps.org, ``buildings/building``):
``id`` (GERS id), ``geometry`` (Polygon/MultiPolygon, lon/lat), ``height`` (m, the
building's top), ``num_floors`` (above ground), ``class`` (e.g. ``house``, ``apartments``,
``church``: the finer use), ``subtype`` (``residential``, ``education``…: the broad use),
``is_underground``, ``sources`` (per property the dataset it came from). The rules:

- function = ``class`` through ``config/archetypes/overture_building_classes.csv``, else
  ``subtype`` through the same table (its ``kind`` column says which values are which),
  else ``[osm] unknown_function`` (imputed); a class or subtype with an ``excluded_reason``
  (carports, roofs, tanks…) is a row of ``dropped.csv``;
- floors = ``num_floors`` (> 0), else the function default (imputed);
  GFA = footprint area in the pipeline CRS × floors;
- ``height_m`` = ``height`` (> 0, the top of the roof), ``roof_height_m`` =
  ``roof_height`` (> 0: from the base of the roof to its top, as OSM ``roof:height``);
  floors from the walls' height (height − roof) follow later where the floors are imputed
  (:mod:`mfa.buildings.heights`);
- provenance: an attribute whose source in ``sources`` (its property's entry, else the
  feature's, ``property = ""``) is OpenStreetMap is ``osm`` (rule ``tags``: Overture
  copies it from the element's tags); any other dataset (Microsoft, Esri Community Maps,
  a national register…) is ``register`` (rule ``measured``: the value a data provider
  gives, as for a municipal footprint file);
- left out, each with a reason: ``type`` other than ``building`` (a ``building_part``
  refines a building and is not one), ``is_underground``, then what every footprint
  source leaves out (no or non-polygonal geometry, repeated id, excluded class).
"""

from __future__ import annotations

import dataclasses

import geopandas as gpd
import pandas as pd

from mfa.buildings._dropped import DropLog
from mfa.buildings.archetypes import ArchetypeRules
from mfa.buildings.footprints import normalise_footprints
from mfa.buildings.provenance import RULE_ATTRIBUTES, with_rules
from mfa.schema import BUILDING_COLUMNS

__all__ = ["OSM_DATASET", "normalise_overture"]

#: The ``sources[].dataset`` value of attributes Overture took from OpenStreetMap.
OSM_DATASET = "OpenStreetMap"

_STAGE = "footprints"


def _source(dataset: pd.Series) -> pd.Series:
    """``osm`` where the dataset is OpenStreetMap, else ``register`` (a provider's value)."""
    is_osm = dataset.astype("string").str.strip().str.lower() == OSM_DATASET.lower()
    return pd.Series("register", index=dataset.index, dtype="string").mask(
        is_osm.fillna(False), "osm"
    )


def _use_key(raw: pd.DataFrame, rules: ArchetypeRules) -> pd.Series:
    """The value that gives the function: ``class`` when the table lists it, else
    ``subtype`` (also when the class is unlisted), else <NA>."""
    listed = rules.overture_function.index.union(rules.overture_excluded.index)
    cls = raw["class"].astype("string").str.strip()
    sub = raw["subtype"].astype("string").str.strip()
    return cls.where(cls.isin(listed).fillna(False), sub).where(
        cls.isin(listed).fillna(False) | sub.notna(), cls
    )


def normalise_overture(
    raw: gpd.GeoDataFrame, crs: str, rules: ArchetypeRules
) -> tuple[gpd.GeoDataFrame, pd.DataFrame]:
    """Canonical buildings from Overture building records, and the records left out.

    Parameters
    ----------
    raw
        ``building_id`` (Overture ``id``), ``class``, ``subtype``, ``height`` (m),
        ``num_floors``, ``roof_height`` (m; optional), ``type``, ``is_underground``, and
        per attribute the dataset it came from (``height_dataset``, ``num_floors_dataset``,
        ``class_dataset``; <NA>: unknown, read as a provider's value); geometry in any
        CRS (Overture: lon/lat).
    crs
        The pipeline's projected CRS (areas in m²).
    rules
        Archetype rules with the Overture table (``overture_function``/``_excluded``).

    Returns
    -------
    buildings, dropped
        Every record is one of the two (checked).
    """
    ids = raw["building_id"].astype("string")
    log = DropLog(ids, _STAGE)
    kind = raw["type"].astype("string").fillna("building")
    log.drop(kind != "building", "Overture type " + kind + ": not a building footprint")
    log.drop(
        raw["is_underground"].astype("boolean").fillna(False),
        "underground (is_underground): not counted with the buildings above ground",
    )
    kept = raw.loc[log.keep]
    floors = pd.to_numeric(kept["num_floors"], errors="coerce").astype("Float64")
    floors = floors.where(floors > 0)
    height = pd.to_numeric(kept["height"], errors="coerce").astype("Float64")
    roof = kept["roof_height"] if "roof_height" in kept.columns else pd.Series(pd.NA, kept.index)
    roof = pd.to_numeric(roof, errors="coerce").astype("Float64")
    tags = gpd.GeoDataFrame(
        {
            "building_id": kept["building_id"].astype("string"),
            "building": _use_key(kept, rules),
            "building:levels": floors.astype("string"),
            "_height": height.where(height > 0),
            "_roof": roof.where(roof > 0),
            "_floors_src": _source(kept["num_floors_dataset"]),
            "_height_src": _source(kept["height_dataset"]),
            "_function_src": _source(kept["class_dataset"]),
        },
        geometry=kept.geometry.values,
        crs=raw.crs,
        index=kept.index,
    )
    overture_rules = dataclasses.replace(
        rules,
        osm_building_function=rules.overture_function,
        osm_building_excluded=rules.overture_excluded,
    )
    carry = ("_height", "_roof", "_floors_src", "_height_src", "_function_src")
    out, dropped = normalise_footprints(
        tags, crs, overture_rules, stage=_STAGE, tag_source="register", carry=carry
    )
    columns = [c for c in out.columns if c not in carry]
    dropped["reason"] = dropped["reason"].str.replace("excluded building=", "excluded ", n=1)
    out["height_m"] = out["_height"]
    out["roof_height_m"] = out["_roof"]
    out["height_source"] = out["_height_src"].where(out["_height"].notna(), "missing")
    for attr, src in (("floors", "_floors_src"), ("function", "_function_src")):
        observed = out[f"{attr}_source"] != "imputed"
        out[f"{attr}_source"] = out[src].where(observed, "imputed")
    out["gfa_source"] = out["floors_source"]
    out = out.drop(columns=[*carry, *(f"{a}_rule" for a in RULE_ATTRIBUTES)])
    out = gpd.GeoDataFrame(with_rules(out)[columns], geometry="geometry", crs=crs)
    out = out.astype({k: v for k, v in BUILDING_COLUMNS.items() if k in out.columns})
    table = pd.concat([log.table(), dropped], ignore_index=True)
    if len(out) + len(table) != len(raw):
        raise AssertionError(f"Overture: {len(raw)} records ≠ {len(out)} + {len(table)} left out")
    return out, table

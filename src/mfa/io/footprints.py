"""Building footprints from any OGR-readable file (GeoDanmark, BGT, a municipality's own)."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import pandas as pd

from mfa.buildings.archetypes import ArchetypeRules
from mfa.buildings.footprints import FOOTPRINT_TAGS, normalise_footprints
from mfa.config import FootprintSource
from mfa.errors import InputDataError
from mfa.io.files import check_input_file
from mfa.io.safeopen import read_vector

__all__ = ["buildings_from_footprint_file", "read_footprint_file"]


def read_footprint_file(
    path: Path, layer: str | None, id_column: str, link_column: str | None = None
) -> gpd.GeoDataFrame:
    """Footprints with ``building_id`` (from ``id_column``), any OSM-style tag columns and,
    with ``link_column``, ``register_link`` (the register id of each footprint)."""
    path = check_input_file(Path(path), "footprint file", "sources.footprints.file")
    gdf = read_vector(path, layer, "footprint file", "sources.footprints.file")
    where = f"{path}" + (f" layer {layer}" if layer else "")
    for key, col in (("id_column", id_column), ("register_link_column", link_column)):
        if col is not None and col not in gdf.columns:
            cols = ", ".join(c for c in gdf.columns if c != "geometry")
            raise InputDataError(f"{where}: no column {col!r} (columns: {cols}); fix {key}")
    if gdf.crs is None:
        raise InputDataError(f"{where}: the file has no CRS; write it with one")
    ids = gdf[id_column].astype("string").str.strip()
    if ids.isna().any():
        pos = int(ids.isna().to_numpy().argmax())
        raise InputDataError(
            f"{where}: feature {pos + 1} has no {id_column}; every footprint needs an id"
        )
    tags = [t for t in FOOTPRINT_TAGS if t in gdf.columns]
    extra = {} if link_column is None else {"register_link": gdf[link_column].astype("string")}
    return gpd.GeoDataFrame(
        pd.DataFrame({"building_id": ids, **{t: gdf[t] for t in tags}, **extra}),
        geometry=gdf.geometry.values,
        crs=gdf.crs,
    )


def buildings_from_footprint_file(
    source: FootprintSource, crs: str, rules: ArchetypeRules
) -> tuple[gpd.GeoDataFrame, pd.DataFrame]:
    """Read a footprint file and normalise it (attributes without tags are imputed)."""
    assert source.file is not None and source.id_column is not None
    raw = read_footprint_file(
        source.file, source.layer, source.id_column, source.register_link_column
    )
    carry = ("register_link",) if source.register_link_column else ()
    return normalise_footprints(
        raw, crs, rules, stage="footprints", tag_source="register", carry=carry
    )

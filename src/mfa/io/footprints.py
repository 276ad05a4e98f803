"""Building footprints from any OGR-readable file (GeoDanmark, BGT, a municipality's own,
a pulled OGC API or WFS snapshot), whole or in batches."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import geopandas as gpd
import pandas as pd

from mfa.buildings.archetypes import ArchetypeRules
from mfa.buildings.footprints import FOOTPRINT_TAGS, normalise_footprints
from mfa.config import FootprintSource
from mfa.core.keys import SeenKeys
from mfa.errors import InputDataError
from mfa.io.files import check_input_file
from mfa.io.safeopen import iter_vector, read_vector
from mfa.schema import empty_dropped

__all__ = ["FootprintBatches", "buildings_from_footprint_file", "read_footprint_file"]

_ROLE, _KEY = "footprint file", "sources.footprints.file"


def _footprints(
    gdf: gpd.GeoDataFrame, where: str, id_column: str, link_column: str | None, first: int = 0
) -> gpd.GeoDataFrame:
    """Footprint records of a file (or of its features from ``first`` on, 0-based)
    checked and reduced to ``building_id``, the tag columns and ``register_link``."""
    for key, col in (("id_column", id_column), ("register_link_column", link_column)):
        if col is not None and col not in gdf.columns:
            cols = ", ".join(c for c in gdf.columns if c != "geometry")
            raise InputDataError(f"{where}: no column {col!r} (columns: {cols}); fix {key}")
    if gdf.crs is None:
        raise InputDataError(f"{where}: the file has no CRS; write it with one")
    ids = gdf[id_column].astype("string").str.strip()
    if ids.isna().any():
        pos = first + int(ids.isna().to_numpy().argmax())
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


def read_footprint_file(
    path: Path, layer: str | None, id_column: str, link_column: str | None = None
) -> gpd.GeoDataFrame:
    """Footprints with ``building_id`` (from ``id_column``), any OSM-style tag columns and,
    with ``link_column``, ``register_link`` (the register id of each footprint)."""
    path = check_input_file(Path(path), _ROLE, _KEY)
    gdf = read_vector(path, layer, _ROLE, _KEY)
    where = f"{path}" + (f" layer {layer}" if layer else "")
    return _footprints(gdf, where, id_column, link_column)


def buildings_from_footprint_file(
    source: FootprintSource, crs: str, rules: ArchetypeRules
) -> tuple[gpd.GeoDataFrame, pd.DataFrame]:
    """Read a footprint file whole and normalise it (attributes without tags are imputed)."""
    assert source.file is not None and source.id_column is not None
    raw = read_footprint_file(
        source.file, source.layer, source.id_column, source.register_link_column
    )
    carry = ("register_link",) if source.register_link_column else ()
    return normalise_footprints(
        raw, crs, rules, stage="footprints", tag_source="register", carry=carry
    )


class FootprintBatches:
    """A footprint file's canonical buildings in batches of at most ``batch_rows``
    features read, for the engine: one batch of the file is in memory at a time (a
    pulled GeoJSON snapshot of a national service included), not the file.

    Each batch is read (:func:`mfa.io.safeopen.iter_vector`), checked as
    :func:`read_footprint_file` checks the whole file, and normalised as
    :func:`buildings_from_footprint_file` normalises it, with the duplicate-id rule over
    the whole file (:class:`mfa.core.keys.SeenKeys`: 16 bytes a footprint): the same
    buildings and left-out records as the whole read. Within a batch the buildings are
    sorted by id (the whole read sorts the file). After iterating, :meth:`dropped` holds
    the records left out.
    """

    def __init__(self, source: FootprintSource, crs: str, rules: ArchetypeRules, batch_rows: int):
        assert source.file is not None and source.id_column is not None
        self.source, self.crs, self.rules, self.batch_rows = source, crs, rules, batch_rows
        self._dropped: list[pd.DataFrame] = [empty_dropped()]

    def __iter__(self) -> Iterator[gpd.GeoDataFrame]:
        src = self.source
        path = check_input_file(Path(str(src.file)), _ROLE, _KEY)
        where = f"{path}" + (f" layer {src.layer}" if src.layer else "")
        carry = ("register_link",) if src.register_link_column else ()
        seen = SeenKeys()
        done = 0
        for gdf in iter_vector(path, src.layer, _ROLE, _KEY, self.batch_rows):
            raw = _footprints(
                gdf,
                where,
                str(src.id_column),
                src.register_link_column,
                int(gdf.index[0]) if len(gdf) else 0,
            )
            buildings, dropped = normalise_footprints(
                raw, self.crs, self.rules, "footprints", "register", carry, seen
            )
            self._dropped.append(dropped)
            buildings.index = pd.RangeIndex(done, done + len(buildings))
            done += len(buildings)
            yield buildings

    def dropped(self) -> pd.DataFrame:
        """The records left out so far (all of them once the batches were read)."""
        return pd.concat(self._dropped, ignore_index=True)

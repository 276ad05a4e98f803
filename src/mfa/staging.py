"""The engine's files in a run's work folder: staged batches (Arrow IPC with their
:class:`~mfa.core.kernel.Shapes`), tables of left-out records and repairs, and the run's
sums (see :mod:`mfa.engine`)."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.feather as feather
import pyarrow.parquet as pq

from mfa.core.kernel import Shapes
from mfa.core.sums import Sums
from mfa.dynamics.flows import YearFill

__all__ = [
    "SUMS",
    "StringTableWriter",
    "read_sums",
    "read_year_fill",
    "stage_batch",
    "unstage_batch",
    "write_strings",
    "write_sums",
    "write_year_fill",
]

SUMS = "sums"


#: Columns the first pass stages beside the attributes (see :class:`Shapes`).
_SHAPE_COLUMNS = ("_x", "_y", "_x0", "_y0", "_x1", "_y1", "_wkb", "_type", "_z")


def stage_batch(rows: gpd.GeoDataFrame, shapes: Shapes, path: str) -> None:
    """Write a checked batch as an Arrow IPC file: attributes and :class:`Shapes`."""
    table = pa.Table.from_pandas(pd.DataFrame(rows.drop(columns="geometry")), preserve_index=False)
    b = shapes.bounds
    extra = [shapes.x, shapes.y, b[:, 0], b[:, 1], b[:, 2], b[:, 3]]
    for name, values in zip(_SHAPE_COLUMNS[:6], extra, strict=True):
        table = table.append_column(name, pa.array(values, pa.float64()))
    table = table.append_column("_wkb", pa.array(shapes.wkb, pa.binary()))
    table = table.append_column("_type", pa.array(shapes.type_id, pa.int8()))
    table = table.append_column("_z", pa.array(shapes.has_z, pa.bool_()))
    feather.write_feather(table, path, compression="lz4")


def unstage_batch(path: str) -> tuple[pd.DataFrame, Shapes, pa.Array]:
    """A staged batch: its attributes, its :class:`Shapes` and its WKB as Arrow."""
    table = feather.read_table(path, memory_map=True)
    cols = {n: table[n].to_numpy() for n in _SHAPE_COLUMNS if n != "_wkb"}
    wkb = table["_wkb"].combine_chunks()
    shapes = Shapes(
        x=cols["_x"],
        y=cols["_y"],
        bounds=np.column_stack([cols["_x0"], cols["_y0"], cols["_x1"], cols["_y1"]]),
        wkb=np.empty(0, dtype=object),  # kept as Arrow: the layer takes it as it is
        type_id=cols["_type"].astype(np.int64),
        has_z=cols["_z"],
        n_coords=np.zeros(0, dtype=np.int64),  # pass 1 used them for the box keys
    )
    return table.drop_columns(list(_SHAPE_COLUMNS)).to_pandas(), shapes, wkb


class StringTableWriter:
    """Appends tables of text columns (left-out records, repairs) to one Parquet file, in
    the order they come: memory holds one table at a time."""

    def __init__(self, path: Path | str, columns: tuple[str, ...]) -> None:
        self.schema = pa.schema([(c, pa.large_string()) for c in columns])
        self.writer = pq.ParquetWriter(path, self.schema)

    def add(self, table: pd.DataFrame) -> None:
        if len(table):
            frame = table[list(self.schema.names)].astype("string")
            self.writer.write_table(
                pa.Table.from_pandas(frame, schema=self.schema, preserve_index=False)
            )

    def add_file(self, path: Path | str) -> None:
        for batch in pq.ParquetFile(path).iter_batches():
            self.writer.write_table(pa.Table.from_batches([batch]).cast(self.schema))

    def close(self) -> None:
        self.writer.close()


def write_strings(table: pd.DataFrame, path: Path | str) -> None:
    """A table of text columns as Parquet (large strings, as :class:`StringTableWriter`)."""
    frame = table.astype("string")
    schema = pa.schema([(c, pa.large_string()) for c in frame.columns])
    pq.write_table(pa.Table.from_pandas(frame, schema=schema, preserve_index=False), path)


_SUM_FRAMES = ("districts", "district_archetypes", "cells", "cell_archetypes", "cohorts")


def write_sums(sums: Sums, folder: Path) -> None:
    """Stage a run's sums as Parquet tables in ``folder`` (read back by :func:`read_sums`)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in _SUM_FRAMES:
        value = getattr(sums, name)
        frame = value.to_frame("gfa_m2") if isinstance(value, pd.Series) else value
        frame.reset_index().to_parquet(folder / f"{name}.parquet", index=False)
    (folder / "peers.json").write_text(json.dumps(sums.imputed_from_peers))


def read_sums(stage: Path) -> Sums:
    """The run's sums staged by :func:`finish_buildings`."""
    folder = stage / SUMS
    frames = {}
    keys = {
        "districts": ["district_id"],
        "district_archetypes": ["district_id", "archetype_id"],
        "cells": ["iy", "ix"],
        "cell_archetypes": ["iy", "ix", "archetype_id"],
        "cohorts": ["district_id", "archetype_id", "construction_year"],
    }
    for name in _SUM_FRAMES:
        frame = pd.read_parquet(folder / f"{name}.parquet").set_index(keys[name])
        is_series = name in ("district_archetypes", "cell_archetypes")
        frames[name] = frame["gfa_m2"] if is_series else frame
    return Sums(
        **frames,
        imputed_from_peers=json.loads((folder / "peers.json").read_text()),
    )


#: The run's fill of unknown construction years, made after pass 1 (JSON; null: none).
YEAR_FILL = "year_fill.json"


def write_year_fill(fill: YearFill | None, stage: Path) -> None:
    """Stage the run's year fill (None: no year observed and no fallback stated)."""
    (stage / YEAR_FILL).write_text(json.dumps(None if fill is None else fill.to_json()))


def read_year_fill(stage: Path) -> YearFill | None:
    """The run's year fill staged by pass 1 (None: no year observed and no fallback)."""
    path = stage / YEAR_FILL
    data = json.loads(path.read_text()) if path.exists() else None
    return None if data is None else YearFill.from_json(data)

"""Writing a layer from pieces, and dictionary-encoded columns (the flows' polygons)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mfa.io import geoparquet

__all__ = ["LayerWriter", "write_table"]


def write_table(table: pa.Table, path: Path) -> Path:
    """Write a layer's Arrow table (:func:`layer_table`, :func:`wkb_layer_table`) as
    :func:`write_layer` does: via a temp file and rename, bytes a function of the rows.
    Dictionary-encoded columns are written as :class:`LayerWriter` writes them."""
    path = Path(path)
    if any(pa.types.is_dictionary(t) for t in table.schema.types):
        with LayerWriter(path) as writer:
            writer.write(table)
    else:
        geoparquet._write_synced(table, path)
    return path


class LayerWriter:
    """Write a layer from pieces (Arrow tables of :func:`layer_table` or
    :func:`wkb_layer_table`, in order), row group by row group, so the whole layer is never
    in memory: ``with LayerWriter(path) as w: w.write(piece)``. Like :func:`write_layer`,
    via a temporary file, fsync and rename, only when the block ends without an error.

    The ``geo`` metadata is the first piece's with the bounding box and geometry types of
    all pieces. Row groups are cut every ``ROW_GROUP_SIZE`` rows of a piece: pieces of a
    multiple of that size (but the last) give the bytes of one piece of all the rows; with
    ``regroup``, rows are held until they fill a row group, so pieces of any size do.

    Dictionary-typed columns are written as plain Parquet columns (of the dictionary's
    value type) in dictionary encoding, each row group with a dictionary of just the
    values it uses. Parquet keeps one dictionary per column chunk: with the table's whole
    dictionary in every row group, a flows layer of 2,000 parishes would repeat every
    polygon in each of its row groups; with rows in district order, each polygon is stored
    about once per scenario. The Arrow schema is not stored (``store_schema=False``), so
    readers see the plain type (pyarrow would hand back a dictionary, which geopandas does
    not read as WKB); the key-value metadata (``geo``, ``pandas``) is written as such.
    """

    def __init__(self, path: Path, regroup: bool = False) -> None:
        self.path = Path(path)
        self._tmp = self.path.with_name(self.path.name + ".tmp")
        self._writer: pq.ParquetWriter | None = None
        self._meta: dict[bytes, bytes] = {}
        self._geo: dict | None = None
        self._schema: pa.Schema | None = None
        self._regroup = regroup
        self._held: list[pa.Table] = []  # rows not yet in a row group (``regroup``)
        self._held_rows = 0
        self._wrote = False

    def __enter__(self) -> LayerWriter:
        return self

    def write(self, table: pa.Table) -> None:
        """Append ``table``'s rows (the schema of the first piece)."""
        meta = dict(table.schema.metadata or {})
        geo = json.loads(meta.pop(b"geo", b"null"))
        if self._writer is None:
            self._meta, self._geo = meta, geo
            self._schema = table.schema.remove_metadata()  # metadata: at the end
            self._writer = pq.ParquetWriter(
                self._tmp, self._schema, compression="snappy", store_schema=False
            )
        elif geo is not None and self._geo is not None:
            _merge_geo(self._geo, geo)
        if not self._regroup:
            self._write_rows(table)
            return
        table = table.replace_schema_metadata(None)
        if not table.schema.equals(self._schema):
            table = table.cast(self._schema)
        self._held.append(table)
        self._held_rows += table.num_rows
        size = geoparquet.ROW_GROUP_SIZE
        if self._held_rows >= size:
            held = pa.concat_tables(self._held)
            cut = self._held_rows // size * size
            self._write_rows(held.slice(0, cut))
            self._held, self._held_rows = [held.slice(cut)], self._held_rows - cut

    def _write_rows(self, table: pa.Table) -> None:
        assert self._writer is not None and self._schema is not None
        self._wrote = True
        schema = self._schema
        types = table.schema.types
        size = geoparquet.ROW_GROUP_SIZE
        for start in range(0, max(table.num_rows, 1), size):
            part = table.slice(start, size)
            columns = [
                _used_dictionary(part.column(i).combine_chunks())
                if pa.types.is_dictionary(t)
                else part.column(i).combine_chunks()
                for i, t in enumerate(types)
            ]
            self._writer.write_table(pa.Table.from_arrays(columns, schema=schema))

    def __exit__(self, kind, value, traceback) -> None:
        if self._writer is None:
            return
        try:
            if kind is None:
                if self._held_rows or (self._held and not self._wrote):  # the last rows
                    self._write_rows(pa.concat_tables(self._held))  # (or an empty layer)
                if self._geo is not None:
                    self._meta[b"geo"] = json.dumps(self._geo).encode()
                self._writer.add_key_value_metadata(self._meta)
        finally:
            self._writer.close()
            if kind is not None:
                self._tmp.unlink(missing_ok=True)
        if kind is None:
            geoparquet.publish_written(self._tmp, self.path)


def _merge_geo(geo: dict, more: dict) -> None:
    """Widen ``geo``'s bounding box and geometry types by ``more``'s (GeoParquet)."""
    for name, column in more["columns"].items():
        into = geo["columns"][name]
        kinds = set(into.get("geometry_types", [])) | set(column.get("geometry_types", []))
        into["geometry_types"] = sorted(kinds)
        box = column.get("bbox")
        if box is not None:
            have = into.get("bbox")
            into["bbox"] = (
                box
                if have is None
                else [*map(min, have[:2], box[:2]), *map(max, have[2:], box[2:])]
            )


def _used_dictionary(column: pa.DictionaryArray) -> pa.DictionaryArray:
    """``column`` with a dictionary of the values it uses, in their first-use order."""
    indices = column.indices.fill_null(-1).to_numpy(zero_copy_only=False)
    valid = indices >= 0
    used, first = np.unique(indices[valid], return_index=True)
    order = np.argsort(first, kind="stable")  # first-use order: independent of the ids
    rank = np.empty(len(used), dtype=np.int32)
    rank[order] = np.arange(len(used), dtype=np.int32)
    new = np.zeros(len(indices), dtype=np.int32)
    new[valid] = rank[np.searchsorted(used, indices[valid])]
    return pa.DictionaryArray.from_arrays(
        pa.array(new, mask=~valid), column.dictionary.take(pa.array(used[order]))
    )

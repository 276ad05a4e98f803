"""LayerWriter with ``regroup``: a layer written from pieces of any size is the file of all
its rows written at once (the flows step writes a piece of districts at a time)."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mfa.io import geoparquet
from mfa.io.layerwriter import LayerWriter


def _piece(ids: np.ndarray, shapes: pa.Array, x: float) -> pa.Table:
    """Rows pointing into one shared dictionary of polygons, with a 'geo' bbox of x."""
    geo = {"version": "1.1.0", "primary_column": "geometry"}
    geo["columns"] = {"geometry": {"encoding": "WKB", "bbox": [x, 0.0, x + 1, 1.0]}}
    table = pa.table(
        {
            "id": pa.array(ids, pa.int64()),
            "geometry": pa.DictionaryArray.from_arrays(pa.array(ids % 5, pa.int32()), shapes),
        }
    )
    return table.replace_schema_metadata({b"geo": json.dumps(geo).encode()})


@settings(max_examples=60, deadline=None)
@given(n=st.integers(0, 40), cuts=st.lists(st.integers(0, 40), max_size=6))
def test_pieces_of_any_size_give_the_file_of_all_rows(
    tmp_path_factory: pytest.TempPathFactory, n: int, cuts: list[int]
) -> None:
    folder = tmp_path_factory.mktemp("lw")
    shapes = pa.array([bytes([k]) * (k + 3) for k in range(5)], pa.binary())
    ids = np.arange(n)
    bounds = sorted({0, n, *(min(c, n) for c in cuts)})
    size = geoparquet.ROW_GROUP_SIZE
    geoparquet.ROW_GROUP_SIZE = 7  # row groups cut inside and across pieces
    try:
        with LayerWriter(folder / "one.parquet") as w:
            w.write(_piece(ids, shapes, 0.0))
        with LayerWriter(folder / "pieces.parquet", regroup=True) as w:
            for k, (a, b) in enumerate(itertools.pairwise(bounds)):
                w.write(_piece(ids[a:b], shapes, float(k)))
            if len(bounds) == 1:
                w.write(_piece(ids, shapes, 0.0))
    finally:
        geoparquet.ROW_GROUP_SIZE = size
    one, pieces = (folder / "one.parquet").read_bytes(), (folder / "pieces.parquet").read_bytes()
    if len(bounds) <= 2:  # one piece: the same bytes (the bbox too)
        assert one == pieces
    import pyarrow.parquet as pq

    a, b = pq.ParquetFile(folder / "one.parquet"), pq.ParquetFile(folder / "pieces.parquet")
    assert a.read().equals(b.read())
    assert [a.metadata.row_group(i).num_rows for i in range(a.num_row_groups)] == [
        b.metadata.row_group(i).num_rows for i in range(b.num_row_groups)
    ]
    box = json.loads(b.schema_arrow.metadata[b"geo"])["columns"]["geometry"]["bbox"]
    assert box == [0.0, 0.0, max(len(bounds) - 2, 0) + 1.0, 1.0]  # every piece's bbox

"""GeoParquet layers: a layer's bytes depend on its rows alone, however they were put
together (one frame, concatenated pieces, an incremental merge)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import shapely

from mfa.io.files import sha256_file
from mfa.io.geoparquet import write_layer

#: Enough rows that the ids' dictionary outgrows Parquet's 1 MB dictionary page and the
#: writer falls back to plain encoding part-way (where depends on the input's chunks).
N = 30_000


def _frame(n: int = N, seed: int = 0) -> gpd.GeoDataFrame:
    rng = np.random.default_rng(seed)
    ids = pd.array(
        [f"0a1b2c3d-{i:08d}-4e5f-8a9b-{seed:04d}{i:08d}" for i in range(n)],
        dtype="string[pyarrow]",
    )
    x, y = rng.uniform(680_000, 700_000, n), rng.uniform(6_170_000, 6_190_000, n)
    return gpd.GeoDataFrame(
        {
            "building_id": ids,
            "district_id": pd.array(
                [f"d{k:02d}" for k in rng.integers(0, 40, n)], dtype="string[pyarrow]"
            ),
            "gfa_m2": rng.uniform(20, 2_000, n).round(1),
        },
        geometry=shapely.points(x, y),
        crs="EPSG:25832",
    )


def _pieces(gdf: gpd.GeoDataFrame, cuts: list[int]) -> gpd.GeoDataFrame:
    """The same rows, concatenated from pieces (Arrow-backed columns keep the chunks)."""
    bounds = [0, *cuts, len(gdf)]
    parts = [gdf.iloc[a:b] for a, b in itertools.pairwise(bounds)]
    out = pd.concat(parts, ignore_index=True)
    assert pa.array(out["building_id"].array).num_chunks == len(parts)
    return out


def test_layer_bytes_do_not_depend_on_how_the_frame_was_concatenated(tmp_path: Path) -> None:
    """Failed before write_layer joined the chunks: Parquet cut the pages of the ids at
    different rows (the files differed though every value was equal)."""
    gdf = _frame()
    one = write_layer(gdf, tmp_path / "one.parquet")
    many = write_layer(_pieces(gdf, [1_000, 7_777, 12_345, 20_001]), tmp_path / "many.parquet")
    assert sha256_file(one) == sha256_file(many)
    # and it is the layer geopandas writes: same values, schema and GeoParquet metadata
    gdf.to_parquet(tmp_path / "gpd.parquet", index=False, write_covering_bbox=True)
    ours, theirs = pq.read_table(one), pq.read_table(tmp_path / "gpd.parquet")
    assert ours.equals(theirs)
    assert ours.schema.equals(theirs.schema, check_metadata=False)
    meta = [
        json.loads(pq.read_metadata(f).metadata[b"geo"]) for f in (one, tmp_path / "gpd.parquet")
    ]
    assert meta[0] == meta[1]
    assert gpd.read_parquet(one).equals(gdf)


def test_a_dictionary_encoded_geometry_is_stored_once_per_row_group(
    tmp_path: Path, monkeypatch
) -> None:
    """The flows layer's rows share their district's polygon: written as a dictionary per
    row group of the polygons it uses (not the whole dictionary in every row group, not a
    copy per row), read by every reader as plain WKB."""
    from mfa.io import geoparquet
    from mfa.io.geoparquet import geometry_type_names, wkb_layer_table
    from mfa.io.layerwriter import write_table

    monkeypatch.setattr(geoparquet, "ROW_GROUP_SIZE", 5_000)
    n_polys, rows_each = 300, 160  # 48,000 rows in 10 row groups, ~31 polygons each
    centres = np.arange(n_polys) * 1_000.0
    polys = shapely.buffer(shapely.points(centres, 0.0), 400.0, quad_segs=30)  # 121 vertices
    wkb = shapely.to_wkb(polys, flavor="iso")
    index = np.repeat(np.arange(n_polys), rows_each).astype(np.int32)
    index[::7] = -1  # some rows without a district
    known = index >= 0
    bounds = np.full((len(index), 4), np.nan)
    bounds[known] = shapely.bounds(polys)[index[known]]
    geometry = pa.DictionaryArray.from_arrays(
        pa.array(np.maximum(index, 0), mask=~known), pa.array(list(wkb), pa.binary())
    )
    attrs = pd.DataFrame({"row": np.arange(len(index))})
    kinds = geometry_type_names(np.array([3]), np.array([False]))
    crs = gpd.GeoSeries([], crs="EPSG:25832").crs
    table = wkb_layer_table(attrs, geometry, bounds, kinds, crs)
    path = write_table(table, tmp_path / "flows.parquet")

    stored = sum(len(w) for w in wkb)
    assert path.stat().st_size < 1.2 * stored + 200_000  # a whole dictionary per group: 10×
    meta = pq.read_metadata(path)
    assert meta.num_row_groups == 10
    for i in range(meta.num_row_groups):
        assert meta.row_group(i).column(1).has_dictionary_page
    assert pq.read_schema(path).field("geometry").type == pa.binary()
    assert json.loads(meta.metadata[b"geo"])["columns"]["geometry"]["geometry_types"] == ["Polygon"]
    back = gpd.read_parquet(path)
    assert back.crs.to_epsg() == 25832 and back["row"].tolist() == list(range(len(index)))
    assert back.geometry.isna().to_numpy().tolist() == (~known).tolist()
    assert shapely.equals_exact(back.geometry.values[known], polys[index[known]], 0).all()
    again = write_table(table, tmp_path / "again.parquet")
    assert sha256_file(again) == sha256_file(path)

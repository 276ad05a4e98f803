"""Row orders: Hilbert order from stored boxes equals geopandas' from parsed geometries;
building-id order as numpy gives it."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st

from mfa.hilbert import hilbert_distance, sorted_by


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(0, 6), min_size=1, max_size=60),
    st.randoms(use_true_random=False),
)
def test_sorted_by_is_a_stable_sort_on_distance_then_key(distances, rnd) -> None:
    """Few distinct distances (many ties), unique keys in a random order."""
    keys = [f"k{i:03d}" for i in range(len(distances))]
    rnd.shuffle(keys)
    h = np.array(distances, dtype=np.uint64)
    k = np.array(keys, dtype=object)
    expected = pd.DataFrame({"h": h, "k": k}).sort_values(["h", "k"], kind="stable").index
    assert sorted_by(h, k).tolist() == expected.tolist()


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 200))
def test_distance_from_bounds_equals_geopandas(seed: int, n: int) -> None:
    rng = np.random.default_rng(seed)
    x, y = rng.uniform(500_000, 520_000, n), rng.uniform(6_100_000, 6_120_000, n)
    w, h = rng.uniform(0, 80, n), rng.uniform(0, 80, n)
    boxes = gpd.GeoSeries(shapely.box(x, y, x + w, y + h), crs="EPSG:25832")
    ours = hilbert_distance(boxes.bounds.to_numpy(), boxes.total_bounds)
    theirs = boxes.hilbert_distance(total_bounds=boxes.total_bounds, level=16).to_numpy()
    np.testing.assert_array_equal(ours, theirs)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        # no NUL: numpy's fixed-width strings drop trailing NULs (ids never hold one)
        st.text(
            st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
            min_size=1,
            max_size=12,
        ),
        min_size=1,
        max_size=80,
        unique=True,
    )
)
def test_id_order_is_numpys_code_point_order(ids) -> None:
    """Group sums run in building-id order; Arrow's sort gives numpy's (code point) order
    for any unique strings, including non-ASCII ones."""
    from mfa.run import _id_order

    series = pd.Series(ids, dtype="string")
    expected = np.argsort(series.to_numpy(dtype=str), kind="stable")
    assert _id_order(series).tolist() == expected.tolist()


@settings(max_examples=80, deadline=None)
@given(st.lists(st.integers(0, 39), max_size=60), st.booleans())
def test_gathering_runs_of_rows_equals_take(rows, ordered) -> None:
    """The merged buildings layer gathers previous + new rows by slicing runs of
    consecutive rows when they are long; the result is always ``take``'s."""
    import pyarrow as pa

    from mfa.io.geoparquet import _gathered

    table = pa.concat_tables(  # chunked, as the previous layer + the new rows are
        [
            pa.table({"a": np.arange(25), "s": [f"r{i}" for i in range(25)]}),
            pa.table({"a": np.arange(25, 40), "s": [f"r{i}" for i in range(25, 40)]}),
        ]
    )
    r = np.array(sorted(set(rows)) if ordered else rows, dtype=np.int64)
    out = _gathered(table, r)
    assert out.equals(table.take(r)) and out.column(0).num_chunks == 1

"""Order statistics from 4-byte keys equal those of a full sort, bit for bit."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from mfa.stocks.orderstats import WINDOW, order_statistics


def _oracle(values: np.ndarray, ranks: np.ndarray) -> np.ndarray:
    return np.moveaxis(np.sort(values, axis=-1)[..., ranks], -1, 0)


# values a Monte Carlo row can hold, and some it should not (negatives, -0.0, inf) but
# might: ties at every scale (few distinct values), zeros, subnormals, huge spreads
_floats = st.one_of(
    st.sampled_from([0.0, -0.0, 1.0, 1.0 + 2**-40, 5e-324, 1e300, np.inf, -2.5]),
    st.floats(min_value=-1e6, max_value=1e12, allow_nan=False),
    st.floats(min_value=999.0, max_value=1001.0),  # runs of equal float32 values
)


@settings(max_examples=300, deadline=None)
@given(
    values=hnp.arrays(
        np.float64,
        hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=70),
        elements=_floats,
    ),
    data=st.data(),
)
def test_order_statistics_equal_a_full_sort(values: np.ndarray, data: st.DataObject) -> None:
    n = values.shape[-1]
    ranks = np.array(
        sorted(set(data.draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=6))))
    )
    got = order_statistics(values, ranks)
    assert got.shape == (len(ranks), *values.shape[:-1])
    assert np.array_equal(got, _oracle(values, ranks))
    assert np.array_equal(np.signbit(got), np.signbit(_oracle(values, ranks)))


def test_monte_carlo_rows_and_long_runs() -> None:
    """Rows like a run's (sums of draws times floor area), and rows whose equal float32
    values run past the window, which must fall back to a full sort."""
    rng = np.random.default_rng(11)
    floor = rng.uniform(0, 5_000, (300, 11)) * (rng.uniform(size=(300, 11)) < 0.4)
    draws = rng.lognormal(4, 0.4, (11, 10 * 1000))
    tonnes = (floor @ draws).reshape(300, 10, 1000)
    ranks = np.array([49, 50, 499, 500, 949, 950])
    assert np.array_equal(order_statistics(tonnes, ranks), _oracle(tonnes, ranks))
    # 4 * WINDOW values that differ below float32's resolution, around rank 500
    close = rng.uniform(size=(20, 1000))
    close[:, 480 : 480 + 4 * WINDOW] = 0.5 + rng.uniform(size=(20, 4 * WINDOW)) * 1e-12
    assert np.array_equal(order_statistics(close, ranks), _oracle(close, ranks))
    # rows longer than the keys have position bits for are sorted in full
    long = rng.uniform(size=(2, 70_000))
    assert np.array_equal(order_statistics(long, ranks), _oracle(long, ranks))

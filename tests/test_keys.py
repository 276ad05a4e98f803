"""The run-wide repeat rules: the same answer however the input is cut into batches."""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from mfa.core.keys import box_keys, hash128, later_repeats, repeated_in_groups


def _cut(values: list[str], cuts: list[int]) -> list[np.ndarray]:
    keys = hash128(np.array(values, dtype=object))
    bounds = sorted({min(c, len(values)) for c in cuts})
    return np.split(keys, bounds)


@settings(max_examples=80, deadline=None)
@given(
    st.lists(st.text(max_size=3), max_size=60),
    st.lists(st.integers(0, 60), max_size=6),
)
def test_repeats_are_pandas_duplicated_for_any_batches(values: list[str], cuts: list[int]) -> None:
    batches = _cut(values, cuts)
    got = np.concatenate([np.zeros(0, bool), *later_repeats(batches)])
    shared = np.concatenate([np.zeros(0, bool), *repeated_in_groups(batches)])
    s = pd.Series(values, dtype=object)
    assert got.tolist() == s.duplicated().tolist()
    assert shared.tolist() == s.duplicated(keep=False).tolist()


def test_the_two_halves_of_a_key_are_independent_hashes() -> None:
    keys = hash128(np.array([f"id-{i}" for i in range(1000)], dtype=object))
    assert (keys[:, 0] != keys[:, 1]).all()
    b = box_keys(np.zeros((3, 4)), np.array([0, 3, 6]), np.array([1, 5, 9]))
    assert (b[:, 0] != b[:, 1]).all()


def test_box_keys_tell_apart_what_differs_and_match_what_is_equal() -> None:
    b = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [0, 0, 1, 2], [0, 0, 1, 1]], dtype=float)
    keys = box_keys(b, np.array([3, 3, 3, 3]), np.array([5, 5, 5, 6]))
    assert (keys[0] == keys[1]).all()
    assert not (keys[0] == keys[2]).all() and not (keys[0] == keys[3]).all()

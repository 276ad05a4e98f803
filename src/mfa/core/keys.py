"""Run-wide "an earlier record has the same key" rules, applied across batches (pure).

Two rules of the building sources look across records: a register id must be unique among
standing records (:func:`mfa.buildings.register.normalise_bbr`) and a footprint must not
repeat an earlier one (:func:`mfa.buildings.quality.clean_geometries`). The first record
in input order is kept. Streamed, each batch hands over 128-bit hashes of its keys
(16 bytes per record: the only per-record state the engine keeps between passes), and
:func:`later_repeats` marks, batch by batch, the records whose key occurred earlier in the
whole input, so the result does not depend on how the input was cut into batches.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

__all__ = ["SeenKeys", "box_keys", "hash128", "later_repeats", "repeated_in_groups"]

#: Two different 16-character SipHash keys: two independent 64-bit hashes per value.
_KEYS = ("mfa-key-hash-k01", "mfa-key-hash-k02")


def hash128(values: np.ndarray) -> np.ndarray:
    """128-bit hashes of strings or bytes: an (n, 2) uint64 array.

    Two independent 64-bit hashes (pandas' SipHash with two keys); a collision among ten
    million keys has a probability of about 1e-25.
    """
    values = np.asarray(values, dtype=object)
    if len(values) == 0:
        return np.zeros((0, 2), dtype=np.uint64)
    return np.stack(
        [pd.util.hash_array(values, hash_key=k, categorize=False) for k in _KEYS], axis=1
    )


def _sorted(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The order that sorts (n, 2) keys (stable: equal keys keep input order) and, in that
    order, whether each key equals the one before it."""
    order = np.lexsort((keys[:, 1], keys[:, 0]))  # stable
    k = keys[order]
    same = np.zeros(len(k), dtype=bool)
    same[1:] = (k[1:, 0] == k[:-1, 0]) & (k[1:, 1] == k[:-1, 1])
    return order, same


def later_repeats(batches: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Per batch, which keys occurred before (earlier in the batch or in an earlier batch).

    ``batches`` holds each batch's (n, 2) hashes in input order; returns one boolean mask
    per batch, True where the key is a repeat.
    """
    sizes = [len(b) for b in batches]
    if sum(sizes) == 0:
        return [np.zeros(n, dtype=bool) for n in sizes]
    keys = np.concatenate([b for b in batches if len(b)])
    repeat = np.zeros(len(keys), dtype=bool)
    cand = _sharing_first_half(keys)  # few: only these can repeat
    if len(cand):
        order, same = _sorted(keys[cand])
        sub = np.zeros(len(cand), dtype=bool)
        sub[order] = same  # all but the first (in input order) of equal keys
        repeat[cand] = sub
    return np.split(repeat, np.cumsum(sizes)[:-1])


#: A 128-bit key as one value (two uint64), so numpy sorts and searches whole keys.
_PAIR = np.dtype([("a", "<u8"), ("b", "<u8")])


class SeenKeys:
    """:func:`later_repeats` for batches that arrive one at a time: remembers the keys of
    the earlier batches (16 bytes a kept key, sorted) so each new batch learns which of its
    keys occurred before, in it or in an earlier batch. The same marks as
    :func:`later_repeats` over all batches at once, whatever the cut (hypothesis-tested)."""

    def __init__(self) -> None:
        self._seen = np.empty(0, dtype=_PAIR)

    def repeats(self, keys: np.ndarray) -> np.ndarray:
        """Which of ``keys`` ((n, 2) uint64, input order) occurred before; the first of
        each is remembered for the next batches."""
        rep = later_repeats([keys])[0]
        pairs = np.ascontiguousarray(keys, dtype=np.uint64).view(_PAIR).ravel()
        if len(self._seen) and len(pairs):
            rep |= np.isin(pairs, self._seen)
        if (~rep).any():
            self._seen = np.sort(np.concatenate([self._seen, pairs[~rep]]))
        return rep


def _sharing_first_half(keys: np.ndarray) -> np.ndarray:
    """Positions of the keys whose first 64 bits another key has (a hash table pass)."""
    return np.flatnonzero(pd.Series(keys[:, 0]).duplicated(keep=False).to_numpy())


def box_keys(bounds: np.ndarray, type_id: np.ndarray, n_coords: np.ndarray) -> np.ndarray:
    """128-bit hashes of (bounds, geometry type, number of coordinates) per geometry.

    Two geometries that are the same shape have the same box key (normalising a shape
    reorders its vertices, never changes them), so only geometries whose box key repeats
    need the exact, costlier comparison.
    """
    rows = np.column_stack(
        [
            np.asarray(bounds, dtype=np.float64),
            np.asarray(type_id, dtype=np.float64),
            np.asarray(n_coords, dtype=np.float64),
        ]
    )
    # each row's 48 bytes as one value, hashed like any other key
    return hash128(np.ascontiguousarray(rows).view(np.dtype((np.void, 48))).ravel().astype(object))


def repeated_in_groups(keys: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Per batch, which rows share their key with another row anywhere in the input."""
    sizes = [len(b) for b in keys]
    if sum(sizes) == 0:
        return [np.zeros(n, dtype=bool) for n in sizes]
    all_keys = np.concatenate([b for b in keys if len(b)])
    shared = np.zeros(len(all_keys), dtype=bool)
    cand = _sharing_first_half(all_keys)
    if len(cand):
        order, same = _sorted(all_keys[cand])
        in_run = same.copy()
        in_run[:-1] |= same[1:]  # the first of a run of equal keys too
        sub = np.zeros(len(cand), dtype=bool)
        sub[order] = in_run
        shared[cand] = sub
    return np.split(shared, np.cumsum(sizes)[:-1])

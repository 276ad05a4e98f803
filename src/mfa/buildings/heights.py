"""Building heights from elevation rasters, and floors from heights (pure numpy/pandas).

Reading raster windows and burning footprints into them is :mod:`mfa.io.rasters`' job;
the statistics here work on the resulting label and value arrays.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = [
    "floor_limits",
    "floors_from_height",
    "height_classes",
    "plausible_height",
    "storey_heights",
    "wall_heights",
    "zonal_percentile",
]


def zonal_percentile(
    labels: np.ndarray, values: np.ndarray, valid: np.ndarray, n_labels: int, q: float
) -> tuple[np.ndarray, np.ndarray]:
    """The ``q``-th percentile of ``values`` per label, over valid cells.

    Parameters
    ----------
    labels
        Integer label per cell (0 … ``n_labels`` − 1), −1 for cells outside every zone.
    values
        Value per cell (e.g. nDSM height, m), same shape as ``labels``.
    valid
        Boolean mask of cells with data (not nodata, finite).
    n_labels
        Number of zones.
    q
        Percentile in [0, 100]; linear interpolation between order statistics
        (numpy's default method).

    Returns
    -------
    percentile, count
        Arrays of length ``n_labels``: the percentile (NaN for zones without a valid
        cell) and the number of valid cells per zone.
    """
    if not 0 <= q <= 100:
        raise ValueError(f"percentile q must be in [0, 100], got {q}")
    lab = np.asarray(labels).ravel()
    val = np.asarray(values, dtype=float).ravel()
    ok = np.asarray(valid, dtype=bool).ravel() & (lab >= 0) & np.isfinite(val)
    lab, val = lab[ok], val[ok]
    order = np.lexsort((val, lab))
    lab, val = lab[order], val[order]
    counts = np.bincount(lab, minlength=n_labels)[:n_labels]
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    has = counts > 0
    pos = (counts[has] - 1) * (q / 100.0)
    lo = np.floor(pos).astype(np.int64)
    hi = np.ceil(pos).astype(np.int64)
    base = starts[has]
    result = np.full(n_labels, np.nan)
    v_lo, v_hi = val[base + lo], val[base + hi]
    result[has] = v_lo + (v_hi - v_lo) * (pos - lo)
    return result, counts


def floors_from_height(height_m: pd.Series, storey_height_m: float | pd.Series) -> pd.Series:
    """Number of floors = height (m) / storey height (m), rounded half up, at least 1.

    ``storey_height_m`` is one value or one per building (aligned with ``height_m``,
    e.g. by function: :func:`storey_heights`). <NA> where the height is missing.
    """
    storey = pd.Series(storey_height_m, index=height_m.index, dtype="Float64")
    if (storey.fillna(0) <= 0).any():
        raise ValueError(f"storey height must be > 0 m, got {storey.min()}")
    h = height_m.astype("Float64")
    floors = np.floor(h / storey + 0.5).clip(lower=1)
    return floors.astype("Float64")


def wall_heights(
    height_m: pd.Series,
    roof_height_m: pd.Series,
    roof_levels: pd.Series,
    storey_height_m: pd.Series,
) -> tuple[pd.Series, np.ndarray]:
    """Height of the walls (m): the building's height less its roof's, for floors from heights.

    OSM *Simple 3D Buildings*: ``height`` is the total height, roof included; ``roof:height``
    is the roof's (top of the walls to the top of the roof); ``roof:levels`` are storeys
    within the roof, not counted in ``building:levels``. The roof's height is
    ``roof_height_m``, else ``roof_levels`` × ``storey_height_m`` (m per storey, aligned),
    else 0. Where it is not below the height (a roof as tall as the building or taller:
    a mistagged value) it is not used: the full height, and True in the returned mask
    (the caller records a repair). <NA> where the height is missing.
    """
    h = height_m.astype("Float64")
    storey = pd.Series(storey_height_m, index=h.index, dtype="Float64")
    roof = roof_height_m.astype("Float64").fillna(roof_levels.astype("Float64") * storey)
    bad = (h.notna() & roof.notna() & (roof >= h)).fillna(False).to_numpy(bool)
    wall = (h - roof.fillna(0)).where(~bad, h)
    return wall, bad


def storey_heights(
    function: pd.Series,
    storey_height_m: float | dict[str, float],
    height_class: pd.Series | None = None,
    classes: pd.DataFrame | None = None,
) -> pd.Series:
    """Storey height (m) per building: that of its height class where the class gives one
    (``classes.storey_height_m``, e.g. 8.53 m for a warehouse), else by ``function``
    (RS/RM/NR) from a dict, the given value for functions not in it (and for every
    building given one value)."""
    if not isinstance(storey_height_m, dict):
        base = pd.Series(float(storey_height_m), index=function.index, dtype=float)
    else:
        default = storey_height_m.get("*", 3.0)
        base = function.astype(object).map(storey_height_m).astype(float).fillna(default)
    if height_class is None or classes is None or classes.empty:
        return base
    by_class = height_class.astype(object).map(classes["storey_height_m"]).astype(float)
    return by_class.fillna(base)


def floor_limits(
    function: pd.Series,
    height_class: pd.Series | None,
    classes: pd.DataFrame | None,
    by_function: dict[str, float],
    max_floors: float,
) -> tuple[pd.Series, pd.Series]:
    """Most floors a height may give per building, and whether the limit is its height
    class's (else the function's ``by_function``, else ``max_floors``)."""
    cap = function.astype(object).map(by_function).astype(float).fillna(max_floors)
    if height_class is None or classes is None or classes.empty:
        return cap, pd.Series(False, index=function.index)
    by_class = height_class.astype(object).map(classes["max_floors_from_height"]).astype(float)
    return by_class.fillna(cap), by_class.notna()


def height_classes(tags: pd.DataFrame, table: pd.DataFrame) -> pd.Series:
    """The height class of each element from its OSM tags: that of the first row of
    ``table`` (``key``, ``value``, ``height_class``; value ``*``: any value but ``no``)
    whose tag it has; <NA> where none. Vectorised over the elements (one pass per row of
    the table)."""
    out = pd.Series(pd.NA, index=tags.index, dtype="string")
    for key, value, cls in reversed(
        list(table[["key", "value", "height_class"]].itertuples(index=False, name=None))
    ):
        if key not in tags.columns:
            continue
        v = tags[key].astype("string").str.strip().str.lower()
        hit = (v.notna() & (v != "no")) if value == "*" else (v == value)
        out[hit.fillna(False).to_numpy(bool)] = cls
    return out


def plausible_height(height_m: pd.Series, min_m: float, max_m: float) -> pd.Series:
    """True where a building height (m) is within [min_m, max_m]; <NA> stays False."""
    h = height_m.astype("Float64")
    return ((h >= min_m) & (h <= max_m)).fillna(False).astype(bool)

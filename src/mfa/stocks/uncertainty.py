"""Uncertainty of material stocks: seeded Monte Carlo draws of the intensities (pure).

The intensity of an archetype (kg/m² of one material in, say, a masonry single-family
house) is one uncertain quantity shared by every building of that archetype. So one draw
is one intensity per archetype and material, applied to all its buildings: the draws are
fully correlated within an archetype and independent between archetypes and materials.
An aggregate's draws are therefore exact sums of floor area per archetype times the
intensity draws, and its percentiles come from those summed draws, never from adding
building percentiles.

Each intensity is drawn from the piecewise-linear quantile function through the table's
percentiles (p00, p05, p25, p50, p75, p95, p100): inverse-CDF sampling of a distribution
that reproduces every tabulated percentile and stays within the observed range.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import pandas as pd

from mfa.stocks.intensity import PERCENTILES
from mfa.stocks.orderstats import order_statistics

__all__ = [
    "LEVELS",
    "PART_GROUPS",
    "PartsMap",
    "draw_quantiles",
    "floor_matrix",
    "group_percentiles",
    "group_quantiles",
    "intensity_draws",
    "row_percentiles",
    "unit_quantiles",
]

#: Probability levels of the tabulated percentiles.
LEVELS = np.array([int(p.removeprefix("p")) / 100 for p in PERCENTILES])


def intensity_draws(percentiles: np.ndarray, n_draws: int, seed: int) -> np.ndarray:
    """Monte Carlo draws of intensities (kg/m²).

    Parameters
    ----------
    percentiles
        Array (archetypes × materials × 7) of the tabulated percentiles p00…p100.
    n_draws
        Number of draws.
    seed
        Seed of numpy's default generator; the same seed gives the same draws.

    Returns
    -------
    numpy.ndarray
        Draws × archetypes × materials (kg/m²).
    """
    p = np.asarray(percentiles, dtype=float)
    n_a, n_m, n_l = p.shape
    if n_l != len(LEVELS):
        raise ValueError(f"expected {len(LEVELS)} percentiles per intensity, got {n_l}")
    u = np.random.default_rng(seed).random((n_draws, n_a, n_m))
    seg = np.clip(np.searchsorted(LEVELS, u, side="right") - 1, 0, len(LEVELS) - 2)
    lo_level, hi_level = LEVELS[seg], LEVELS[seg + 1]
    frac = (u - lo_level) / (hi_level - lo_level)
    a_idx = np.arange(n_a)[None, :, None]
    m_idx = np.arange(n_m)[None, None, :]
    lo, hi = p[a_idx, m_idx, seg], p[a_idx, m_idx, seg + 1]
    return lo + frac * (hi - lo)


def row_percentiles(values: np.ndarray, q: tuple[float, ...]) -> np.ndarray:
    """Percentiles ``q`` (in %) over the last axis: ``np.percentile(values, q, axis=-1)``
    (linear method, numpy's index and interpolation formulas; equal to within a few units
    in the last place), from the two order statistics around each percentile
    (:func:`mfa.stocks.orderstats.order_statistics`, exact) instead of a copy of
    ``values`` with that axis moved first and sorted. Returns len(q) × values.shape[:-1].
    ``values`` must hold no NaN."""
    n = values.shape[-1]
    quantiles = np.asarray(q, dtype=float) / 100
    virtual = n * quantiles + (1 + quantiles * (1 - 1 - 1)) - 1  # numpy's, alpha = beta = 1
    previous = np.floor(virtual).astype(np.intp)
    following = np.minimum(previous + 1, n - 1)
    gamma = virtual - previous
    ranks = np.unique(np.concatenate([previous, following]))
    stats = order_statistics(values, ranks)
    at = {int(r): i for i, r in enumerate(ranks)}
    out = np.empty((len(q), *values.shape[:-1]))
    for i in range(len(q)):
        a, b, t = stats[at[previous[i]]], stats[at[following[i]]], gamma[i]
        diff = b - a
        out[i] = b - diff * (1 - t) if t >= 0.5 else a + diff * t  # numpy's _lerp
    return out


def draw_quantiles(draws: np.ndarray, q: tuple[float, ...]) -> np.ndarray:
    """Quantiles over the first axis (draws); ``q`` in percent."""
    return np.percentile(draws, q, axis=0)


def unit_quantiles(
    draws: np.ndarray, archetypes: list[str], materials: list[str], q: tuple[float, ...]
) -> pd.DataFrame:
    """Per archetype, the quantiles of t per m² for each material and for the total.

    A building's percentile is its floor area times these (one uncertain factor per
    building), so building percentiles need no per-building draws. Columns
    ``<material>_t_pXX`` and ``mass_t_pXX`` in t/m².
    """
    per_m2 = draws / 1000.0  # t/m²
    total = per_m2.sum(axis=2, keepdims=True)
    both = np.concatenate([per_m2, total], axis=2)
    qs = draw_quantiles(both, q)  # q × archetypes × (materials + 1)
    names = [*materials, "mass"]
    cols = {
        f"{name}_t_p{round(qq):02d}": qs[i, :, j]
        for j, name in enumerate(names)
        for i, qq in enumerate(q)
    }
    return pd.DataFrame(cols, index=pd.Index(archetypes, name="archetype_id"))


def floor_matrix(
    floor_m2: pd.Series, groups: pd.Index, archetypes: list[str] | tuple[str, ...]
) -> np.ndarray:
    """Groups × archetypes floor area (m²) from sums indexed by (group, archetype)
    (``group`` may be several levels; missing pairs are 0)."""
    wide = floor_m2.unstack("archetype_id", fill_value=0.0)
    wide = wide.reindex(index=groups, columns=list(archetypes), fill_value=0.0)
    return wide.to_numpy(dtype=float)


#: ``map_parts(fn, args)``: ``fn(*a)`` for each tuple ``a`` of ``args``, results in input
#: order (the run's executor, :func:`mfa.executor.ordered_map`).
PartsMap = Callable[[Callable[..., Any], Iterable[tuple[Any, ...]]], Iterable[Any]]

#: Groups per part when :func:`group_quantiles` hands parts to an executor.
PART_GROUPS = 2_048


def group_quantiles(
    floor: np.ndarray,
    draws: np.ndarray,
    q: tuple[float, ...],
    chunk: int = 256,
    map_parts: PartsMap | None = None,
) -> tuple[np.ndarray, float]:
    """Monte Carlo percentiles of each group's tonnes, per material and in total.

    ``floor`` is groups × archetypes (m², :func:`floor_matrix`), ``draws`` draws ×
    archetypes × materials (kg/m²). In one draw a group holds Σ_archetype floor area ×
    intensity draw (one draw per archetype, shared by all its buildings) of each
    material, and Σ_archetype floor area × (the draw's intensities summed over
    materials) in total. Groups are done ``chunk`` at a time (memory: chunk ×
    (materials + 1) × draws values).

    Returns the percentiles (t; ``len(q)`` × groups × (materials + 1), the total last)
    and the largest relative difference, draw by draw, between the groups' tonnes added
    up and the tonnes of all their floor area at once (a check that no draw is lost or
    counted twice; raises :class:`~mfa.errors.ValidationError` above 1e-9).

    Groups with equal floor rows share one computation. With ``map_parts``, parts of
    :data:`PART_GROUPS` distinct rows are computed on the run's executor (each group's
    percentiles depend on its own row only, so the result is the same for any executor
    and worker count; the conservation check is made per part).

    The one implementation of aggregate percentiles: the run's districts, grid cells and
    flows, and ``mfa query`` (one group) all come from here.
    """
    # groups with the same floor areas (no construction in a year, a scenario that
    # changes nothing) have the same percentiles: each distinct row is drawn once
    floor = np.asarray(floor, dtype=float)
    rows, inverse, counts = np.unique(floor, axis=0, return_inverse=True, return_counts=True)
    counts = counts.astype(float)
    if map_parts is not None and len(rows) > PART_GROUPS:
        parts = (
            (rows[s : s + PART_GROUPS], counts[s : s + PART_GROUPS], draws, q, chunk)
            for s in range(0, len(rows), PART_GROUPS)
        )
        done = list(map_parts(_distinct_quantiles, parts))
        out, error = np.concatenate([r[0] for r in done], axis=1), max(r[1] for r in done)
    else:
        out, error = _distinct_quantiles(rows, counts, draws, q, chunk)
    return out[:, inverse.reshape(-1)], error


def _distinct_quantiles(
    rows: np.ndarray, counts: np.ndarray, draws: np.ndarray, q: tuple[float, ...], chunk: int
) -> tuple[np.ndarray, float]:
    """:func:`group_quantiles` of distinct floor rows, each standing for ``counts`` groups
    (the conservation check weighs them)."""
    from mfa.errors import ValidationError

    n_d, n_a, n_m = draws.shape
    per_m2 = np.empty((n_a, n_m + 1, n_d))  # t/m²
    per_m2[:, :n_m] = draws.transpose(1, 2, 0) / 1000.0
    per_m2[:, n_m] = per_m2[:, :n_m].sum(axis=1)
    per_m2 = per_m2.reshape(n_a, (n_m + 1) * n_d)
    total = ((counts @ rows) @ per_m2).reshape(n_m + 1, n_d)
    summed = np.zeros((n_m + 1) * n_d)
    out = np.empty((len(q), len(rows), n_m + 1))
    for start in range(0, len(rows), chunk):
        block = rows[start : start + chunk]
        tonnes = block @ per_m2
        summed += counts[start : start + chunk] @ tonnes
        out[:, start : start + len(block)] = row_percentiles(
            tonnes.reshape(len(block), n_m + 1, n_d), q
        )
    scale = np.maximum(np.abs(total), 1e-12)
    error = (
        float(np.max(np.abs(summed.reshape(total.shape) - total) / scale)) if total.size else 0.0
    )
    if error > 1e-9:
        raise ValidationError(
            f"Monte Carlo draws are not conserved across groups (max rel. error {error:.2e})"
        )
    return out, error


def group_percentiles(
    floor: np.ndarray,
    draws: np.ndarray,
    materials: list[str],
    q: tuple[float, ...],
    chunk: int = 256,
    map_parts: PartsMap | None = None,
) -> tuple[pd.DataFrame, float]:
    """Percentile columns ``<material>_t_pXX`` and ``mass_t_pXX`` per group (t) from
    :func:`group_quantiles` (same arguments), and its conservation error."""
    out, error = group_quantiles(floor, draws, q, chunk, map_parts)
    names = [*materials, "mass"]
    columns = [f"{name}_t_p{round(qq):02d}" for name in names for qq in q]
    return pd.DataFrame(out.transpose(1, 2, 0).reshape(len(floor), -1), columns=columns), error

"""The objective of reuse matching: net CO2 and net cost of a tonne on an arc, and their
weighted sum as the integer the solvers minimise.

Every arc has two prices per tonne: kg CO2e and DKK, each = km × the per-tonne·km rate
(transport) + a fixed part (handling at a hub, holding a year, minus what reuse avoids).
What reuse avoids: the virgin product's A1–A3 emissions (kg CO2e per t) and its price
plus the end-of-life fee the tonne escapes (DKK per t). A supply → demand arc avoids
both; through a hub the end-of-life fee is avoided on the way in (the tonne left the
demolition), the virgin product on the way out (it reached a site). Supply → end of life
and virgin → demand cost 0: the baseline every number is net of.

The solvers minimise ``co2_weight`` × kg CO2e + ``cost_weight`` × DKK per tonne, in
thousandths (whole grams of CO2e per t at weights (1, 0)) × flow in kg, so the objective
is in millionths (mg CO2e at weights (1, 0)).
"""

from __future__ import annotations

import numpy as np

from mfa.match.params import MatchParams

__all__ = ["by_material", "milli", "pair_prices", "weighted_milli"]


def by_material(values: dict[str, float], materials: np.ndarray) -> np.ndarray:
    """``values[material]`` per element (0 where a material has no value), float."""
    mats = np.asarray(materials, dtype=object)
    out = np.zeros(len(mats))
    for m, v in values.items():
        out[mats == m] = v
    return out


def pair_prices(
    km: np.ndarray, materials: np.ndarray, params: MatchParams
) -> tuple[np.ndarray, np.ndarray]:
    """Net kg CO2e and net DKK of moving one tonne ``km`` from a demolition straight to a
    site: transport − the virgin product (and, in DKK, − the end-of-life fee avoided)."""
    km = np.asarray(km, dtype=float)
    co2 = km * params.kgco2e_per_tkm - by_material(params.avoided_kgco2e_per_t, materials)
    dkk = km * params.dkk_per_tkm - (
        by_material(params.virgin_dkk_per_t, materials)
        + by_material(params.end_of_life_dkk_per_t, materials)
    )
    return co2, dkk


def milli(values: np.ndarray) -> np.ndarray:
    """Per-tonne values in whole thousandths (int64), as the solvers need them."""
    return np.rint(np.asarray(values, dtype=float) * 1000.0).astype(np.int64)


def weighted_milli(co2_per_t: np.ndarray, dkk_per_t: np.ndarray, params: MatchParams):
    """The objective's cost per tonne of an arc: ``co2_weight`` × kg CO2e +
    ``cost_weight`` × DKK, in whole thousandths (int64). At weights (1, 0) this is
    exactly :func:`milli` of the CO2 (1 × a + 0 × b == a in floating point)."""
    w_co2, w_cost = params.weights
    return milli(w_co2 * np.asarray(co2_per_t, float) + w_cost * np.asarray(dkk_per_t, float))

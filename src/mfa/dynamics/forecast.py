"""From today's register to expected demolition and construction flows (pure).

Today's stock is the register's age structure: floor area (m²) per series (district ×
archetype) and construction year. A cohort that is still standing at the end of the base
year ``R`` is known to have survived to its age ``R − c``, so its expected stock later is
``S(t) = S(R) · sf(t − c) / sf(R − c)``: the same as back-casting its inflow from the age
structure and running the inflow-driven model forward (see the tests), but computed in log
space, which stays finite for centuries-old buildings. A cohort that its lifetime says
should be gone (survival 0, e.g. older than a fixed lifetime) leaves in the first year.
New construction enters as inflow and ages with the same lifetime.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mfa.dynamics import Lifetime, inflow_driven, stock_driven, sum_last

__all__ = ["Forecast", "forecast_stock"]


@dataclass(frozen=True)
class Forecast:
    """Floor area (m²) per series and year ``base_year … horizon`` (index 0 = base year)."""

    years: np.ndarray
    stock_m2: np.ndarray
    inflow_m2: np.ndarray
    outflow_m2: np.ndarray


def forecast_stock(
    stock_by_cohort_m2: np.ndarray,
    cohort_years: np.ndarray,
    base_year: int,
    horizon: int,
    lifetime: Lifetime,
    construction_m2: np.ndarray | None = None,
    extra_demolition_rate: float = 0.0,
    stock_growth_per_year: float | None = None,
) -> Forecast:
    """Expected stock, inflow and outflow (m²) of series from the base year to the horizon.

    Parameters
    ----------
    stock_by_cohort_m2
        Floor area standing at the end of ``base_year`` (series × cohorts).
    cohort_years
        Construction year of each cohort column (≤ ``base_year``).
    lifetime
        Lifetime model with scalar parameters (one per call; group series by archetype).
    construction_m2
        New floor area per series and forecast year (series × (horizon − base_year)), or
        None for none.
    extra_demolition_rate
        An additional share of the remaining stock demolished per year (scenario lever).
    stock_growth_per_year
        Stock-driven instead: the floor area of each series follows
        ``stock(base) × (1 + g)^years`` and new construction is what it takes, after the
        existing cohorts' outflow (never negative: a stock shrinking faster than its
        cohorts leave gets no construction and stays above the target).

    Returns
    -------
    Forecast
        Index 0 is the base year (stock only; its flows are 0); the balance
        ``stock(t) − stock(t−1) = inflow(t) − outflow(t)`` holds for every later year.
    """
    s0 = np.asarray(stock_by_cohort_m2, dtype=float)
    cohorts = np.asarray(cohort_years)
    if (cohorts > base_year).any():
        raise ValueError("cohort years after the base year cannot be in today's stock")
    years = np.arange(base_year, horizon + 1)
    n = len(years)
    age_now = base_year - cohorts
    ages = years[:, None] - cohorts[None, :]  # years × cohorts
    log_now = lifetime.log_survival_at(age_now)
    log_later = lifetime.log_survival_at(ages)
    with np.errstate(invalid="ignore"):
        ratio = np.exp(log_later - log_now[None, :])
    overdue = ~np.isfinite(log_now)
    ratio[:, overdue] = 0.0
    ratio[0, :] = 1.0  # today's stock is observed
    keep = (1.0 - extra_demolition_rate) ** np.arange(n)
    existing = _rowwise_product(s0, ratio * keep[:, None])  # series × years
    stock = existing.copy()
    inflow = np.zeros_like(stock)
    if stock_growth_per_year is not None:
        if construction_m2 is not None:
            raise ValueError("give construction_m2 or stock_growth_per_year, not both")
        target = existing[:, :1] * (1.0 + stock_growth_per_year) ** np.arange(n)[None, :]
        residual = np.maximum.accumulate(np.maximum(target - existing, 0.0), axis=1)
        residual[:, 0] = 0.0
        built = stock_driven(residual, lifetime, negative_inflow="prevent")
        stock += built.stock
        inflow = built.inflow
    elif construction_m2 is not None:
        new = np.zeros_like(stock)
        new[:, 1:] = np.asarray(construction_m2, dtype=float)
        built = inflow_driven(new, lifetime)
        stock += built.stock * keep[None, :]
        inflow = new
    outflow = np.zeros_like(stock)
    outflow[:, 1:] = stock[:, :-1] - stock[:, 1:] + inflow[:, 1:]
    return Forecast(years, stock, inflow, outflow)


def _rowwise_product(a: np.ndarray, b: np.ndarray, chunk: int = 512) -> np.ndarray:
    """``a @ b.T`` (series × cohorts by years × cohorts), each row summed on its own.

    A BLAS product rounds a row differently depending on how many rows it is computed
    with; summing each row's products in a fixed order (:func:`mfa.dynamics.sum_last`)
    does not, so a series gets the same bits alone as among all of a city's series (what
    incremental runs need).
    Rows are taken ``chunk`` at a time to bound the series × years × cohorts temporary.
    """
    out = np.empty((a.shape[0], b.shape[0]))
    for lo in range(0, a.shape[0], chunk):
        out[lo : lo + chunk] = sum_last(a[lo : lo + chunk, None, :] * b[None, :, :])
    return out

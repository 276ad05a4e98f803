"""A cohort-based dynamic stock model, vectorised over many series at once (pure numpy).

Arrays have time (yearly steps) as the last axis and any number of leading axes of
independent series (e.g. district × archetype × material); cohort-resolved arrays have
time then cohort as their last two axes. Conventions are those of ODYM's
``DynamicStockModel`` (and flodym with ``inflow_at="end"``):

- stocks are measured at the end of a year;
- a cohort has age 0 in the year it enters: ``sf[t, c]`` is the share of the inflow of
  year ``c`` still in stock at the end of year ``t``, i.e. the survival function of the
  lifetime distribution at age ``t − c`` (0 for ``t < c``);
- outflow of cohort ``c`` in year ``t`` is the drop of its stock from ``t − 1`` to ``t``,
  and in its own year the part of the inflow that did not survive it.

Why not flodym's own classes: they work on named-dimension arrays built from a model
definition; mfa needs plain arrays over thousands of district × archetype × material
series. The survival functions here have the same distributions and parameterisations
as flodym's scipy ones (computed without scipy, see ``_log_ndtr``), and the tests check
agreement with scipy.stats and with flodym for every model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

__all__ = [
    "LIFETIME_KINDS",
    "DSMResult",
    "Lifetime",
    "StockBalanceError",
    "check_stock_balance",
    "inflow_driven",
    "inflow_from_age_structure",
    "lifetime",
    "stock_driven",
    "sum_last",
]

LifetimeKind = Literal["fixed", "normal", "folded_normal", "lognormal", "weibull"]
#: Lifetime models and their parameters.
LIFETIME_KINDS: dict[str, tuple[str, ...]] = {
    "fixed": ("mean",),
    "normal": ("mean", "std"),
    "folded_normal": ("mean", "std"),
    "lognormal": ("mean", "std"),
    "weibull": ("shape", "scale"),
}


class StockBalanceError(ValueError):
    """stock(t) − stock(t−1) ≠ inflow(t) − outflow(t), or a value is NaN."""


@dataclass(frozen=True)
class Lifetime:
    """A lifetime distribution (years). Parameters broadcast as ``(..., cohort)``:
    scalars, one value per cohort (shape ``(C,)``) or per series and cohort."""

    kind: str
    params: dict[str, np.ndarray]

    def log_survival_at(self, age: np.ndarray) -> np.ndarray:
        """log of the survival function at the given ages (years), for scalar parameters.

        Computed in log space so that ratios of survival probabilities of very old
        cohorts stay finite. −inf where survival is 0.
        """
        if any(np.ndim(v) for v in self.params.values()):
            raise ValueError("log_survival_at needs scalar lifetime parameters")
        return _log_sf(self.kind, np.asarray(age, dtype=float), self.params)

    def scaled(self, factor: float) -> Lifetime:
        """The same model with lifetimes multiplied by ``factor`` (mean and std, or scale)."""
        keys = {"mean", "std", "scale"}
        return Lifetime(
            self.kind, {k: (v * factor if k in keys else v) for k, v in self.params.items()}
        )

    def survival(self, n_years: int) -> np.ndarray:
        """Survival matrix ``sf[..., t, c]`` for ``n_years`` years (0 for ``t < c``)."""
        t = np.arange(n_years)
        age = (t[:, None] - t[None, :]).astype(float)  # t × c
        for k, v in self.params.items():
            if np.ndim(v) and np.shape(v)[-1] not in (1, n_years):
                raise ValueError(
                    f"lifetime parameter {k!r} has {np.shape(v)[-1]} cohorts, the series "
                    f"{n_years} years; give one value or one per year"
                )
        p = {
            k: np.asarray(v, dtype=float)[..., None, :] if np.ndim(v) else float(v)
            for k, v in self.params.items()
        }
        return np.where(age >= 0, np.exp(_log_sf(self.kind, age, p)), 0.0)


#: Above this many distinct arguments, :func:`_log_ndtr` evaluates scipy's vectorised
#: ``log_ndtr`` (the same function; its import then costs less than the loop).
_SCALAR_LOG_NDTR_MAX = 4096


def _log_ndtr(x: np.ndarray) -> np.ndarray:
    """log Φ(x), the log of the standard normal CDF, accurate far into the lower tail.

    From the C library's ``erfc`` (``math.erfc``; ``log1p`` above 0) at each distinct
    value, without importing scipy: lifetimes with scalar parameters are evaluated at
    whole-year ages, so even a national run has a few hundred distinct values, whatever
    its buildings. Below
    x = −37, where ``erfc`` underflows, the asymptotic series log Φ(x) = −x²/2 − log(−x)
    − log √(2π) + log(1 − 1/x² + 3/x⁴ − 15/x⁶) (Abramowitz & Stegun 26.2.12; the next
    term, 105/x⁸, is below 1e-10 there). Many distinct values (lifetime parameters that
    vary by series and cohort): ``scipy.special.log_ndtr``.
    """
    x = np.asarray(x, dtype=float)
    values, where = np.unique(x, return_inverse=True)
    if len(values) > _SCALAR_LOG_NDTR_MAX:
        from scipy.special import log_ndtr

        return log_ndtr(x)
    out = np.empty(len(values))
    for i, v in enumerate(values.tolist()):  # distinct values, not buildings
        if v > 0:  # Φ near 1: log1p of the upper tail keeps its digits
            out[i] = math.log1p(-0.5 * math.erfc(v / math.sqrt(2.0)))
        elif v >= -37.0 or v == -math.inf:
            tail = 0.5 * math.erfc(-v / math.sqrt(2.0))
            out[i] = math.log(tail) if tail > 0 else -math.inf
        else:
            r = 1.0 / (v * v)
            series = 1.0 - r + 3.0 * r * r - 15.0 * r**3
            out[i] = -0.5 * v * v - math.log(-v) - 0.5 * math.log(2 * math.pi) + math.log(series)
    return out[where].reshape(x.shape)


def _log_sf(kind: str, age: np.ndarray, p: dict) -> np.ndarray:
    """log survival of a lifetime model at ``age`` (years; parameters broadcast), in the
    parameterisations of scipy.stats and flodym (norm, foldnorm with c = mean/std,
    lognorm from the lifetime's own mean and std, weibull_min), from :func:`_log_ndtr`
    (log Φ) instead of scipy: importing scipy.stats costs about 1 s, scipy.special a
    quarter of that, and ``mfa query`` must answer in under 2 s. Tested against
    scipy.stats."""
    age = np.broadcast_to(
        np.asarray(age, dtype=float),
        np.broadcast_shapes(np.shape(age), *(np.shape(v) for v in p.values())),
    )
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if kind == "fixed":
            return np.where(age < p["mean"], 0.0, -np.inf)
        if kind == "normal":
            return _log_ndtr((p["mean"] - age) / p["std"])
        if kind == "folded_normal":
            c, z = p["mean"] / p["std"], np.maximum(age, 0.0) / p["std"]
            return np.where(age > 0, np.logaddexp(_log_ndtr(c - z), _log_ndtr(-c - z)), 0.0)
        if kind == "lognormal":
            m2, s2 = np.square(p["mean"]), np.square(p["std"])
            mu, sigma = np.log(m2 / np.sqrt(m2 + s2)), np.sqrt(np.log(1 + s2 / m2))
            z = (mu - np.log(np.where(age > 0, age, 1.0))) / sigma
            return np.where(age > 0, _log_ndtr(z), 0.0)
        if kind == "weibull":
            return np.where(age > 0, -((np.maximum(age, 0.0) / p["scale"]) ** p["shape"]), 0.0)
    raise ValueError(kind)  # pragma: no cover - lifetime() validates the kind


def lifetime(kind: LifetimeKind, **params: float | np.ndarray) -> Lifetime:
    """A lifetime model.

    ``"fixed"`` (``mean``: the age at which a cohort leaves), ``"normal"`` (``mean``,
    ``std``), ``"folded_normal"`` (``mean``, ``std`` of the normal before folding),
    ``"lognormal"`` (``mean``, ``std`` of the lifetime itself, not of its logarithm),
    ``"weibull"`` (``shape``, ``scale``). Parameters may be arrays varying by cohort (last
    axis) and series (leading axes).
    """
    if kind not in LIFETIME_KINDS:
        raise ValueError(f"unknown lifetime kind {kind!r}; use one of {list(LIFETIME_KINDS)}")
    need = LIFETIME_KINDS[kind]
    if set(params) != set(need):
        raise ValueError(f"lifetime {kind!r} takes {need}, got {tuple(params)}")
    arrays = {k: np.asarray(v, dtype=float) for k, v in params.items()}
    for k, v in arrays.items():
        if np.isnan(v).any():
            raise ValueError(f"lifetime parameter {k!r} has NaN")
        if (v < 0).any() or (k in ("std", "shape", "scale") and (v <= 0).any()):
            raise ValueError(f"lifetime parameter {k!r} must be > 0 (mean ≥ 0)")
    if kind == "lognormal" and (arrays["mean"] <= 0).any():
        raise ValueError("a lognormal lifetime needs mean > 0")
    return Lifetime(kind, {k: (v if v.ndim else float(v)) for k, v in arrays.items()})


@dataclass(frozen=True)
class DSMResult:
    """Result of a dynamic stock model; time is the last axis (cohort after time)."""

    inflow: np.ndarray
    stock: np.ndarray
    outflow: np.ndarray
    stock_by_cohort: np.ndarray
    outflow_by_cohort: np.ndarray

    def check(self, rtol: float = 1e-9) -> None:
        """Raise :class:`StockBalanceError` unless the stock balance holds everywhere."""
        check_stock_balance(self.stock, self.inflow, self.outflow, rtol=rtol)


def sum_last(x: np.ndarray) -> np.ndarray:
    """Sum over the last axis, one element after the other.

    ``x.sum(axis=-1)`` lets numpy pick pairwise or plain summation from the array's
    shape, so a series summed among many can differ in the last bit from the same series
    summed alone; this order is the same for every shape (incremental runs recompute some
    districts and reuse the others' rows, which must match to the bit).
    """
    x = np.asarray(x, dtype=float)
    out = np.zeros(x.shape[:-1])
    for i in range(x.shape[-1]):
        out += x[..., i]
    return out


def _outflow_by_cohort(stock_by_cohort: np.ndarray, inflow: np.ndarray) -> np.ndarray:
    o_c = np.zeros_like(stock_by_cohort)
    o_c[..., 1:, :] = stock_by_cohort[..., :-1, :] - stock_by_cohort[..., 1:, :]
    n = stock_by_cohort.shape[-1]
    diag = np.arange(n)
    o_c[..., diag, diag] = inflow - stock_by_cohort[..., diag, diag]
    return o_c


def inflow_driven(inflow: np.ndarray, lifetime: Lifetime) -> DSMResult:
    """Stock and outflow from the inflow (ODYM ``compute_s_c_inflow_driven``)."""
    inflow = np.asarray(inflow, dtype=float)
    sf = lifetime.survival(inflow.shape[-1])
    s_c = inflow[..., None, :] * sf
    o_c = _outflow_by_cohort(s_c, inflow)
    return DSMResult(inflow, sum_last(s_c), sum_last(o_c), s_c, o_c)


def inflow_from_age_structure(stock_by_cohort_today: np.ndarray, lifetime: Lifetime) -> np.ndarray:
    """The inflows that leave today's age structure: ``i[c] = S[c] / sf[T−1, c]``.

    ``stock_by_cohort_today[..., c]`` is the stock at the end of the last year (``T − 1``)
    of cohort ``c`` (ODYM ``compute_i_from_s``). A cohort that should have gone entirely
    (survival 0) but is still present cannot be back-cast: ValueError.
    """
    s = np.asarray(stock_by_cohort_today, dtype=float)
    sf_last = lifetime.survival(s.shape[-1])[..., -1, :]
    sf_last = np.broadcast_to(sf_last, s.shape)
    impossible = (sf_last <= 0) & (s > 0)
    if impossible.any():
        c = int(np.argwhere(impossible)[0][-1])
        raise ValueError(
            f"cohort {c} is still in stock but its lifetime gives it no survival to the last "
            "year; lengthen the lifetime or check the construction years"
        )
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(s > 0, s / sf_last, 0.0)


def stock_driven(
    stock: np.ndarray,
    lifetime: Lifetime,
    initial_stock_by_cohort: np.ndarray | None = None,
    negative_inflow: Literal["allow", "prevent"] = "allow",
) -> DSMResult:
    """Inflow and outflow that keep a given stock (ODYM ``compute_stock_driven_model``).

    Parameters
    ----------
    stock
        Stock at the end of each year (..., T).
    lifetime
        Lifetime model.
    initial_stock_by_cohort
        Optional age structure (..., T0) at the end of year ``T0 − 1`` (cohorts 0 …
        T0 − 1 of the same time axis, e.g. from a register): the inflows of those years
        are back-cast from it (:func:`inflow_from_age_structure`) and the model is
        stock-driven from year ``T0`` on; ``stock[..., :T0]`` is then replaced by the
        back-cast stock.
    negative_inflow
        ``"prevent"``: where the stock shrinks faster than the cohorts leave, the inflow
        is 0 and the existing cohorts are reduced in proportion (extra outflow), instead
        of a negative inflow.
    """
    target = np.asarray(stock, dtype=float)
    n = target.shape[-1]
    sf = np.broadcast_to(lifetime.survival(n), (*target.shape[:-1], n, n))
    shape = np.broadcast_shapes(target.shape[:-1], sf.shape[:-2])
    target = np.broadcast_to(target, (*shape, n)).copy()
    sf = np.broadcast_to(sf, (*shape, n, n))
    s_c = np.zeros((*shape, n, n))
    inflow = np.zeros((*shape, n))
    start = 0
    if initial_stock_by_cohort is not None:
        init = np.asarray(initial_stock_by_cohort, dtype=float)
        start = init.shape[-1]
        init = np.broadcast_to(init, (*shape, start))
        if start > n:
            raise ValueError("the initial age structure is longer than the time axis")
        hist = inflow_from_age_structure(init, Lifetime(lifetime.kind, _cohorts(lifetime, start)))
        inflow[..., :start] = hist
        s_c[..., :, :start] = hist[..., None, :] * sf[..., :, :start]
        target[..., :start] = sum_last(s_c[..., :start, :])
    for m in range(start, n):
        existing = sum_last(s_c[..., m, :])
        gap = target[..., m] - existing
        sf_mm = sf[..., m, m]
        with np.errstate(divide="ignore", invalid="ignore"):
            i_m = np.where(sf_mm > 0, gap / sf_mm, 0.0)
        if negative_inflow == "prevent":
            shrink = i_m < 0
            if shrink.any():
                with np.errstate(divide="ignore", invalid="ignore"):
                    factor = np.where(existing > 0, target[..., m] / existing, 0.0)
                factor = np.where(shrink, np.clip(factor, 0.0, 1.0), 1.0)
                s_c[..., m:, :m] *= factor[..., None, None]
                i_m = np.where(shrink, 0.0, i_m)
        inflow[..., m] = i_m
        s_c[..., m:, m] = i_m[..., None] * sf[..., m:, m]
    o_c = _outflow_by_cohort(s_c, inflow)
    return DSMResult(inflow, sum_last(s_c), sum_last(o_c), s_c, o_c)


def _cohorts(lt: Lifetime, n: int) -> dict[str, np.ndarray | float]:
    """Lifetime parameters restricted to the first ``n`` cohorts."""
    return {
        k: (v[..., :n] if np.ndim(v) and np.shape(v)[-1] > 1 else v) for k, v in lt.params.items()
    }


def check_stock_balance(
    stock: np.ndarray,
    inflow: np.ndarray,
    outflow: np.ndarray,
    rtol: float = 1e-9,
    initial_stock: np.ndarray | float = 0.0,
) -> float:
    """Check stock(t) − stock(t−1) = inflow(t) − outflow(t) for every series and year.

    The stock before the first year is ``initial_stock`` (0 by default). The error is
    relative to the largest of the stock, inflow and outflow of the series. NaN anywhere
    fails. Returns the largest relative error.
    """
    s, i, o = (np.asarray(a, dtype=float) for a in (stock, inflow, outflow))
    first = np.broadcast_to(np.asarray(initial_stock, dtype=float), s[..., :1].shape[:-1])
    prev = np.concatenate([first[..., None], s[..., :-1]], axis=-1)
    err = np.abs((s - prev) - (i - o))
    scale = np.maximum.reduce(
        [np.abs(s).max(axis=-1), np.abs(i).max(axis=-1), np.abs(o).max(axis=-1)]
    )
    rel = err / np.maximum(scale, np.finfo(float).tiny)[..., None]
    worst = float(np.max(rel)) if rel.size else 0.0
    if not np.all(rel <= rtol):  # NaN compares False: a NaN fails here
        bad = "NaN" if np.isnan(rel).any() else f"{worst:.3e}"
        raise StockBalanceError(f"stock balance violated: max relative error {bad} > {rtol}")
    return worst

"""The dynamic stock model: known results, flodym agreement, invariants."""

from __future__ import annotations

import flodym
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from mfa.dynamics import (
    StockBalanceError,
    check_stock_balance,
    inflow_driven,
    inflow_from_age_structure,
    lifetime,
    stock_driven,
)

INFLOW = np.arange(1, 11, dtype=float)


def test_fixed_lifetime_known_result() -> None:
    r = inflow_driven(INFLOW, lifetime("fixed", mean=5))
    np.testing.assert_allclose(r.stock, [1, 3, 6, 10, 15, 20, 25, 30, 35, 40], atol=1e-8)
    np.testing.assert_allclose(r.outflow, [0, 0, 0, 0, 0, 1, 2, 3, 4, 5], atol=1e-8)
    r.check()


def test_normal_lifetime_known_result() -> None:
    r = inflow_driven(INFLOW, lifetime("normal", mean=5, std=1.5))
    expected = [
        0.99957094,
        2.9953115,
        5.96830193,
        9.85008113,
        14.4793678,
        19.60865447,
        24.99043368,
        30.46342411,
        35.95916467,
        41.45873561,
    ]
    np.testing.assert_allclose(r.stock, expected, atol=1e-8)
    r.check()


def _flodym_model(kind: str, n: int, **prm):
    dims = flodym.DimensionSet(
        dim_list=[flodym.Dimension(name="time", letter="t", items=list(range(n)))]
    )
    cls = {
        "fixed": flodym.FixedLifetime,
        "normal": flodym.NormalLifetime,
        "folded_normal": flodym.FoldedNormalLifetime,
        "lognormal": flodym.LogNormalLifetime,
        "weibull": flodym.WeibullLifetime,
    }[kind]
    names = {"shape": "weibull_shape", "scale": "weibull_scale"}
    return dims, cls(dims=dims, inflow_at="end", **{names.get(k, k): v for k, v in prm.items()})


CASES = [
    ("fixed", {"mean": 7.0}),
    ("fixed", {"mean": 0.0}),
    ("normal", {"mean": 12.0, "std": 4.0}),
    ("folded_normal", {"mean": 6.0, "std": 5.0}),
    ("lognormal", {"mean": 20.0, "std": 8.0}),
    ("weibull", {"shape": 2.5, "scale": 15.0}),
]


@pytest.mark.parametrize(("kind", "prm"), CASES)
def test_agrees_with_flodym(kind: str, prm: dict[str, float]) -> None:
    n = 40
    rng = np.random.default_rng(5)
    inflow = rng.uniform(0, 100, n)
    dims, model = _flodym_model(kind, n, **prm)
    ours = inflow_driven(inflow, lifetime(kind, **prm))
    np.testing.assert_allclose(lifetime(kind, **prm).survival(n), model.sf, atol=1e-12)
    dsm = flodym.InflowDrivenDSM(
        dims=dims, lifetime_model=model, inflow=flodym.StockArray(dims=dims, values=inflow)
    )
    dsm.compute()
    np.testing.assert_allclose(ours.stock, dsm.stock.values, rtol=1e-10, atol=1e-9)
    np.testing.assert_allclose(ours.outflow, dsm.outflow.values, rtol=1e-10, atol=1e-9)
    # stock-driven from that stock recovers the inflow, as in flodym
    back = stock_driven(ours.stock, lifetime(kind, **prm))
    if kind == "fixed" and prm["mean"] == 0:
        return  # a zero lifetime keeps no stock to drive anything
    _, model2 = _flodym_model(kind, n, **prm)
    sd = flodym.StockDrivenDSM(
        dims=dims, lifetime_model=model2, stock=flodym.StockArray(dims=dims, values=ours.stock)
    )
    sd.compute()
    np.testing.assert_allclose(back.inflow, sd.inflow.values, rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(back.inflow, inflow, rtol=1e-8, atol=1e-8)
    back.check()


def test_vectorised_series_and_cohort_parameters() -> None:
    """Leading axes are independent series; parameters may vary by series and cohort."""
    n = 30
    inflow = np.stack([np.linspace(1, 5, n), np.linspace(5, 1, n), np.full(n, 2.0)])
    mean = np.stack([np.full(n, 10.0), np.linspace(8, 20, n), np.full(n, 15.0)])
    r = inflow_driven(inflow, lifetime("normal", mean=mean, std=mean * 0.3))
    for k in range(3):
        one = inflow_driven(inflow[k], lifetime("normal", mean=mean[k], std=mean[k] * 0.3))
        np.testing.assert_allclose(r.stock[k], one.stock, rtol=1e-12)
    r.check()
    grid = np.ones((4, 5, 3, n))  # district × archetype × material × time
    assert inflow_driven(grid, lifetime("weibull", shape=3.0, scale=40.0)).stock.shape == grid.shape


def test_inflow_from_age_structure_round_trip() -> None:
    lt = lifetime("lognormal", mean=60.0, std=20.0)
    rng = np.random.default_rng(1)
    inflow = rng.uniform(10, 20, (3, 80))
    today = inflow_driven(inflow, lt).stock_by_cohort[..., -1, :]
    np.testing.assert_allclose(inflow_from_age_structure(today, lt), inflow, rtol=1e-10)


def test_age_structure_impossible_under_lifetime() -> None:
    with pytest.raises(ValueError, match="cohort 0 is still in stock"):
        inflow_from_age_structure(np.array([5.0, 1.0, 1.0, 1.0]), lifetime("fixed", mean=2))


def test_stock_driven_with_initial_age_structure() -> None:
    lt = lifetime("normal", mean=30.0, std=10.0)
    hist = inflow_driven(np.full(50, 10.0), lt)
    today = hist.stock_by_cohort[-1, :]  # the register: the age structure after 50 years
    future_stock = np.concatenate([hist.stock, np.full(20, hist.stock[-1])])  # constant
    r = stock_driven(future_stock, lt, initial_stock_by_cohort=today)
    np.testing.assert_allclose(r.inflow[:50], 10.0, rtol=1e-9)
    np.testing.assert_allclose(r.stock, future_stock, rtol=1e-9)
    # a constant stock needs inflow = outflow
    np.testing.assert_allclose(r.inflow[50:], r.outflow[50:], rtol=1e-9)
    r.check()


def test_negative_inflow_prevented() -> None:
    lt = lifetime("fixed", mean=30)
    stock = np.concatenate([np.linspace(10, 100, 10), np.linspace(100, 40, 10)])
    allowed = stock_driven(stock, lt)
    assert (allowed.inflow < 0).any()
    prevented = stock_driven(stock, lt, negative_inflow="prevent")
    assert (prevented.inflow >= 0).all()
    np.testing.assert_allclose(prevented.stock, stock, rtol=1e-9)
    assert (prevented.outflow >= -1e-12).all()
    prevented.check()


def test_nan_fails_the_balance_check() -> None:
    r = inflow_driven(INFLOW, lifetime("fixed", mean=5))
    stock = r.stock.copy()
    stock[3] = np.nan
    with pytest.raises(StockBalanceError, match="NaN"):
        check_stock_balance(stock, r.inflow, r.outflow)
    with pytest.raises(StockBalanceError):
        check_stock_balance(r.stock + 1e-3, r.inflow, r.outflow)


@pytest.mark.parametrize(
    ("kind", "prm", "message"),
    [
        ("gamma", {"mean": 1.0}, "unknown lifetime kind"),
        ("normal", {"mean": 1.0}, "takes"),
        ("normal", {"mean": 10.0, "std": 0.0}, "must be > 0"),
        ("lognormal", {"mean": 0.0, "std": 1.0}, "mean > 0"),
    ],
)
def test_bad_lifetimes(kind, prm, message) -> None:
    with pytest.raises(ValueError, match=message):
        lifetime(kind, **prm)


@settings(max_examples=50, deadline=None)
@given(
    inflow=arrays(float, st.integers(1, 40), elements=st.floats(0, 1e6)),
    kind=st.sampled_from(["fixed", "normal", "folded_normal", "lognormal", "weibull"]),
    a=st.floats(0.5, 80),
    b=st.floats(0.2, 30),
)
def test_balance_and_non_negativity_hold(inflow, kind, a, b) -> None:
    prm = {
        "fixed": {"mean": a},
        "normal": {"mean": a, "std": b},
        "folded_normal": {"mean": a, "std": b},
        "lognormal": {"mean": a, "std": b},
        "weibull": {"shape": b / 5 + 0.5, "scale": a},
    }[kind]
    r = inflow_driven(inflow, lifetime(kind, **prm))
    r.check()
    assert (r.stock >= -1e-9).all() and (r.outflow >= -1e-9 * max(1.0, inflow.max())).all()
    assert r.stock_by_cohort.sum(axis=-1) == pytest.approx(r.stock)


@settings(max_examples=150, deadline=None)
@given(
    kind=st.sampled_from(["normal", "folded_normal", "lognormal", "weibull"]),
    a=st.floats(1.0, 200.0),
    b=st.floats(0.3, 80.0),
    ages=arrays(float, 20, elements=st.floats(-50.0, 2000.0)),
)
def test_log_survival_equals_scipy_stats(kind: str, a: float, b: float, ages) -> None:
    """The survival functions (from scipy.special, so that ``mfa query`` need not import
    scipy.stats) against scipy.stats itself, the parameterisations flodym uses."""
    import scipy.stats

    prm = {"shape": b / 10 + 0.2, "scale": a} if kind == "weibull" else {"mean": a, "std": b}
    lt = lifetime(kind, **prm)
    if kind == "normal":
        want = scipy.stats.norm.logsf(ages, loc=a, scale=b)
    elif kind == "folded_normal":
        want = scipy.stats.foldnorm.logsf(ages, a / b, 0, scale=b)
    elif kind == "lognormal":
        m2, s2 = a * a, b * b
        mu, sigma = np.log(m2 / np.sqrt(m2 + s2)), np.sqrt(np.log(1 + s2 / m2))
        want = scipy.stats.lognorm.logsf(ages, s=sigma, loc=0, scale=np.exp(mu))
    else:
        want = scipy.stats.weibull_min.logsf(ages, prm["shape"], loc=0, scale=a)
    got = lt.log_survival_at(ages)
    finite = np.isfinite(want) & (want > -700)  # beyond that scipy's own tails differ
    np.testing.assert_allclose(got[finite], want[finite], rtol=1e-9, atol=1e-12)
    assert (got[~finite] < -600).all()


def test_log_ndtr_equals_scipy_far_into_the_tails() -> None:
    """log Φ from the C library's erfc and the asymptotic series, against scipy's
    log_ndtr, from x = −1e5 to 40, across the switch at −37 and in the vectorised case."""
    from scipy.special import log_ndtr

    from mfa.dynamics import _log_ndtr

    x = np.r_[-np.logspace(5, -3, 3000), 0.0, np.linspace(-38, -36, 401), np.logspace(-3, 1.6, 500)]
    np.testing.assert_allclose(_log_ndtr(x), log_ndtr(x), rtol=1e-12, atol=1e-300)
    many = np.linspace(-60, 10, 5000)  # more distinct values than the scalar loop takes
    np.testing.assert_allclose(_log_ndtr(many), log_ndtr(many), rtol=1e-12)
    assert _log_ndtr(np.array([-np.inf, np.inf])).tolist() == [-np.inf, 0.0]

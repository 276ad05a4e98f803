"""Monte Carlo uncertainty of stocks: correlated within an archetype, conserved per draw."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mfa.io.tables import load_intensity_table
from mfa.run import run_pipeline
from mfa.stocks.intensity import PERCENTILES, intensity_percentiles
from mfa.stocks.uncertainty import group_percentiles, intensity_draws, unit_quantiles
from tests.conftest import CONFIG

Q = (5.0, 50.0, 95.0)


def floor_of(gfa, arch, group, n_groups, n_arch) -> np.ndarray:
    """Groups × archetypes floor area (m²) of buildings."""
    floor = np.zeros((n_groups, n_arch))
    np.add.at(floor, (group, arch), gfa)
    return floor


def oracle(floor: np.ndarray, draws: np.ndarray, materials: list[str]) -> pd.DataFrame:
    """Percentile columns straight from numpy: tonnes per draw by einsum, then
    np.percentile over the draws (materials and their total)."""
    tonnes = np.einsum("ga,dam->dgm", floor, draws) / 1000.0
    both = np.concatenate([tonnes, tonnes.sum(axis=2, keepdims=True)], axis=2)
    qs = np.percentile(both, Q, axis=0)
    names = [*materials, "mass"]
    return pd.DataFrame(
        {
            f"{name}_t_p{round(q):02d}": qs[i, :, j]
            for j, name in enumerate(names)
            for i, q in enumerate(Q)
        }
    )


@pytest.fixture(scope="module")
def rasmi(materials):
    table = load_intensity_table(CONFIG / "intensities" / "rasmi_2024.csv", materials)
    return intensity_percentiles(table, "OECD_EU15", materials)


def test_draws_reproduce_the_tabulated_percentiles(rasmi) -> None:
    _, pct = rasmi
    draws = intensity_draws(pct, 20_000, seed=1)
    assert draws.shape == (20_000, 12, 8)
    for level in (5, 25, 50, 75, 95):
        i = PERCENTILES.index(f"p{level:02d}")
        tab = pct[:, :, i]
        below = (draws <= tab[None]).mean(axis=0)
        # where neighbouring percentiles are equal the distribution has a point mass
        # (e.g. p00 = p05 = 0 kg/m²): the CDF jumps there, so compare the others only
        strict = (pct[:, :, i - 1] < tab) & (tab < pct[:, :, i + 1])
        # the empirical CDF at the tabulated percentile is the level, within ~6 standard
        # errors of 20,000 draws
        assert (np.abs(below - level / 100) <= 0.01)[strict].all(), level
    assert (draws >= pct[None, :, :, 0] - 1e-9).all() and (
        draws <= pct[None, :, :, -1] + 1e-9
    ).all()


def test_same_seed_same_draws_other_seed_within_mc_error(rasmi) -> None:
    _, pct = rasmi
    a, b = intensity_draws(pct, 4000, seed=7), intensity_draws(pct, 4000, seed=7)
    np.testing.assert_array_equal(a, b)
    c = intensity_draws(pct, 4000, seed=8)
    assert not np.array_equal(a, c)
    # the other seed's p05 and p95 sit at the same probability level, within MC error
    strict = (np.diff(pct, axis=2) > 0).all(axis=2)  # no point masses
    for q in Q:
        qa = np.percentile(a, q, axis=0)
        level_in_c = (c <= qa[None]).mean(axis=0)
        # standard error of the difference of two samples of 4,000: ≤ 0.011; allow 4.5
        assert (np.abs(level_in_c - q / 100) <= 0.05)[strict].all(), q


def test_identical_buildings_do_not_average_out(rasmi, materials) -> None:
    """A district of 50 identical houses has the relative band of one house, because
    they share one uncertain intensity; independent draws would shrink it ~7-fold."""
    archetypes, pct = rasmi
    draws = intensity_draws(pct, 4000, seed=3)
    a, n_a = archetypes.index("RS-M"), len(archetypes)
    one = floor_of(np.array([120.0]), np.array([a]), np.array([0]), 1, n_a)
    many = floor_of(np.full(50, 120.0), np.full(50, a), np.zeros(50, int), 1, n_a)
    p1 = group_percentiles(one, draws, materials, Q)[0].iloc[0]
    p50 = group_percentiles(many, draws, materials, Q)[0].iloc[0]
    for m in ["mass", *materials]:
        lo1, mid1, hi1 = (p1[f"{m}_t_p{x:02d}"] for x in (5, 50, 95))
        lo, mid, hi = (p50[f"{m}_t_p{x:02d}"] for x in (5, 50, 95))
        if mid1 > 0:
            assert (hi - lo) / mid == pytest.approx((hi1 - lo1) / mid1, rel=1e-9)
    # building percentiles from unit quantiles equal the single-building draws
    unit = unit_quantiles(draws, archetypes, materials, Q).loc["RS-M"]
    assert unit["brick_t_p95"] * 120 == pytest.approx(p1["brick_t_p95"], rel=1e-9)


def test_different_archetypes_partly_average_out(rasmi, materials) -> None:
    archetypes, pct = rasmi
    draws = intensity_draws(pct, 4000, seed=3)
    idx, n_a = np.arange(12), len(archetypes)
    mixed = floor_of(np.full(12, 100.0), idx, np.zeros(12, int), 1, n_a)
    alone = floor_of(np.full(12, 100.0), idx, idx, 12, n_a)
    band = lambda f: (lambda p: (p["mass_t_p95"] - p["mass_t_p05"]) / p["mass_t_p50"])(  # noqa: E731
        group_percentiles(f, draws, materials, Q)[0]
    )
    assert band(mixed).iloc[0] < band(alone).min()


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 80),
    groups=st.integers(1, 7),
    seed=st.integers(0, 2**31),
)
def test_draws_are_conserved_across_groups(rasmi, materials, n, groups, seed) -> None:
    archetypes, pct = rasmi
    rng = np.random.default_rng(seed)
    draws = intensity_draws(pct, 200, seed=seed)
    gfa = rng.uniform(5, 5000, n)
    arch = rng.integers(0, 12, n)
    grp = rng.integers(0, groups, n)
    floor = floor_of(gfa, arch, grp, groups, len(archetypes))
    got, error = group_percentiles(floor, draws, materials, Q, chunk=3)
    assert error < 1e-9  # the groups add up to the total draw by draw (checked inside)
    # each group's percentiles are those of Σ over its buildings of floor area × draw
    for g in range(groups):
        mine = grp == g
        per_building = (gfa[None, mine, None] * draws[:, arch[mine], :]).sum(axis=1) / 1000
        both = np.concatenate([per_building, per_building.sum(axis=1, keepdims=True)], axis=1)
        expected = np.percentile(both, Q, axis=0).T.ravel()  # material-major, as the columns
        np.testing.assert_allclose(got.iloc[g].to_numpy(), expected, rtol=1e-9, atol=1e-9)


def test_dk_sample_percentiles(dk_sample_run: Path) -> None:
    run = dk_sample_run
    b = gpd.read_parquet(run / "buildings.parquet")
    d = gpd.read_parquet(run / "districts.parquet")
    for df in (b, d):
        for m in [
            "mass",
            "concrete",
            "brick",
            "wood",
            "steel",
            "glass",
            "aluminium",
            "copper",
            "plastics",
        ]:
            lo, mid, hi = (df[f"{m}_t_p{x:02d}"] for x in (5, 50, 95))
            assert (lo <= mid + 1e-9).all() and (mid <= hi + 1e-9).all() and (lo >= 0).all()
    # a district band is narrower (relative) than the sum of its buildings' bands
    dd = d[d.building_count > 10].iloc[0]
    mine = b[b.district_id == dd.district_id]
    assert dd.mass_t_p95 - dd.mass_t_p05 < (mine.mass_t_p95 - mine.mass_t_p05).sum()


def test_other_seed_changes_only_within_mc_error(bbr_pipeline, tmp_path: Path) -> None:
    base = bbr_pipeline(name="a.toml")
    other = base.read_text() + "[uncertainty]\nseed = 4711\n"
    (tmp_path / "b.toml").write_text(other)
    a = gpd.read_parquet(run_pipeline(base, tmp_path / "a") / "districts.parquet")
    b = gpd.read_parquet(run_pipeline(tmp_path / "b.toml", tmp_path / "b") / "districts.parquet")
    pd.testing.assert_series_equal(a.mass_t, b.mass_t)  # the central estimate is not drawn
    busy = a.building_count > 20
    rel = ((a.mass_t_p95 - b.mass_t_p95).abs() / a.mass_t_p95)[busy]
    assert 0 < rel.max() < 0.10


def test_row_percentiles_are_numpys() -> None:
    from mfa.stocks.uncertainty import row_percentiles

    rng = np.random.default_rng(7)
    for shape in [(3, 1000), (2, 4, 999), (5, 10), (1, 1)]:
        a = rng.lognormal(size=shape)
        expected = np.percentile(a, (5, 50, 95), axis=-1)
        np.testing.assert_allclose(row_percentiles(a, (5, 50, 95)), expected, rtol=1e-14)


def test_group_percentiles_are_those_of_the_summed_draws() -> None:
    from mfa.stocks.uncertainty import group_percentiles

    rng = np.random.default_rng(3)
    floor = rng.uniform(0, 400, (57, 6)) * (rng.uniform(size=(57, 6)) < 0.5)
    draws = rng.uniform(5, 900, (1000, 6, 4))
    mats = ["a", "b", "c", "d"]
    got, error = group_percentiles(floor, draws, mats, Q, chunk=10)
    expected = oracle(floor, draws, mats)
    assert list(got.columns) == list(expected.columns) and error < 1e-12
    np.testing.assert_allclose(got.to_numpy(), expected.to_numpy(), rtol=1e-12)


def test_group_quantiles_in_parts_on_an_executor_equal_one_pass() -> None:
    """Handed to the run's executor in parts (here 2 threads, 3 parts), the percentiles
    are those of one pass, bit for bit: each group's row is its own."""
    from mfa.executor import executor, ordered_map
    from mfa.stocks.uncertainty import PART_GROUPS, group_quantiles

    rng = np.random.default_rng(11)
    floor = rng.lognormal(4, 1, size=(2 * PART_GROUPS + 17, 5))
    floor[rng.random(floor.shape) < 0.4] = 0.0
    draws = rng.lognormal(5, 0.3, size=(200, 5, 3))
    one, _ = group_quantiles(floor, draws, (5, 50, 95))
    with executor("threads", 2) as submit:
        calls = []

        def map_parts(fn, args):
            calls.append(1)
            return ordered_map(submit, fn, args, window=4)

        parts, error = group_quantiles(floor, draws, (5, 50, 95), map_parts=map_parts)
    assert calls and np.array_equal(parts, one)
    assert error < 1e-9

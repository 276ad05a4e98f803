"""Reuse matching, the allocation: a textbook optimum, OR-Tools = networkx (independent
solvers), mass balance, the rules (hazard, window, grade, haul limit) and monotonicity."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mfa.match.allocate import allocate
from mfa.match.costs import pair_prices, weighted_milli
from mfa.match.network import build_network, compatible_pairs, solve
from mfa.match.params import MatchParams

PARAMS = MatchParams(
    kgco2e_per_tkm=0.1,
    detour_factor=1.2,
    max_km=25.0,
    sensitivity_km=(10.0, 25.0, 50.0),
    max_snap_m=500.0,
    line_snap_m=1.0,
    run_grade=2,
    level="t",
    avoided_kgco2e_per_t={"concrete": 100.0, "brick": 200.0},
)


def _supply(rows):
    df = pd.DataFrame(
        rows, columns=["supply_id", "x", "y", "material", "year_from", "year_to", "t", "grade"]
    )
    df["hazardous"] = df.get("hazardous", False)
    for q in ("t_p05", "t_p50", "t_p95"):
        df[q] = df["t"]
    return df


def _demand(rows):
    return pd.DataFrame(
        rows,
        columns=[
            "demand_id",
            "x",
            "y",
            "material",
            "t",
            "year_from",
            "year_to",
            "min_grade",
            "max_km",
        ],
    )


def _all_pairs(sup, dem, km):
    si, di = np.meshgrid(np.arange(len(sup)), np.arange(len(dem)), indexing="ij")
    return si.ravel(), di.ravel(), np.asarray(km, float).ravel()


def test_textbook_instance_has_the_hand_computed_optimum() -> None:
    # two concrete supplies (10 t at A, 6 t at B), two sites (8 t at C, 5 t at D).
    # cost per t = 0.1 km − 100 kg CO2e: nearer is better but every reuse saves ~100 kg/t.
    # km: A→C 1, A→D 30 (beyond 25 km), B→C 2, B→D 3.
    # all 13 t demanded can be reused (A→C 8, B→D 5, rest to end of life) with 8×1 + 5×3 =
    # 23 t·km: net = 2.3 − 1300 = −1297.7 kg CO2e. Any other feasible plan moves more t·km.
    sup = _supply(
        [("A", 0, 0, "concrete", 2026, 2026, 10.0, 2), ("B", 0, 0, "concrete", 2026, 2026, 6.0, 2)]
    )
    dem = _demand(
        [
            ("C", 0, 0, "concrete", 8.0, 2026, 2030, 0, np.nan),
            ("D", 0, 0, "concrete", 5.0, 2026, 2030, 0, np.nan),
        ]
    )
    si, di, km = _all_pairs(sup, dem, [[1, 30], [2, 3]])
    kind = np.full(len(si), "straight_detour", dtype=object)
    for solver in ("ortools", "networkx"):
        a = allocate(sup, dem, si, di, km, kind, PARAMS, solver=solver)
        assert a.objective_kgco2e == pytest.approx(-1297.7, abs=1e-9)
        got = {(r.supply_id, r.demand_id): r.t for r in a.matches.itertuples()}
        assert got == {("A", "C"): 8.0, ("B", "D"): 5.0}
        assert a.supply_fate.set_index("supply_id")["end_of_life_t"].to_dict() == {
            "A": 2.0,
            "B": 1.0,
        }
        assert a.balance_residual_kg == 0


@st.composite
def instances(draw):
    n_s = draw(st.integers(1, 8))
    n_d = draw(st.integers(1, 5))
    mats = ["concrete", "brick"]
    sup = _supply(
        [
            (
                f"s{i}",
                draw(st.floats(0, 20_000)),
                draw(st.floats(0, 20_000)),
                draw(st.sampled_from(mats)),
                (y := draw(st.integers(2026, 2030))),
                y + draw(st.integers(0, 2)),
                draw(st.floats(0, 50).map(lambda v: round(v, 3))),
                draw(st.integers(0, 3)),
            )
            for i in range(n_s)
        ]
    )
    sup["hazardous"] = [draw(st.booleans()) for _ in range(n_s)]
    dem = _demand(
        [
            (
                f"d{j}",
                draw(st.floats(0, 20_000)),
                draw(st.floats(0, 20_000)),
                draw(st.sampled_from(mats)),
                draw(st.floats(0, 50).map(lambda v: round(v, 3))),
                (y := draw(st.integers(2026, 2030))),
                y + draw(st.integers(0, 3)),
                draw(st.integers(0, 3)),
                draw(st.one_of(st.just(np.nan), st.floats(1, 30))),
            )
            for j in range(n_d)
        ]
    )
    dist = np.hypot(
        sup["x"].to_numpy()[:, None] - dem["x"].to_numpy()[None, :],
        sup["y"].to_numpy()[:, None] - dem["y"].to_numpy()[None, :],
    )
    km = dist / 1000 * PARAMS.detour_factor
    return sup, dem, km


def _greedy(sup, dem, km, max_km):
    """Nearest-neighbour allocation: each site, in order, takes from its nearest allowed
    supplies (the baseline the optimum must never lose to)."""
    left = np.rint(sup["t"].to_numpy() * 1000).astype(np.int64)
    total = 0
    for j, d in dem.iterrows():
        need = round(d["t"] * 1000)
        limit = min(d["max_km"], max_km) if np.isfinite(d["max_km"]) else max_km
        for i in np.argsort(km[:, j], kind="stable"):
            s = sup.iloc[i]
            ok = (
                s["material"] == d["material"]
                and max(s["year_from"], d["year_from"]) <= min(s["year_to"], d["year_to"])
                and s["grade"] >= d["min_grade"]
                and not s["hazardous"]
                and km[i, j] <= limit
            )
            cost = round(
                (km[i, j] * PARAMS.kgco2e_per_tkm - PARAMS.avoided_kgco2e_per_t[s["material"]])
                * 1000
            )
            if ok and need > 0 and left[i] > 0 and cost < 0:
                take = min(need, left[i])
                need -= take
                left[i] -= take
                total += take * cost
    return total / 1e6


@settings(max_examples=60, deadline=None)
@given(instances())
def test_solvers_agree_and_the_rules_hold(inst) -> None:
    sup, dem, km = inst
    si, di, k = _all_pairs(sup, dem, km)
    kind = np.full(len(si), "straight_detour", dtype=object)
    a = allocate(sup, dem, si, di, k, kind, PARAMS, solver="ortools")
    b = allocate(sup, dem, si, di, k, kind, PARAMS, solver="networkx")
    assert a.solver == "ortools" and b.solver == "networkx"
    assert a.objective_kgco2e == pytest.approx(b.objective_kgco2e, rel=1e-6, abs=1e-9)
    assert a.balance_residual_kg == 0 and b.balance_residual_kg == 0
    # every supplied tonne goes somewhere, every demanded tonne comes from reuse or virgin
    f = a.supply_fate
    assert np.allclose(f["reused_t"] + f["end_of_life_t"], f["solved_t"], atol=1e-9)
    c = a.coverage
    assert np.allclose(c["matched_t"] + c["virgin_t"], np.rint(c["t"] * 1000) / 1000, atol=1e-9)
    # the rules: no hazardous supply, nothing beyond the haul limit, the window or the grade
    m = a.matches.merge(sup, on="supply_id", suffixes=("", "_s")).merge(
        dem, on="demand_id", suffixes=("", "_d")
    )
    assert not m["hazardous"].any()
    assert (m["km"] <= np.fmin(m["max_km"], PARAMS.max_km) + 1e-12).all()
    assert (
        np.maximum(m["year_from"], m["year_from_d"]) <= np.minimum(m["year_to"], m["year_to_d"])
    ).all()
    assert (m["grade"] >= m["min_grade"]).all()
    assert (m["material"] == m["material_d"]).all()
    # raising the haul limit never worsens the optimum; greedy never beats it
    wider = allocate(sup, dem, si, di, k, kind, PARAMS, max_km=50.0)
    assert wider.objective_kgco2e <= a.objective_kgco2e + 1e-9
    assert a.objective_kgco2e <= _greedy(sup, dem, km, PARAMS.max_km) + 1e-9


def test_build_network_balances_supply_and_demand() -> None:
    net = build_network(
        np.array([5, 0, 7]),
        np.array([4, 9]),
        np.array([0, 2]),
        np.array([1, 0]),
        np.array([-3, -1]),
    )
    assert net.supply_kg.sum() == 0
    flows, obj, _ = solve(net, "ortools")
    assert obj == 5 * -3 + 4 * -1  # both pairs full: the cheapest plan
    assert flows[: net.n_pairs].tolist() == [5, 4]


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 30), st.integers(0, 30)), min_size=0, max_size=60),
    st.lists(st.tuples(st.integers(0, 30), st.integers(0, 30)), min_size=0, max_size=10),
    st.floats(0.5, 20),
)
def test_pairs_within_equals_a_dense_distance_matrix(sup, dem, radius) -> None:
    from mfa.match.distances import pairs_within

    s = np.array(sup, dtype=float).reshape(-1, 2)
    d = np.array(dem, dtype=float).reshape(-1, 2)
    si, di, dist = pairs_within(s[:, 0], s[:, 1], d[:, 0], d[:, 1], radius)
    dense = np.hypot(s[:, None, 0] - d[None, :, 0], s[:, None, 1] - d[None, :, 1])
    ii, jj = np.nonzero(dense <= radius)  # row-major: sorted by supply, then demand
    np.testing.assert_array_equal(si, ii)
    np.testing.assert_array_equal(di, jj)
    np.testing.assert_allclose(dist, dense[ii, jj])


def test_robust_flags_the_matches_that_hold_at_p05() -> None:
    sup = _supply(
        [
            ("A", 0, 0, "concrete", 2026, 2026, 10.0, 2),
            ("B", 0, 0, "concrete", 2026, 2026, 6.0, 2),
        ]
    )
    sup["t_p05"] = [9.0, 2.0]  # A sends 8 t (≤ 9: holds), B sends 5 t (> 2: does not)
    dem = _demand(
        [
            ("C", 0, 0, "concrete", 8.0, 2026, 2030, 0, np.nan),
            ("D", 0, 0, "concrete", 5.0, 2026, 2030, 0, np.nan),
        ]
    )
    si, di, km = _all_pairs(sup, dem, [[1, 30], [2, 3]])
    a = allocate(sup, dem, si, di, km, np.full(len(si), "road", dtype=object), PARAMS)
    assert dict(zip(a.matches["supply_id"], a.matches["robust"], strict=True)) == {
        "A": True,
        "B": False,
    }
    again = allocate(sup, dem, si, di, km, np.full(len(si), "road", dtype=object), PARAMS)
    pd.testing.assert_frame_equal(a.matches, again.matches)  # deterministic


def _hub_pairs(sup, dem, hubs):
    """All supply → hub and hub → demand pairs with straight km × detour."""

    def km(ax, ay, bx, by):
        return np.hypot(ax[:, None] - bx[None, :], ay[:, None] - by[None, :]) / 1000 * 1.2

    a = km(sup["x"].to_numpy(), sup["y"].to_numpy(), hubs["x"].to_numpy(), hubs["y"].to_numpy())
    b = km(hubs["x"].to_numpy(), hubs["y"].to_numpy(), dem["x"].to_numpy(), dem["y"].to_numpy())
    s, h = (
        v.ravel() for v in np.meshgrid(np.arange(len(sup)), np.arange(len(hubs)), indexing="ij")
    )
    h2, d = (
        v.ravel() for v in np.meshgrid(np.arange(len(hubs)), np.arange(len(dem)), indexing="ij")
    )
    return (s, h, a.ravel()), (h2, d, b.ravel())


def _hubs(rows):
    from mfa.match.hubs import check_hub_table

    df = pd.DataFrame(
        rows,
        columns=[
            "hub_id",
            "x",
            "y",
            "capacity_t",
            "handling_kgco2e_per_t",
            "holding_kgco2e_per_t_year",
            "materials",
        ],
    )
    return check_hub_table(df, "hubs.csv", ["concrete", "brick"])


def test_a_hub_carries_supply_to_a_later_year() -> None:
    # 10 t of brick come free in 2026; the site needs them in 2029: only a hub can help.
    sup = _supply([("A", 0, 0, "brick", 2026, 2026, 10.0, 2)])
    dem = _demand([("C", 1000, 0, "brick", 10.0, 2029, 2029, 0, np.nan)])
    kind = np.full(1, "straight_detour", dtype=object)
    si, di, km = _all_pairs(sup, dem, [[1.2]])
    direct = allocate(sup, dem, si, di, km, kind, PARAMS)
    assert direct.matches.empty and direct.objective_kgco2e == 0
    hubs = _hubs([("H", 500, 0, 6.0, 2.0, 1.0, "brick")])
    sh, hd = _hub_pairs(sup, dem, hubs)
    for solver in ("ortools", "networkx"):
        a = allocate(
            sup,
            dem,
            si,
            di,
            km,
            kind,
            PARAMS,
            solver=solver,
            hubs=(hubs, sh, hd, "straight_detour"),
        )
        # capacity 6 t held over 3 years: 6 t reused via H; each tonne 0.6 + 0.6 km
        # (0.06 + 0.06 kg), handling 2 kg, holding 3 × 1 kg, avoided 200 kg
        assert a.objective_kgco2e == pytest.approx(6 * (0.06 + 2 + 3 + 0.06 - 200), abs=1e-6)
        assert set(a.matches["via_hub"]) == {"H"} and a.balance_residual_kg == 0
        cov = a.coverage.iloc[0]
        assert cov["matched_t"] == pytest.approx(6.0) and cov["virgin_t"] == pytest.approx(4.0)
        assert a.supply_fate["via_hub_t"].iloc[0] == pytest.approx(6.0)


@settings(max_examples=40, deadline=None)
@given(instances(), st.floats(0, 20_000), st.floats(0, 20_000), st.floats(0.5, 80))
def test_a_hub_never_worsens_the_optimum(inst, hx, hy, cap) -> None:
    sup, dem, km = inst
    si, di, k = _all_pairs(sup, dem, km)
    kind = np.full(len(si), "straight_detour", dtype=object)
    base = allocate(sup, dem, si, di, k, kind, PARAMS)
    hubs = _hubs([("H", hx, hy, round(cap, 3), 1.0, 0.5, "")])
    sh, hd = _hub_pairs(sup, dem, hubs)
    a = allocate(sup, dem, si, di, k, kind, PARAMS, hubs=(hubs, sh, hd, "straight_detour"))
    b = allocate(
        sup, dem, si, di, k, kind, PARAMS, solver="networkx", hubs=(hubs, sh, hd, "straight_detour")
    )
    assert a.objective_kgco2e <= base.objective_kgco2e + 1e-9
    assert a.objective_kgco2e == pytest.approx(b.objective_kgco2e, rel=1e-6, abs=1e-9)
    assert a.balance_residual_kg == 0
    via = a.matches[a.matches["via_hub"] != ""]
    hazardous = set(sup.loc[sup["hazardous"], "supply_id"])
    assert not (set(via["supply_id"]) & hazardous)
    c = a.coverage
    assert np.allclose(c["matched_t"] + c["virgin_t"], np.rint(c["t"] * 1000) / 1000, atol=1e-9)


@settings(max_examples=30, deadline=None)
@given(instances(), st.floats(0, 20_000), st.floats(0, 20_000), st.floats(0.5, 80))
def test_ortools_equals_the_highs_linear_program(inst, hx, hy, cap) -> None:
    """A third, independent solver: the same network as an LP (scipy HiGHS), here without
    the joint hub capacity (each holding arc its own capacity: a pure network)."""
    import scipy.sparse
    from scipy.optimize import linprog

    from mfa.match.hubs import hub_arcs

    sup, dem, km = inst
    si, di, k = _all_pairs(sup, dem, km)
    hubs = _hubs([("H", hx, hy, round(cap, 3), 1.0, 0.5, "")])
    sh, hd = _hub_pairs(sup, dem, hubs)
    ok = compatible_pairs(sup, dem, si, di, k, PARAMS.max_km)
    si, di, k = si[ok], di[ok], k[ok]
    s_kg = np.rint(sup["t"].to_numpy() * 1000).astype(np.int64)
    d_kg = np.rint(dem["t"].to_numpy() * 1000).astype(np.int64)
    first = len(s_kg) + len(d_kg) + 2
    h = hub_arcs(sup, dem, hubs, s_kg, d_kg, sh, hd, PARAMS, PARAMS.max_km, first)
    net = build_network(
        s_kg,
        d_kg,
        si,
        di,
        weighted_milli(*pair_prices(k, sup["material"].to_numpy()[si], PARAMS), PARAMS),
        h.n_nodes,
        (h.tails, h.heads, h.capacity_kg, weighted_milli(h.co2_per_t, h.dkk_per_t, PARAMS)),
    )
    _, obj, _ = solve(net, "ortools")
    n, m = len(net.supply_kg), len(net.tails)
    a_eq = scipy.sparse.coo_matrix(
        (
            np.r_[np.ones(m), -np.ones(m)],
            (np.r_[net.tails, net.heads], np.r_[np.arange(m), np.arange(m)]),
        ),
        shape=(n, m),
    )
    lp = linprog(
        net.cost_g_per_t.astype(float),
        A_eq=a_eq.tocsr(),
        b_eq=net.supply_kg.astype(float),
        bounds=np.c_[np.zeros(m), net.capacity_kg.astype(float)],
        method="highs",
    )
    assert lp.status == 0
    assert obj == pytest.approx(lp.fun, rel=1e-6, abs=1e-3)


def test_the_benchmark_script_runs_and_both_solvers_agree() -> None:
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).parents[1] / "benchmarks" / "match.py"
    done = subprocess.run(
        [sys.executable, str(script), "--supply", "300", "--demand", "30", "--years", "3"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "same optimum: True" in done.stdout

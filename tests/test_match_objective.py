"""Reuse matching, the objective: cost beside CO2 (weights), and a hub's capacity shared by
all materials (an LP). Oracles: the CO2-only allocation, an LP written here from the tables
(scipy HiGHS, float costs), networkx on the per-material network, and hand-solved cases."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import linprog

from mfa.match.allocate import allocate
from mfa.match.costs import pair_prices, weighted_milli
from mfa.match.hubs import hub_arcs
from mfa.match.network import build_network, compatible_pairs, solve
from tests.test_match_network import (
    PARAMS,
    _all_pairs,
    _demand,
    _hub_pairs,
    _hubs,
    _supply,
    instances,
)

#: the same CO2 numbers, with prices (DKK) that pull the other way on long hauls
PRICED = PARAMS.model_copy(
    update={
        "dkk_per_tkm": 3.0,
        "virgin_dkk_per_t": {"concrete": 200.0, "brick": 2500.0},
        "end_of_life_dkk_per_t": {"concrete": 50.0, "brick": -20.0},
    }
)
KIND = "straight_detour"


def _with(params, co2: float, cost: float):
    return params.model_copy(update={"co2_weight": co2, "cost_weight": cost})


@settings(max_examples=40, deadline=None)
@given(instances())
def test_weights_1_0_reproduce_the_co2_optimum(inst) -> None:
    """Prices in the config change nothing while the cost weight is 0: the same flows and
    the same optimum as the CO2-only allocation (bit for bit: 1 × a + 0 × b == a)."""
    sup, dem, km = inst
    si, di, k = _all_pairs(sup, dem, km)
    kind = np.full(len(si), KIND, dtype=object)
    co2_only = allocate(sup, dem, si, di, k, kind, PARAMS)
    priced = allocate(sup, dem, si, di, k, kind, _with(PRICED, 1.0, 0.0))
    assert priced.objective_kgco2e == co2_only.objective_kgco2e == priced.objective
    cols = ["supply_id", "demand_id", "t", "km", "net_kgco2e"]
    pd.testing.assert_frame_equal(priced.matches[cols], co2_only.matches[cols])
    # the cost columns are there all the same, and add up per match
    m = priced.matches
    np.testing.assert_allclose(
        m["net_dkk"], m["transport_dkk"] + m["handling_dkk"] - m["avoided_dkk"]
    )


def _table_lp(sup, dem, km, params, max_km):
    """The allocation as an LP written from the tables (tonnes, float costs): x[i, j] on
    every allowed pair, end of life per supply, virgin per site. Independent of
    ``build_network`` and of the integer scaling."""
    n_s, n_d = len(sup), len(dem)
    pairs = [
        (i, j)
        for i in range(n_s)
        for j in range(n_d)
        if sup["material"][i] == dem["material"][j]
        and max(sup["year_from"][i], dem["year_from"][j])
        <= min(sup["year_to"][i], dem["year_to"][j])
        and sup["grade"][i] >= dem["min_grade"][j]
        and not sup["hazardous"][i]
        and km[i, j] <= (min(dem["max_km"][j], max_km) if np.isfinite(dem["max_km"][j]) else max_km)
    ]
    w_co2, w_cost = params.weights
    cost = []
    for i, j in pairs:
        mat = sup["material"][i]
        co2 = km[i, j] * params.kgco2e_per_tkm - params.avoided_kgco2e_per_t[mat]
        dkk = km[i, j] * params.dkk_per_tkm - (
            params.virgin_dkk_per_t.get(mat, 0.0) + params.end_of_life_dkk_per_t.get(mat, 0.0)
        )
        cost.append(w_co2 * co2 + w_cost * dkk)
    n_p = len(pairs)
    c = np.r_[cost, np.zeros(n_s + n_d)]
    a = np.zeros((n_s + n_d, n_p + n_s + n_d))
    for p, (i, j) in enumerate(pairs):
        a[i, p] = 1
        a[n_s + j, p] = 1
    a[np.arange(n_s), n_p + np.arange(n_s)] = 1  # end of life
    a[n_s + np.arange(n_d), n_p + n_s + np.arange(n_d)] = 1  # virgin
    b = np.r_[sup["t"].to_numpy(float), dem["t"].to_numpy(float)]
    lp = linprog(c, A_eq=a, b_eq=b, bounds=(0, None), method="highs")
    assert lp.status == 0
    return lp.fun


@settings(max_examples=40, deadline=None)
@given(instances(), st.sampled_from([(1.0, 0.0), (0.0, 1.0), (1.0, 0.5), (0.2, 3.0)]))
def test_a_weighted_optimum_equals_the_highs_lp_of_the_tables(inst, weights) -> None:
    sup, dem, km = inst
    params = _with(PRICED, *weights)
    si, di, k = _all_pairs(sup, dem, km)
    kind = np.full(len(si), KIND, dtype=object)
    a = allocate(sup, dem, si, di, k, kind, params)
    lp = _table_lp(sup, dem, km, params, params.max_km)
    # the solver's costs are rounded to thousandths per tonne: at most 0.0005 per tonne moved
    moved = sup["t"].sum()
    assert a.objective == pytest.approx(lp, abs=0.0005 * moved + 1e-6)
    # the reported parts are the optimum's own: weighted, they give the objective
    w_co2, w_cost = weights
    assert w_co2 * a.objective_kgco2e + w_cost * a.objective_dkk == pytest.approx(
        a.objective, abs=0.0005 * (1 + w_co2 + w_cost) * moved + 1e-6
    )
    assert a.matches["net_dkk"].sum() == pytest.approx(a.objective_dkk, abs=0.0005 * moved + 1e-6)


def test_cost_and_co2_disagree_on_a_long_haul_and_the_weights_decide() -> None:
    # 10 t of concrete 20 km from a site that needs 10 t. Per tonne:
    #   CO2: 20 × 0.1 − 100 = −98 kg CO2e (reuse saves CO2)
    #   DKK: 20 × 20 − (200 + 50) = +150 DKK (the haul costs more than new concrete)
    # reuse iff −98 × w_co2 + 150 × w_cost < 0, i.e. iff w_cost / w_co2 < 98 / 150 = 0.653.
    sup = _supply([("A", 0, 0, "concrete", 2026, 2026, 10.0, 2)])
    dem = _demand([("C", 0, 0, "concrete", 10.0, 2026, 2026, 0, np.nan)])
    si, di, km = _all_pairs(sup, dem, [[20.0]])
    kind = np.full(1, KIND, dtype=object)
    params = PRICED.model_copy(update={"dkk_per_tkm": 20.0})
    expect = {(1.0, 0.0): 10.0, (1.0, 0.6): 10.0, (1.0, 0.7): 0.0, (0.0, 1.0): 0.0}
    for weights, reused in expect.items():
        a = allocate(sup, dem, si, di, km, kind, _with(params, *weights))
        assert a.coverage["matched_t"].iloc[0] == reused, weights
    a = allocate(sup, dem, si, di, km, kind, _with(params, 1.0, 0.6))
    assert a.objective_kgco2e == pytest.approx(-980.0) and a.objective_dkk == pytest.approx(1500.0)
    assert a.objective == pytest.approx(-980.0 + 0.6 * 1500.0)
    r = a.matches.iloc[0]
    assert (r["transport_dkk"], r["avoided_dkk"], r["net_dkk"]) == pytest.approx((4000, 2500, 1500))


def test_zero_weights_are_a_one_line_error(materials: list[str]) -> None:
    from mfa.errors import ConfigError
    from mfa.io.match import load_match_params
    from tests.conftest import CONFIG

    with pytest.raises(ConfigError, match=r"match.toml \(or its override\).*both 0") as exc:
        load_match_params(CONFIG / "match.toml", materials, co2_weight=0.0, cost_weight=0.0)
    assert "\n" not in str(exc.value)


# --- a hub's capacity shared by all materials -------------------------------------------


def _two_materials_through_a_hub(brick_t: float, concrete_t: float, cap: float):
    # brick and concrete come free in 2026 at (0, 0); sites 1 km away need 10 t of each
    # in 2029: only the hub 500 m away (0.6 km × 0.1 kg each way) bridges the years.
    sup = _supply(
        [
            ("B", 0, 0, "brick", 2026, 2026, brick_t, 2),
            ("K", 0, 0, "concrete", 2026, 2026, concrete_t, 2),
        ]
    )
    dem = _demand(
        [
            ("Cb", 1000, 0, "brick", 10.0, 2029, 2029, 0, np.nan),
            ("Cc", 1000, 0, "concrete", 10.0, 2029, 2029, 0, np.nan),
        ]
    )
    si, di, km = _all_pairs(sup, dem, [[1.2, 1.2], [1.2, 1.2]])
    hubs = _hubs([("H", 500, 0, cap, 2.0, 1.0, "")])
    sh, hd = _hub_pairs(sup, dem, hubs)
    kind = np.full(len(si), KIND, dtype=object)
    return allocate(sup, dem, si, di, km, kind, PARAMS, hubs=(hubs, sh, hd, KIND))


def test_a_joint_capacity_goes_to_the_material_that_saves_most() -> None:
    # per tonne through the hub: 0.06 + 2 (handling) + 3 × 1 (holding) + 0.06 = 5.12 kg,
    # minus 200 (brick) or 100 (concrete). 6 t of room over the years, shared:
    # all 6 t to brick (−194.88 each) beats any share for concrete (−94.88 each).
    a = _two_materials_through_a_hub(10.0, 10.0, 6.0)
    assert a.solver == "highs"
    assert a.objective_kgco2e == pytest.approx(6 * -194.88, abs=1e-6)
    into = a.matches[a.matches["demand_id"] == ""].groupby("material")["t"].sum()
    assert into.to_dict() == {"brick": pytest.approx(6.0)}
    # only 4 t of brick: the other 2 t of room take concrete
    b = _two_materials_through_a_hub(4.0, 10.0, 6.0)
    assert b.objective_kgco2e == pytest.approx(4 * -194.88 + 2 * -94.88, abs=1e-6)
    into = b.matches[b.matches["demand_id"] == ""].groupby("material")["t"].sum()
    assert into.to_dict() == {"brick": pytest.approx(4.0), "concrete": pytest.approx(2.0)}
    assert a.balance_residual_kg == 0 and b.balance_residual_kg == 0


def test_a_hub_with_one_material_stays_a_min_cost_flow() -> None:
    a = _two_materials_through_a_hub(10.0, 0.0, 6.0)  # no concrete: one line at the hub
    assert a.solver == "ortools"
    assert a.objective_kgco2e == pytest.approx(6 * -194.88, abs=1e-6)


def _hub_networks(sup, dem, km, hubs):
    """The allocation network with a hub, with and without the joint capacities."""
    si, di, k = _all_pairs(sup, dem, km)
    sh, hd = _hub_pairs(sup, dem, hubs)
    ok = compatible_pairs(sup, dem, si, di, k, PARAMS.max_km)
    si, di, k = si[ok], di[ok], k[ok]
    s_kg = np.rint(sup["t"].to_numpy() * 1000).astype(np.int64)
    d_kg = np.rint(dem["t"].to_numpy() * 1000).astype(np.int64)
    first = len(s_kg) + len(d_kg) + 2
    h = hub_arcs(sup, dem, hubs, s_kg, d_kg, sh, hd, PARAMS, PARAMS.max_km, first)
    args = (
        s_kg,
        d_kg,
        si,
        di,
        weighted_milli(*pair_prices(k, sup["material"].to_numpy()[si], PARAMS), PARAMS),
        h.n_nodes,
        (h.tails, h.heads, h.capacity_kg, weighted_milli(h.co2_per_t, h.dkk_per_t, PARAMS)),
    )
    return build_network(*args), build_network(*args, (h.group, h.group_capacity_kg)), h


@settings(max_examples=40, deadline=None)
@given(instances(), st.floats(0, 20_000), st.floats(0, 20_000), st.floats(0.5, 80))
def test_the_joint_capacity_lp_against_per_material_networks(inst, hx, hy, cap) -> None:
    sup, dem, km = inst
    hubs = _hubs([("H", hx, hy, round(cap, 3), 1.0, 0.5, "")])
    per_material, joint, h = _hub_networks(sup, dem, km, hubs)
    relaxed_flows, relaxed, _ = solve(per_material, "networkx")
    flows, obj, used = solve(joint, "ortools")
    assert used == ("highs" if joint.coupled else "ortools")
    # the joint capacity only takes room away: never better than per material
    assert obj >= relaxed
    # … and the hub never makes it worse than no hub (the empty flow through it is allowed)
    si, di, k = _all_pairs(sup, dem, km)
    kind = np.full(len(si), KIND, dtype=object)
    assert obj / 1e6 <= allocate(sup, dem, si, di, k, kind, PARAMS).objective + 1e-9
    # the holding of every hub and year is within the capacity; every node balances
    hold = flows[len(flows) - joint.n_extra :][h.kind == 1]
    per_year = np.bincount(h.group[h.kind == 1], hold, len(h.group_capacity_kg))
    assert (per_year <= h.group_capacity_kg).all()
    n = len(joint.supply_kg)
    out = np.bincount(joint.tails, flows, n) - np.bincount(joint.heads, flows, n)
    assert (out == joint.supply_kg).all()
    # where the per-material optimum already fits in the joint capacity, both agree
    r_hold = relaxed_flows[len(flows) - joint.n_extra :][h.kind == 1]
    if (
        np.bincount(h.group[h.kind == 1], r_hold, len(h.group_capacity_kg)) <= h.group_capacity_kg
    ).all():
        assert obj == relaxed


@settings(max_examples=25, deadline=None)
@given(instances(), st.floats(0, 20_000), st.floats(0, 20_000))
def test_a_slack_joint_capacity_equals_networkx_per_material(inst, hx, hy) -> None:
    sup, dem, km = inst
    room = float(sup["t"].sum()) + 1.0  # more than all the supply: never binding
    hubs = _hubs([("H", hx, hy, room, 1.0, 0.5, "")])
    per_material, joint, _ = _hub_networks(sup, dem, km, hubs)
    _, relaxed, _ = solve(per_material, "networkx")
    _, obj, _ = solve(joint, "highs")  # the LP path even where nothing is shared
    assert obj == relaxed

"""Reuse matching, attribution: every CO2 and cost term of the objective is in some match
row, so the rows add up to what the solver minimised: transport, hub handling (on the way
in), hub holding (on the way out, for the years the tonnes stayed), avoided production.
Oracles: hand-solved cases, the holding arcs' flows, the solver's own objective value."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mfa.match import match_run
from mfa.match.allocate import allocate
from mfa.match.hubs import HUB_COLUMNS, check_hub_table, held_kg_years
from mfa.match.network import solve
from tests.test_match_network import _all_pairs, _demand, _hub_pairs, _supply, instances
from tests.test_match_objective import PRICED, _hub_networks

KIND = "straight_detour"
#: CO2 only, cost only, and a carbon price of 2,000 DKK per t CO2e
WEIGHTS = [(1.0, 0.0), (0.0, 1.0), (1.0, 0.5)]


def _hubs(rows) -> pd.DataFrame:
    return check_hub_table(
        pd.DataFrame(rows, columns=HUB_COLUMNS), "hubs.csv", ["concrete", "brick"]
    )


def _with(params, weights):
    return params.model_copy(update={"co2_weight": weights[0], "cost_weight": weights[1]})


def _rows_add_up(a, tol: float) -> None:
    """Σ rows = the optimum: per part, per unit and weighted (the solver's value)."""
    m = a.matches
    for unit in ("kgco2e", "dkk"):
        parts = m[f"transport_{unit}"] + m[f"handling_{unit}"] + m[f"holding_{unit}"]
        np.testing.assert_allclose(m[f"net_{unit}"], parts - m[f"avoided_{unit}"], atol=1e-9)
    assert m["net_kgco2e"].sum() == pytest.approx(a.objective_kgco2e, abs=tol)
    assert m["net_dkk"].sum() == pytest.approx(a.objective_dkk, abs=tol)
    w_co2, w_cost = a.weights
    weighted = (w_co2 * m["net_kgco2e"] + w_cost * m["net_dkk"]).sum()
    assert weighted == pytest.approx(a.objective, abs=tol * (w_co2 + w_cost))


def _one_hub_case(weights):
    # 10 t of brick free in 2026, a site 1 km away needs 10 t in 2029: only the hub 500 m
    # away bridges the years, and it holds 6 t. Per tonne: 0.6 km in and out (0.06 kg,
    # 0.18 DKK each at 0.1 kg / 0.3 DKK per t·km), handling 2 kg / 40 DKK, three years'
    # holding 3 × 1 kg / 3 × 25 DKK; avoided 200 kg, 2500 DKK brick + −20 DKK end of life.
    sup = _supply([("A", 0, 0, "brick", 2026, 2026, 10.0, 2)])
    dem = _demand([("C", 1000, 0, "brick", 10.0, 2029, 2029, 0, np.nan)])
    si, di, km = _all_pairs(sup, dem, [[1.2]])
    hubs = _hubs([("H", 500, 0, 6.0, 2.0, 1.0, 40.0, 25.0, "brick")])
    sh, hd = _hub_pairs(sup, dem, hubs)
    params = _with(PRICED.model_copy(update={"dkk_per_tkm": 0.3}), weights)
    kind = np.full(len(si), KIND, dtype=object)
    return allocate(sup, dem, si, di, km, kind, params, hubs=(hubs, sh, hd, KIND))


@pytest.mark.parametrize("weights", WEIGHTS)
def test_a_hub_case_by_hand_its_holding_in_the_outgoing_row(weights) -> None:
    a = _one_hub_case(weights)
    m = a.matches.set_index(a.matches["demand_id"].replace("", "in"))
    # the way in: transport + handling, and the end-of-life fee escaped (−20 DKK: a cost)
    assert m.loc["in", "handling_kgco2e"] == pytest.approx(6 * 2.0)
    assert m.loc["in", "holding_kgco2e"] == 0 and m.loc["in", "holding_dkk"] == 0
    assert m.loc["in", "net_dkk"] == pytest.approx(6 * (0.18 + 40 + 20))
    # the way out: three years at the hub
    assert m.loc["C", "holding_kgco2e"] == pytest.approx(6 * 3 * 1.0)
    assert m.loc["C", "holding_dkk"] == pytest.approx(6 * 3 * 25.0)
    assert m.loc["C", "net_kgco2e"] == pytest.approx(6 * (0.06 + 3 - 200))
    co2 = 6 * (0.06 + 2 + 3 + 0.06 - 200)
    dkk = 6 * (0.18 + 40 + 20 + 75 + 0.18 - 2500)
    assert a.objective_kgco2e == pytest.approx(co2, abs=1e-9)
    assert a.objective_dkk == pytest.approx(dkk, abs=1e-9)
    assert a.objective == pytest.approx(weights[0] * co2 + weights[1] * dkk, abs=1e-9)
    _rows_add_up(a, 1e-9)


def test_first_in_first_out_gives_each_leaving_tonne_its_own_years() -> None:
    # 3 t come in 2026 and 3 t in 2028; 3 t leave in 2029 and 3 t in 2031: the first
    # three stay 3 years, the next three 3 years (18 t·years; any order gives the sum,
    # 3 × 2029 + 3 × 2031 − 3 × 2026 − 3 × 2028 = 18).
    sup = _supply(
        [("A", 0, 0, "brick", 2026, 2026, 3.0, 2), ("B", 0, 0, "brick", 2028, 2028, 3.0, 2)]
    )
    dem = _demand(
        [
            ("C", 1000, 0, "brick", 3.0, 2029, 2029, 0, np.nan),
            ("D", 1000, 0, "brick", 3.0, 2031, 2031, 0, np.nan),
        ]
    )
    si, di, km = _all_pairs(sup, dem, [[1.2, 1.2], [1.2, 1.2]])
    hubs = _hubs([("H", 500, 0, 100.0, 2.0, 1.0, 40.0, 25.0, "")])
    sh, hd = _hub_pairs(sup, dem, hubs)
    kind = np.full(len(si), KIND, dtype=object)
    a = allocate(sup, dem, si, di, km, kind, PRICED, hubs=(hubs, sh, hd, KIND))
    out = a.matches[a.matches["supply_id"] == ""].set_index("demand_id")
    assert out["holding_kgco2e"].to_dict() == {"C": pytest.approx(9.0), "D": pytest.approx(9.0)}
    assert out["holding_dkk"].sum() == pytest.approx(18 * 25.0)
    _rows_add_up(a, 1e-9)


@settings(max_examples=40, deadline=None)
@given(
    instances(),
    st.floats(0, 20_000),
    st.floats(0, 20_000),
    st.floats(0.5, 80),
    st.sampled_from(WEIGHTS),
)
def test_the_rows_add_up_to_the_optimum_on_random_instances(inst, hx, hy, cap, weights) -> None:
    sup, dem, km = inst
    si, di, k = _all_pairs(sup, dem, km)
    hubs = _hubs(
        [
            ("H", hx, hy, round(cap, 3), 1.0, 0.5, 30.0, 12.5, ""),
            ("G", hy, hx, 5.0, 0.25, 2.0, 10.0, 60.0, "brick"),
        ]
    )
    sh, hd = _hub_pairs(sup, dem, hubs)
    kind = np.full(len(si), KIND, dtype=object)
    a = allocate(sup, dem, si, di, k, kind, _with(PRICED, weights), hubs=(hubs, sh, hd, KIND))
    assert a.balance_residual_kg == 0
    # the solver saw each price per t rounded to a thousandth: 0.0005 per t on each arc,
    # and a tonne at a hub is on at most 7 holding arcs (2026-2033)
    _rows_add_up(a, 0.0005 * a.matches["t"].sum() * 8 + 1e-6)


@settings(max_examples=40, deadline=None)
@given(instances(), st.floats(0, 20_000), st.floats(0, 20_000), st.floats(0.5, 80))
def test_held_years_equal_the_holding_arcs_flow(inst, hx, hy, cap) -> None:
    """Σ kg·years of the leaving tonnes = Σ flow on the holding arcs (exactly, in kg), none
    negative, and only on hub → demand arcs."""
    sup, dem, km = inst
    hubs = _hubs([("H", hx, hy, round(cap, 3), 1.0, 0.5, 30.0, 12.5, "")])
    _, joint, h = _hub_networks(sup, dem, km, hubs)
    flows, _, _ = solve(joint, "ortools")
    hf = flows[len(flows) - joint.n_extra :]
    held = held_kg_years(h, hf)
    assert held.dtype == np.int64 and (held >= 0).all()
    assert (held[h.kind != 2] == 0).all()
    assert held.sum() == hf[h.kind == 1].sum()
    # per hub line too
    lines = np.unique(h.line)
    per_line = np.bincount(np.searchsorted(lines, h.line), held, len(lines))
    hold = h.kind == 1
    want = np.bincount(np.searchsorted(lines, h.line[hold]), hf[hold], len(lines))
    assert (per_line == want).all()


HUBS = Path("tests/data/match_hubs_kalundborg.csv")
DEMAND = Path("tests/data/match_demand_kalundborg.csv")


@pytest.mark.parametrize("weights", WEIGHTS)
def test_the_dk_sample_rows_add_up_to_the_optimum(
    dk_sample_run: Path, tmp_path: Path, weights
) -> None:
    # the Kalundborg sites, and one more that builds after the supply: the depot holds
    f = tmp_path / "sites.csv"
    late = "late-site,644500,6151200,brick,300,2030,2030,0,\n"
    f.write_text(DEMAND.read_text() + late)
    hubs = tmp_path / "hubs.csv"
    hubs.write_text(
        "hub_id,x,y,capacity_t,handling_kgco2e_per_t,holding_kgco2e_per_t_year,"
        "handling_dkk_per_t,holding_dkk_per_t_year,materials\n"
        + "depot,645000,6151000,100,2.0,0.5,80,30,brick;concrete\n"
    )
    r = match_run(dk_sample_run, f, years=(2026, 2027), hubs=hubs, weights=weights)
    a = r.allocation
    m = a.matches
    out = m[(m["via_hub"] != "") & (m["supply_id"] == "")]
    assert out["t"].sum() > 0 and out["holding_kgco2e"].sum() > 0
    _rows_add_up(a, 0.0005 * m["t"].sum() * 5 + 1e-6)
    hub = pd.DataFrame(r.manifest["hubs"]).set_index("hub_id")
    assert hub.loc["depot", "holding_kgco2e"] == pytest.approx(out["holding_kgco2e"].sum())
    assert hub.loc["depot", "in_t"] == pytest.approx(hub.loc["depot", "out_t"])
    tot = pd.DataFrame(r.manifest["totals"])
    assert tot["net_kgco2e"].sum() == pytest.approx(m["net_kgco2e"].sum())
    assert "hub handling + holding kg CO2e" in r.summary

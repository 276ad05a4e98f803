"""From supply, demand and candidate pairs to an allocation with its CO2 and cost balance."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from mfa.match.costs import by_material, milli, pair_prices, weighted_milli
from mfa.match.hubs import HubArcs, held_kg_years, hub_arcs
from mfa.match.network import build_network, compatible_pairs, solve
from mfa.match.params import MatchParams

__all__ = ["Allocation", "allocate"]


@dataclass(frozen=True)
class Allocation:
    """The optimum: the matches, the fate of each supply row, the coverage of each site.

    ``objective`` is what was minimised (``co2_weight`` × kg CO2e + ``cost_weight`` × DKK);
    ``objective_kgco2e`` and ``objective_dkk`` are the optimum's net CO2 and net cost
    (each from the per-tonne values in whole thousandths the solver saw)."""

    matches: pd.DataFrame
    supply_fate: pd.DataFrame
    coverage: pd.DataFrame
    objective_kgco2e: float
    solver: str
    balance_residual_kg: int
    n_arcs: int
    objective: float = 0.0
    objective_dkk: float = 0.0
    weights: tuple[float, float] = (1.0, 0.0)


def allocate(
    supply: pd.DataFrame,
    demand: pd.DataFrame,
    si: np.ndarray,
    di: np.ndarray,
    km: np.ndarray,
    kind: np.ndarray,
    params: MatchParams,
    max_km: float | None = None,
    solver: str = "ortools",
    hubs: tuple[pd.DataFrame, tuple, tuple, str] | None = None,
) -> Allocation:
    """Solve the allocation at ``params.level`` of the supply (t, or p05/p50/p95).

    ``si``, ``di``, ``km``, ``kind`` are candidate pairs (positions into ``supply`` and
    ``demand``, road or detour km, ``road`` / ``straight_detour``); the ones that break a
    rule (:func:`compatible_pairs`) are dropped. A match is ``robust`` when its supply
    row's reused tonnes stay within the row's p05.

    ``hubs`` = (hub table, (supply rows, hub rows, km), (hub rows, demand rows, km),
    distance kind of those pairs) adds the hubs (:mod:`mfa.match.hubs`); a move through a
    hub appears as two matches, supply → hub and hub → demand, with ``via_hub`` set.
    """
    limit = params.max_km if max_km is None else max_km
    ok = compatible_pairs(supply, demand, si, di, km, limit)
    si, di, km, kind = si[ok], di[ok], km[ok], kind[ok]
    level = "t" if params.level == "t" else f"t_{params.level}"
    s_t = supply[level].to_numpy(dtype=float)
    s_kg = np.rint(s_t * 1000.0).astype(np.int64)
    d_kg = np.rint(demand["t"].to_numpy(dtype=float) * 1000.0).astype(np.int64)
    s_mat = supply["material"].to_numpy()[si]
    avoided = by_material(params.avoided_kgco2e_per_t, s_mat)
    co2, dkk = pair_prices(km, s_mat, params)
    avoided_dkk = by_material(params.virgin_dkk_per_t, s_mat) + by_material(
        params.end_of_life_dkk_per_t, s_mat
    )
    cost = weighted_milli(co2, dkk, params)
    hub = None
    if hubs is not None and len(supply) and len(demand) and len(hubs[0]):
        hub_df, sh, hd, _ = hubs
        hub = hub_arcs(
            supply,
            demand,
            hub_df,
            s_kg,
            d_kg,
            sh,
            hd,
            params,
            limit,
            len(s_kg) + len(d_kg) + 2,
        )
        net = build_network(
            s_kg,
            d_kg,
            si,
            di,
            cost,
            hub.n_nodes,
            (
                hub.tails,
                hub.heads,
                hub.capacity_kg,
                weighted_milli(hub.co2_per_t, hub.dkk_per_t, params),
            ),
            (hub.group, hub.group_capacity_kg),
        )
    else:
        net = build_network(s_kg, d_kg, si, di, cost)
    flows, obj, used = solve(net, solver)
    # the optimum's net CO2 and net cost, from the thousandths the solver saw
    base = np.zeros(net.n_supply + net.n_demand + 1)
    co2_arc = milli(np.concatenate([co2, base, hub.co2_per_t if hub is not None else []]))
    dkk_arc = milli(np.concatenate([dkk, base, hub.dkk_per_t if hub is not None else []]))
    hf = flows[len(flows) - net.n_extra :] if net.n_extra else np.zeros(0, np.int64)
    inflow = np.bincount(net.heads, flows, len(net.supply_kg))
    outflow = np.bincount(net.tails, flows, len(net.supply_kg))
    residual = int(np.abs(outflow - inflow - net.supply_kg).max())
    pf = flows[: net.n_pairs]
    used_arc = pf > 0
    t = pf[used_arc] / 1000.0
    ms, md, mkm = si[used_arc], di[used_arc], km[used_arc]
    reused_kg = np.bincount(si, pf, len(supply))
    via_hub_kg = np.zeros(len(supply))
    if hub is not None:
        k0, k2 = hub.kind == 0, hub.kind == 2
        via_hub_kg = np.bincount(hub.end[k0], hf[k0], len(supply))
        reused_kg = reused_kg + via_hub_kg
    s_rows, d_rows = supply.iloc[ms], demand.iloc[md]
    transport = t * mkm * params.kgco2e_per_tkm
    avoided_t = t * avoided[used_arc]
    transport_dkk = t * mkm * params.dkk_per_tkm
    avoided_dkk_t = t * avoided_dkk[used_arc]
    matches = pd.DataFrame(
        {
            "supply_id": s_rows["supply_id"].to_numpy(),
            "demand_id": d_rows["demand_id"].to_numpy(),
            "material": s_rows["material"].to_numpy(),
            "year_out": np.maximum(s_rows["year_from"].to_numpy(), d_rows["year_from"].to_numpy()),
            "t": t,
            "km": mkm,
            "distance_kind": kind[used_arc],
            "transport_kgco2e": transport,
            "avoided_kgco2e": avoided_t,
            "net_kgco2e": transport - avoided_t,
            "transport_dkk": transport_dkk,
            "avoided_dkk": avoided_dkk_t,
            "net_dkk": transport_dkk - avoided_dkk_t,
            "robust": reused_kg[ms] / 1000.0 <= supply["t_p05"].to_numpy(dtype=float)[ms] + 1e-9,
            "x0": s_rows["x"].to_numpy(),
            "y0": s_rows["y"].to_numpy(),
            "x1": d_rows["x"].to_numpy(),
            "y1": d_rows["y"].to_numpy(),
        }
    )
    matches.insert(4, "year_in", matches["year_out"])
    matches.insert(2, "via_hub", "")
    for unit in ("kgco2e", "dkk"):
        at = matches.columns.get_loc(f"avoided_{unit}")
        matches.insert(at, f"handling_{unit}", 0.0)
        matches.insert(at + 1, f"holding_{unit}", 0.0)
    if hub is not None:
        matches = pd.concat(
            [matches, _hub_matches(hub, hf, supply, demand, hubs[0], params, hubs[3], reused_kg)],
            ignore_index=True,
        )
    matches = matches.sort_values(
        ["material", "supply_id", "via_hub", "demand_id", "year_out"], ignore_index=True
    )
    eol = flows[net.n_pairs : net.n_pairs + net.n_supply] / 1000.0
    hazardous = supply["hazardous"].to_numpy(dtype=bool)
    reused_t = reused_kg / 1000.0
    fate = np.where(
        hazardous,
        "hazardous",
        np.where(reused_t <= 0, "end_of_life", np.where(eol > 0, "partly_reused", "reused")),
    )
    supply_fate = supply[
        ["supply_id", "x", "y", "material", "year_from", "year_to", "t", "t_p05", "t_p50", "t_p95"]
    ].assign(
        solved_t=s_kg / 1000.0,
        reused_t=reused_t,
        via_hub_t=via_hub_kg / 1000.0,
        end_of_life_t=eol,
        fate=fate,
    )
    virgin = flows[net.n_pairs + net.n_supply : net.n_pairs + net.n_supply + net.n_demand] / 1000.0
    matched_kg = np.bincount(di, pf, len(demand))
    if hub is not None:
        matched_kg = matched_kg + np.bincount(hub.end[k2], hf[k2], len(demand))
    matched = matched_kg / 1000.0
    med = matches.groupby(["demand_id", "material"])["km"].median()
    keys = pd.MultiIndex.from_frame(demand[["demand_id", "material"]])
    coverage = demand.assign(
        matched_t=matched,
        virgin_t=virgin,
        share=np.where(demand["t"] > 0, matched / demand["t"].where(demand["t"] > 0, 1.0), 1.0),
        median_km=med.reindex(keys).to_numpy(dtype=float),
    )
    return Allocation(
        matches,
        supply_fate,
        coverage,
        int(flows @ co2_arc) / 1e6,
        used,
        residual,
        len(net.tails),
        obj / 1e6,
        int(flows @ dkk_arc) / 1e6,
        params.weights,
    )


def _hub_matches(
    hub: HubArcs,
    hf: np.ndarray,
    supply: pd.DataFrame,
    demand: pd.DataFrame,
    hubs: pd.DataFrame,
    params: MatchParams,
    kind: str,
    reused_kg: np.ndarray,
) -> pd.DataFrame:
    """Used supply → hub and hub → demand arcs as match rows. Handling is on the way in;
    holding on the way out: the tonnes leaving a hub carry the years they spent there
    (:func:`mfa.match.hubs.held_kg_years`) × the hub's price per t·year."""
    held_t_years = held_kg_years(hub, hf) / 1000.0
    rows = []
    for k, side in ((0, supply), (2, demand)):
        sel = (hub.kind == k) & (hf > 0)
        t = hf[sel] / 1000.0
        end, h, year, km = hub.end[sel], hub.hub[sel], hub.year[sel], hub.km[sel]
        e = side.iloc[end]
        hx, hy = hubs["x"].to_numpy(float)[h], hubs["y"].to_numpy(float)[h]
        transport = t * km * params.kgco2e_per_tkm
        handling = t * hubs["handling_kgco2e_per_t"].to_numpy(float)[h] if k == 0 else 0 * t
        held = held_t_years[sel]  # 0 on the way in
        holding = held * hubs["holding_kgco2e_per_t_year"].to_numpy(float)[h]
        avoided = t * hub.avoided_kgco2e_per_t[sel]
        transport_dkk = t * km * params.dkk_per_tkm
        handling_dkk = t * hubs["handling_dkk_per_t"].to_numpy(float)[h] if k == 0 else 0 * t
        holding_dkk = held * hubs["holding_dkk_per_t_year"].to_numpy(float)[h]
        avoided_dkk = t * hub.avoided_dkk_per_t[sel]
        ids = e["supply_id" if k == 0 else "demand_id"].to_numpy()
        rows.append(
            pd.DataFrame(
                {
                    "supply_id": ids if k == 0 else "",
                    "demand_id": "" if k == 0 else ids,
                    "via_hub": hubs["hub_id"].to_numpy()[h],
                    "material": e["material"].to_numpy(),
                    "year_out": e["year_from"].to_numpy() if k == 0 else year,
                    "year_in": year,
                    "t": t,
                    "km": km,
                    "distance_kind": kind,
                    "transport_kgco2e": transport,
                    "handling_kgco2e": handling,
                    "holding_kgco2e": holding,
                    "avoided_kgco2e": avoided,
                    "net_kgco2e": transport + handling + holding - avoided,
                    "transport_dkk": transport_dkk,
                    "handling_dkk": handling_dkk,
                    "holding_dkk": holding_dkk,
                    "avoided_dkk": avoided_dkk,
                    "net_dkk": transport_dkk + handling_dkk + holding_dkk - avoided_dkk,
                    "robust": (
                        reused_kg[end] / 1000.0 <= supply["t_p05"].to_numpy(float)[end] + 1e-9
                        if k == 0
                        else True
                    ),
                    "x0": e["x"].to_numpy(float) if k == 0 else hx,
                    "y0": e["y"].to_numpy(float) if k == 0 else hy,
                    "x1": hx if k == 0 else e["x"].to_numpy(float),
                    "y1": hy if k == 0 else e["y"].to_numpy(float),
                }
            )
        )
    return pd.concat(rows, ignore_index=True)

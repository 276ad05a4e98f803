"""Allocation: a min-cost flow over supply (unit × year), demand sites, virgin production
and end of life, with net CO2 as the cost.

Nodes: each supply row (a unit's tonnes of one material in one year window) supplies its
kg; each demand row needs its kg; ``virgin`` supplies the total demand; ``end of life``
takes the total supply. Arcs: supply → demand where material, time window, grade and haul
limit allow and the supply is not hazardous (cost: transport − avoided virgin production);
supply → end of life and virgin → demand and virgin → end of life (cost 0: the baseline).
So every supplied kg goes somewhere, every demanded kg comes from reuse or virgin
material, and the optimum is the allocation with the lowest net CO2. The materials never
share an arc, so one network holds them all and its optimum is the sum of the optima of
the per-material networks.

Integer units (both solvers need them): flow in kg, cost in g CO2e per tonne (= mg per kg),
objective in mg CO2e.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from mfa.errors import ConfigError

__all__ = ["Network", "build_network", "compatible_pairs", "solve"]


def compatible_pairs(
    supply: pd.DataFrame,
    demand: pd.DataFrame,
    si: np.ndarray,
    di: np.ndarray,
    km: np.ndarray,
    max_km: float,
) -> np.ndarray:
    """Mask of the candidate pairs a match may use: same material, overlapping year
    windows, supply grade ≥ the site's ``min_grade``, not hazardous, and
    ``km`` ≤ min(site's ``max_km``, ``max_km``)."""

    def col(df: pd.DataFrame, name: str, at: np.ndarray) -> np.ndarray:
        return df[name].to_numpy()[at]

    limit = np.fmin(col(demand, "max_km", di).astype(float), max_km)
    return (
        (col(supply, "material", si) == col(demand, "material", di))
        & (
            np.maximum(col(supply, "year_from", si), col(demand, "year_from", di))
            <= np.minimum(col(supply, "year_to", si), col(demand, "year_to", di))
        )
        & (col(supply, "grade", si) >= col(demand, "min_grade", di))
        & ~col(supply, "hazardous", si).astype(bool)
        & np.isfinite(km)
        & (km <= limit)
    )


@dataclass(frozen=True)
class Network:
    """The arrays of one min-cost flow problem (int64) and what the pair arcs mean."""

    tails: np.ndarray
    heads: np.ndarray
    capacity_kg: np.ndarray
    cost_g_per_t: np.ndarray
    supply_kg: np.ndarray  # per node: > 0 supplies, < 0 demands
    n_pairs: int  # the first n_pairs arcs are supply → demand
    n_supply: int
    n_demand: int
    n_extra: int = 0  # the last n_extra arcs are the caller's (hubs)


def build_network(
    supply_kg: np.ndarray,
    demand_kg: np.ndarray,
    pair_s: np.ndarray,
    pair_d: np.ndarray,
    pair_cost_g_per_t: np.ndarray,
    extra_nodes: int = 0,
    extra_arcs: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> Network:
    """Nodes 0…S−1 supplies, S…S+D−1 demands, S+D virgin, S+D+1 end of life, then
    ``extra_nodes`` transshipment nodes (supply 0: hubs) that ``extra_arcs`` (tails, heads,
    capacity kg, cost g/t, in this numbering) connect; those arcs come last."""
    s_kg = np.asarray(supply_kg, dtype=np.int64)
    d_kg = np.asarray(demand_kg, dtype=np.int64)
    n_s, n_d = len(s_kg), len(d_kg)
    virgin, eol = n_s + n_d, n_s + n_d + 1
    big = int(s_kg.sum() + d_kg.sum() + 1)
    ps, pd_ = np.asarray(pair_s, np.int64), np.asarray(pair_d, np.int64)
    tails = np.concatenate([ps, np.arange(n_s), np.full(n_d, virgin), [virgin]])
    heads = np.concatenate([n_s + pd_, np.full(n_s, eol), n_s + np.arange(n_d), [eol]])
    cap = np.concatenate([np.minimum(s_kg[ps], d_kg[pd_]), s_kg, d_kg, [big]])
    cost = np.concatenate(
        [np.asarray(pair_cost_g_per_t, np.int64), np.zeros(n_s + n_d + 1, np.int64)]
    )
    node_supply = np.concatenate(
        [s_kg, -d_kg, [d_kg.sum(), -s_kg.sum()], np.zeros(extra_nodes, np.int64)]
    ).astype(np.int64)
    n_extra = 0
    if extra_arcs is not None:
        et, eh, ec, ew = (np.asarray(a, np.int64) for a in extra_arcs)
        tails, heads = np.concatenate([tails, et]), np.concatenate([heads, eh])
        cap, cost = np.concatenate([cap, ec]), np.concatenate([cost, ew])
        n_extra = len(et)
    return Network(
        tails.astype(np.int64),
        heads.astype(np.int64),
        cap.astype(np.int64),
        cost,
        node_supply,
        len(ps),
        n_s,
        n_d,
        n_extra,
    )


def _ortools(net: Network) -> tuple[np.ndarray, int]:
    from ortools.graph.python import min_cost_flow

    smcf = min_cost_flow.SimpleMinCostFlow()
    arcs = smcf.add_arcs_with_capacity_and_unit_cost(
        net.tails, net.heads, net.capacity_kg, net.cost_g_per_t
    )
    smcf.set_nodes_supplies(np.arange(len(net.supply_kg)), net.supply_kg)
    status = smcf.solve()
    if status != smcf.OPTIMAL:  # cannot happen: virgin and end of life make it feasible
        raise RuntimeError(f"OR-Tools min-cost flow ended with status {status}")
    return np.asarray(smcf.flows(arcs), dtype=np.int64), int(smcf.optimal_cost())


def _networkx(net: Network) -> tuple[np.ndarray, int]:
    import networkx as nx

    g = nx.DiGraph()
    for node, b in enumerate(net.supply_kg.tolist()):
        g.add_node(node, demand=-b)
    g.add_edges_from(
        (t, h, {"capacity": c, "weight": w})
        for t, h, c, w in zip(
            net.tails.tolist(),
            net.heads.tolist(),
            net.capacity_kg.tolist(),
            net.cost_g_per_t.tolist(),
            strict=True,
        )
    )
    cost, flow = nx.network_simplex(g)
    flows = np.array(
        [flow[t][h] for t, h in zip(net.tails.tolist(), net.heads.tolist(), strict=True)],
        dtype=np.int64,
    )
    return flows, int(cost)


def solve(net: Network, solver: str = "ortools") -> tuple[np.ndarray, int, str]:
    """Optimal flow per arc (kg), the objective (mg CO2e) and the solver used.

    ``ortools`` (``SimpleMinCostFlow``) where installed, else networkx ``network_simplex``
    (the same optimum, several times slower; see ``benchmarks/match.py``).
    """
    if solver == "ortools":
        try:
            import ortools  # noqa: F401
        except ImportError:
            solver = "networkx"
    if solver == "ortools":
        flows, obj = _ortools(net)
    elif solver == "networkx":
        flows, obj = _networkx(net)
    else:
        raise ConfigError(f"solver {solver!r} is unknown; use ortools or networkx")
    return flows, obj, solver

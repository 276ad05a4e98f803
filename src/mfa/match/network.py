"""Allocation: a min-cost flow over supply (unit × year), demand sites, virgin production
and end of life, with net CO2 (and, weighted, net cost: :mod:`mfa.match.costs`) as the cost.

Nodes: each supply row (a unit's tonnes of one material in one year window) supplies its
kg; each demand row needs its kg; ``virgin`` supplies the total demand; ``end of life``
takes the total supply. Arcs: supply → demand where material, time window, grade and haul
limit allow and the supply is not hazardous (cost: transport − avoided virgin production);
supply → end of life and virgin → demand and virgin → end of life (cost 0: the baseline).
So every supplied kg goes somewhere, every demanded kg comes from reuse or virgin
material, and the optimum is the allocation with the lowest net CO2. The materials never
share an arc, so one network holds them all and its optimum is the sum of the optima of
the per-material networks.

Integer units (the solvers need them): flow in kg, cost in thousandths per tonne (g CO2e
per t at weights (1, 0)), objective in millionths (mg CO2e).

Side constraints (a hub's joint capacity over materials and grades: ``Network.joint``)
make it a linear program: solved with scipy's HiGHS, integer flows (a MILP where the LP's
vertex is fractional), deterministic. Without them, or where every group has one arc (the
arc's own capacity is then the constraint), the min-cost flow solvers stay.
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
    cost_g_per_t: np.ndarray  # the objective per t in thousandths (g CO2e at weights (1, 0))
    supply_kg: np.ndarray  # per node: > 0 supplies, < 0 demands
    n_pairs: int  # the first n_pairs arcs are supply → demand
    n_supply: int
    n_demand: int
    n_extra: int = 0  # the last n_extra arcs are the caller's (hubs)
    #: side constraints Σ flow[arcs of a group] ≤ capacity: (arc positions, group of
    #: each, capacity kg per group); None = a pure network
    joint: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    @property
    def coupled(self) -> bool:
        """Whether some side constraint spans more than one arc (then only an LP holds it)."""
        if self.joint is None or len(self.joint[1]) == 0:
            return False
        return bool(np.bincount(self.joint[1]).max() > 1)


def build_network(
    supply_kg: np.ndarray,
    demand_kg: np.ndarray,
    pair_s: np.ndarray,
    pair_d: np.ndarray,
    pair_cost_g_per_t: np.ndarray,
    extra_nodes: int = 0,
    extra_arcs: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None,
    extra_groups: tuple[np.ndarray, np.ndarray] | None = None,
) -> Network:
    """Nodes 0…S−1 supplies, S…S+D−1 demands, S+D virgin, S+D+1 end of life, then
    ``extra_nodes`` transshipment nodes (supply 0: hubs) that ``extra_arcs`` (tails, heads,
    capacity kg, cost per t in thousandths, in this numbering) connect; those arcs come
    last. ``extra_groups`` = (group of each extra arc, −1 for none; capacity kg per group)
    adds the joint capacities."""
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
    joint = None
    if extra_groups is not None:
        group, group_cap = (np.asarray(a, np.int64) for a in extra_groups)
        at = np.flatnonzero(group >= 0)
        joint = (len(tails) - n_extra + at, group[at], group_cap)
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
        joint,
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


def _highs(net: Network) -> tuple[np.ndarray, int]:
    """The network and its side constraints as an LP (scipy HiGHS); integer flows."""
    import scipy.sparse as sp
    from scipy.optimize import Bounds, LinearConstraint, linprog, milp

    n, m = len(net.supply_kg), len(net.tails)
    arcs = np.arange(m)
    a_eq = sp.csr_matrix(
        (np.r_[np.ones(m), -np.ones(m)], (np.r_[net.tails, net.heads], np.r_[arcs, arcs])),
        shape=(n, m),
    )
    b_eq = net.supply_kg.astype(float)
    a_ub, b_ub = None, None
    if net.joint is not None and len(net.joint[0]):
        at, group, cap = net.joint
        a_ub = sp.csr_matrix((np.ones(len(at)), (group, at)), shape=(len(cap), m))
        b_ub = cap.astype(float)
    cost = net.cost_g_per_t.astype(float)
    upper = net.capacity_kg.astype(float)

    def balanced(x: np.ndarray) -> bool:
        out = np.bincount(net.tails, x, n) - np.bincount(net.heads, x, n)
        ok = (out == net.supply_kg).all() and (x >= 0).all() and (x <= net.capacity_kg).all()
        if ok and a_ub is not None:
            ok = (np.bincount(group, x[at], len(cap)) <= cap).all()
        return bool(ok)

    lp = linprog(
        cost,
        A_ub=a_ub,
        b_ub=b_ub,
        A_eq=a_eq,
        b_eq=b_eq,
        bounds=np.c_[np.zeros(m), upper],
        method="highs",
        # HiGHS's presolve spends ~50x the solve on these networks (20,000 nodes: 30 s
        # with it, 0.5 s without; benchmarks/match.py --hubs)
        options={"presolve": False},
    )
    if lp.status != 0:  # cannot happen: virgin and end of life make it feasible
        raise RuntimeError(f"HiGHS ended with status {lp.status}: {lp.message}")
    x = np.rint(lp.x).astype(np.int64)
    if not (np.abs(lp.x - x).max(initial=0.0) <= 1e-6 and balanced(x)):
        # a fractional vertex (the joint capacities): the integer optimum
        cons = [LinearConstraint(a_eq, b_eq, b_eq)]
        if a_ub is not None:
            cons.append(LinearConstraint(a_ub, -np.inf, b_ub))
        mip = milp(
            cost,
            constraints=cons,
            integrality=np.ones(m),
            bounds=Bounds(np.zeros(m), upper),
            options={"mip_rel_gap": 0.0, "presolve": False},
        )
        if mip.status != 0:
            raise RuntimeError(f"HiGHS (MILP) ended with status {mip.status}: {mip.message}")
        x = np.rint(mip.x).astype(np.int64)
        if not balanced(x):
            raise RuntimeError("HiGHS returned flows that do not balance; report this")
    return x, int(x @ net.cost_g_per_t)


def solve(net: Network, solver: str = "ortools") -> tuple[np.ndarray, int, str]:
    """Optimal flow per arc (kg), the objective (millionths: mg CO2e at weights (1, 0))
    and the solver used.

    ``ortools`` (``SimpleMinCostFlow``) where installed, else networkx ``network_simplex``
    (the same optimum, several times slower; see ``benchmarks/match.py``); ``highs`` (an
    LP) on request, and always where a side constraint spans several arcs
    (:attr:`Network.coupled`).
    """
    if solver not in ("ortools", "networkx", "highs"):
        raise ConfigError(f"solver {solver!r} is unknown; use ortools, networkx or highs")
    if net.coupled or solver == "highs":
        flows, obj = _highs(net)
        return flows, obj, "highs"
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
        raise ConfigError(f"solver {solver!r} is unknown; use ortools, networkx or highs")
    return flows, obj, solver

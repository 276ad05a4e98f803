"""Reuse matching at the issue's size: OR-Tools vs networkx on one generated instance.

20,000 supply units × 10 years (one row per unit and year) × 1,000 demand sites, two
materials, random points in a 40 km × 40 km square, demand windows of 1–4 years, haul
limit 5 km (straight line × detour factor; ~0.9 M arcs, the issue's size). Both solvers
get the same network (``mfa.match.network.build_network``) and must report the same
optimum; the script prints the size, both times and the ratio.

``--hubs H`` adds H depots (random points, ``--hub-capacity`` t each (200), both
materials) and times the
joint capacity (scipy HiGHS, :mod:`mfa.match.network`) beside OR-Tools on the same
network with a capacity per material (a relaxation: never worse).

    python benchmarks/match.py [--supply 20000] [--demand 1000] [--years 10] [--max-km 5]
                               [--hubs 0]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from mfa.match.costs import pair_prices, weighted_milli
from mfa.match.distances import pairs_within
from mfa.match.network import build_network, compatible_pairs, solve
from mfa.match.params import MatchParams


def instance(n_units: int, n_demand: int, n_years: int, seed: int):
    rng = np.random.default_rng(seed)
    mats = np.array(["concrete", "brick"], dtype=object)
    ux, uy = rng.uniform(0, 40_000, (2, n_units))
    um = rng.integers(0, 2, n_units)
    years = 2026 + np.arange(n_years)
    sup = pd.DataFrame(
        {
            "supply_id": np.repeat(np.arange(n_units), n_years).astype(str),
            "x": np.repeat(ux, n_years),
            "y": np.repeat(uy, n_years),
            "material": np.repeat(mats[um], n_years),
            "year_from": np.tile(years, n_units),
            "year_to": np.tile(years, n_units),
            "t": rng.gamma(0.5, 4.0, n_units * n_years).round(3),
            "grade": 2,
            "hazardous": rng.random(n_units * n_years) < 0.01,
        }
    )
    for q in ("t_p05", "t_p50", "t_p95"):
        sup[q] = sup["t"]
    y0 = rng.integers(2026, 2026 + n_years, n_demand)
    dem = pd.DataFrame(
        {
            "demand_id": np.arange(n_demand).astype(str),
            "x": rng.uniform(0, 40_000, n_demand),
            "y": rng.uniform(0, 40_000, n_demand),
            "material": mats[rng.integers(0, 2, n_demand)],
            "t": rng.uniform(10, 400, n_demand).round(3),
            "year_from": y0,
            "year_to": y0 + rng.integers(0, 4, n_demand),
            "min_grade": rng.integers(0, 3, n_demand),
            "max_km": np.nan,
        }
    )
    return sup, dem


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--supply", type=int, default=20_000)
    ap.add_argument("--demand", type=int, default=1_000)
    ap.add_argument("--years", type=int, default=10)
    ap.add_argument("--max-km", type=float, default=5.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--skip-networkx", action="store_true")
    ap.add_argument("--hubs", type=int, default=0, help="depots with a joint capacity")
    ap.add_argument("--hub-capacity", type=float, default=200.0, help="t per depot")
    a = ap.parse_args()
    params = MatchParams(
        kgco2e_per_tkm=0.095,
        detour_factor=1.2,
        max_km=a.max_km,
        max_snap_m=500.0,
        line_snap_m=1.0,
        run_grade=2,
        level="t",
        avoided_kgco2e_per_t={"concrete": 81.0, "brick": 241.0},
    )
    sup, dem = instance(a.supply, a.demand, a.years, a.seed)
    t0 = time.perf_counter()
    si, di, straight = pairs_within(
        sup["x"].to_numpy(),
        sup["y"].to_numpy(),
        dem["x"].to_numpy(),
        dem["y"].to_numpy(),
        a.max_km * 1000 / params.detour_factor,
    )
    km = straight / 1000 * params.detour_factor
    ok = compatible_pairs(sup, dem, si, di, km, a.max_km)
    si, di, km = si[ok], di[ok], km[ok]
    co2, dkk = pair_prices(km, sup["material"].to_numpy()[si], params)
    net = build_network(
        np.rint(sup["t"].to_numpy() * 1000).astype(np.int64),
        np.rint(dem["t"].to_numpy() * 1000).astype(np.int64),
        si,
        di,
        weighted_milli(co2, dkk, params),
    )
    t_build = time.perf_counter() - t0
    print(
        f"instance: {a.supply:,} supply units × {a.years} years = {len(sup):,} supply rows, "
        f"{a.demand:,} demand sites, {len(net.supply_kg):,} nodes, {len(net.tails):,} arcs "
        f"({net.n_pairs:,} supply → demand); pairs and network built in {t_build:.2f} s"
    )
    t0, c0 = time.perf_counter(), time.process_time()
    _, obj_or, _ = solve(net, "ortools")
    t_or, c_or = time.perf_counter() - t0, time.process_time() - c0
    print(
        f"ortools  SimpleMinCostFlow: {t_or:8.2f} s wall, {c_or:8.2f} s CPU, "
        f"objective {obj_or / 1e6:,.1f} kg CO2e"
    )
    if a.hubs:
        hubs_benchmark(sup, dem, net, params, a)
    if a.skip_networkx:
        return
    t0, c0 = time.perf_counter(), time.process_time()
    _, obj_nx, _ = solve(net, "networkx")
    t_nx, c_nx = time.perf_counter() - t0, time.process_time() - c0
    print(
        f"networkx network_simplex:   {t_nx:8.2f} s wall, {c_nx:8.2f} s CPU, "
        f"objective {obj_nx / 1e6:,.1f} kg CO2e"
    )
    print(
        f"same optimum: {obj_or == obj_nx}; networkx / ortools: {t_nx / t_or:.1f}× wall, "
        f"{c_nx / c_or:.1f}× CPU (the machine is shared: CPU time is the steadier figure)"
    )


def hubs_benchmark(sup, dem, net, params, a) -> None:
    """The joint hub capacity (HiGHS) beside per-material capacities (OR-Tools)."""
    from mfa.match.hubs import check_hub_table, hub_arcs

    rng = np.random.default_rng(a.seed + 1)
    hubs = check_hub_table(
        pd.DataFrame(
            {
                "hub_id": [f"h{i}" for i in range(a.hubs)],
                "x": rng.uniform(0, 40_000, a.hubs),
                "y": rng.uniform(0, 40_000, a.hubs),
                "capacity_t": a.hub_capacity,
                "handling_kgco2e_per_t": 2.0,
                "holding_kgco2e_per_t_year": 0.5,
            }
        ),
        "benchmark hubs",
        ["concrete", "brick"],
    )
    t0 = time.perf_counter()

    def pairs(ax, ay, bx, by):
        i, j, d = pairs_within(ax, ay, bx, by, a.max_km * 1000 / params.detour_factor)
        return i, j, d / 1000 * params.detour_factor

    xy = {k: (df["x"].to_numpy(), df["y"].to_numpy()) for k, df in (("s", sup), ("d", dem))}
    hxy = (hubs["x"].to_numpy(), hubs["y"].to_numpy())
    s_kg, d_kg = net.supply_kg[: net.n_supply], -net.supply_kg[net.n_supply : -2]
    h = hub_arcs(
        sup,
        dem,
        hubs,
        s_kg,
        d_kg,
        pairs(*xy["s"], *hxy),
        pairs(*hxy, *xy["d"]),
        params,
        a.max_km,
        len(net.supply_kg),
    )
    cost = weighted_milli(h.co2_per_t, h.dkk_per_t, params)
    args = (
        s_kg,
        d_kg,
        net.tails[: net.n_pairs],
        net.heads[: net.n_pairs] - net.n_supply,
        net.cost_g_per_t[: net.n_pairs],
        h.n_nodes,
        (h.tails, h.heads, h.capacity_kg, cost),
    )
    relaxed = build_network(*args)
    joint = build_network(*args, (h.group, h.group_capacity_kg))
    t_build = time.perf_counter() - t0
    t0, c0 = time.perf_counter(), time.process_time()
    _, obj_rel, _ = solve(relaxed, "ortools")
    t_rel, c_rel = time.perf_counter() - t0, time.process_time() - c0
    t0, c0 = time.perf_counter(), time.process_time()
    _, obj_joint, used = solve(joint, "ortools")
    t_joint, c_joint = time.perf_counter() - t0, time.process_time() - c0
    print(
        f"hubs: {a.hubs} × {a.hub_capacity:g} t, {len(h.tails):,} hub arcs, "
        f"{len(joint.joint[2]):,} joint capacities; built in {t_build:.2f} s"
    )
    print(
        f"ortools, capacity per material: {t_rel:8.2f} s wall, {c_rel:8.2f} s CPU, "
        f"objective {obj_rel / 1e6:,.1f} kg CO2e"
    )
    print(
        f"{used}, joint capacity:          {t_joint:8.2f} s wall, {c_joint:8.2f} s CPU, "
        f"objective {obj_joint / 1e6:,.1f} kg CO2e (never below the per-material one: "
        f"{obj_joint >= obj_rel})"
    )


if __name__ == "__main__":
    main()

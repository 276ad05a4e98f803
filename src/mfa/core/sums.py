"""Additive sums of a batch of buildings: what every aggregate layer is made from (pure).

Each batch gives its sums; the sums of a run are the batches' sums added up in input
order (:meth:`Sums.merged`). Sizes depend on the number of districts, grid cells,
archetypes and cohorts, not on the number of buildings, so the district, grid, quality
and flow layers and the run's totals never need the buildings in memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from mfa.buildings.report import provenance_counts
from mfa.stocks.aggregate import district_sums

__all__ = ["Sums", "batch_sums"]


@dataclass
class Sums:
    """Additive sums of buildings (floor area in m², tonnes in t, counts).

    Attributes
    ----------
    districts
        Per ``district_id`` (``_unassigned`` outside every district): ``building_count``,
        ``gfa_m2``, ``mass_t``, ``<material>_t``, ``hazard_building_count``,
        ``hazard_mass_t`` and provenance counts ``<attribute>_<observed|imputed|missing>``
        and ``match_<method>``.
    district_archetypes
        Floor area (m²) per (``district_id``, ``archetype_id``): the Monte Carlo draws of
        a district are Σ_archetype floor area × the archetype's intensity draw.
    cells, cell_archetypes
        The same per grid cell (``iy``, ``ix``) (empty without a grid).
    cohorts
        Floor area (m²) and building count per (``district_id``, ``archetype_id``,
        ``construction_year``; 0 where the year is not observed, also where the run's
        year fill stored one): the dynamic stock model's input.
    imputed_from_peers
        Structures and floor counts filled from cohort peers.
    """

    districts: pd.DataFrame
    district_archetypes: pd.Series
    cells: pd.DataFrame
    cell_archetypes: pd.Series
    cohorts: pd.DataFrame
    imputed_from_peers: dict[str, int] = field(default_factory=dict)

    @staticmethod
    def merged(parts: Sequence[Sums]) -> Sums:
        """The sums of several batches, added in the order given (keys sorted)."""
        if not parts:
            raise ValueError("no sums to merge")

        def add(frames: list, levels: int) -> pd.DataFrame | pd.Series:
            return pd.concat(frames).groupby(level=list(range(levels)), sort=True).sum()

        peers: dict[str, int] = {}
        for p in parts:
            for k, v in p.imputed_from_peers.items():
                peers[k] = peers.get(k, 0) + int(v)
        return Sums(
            districts=add([p.districts for p in parts], 1),
            district_archetypes=add([p.district_archetypes for p in parts], 2),
            cells=add([p.cells for p in parts], 2),
            cell_archetypes=add([p.cell_archetypes for p in parts], 3),
            cohorts=add([p.cohorts for p in parts], 3),
            imputed_from_peers=peers,
        )

    @property
    def building_count(self) -> int:
        return int(self.districts["building_count"].sum())


def _group(values: pd.DataFrame | pd.Series, keys: list[np.ndarray], names: list[str]):
    if len(keys) > 1:  # levels made by hashing each key once (from_arrays factorises anew)
        coded = [pd.factorize(k, sort=True) for k in keys]
        index = pd.MultiIndex(
            levels=[u for _, u in coded],
            codes=[c for c, _ in coded],
            names=names,
            verify_integrity=False,
        )
    else:
        index = keys[0]
    grouped = values.set_axis(index).groupby(level=list(range(len(keys))), sort=True).sum()
    if len(keys) == 1:
        grouped.index.name = names[0]
    return grouped


def batch_sums(
    buildings: pd.DataFrame,
    cells: tuple[np.ndarray, np.ndarray] | None,
    archetypes: Sequence[str],
    materials: Sequence[str],
    imputed_from_peers: dict[str, int],
    unassigned: str,
) -> Sums:
    """The additive sums of a batch of finished buildings (see :class:`Sums`).

    ``buildings`` has ``district_id`` (NA outside every district), ``archetype_id``,
    ``construction_year``, ``gfa_m2``, ``mass_t``, ``<material>_t``, ``hazard`` and the
    ``*_source`` columns; ``cells`` the (ix, iy) grid index of each building (None: no
    grid).
    """
    n = len(buildings)
    key = buildings["district_id"].astype("string").fillna(unassigned)
    district = key.to_numpy(object)
    archetype = buildings["archetype_id"].astype("string").to_numpy(object)
    unknown = pd.Index(list(archetypes)).get_indexer(archetype) < 0  # (hashed; np.isin sorts)
    if unknown.any():
        raise ValueError(f"archetype {archetype[unknown][0]} has no Monte Carlo draws")
    tonnes = ["mass_t", *(f"{m}_t" for m in materials)]
    counts = provenance_counts(buildings, key).drop(columns="building_count")
    districts = district_sums(buildings.assign(district_id=key), tonnes).join(counts)
    gfa = buildings["gfa_m2"].to_numpy(dtype=float)
    gfa_s = pd.Series(gfa)
    # the observed year (0: unknown): the flows step fills the gaps with the run's fill
    observed = (buildings["construction_year_source"] != "imputed").fillna(True).to_numpy(bool)
    year = buildings["construction_year"].astype("Float64").fillna(0).to_numpy(dtype=np.int64)
    year = np.where(observed, year, 0)
    if cells is not None:
        ix, iy = cells
        values = buildings[["gfa_m2", *tonnes]].astype(float).reset_index(drop=True)
        values.insert(0, "building_count", np.ones(n, dtype=np.int64))
        cell_frame = _group(values, [iy, ix], ["iy", "ix"])
        cell_arch = _group(gfa_s, [iy, ix, archetype], ["iy", "ix", "archetype_id"])
    else:
        cell_frame = pd.DataFrame(
            columns=["building_count", "gfa_m2", *tonnes],
            index=pd.MultiIndex.from_arrays([[], []], names=["iy", "ix"]),
            dtype=float,
        )
        cell_arch = pd.Series(
            dtype=float,
            index=pd.MultiIndex.from_arrays([[], [], []], names=["iy", "ix", "archetype_id"]),
        )
    return Sums(
        districts=districts,
        district_archetypes=_group(gfa_s, [district, archetype], ["district_id", "archetype_id"]),
        cells=cell_frame,
        cell_archetypes=cell_arch,
        cohorts=_group(
            pd.DataFrame({"gfa_m2": gfa, "building_count": np.ones(n, dtype=np.int64)}),
            [district, archetype, year],
            ["district_id", "archetype_id", "construction_year"],
        ),
        imputed_from_peers=dict(imputed_from_peers),
    )

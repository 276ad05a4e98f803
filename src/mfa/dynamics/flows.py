"""Material flows per district, year and scenario from the register's age structure (pure).

Series are district × archetype; cohorts are construction years. Each series' floor area
is forecast with the lifetime of its function (:func:`mfa.dynamics.forecast.forecast_stock`),
then turned into tonnes with the intensities: the central estimate with the pipeline's
statistic, the percentiles from the same Monte Carlo intensity draws as the stock layers,
summed over archetypes draw by draw.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from mfa.dynamics import Lifetime, check_stock_balance, sum_last
from mfa.dynamics.forecast import forecast_stock
from mfa.stocks.uncertainty import PartsMap, group_quantiles

__all__ = [
    "ScenarioLevers",
    "YearFill",
    "district_flows",
    "fill_years",
    "impute_cohort_years",
    "impute_years",
    "known_years_fill",
    "year_fill",
]


@dataclass(frozen=True)
class ScenarioLevers:
    """What a scenario changes (see the pipeline file's ``[[dynamics.scenarios]]``)."""

    name: str
    lifetime_factor: float = 1.0
    extra_demolition_rate: float = 0.0
    construction_m2_per_year: float = 0.0
    construction_archetype: str = "RM-C"
    stock_growth_per_year: float | None = None


def _weighted_median(years: np.ndarray, counts: np.ndarray) -> float:
    """The median of ``years`` each repeated ``counts`` times (the mean of the two middle
    values for an even total, as :meth:`pandas.Series.median`); NaN when empty."""
    n = int(counts.sum())
    if n == 0:
        return float("nan")
    order = np.argsort(years, kind="stable")
    y, upto = years[order], np.cumsum(counts[order])
    lo = y[np.searchsorted(upto, (n - 1) // 2, side="right")]
    hi = y[np.searchsorted(upto, n // 2, side="right")]
    return (float(lo) + float(hi)) / 2


@dataclass(frozen=True)
class YearFill:
    """The construction year given to a building whose year is unknown: the median year
    of the run's buildings of the same archetype, else of all its buildings, else the
    pipeline's stated fallback (``[dynamics] fallback_construction_year``). Written to
    ``run.json`` (``flows.year_fill``) so that ``mfa query --years`` fills the same years
    as the flows step."""

    by_archetype: dict[str, int]
    overall: int
    rule: str

    def to_json(self) -> dict[str, object]:
        return {"by_archetype": dict(self.by_archetype), "overall": self.overall, "rule": self.rule}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> YearFill:
        return cls(
            {str(k): int(v) for k, v in d["by_archetype"].items()}, int(d["overall"]), d["rule"]
        )

    def fill(self, archetype_id: pd.Series, construction_year: pd.Series) -> np.ndarray:
        """Years (float array) with every gap filled; ``construction_year`` NA where
        unknown, aligned with ``archetype_id``."""
        year = construction_year.astype("Float64").to_numpy(dtype=float, na_value=np.nan)
        arch = archetype_id.astype(str)
        fill = arch.map(self.by_archetype).astype(float).fillna(float(self.overall))
        return np.where(np.isnan(year), fill.to_numpy(dtype=float), year)

    def rules(self, archetype_id: pd.Series) -> pd.Series:
        """The rule (:data:`mfa.buildings.provenance.RULES`) that gives a building of each
        archetype its year: ``archetype_median``, ``overall_median`` or ``fallback``."""
        if not self.by_archetype and self.rule.startswith("fallback"):
            return pd.Series("fallback", index=archetype_id.index, dtype="string")
        known = archetype_id.astype(str).isin(list(self.by_archetype)).to_numpy(bool)
        rule = np.where(known, "archetype_median", "overall_median")
        return pd.Series(rule, index=archetype_id.index, dtype="string")


def fill_years(buildings: pd.DataFrame, fill: YearFill | None) -> pd.DataFrame:
    """Store the run's year fill in the buildings whose construction year is unknown:
    ``construction_year`` = :meth:`YearFill.fill`, ``construction_year_source`` =
    ``imputed``, ``construction_year_rule`` = :meth:`YearFill.rules`. Without a fill (no
    year observed in the run and no stated fallback) they stay missing."""
    unknown = buildings["construction_year"].isna().to_numpy(bool)
    if fill is None or not unknown.any():
        return buildings
    b = buildings.copy(deep=False)
    years = fill.fill(b["archetype_id"], b["construction_year"])
    b["construction_year"] = pd.array(np.round(years), dtype="Int64")
    b.loc[unknown, "construction_year_source"] = "imputed"
    b.loc[unknown, "construction_year_rule"] = fill.rules(b["archetype_id"])[unknown]
    return b


def year_fill(cohorts: pd.DataFrame, fallback: int | None = None) -> YearFill:
    """The :class:`YearFill` of a run from its cohort sums: per archetype the median year
    of its buildings with a known year (medians over buildings, each row standing for
    ``building_count`` of them, rounded to a whole year), else that of all buildings.

    ``cohorts`` has ``archetype_id``, ``construction_year`` (NA where unknown) and
    ``building_count`` (additive sums, :class:`mfa.core.sums.Sums`).

    Raises
    ------
    InputDataError
        When no building has a known year and no ``fallback`` is given.
    """
    from mfa.errors import InputDataError

    year = cohorts["construction_year"].astype("Float64")
    count = cohorts["building_count"].to_numpy(dtype=np.int64)
    known = year.notna().to_numpy()
    y = year.to_numpy(dtype=float, na_value=np.nan)
    overall = _weighted_median(y[known], count[known])
    if np.isnan(overall):
        if fallback is None:
            raise InputDataError(
                "[dynamics]: no building has a construction year, so the cohorts of the "
                "stock model are unknown; use a source with years, or set [dynamics] "
                "fallback_construction_year = YYYY (a stated guess), or remove [dynamics]"
            )
        return YearFill({}, int(fallback), "fallback_construction_year (no year observed)")
    arch = cohorts["archetype_id"].astype(str).to_numpy(object)
    by_archetype = {}
    for a in np.unique(arch[known]):
        mine = known & (arch == a)
        by_archetype[str(a)] = int(np.round(_weighted_median(y[mine], count[mine])))
    return YearFill(by_archetype, int(np.round(overall)), "median of the archetype, else of all")


def known_years_fill(
    years: list[pd.DataFrame], statistics: tuple[pd.Series, pd.Series], fallback: int | None
) -> YearFill | None:
    """The run's :class:`YearFill` from the known years of every batch
    (:func:`mfa.buildings.cohorts.year_counts`), by the archetype each building has after
    the cohort-peer rule (:func:`mfa.buildings.cohorts.peer_archetypes`), so it equals
    :func:`year_fill` of the run's cohort sums. None when no building has a year and no
    ``fallback`` is stated."""
    from mfa.buildings.cohorts import peer_archetypes

    known = pd.concat(years, ignore_index=True) if years else pd.DataFrame()
    columns = ["archetype_id", "construction_year", "building_count"]
    if known.empty:
        return None if fallback is None else year_fill(pd.DataFrame(columns=columns), fallback)
    cols = ["function", "structure", "structure_source", "construction_year"]
    known = known.groupby(cols, sort=True, dropna=False)["building_count"].sum().reset_index()
    cohorts = pd.DataFrame(
        {
            "archetype_id": peer_archetypes(known, statistics),
            "construction_year": known["construction_year"].astype("Int64"),
            "building_count": known["building_count"].astype("int64"),
        }
    )
    return year_fill(cohorts, fallback)


def impute_cohort_years(
    cohorts: pd.DataFrame, fallback: int | None = None, fill: YearFill | None = None
) -> tuple[pd.Series, int, YearFill]:
    """Construction years of cohort rows with gaps filled by ``fill`` (the run's, made in
    its buildings step), else by :func:`year_fill` of the rows; returns the years, how
    many buildings got one and the fill used."""
    fill = fill if fill is not None else year_fill(cohorts, fallback)
    years = fill.fill(cohorts["archetype_id"], cohorts["construction_year"])
    unknown = cohorts["construction_year"].isna().to_numpy()
    count = cohorts["building_count"].to_numpy(dtype=np.int64)
    return (
        pd.Series(years, index=cohorts.index).astype("int64"),
        int(count[unknown].sum()),
        fill,
    )


def impute_years(buildings: pd.DataFrame, fallback: int | None = None) -> tuple[pd.Series, int]:
    """Construction years with gaps filled by the median year of the same archetype
    (else of all buildings); returns the years and how many were filled."""
    rows = pd.DataFrame(
        {
            "archetype_id": buildings["archetype_id"],
            "construction_year": buildings["construction_year"],
            "building_count": 1,
        }
    )
    years, n, _ = impute_cohort_years(rows, fallback)
    return years, n


def district_flows(
    buildings: pd.DataFrame,
    lifetimes: dict[str, Lifetime],
    base_year: int,
    horizon: int,
    scenario: ScenarioLevers,
    intensity_kg_m2: pd.DataFrame,
    draws: np.ndarray,
    draw_archetypes: list[str],
    percentiles: tuple[float, ...],
    cohorts: np.ndarray | None = None,
    total_gfa_m2: float | None = None,
    map_parts: PartsMap | None = None,
) -> pd.DataFrame:
    """Stock, inflow and outflow per district, year and material for one scenario.

    Each district's rows depend only on its own buildings and on ``cohorts`` and
    ``total_gfa_m2``: passing the values of a whole city computes the rows of some of its
    districts exactly as for the whole city (incremental runs recompute only those).

    Parameters
    ----------
    buildings
        ``district_id``, ``archetype_id``, ``construction_year`` (no gaps, ≤ base year)
        and ``gfa_m2`` of today's buildings.
    cohorts
        Construction years of today's stock (sorted, unique), default those of
        ``buildings``.
    total_gfa_m2
        Today's floor area (m²) that new construction is spread over in proportion to
        each district's share, default that of ``buildings``.
    lifetimes
        Lifetime per function (RS, RM, NR).
    intensity_kg_m2
        Central intensities, archetype × material (kg/m²).
    draws, draw_archetypes
        Monte Carlo intensity draws (draws × archetypes × materials, kg/m²) and their
        archetype order.
    map_parts
        The run's executor for the percentiles (see
        :func:`~mfa.stocks.uncertainty.group_quantiles`); None: in this thread.

    Returns
    -------
    pandas.DataFrame
        One row per district × year × material (plus ``mass``, the total): floor area
        ``stock_m2``, ``inflow_m2``, ``outflow_m2``; tonnes ``stock_t``, ``inflow_t``,
        ``outflow_t`` and their percentiles ``*_t_pXX``. Years run from the base year
        (today's observed stock, no flows) to the horizon.
    """
    b = buildings[["district_id", "archetype_id", "construction_year", "gfa_m2"]]
    pairs = b[["district_id", "archetype_id"]].drop_duplicates()
    districts = sorted(b["district_id"].unique())
    if scenario.construction_m2_per_year > 0 and scenario.stock_growth_per_year is None:
        extra = pd.DataFrame(
            {"district_id": districts, "archetype_id": scenario.construction_archetype}
        )
        pairs = pd.concat([pairs, extra]).drop_duplicates()
    pairs = pairs.sort_values(["district_id", "archetype_id"]).reset_index(drop=True)
    if cohorts is None:
        cohorts = np.sort(b["construction_year"].unique())
    # sums in building order with np.add.at, one element after the other: a district's
    # sums are the same bits whichever other districts are in ``buildings`` (pandas'
    # grouped sums are not)
    gfa = b["gfa_m2"].to_numpy(dtype=float)
    pair_index = pd.MultiIndex.from_frame(pairs)
    row = pair_index.get_indexer(pd.MultiIndex.from_frame(b[["district_id", "archetype_id"]]))
    col = np.searchsorted(cohorts, b["construction_year"].to_numpy())
    s0 = np.zeros((len(pairs), len(cohorts)))
    np.add.at(s0, (row, col), gfa)
    n_years = horizon - base_year + 1
    new = np.zeros((len(pairs), n_years - 1))
    if scenario.construction_m2_per_year > 0:
        # spread over districts in proportion to their floor area today
        total = float(b["gfa_m2"].sum()) if total_gfa_m2 is None else total_gfa_m2
        d_codes = pd.Index(districts).get_indexer(b["district_id"])
        by_district = np.zeros(len(districts))
        np.add.at(by_district, d_codes, gfa)
        share = pd.Series(by_district / total, index=districts)
        is_new = (pairs["archetype_id"] == scenario.construction_archetype).to_numpy()
        new[is_new] = (
            share.reindex(pairs.loc[is_new, "district_id"]).to_numpy()[:, None]
            * scenario.construction_m2_per_year
        )
    stock = np.zeros((len(pairs), n_years))
    inflow = np.zeros_like(stock)
    outflow = np.zeros_like(stock)
    function = pairs["archetype_id"].str.split("-").str[0].to_numpy()
    for f, lt in lifetimes.items():
        rows = function == f
        if not rows.any():
            continue
        fc = forecast_stock(
            s0[rows],
            cohorts,
            base_year,
            horizon,
            lt.scaled(scenario.lifetime_factor),
            construction_m2=None if scenario.stock_growth_per_year is not None else new[rows],
            extra_demolition_rate=scenario.extra_demolition_rate,
            stock_growth_per_year=scenario.stock_growth_per_year,
        )
        stock[rows], inflow[rows], outflow[rows] = fc.stock_m2, fc.inflow_m2, fc.outflow_m2
    check_stock_balance(stock, inflow, outflow, rtol=1e-9, initial_stock=stock[:, 0])

    # district × archetype × year arrays, then tonnes
    d_idx = pd.Index(districts).get_indexer(pairs["district_id"])
    a_idx = pd.Index(draw_archetypes).get_indexer(pairs["archetype_id"])
    if (a_idx < 0).any():
        raise ValueError("an archetype of the buildings has no intensity draws")
    n_d, n_a = len(districts), len(draw_archetypes)
    materials = list(intensity_kg_m2.columns)
    central = intensity_kg_m2.reindex(draw_archetypes).fillna(0.0).to_numpy(dtype=float)
    years = np.arange(base_year, horizon + 1)
    names = [*materials, "mass"]
    frames = []
    for kind, m2 in (("stock", stock), ("inflow", inflow), ("outflow", outflow)):
        cube = np.zeros((n_d, n_years, n_a))
        np.add.at(cube, (d_idx, slice(None), a_idx), m2)
        t_central = np.zeros((n_d, n_years, len(names)))
        t_central[..., :-1] = np.matmul(cube, central) / 1000.0
        t_central[..., -1] = sum_last(t_central[..., :-1])
        q = np.zeros((len(percentiles), n_d * n_years, len(names)))
        if cube.any():  # (none: all 0 t, e.g. no construction in this scenario)
            q, _ = group_quantiles(
                cube.reshape(n_d * n_years, n_a), draws, percentiles, map_parts=map_parts
            )
        area = sum_last(cube)  # d × t
        idx = pd.MultiIndex.from_product(
            [districts, years, names], names=["district_id", "year", "material"]
        )
        cols = {f"{kind}_m2": np.repeat(area.ravel(), len(names)), f"{kind}_t": t_central.ravel()}
        for i, qq in enumerate(percentiles):
            cols[f"{kind}_t_p{round(qq):02d}"] = q[i].ravel()
        frames.append(pd.DataFrame(cols, index=idx))
    out = pd.concat(frames, axis=1).reset_index()
    out.insert(0, "scenario", scenario.name)
    return out

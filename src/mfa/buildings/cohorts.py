"""Cohort statistics: the run-wide values that fill imputed structures and floor counts (pure).

Where a building's structure or floor count fell back to a per-function default, it
becomes the most frequent observed structure (the median observed floor count) of the
buildings with the same function and construction decade in the run
(:func:`mfa.buildings.quality.impute_from_cohort_peers`). The *counts* behind these
statistics add up over any split of the buildings (:func:`cohort_counts`), so the engine
sums them batch by batch and forms the run-wide statistics once
(:func:`cohort_statistics`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = [
    "COHORT_COLUMNS",
    "cohort_counts",
    "cohort_keys",
    "cohort_statistics",
    "cohort_targets",
    "peer_archetypes",
    "year_counts",
]

#: Columns of the cohort count table (``part`` names the group the counts are of).
COHORT_COLUMNS = ("part", "attribute", "cohort", "structure", "floors", "count")


def cohort_keys(buildings: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """``function|decade`` per building (decade ``?`` when the year is missing) and decade."""
    decade = (
        (buildings["construction_year"] // 10 * 10).astype("Int64").astype("string").fillna("?")
    )
    return buildings["function"].astype("string") + "|" + decade, decade


def cohort_counts(buildings: pd.DataFrame, part: pd.Series) -> pd.DataFrame:
    """Counts of observed structures and floor counts per part and cohort (additive).

    Rows with ``attribute`` = ``structure`` count buildings whose structure is observed
    (not imputed) per (part, cohort, structure); ``floors`` rows count observed floor
    counts per (part, cohort, floors). A missing value counts with ``<NA>``/NaN: it is a
    peer (for the minimum number of peers) but has no vote.
    """
    key, _ = cohort_keys(buildings)
    frames = []
    for attribute, col in (("structure", "structure"), ("floors", "floors")):
        observed = (buildings[f"{col}_source"] != "imputed").to_numpy(bool)
        values = (
            buildings[col].astype("string").to_numpy(dtype=object)
            if attribute == "structure"
            else buildings[col].astype("Float64").to_numpy(dtype="float64", na_value=np.nan)
        )
        sub = pd.DataFrame(
            {
                "part": part.astype("string").to_numpy(dtype=object)[observed],
                "cohort": key.to_numpy(dtype=object)[observed],
                "value": values[observed],
            }
        )
        counts = sub.groupby(["part", "cohort", "value"], dropna=False, sort=True).size()
        counts = counts.reset_index(name="count")
        frame = pd.DataFrame(
            {
                "part": counts["part"].astype("string"),
                "attribute": pd.array([attribute] * len(counts), dtype="string"),
                "cohort": counts["cohort"].astype("string"),
                "structure": (
                    counts["value"].astype("string")
                    if attribute == "structure"
                    else pd.array([pd.NA] * len(counts), dtype="string")
                ),
                "floors": (
                    pd.to_numeric(counts["value"], errors="coerce").astype("float64")
                    if attribute == "floors"
                    else np.full(len(counts), np.nan)
                ),
                "count": counts["count"].astype("int64"),
            }
        )
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)[list(COHORT_COLUMNS)]


def cohort_statistics(counts: pd.DataFrame, min_peers: int = 5) -> tuple[pd.Series, pd.Series]:
    """Run-wide cohort statistics from the summed counts of every part.

    Returns
    -------
    structure, floors
        Per cohort with at least ``min_peers`` observed peers: the most frequent observed
        structure (ties: the first code in sort order), and the median observed floor
        count rounded to a whole number (NaN values skipped; the mean of the two middle
        values for an even number, as :meth:`pandas.Series.median`).
    """
    total = counts.groupby(["attribute", "cohort", "structure", "floors"], dropna=False)[
        "count"
    ].sum()
    total = total.reset_index()
    s = total[total["attribute"] == "structure"]
    peers = s.groupby("cohort")["count"].sum()
    votes = s[s["structure"].notna()].sort_values(["cohort", "structure"], kind="stable")
    best = votes.loc[votes.groupby("cohort", sort=True)["count"].idxmax()]
    structure = best.set_index("cohort")["structure"].astype("string")
    structure = structure[peers.reindex(structure.index) >= min_peers]

    f = total[total["attribute"] == "floors"]
    peers = f.groupby("cohort")["count"].sum()
    v = f[f["floors"].notna()].sort_values(["cohort", "floors"], kind="stable")
    n = v.groupby("cohort")["count"].transform("sum").to_numpy()
    upto = v.groupby("cohort")["count"].cumsum().to_numpy()
    before = upto - v["count"].to_numpy()
    lo_pos, hi_pos = (n - 1) // 2, n // 2  # 0-based positions of the middle values
    holds_lo = (before <= lo_pos) & (lo_pos < upto)
    holds_hi = (before <= hi_pos) & (hi_pos < upto)
    cohorts = v["cohort"].to_numpy()
    lo = pd.Series(v["floors"].to_numpy()[holds_lo], index=cohorts[holds_lo])
    hi = pd.Series(v["floors"].to_numpy()[holds_hi], index=cohorts[holds_hi])
    median = ((lo + hi.reindex(lo.index)) / 2).round()
    floors = median[peers.reindex(median.index).to_numpy() >= min_peers].astype("Float64")
    floors.index = floors.index.astype("string")
    return structure, floors


def cohort_targets(
    buildings: pd.DataFrame, statistics: tuple[pd.Series, pd.Series]
) -> tuple[pd.Series, pd.Series]:
    """Which buildings get their structure and their floor count from cohort peers.

    Those whose value is imputed (a per-function default), whose construction decade is
    known, and whose cohort has statistics. Boolean Series aligned with ``buildings``.
    """
    structure, floors = statistics
    key, decade = cohort_keys(buildings)
    known = decade != "?"
    s = (buildings["structure_source"] == "imputed") & key.isin(structure.index) & known
    f = (buildings["floors_source"] == "imputed") & key.isin(floors.index) & known
    return s.fillna(False).astype(bool), f.fillna(False).astype(bool)


def year_counts(buildings: pd.DataFrame) -> pd.DataFrame:
    """Buildings with a known construction year per (function, structure, structure
    source, year): additive over batches, and enough to know their archetype after the
    cohort-peer rule (:func:`peer_archetypes`)."""
    known = buildings["construction_year"].notna().to_numpy(bool)
    cols = ["function", "structure", "structure_source", "construction_year"]
    sub = buildings.loc[known, cols].astype(
        {c: "string" for c in cols[:3]} | {"construction_year": "Int64"}
    )
    counts = sub.groupby(cols, sort=True, dropna=False).size().rename("building_count")
    return counts.reset_index()


def peer_archetypes(counts: pd.DataFrame, statistics: tuple[pd.Series, pd.Series]) -> pd.Series:
    """The archetype id of each row of :func:`year_counts` (summed over the run) after
    the cohort-peer rule fills imputed structures, as
    :func:`mfa.buildings.quality.impute_from_cohort_peers` gives it."""
    rows = counts.assign(floors_source="register")  # floors play no part in the archetype
    s_todo, _ = cohort_targets(rows, statistics)
    key, _ = cohort_keys(rows)
    structure = rows["structure"].astype("string").copy()
    structure[s_todo] = key[s_todo].map(statistics[0]).astype("string")
    return (rows["function"].astype("string") + "-" + structure).astype("string")

"""Parts of a run for incremental recompute: district split, part digests, cohort statistics.

Pure. A *part* is the set of normalised building records whose bounding-box centre lies
in one district (``_unassigned`` outside every district or without geometry). Everything
mfa computes per building (geometry repairs, plausibility repairs, raster heights, tonnes,
building percentiles) depends only on the record itself and on things that are the same
for the whole run (model tables, settings, the district polygons, the run year, the code)
— with two exceptions, both handled here:

- duplicate footprints are detected among records with the same geometry, which share a
  bounding box and so a part;
- imputation from cohort peers (:func:`mfa.buildings.quality.impute_from_cohort_peers`)
  uses run-wide statistics: the most frequent observed structure and the median observed
  floor count per function and construction decade. Their *counts* add up over parts
  (:func:`cohort_counts`), so the run-wide statistics (:func:`cohort_statistics`) can be
  formed from the stored counts of unchanged parts and the new counts of changed ones,
  and their digest (:func:`cohort_digest`) says whether a part's imputed values may
  have moved.

So a part whose records (:func:`part_digests`), run-wide inputs and cohort statistics are
unchanged has the same result rows as in the previous run, and can reuse them.
"""

from __future__ import annotations

import hashlib

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from mfa.buildings.districts import PointLocator

__all__ = [
    "COHORT_COLUMNS",
    "NO_DISTRICT",
    "cohort_counts",
    "cohort_digest",
    "cohort_keys",
    "cohort_statistics",
    "cohort_targets",
    "part_digests",
    "split_parts",
]

#: The part of records outside every district, or without a geometry.
NO_DISTRICT = "_unassigned"

#: Columns of the cohort count table.
COHORT_COLUMNS = ("part", "attribute", "cohort", "structure", "floors", "count")


def split_parts(geometry: gpd.GeoSeries, districts: gpd.GeoDataFrame | None) -> pd.Series:
    """The part (district id) of each record: the district holding its bounding-box centre.

    The bounding box works for invalid and null geometries (before any repair), and equal
    geometries fall in the same part. Without districts every record is in one part.

    Returns
    -------
    pandas.Series
        String dtype, aligned with ``geometry``; ``_unassigned`` where no district holds
        the centre or the geometry is null or empty.
    """
    if districts is None:
        return pd.Series(NO_DISTRICT, index=geometry.index, dtype="string")
    b = shapely.bounds(geometry.values)  # NaN for null and empty geometries
    x, y = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
    known = ~np.isnan(x)
    where = np.full(len(x), -1, dtype=np.int64)
    where[known] = PointLocator(districts.geometry.values).locate(x[known], y[known])
    ids = districts["district_id"].astype("string").to_numpy(dtype=object)
    part = np.where(where >= 0, ids[np.maximum(where, 0)], NO_DISTRICT)
    return pd.Series(part, index=geometry.index, dtype="string")


def part_digests(records: gpd.GeoDataFrame, part: pd.Series) -> pd.Series:
    """sha256 per part over its records in order: every column's value and the geometry WKB.

    Per row, two independent 64-bit hashes of the attribute values (pandas' hash with two
    keys); per part, sha256 over those, the WKB lengths and the WKB bytes, so a change of
    any value, of the geometry, of the order or of the set of records in a part changes
    its digest.
    """
    attrs = pd.DataFrame(records.drop(columns=records.geometry.name))
    cols = attrs.assign(_cols="|".join(map(str, attrs.columns)))
    rows = np.stack(
        [
            pd.util.hash_pandas_object(cols, index=False, hash_key=key).to_numpy()
            for key in ("mfa-part-digest1", "mfa-part-digest2")  # 16 bytes each
        ],
        axis=1,
    )
    wkb = shapely.to_wkb(records.geometry.values)  # None for a missing geometry
    wkb[pd.isna(wkb)] = b""
    lengths = np.fromiter((len(w) for w in wkb), dtype=np.int64, count=len(wkb))
    codes, names = pd.factorize(part.astype("string").to_numpy(dtype=object), sort=True)
    order = np.argsort(codes, kind="stable")
    starts = np.searchsorted(codes[order], np.arange(len(names) + 1))
    out: dict[str, str] = {}
    for i, name in enumerate(names):  # one per part
        rows_i = order[starts[i] : starts[i + 1]]
        h = hashlib.sha256(rows[rows_i].tobytes())
        h.update(lengths[rows_i].tobytes())
        h.update(b"".join(wkb[rows_i]))
        out[str(name)] = h.hexdigest()
    return pd.Series(out, dtype="string").sort_index()


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


def cohort_digest(structure: pd.Series, floors: pd.Series) -> str:
    """sha256 of the run-wide cohort statistics (changes when any imputed value may move)."""
    h = hashlib.sha256()
    for name, s in (("structure", structure), ("floors", floors)):
        h.update(name.encode())
        h.update(s.sort_index().astype("string").to_json().encode())
    return h.hexdigest()

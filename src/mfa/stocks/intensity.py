"""Material-intensity tables (kg of material per m² of gross floor area).

Tables are long-format (one row per region × function × structure × material) with a
percentile range; see ``config/intensities/CODEBOOK.md``. These functions are pure: they
check a loaded table and turn one slice of it into an archetype × material matrix.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from mfa.errors import ConfigError
from mfa.schema import FUNCTIONS, STRUCTURES

__all__ = ["INTENSITY_COLUMNS", "PERCENTILES", "check_intensity_table", "intensity_matrix"]

#: Percentile columns, in increasing order (kg/m²).
PERCENTILES = ("p00", "p05", "p25", "p50", "p75", "p95", "p100")
#: Columns every intensity table must have.
INTENSITY_COLUMNS = ("region", "function", "structure", "material", "unit", *PERCENTILES, "source")


def _row(where: str, i: int) -> str:
    return f"{where} line {i + 2}"  # header is line 1


def check_intensity_table(table: pd.DataFrame, where: str, materials: Iterable[str]) -> None:
    """Check an intensity table: columns, unit, codes, non-negative ordered percentiles.

    Raises
    ------
    ConfigError
        Naming the file (``where``), the line and the fix.
    """
    missing = [c for c in INTENSITY_COLUMNS if c not in table.columns]
    if missing:
        raise ConfigError(f"{where}: missing columns {missing}; see config/intensities/CODEBOOK.md")
    materials = set(materials)
    checks = [
        (table["unit"] != "kg/m2", "unit must be kg/m2"),
        (~table["function"].isin(FUNCTIONS), f"function must be one of {FUNCTIONS}"),
        (~table["structure"].isin(STRUCTURES), f"structure must be one of {STRUCTURES}"),
        (~table["material"].isin(materials), "material is not in the vocabulary (materials.toml)"),
        (table["source"].isna() | (table["source"].astype(str).str.len() == 0), "source is empty"),
    ]
    for bad, what in checks:
        bad = bad.to_numpy(dtype=bool)
        if bad.any():
            i = int(np.argmax(bad))
            raise ConfigError(f"{_row(where, i)}: {what}; fix that row")
    values = table[list(PERCENTILES)].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float)
    nonnum = np.isnan(values).any(axis=1)
    if nonnum.any():
        i = int(np.argmax(nonnum))
        raise ConfigError(f"{_row(where, i)}: percentiles must be numbers; fill them in")
    if (values < 0).any():
        i = int(np.argmax((values < 0).any(axis=1)))
        raise ConfigError(f"{_row(where, i)}: negative intensity; intensities are kg/m² >= 0")
    unordered = (np.diff(values, axis=1) < 0).any(axis=1)
    if unordered.any():
        i = int(np.argmax(unordered))
        raise ConfigError(
            f"{_row(where, i)}: percentiles are not in increasing order "
            f"({', '.join(PERCENTILES)}); fix that row"
        )
    key = ["region", "function", "structure", "material"]
    dup = table.duplicated(key).to_numpy()
    if dup.any():
        i = int(np.argmax(dup))
        raise ConfigError(f"{_row(where, i)}: duplicate row for {key}; keep one")


def intensity_matrix(
    table: pd.DataFrame,
    region: str,
    statistic: str,
    materials: list[str],
    archetypes: Iterable[str],
    where: str = "intensity table",
) -> pd.DataFrame:
    """Intensities (kg/m²) as a matrix: rows ``archetype_id`` (``RS-M``), columns materials.

    Every archetype in ``archetypes`` must have a row for every material in ``region``.
    """
    sub = table[table["region"] == region]
    if sub.empty:
        regions = ", ".join(sorted(table["region"].unique())[:40])
        raise ConfigError(f"{where}: no rows for region {region!r}; use one of: {regions}")
    sub = sub.assign(archetype_id=sub["function"] + "-" + sub["structure"])
    matrix = sub.pivot(index="archetype_id", columns="material", values=statistic)
    needed = sorted(set(archetypes))
    for m in materials:
        if m not in matrix.columns:
            raise ConfigError(f"{where}: region {region} has no rows for material {m!r}")
    matrix = matrix.reindex(index=needed, columns=materials)
    holes = matrix.isna()
    if holes.to_numpy().any():
        a, m = holes.stack()[holes.stack()].index[0]
        raise ConfigError(
            f"{where}: no {statistic} intensity for archetype {a}, material {m} in region "
            f"{region}; add a row (use 0 for 'not applicable')"
        )
    return matrix.astype(float)


def intensity_percentiles(
    table: pd.DataFrame, region: str, materials: list[str], where: str = "intensity table"
) -> tuple[list[str], np.ndarray]:
    """All archetypes of ``region`` (sorted) and their percentiles p00…p100 (kg/m²).

    Returns the archetype ids and an array archetypes × materials × 7. Using every
    archetype of the table, not only those present in a run, keeps the random draws of an
    archetype independent of which other buildings a run contains.
    """
    sub = table[(table["region"] == region) & table["material"].isin(materials)]
    if sub.empty:
        raise ConfigError(f"{where}: no rows for region {region!r} and materials {materials}")
    arch = (sub["function"] + "-" + sub["structure"]).astype(str)
    archetypes = sorted(arch.unique())
    full = pd.MultiIndex.from_product([archetypes, materials], names=["archetype_id", "material"])
    values = (
        sub.assign(archetype_id=arch)
        .set_index(["archetype_id", "material"])[list(PERCENTILES)]
        .reindex(full)
    )
    if values.isna().to_numpy().any():
        a, m = values[values.isna().any(axis=1)].index[0]
        raise ConfigError(
            f"{where}: no percentiles for archetype {a}, material {m} in region {region}; "
            "add a row (use 0 for 'not applicable')"
        )
    array = values.to_numpy(dtype=float).reshape(len(archetypes), len(materials), len(PERCENTILES))
    return archetypes, array

"""Read the Dutch BAG register: pand outlines and verblijfsobjecten from any OGR-readable
file (a PDOK OGC API snapshot is GeoJSON), checked, in the pipeline CRS."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import pandas as pd

from mfa.buildings.archetypes import ArchetypeRules
from mfa.buildings.bag import BAG, BAG_PAND_REQUIRED, BAG_UNIT_REQUIRED, normalise_bag
from mfa.config import RegisterSource, UnitSource
from mfa.errors import InputDataError
from mfa.io.files import check_input_file, missing_columns
from mfa.io.safeopen import read_vector
from mfa.numbers import parse_numbers

__all__ = ["buildings_from_bag", "read_bag"]


def _read(path: Path | None, layer: str | None, role: str, key: str) -> tuple[Path, pd.DataFrame]:
    if path is None:  # a pulled source before its first pull
        raise InputDataError(f"{key}: no file yet; run `mfa pull` (or give path)")
    path = check_input_file(Path(path), role, key)
    return path, read_vector(path, layer, role, key)


def _check_columns(df: pd.DataFrame, required: tuple[str, ...], where: str, what: str) -> None:
    missing, hints = missing_columns(df.columns, required)
    if missing:
        raise InputDataError(
            f"{where}: missing BAG {what} fields {missing}"
            + (f" (renamed? {hints})" if hints else "")
            + f"; a {what} file needs {', '.join(required)} (PDOK BAG OGC API names)"
        )


def _numbers(df: pd.DataFrame, col: str, where: str) -> pd.Series:
    """``col`` as numbers (text read by :func:`mfa.numbers.parse_numbers`); a value that is
    not one is an error naming the feature."""
    raw = df[col]
    if pd.api.types.is_numeric_dtype(raw):
        return raw.astype("Float64")
    text = raw.astype("string").str.strip()
    num, bad, ambiguous = parse_numbers(text, "auto")
    wrong = bad | ambiguous
    if wrong.any():
        pos = int(wrong.to_numpy().argmax())
        raise InputDataError(
            f"{where} feature {pos + 1} ({BAG.ID} {df[BAG.ID].iloc[pos]}): {col} = "
            f"{text.iloc[pos]!r} is not a number ({int(wrong.sum())} such features); fix it "
            "or leave it empty"
        )
    return num.astype("Float64")


def read_bag(
    register: RegisterSource, units: UnitSource, crs: str
) -> tuple[gpd.GeoDataFrame, pd.DataFrame]:
    """The pand records (outlines in ``crs``) and the verblijfsobject records (no geometry
    needed: they link to their panden), checked.

    Raises
    ------
    InputDataError
        A missing file or field, a value that is not a number, a file without a CRS.
    """
    path, pand = _read(register.path, register.layer, "BAG pand file", "sources.register.path")
    where = f"{path}" + (f" layer {register.layer}" if register.layer else "")
    _check_columns(pand, BAG_PAND_REQUIRED, where, "pand")
    if pand.crs is None:
        if register.crs is None:
            raise InputDataError(f"{where}: no CRS; set sources.register.crs or write it")
        pand = pand.set_crs(register.crs)
    pand[BAG.YEAR] = _numbers(pand, BAG.YEAR, where)
    upath, unit_df = _read(
        units.path, units.layer, "BAG verblijfsobject file", "sources.units.path"
    )
    uwhere = f"{upath}" + (f" layer {units.layer}" if units.layer else "")
    _check_columns(unit_df, (*BAG_UNIT_REQUIRED, units.link_field), uwhere, "verblijfsobject")
    unit_df = pd.DataFrame(unit_df.drop(columns=unit_df.geometry.name))
    unit_df[BAG.AREA] = _numbers(unit_df, BAG.AREA, uwhere)
    return pand.to_crs(crs), unit_df


def buildings_from_bag(
    register: RegisterSource, units: UnitSource, crs: str, rules: ArchetypeRules
) -> tuple[gpd.GeoDataFrame, pd.DataFrame, dict[str, int]]:
    """Read a BAG register and normalise it: canonical buildings, left-out records, and the
    record counts (``panden``, ``units``, ``units_counted``) for the run's accounting."""
    pand, units_df = read_bag(register, units, crs)
    buildings, dropped = normalise_bag(
        pand, units_df, rules, register.existing_status, units.link_field
    )
    units_dropped = int((dropped["stage"] == "units").sum())
    counts = {
        "panden": len(pand),
        "units": len(units_df),
        "units_counted": len(units_df) - units_dropped,
    }
    return buildings, dropped, counts

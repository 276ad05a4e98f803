"""Lookup tables for the scale benchmark's peers, written from mfa's ``config/`` (untimed).

Every peer engine reads these four small Parquet files instead of mfa's config, so that
peers and mfa apply the same rules (see ``benchmarks/SPEC.md``):

``use_function.parquet``
    ``code`` (BBR use code) → ``function``. Only codes that map to a function: excluded
    codes (carports, greenhouses, ``999`` …) are absent, so an inner join drops them
    together with unknown codes.
``wall_structure.parquet``
    ``code`` (BBR wall code) → ``structure``. Codes without a structure (``80`` "none",
    ``90`` "other") are absent: a left join gives null and the function default applies.
``function_defaults.parquet``
    ``function`` → ``default_floors`` (float) and ``default_structure``.
``intensity.parquet``
    Wide: ``archetype_id`` (``RS-M``) and one float column per material (kg/m²), in the
    order of ``config/materials.toml``. The material columns name the materials.

Codes are clean strings exactly as the synthetic register (``mfa synth``) writes them:
``"120"``, ``"1"`` (never ``"120.0"`` or ``120``); keys are normalised with mfa's
``_code_str`` so a config edit cannot slip in a float-looking code.

Run: ``python benchmarks/lookup.py --output outputs/bench/lookups``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from mfa.buildings.register import _code_str
from mfa.io.tables import load_archetype_rules, load_intensity_table, load_materials
from mfa.schema import FUNCTIONS, STRUCTURES
from mfa.stocks.intensity import intensity_matrix

__all__ = ["LOOKUP_FILES", "materials_of", "write_lookups"]

#: File names written by :func:`write_lookups`.
LOOKUP_FILES = (
    "use_function.parquet",
    "wall_structure.parquet",
    "function_defaults.parquet",
    "intensity.parquet",
)


def _code_table(mapping: pd.Series, value: str) -> pa.Table:
    codes = _code_str(pd.Series(mapping.index, dtype="string"))
    if codes.isna().any() or codes.duplicated().any():
        raise ValueError(f"code → {value} table has empty or duplicate codes after normalising")
    return pa.table(
        {
            "code": pa.array(codes.tolist(), pa.string()),
            value: pa.array(mapping.astype(str).tolist(), pa.string()),
        }
    )


def write_lookups(
    config_dir: Path,
    output: Path,
    region: str = "OECD_EU15",
    statistic: str = "p50",
) -> Path:
    """Write the four lookup tables (see module doc) to ``output``; return ``output``."""
    config_dir, output = Path(config_dir), Path(output)
    materials = load_materials(config_dir / "materials.toml")
    rules = load_archetype_rules(config_dir / "archetypes")
    table = load_intensity_table(config_dir / "intensities" / "rasmi_2024.csv", materials)
    archetypes = [f"{f}-{s}" for f in FUNCTIONS for s in STRUCTURES]
    matrix = intensity_matrix(table, region, statistic, materials, archetypes)

    output.mkdir(parents=True, exist_ok=True)
    pq.write_table(_code_table(rules.bbr_use_function, "function"), output / "use_function.parquet")
    pq.write_table(
        _code_table(rules.bbr_wall_structure, "structure"), output / "wall_structure.parquet"
    )
    pq.write_table(
        pa.table(
            {
                "function": pa.array(list(FUNCTIONS), pa.string()),
                "default_floors": pa.array(
                    [float(rules.floors_by_function[f]) for f in FUNCTIONS], pa.float64()
                ),
                "default_structure": pa.array(
                    [rules.structure_by_function[f] for f in FUNCTIONS], pa.string()
                ),
            }
        ),
        output / "function_defaults.parquet",
    )
    columns: dict[str, pa.Array] = {"archetype_id": pa.array(list(matrix.index), pa.string())}
    for m in materials:
        columns[m] = pa.array(matrix[m].to_numpy(dtype="float64"), pa.float64())
    pq.write_table(pa.table(columns), output / "intensity.parquet")
    return output


def materials_of(lookups: Path) -> list[str]:
    """Material ids, in config order, from the columns of ``intensity.parquet``."""
    names = pq.read_schema(Path(lookups) / "intensity.parquet").names
    return [n for n in names if n != "archetype_id"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", type=Path, default=Path("config"), help="mfa's config/ folder")
    ap.add_argument("--output", type=Path, required=True, help="folder to write the tables to")
    ap.add_argument("--region", default="OECD_EU15")
    ap.add_argument("--statistic", default="p50")
    a = ap.parse_args()
    out = write_lookups(a.config, a.output, a.region, a.statistic)
    print(f"lookup tables written to {out}: {', '.join(LOOKUP_FILES)}")


if __name__ == "__main__":
    main()

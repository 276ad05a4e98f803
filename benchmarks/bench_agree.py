"""What the scale benchmark compares (``benchmarks/SPEC.md`` "What is compared").

- Peers against each other, exactly: they compute the same stock-only job, so building
  count, per-district ``n_buildings``, total and per-material ``mass_t`` and per-district
  ``mass_t`` must agree to 1e-9 relative with the first peer that ran (:func:`summarise`,
  :func:`compare`).
- Each peer against mfa's published run, as far as comparable (:func:`versus_mfa`): mfa
  applies more rules (cohort imputation, plausibility repairs, geometry cleaning), so the
  set of building ids and the totals are printed, not required to be equal; only a
  building count that differs by more than :data:`COUNT_RTOL` fails.
- Every GeoParquet compared must carry a CRS equal to the input's.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyproj import CRS

#: Relative tolerance of the exact peer-vs-peer check.
RTOL = 1e-9
#: Largest accepted relative difference of a peer's building count from mfa's: on the
#: synthetic city every record a peer keeps is also one mfa keeps (the rules mfa adds
#: drop nothing there), so any difference is a bug; the tolerance leaves room for
#: geometry cleaning on other inputs.
COUNT_RTOL = 0.001


@dataclass
class Summary:
    """What the exact peer check compares of one engine's outputs."""

    n_buildings: int
    totals: dict[str, float]
    #: district_id → (n_buildings, mass_t)
    districts: dict[str, tuple[int, float]]
    problems: list[str] = field(default_factory=list)


def crs_problem(path: Path, expected_epsg: int | None) -> str | None:
    """Why the GeoParquet ``path`` has no CRS or another one than the input's (else None)."""
    meta = pq.read_metadata(path).metadata or {}
    if b"geo" not in meta:
        return f"{path.name}: no GeoParquet 'geo' metadata"
    geo = json.loads(meta[b"geo"])
    crs = geo.get("columns", {}).get(geo.get("primary_column"), {}).get("crs")
    if crs is None:
        return f"{path.name}: no CRS in the 'geo' metadata (readers would assume lon/lat)"
    epsg = CRS.from_user_input(crs).to_epsg()
    if epsg != expected_epsg:
        return f"{path.name}: CRS is EPSG:{epsg}, the input's is EPSG:{expected_epsg}"
    return None


def input_epsg(city: Path) -> int | None:
    """EPSG code of the register's CRS."""
    geo = json.loads((pq.read_metadata(city / "register.parquet").metadata or {})[b"geo"])
    return CRS.from_user_input(geo["columns"][geo["primary_column"]]["crs"]).to_epsg()


def summarise(
    output: Path, materials: list[str], district_ids: list[str], epsg: int | None
) -> Summary:
    """Read a peer's two outputs into a :class:`Summary` (problems of form included)."""
    problems: list[str] = []
    value_cols = ["gfa_m2", *[f"{m}_t" for m in materials], "mass_t"]
    files = {name: output / f"{name}.parquet" for name in ("buildings", "districts")}
    for name, path in files.items():
        if not path.is_file():
            return Summary(0, {}, {}, [f"{name}.parquet was not written"])
        problem = crs_problem(path, epsg)
        if problem:
            problems.append(problem)
    need = {
        "buildings": ["building_id", "district_id", "archetype_id", *value_cols, "geometry"],
        "districts": ["district_id", "n_buildings", *value_cols, "geometry"],
    }
    for name, cols in need.items():
        have = set(pq.read_schema(files[name]).names)
        missing = [c for c in cols if c not in have]
        if missing:
            return Summary(0, {}, {}, [*problems, f"{name}.parquet lacks columns {missing}"])

    b = pq.read_table(files["buildings"], columns=["district_id", *value_cols])
    totals = {c: float(pc.sum(b[c]).as_py() or 0.0) for c in value_cols}
    in_district = len(b) - b["district_id"].null_count
    d = pq.read_table(files["districts"], columns=["district_id", "n_buildings", "mass_t"])
    ids = [str(x) for x in d["district_id"].to_pylist()]
    n = [int(x) for x in d["n_buildings"].to_pylist()]
    mass = [float(x) for x in d["mass_t"].to_pylist()]
    districts = {i: (k, m) for i, k, m in zip(ids, n, mass, strict=True)}
    if len(districts) != len(ids):
        problems.append("districts.parquet has duplicate district_id rows")
    if set(ids) != set(district_ids):
        missing = sorted(set(district_ids) - set(ids))[:5]
        extra = sorted(set(ids) - set(district_ids))[:5]
        problems.append(
            f"districts.parquet must have one row per input district: missing {missing}, "
            f"extra {extra}"
        )
    if sum(n) != in_district:
        problems.append(
            f"districts.parquet counts {sum(n):,} buildings, buildings.parquet has "
            f"{in_district:,} with a district"
        )
    return Summary(len(b), totals, districts, problems)


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=RTOL, abs_tol=0.0)


def compare(ref: Summary, other: Summary) -> list[str]:
    """Disagreements of peer ``other`` with peer ``ref`` (empty: they agree exactly)."""
    out = list(other.problems)
    if ref.n_buildings != other.n_buildings:
        out.append(f"{other.n_buildings:,} buildings, reference {ref.n_buildings:,}")
    for c, v in ref.totals.items():
        w = other.totals.get(c, math.nan)
        if not _close(v, w):
            out.append(f"total {c} {w!r}, reference {v!r} (relative {abs(w - v) / abs(v):.2e})")
    bad_n, bad_mass = [], []
    for i, (k, m) in ref.districts.items():
        k2, m2 = other.districts.get(i, (-1, math.nan))
        if k != k2:
            bad_n.append(f"{i}: {k2} vs {k}")
        if not _close(m, m2):
            bad_mass.append(f"{i}: {m2!r} vs {m!r}")
    if bad_n:
        out.append(f"n_buildings differs in {len(bad_n)} districts, e.g. {bad_n[:3]}")
    if bad_mass:
        out.append(f"mass_t differs in {len(bad_mass)} districts, e.g. {bad_mass[:3]}")
    return out


# --------------------------------------------------------------------------------------
# against mfa


@dataclass
class MfaLayers:
    """mfa's published ``buildings.parquet``: ids and totals, and problems of form."""

    ids: pa.Array
    totals: dict[str, float]
    problems: list[str]


def read_mfa(run_dir: Path, epsg: int | None) -> MfaLayers:
    """Ids and totals of mfa's published buildings; CRS of its buildings and districts."""
    problems = [
        p
        for name in ("buildings.parquet", "districts.parquet")
        if (p := crs_problem(run_dir / name, epsg)) is not None
    ]
    t = pq.read_table(run_dir / "buildings.parquet", columns=["building_id", "gfa_m2", "mass_t"])
    totals = {c: float(pc.sum(t[c]).as_py() or 0.0) for c in ("gfa_m2", "mass_t")}
    return MfaLayers(t["building_id"].combine_chunks(), totals, problems)


def versus_mfa(mfa: MfaLayers, peer_output: Path) -> dict[str, Any]:
    """A peer's buildings against mfa's: id sets, total ``gfa_m2`` and ``mass_t``.

    ``failures`` lists what fails the benchmark: a building count off by more than
    :data:`COUNT_RTOL` relative. The rest is for printing.
    """
    t = pq.read_table(
        peer_output / "buildings.parquet", columns=["building_id", "gfa_m2", "mass_t"]
    )
    ids = t["building_id"].combine_chunks()
    in_mfa = pc.sum(pc.is_in(ids, value_set=mfa.ids)).as_py() or 0
    n_peer, n_mfa = len(ids), len(mfa.ids)
    out: dict[str, Any] = {
        "n_peer": n_peer,
        "n_mfa": n_mfa,
        "only_peer": n_peer - in_mfa,
        "only_mfa": n_mfa - in_mfa,
    }
    for c in ("gfa_m2", "mass_t"):
        total = float(pc.sum(t[c]).as_py() or 0.0)
        ref = mfa.totals[c]
        out[f"{c}_peer"] = total
        out[f"{c}_mfa"] = ref
        out[f"{c}_rel_diff"] = (total - ref) / ref if ref else math.nan
    failures = list(mfa.problems)
    off = abs(n_peer - n_mfa) / max(n_mfa, 1)
    if off > COUNT_RTOL:
        failures.append(
            f"{n_peer:,} buildings against mfa's {n_mfa:,} (relative {off:.2e} > {COUNT_RTOL:g})"
        )
    out["failures"] = failures
    return out

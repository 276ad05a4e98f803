"""Timings of incremental runs: full, unchanged, one district changed, forced full.

    .venv/bin/python benchmarks/incremental.py                     # dk-sample only
    .venv/bin/python benchmarks/incremental.py --buildings 200000  # + a synthetic city

For each pipeline, in one process (so imports are paid once, before the first timing):
a first full run, an unchanged re-run (``--if-changed``: the whole-run skip), a re-run after
the floor area of a few buildings in one district changed (``--if-changed``: only that
district is recomputed), and a ``--force`` full re-run on the same changed inputs; then
the same after 10 %, 25 %, 50 % and 100 % of the districts changed (``--shares``). Prints
the seconds and the ratios to the forced full run of the same inputs, and checks every
time that the incremental and the full layers are equal.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import geopandas as gpd
import pandas as pd
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.test_incremental import assert_same_outputs  # noqa: E402

from mfa.io.files import sha256_file  # noqa: E402
from mfa.io.geoparquet import ROW_GROUP_SIZE  # noqa: E402
from mfa.run import run_pipeline  # noqa: E402


def _timed(fn, *args, **kwargs) -> tuple[float, Path]:
    t0 = time.perf_counter()
    result = fn(*args, **kwargs)
    return time.perf_counter() - t0, result


def _edit_districts(first: Path, register: Path, share: float, n: int = 10) -> list[str]:
    """Raise the floor area of ``n`` buildings in each of a ``share`` of the districts by
    25 % (at least one district: the mid-sized one)."""
    b = pd.read_parquet(first / "buildings.parquet", columns=["building_id", "district_id"])
    counts = b["district_id"].value_counts()
    k = max(1, round(share * len(counts)))
    middle = len(counts) // 2
    picked = [counts.index[(middle + i * len(counts) // k) % len(counts)] for i in range(k)]
    ids = b[b["district_id"].isin(picked)].groupby("district_id").head(n)["building_id"]
    reg = gpd.read_parquet(register)
    rows = reg["id_lokalId"].isin(ids)
    col = "byg038SamletBygningsareal"
    reg.loc[rows, col] = (reg.loc[rows, col].fillna(0) * 1.25 + 10).round()
    reg.to_parquet(register)
    return [str(d) for d in picked]


def _io_floor(run: Path, inputs: list[Path]) -> float:
    """Seconds to do the whole-file I/O any run that publishes single-file layers pays:
    read and hash every input file (a change anywhere in a file is only found by reading
    all of it), read the buildings layer and write it again with the same settings, and
    copy the GeoPackage."""
    t0 = time.perf_counter()
    for f in inputs:
        sha256_file(f)
        pq.read_table(f)
    with tempfile.TemporaryDirectory() as tmp:
        table = pq.read_table(run / "buildings.parquet")
        pq.write_table(table, Path(tmp) / "b.parquet", row_group_size=ROW_GROUP_SIZE)
        shutil.copyfile(run / "layers.gpkg", Path(tmp) / "layers.gpkg")
    return time.perf_counter() - t0


def bench(name: str, pipeline: Path, register: Path, out: Path, shares: list[float]) -> None:
    """The timings of one pipeline (seconds), printed."""
    t_first, first = _timed(run_pipeline, pipeline, out / "runs", force=True)
    t_same, same = _timed(run_pipeline, pipeline, out / "runs", force=False)
    assert same == first.resolve(), "the unchanged re-run should return the first run"
    target = _edit_districts(first, register, 0.0)[0]
    t_inc, inc = _timed(run_pipeline, pipeline, out / "runs", force=False)
    t_full, full = _timed(run_pipeline, pipeline, out / "full", force=True)
    assert_same_outputs(inc, full)
    floor = _io_floor(inc, [register])
    # no district changed, but the run key did (a new description): the fixed cost of an
    # incremental run that reuses every district
    text = pipeline.read_text()
    pipeline.write_text(
        re.sub(r'(?m)^description = ".*"$', 'description = "benchmark"', text)
        if re.search(r"(?m)^description = ", text)
        else text.replace("\nname = ", '\ndescription = "benchmark"\nname = ', 1)
    )
    t_none, none = _timed(run_pipeline, pipeline, out / "runs", force=False)
    none_inc = json.loads((none / "run.json").read_text())["incremental"]
    assert none_inc["recomputed_count"] == 0, none_inc["reason"]
    pipeline.write_text(text)
    m = json.loads((inc / "run.json").read_text())
    i = m["incremental"]
    print(f"\n{name}: {m['row_counts']['buildings']:,} buildings, {i['districts']} districts")
    print(
        f"  changed district {target}: "
        f"recomputed {i['recomputed_count']}, reused {i['reused_count']}"
    )
    rows = [
        ("first full run", t_first),
        ("unchanged re-run (--if-changed, whole-run skip)", t_same),
        ("no district changed, run key did (--if-changed)", t_none),
        ("one district changed (--if-changed)", t_inc),
        ("forced full re-run (--force), same inputs", t_full),
        ("whole-file I/O floor (see _io_floor)", floor),
    ]
    for label, t in rows:
        print(f"  {label:<50} {t:7.2f} s   {t / t_full:6.1%} of forced full")
    steps_inc = m["timings_s"]
    steps_full = json.loads((full / "run.json").read_text())["timings_s"]
    print(
        "  per step (incremental vs full, s): "
        + ", ".join(
            f"{k} {steps_inc.get(k) or 0:.2f}/{steps_full.get(k) or 0:.2f}" for k in steps_full
        )
    )
    print("  incremental layers equal the full recompute: yes")
    if not shares:
        return
    print("  re-run cost against the share of districts changed (each from the run before):")
    print(f"  {'changed':>8} {'recomputed':>11} {'--if-changed':>13} {'--force':>9} {'ratio':>7}")
    for share in shares:
        _edit_districts(first, register, share)
        t_inc, inc = _timed(run_pipeline, pipeline, out / "runs", force=False)
        t_full, full = _timed(run_pipeline, pipeline, out / "full", force=True)
        assert_same_outputs(inc, full)
        i = json.loads((inc / "run.json").read_text())["incremental"]
        print(
            f"  {share:>8.0%} {i['recomputed_count']:>5} of {i['districts']:<3} "
            f"{t_inc:>11.2f} s {t_full:>7.2f} s {t_inc / t_full:>7.1%}"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--buildings", type=int, default=0, help="also a synthetic city this big")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument(
        "--shares",
        type=float,
        nargs="*",
        default=[0.1, 0.25, 0.5, 1.0],
        help="also time re-runs after this share of the districts changed",
    )
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="mfa-bench-") as tmp:
        work = Path(tmp)
        for d in ("pipelines", "config", "geodata"):
            shutil.copytree(ROOT / d, work / d, ignore=shutil.ignore_patterns("cache"))
        bench(
            "dk-sample",
            work / "pipelines" / "dk-sample.toml",
            work / "geodata" / "sample" / "bbr_bygning_2020.parquet",
            work / "dk",
            args.shares,
        )
        if args.buildings:
            from mfa.synth import write_synthetic_city

            city = work / "city"
            pipeline = write_synthetic_city(
                args.buildings,
                args.seed,
                city,
                ROOT / "geodata/sample/bbr_bygning_2020.parquet",
                work / "config",
            )
            bench(
                f"synthetic city ({args.buildings:,})",
                pipeline,
                city / "register.parquet",
                city,
                args.shares,
            )


if __name__ == "__main__":
    main()

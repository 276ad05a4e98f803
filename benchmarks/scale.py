"""Scale benchmark (issue 15, item 6): ``mfa run`` against a stock-only peer script.

    python benchmarks/scale.py --sizes 1000000 3000000 4400000 10000000 --repeats 3 \\
        [--engines mfa geopandas duckdb [sedonadb]] [--workdir outputs/bench] [--timeout 3600]

mfa runs the full job users run, ``mfa run --no-prefect <city>/pipeline.toml -o <out>``
(buildings, stocks with Monte Carlo percentiles, districts, grid and rasters, flows,
GeoPackage and QGIS project, checks, atomic publish), as a whole fresh process. The peers
run the stock-only job of ``benchmarks/SPEC.md``: a plain vectorised geopandas script
(the baseline), DuckDB, and optionally SedonaDB. All use the same synthetic city (``mfa
synth``, cached per size and seed under the workdir; untimed). Each repeat of each engine
is a fresh process (``scale.py _one``, see ``bench_child``); repeats go round-robin over
the engines so that a change of machine load hits them all alike.

Reported per engine and size: wall seconds of the whole process, buildings/s (input
records ÷ wall seconds), peak RSS of the process tree; for mfa also its per-step seconds
(``timings_s``) and ``row_counts`` from the published ``run.json``. Then the ratios mfa ÷
geopandas script (throughput, peak RSS) and, when two or more sizes ran, throughput at the
largest size ÷ at the smallest. Results go to ``WORKDIR/runs/<time>/results.json`` and
``results.csv``.

What is compared (``bench_agree``): peers exactly against the first peer (1e-9 relative);
each peer against mfa's published buildings (ids kept, total gfa_m2 and mass_t), printed.

Exit status: 1 peers disagree with each other, an output has no CRS (or another than the
input's), or a peer's building count is off mfa's by more than ``bench_agree.COUNT_RTOL``;
else 3 an engine failed or timed out somewhere (its other results and everyone else's are
kept); else 0.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench_child import ENGINES, PEERS, ROOT, Run, one, published_run, run_child

#: Engines run unless ``--engines`` says otherwise (SedonaDB is optional).
DEFAULT_ENGINES = ("mfa", "geopandas", "duckdb")
#: The register whose distributions the synthetic city copies (``mfa synth --like``).
LIKE = ROOT / "geodata" / "sample" / "bbr_bygning_2020.parquet"


def ensure_city(n: int, seed: int, workdir: Path, config: Path) -> Path:
    """The synthetic city of ``n`` buildings and ``seed``, written once and then reused.

    A cached city keeps its register and districts unless ``mfa synth`` makes other ones
    today (``CITY_VERSION``); its ``pipeline.toml`` is rewritten if ``mfa synth`` would
    write another one today (the job changed).
    """
    from mfa.synth import CITY_VERSION, pipeline_text, write_synthetic_city

    city = workdir / "cities" / f"n{n}-s{seed}"
    stamp = f"{n} {seed} {CITY_VERSION}\n"
    complete = city / ".complete"
    if complete.is_file() and complete.read_text() == stamp:
        text = pipeline_text(n, seed, config)
        if (city / "pipeline.toml").read_text() != text:
            (city / "pipeline.toml").write_text(text)
            print(f"{city / 'pipeline.toml'}: rewritten (mfa synth writes another job now)")
        return city
    tmp = city.with_name(city.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    t = time.perf_counter()
    write_synthetic_city(n, seed, tmp, LIKE, config)
    (tmp / ".complete").write_text(stamp)
    shutil.rmtree(city, ignore_errors=True)
    tmp.rename(city)
    print(f"synthetic city of {n:,} buildings written in {time.perf_counter() - t:.1f} s: {city}")
    return city


def bytecode_cached() -> bool:
    """Whether mfa's modules have compiled bytecode (``__pycache__``) to start from.

    Without it (``PYTHONDONTWRITEBYTECODE=1`` and a venv installed without
    ``--compile-bytecode``) every process compiles mfa and its imports from source, seconds
    that a user's ``pip install`` (which compiles) never pays.
    """
    import mfa

    return any((Path(mfa.__file__).parent / "__pycache__").glob("*.pyc"))


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="scale.py",
        description="Scale benchmark: mfa run against stock-only peers (benchmarks/SPEC.md).",
    )
    ap.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 3_000_000, 10_000_000])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--engines", nargs="+", choices=ENGINES, default=list(DEFAULT_ENGINES))
    ap.add_argument("--workdir", type=Path, default=ROOT / "outputs" / "bench")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument(
        "--timeout",
        type=float,
        default=3600.0,
        help="seconds per engine process (start-up and imports included)",
    )
    ap.add_argument("--config", type=Path, default=ROOT / "config")
    a = ap.parse_args(argv)
    if a.repeats < 1 or any(n < 1 for n in a.sizes):
        ap.error("--repeats and --sizes must be >= 1")
    a.workdir, a.config = a.workdir.resolve(), a.config.resolve()
    return a


def check_round(
    round_runs: list[tuple[Run, Path]],
    materials: list[str],
    district_ids: list[str],
    epsg: int | None,
) -> int:
    """Compare one round's outputs (all still on disk); return the exit status it implies."""
    from bench_agree import compare, read_mfa, summarise, versus_mfa

    status = 0
    mfa_out = next((out for r, out in round_runs if r.engine == "mfa" and r.ok), None)
    mfa_dir = published_run(mfa_out) if mfa_out else None
    mfa = read_mfa(mfa_dir, epsg) if mfa_dir else None
    ref_name, ref = None, None
    for run, out in round_runs:
        if run.engine == "mfa" or not run.ok:
            continue
        s = summarise(out, materials, district_ids, epsg)
        if ref is None:  # the first peer that ran is the others' reference
            ref_name, ref = run.engine, s
            run.disagreements = list(s.problems)
        else:
            run.reference = ref_name
            run.disagreements = compare(ref, s)
        run.agrees = not run.disagreements
        if mfa is not None:
            run.versus_mfa = versus_mfa(mfa, out)
            run.disagreements += run.versus_mfa["failures"]
            run.agrees = not run.disagreements
        if not run.agrees:
            status = 1
            against = f"{ref_name} or mfa" if run.reference else "mfa (or its own form)"
            print(f"{run.engine} at {run.n:,} (repeat {run.repeat}) DISAGREES with {against}:")
            for d in run.disagreements:
                print(f"  - {d}")
    if mfa is not None and mfa.problems:
        status = 1
        print("mfa's published layers: " + "; ".join(mfa.problems))
    return status


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    import pyarrow.parquet as pq

    from bench_agree import input_epsg
    from bench_report import print_scaling, print_table, size_rows, versions, write_results
    from lookup import materials_of, write_lookups

    # mfa first, then the peers in the order given: the first peer is the peers' reference
    engines = list(dict.fromkeys(args.engines))
    engines.sort(key=lambda e: e != "mfa")
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    results = args.workdir / "runs" / stamp
    # the region of the intensities in mfa synth's pipeline.toml
    lookups = write_lookups(args.config, args.workdir / "lookups", region="OECD_EU15")
    materials = materials_of(lookups)
    meta = {
        "started": stamp,
        "command": [sys.executable, *sys.argv],
        "seed": args.seed,
        "repeats": args.repeats,
        "engines": engines,
        "cpus": os.cpu_count(),
        "bytecode_cached": bytecode_cached(),
        "versions": versions(),
        "timing": "wall_s: the whole engine process, start to exit (mfa: the `mfa run` "
        "process); compute_s: peers from before reading to after writing, mfa the sum of "
        "run.json timings_s; import_s: a peer's imports (in wall_s, not in compute_s)",
    }
    if not meta["bytecode_cached"]:
        print(
            "WARNING: mfa has no compiled bytecode here, so every engine process compiles its "
            "imports from source (seconds of start-up): `python -m compileall` the venv first"
        )
    runs: list[Run] = []
    rows: list[dict[str, Any]] = []
    scaling: list[dict[str, Any]] = []
    failed_at: dict[str, int] = {}
    disagree = False
    for n in sorted(args.sizes):
        city = ensure_city(n, args.seed, args.workdir, args.config)
        epsg = input_epsg(city)
        district_ids = [
            str(x) for x in pq.read_table(city / "districts.parquet")["district_id"].to_pylist()
        ]
        for repeat in range(1, args.repeats + 1):
            round_runs: list[tuple[Run, Path]] = []
            for e in engines:
                if e in failed_at:
                    if repeat == 1:
                        why = f"it failed at {failed_at[e]:,} buildings"
                        runs.append(Run(e, n, repeat, ok=False, error=why))
                        print(f"{e} at {n:,}: skipped, {why}")
                    continue
                out = args.workdir / "out" / f"n{n}" / e
                run = run_child(
                    e, n, repeat, city, lookups, out, args.workdir / "logs", args.timeout
                )
                runs.append(run)
                round_runs.append((run, out))
                if not run.ok:
                    print(f"{e} at {n:,} (repeat {repeat}) FAILED: {run.error}", flush=True)
                    failed_at[e] = n
                    continue
                print(
                    f"{e:<10} n={n:,} repeat {repeat}: {run.wall_s:.2f} s wall "
                    f"({run.compute_s:.2f} s compute), peak RSS {run.peak_rss_mb:,.0f} MB",
                    flush=True,
                )
            disagree |= check_round(round_runs, materials, district_ids, epsg) != 0
        size = size_rows(runs, n, engines)
        rows += size
        print_table(size, n, args.seed, args.repeats)
        write_results(results, meta, runs, rows)
    if len(args.sizes) > 1:
        print()
        scaling = print_scaling(rows, engines)
    write_results(results, meta, runs, rows, scaling)
    print(f"\nresults: {results / 'results.json'} and results.csv")
    status = 1 if disagree else 3 if failed_at else 0
    if status == 1:
        print("FAILED: outputs disagree or lack a CRS (see above)")
    elif status == 3:
        print("some engine runs failed (see above); the others' results are kept")
    return status


__all__ = ["PEERS", "check_round", "ensure_city", "main", "parse_args"]

if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_one":
        one(sys.argv[2:])
    else:
        sys.exit(main(sys.argv[1:]))

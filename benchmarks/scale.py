"""Scale benchmark (issue 6): mfa's engine against peer engines on synthetic cities.

    python benchmarks/scale.py --sizes 1000000 5000000 10000000 --repeats 3 \\
        [--engines mfa geopandas duckdb sedonadb] [--workdir outputs/bench] [--timeout 3600]

Every engine does the job of ``benchmarks/SPEC.md`` on the same synthetic city (``mfa
synth``, cached per size and seed under the workdir; untimed). Each repeat of each engine
runs in a fresh process (``scale.py _one``); repeats go round-robin over the engines so
that a change of machine load hits them all alike. The child times itself from before
reading the inputs to after both outputs are written and closed; interpreter start-up and
the engine's imports are measured apart (``import_s``) and not in ``seconds``. Peak memory
is the child's own peak RSS (``VmHWM``) or, if larger, the peak of its process tree
sampled by the parent every 0.1 s (catches engines that start worker processes).

After each run the outputs are checked against the reference engine's (mfa unless
``--reference`` says otherwise; the first engine that ran if the reference has no output
at that size): building count, per-district ``n_buildings``, total and per-material
``mass_t`` and per-district ``mass_t`` to 1e-9 relative, and the CRS in the GeoParquet
``geo`` metadata of both outputs. Prints one table per size and writes ``results.json``
and ``results.csv`` under ``WORKDIR/runs/<time>/``.

Exit status: 0 all ran and agreed; 1 an engine disagreed (or wrote no CRS); 3 an engine
failed or timed out somewhere (its other results and everyone else's are kept).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import math
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
ENGINES = ("mfa", "geopandas", "duckdb", "sedonadb")
#: Relative tolerance of the agreement check (SPEC "Agreement").
RTOL = 1e-9
#: The register whose distributions the synthetic city copies (``mfa synth --like``).
LIKE = ROOT / "geodata" / "sample" / "bbr_bygning_2020.parquet"

EngineFn = Callable[[Path, Path, Path, Path, str], None]


# --------------------------------------------------------------------------------------
# engines (imported only inside the child, so that import time is measured apart)


def load_engine(name: str) -> EngineFn:
    """Import engine ``name`` and return ``fn(city, lookups, output, config_dir, region)``."""
    if name == "mfa":
        try:
            from mfa.engine import estimate_file
        except ModuleNotFoundError as exc:
            if exc.name != "mfa.engine":
                raise
            raise SystemExit(
                "mfa.engine is not in this checkout (the streaming engine of issue 6): "
                "merge main, or leave mfa out of --engines"
            ) from None

        def run_mfa(city: Path, lookups: Path, output: Path, config: Path, region: str) -> None:
            estimate_file(
                register=str(city / "register.parquet"),
                districts=str(city / "districts.parquet"),
                output=str(output),
                config_dir=str(config),
                region=region,
                scheduler="threads",
                workers=None,
            )

        return run_mfa
    if name == "geopandas":
        from peers.geopandas_naive import run
    elif name == "duckdb":
        from peers.duckdb_spatial import run
    elif name == "sedonadb":
        from peers.sedonadb import run
    else:
        raise ValueError(f"unknown engine {name!r}; choose from {', '.join(ENGINES)}")

    def run_peer(city: Path, lookups: Path, output: Path, config: Path, region: str) -> None:
        run(city / "register.parquet", city / "districts.parquet", lookups, output)

    return run_peer


def one(argv: list[str]) -> None:
    """Child process: run one engine once, write timings and peak RSS as JSON."""
    ap = argparse.ArgumentParser(prog="scale.py _one")
    ap.add_argument("--engine", required=True, choices=ENGINES)
    ap.add_argument("--city", type=Path, required=True)
    ap.add_argument("--lookups", type=Path, required=True)
    ap.add_argument("--output", type=Path, required=True)
    ap.add_argument("--config", type=Path, required=True)
    ap.add_argument("--region", required=True)
    ap.add_argument("--result", type=Path, required=True)
    a = ap.parse_args(argv)
    t0 = time.perf_counter()
    fn = load_engine(a.engine)
    t1 = time.perf_counter()
    fn(a.city, a.lookups, a.output, a.config, a.region)
    t2 = time.perf_counter()
    a.result.write_text(
        json.dumps({"import_s": t1 - t0, "seconds": t2 - t1, "rss_self_mb": own_peak_rss_mb()})
    )


def own_peak_rss_mb() -> float:
    """This process's peak RSS (MiB) since it was exec'd.

    ``getrusage(RUSAGE_SELF).ru_maxrss`` survives ``exec`` on Linux, so a child would
    report its parent's size at fork if that was larger; ``VmHWM`` belongs to the new
    address space and does not.
    """
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


# --------------------------------------------------------------------------------------
# inputs (untimed)


def ensure_city(n: int, seed: int, workdir: Path, config: Path) -> Path:
    """The synthetic city of ``n`` buildings and ``seed``, written once and then reused."""
    from mfa.synth import write_synthetic_city

    city = workdir / "cities" / f"n{n}-s{seed}"
    if (city / ".complete").is_file():
        return city
    tmp = city.with_name(city.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    t = time.perf_counter()
    write_synthetic_city(n, seed, tmp, LIKE, config)
    (tmp / ".complete").write_text(f"{n} {seed}\n")
    shutil.rmtree(city, ignore_errors=True)
    tmp.rename(city)
    print(f"synthetic city of {n:,} buildings written in {time.perf_counter() - t:.1f} s: {city}")
    return city


# --------------------------------------------------------------------------------------
# agreement


@dataclass
class Summary:
    """What the agreement check compares of one engine's outputs."""

    n_buildings: int
    totals: dict[str, float]
    #: district_id → (n_buildings, mass_t)
    districts: dict[str, tuple[int, float]]
    problems: list[str] = field(default_factory=list)


def _crs_problem(path: Path, expected_epsg: int | None) -> str | None:
    import pyarrow.parquet as pq
    from pyproj import CRS

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
    import pyarrow.parquet as pq
    from pyproj import CRS

    geo = json.loads((pq.read_metadata(city / "register.parquet").metadata or {})[b"geo"])
    return CRS.from_user_input(geo["columns"][geo["primary_column"]]["crs"]).to_epsg()


def summarise(
    output: Path, materials: list[str], district_ids: list[str], epsg: int | None
) -> Summary:
    """Read an engine's two outputs into a :class:`Summary` (problems of form included)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    problems: list[str] = []
    value_cols = ["gfa_m2", *[f"{m}_t" for m in materials], "mass_t"]
    files = {name: output / f"{name}.parquet" for name in ("buildings", "districts")}
    for name, path in files.items():
        if not path.is_file():
            return Summary(0, {}, {}, [f"{name}.parquet was not written"])
        problem = _crs_problem(path, epsg)
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
    """Disagreements of ``other`` with ``ref`` per SPEC "Agreement" (empty: they agree)."""
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
# running children


@dataclass
class Run:
    """One engine run (one repeat at one size) as the harness saw it."""

    engine: str
    n: int
    repeat: int
    ok: bool
    seconds: float | None = None
    import_s: float | None = None
    process_s: float | None = None
    buildings_per_s: float | None = None
    peak_rss_mb: float | None = None
    rss_self_mb: float | None = None
    tree_peak_rss_mb: float | None = None
    error: str | None = None
    reference: str | None = None
    agrees: bool | None = None
    disagreements: list[str] = field(default_factory=list)


def _sample_tree(pid: int, stop: threading.Event, peak: list[float]) -> None:
    import psutil

    try:
        proc = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return
    while not stop.is_set():
        try:
            procs = [proc, *proc.children(recursive=True)]
            rss = 0
            for p in procs:
                with contextlib.suppress(psutil.NoSuchProcess):
                    rss += p.memory_info().rss
            peak[0] = max(peak[0], rss / 2**20)
        except psutil.NoSuchProcess:
            return
        stop.wait(0.1)


def run_child(
    engine: str,
    n: int,
    repeat: int,
    city: Path,
    lookups: Path,
    output: Path,
    args: argparse.Namespace,
) -> Run:
    """Run one engine once in a fresh process and collect its timings and memory."""
    shutil.rmtree(output, ignore_errors=True)
    logs = args.workdir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / f"n{n}-{engine}-r{repeat}.log"
    result = output.with_name(output.name + ".result.json")
    result.unlink(missing_ok=True)
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "_one",
        "--engine",
        engine,
        "--city",
        str(city),
        "--lookups",
        str(lookups),
        "--output",
        str(output),
        "--config",
        str(args.config),
        "--region",
        args.region,
        "--result",
        str(result),
    ]
    stop, peak = threading.Event(), [0.0]
    t0 = time.perf_counter()
    with log.open("w") as fh:
        proc = subprocess.Popen(
            cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True
        )
        sampler = threading.Thread(target=_sample_tree, args=(proc.pid, stop, peak), daemon=True)
        sampler.start()
        timed_out = False
        try:
            code = proc.wait(timeout=args.timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            os.killpg(proc.pid, signal.SIGKILL)  # the child's own session: only what we started
            code = proc.wait()
        stop.set()
        sampler.join()
    process_s = time.perf_counter() - t0
    run = Run(engine, n, repeat, ok=False, process_s=process_s, tree_peak_rss_mb=peak[0])
    if timed_out:
        run.error = f"timed out after {args.timeout:g} s (--timeout)"
    elif code != 0 or not result.is_file():
        lines = log.read_text(errors="replace").strip().splitlines()
        tail = lines[-1][:300] if lines else "no output"
        if code == -signal.SIGKILL:
            why = "killed by SIGKILL (out of memory?)"
        elif code < 0:
            why = f"killed by signal {-code}"
        else:
            why = f"exit status {code}"
        run.error = f"{why}: {tail} (log: {log})"
    else:
        r = json.loads(result.read_text())
        run.ok = True
        run.seconds = r["seconds"]
        run.import_s = r["import_s"]
        run.rss_self_mb = r["rss_self_mb"]
        run.peak_rss_mb = max(r["rss_self_mb"], peak[0])
        run.buildings_per_s = n / r["seconds"] if r["seconds"] > 0 else math.inf
    return run


# --------------------------------------------------------------------------------------
# reporting


def _fmt_int(x: float | None) -> str:
    return "-" if x is None or not math.isfinite(x) else f"{x:,.0f}"


def size_rows(runs: list[Run], n: int, engines: list[str]) -> list[dict[str, Any]]:
    """Per engine at size ``n``: medians, extremes, ratios of mfa to that engine."""
    rows: list[dict[str, Any]] = []
    for e in engines:
        rs = [r for r in runs if r.engine == e and r.n == n]
        ok = [r for r in rs if r.ok]
        row: dict[str, Any] = {"n": n, "engine": e, "repeats_ok": len(ok), "repeats": len(rs)}
        if ok:
            bps = [r.buildings_per_s or 0.0 for r in ok]
            row |= {
                "buildings_per_s_median": statistics.median(bps),
                "buildings_per_s_min": min(bps),
                "buildings_per_s_max": max(bps),
                "seconds_median": statistics.median(r.seconds or 0.0 for r in ok),
                "import_s_median": statistics.median(r.import_s or 0.0 for r in ok),
                "peak_rss_mb_max": max(r.peak_rss_mb or 0.0 for r in ok),
                "agrees": all(r.agrees for r in ok),
                "reference": ok[0].reference,
            }
        else:
            row["error"] = next((r.error for r in rs if r.error), "not run")
        rows.append(row)
    mfa = next((r for r in rows if r["engine"] == "mfa" and r["repeats_ok"]), None)
    for row in rows:
        if mfa and row["repeats_ok"]:
            row["mfa_over_peer_speed"] = (
                mfa["buildings_per_s_median"] / row["buildings_per_s_median"]
            )
            row["mfa_over_peer_memory"] = mfa["peak_rss_mb_max"] / row["peak_rss_mb_max"]
    return rows


def print_table(rows: list[dict[str, Any]], n: int, seed: int, repeats: int) -> None:
    """The per-size table (see README "Benchmark")."""
    ref = next((r["reference"] for r in rows if r.get("reference")), None)
    print(f"\nN = {n:,} buildings (seed {seed}), {repeats} repeat(s); reference: {ref}")
    head = (
        f"{'engine':<10} {'buildings/s median':>18} {'[min - max]':>25} {'seconds':>8} "
        f"{'peak RSS MB':>11} {'mfa/peer speed':>14} {'mfa/peer RSS':>12}  agreement"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        if not r["repeats_ok"]:
            print(f"{r['engine']:<10} skipped: {r['error']}")
            continue
        span = f"[{_fmt_int(r['buildings_per_s_min'])} - {_fmt_int(r['buildings_per_s_max'])}]"
        speed = r.get("mfa_over_peer_speed")
        mem = r.get("mfa_over_peer_memory")
        if r["engine"] == r["reference"]:
            agree = "reference"
        else:
            agree = "agrees" if r["agrees"] else "DISAGREES"
        print(
            f"{r['engine']:<10} {_fmt_int(r['buildings_per_s_median']):>18} {span:>25} "
            f"{r['seconds_median']:>8.2f} {r['peak_rss_mb_max']:>11,.0f} "
            f"{'-' if speed is None else f'{speed:.2f}':>14} "
            f"{'-' if mem is None else f'{mem:.2f}':>12}  {agree}"
        )
    print(
        "buildings/s: input register records per second, timed inside the engine's process "
        "from before reading to after writing (start-up and imports excluded); "
        "mfa/peer speed > 1: mfa faster; mfa/peer RSS < 1: mfa leaner"
    )


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": sys.version.split()[0]}
    for p in (
        "mfa",
        "geopandas",
        "shapely",
        "pyarrow",
        "dask",
        "duckdb",
        "duckdb-extension-spatial",
        "sedonadb",
    ):
        try:
            out[p] = version(p)
        except PackageNotFoundError:
            out[p] = "not installed"
    return out


def write_results(
    folder: Path, meta: dict[str, Any], runs: list[Run], rows: list[dict[str, Any]]
) -> None:
    """``results.json`` (everything) and ``results.csv`` (one line per run) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    payload = {"meta": meta, "summary": rows, "runs": [asdict(r) for r in runs]}
    (folder / "results.json").write_text(json.dumps(payload, indent=2) + "\n")
    fields = [f for f in asdict(runs[0]) if f != "disagreements"] if runs else []
    with (folder / "results.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=[*fields, "disagreements"])
        w.writeheader()
        for r in runs:
            w.writerow(asdict(r) | {"disagreements": " | ".join(r.disagreements)})


# --------------------------------------------------------------------------------------
# main


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="scale.py",
        description="Scale benchmark: mfa against peer engines (benchmarks/SPEC.md).",
    )
    ap.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 5_000_000, 10_000_000])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--engines", nargs="+", choices=ENGINES, default=list(ENGINES))
    ap.add_argument(
        "--reference",
        choices=ENGINES,
        default="mfa",
        help="engine the others are checked against (default mfa)",
    )
    ap.add_argument("--workdir", type=Path, default=ROOT / "outputs" / "bench")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=3600.0, help="seconds per engine run")
    ap.add_argument("--config", type=Path, default=ROOT / "config")
    ap.add_argument("--region", default="OECD_EU15")
    a = ap.parse_args(argv)
    if a.repeats < 1 or any(n < 1 for n in a.sizes):
        ap.error("--repeats and --sizes must be >= 1")
    a.workdir, a.config = a.workdir.resolve(), a.config.resolve()
    return a


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    import pyarrow.parquet as pq

    from lookup import materials_of, write_lookups

    engines = list(dict.fromkeys(args.engines))
    # the reference runs first in each round, so later runs can be compared at once
    if args.reference in engines:
        engines.remove(args.reference)
        engines.insert(0, args.reference)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    results = args.workdir / "runs" / stamp
    lookups = write_lookups(args.config, args.workdir / "lookups", region=args.region)
    materials = materials_of(lookups)
    meta = {
        "started": stamp,
        "command": [sys.executable, *sys.argv],
        "seed": args.seed,
        "repeats": args.repeats,
        "engines": engines,
        "reference": args.reference,
        "cpus": os.cpu_count(),
        "versions": _versions(),
        "timing": "seconds: in the child from before reading to after writing both outputs; "
        "import_s: the engine's imports (not in seconds); process_s: whole child process",
    }
    runs: list[Run] = []
    rows: list[dict[str, Any]] = []
    failed_at: dict[str, int] = {}
    status = 0
    for n in sorted(args.sizes):
        city = ensure_city(n, args.seed, args.workdir, args.config)
        epsg = input_epsg(city)
        district_ids = [
            str(x) for x in pq.read_table(city / "districts.parquet")["district_id"].to_pylist()
        ]
        ref_summary: Summary | None = None
        ref_name: str | None = None
        pending: list[tuple[Run, Summary]] = []
        for repeat in range(1, args.repeats + 1):
            for e in engines:
                if e in failed_at:
                    if repeat == 1:
                        why = f"skipped: failed at {failed_at[e]:,} buildings"
                        runs.append(Run(e, n, repeat, ok=False, error=why))
                        print(f"{e} at {n:,}: skipped, it failed at {failed_at[e]:,} buildings")
                    continue
                out = args.workdir / "out" / f"n{n}" / e
                run = run_child(e, n, repeat, city, lookups, out, args)
                runs.append(run)
                if not run.ok:
                    print(f"{e} at {n:,} (repeat {repeat}) FAILED: {run.error}", flush=True)
                    failed_at[e] = n
                    status = max(status, 3)
                    continue
                summary = summarise(out, materials, district_ids, epsg)
                print(
                    f"{e:<10} n={n:,} repeat {repeat}: {run.seconds:.2f} s "
                    f"(+{run.import_s:.2f} s imports), peak RSS {run.peak_rss_mb:,.0f} MB",
                    flush=True,
                )
                pending.append((run, summary))
        # reference: the chosen one if it ran, else the first engine that did
        ok = [(r, s) for r, s in pending if r.ok]
        chosen = [(r, s) for r, s in ok if r.engine == args.reference]
        if chosen:
            ref_name, ref_summary = args.reference, chosen[0][1]
        elif ok:
            ref_name, ref_summary = ok[0][0].engine, ok[0][1]
            print(
                f"WARNING: reference {args.reference} has no output at {n:,} buildings: "
                f"checking against {ref_name} instead",
                flush=True,
            )
        if ref_summary is not None:
            for r, s in ok:
                r.reference = ref_name
                r.disagreements = compare(ref_summary, s)
                r.agrees = not r.disagreements
                if not r.agrees:
                    status = 1
                    print(f"{r.engine} at {n:,} (repeat {r.repeat}) DISAGREES with {ref_name}:")
                    for d in r.disagreements:
                        print(f"  - {d}")
        size = size_rows(runs, n, engines)
        rows += size
        print_table(size, n, args.seed, args.repeats)
        write_results(results, meta, runs, rows)
    print(f"\nresults: {results / 'results.json'} and results.csv")
    if status == 1:
        print("FAILED: engines disagree (see above)")
    elif status == 3:
        print("some engine runs failed (see above); the others' results are kept")
    return status


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_one":
        one(sys.argv[2:])
    else:
        sys.exit(main(sys.argv[1:]))

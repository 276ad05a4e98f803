"""Tables, ratios and result files of the scale benchmark."""

from __future__ import annotations

import csv
import json
import math
import statistics
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench_child import Run

#: The peer whose throughput and memory mfa's are divided by (the issue's baseline).
BASELINE = "geopandas"


def _fmt_int(x: float | None) -> str:
    return "-" if x is None or not math.isfinite(x) else f"{x:,.0f}"


def _ratio(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


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
                "wall_s_median": statistics.median(r.wall_s or 0.0 for r in ok),
                "compute_s_median": statistics.median(r.compute_s or 0.0 for r in ok),
                "peak_rss_mb_max": max(r.peak_rss_mb or 0.0 for r in ok),
            }
            if e == "mfa":
                steps = list(ok[0].timings_s or {})
                row["timings_s_median"] = {
                    s: statistics.median((r.timings_s or {}).get(s, 0.0) for r in ok) for s in steps
                }
                row["row_counts"] = ok[0].row_counts
            else:
                row["import_s_median"] = statistics.median(r.import_s or 0.0 for r in ok)
                row["agrees"] = all(r.agrees is not False for r in ok)
                row["reference"] = ok[0].reference
                row["versus_mfa"] = next((r.versus_mfa for r in ok if r.versus_mfa), None)
        else:
            row["error"] = next((r.error for r in rs if r.error), "not run")
        rows.append(row)
    mfa = next((r for r in rows if r["engine"] == "mfa" and r["repeats_ok"]), None)
    for row in rows:
        if mfa and row["repeats_ok"]:
            row["mfa_over_engine_speed"] = (
                mfa["buildings_per_s_median"] / row["buildings_per_s_median"]
            )
            row["mfa_over_engine_rss"] = mfa["peak_rss_mb_max"] / row["peak_rss_mb_max"]
    return rows


def print_table(rows: list[dict[str, Any]], n: int, seed: int, repeats: int) -> None:
    """The per-size table, mfa's steps, the comparison with mfa and the headline ratios."""
    print(f"\nN = {n:,} buildings (seed {seed}), {repeats} repeat(s)")
    head = (
        f"{'engine':<10} {'wall s':>8} {'buildings/s':>12} {'[min - max]':>21} "
        f"{'compute s':>9} {'peak RSS MB':>11} {'mfa/eng speed':>13} {'mfa/eng RSS':>11}  "
        "peers exact"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        if not r["repeats_ok"]:
            print(f"{r['engine']:<10} skipped: {r['error']}")
            continue
        span = f"[{_fmt_int(r['buildings_per_s_min'])} - {_fmt_int(r['buildings_per_s_max'])}]"
        if r["engine"] == "mfa":
            agree = "-"
        elif r.get("reference") is None:
            agree = "reference"
        else:
            agree = "agrees" if r["agrees"] else "DISAGREES"
        print(
            f"{r['engine']:<10} {r['wall_s_median']:>8.2f} "
            f"{_fmt_int(r['buildings_per_s_median']):>12} {span:>21} "
            f"{r['compute_s_median']:>9.2f} {r['peak_rss_mb_max']:>11,.0f} "
            f"{_ratio(r.get('mfa_over_engine_speed')):>13} "
            f"{_ratio(r.get('mfa_over_engine_rss')):>11}  {agree}"
        )
    print(
        "wall s: the whole engine process, start to exit (medians); buildings/s: input "
        "records ÷ wall s; compute s: peers from before reading to after writing, mfa the "
        "sum of its steps in run.json; peak RSS: the process tree"
    )
    by = {r["engine"]: r for r in rows if r["repeats_ok"]}
    mfa = by.get("mfa")
    if mfa:
        steps = ", ".join(f"{k} {v:.1f}" for k, v in mfa["timings_s_median"].items())
        print(f"mfa steps (s, run.json timings_s): {steps}")
        outside = mfa["wall_s_median"] - mfa["compute_s_median"]
        print(f"mfa outside its steps (start-up, imports, prepare): {outside:.1f} s")
        print(f"mfa row counts (run.json row_counts): {mfa['row_counts']}")
    versus = [(r["engine"], r["versus_mfa"]) for r in rows if r.get("versus_mfa")]
    if versus:
        print("against mfa's buildings.parquet (mfa applies more rules; printed, not failed):")
        print(
            f"  {'engine':<10} {'kept':>12} {'mfa kept':>12} {'only peer':>10} "
            f"{'only mfa':>10} {'gfa_m2 rel':>11} {'mass_t rel':>11}"
        )
        for e, v in versus:
            print(
                f"  {e:<10} {v['n_peer']:>12,} {v['n_mfa']:>12,} {v['only_peer']:>10,} "
                f"{v['only_mfa']:>10,} {v['gfa_m2_rel_diff']:>+11.2e} "
                f"{v['mass_t_rel_diff']:>+11.2e}"
            )
        print("  rel: (peer total − mfa total) ÷ mfa total")
    base = by.get(BASELINE)
    if mfa and base:
        print(
            f"mfa ÷ {BASELINE} script: throughput {base['mfa_over_engine_speed']:.3f}×, "
            f"peak RSS {base['mfa_over_engine_rss']:.2f}×"
        )


def print_scaling(rows: list[dict[str, Any]], engines: list[str]) -> list[dict[str, Any]]:
    """Throughput at the largest size ÷ at the smallest, per engine that ran at both."""
    out: list[dict[str, Any]] = []
    for e in engines:
        ok = sorted((r for r in rows if r["engine"] == e and r["repeats_ok"]), key=lambda r: r["n"])
        if len(ok) < 2:
            continue
        small, large = ok[0], ok[-1]
        ratio = large["buildings_per_s_median"] / small["buildings_per_s_median"]
        out.append({"engine": e, "small": small["n"], "large": large["n"], "ratio": ratio})
        print(f"{e}: throughput at {large['n']:,} ÷ at {small['n']:,} buildings = {ratio:.2f}")
    return out


def versions() -> dict[str, str]:
    """Versions of Python and the packages the engines use."""
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
    folder: Path,
    meta: dict[str, Any],
    runs: list[Run],
    rows: list[dict[str, Any]],
    scaling: list[dict[str, Any]] | None = None,
) -> None:
    """``results.json`` (everything) and ``results.csv`` (one line per run) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    payload = {
        "meta": meta,
        "summary": rows,
        "scaling": scaling or [],
        "runs": [asdict(r) for r in runs],
    }
    (folder / "results.json").write_text(json.dumps(payload, indent=2) + "\n")
    nested = {"disagreements", "timings_s", "row_counts", "versus_mfa"}
    fields = [f for f in asdict(runs[0]) if f not in nested] if runs else []
    with (folder / "results.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=[*fields, *sorted(nested)])
        w.writeheader()
        for r in runs:
            d = asdict(r)
            flat = {k: d[k] for k in fields}
            flat["disagreements"] = " | ".join(r.disagreements)
            for k in ("timings_s", "row_counts", "versus_mfa"):
                flat[k] = "" if d[k] is None else json.dumps(d[k])
            w.writerow(flat)

"""Peak memory of ``mfa pull`` on a large paged source, against a loopback stand-in.

The stand-in (``tests/pull_standin.py``, the servers the pull tests use) runs in its own
process, serving ``--features`` features: the Delft BGT footprints repeated with new ids
(OGC API – Features and WFS 2.0), or the Kalundborg register rows repeated with new
``id_lokalId`` (Datafordeler GraphQL). ``mfa pull`` runs as a third process; its peak
resident memory is the kernel's ``ru_maxrss`` of that process (``os.wait4``)::

    .venv/bin/python benchmarks/pull_memory.py --protocol oapif --features 300000

prints one line: protocol, features, pages, wall seconds, peak RSS (MB), snapshot bytes
and sha256 (the same before and after a change to the assembly: same bytes).

``--run`` serves each copy of the footprints moved by some km (distinct buildings), then
runs ``mfa run --no-prefect`` on the pulled snapshot (the stand-in still
up: the run's pull step finds the source unchanged) as a fourth process and adds its wall
seconds, peak RSS, batches, buildings and totals (t, m²): how the run's memory grows with
a pulled snapshot (``--src`` another checkout's ``src`` gives the before)::

    .venv/bin/python benchmarks/pull_memory.py --protocol oapif --features 200000 --run
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PIPELINES = {
    "oapif": """
name = "bench-pull-oapif"
crs = "EPSG:28992"
[sources.footprints]
url = "{BASE}/ogc"
protocol = "oapif"
collection = "pand"
page_size = {PAGE}
id_column = "identificatiebagpnd"
required_fields = ["identificatiebagpnd", "bgt_status"]
filters = { crs = "http://www.opengis.net/def/crs/EPSG/0/28992" }
""",
    "wfs": """
name = "bench-pull-wfs"
crs = "EPSG:28992"
[sources.footprints]
url = "{BASE}/wfs"
protocol = "wfs"
collection = "pand"
sort_by = "identificatiebagpnd ASC"
page_size = {PAGE}
id_column = "identificatiebagpnd"
id_field = "identificatiebagpnd"
filters = { srsName = "EPSG:28992" }
""",
    "datafordeler-graphql": """
name = "bench-pull-graphql"
crs = "EPSG:25832"
[sources.register]
url = "{BASE}/graphql/BBR/v2"
protocol = "datafordeler-graphql"
collection = "BBR_Bygning"
page_size = {PAGE}
""",
}

MODEL = """
[cache]
dir = "{CACHE}"
[archetypes]
dir = "{ROOT}/config/archetypes"
[intensities]
table = "{ROOT}/config/intensities/rasmi_2024.csv"
region = "OECD_EU15"
"""


def _moved(geometry: dict, k: int) -> dict:
    """Copy ``k`` of a Delft footprint moved ``k % 40`` km east and ``k // 40`` km north,
    so that every copy is a building of its own (a repeated footprint is left out)."""
    import numpy as np
    import shapely
    from shapely.geometry import mapping, shape

    dx, dy = 1000.0 * (k % 40), 1000.0 * (k // 40)
    moved = shapely.transform(shape(geometry), lambda xy: xy + np.array([dx, dy]))
    return mapping(moved)


def serve(n: int, distinct: bool) -> None:
    """The stand-in process: print its base URL, serve until stdin closes."""
    sys.path.insert(0, str(ROOT))
    import pandas as pd
    from tests.pull_standin import Services, delft_features, start

    base = delft_features()
    Services.features = [
        {
            **f,
            "id": f"{f['id']}-{k}",
            "properties": {**f["properties"], "identificatiebagpnd": f"{f['id']}-{k}"},
            **({"geometry": _moved(f["geometry"], k)} if distinct else {}),
        }
        for k in range(n // len(base) + 1)
        for f in base
    ][:n]
    rows = pd.read_csv(ROOT / "tests/data/bbr_kalundborg_60.csv", dtype=str, keep_default_na=False)
    records = [{k: (v or None) for k, v in r.items()} for r in rows.to_dict("records")]
    Services.records = [
        {**r, "id_lokalId": f"{r['id_lokalId']}-{k}"}
        for k in range(n // len(records) + 1)
        for r in records
    ][:n]
    server, url = start()
    print(url, flush=True)
    sys.stdin.read()
    server.shutdown()


def _measured(cmd: list[str], env: dict[str, str]) -> tuple[float, int]:
    """Run ``cmd``; its wall seconds and peak RSS (MB, the kernel's ``ru_maxrss``)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    err = proc.stderr.read().decode()  # type: ignore[union-attr]
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        sys.exit(f"{' '.join(cmd[2:4])} failed ({code}): {err[-2000:]}")
    return wall, round(usage.ru_maxrss / 1024)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--protocol", choices=sorted(PIPELINES), default="oapif")
    ap.add_argument("--features", type=int, default=300_000)
    ap.add_argument("--page-size", type=int, default=5000)
    ap.add_argument("--src", type=Path, default=ROOT / "src", help="mfa's code to measure")
    ap.add_argument("--run", action="store_true", help="then mfa run on the snapshot")
    ap.add_argument("--batch-rows", type=int, default=100_000, help="[compute] batch_rows")
    ap.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve is not None:
        serve(args.serve, args.run)
        return
    py = sys.executable
    stand_in = subprocess.Popen(
        [py, __file__, "--serve", str(args.features), *(["--run"] if args.run else [])],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        base = stand_in.stdout.readline().strip()  # type: ignore[union-attr]
        with tempfile.TemporaryDirectory(prefix="mfa-pull-bench-") as tmp:
            text = PIPELINES[args.protocol] + MODEL + f"[compute]\nbatch_rows = {args.batch_rows}\n"
            for k, v in {
                "BASE": base,
                "PAGE": args.page_size,
                "CACHE": f"{tmp}/cache",
                "ROOT": ROOT,
            }.items():
                text = text.replace("{" + k + "}", str(v))
            pipeline = Path(tmp) / "p.toml"
            pipeline.write_text(text)
            env = {**os.environ, "PYTHONPATH": str(args.src)}
            wall, rss = _measured(
                [py, "-m", "mfa.cli", "pull", str(pipeline), "-o", f"{tmp}/out"], env
            )
            (snap,) = (
                p
                for p in Path(tmp, "cache").rglob("*")
                if p.is_file() and p.parent.name[:2] == "20" and not p.name.endswith(".json")
            )
            sha = hashlib.sha256(snap.read_bytes()).hexdigest()
            result = {
                "protocol": args.protocol,
                "features": args.features,
                "page_size": args.page_size,
                "wall_s": round(wall, 1),
                "peak_rss_mb": rss,
                "snapshot_bytes": snap.stat().st_size,
                "sha256": sha,
            }
            if args.run:
                cmd = [
                    py,
                    "-m",
                    "mfa.cli",
                    "run",
                    str(pipeline),
                    "--no-prefect",
                    "-o",
                    f"{tmp}/out",
                ]
                run_wall, run_rss = _measured(cmd, env)
                (manifest,) = Path(tmp, "out").glob("*/latest/run.json")
                m = json.loads(manifest.read_text())
                result["run"] = {
                    "wall_s": round(run_wall, 1),
                    "peak_rss_mb": run_rss,
                    "batch_rows": args.batch_rows,
                    "batches": m["compute"]["engine"]["buildings"]["batches"],
                    "records_read": m["row_counts"]["records_read"],
                    "buildings": m["row_counts"].get("buildings"),
                    "totals_t": m["totals_t"],
                    "total_gfa_m2": m["total_gfa_m2"],
                    "steps_s": m["timings_s"],
                }
            print(json.dumps(result))
    finally:
        stand_in.stdin.close()  # type: ignore[union-attr]
        stand_in.wait(timeout=30)


if __name__ == "__main__":
    main()

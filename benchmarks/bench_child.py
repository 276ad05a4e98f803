"""One engine run in a fresh process: the child's side and the parent's (scale benchmark).

The parent (:func:`run_child`) starts ``scale.py _one`` in its own session and samples the
summed RSS of that process tree every 0.1 s. The child (:func:`one`) then either

- mfa: starts ``mfa run --no-prefect <city>/pipeline.toml -o <out>`` (the console script of
  this venv, else ``python -m mfa.cli``) as a subprocess, times it from start to exit and
  takes its peak RSS from ``getrusage(RUSAGE_CHILDREN)`` (the largest process among the
  children it waited for); the child itself imports only the standard library, so it
  adds about 10 MB to the sampled tree and nothing to the timed process; or
- a peer: imports the peer's module and calls ``run``, timing the call (``compute_s``) and
  the imports (``import_s``) apart; its peak RSS is its own ``VmHWM``.

Only the standard library is imported at module level: this module is the child.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SCALE = Path(__file__).resolve().with_name("scale.py")
PEERS = ("geopandas", "duckdb", "sedonadb")
ENGINES = ("mfa", *PEERS)


@dataclass
class Run:
    """One engine run (one repeat at one size) as the harness saw it."""

    engine: str
    n: int
    repeat: int
    ok: bool
    #: whole process, start to exit (mfa: the ``mfa run`` process; peers: ``scale.py _one``)
    wall_s: float | None = None
    #: peers: from before reading to after writing; mfa: sum of run.json ``timings_s``
    compute_s: float | None = None
    #: peers: the engine's imports (in ``wall_s``, not in ``compute_s``)
    import_s: float | None = None
    #: input register records ÷ ``wall_s``
    buildings_per_s: float | None = None
    peak_rss_mb: float | None = None
    rss_self_mb: float | None = None
    tree_peak_rss_mb: float | None = None
    #: mfa: run.json ``timings_s`` and ``row_counts``
    timings_s: dict[str, float] | None = None
    row_counts: dict[str, int] | None = None
    error: str | None = None
    #: peers: the peer checked against exactly (None for the reference peer itself)
    reference: str | None = None
    agrees: bool | None = None
    disagreements: list[str] = field(default_factory=list)
    #: against mfa's published layers (see bench_agree.versus_mfa)
    versus_mfa: dict[str, Any] | None = None


# --------------------------------------------------------------------------------------
# child side


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


def mfa_command(pipeline: Path, output: Path) -> list[str]:
    """``mfa run --no-prefect PIPELINE -o OUTPUT`` with this interpreter's ``mfa``."""
    script = Path(sys.executable).with_name("mfa")
    head = [str(script)] if script.is_file() else [sys.executable, "-m", "mfa.cli"]
    return [*head, "run", "--no-prefect", str(pipeline), "-o", str(output)]


def _one_mfa(city: Path, output: Path) -> dict[str, Any]:
    cmd = mfa_command(city / "pipeline.toml", output)
    print("+ " + " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, check=False)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        print(f"mfa run exited with status {done.returncode}", flush=True)
        sys.exit(done.returncode if done.returncode > 0 else 128 - done.returncode)
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # KiB on Linux
    return {"wall_s": wall, "import_s": None, "compute_s": None, "rss_self_mb": rss}


def one(argv: list[str]) -> None:
    """Child process: run one engine once, write timings and peak RSS as JSON."""
    ap = argparse.ArgumentParser(prog="scale.py _one")
    ap.add_argument("--engine", required=True, choices=ENGINES)
    ap.add_argument("--city", type=Path, required=True)
    ap.add_argument("--lookups", type=Path, required=True)
    ap.add_argument("--output", type=Path, required=True)
    ap.add_argument("--result", type=Path, required=True)
    a = ap.parse_args(argv)
    if a.engine == "mfa":
        result = _one_mfa(a.city, a.output)
    else:
        t0 = time.perf_counter()
        if a.engine == "geopandas":
            from peers.geopandas_naive import run
        elif a.engine == "duckdb":
            from peers.duckdb_spatial import run
        else:
            from peers.sedonadb import run
        t1 = time.perf_counter()
        run(a.city / "register.parquet", a.city / "districts.parquet", a.lookups, a.output)
        t2 = time.perf_counter()
        result = {"import_s": t1 - t0, "compute_s": t2 - t1, "rss_self_mb": own_peak_rss_mb()}
    a.result.write_text(json.dumps(result))


# --------------------------------------------------------------------------------------
# parent side


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


def published_run(output: Path) -> Path | None:
    """The run folder ``mfa run -o OUTPUT`` published (``OUTPUT/<pipeline>/latest``)."""
    found = sorted(output.glob("*/latest/run.json"))
    return found[0].parent if len(found) == 1 else None


def _failure(code: int, log: Path) -> str:
    lines = log.read_text(errors="replace").strip().splitlines()
    tail = lines[-1][:300] if lines else "no output"
    if code == -signal.SIGKILL:
        why = "killed by SIGKILL (out of memory?)"
    elif code < 0:
        why = f"killed by signal {-code}"
    else:
        why = f"exit status {code}"
    return f"{why}: {tail} (log: {log})"


def run_child(
    engine: str,
    n: int,
    repeat: int,
    city: Path,
    lookups: Path,
    output: Path,
    logs: Path,
    timeout: float,
) -> Run:
    """Run one engine once in a fresh process and collect its timings and memory."""
    shutil.rmtree(output, ignore_errors=True)
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / f"n{n}-{engine}-r{repeat}.log"
    result = output.with_name(output.name + ".result.json")
    result.unlink(missing_ok=True)
    cmd = [sys.executable, str(SCALE), "_one", "--engine", engine, "--city", str(city)]
    cmd += ["--lookups", str(lookups), "--output", str(output), "--result", str(result)]
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
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            os.killpg(proc.pid, signal.SIGKILL)  # the child's own session: only what we started
            code = proc.wait()
        stop.set()
        sampler.join()
    process_s = time.perf_counter() - t0
    run = Run(engine, n, repeat, ok=False, wall_s=process_s, tree_peak_rss_mb=peak[0])
    if timed_out:
        run.error = f"timed out after {timeout:g} s (--timeout)"
        return run
    if code != 0 or not result.is_file():
        run.error = _failure(code, log)
        return run
    r = json.loads(result.read_text())
    run.import_s, run.compute_s = r["import_s"], r["compute_s"]
    run.rss_self_mb = r["rss_self_mb"]
    run.peak_rss_mb = max(r["rss_self_mb"], peak[0])
    if engine == "mfa":
        run.wall_s = r["wall_s"]  # the mfa process alone, not the child that started it
        folder = published_run(output)
        if folder is None:
            run.error = f"mfa run exited 0 but published no run under {output} (log: {log})"
            return run
        manifest = json.loads((folder / "run.json").read_text())
        run.timings_s = {k: float(v) for k, v in manifest["timings_s"].items() if v is not None}
        run.row_counts = manifest["row_counts"]
        run.compute_s = sum(run.timings_s.values())
    run.ok = True
    run.buildings_per_s = n / run.wall_s if run.wall_s else math.inf
    return run

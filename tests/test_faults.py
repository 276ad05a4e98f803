"""Faults: a concurrent run, killed runs at many points, leftovers, retention."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mfa.run import RunLockedError, run_lock, run_pipeline
from tests.conftest import ROOT


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_second_run_at_once_stops_with_a_message(tmp_path: Path) -> None:
    pipeline = ROOT / "pipelines" / "osm-sample.toml"
    with run_lock(pipeline, tmp_path), pytest.raises(RunLockedError, match="another run"):
        run_pipeline(pipeline, tmp_path)
    run_pipeline(pipeline, tmp_path)  # the lock is free again


def test_leftovers_are_cleaned_and_old_runs_pruned(sample_copy: Path, tmp_path: Path) -> None:
    pipeline = sample_copy / "pipelines" / "osm-sample.toml"
    pipeline.write_text(pipeline.read_text() + "\n[output]\nkeep_runs = 2\n")
    out = tmp_path / "out"
    runs = [run_pipeline(pipeline, out) for _ in range(3)]
    folder = out / "osm-sample"
    stale = folder / ".work" / "20000101T000000Z-dead00"
    stale.mkdir(parents=True)
    (stale / "buildings.parquet.tmp").write_bytes(b"half a file")
    (folder / ".latest-20000101T000000Z-dead00").symlink_to(runs[0].name)
    fourth = run_pipeline(pipeline, out)
    published = sorted(p.name for p in folder.iterdir() if p.name[0].isdigit())
    assert published == sorted([runs[2].name, fourth.name])  # keep_runs = 2
    assert not (folder / ".work").exists()
    assert not list(folder.glob(".latest-*"))


@pytest.mark.slow
@pytest.mark.parametrize("delay", [0.5, 1.5, 2.5, 3.5, 4.5, 5.5, 6.5, 8.0])
def test_sigkill_at_any_point_leaves_latest_intact(tmp_path: Path, delay: float) -> None:
    """Kill `mfa run` with SIGKILL after `delay` seconds (imports, reading, computing,
    writing, publishing, depending on the delay): the previous `latest` is byte-identical
    and the next run succeeds."""
    pipeline = ROOT / "pipelines" / "dk-sample.toml"
    out = tmp_path / "out"
    first = run_pipeline(pipeline, out)
    latest = out / "dk-sample" / "latest"
    before = _digest(latest)
    proc = subprocess.Popen(
        [sys.executable, "-m", "mfa.cli", "run", str(pipeline), "--no-prefect", "-o", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(delay)
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    now = latest.resolve()
    if now == first.resolve():
        assert _digest(latest) == before
    else:  # the run finished before the kill: a complete new run, checked like any other
        assert json.loads((latest / "run.json").read_text())["status"] == "succeeded"
    third = run_pipeline(pipeline, out)
    assert latest.resolve() == third.resolve()
    assert not (out / "dk-sample" / ".work").exists()

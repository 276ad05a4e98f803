"""Faults: a concurrent run, killed runs at many points, leftovers, retention."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mfa.failpoints import POINTS
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
@pytest.mark.parametrize("delay", [0.5, 2.5, 4.5, 6.5])
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


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One published dk-sample run (each test works on a copy)."""
    out = tmp_path_factory.mktemp("published")
    run_pipeline(ROOT / "pipelines" / "dk-sample.toml", out)
    return out


def _killed_at(point: str, out: Path, pipeline: Path, *flags: str) -> None:
    """Run ``mfa run`` until it kills itself at ``point`` (and check that it did)."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mfa.cli",
            "run",
            str(pipeline),
            "--no-prefect",
            "-o",
            str(out),
            *flags,
        ],
        env={**os.environ, "MFA_FAILPOINT": point},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == -signal.SIGKILL, (
        f"the run did not reach {point} (exit {proc.returncode}): {proc.stderr[-2000:]}"
    )


def _after_the_kill(point: str, folder: Path, first: Path, before: dict[str, str]) -> None:
    """The previous ``latest`` byte-identical (or, killed after the switch, a complete new
    run); no temporary file in a published run; the next run succeeds and cleans up."""
    latest = folder / "latest"
    if point == "publish:switched":  # the new run was complete and in place: it stands
        assert latest.resolve() != first.resolve()
        assert json.loads((latest / "run.json").read_text())["status"] == "succeeded"
    else:
        assert latest.resolve() == first.resolve()
        assert _digest(latest) == before
    for run in (d for d in folder.iterdir() if d.name[0].isdigit()):
        assert not [f.name for f in run.iterdir() if f.name.endswith(".tmp")], run
        if run != first.resolve():  # killed after the rename: a complete, checked run
            assert json.loads((run / "run.json").read_text())["status"] == "succeeded"


@pytest.mark.slow
@pytest.mark.parametrize("point", POINTS)
def test_sigkill_at_each_failpoint_leaves_latest_intact(
    published: Path, tmp_path: Path, point: str
) -> None:
    """Killed at each named point of a run (mfa.failpoints, in run order: staged write,
    compute, each layer's write before its rename, QGIS files, the checks, the rename,
    the new link, the switch)."""
    pipeline = ROOT / "pipelines" / "dk-sample.toml"
    out = tmp_path / "out"
    shutil.copytree(published, out, symlinks=True)
    folder = out / "dk-sample"
    first = (folder / "latest").resolve()
    before = _digest(folder / "latest")
    _killed_at(point, out, pipeline)
    _after_the_kill(point, folder, first, before)
    third = run_pipeline(pipeline, out)
    assert (folder / "latest").resolve() == third.resolve()
    assert not (folder / ".work").exists()
    assert not list(folder.glob(".latest-*"))

"""The GeoPackage's buildings layer written by a child process (mfa.io.qgis.background):
the same GeoPackage as written in line, and the child's failures, kills and death with
mfa, on real dk-sample runs (``[compute] geopackage_process_min_buildings = 0``)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mfa.errors import ConfigError, OutputWriteError
from mfa.run import run_pipeline
from tests.conftest import ROOT
from tests.test_faults import _digest

pytestmark = pytest.mark.slow

ENV = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}:{ROOT}"}
WRITER = "mfa.io.qgis.background"


def child_pipeline(folder: Path, min_buildings: int = 0) -> Path:
    """pipelines/dk-sample.toml with the GeoPackage's buildings layer written by a child
    process from ``min_buildings`` buildings (two workers: never in line for the cores)."""
    text = (ROOT / "pipelines" / "dk-sample.toml").read_text().replace('"../', f'"{ROOT}/')
    text = text.replace(
        "[compute]\n",
        f"[compute]\nworkers = 2\ngeopackage_process_min_buildings = {min_buildings}\n",
    )
    path = folder / "dk-sample.toml"
    path.write_text(text)
    return path


def gpkg_content(path: Path) -> list[str]:
    """A GeoPackage's tables, contents, geometry columns, extensions and rows, without
    its timestamps (last_change, update_time)."""
    con = sqlite3.connect(path)
    out = [f"{n}: {s}" for n, s in con.execute("SELECT name, sql FROM sqlite_master ORDER BY 1")]
    out += map(
        repr,
        con.execute(
            "SELECT table_name, data_type, identifier, description, min_x, min_y, max_x, "
            "max_y, srs_id FROM gpkg_contents ORDER BY rowid"
        ),
    )
    out += map(repr, con.execute("SELECT * FROM gpkg_geometry_columns ORDER BY 1"))
    out += map(repr, con.execute("SELECT * FROM gpkg_extensions ORDER BY 1, 2"))
    for (table,) in con.execute("SELECT table_name FROM gpkg_contents").fetchall():
        cols = [r[1] for r in con.execute(f'PRAGMA table_info("{table}")') if r[1] != "update_time"]
        h = hashlib.sha256()
        for row in con.execute(f'SELECT {", ".join(map(repr, cols))} FROM "{table}" ORDER BY 1'):
            h.update(repr(row).encode())
        out.append(f"{table}: {h.hexdigest()}")
    con.close()
    return out


def writers(out: Path) -> list[int]:
    """The pids of running (not zombie) GeoPackage writer processes writing under
    ``out`` (other runs on the machine are not ours)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if WRITER.encode() in cmd and str(out).encode() in b" ".join(cmd) and state != "Z":
            found.append(int(proc.name))
    return found


def _how(run: Path) -> dict:
    """How the run wrote the GeoPackage's buildings layer (run.json)."""
    return json.loads((run / "run.json").read_text())["compute"]["engine"]["geopackage"]


def test_the_process_writes_the_geopackage_the_run_writes_in_line(
    dk_sample_run: Path, tmp_path: Path
) -> None:
    run = run_pipeline(child_pipeline(tmp_path), tmp_path / "out")
    ours = run / "layers.gpkg"
    assert gpkg_content(ours) == gpkg_content(dk_sample_run / "layers.gpkg")
    assert _how(run)["buildings_layer"] == "separate process"
    assert _how(run)["process_max_rss_mb"] > 0 and _how(run)["waited_s"] >= 0
    assert _how(dk_sample_run)["buildings_layer"] == "in line"
    assert not writers(tmp_path)


def test_a_small_city_writes_the_layer_in_line(tmp_path: Path) -> None:
    """Below ``geopackage_process_min_buildings`` no process is started."""
    run = run_pipeline(child_pipeline(tmp_path, min_buildings=2_145), tmp_path / "out")
    assert _how(run)["buildings_layer"] == "in line"


@pytest.fixture
def published(tmp_path: Path) -> tuple[Path, Path, dict[str, str]]:
    """A published child-process run: the pipeline, its output root, latest's digest."""
    pipeline = child_pipeline(tmp_path)
    out = tmp_path / "out"
    run_pipeline(pipeline, out)
    return pipeline, out, _digest(out / "dk-sample" / "latest")


def _intact(out: Path, before: dict[str, str]) -> None:
    folder = out / "dk-sample"
    assert _digest(folder / "latest") == before
    assert not (folder / ".work").exists()
    assert not writers(out)


def test_a_writer_killed_mid_write_fails_the_run_in_one_line(published, tmp_path: Path) -> None:
    """The child kills itself (SIGKILL) with the layer half written: ``mfa run`` fails
    with one line naming the GeoPackage and the cause, publishes nothing, and the next
    run succeeds."""
    pipeline, out, before = published
    done = subprocess.run(
        [sys.executable, "-m", "mfa.cli", "run", str(pipeline), "--no-prefect", "-o", str(out)],
        env={**ENV, "MFA_FAILPOINT": "gpkg:buildings"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, done.stderr[-2000:]
    assert "layers.gpkg: writing its buildings layer" in errors[0]
    assert "SIGKILL" in errors[0] and "'latest' is unchanged" in errors[0]
    _intact(out, before)
    failure = (out / "dk-sample" / "last-failure.md").read_text()
    assert "Step **qgis** failed" in failure and "OutputWriteError" in failure
    run_pipeline(pipeline, out)  # the next run succeeds
    assert _digest(out / "dk-sample" / "latest") != before


def test_a_writer_killed_in_process_raises_its_error(published, monkeypatch) -> None:
    """The same through :func:`mfa.run.run_pipeline`: an ``OutputWriteError``, no child
    left, ``latest`` byte-identical."""
    pipeline, out, before = published
    monkeypatch.setenv("MFA_FAILPOINT", "gpkg:buildings")
    with pytest.raises(OutputWriteError, match=r"layers\.gpkg: writing its buildings layer"):
        run_pipeline(pipeline, out)
    _intact(out, before)


def test_a_failed_step_kills_the_writer(published, monkeypatch) -> None:
    """A step that fails while the writer is stopped mid-write (the flows step, on a
    flows file it cannot read) ends the run with that step's error and no writer left."""
    pipeline, out, before = published
    monkeypatch.setenv("MFA_FAILPOINT", "gpkg:buildings")
    monkeypatch.setenv("MFA_FAILPOINT_ACTION", "stop")
    lifetimes = ROOT / "config" / "lifetimes.toml"
    broken = pipeline.parent / "lifetimes.toml"
    broken.write_text(lifetimes.read_text() + "\n[[[not toml\n")
    pipeline.write_text(pipeline.read_text().replace(str(lifetimes), str(broken)))
    with pytest.raises(ConfigError, match=r"lifetimes\.toml: not valid TOML"):
        run_pipeline(pipeline, out)
    assert "Step **flows** failed" in (out / "dk-sample" / "last-failure.md").read_text()
    _intact(out, before)


def test_the_writer_dies_with_mfa(published) -> None:
    """SIGKILL of ``mfa run`` while its writer is stopped mid-write: the kernel kills the
    writer too (PR_SET_PDEATHSIG); the next run succeeds."""
    pipeline, out, before = published
    proc = subprocess.Popen(
        [sys.executable, "-m", "mfa.cli", "run", str(pipeline), "--no-prefect", "-o", str(out)],
        env={**ENV, "MFA_FAILPOINT": "gpkg:buildings", "MFA_FAILPOINT_ACTION": "stop"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 240
        while not writers(out):
            assert proc.poll() is None and time.monotonic() < deadline, "no writer started"
            time.sleep(0.05)
        (writer,) = writers(out)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 10
        while writers(out) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not writers(out), f"writer {writer} outlived mfa"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert _digest(out / "dk-sample" / "latest") == before
    run_pipeline(pipeline, out)  # the killed run's work folder is removed, the run succeeds
    assert not (out / "dk-sample" / ".work").exists()


def test_a_writer_that_fails_says_why_in_one_line(tmp_path: Path) -> None:
    """A child that raises (here: its source is no Parquet file) is one line naming the
    GeoPackage and the cause, not the child's traceback."""
    from mfa.io.qgis.background import start_layer_process

    source = tmp_path / "buildings.parquet"
    source.write_bytes(b"not a parquet file")
    process = start_layer_process(tmp_path / "layers.gpkg", "buildings", source, "EPSG:25832")
    with pytest.raises(OutputWriteError) as caught:
        process.wait()
    message = str(caught.value)
    assert message.startswith(f"{tmp_path / 'layers.gpkg'}: writing its buildings layer")
    assert "Parquet" in message and "'latest' is unchanged" in message
    assert "\n" not in message and "Traceback" not in message
    process.stop()  # harmless once it has ended

"""A real full and a real read-only file system (issue 19), not a simulated ENOSPC.

The output root is a small tmpfs (mounted for this module; root or CAP_SYS_ADMIN needed,
else the module is skipped with the reason). After one published run of
``pipelines/dk-sample.toml``, the next run stops itself at a failpoint
(``MFA_FAILPOINT_ACTION=stop``), a filler file takes every free byte, and the run goes on
to fail in that step; then ``mfa query``, ``mfa match`` and ``mfa pull`` write onto the
full disk, and everything once more onto the file system remounted read-only. Each
failure must be one line naming the folder and the fix (exit 2, no traceback), ``latest``
byte-identical, nothing half-written or temporary left behind, and the next run after
freeing space succeeds.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mfa.io.storage import storage_errno
from mfa.run import run_pipeline
from tests.conftest import ROOT
from tests.pull_helpers import REGISTER, features, pipeline_file, service, snapshots_in
from tests.test_bad_inputs import _digest

pytestmark = pytest.mark.slow
__all__ = ["features", "service"]  # fixtures, imported for pytest

PIPELINE = ROOT / "pipelines" / "dk-sample.toml"
DEMAND = ROOT / "tests" / "data" / "match_demand_kalundborg.csv"
ENV = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}:{ROOT}"}


def _mount(target: Path, options: str) -> None:
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(
            f"cannot mount a tmpfs ({done.stderr.strip() or 'mount failed'}): this test needs "
            "root or CAP_SYS_ADMIN, as CI has"
        )


@dataclass
class Disk:
    """The tmpfs, the output root on it and the published first run."""

    mount: Path
    out: Path
    latest: Path
    before: dict[str, str]
    run_bytes: int

    @property
    def folder(self) -> Path:
        return self.out / "dk-sample"

    @contextlib.contextmanager
    def full(self, free: int) -> Iterator[None]:
        """Only ``free`` bytes left (a filler file takes the rest) until the block ends."""
        filler = self.mount / "filler"
        st = os.statvfs(self.mount)
        with open(filler, "wb") as f:
            f.write(b"\0" * max(0, st.f_bavail * st.f_frsize - free))
        try:
            yield
        finally:
            filler.unlink()

    @contextlib.contextmanager
    def read_only(self) -> Iterator[None]:
        subprocess.run(["mount", "-o", "remount,ro", str(self.mount)], check=True)
        try:
            yield
        finally:
            subprocess.run(["mount", "-o", "remount,rw", str(self.mount)], check=True)

    def intact(self) -> None:
        """``latest`` is the first run, byte for byte; no work folder, no temporary."""
        assert _digest(self.latest) == self.before
        assert not (self.folder / ".work").exists()
        left = [p for p in self.mount.rglob("*") if p.name.endswith((".tmp", ".plain.tif"))]
        assert not left and not list(self.mount.rglob(".*.work-*"))


@pytest.fixture(scope="module")
def disk(tmp_path_factory) -> Iterator[Disk]:
    mount = tmp_path_factory.mktemp("tmpfs")
    _mount(mount, "size=40m")
    try:
        out = mount / "out"
        first = run_pipeline(PIPELINE, out)
        latest = out / "dk-sample" / "latest"
        size = sum(f.stat().st_size for f in first.rglob("*") if f.is_file())
        yield Disk(mount, out, latest, _digest(latest), size)
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _mfa(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mfa.cli", *args],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _one_line_error(done: subprocess.CompletedProcess, *parts: str) -> str:
    """The command failed with exit 2 and one ``error:`` line holding ``parts``."""
    assert done.returncode == 2, (done.returncode, done.stderr[-2000:])
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, done.stderr[-2000:]
    for part in parts:
        assert part in errors[0], errors[0]
    return errors[0]


def _run(disk: Disk) -> subprocess.CompletedProcess:
    return _mfa("run", str(PIPELINE), "--no-prefect", "-o", str(disk.out))


def _stopped(pid: int) -> bool:
    """True when process ``pid`` is stopped (state T in /proc/<pid>/stat)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in "Tt"


def _run_filled_at(
    disk: Disk, point: str, free: int = 0, prefect: bool = False, home: Path | None = None
) -> subprocess.CompletedProcess:
    """``mfa run`` that stops itself at failpoint ``point``; the disk is filled (``free``
    bytes left), then it goes on and fails in the step of the point or after it. With
    ``prefect``, the Prefect runner; its temporary server keeps its state in ``home``
    (PREFECT_HOME), by default off the full disk."""
    env = {**ENV, "MFA_FAILPOINT": point, "MFA_FAILPOINT_ACTION": "stop"}
    if home is not None:
        env["PREFECT_HOME"] = str(home)
        env.pop("PREFECT_API_URL", None)
    args = [sys.executable, "-m", "mfa.cli", "run", str(PIPELINE)]
    if not prefect:
        args.append("--no-prefect")
    proc = subprocess.Popen(
        [*args, "-o", str(disk.out)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 240
        while not _stopped(proc.pid):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, f"the run never reached {point}"
            time.sleep(0.05)
        with disk.full(free):
            os.kill(proc.pid, signal.SIGCONT)
            stdout, stderr = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


#: The step that fails, the failpoint in it after which the disk is filled (None: full
#: before the run starts) and the bytes left free: staging the buildings, finishing the
#: buildings layer, the rasters (after the districts layer), the GeoPackage (room only
#: for the flows step's small report) and at publish (room only for the qgis step's
#: report, not for dropped.csv and run.json).
LEVELS = [
    ("prepare", None, 0),
    ("buildings", "buildings:computed", 0),
    ("stocks", "write:buildings.parquet", 0),
    ("districts", "write:districts.parquet", 0),
    ("qgis", "write:flows.parquet", 64 * 1024),
    ("publish", "qgis:written", 64 * 1024),
]


@pytest.mark.parametrize(("step", "point", "free"), LEVELS, ids=[s for s, _, _ in LEVELS])
def test_run_on_a_full_disk(disk: Disk, step: str, point: str | None, free: int) -> None:
    if point is None:
        with disk.full(free):
            done = _run(disk)
    else:
        done = _run_filled_at(disk, point, free)
    _one_line_error(
        done, f"{disk.folder}: cannot write", "full", "'latest' is unchanged", "--output-dir"
    )
    disk.intact()
    failure = disk.folder / "last-failure.md"
    if step == "prepare":  # no run started: nothing to record
        assert not failure.exists() or "Step **prepare**" not in failure.read_text()
    else:
        text = failure.read_text()
        assert f"Step **{step}** failed" in text and "OutputStorageError" in text, text


#: The Prefect runner on the full disk: the engine's layers, and publishing.
PREFECT_LEVELS = [LEVELS[2], LEVELS[5]]


@pytest.mark.parametrize(
    ("step", "point", "free"), PREFECT_LEVELS, ids=[s for s, _, _ in PREFECT_LEVELS]
)
def test_prefect_run_on_a_full_disk(disk: Disk, step: str, point: str, free: int) -> None:
    """``mfa run`` without ``--no-prefect``: the same one line and exit code as the plain
    runner, no traceback from Prefect's logging, ``latest`` byte-identical."""
    done = _run_filled_at(disk, point, free, prefect=True)
    _one_line_error(
        done, f"{disk.folder}: cannot write", "full", "'latest' is unchanged", "--output-dir"
    )
    disk.intact()
    text = (disk.folder / "last-failure.md").read_text()
    assert f"Step **{step}** failed" in text and "OutputStorageError" in text, text


def test_prefect_run_with_its_state_on_the_full_disk(disk: Disk) -> None:
    """The Prefect runner whose server keeps its database on the disk that fills (the
    default: the per-user state folder on the same disk as the outputs): the same line."""
    home = disk.mount / "prefect-state"
    done = _run_filled_at(disk, "write:buildings.parquet", 0, prefect=True, home=home)
    _one_line_error(
        done, f"{disk.folder}: cannot write", "full", "'latest' is unchanged", "--output-dir"
    )
    disk.intact()


def test_a_full_disk_in_the_geopackage_process(disk: Disk, tmp_path: Path) -> None:
    """The GeoPackage's buildings layer written by its own process (mfa.io.qgis.
    background) onto the full disk: the run fails with the same one line, in the qgis
    step that waits for it. The writer stops itself mid-write; the disk is filled once
    the run waits for it (the flows step is done), then it goes on."""
    from tests.test_gpkg_process import child_pipeline, writers

    pipeline = child_pipeline(tmp_path)
    env = {**ENV, "MFA_FAILPOINT": "gpkg:buildings", "MFA_FAILPOINT_ACTION": "stop"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mfa.cli",
            "run",
            str(pipeline),
            "--no-prefect",
            "-o",
            str(disk.out),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 240
        while not (
            writers(disk.out)
            and all(_stopped(pid) for pid in writers(disk.out))
            and list(disk.folder.glob(".work/*/reports/flows.json"))
        ):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the writer never stopped mid-write"
            time.sleep(0.05)
        with disk.full(0):
            for pid in writers(disk.out):
                os.kill(pid, signal.SIGCONT)
            stdout, stderr = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    done = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    _one_line_error(
        done, f"{disk.folder}: cannot write", "full", "'latest' is unchanged", "--output-dir"
    )
    disk.intact()
    assert not writers(disk.out)
    text = (disk.folder / "last-failure.md").read_text()
    assert "Step **qgis** failed" in text and "OutputStorageError" in text, text


def test_a_failure_that_does_not_say_is_put_down_to_no_space_only_at_none(disk: Disk) -> None:
    """A write that fails without an errno or the words of a full disk (GDAL's GeoPackage
    writer: "no such table: gpkg_contents") is a full disk only when not one block is
    free: no threshold of "nearly full" (it was 1 MiB: 64 KiB free was called full); a
    read-only mount is asked and said."""
    vague = RuntimeError("no such table: gpkg_contents")
    with disk.full(64 * 1024):
        assert storage_errno(vague, disk.folder) is None
    with disk.full(0):
        assert storage_errno(vague, disk.folder) == errno.ENOSPC
    with disk.read_only():
        assert storage_errno(vague, disk.folder) == errno.EROFS
    assert storage_errno(vague, disk.folder) is None


def test_after_freeing_space_the_next_run_succeeds(disk: Disk) -> None:
    _one_line_error(_run_filled_at(disk, "write:buildings.parquet"), "full")
    done = _run(disk)  # the filler is gone
    assert done.returncode == 0, done.stderr[-2000:]
    new = disk.latest.resolve()
    assert json.loads((new / "run.json").read_text())["status"] == "succeeded"
    assert not (disk.folder / ".work").exists()
    disk.before = _digest(disk.latest)


# ------------------------------------------------- the answers: query, match, pull, maps

QUERY = ["--around", "643786,6150882", "--radius", "3000", "--years", "2026-2035"]


def _answers(disk: Disk, folder: Path) -> list[tuple[list[str], Path, str]]:
    """Each command writing into ``folder``: its arguments, what it writes, the option."""
    run = str(disk.latest)
    q = ["query", run, *QUERY]
    made = [
        ([*q, "--format", fmt, "-o", str(folder / f"a.{fmt}")], folder / f"a.{fmt}", "--output")
        for fmt in ("csv", "geojson", "parquet")
    ]
    return [
        *made,
        ([*q, "--map", str(folder / "q.html")], folder / "q.html", "--map"),
        (["match", run, "--demand", str(DEMAND), "-o", str(folder / "m")], folder / "m", "-o"),
    ]


def _nothing_written(folder: Path) -> None:
    """No answer, half or whole, and no temporary of one, in ``folder``."""
    assert sorted(p.name for p in folder.iterdir()) == [], sorted(folder.iterdir())


def test_query_and_match_on_a_full_disk(disk: Disk) -> None:
    folder = disk.mount / "answers"
    folder.mkdir(exist_ok=True)
    with disk.full(0):
        for args, target, option in _answers(disk, folder):
            line = _one_line_error(_mfa(*args), f"{folder}: cannot write", "full", str(target))
            assert option in line
            _nothing_written(folder)
    disk.intact()


def test_run_query_match_on_a_read_only_output_root(disk: Disk) -> None:
    folder = disk.mount / "answers"
    folder.mkdir(exist_ok=True)
    with disk.read_only():
        _one_line_error(
            _run(disk), f"{disk.folder}: cannot write", "read-only", "remount it read-write"
        )
        for args, target, _ in _answers(disk, folder):
            _one_line_error(_mfa(*args), f"{folder}: cannot write", "read-only", str(target))
    _nothing_written(folder)
    disk.intact()


def test_pull_into_a_full_or_read_only_snapshot_store(disk: Disk, service: str) -> None:
    """The snapshot store on the full, then the read-only, disk: one line naming the
    store, no snapshot (whole or half) published; with space, the pull succeeds."""
    home = disk.mount / "pull"
    home.mkdir(exist_ok=True)
    pipeline = pipeline_file(home, service)
    store = home / "cache"
    with disk.full(0):
        done = _mfa("pull", str(pipeline), "-o", str(disk.out))
    _one_line_error(done, f"{store}: cannot write", "full", "[cache] dir")
    # a download's part file may stay in the source's work folder (.pull/), to be resumed
    # once there is space (mfa.pull.download); nothing half-written anywhere else
    assert snapshots_in(store) == []
    assert all(".pull" in p.relative_to(store).parts for p in store.rglob("*.part"))
    with disk.read_only():
        done = _mfa("pull", str(pipeline), "-o", str(disk.out))
    _one_line_error(done, "cannot write", "read-only")
    done = _mfa("pull", str(pipeline), "-o", str(disk.out))
    assert done.returncode == 0, done.stderr[-2000:]
    (snap,) = [p for p in snapshots_in(store) if p.suffix == ".parquet"]
    assert snap.read_bytes() == REGISTER.read_bytes()
    disk.intact()


def test_prefect_home_on_a_full_or_read_only_disk(disk: Disk) -> None:
    """The Prefect runner's state (PREFECT_HOME) on the full, then the read-only, disk:
    one line before any server starts (it used to retry for the 120 s start-up limit,
    printing thousands of lines of tracebacks, then report a timeout)."""
    home = disk.mount / "prefect-home"
    env = {**ENV, "PREFECT_HOME": str(home)}
    env.pop("PREFECT_API_URL", None)
    args = [sys.executable, "-m", "mfa.cli", "run", str(PIPELINE), "-o", str(disk.out)]
    for state, hold in (("full", disk.full(0)), ("read-only", disk.read_only())):
        t0 = time.monotonic()
        with hold:
            done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True)
        assert time.monotonic() - t0 < 60
        _one_line_error(done, f"{home}: cannot write", state, "PREFECT_HOME", "--no-prefect")
        assert "Traceback" not in done.stderr and len(done.stderr.splitlines()) < 5
    disk.intact()


def test_synth_on_a_full_disk(disk: Disk) -> None:
    target = disk.mount / "city"
    with disk.full(0):
        done = _mfa("synth", "-n", "500", "-o", str(target))
    _one_line_error(done, f"{target}: cannot write", "full", f"{target} is as it was")
    assert not target.exists() and not list(disk.mount.glob(".city.synth-*"))
    disk.intact()

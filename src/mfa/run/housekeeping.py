"""Around the runs of a pipeline: the run lock, what killed runs leave, retention of
old runs, the record of a failed run."""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path

from mfa.config import load_pipeline
from mfa.errors import MfaError
from mfa.report import failure_markdown
from mfa.run.context import FAILURE, MANIFEST, RUN_ID, _ctx, log


class RunLockedError(MfaError, RuntimeError):
    """Another run of the same pipeline is in progress."""


@contextlib.contextmanager
def run_lock(pipeline_file: str | Path, output_dir: str | Path | None = None):
    """Hold ``<out>/<pipeline>/.lock`` for a whole run; a second run stops with a message.

    The lock is an OS file lock (``flock``): it is released when the holding process
    ends, even when it is killed, so a crashed run never blocks the next one. Holding it,
    the run also removes what killed runs left behind (work folders, temporary links).
    """
    import fcntl

    p = load_pipeline(pipeline_file)
    folder = p.output_root(Path(output_dir) if output_dir is not None else None) / p.name
    folder.mkdir(parents=True, exist_ok=True)
    handle = open(folder / ".lock", "w")  # noqa: SIM115 - held for the whole run
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunLockedError(
                f"{folder}: another run of {p.name} is in progress; wait for it to finish "
                "(its outputs will be published as 'latest')"
            ) from None
        _clean_leftovers(folder)
        yield folder
    finally:
        handle.close()


def _clean_leftovers(folder: Path) -> None:
    """Remove the work folders and temporary links of killed runs (call under the lock)."""
    work = folder / ".work"
    if work.is_dir():
        for leftover in work.iterdir():
            log.warning("removing %s, left behind by an interrupted run", leftover)
            shutil.rmtree(leftover, ignore_errors=True)
        with contextlib.suppress(OSError):
            work.rmdir()
    for link in folder.glob(".latest-*"):
        if link.is_symlink() and RUN_ID.fullmatch(link.name.removeprefix(".latest-")):
            link.unlink(missing_ok=True)
    for run in _run_folders(folder):
        for tmp in run.glob("*.tmp"):  # mfa's temporaries are '<its file name>.tmp'
            if tmp.is_file() and tmp.name.endswith(_MFA_TMP_SUFFIXES):
                tmp.unlink(missing_ok=True)


#: The temporaries of mfa's atomic writes (layers, rasters, GeoPackage, JSON).
_MFA_TMP_SUFFIXES = (".parquet.tmp", ".tif.tmp", ".gpkg.tmp", ".json.tmp")


def _run_folders(folder: Path) -> list[Path]:
    """The published run folders under ``folder``: named as mfa names runs (:data:`RUN_ID`),
    real folders (not links) holding mfa's ``run.json``. Nothing else is ever deleted."""
    return sorted(
        (
            d
            for d in folder.iterdir()
            if RUN_ID.fullmatch(d.name)
            and d.is_dir()
            and not d.is_symlink()
            and (d / MANIFEST).is_file()
        ),
        key=lambda d: d.name,
    )


def prune_runs(folder: Path, keep: int) -> list[str]:
    """Delete all but the newest ``keep`` published runs (never the one ``latest`` names)."""
    latest = (folder / "latest").resolve() if (folder / "latest").exists() else None
    runs = _run_folders(folder)
    removed = []
    for old in runs[: max(0, len(runs) - keep)]:
        if latest is not None and old.resolve() == latest:
            continue
        shutil.rmtree(old, ignore_errors=True)
        removed.append(old.name)
    return removed


def record_failure(work_dir: Path, step: str, error: BaseException) -> None:
    """Write ``<out>/<pipeline>/last-failure.md`` (the step and the error), then discard."""
    work = Path(work_dir)
    try:
        ctx = _ctx(work)
        text = failure_markdown(ctx["pipeline"], ctx["run_id"], step, error)
        (work.parent.parent / FAILURE).write_text(text)
    except (OSError, KeyError, json.JSONDecodeError):
        log.exception("could not write the failure report")
    discard(work)


def discard(work_dir: Path) -> None:
    """Remove a failed run's work folder (published runs and ``latest`` are not touched)."""
    work = Path(work_dir)
    if work.exists() and work.parent.name == ".work":
        shutil.rmtree(work, ignore_errors=True)
        with contextlib.suppress(OSError):
            work.parent.rmdir()  # .work/, when no other run is in progress

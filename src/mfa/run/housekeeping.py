"""Around the runs of a pipeline: the run lock, what killed runs leave, retention of
old runs, the record of a failed run."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path

from mfa.config import load_pipeline
from mfa.errors import MfaError, OutputStorageError
from mfa.io.storage import folder_bytes, storage_error
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
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle = open(folder / ".lock", "w")  # noqa: SIM115 - held for the whole run
    except OSError as exc:
        disk = run_storage_error(exc, folder)
        if disk is not None:
            raise disk from exc
        raise
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


def run_storage_error(exc: BaseException, folder: Path) -> OutputStorageError | None:
    """The one-line error of a run that a full, over-quota or read-only file system
    stopped (:func:`mfa.io.storage.storage_error`), naming the pipeline's output
    ``folder`` and the size of its latest run; None for any other failure."""
    latest = folder / "latest"
    size = folder_bytes(latest.resolve()) if latest.is_dir() else 0
    return storage_error(
        exc,
        folder,
        outcome="nothing was published, 'latest' is unchanged and the run's unfinished "
        "files were removed",
        option="--output-dir",
        needed=f"the latest run takes {size / 1e6:,.1f} MB" if size else "",
    )


def record_failure(work_dir: Path, step: str, error: BaseException) -> OutputStorageError | None:
    """Discard the failed run's work folder, then write ``<out>/<pipeline>/last-failure.md``
    (the step and the error).

    Returns the error to raise instead of ``error`` when a full, over-quota or read-only
    file system caused it (:func:`run_storage_error`), else None. The work folder goes
    first, so a full disk has room for the record again; a record that still cannot be
    written is one warning line (never a half-written file).
    """
    work = Path(work_dir)
    folder = work.parent.parent
    disk = run_storage_error(error, folder) if isinstance(error, Exception) else None
    try:
        ctx = _ctx(work)
        text = failure_markdown(ctx["pipeline"], ctx["run_id"], step, disk or error)
    except (OSError, KeyError, json.JSONDecodeError) as exc:
        text = None
        log.warning("%s: no failure report: the run's context is unreadable (%s)", work, exc)
    discard(work)
    if text is not None:
        tmp = folder / f".{FAILURE}.tmp"
        try:
            tmp.write_text(text)
            os.replace(tmp, folder / FAILURE)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            log.warning("%s: the failure report could not be written (%s)", folder / FAILURE, exc)
    return disk


def discard(work_dir: Path) -> None:
    """Remove a failed run's work folder (published runs and ``latest`` are not touched)."""
    work = Path(work_dir)
    if work.exists() and work.parent.name == ".work":
        shutil.rmtree(work, ignore_errors=True)
        with contextlib.suppress(OSError):
            work.parent.rmdir()  # .work/, when no other run is in progress

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
from mfa.run.context import FAILURE, _ctx, log


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
        link.unlink(missing_ok=True)
    for tmp in folder.glob("*/*.tmp"):
        tmp.unlink(missing_ok=True)


def prune_runs(folder: Path, keep: int) -> list[str]:
    """Delete all but the newest ``keep`` published runs (never the one ``latest`` names)."""
    latest = (folder / "latest").resolve() if (folder / "latest").exists() else None
    runs = sorted(
        (
            d
            for d in folder.iterdir()
            if d.is_dir() and not d.name.startswith(".") and d.name != "latest"
        ),
        key=lambda d: d.name,
    )
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

"""The resume state of a paged pull: pages on disk and the cursor saved after each page.

A paged pull of snapshot ``name`` keeps its work in ``<cache>/<kind>/.pull/<name>/``
(outside the dated snapshot folders, which only ever hold published snapshots)::

    page-000001.json … page-<k>.json    the response body of each page, as received
    state.json                           the cursor: pages done, the next request, what the
                                         first page said (numberMatched, CRS), started_at

Each page is written to a part file, fsynced and renamed; only then is ``state.json``
rewritten the same way. A pull killed at any moment therefore finds either page k with the
cursor of page k, or page k without it (the page is fetched again and replaced): the next
pull continues with page k+1 and ends with the same bytes as an uninterrupted one. The
folder is locked (``flock``) while a pull works in it and removed once the snapshot is
published. State older than :data:`MAX_AGE_H` hours is discarded (the service has moved
on; mixing its pages would make a snapshot of no single day).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from mfa.errors import PullError
from mfa.io.files import fsync_dir

__all__ = [
    "MAX_AGE_H",
    "PageState",
    "SavedPages",
    "last_check",
    "locked_folder",
    "locked_state",
    "remove_state",
    "save_check",
]

#: Resume state older than this (hours) is discarded and the pull starts again.
MAX_AGE_H = 24


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.part")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


@dataclass(frozen=True)
class SavedPages:
    """The bodies of saved pages, read one at a time each time they are iterated (the
    snapshot is assembled in one pass, and ids are confirmed in a second when repeated)."""

    paths: tuple[Path, ...]

    def __iter__(self) -> Iterator[bytes]:
        for path in self.paths:
            yield path.read_bytes()

    def __len__(self) -> int:
        return len(self.paths)


@dataclass
class PageState:
    """The cursor of a paged pull (see the module doc). ``next`` is None when done."""

    folder: Path
    started_at: str
    pages: int = 0
    next: dict[str, Any] | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def page_path(self, k: int) -> Path:
        return self.folder / f"page-{k:06d}.json"

    def save_page(self, body: bytes, next_request: dict[str, Any] | None, **info: Any) -> int:
        """Write the next page, then the cursor after it; return the page number."""
        k = self.pages + 1
        _write_atomic(self.page_path(k), body)
        self.pages, self.next = k, next_request
        self.info.update(info)
        _write_atomic(
            self.folder / "state.json",
            json.dumps(
                {
                    "started_at": self.started_at,
                    "pages": self.pages,
                    "next": self.next,
                    "info": self.info,
                },
                sort_keys=True,
            ).encode(),
        )
        return k

    def bodies(self) -> SavedPages:
        """The saved pages' bodies, in order, read from disk one at a time (as often as
        they are iterated)."""
        return SavedPages(tuple(self.page_path(k) for k in range(1, self.pages + 1)))

    def clear(self) -> None:
        """Remove the pages and the cursor (after publishing, or to start again)."""
        for f in self.folder.glob("*"):
            if f.name != ".lock":
                f.unlink()


@contextlib.contextmanager
def locked_folder(root: Path, kind: str, name: str) -> Iterator[Path]:
    """The work folder of snapshot ``name`` (``<cache>/<kind>/.pull/<name>``), locked
    (``flock``) for this pull; removed afterwards when it holds nothing to resume (no page,
    no downloaded or partly downloaded file: only ``.json`` state or nothing).

    Raises :class:`~mfa.errors.PullError` when another pull of the same source holds it.
    """
    folder = Path(root) / kind / ".pull" / name
    folder.mkdir(parents=True, exist_ok=True)
    handle = open(folder / ".lock", "w")  # noqa: SIM115 - held for the whole pull
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise PullError(
                f"{folder}: another pull of this {kind} source is in progress; wait for it"
            ) from None
        yield folder
    finally:
        handle.close()
        keep = any(
            f.name.startswith("page-") or (f.name != ".lock" and f.suffix != ".json")
            for f in folder.glob("*")
        )
        if not keep:  # nothing to resume: leave no folder behind
            shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def locked_state(
    root: Path, kind: str, name: str, first: dict[str, Any], now: datetime | None = None
) -> Iterator[PageState]:
    """The resume state of snapshot ``name``, locked for this pull.

    ``first`` is the first request (used when there is no state to resume). Raises
    :class:`~mfa.errors.PullError` when another pull of the same source holds the lock.
    """
    now = now or datetime.now(UTC)
    with locked_folder(root, kind, name) as folder:
        state = _load(folder, now)
        if state is None:
            state = PageState(folder, now.isoformat(), 0, first, {})
            state.clear()  # pages of a stale or unreadable pull
        yield state


def _load(folder: Path, now: datetime) -> PageState | None:
    """The saved state, or None (none, unreadable, or older than :data:`MAX_AGE_H`)."""
    path = folder / "state.json"
    if not path.is_file():
        return None
    try:
        raw = json.loads(path.read_text())
        state = PageState(
            folder, str(raw["started_at"]), int(raw["pages"]), raw["next"], dict(raw["info"])
        )
        started = datetime.fromisoformat(state.started_at)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if now - started > timedelta(hours=MAX_AGE_H):
        return None
    if not all(state.page_path(k).is_file() for k in range(1, state.pages + 1)):
        return None
    return state


def _check_path(root: Path, kind: str, name: str) -> Path:
    return Path(root) / kind / ".pull" / f"{name}.checked.json"


def save_check(root: Path, kind: str, name: str, record: dict[str, Any], when: datetime) -> None:
    """Remember the last pull of ``name`` (its manifest record and time), for
    :func:`last_check`. The file is mfa's own state, replaced atomically."""
    path = _check_path(root, kind, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"checked_at": when.isoformat(), "record": record}
    _write_atomic(path, json.dumps(data, sort_keys=True, default=str).encode())


def last_record(root: Path, kind: str, name: str) -> dict[str, Any] | None:
    """The record of the last pull of ``name`` whatever its age, if its snapshot is still
    the newest (the freshness fingerprint it saw, :func:`mfa.pull.oapif.fingerprint`)."""
    return last_check(root, kind, name, float("inf"), datetime.now(UTC))


def last_check(
    root: Path, kind: str, name: str, within_s: float, now: datetime
) -> dict[str, Any] | None:
    """The record of the last pull of ``name`` if it ended less than ``within_s`` seconds
    before ``now`` and its snapshot is still the newest; else None."""
    if within_s <= 0:
        return None
    try:
        data = json.loads(_check_path(root, kind, name).read_text())
        when = datetime.fromisoformat(data["checked_at"])
        record = dict(data["record"])
        newest = Path(record["snapshot"]["path"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not timedelta(0) <= now - when or (
        within_s != float("inf") and now - when > timedelta(seconds=within_s)
    ):
        return None
    from mfa.io.cache import newest_snapshot_path

    return record if newest_snapshot_path(root, kind, name) == newest else None


def remove_state(root: Path, kind: str, name: str) -> None:
    """Remove the resume folder of ``name`` (mfa wrote it; called after publishing)."""
    shutil.rmtree(Path(root) / kind / ".pull" / name, ignore_errors=True)

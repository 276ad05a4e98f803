"""The dated download cache: every download is a snapshot that is never edited in place.

Layout (``geodata/cache/`` by default, git-ignored)::

    <root>/<kind>/<YYYY-MM-DD>/<name>          the downloaded (or parsed and re-encoded) data
    <root>/<kind>/<YYYY-MM-DD>/<name>.json     its sidecar: sha256, bytes, fetched_at, query

``kind`` names the source (``osm`` for Overpass footprints; a register or raster fetched
by URL would use ``register`` or ``raster``), the folder is the UTC day of the fetch
(for pulled sources, :mod:`mfa.pull`, the UTC day and time: ``YYYY-MM-DDTHHMMSSfffZ``).
A snapshot is written to a hidden ``.<name>.<random>.part`` file beside its final name,
fsynced, checked, and only then renamed into place (sidecar first, data last), so a
download that fails or is cut off midway never appears under the final name and an older
snapshot is never touched. Reading a snapshot checks its sha256 against the sidecar.

Which snapshot a run uses: a pinned day (``"2026-11-24"``) or ``"latest"`` (the newest
day that has one) never touches the network; otherwise the run's own day is reused when it
exists and downloaded when it does not.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mfa.errors import InputDataError, InputNotFoundError, TransientFetchError
from mfa.io.files import fsync_dir, sha256_file

__all__ = [
    "DAY_PATTERN",
    "OSM_KIND",
    "Snapshot",
    "download_url",
    "find_snapshot",
    "newest_snapshot_path",
    "osm_snapshot_name",
    "pinned_snapshot",
    "query_name",
    "remove_leftovers",
    "snapshot_days",
    "snapshot_on_or_before",
    "store_snapshot",
]

#: A snapshot day: ``YYYY-MM-DD``; pulled sources (:mod:`mfa.pull`), which may change
#: more than once a day, add the UTC time to the millisecond: ``YYYY-MM-DDTHHMMSSfffZ``.
DAY_PATTERN = re.compile(r"^\d{4}-\d{2}-\d{2}(T\d{9}Z)?$")


@dataclass(frozen=True)
class Snapshot:
    """One cached download. ``bytes`` is the file size, ``fetched_at`` an ISO UTC time."""

    kind: str
    day: str
    name: str
    path: Path
    sha256: str
    bytes: int
    fetched_at: str
    query: Any

    def record(self, reused: bool) -> dict[str, Any]:
        """The snapshot as a run manifest records it (``reused``: no download this run)."""
        out = asdict(self)
        out["path"] = str(self.path)
        out["reused"] = reused
        return out


def query_name(query: Mapping[str, Any], suffix: str) -> str:
    """A file name for a query: the first 16 hex digits of the sha256 of its canonical JSON."""
    text = json.dumps(dict(query), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16] + suffix


#: Snapshot kind of online OpenStreetMap footprints.
OSM_KIND = "osm"


def osm_snapshot_name(place: str | None, polygon_wkt: str | None, date: str | None = None) -> str:
    """The snapshot file name of an online OSM building query (GeoParquet of raw features);
    ``date``: the Overpass ``[date:…]`` of a query of OSM as it was then (a pinned run)."""
    query: dict[str, object] = {
        "place": place,
        "polygon_wkt": polygon_wkt,
        "tags": {"building": True},
    }
    if date is not None:
        query["date"] = date
    return query_name(query, ".parquet")


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def _load(path: Path) -> Snapshot:
    """Read a snapshot and check its content against the sidecar."""
    meta_path = _sidecar(path)
    try:
        meta = json.loads(meta_path.read_text())
        snap = Snapshot(
            kind=meta["kind"],
            day=meta["day"],
            name=meta["name"],
            path=path,
            sha256=meta["sha256"],
            bytes=int(meta["bytes"]),
            fetched_at=meta["fetched_at"],
            query=meta.get("query"),
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputDataError(
            f"{meta_path}: unreadable snapshot sidecar ({exc}); delete {path.parent} to "
            "download again, or pin another day"
        ) from exc
    size = path.stat().st_size
    if size != snap.bytes or sha256_file(path) != snap.sha256:
        raise InputDataError(
            f"{path}: the cached snapshot does not match its sidecar (sha256/size); it was "
            f"changed after download: delete {path.parent} to download again"
        )
    return snap


def _days(root: Path, kind: str, name: str) -> list[str]:
    folder = root / kind
    if not folder.is_dir():
        return []
    return sorted(
        d.name
        for d in folder.iterdir()
        if DAY_PATTERN.match(d.name) and (d / name).is_file() and _sidecar(d / name).is_file()
    )


def find_snapshot(root: Path, kind: str, name: str, day: str) -> Snapshot | None:
    """The snapshot ``name`` of ``day`` (``YYYY-MM-DD``) or of the newest day (``latest``).

    Returns None when there is none; raises :class:`~mfa.errors.InputDataError` when one
    exists but its content no longer matches its sidecar.
    """
    if day == "latest":
        days = _days(Path(root), kind, name)
        if not days:
            return None
        day = days[-1]
    path = Path(root) / kind / day / name
    if not (path.is_file() and _sidecar(path).is_file()):
        return None
    return _load(path)


def newest_snapshot_path(root: Path, kind: str, name: str) -> Path | None:
    """The path of the newest snapshot ``name`` (no checksum read: cheap), or None."""
    days = _days(Path(root), kind, name)
    return Path(root) / kind / days[-1] / name if days else None


def snapshot_days(root: Path, kind: str, name: str) -> list[str]:
    """The day folders (sorted, oldest first) that hold snapshot ``name``."""
    return _days(Path(root), kind, name)


def snapshot_on_or_before(root: Path, kind: str, name: str, day: str) -> Snapshot | None:
    """The newest snapshot ``name`` whose folder's day (``YYYY-MM-DD``, the UTC day of its
    fetch) is ``day`` or earlier, its content checked; None when there is none."""
    days = [d for d in _days(Path(root), kind, name) if d[:10] <= day]
    return _load(Path(root) / kind / days[-1] / name) if days else None


def pinned_snapshot(root: Path, kind: str, name: str, day: str, key: str) -> Snapshot:
    """The pinned snapshot, or :class:`~mfa.errors.InputNotFoundError` naming what exists."""
    snap = find_snapshot(root, kind, name, day)
    if snap is None:
        days = _days(Path(root), kind, name)
        have = f"snapshots exist for {', '.join(days)}" if days else "no snapshot exists yet"
        raise InputNotFoundError(
            f"{Path(root) / kind}: no {kind} snapshot {name} for {key} = {day!r} ({have}); "
            f"pin one of those days, or remove {key} to download today's"
        )
    return snap


def store_snapshot(
    root: Path,
    kind: str,
    day: str,
    name: str,
    query: Any,
    write: Callable[[Path], str | None],
    fetched_at: datetime | None = None,
    unchanged_from: Snapshot | None = None,
) -> Snapshot:
    """Write a new snapshot atomically; ``write(tmp)`` writes the data to ``tmp`` and may
    return its sha256 (hex, computed while writing; else the file is read to hash it).

    With ``unchanged_from`` (the previous snapshot), data with the same sha256 is not
    stored again: the part file is removed and ``unchanged_from`` returned.

    The data goes to a hidden ``.part`` file that is fsynced and hashed; the sidecar is
    written and renamed first, the data renamed last, then the folder is fsynced. If
    ``write`` raises, the part file is removed and nothing else changes. An existing
    snapshot of the same day and name is never replaced (the existing one is returned).
    """
    if not DAY_PATTERN.match(day):
        raise ValueError(f"snapshot day must be YYYY-MM-DD, got {day!r}")
    folder = Path(root) / kind / day
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / name
    tmp = folder / f".{name}.{uuid.uuid4().hex[:8]}.part"
    meta_tmp = folder / f".{name}.{uuid.uuid4().hex[:8]}.json.part"
    try:
        sha = write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        if final.exists():  # a concurrent fetch of the same day won: keep the first
            tmp.unlink()
            return _load(final)
        sha = sha if isinstance(sha, str) and sha else sha256_file(tmp)
        if unchanged_from is not None and unchanged_from.sha256 == sha:
            tmp.unlink()
            return unchanged_from
        meta = {
            "kind": kind,
            "day": day,
            "name": name,
            "sha256": sha,
            "bytes": tmp.stat().st_size,
            "fetched_at": (fetched_at or datetime.now(UTC)).isoformat(),
            "query": query,
        }
        text = json.dumps(meta, indent=2, default=str)
        meta_tmp.write_text(text)
        with open(meta_tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(meta_tmp, _sidecar(final))
        os.replace(tmp, final)
        fsync_dir(folder)
    finally:
        for leftover in (tmp, meta_tmp):
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()
    # what was just hashed and written (not read back: a national register is GBs)
    meta = json.loads(text)
    return Snapshot(
        path=final,
        **{k: meta[k] for k in ("kind", "day", "name", "sha256", "fetched_at", "query")},
        bytes=int(meta["bytes"]),
    )


def remove_leftovers(root: Path, kind: str, name: str) -> list[Path]:
    """Remove the part files of snapshot ``name`` that a killed process left in its day
    folders (``.<name>.<random>.part`` and ``.json.part``), and day folders left empty;
    return what was removed. Call it only while no other process stores ``name`` (a pull
    holds its work folder's lock: :func:`mfa.pull.state.locked_folder`)."""
    removed = []
    for part in sorted((Path(root) / kind).glob(f"*/.{glob.escape(name)}.*.part")):
        if DAY_PATTERN.match(part.parent.name):
            part.unlink(missing_ok=True)
            removed.append(part)
            with contextlib.suppress(OSError):
                part.parent.rmdir()  # only when empty
    return removed


def download_url(
    root: Path,
    kind: str,
    url: str,
    day: str,
    name: str | None = None,
    timeout_s: float = 60.0,
    chunk: int = 1 << 20,
) -> Snapshot:
    """Download ``url`` into the cache as a snapshot of ``day`` (reused when it exists).

    The body is streamed to the part file; a connection error, an HTTP error status or a
    body shorter than its ``Content-Length`` raises
    :class:`~mfa.errors.TransientFetchError` and leaves nothing at the final name. This is
    the path for registers and rasters published at a URL.
    """
    import requests

    name = name or (Path(url.split("?")[0]).name or "download")
    existing = find_snapshot(root, kind, name, day)
    if existing is not None:
        return existing

    def write(tmp: Path) -> None:
        try:
            with requests.get(url, stream=True, timeout=timeout_s) as r:
                if r.status_code != 200:
                    raise TransientFetchError(f"{url}: HTTP {r.status_code} {r.reason}")
                expected = r.headers.get("Content-Length")
                written = 0
                with open(tmp, "wb") as f:
                    for block in r.iter_content(chunk):
                        f.write(block)
                        written += len(block)
        except requests.RequestException as exc:  # refused, timed out, cut off mid-body
            raise TransientFetchError(f"{url}: download failed ({exc}); try again later") from exc
        if expected is not None and written != int(expected):
            raise TransientFetchError(
                f"{url}: download cut off at {written} of {expected} bytes; try again later"
            )

    return store_snapshot(root, kind, day, name, {"url": url}, write)

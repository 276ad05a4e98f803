"""File downloads of a pull, streamed to disk: bounded, hashed while written, resumable.

A download goes to ``<folder>/<stem>.part`` in the pull's locked work folder
(:func:`mfa.pull.state.locked_folder`, ``<cache>/<kind>/.pull/<name>/``), never into
memory: the body is read in chunks of :data:`CHUNK` bytes (requests ``stream=True``,
``iter_content``) and its sha256 (and md5 when asked) is computed as it is written. Every
:data:`CHECKPOINT` bytes the part file is fsynced and ``<stem>.json`` records how many
bytes are durable, with the response's validator (``ETag``) and the URL (its key
redacted); ``failpoint('pull:download:<k>')`` follows checkpoint k, so a test can kill a
pull exactly there.

**Size bound**: ``max_bytes`` (the source's ``max_download_mb``). A ``Content-Length``
(or the total of a ``Content-Range``) above it ends the pull before the body is read; a
body that grows past it (no size announced, or a server that lies) ends it as soon as it
does. Either way a one-line :class:`~mfa.errors.PullError` names the source, the URL
(redacted), the size and the setting, and the part file is removed.

**Zip archives** (Datafordeler's deliveries, :func:`extract_one`): the one member asked
for is unpacked streamed, bounded by the same setting (its declared size first, then the
bytes actually unpacked: a zip bomb ends at the bound); a member name that is absolute,
has a drive letter or backslash, or a ``..`` part (path traversal) refuses the archive.
The member is written to a name mfa chooses, never to its own.

**Resume** (RFC 9110 §14.2 ``Range``, §13.1.5 ``If-Range``): the next attempt, in this
process after a dropped connection or in the next pull after a kill, truncates the part
file to its last durable length and asks for the rest with ``Range: bytes=<n>-`` and
``If-Range: <ETag>``. A ``206`` whose ``Content-Range`` starts at ``n`` is appended (the
hashes continue from the durable prefix); a ``200`` (the file changed, or the server
ignores ``Range``) starts again from byte 0. Without a strong ``ETag`` (none, or a weak
``W/`` one, which ``If-Range`` may not carry) a part file is not resumed but removed; a
``416`` (nothing after the durable length) also starts again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import zipfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import requests

from mfa.errors import PullError, SnapshotCheckError
from mfa.failpoints import failpoint
from mfa.pull.client import Client, redact

__all__ = ["CHECKPOINT", "CHUNK", "Downloaded", "discard", "download", "extract_one", "mb"]

log = logging.getLogger("mfa")

#: Bytes read from the socket at a time.
CHUNK = 1 << 20
#: Bytes between two durable checkpoints (fsync + ``<stem>.json``) of a download.
CHECKPOINT = 8 << 20

_RANGE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$")


def mb(n: int) -> str:
    """``n`` bytes as MB (10⁶ bytes) for a message."""
    return f"{n / 1e6:,.1f} MB"


@dataclass(frozen=True)
class Downloaded:
    """A finished download: the complete file (``<stem>.part`` until the caller moves it),
    its sha256 and md5 (hex; md5 when asked for), size (bytes) and the response's validators."""

    path: Path
    sha256: str
    md5: str
    bytes: int
    etag: str | None
    last_modified: str | None
    resumed_at: int  # bytes already on disk when the last (successful) response began


class _Restart(requests.exceptions.ChunkedEncodingError):
    """The server answered a range we did not ask for: retried from byte 0."""


def discard(folder: Path, stem: str) -> None:
    """Remove the part file and state of download ``stem`` (mfa wrote them)."""
    for f in (folder / f"{stem}.part", folder / f"{stem}.json"):
        with contextlib.suppress(FileNotFoundError):
            f.unlink()


class _Part:
    """The part file of one download and its durable checkpoint."""

    def __init__(self, folder: Path, stem: str, shown_url: str, md5: bool) -> None:
        self.want_md5 = md5
        self.path = folder / f"{stem}.part"
        self.meta = folder / f"{stem}.json"
        self.url = shown_url
        self.durable = 0
        self.etag: str | None = None
        self.last_modified: str | None = None
        self.sha = hashlib.sha256()
        self.md5 = hashlib.md5(usedforsecurity=False)
        self.checkpoints = 0
        self._load()

    def _load(self) -> None:
        """Resume from the previous pull's checkpoint when it can be resumed."""
        try:
            state = json.loads(self.meta.read_text())
            durable, etag = int(state["bytes"]), state.get("etag")
            ok = state.get("url") == self.url and self.path.stat().st_size >= durable
        except (OSError, ValueError, KeyError, TypeError):
            ok, durable, etag = False, 0, None
        if not ok or not _strong(etag) or durable <= 0:
            self.reset()
            return
        self.durable, self.etag = durable, etag
        self.last_modified = state.get("last_modified")
        with open(self.path, "rb") as f:  # the hashes of the durable prefix, read in chunks
            left = durable
            while left and (block := f.read(min(CHUNK, left))):
                self.sha.update(block)
                if self.want_md5:
                    self.md5.update(block)
                left -= len(block)
        self._hashes = (self.sha.copy(), self.md5.copy())

    def reset(self) -> None:
        """Start again from byte 0."""
        discard(self.path.parent, self.path.name.removesuffix(".part"))
        self.durable, self.etag, self.last_modified = 0, None, None
        self.sha, self.md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
        self._hashes = (self.sha.copy(), self.md5.copy())

    def rewind(self) -> None:
        """Back to the last checkpoint (before an attempt: a dropped body's tail goes)."""
        self.sha, self.md5 = self._hashes[0].copy(), self._hashes[1].copy()
        if self.path.exists():
            os.truncate(self.path, self.durable)

    def headers(self) -> dict[str, str]:
        """``Range`` and ``If-Range`` when there is a durable prefix to continue."""
        if self.durable and _strong(self.etag):
            return {"Range": f"bytes={self.durable}-", "If-Range": str(self.etag)}
        return {}

    def checkpoint(self, f: Any, written: int) -> None:
        f.flush()
        os.fsync(f.fileno())
        self.durable = written
        self._hashes = (self.sha.copy(), self.md5.copy())
        state = {
            "url": self.url,
            "bytes": written,
            "etag": self.etag,
            "last_modified": self.last_modified,
        }
        tmp = self.meta.with_name(self.meta.name + ".tmp")
        tmp.write_text(json.dumps(state, sort_keys=True))
        os.replace(tmp, self.meta)
        self.checkpoints += 1
        failpoint(f"pull:download:{self.checkpoints}")


def _strong(etag: object) -> bool:
    return isinstance(etag, str) and etag.startswith('"')


def download(
    client: Client,
    url: str,
    folder: Path,
    stem: str,
    *,
    max_bytes: int,
    setting: str = "max_download_mb",
    params: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
    not_modified: bool = False,
    md5: bool = False,
) -> Downloaded | None:
    """Download ``url`` to ``<folder>/<stem>.part`` (see the module doc).

    ``headers`` are sent with every attempt (e.g. conditional ones); with
    ``not_modified`` a ``304`` answer returns None (and removes any part file); ``md5``:
    compute the md5 too (else :attr:`Downloaded.md5` is that of no bytes).
    """
    shown = redact(requests.Request("GET", url, params=params).prepare().url or url, client.secrets)
    part = _Part(folder, stem, shown, md5)
    if part.durable:
        log.info("%s: %s: resuming the download after %s", client.what, shown, mb(part.durable))
    started: dict[str, int] = {}

    def too_big(size: int, how: str) -> PullError:
        part.reset()
        return PullError(
            f"{client.what}: {shown}: {how} {mb(size)}, more than {setting} = "
            f"{mb(max_bytes)}; raise {setting} in [{client.what}] if the file is expected "
            "to be that large"
        )

    def before() -> dict[str, str]:
        part.rewind()
        return part.headers()

    def stream(r: requests.Response) -> None:
        start = 0
        if r.status_code == 206:
            m = _RANGE.match(r.headers.get("Content-Range", ""))
            if m is None or int(m.group(1)) != part.durable:
                part.reset()
                raise _Restart(f"asked for bytes {part.durable}-, got {m and m.group(0)}")
            start = part.durable
            total = None if m.group(3) == "*" else int(m.group(3))
        else:  # 200: the whole file (changed since the part, or no Range support)
            if part.durable:
                part.reset()
            length = r.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            part.etag = r.headers.get("ETag")
            part.last_modified = r.headers.get("Last-Modified")
        if total is not None and total > max_bytes:
            raise too_big(total, "the server announces")
        started["at"] = start
        written = start
        next_checkpoint = start + CHECKPOINT
        with open(part.path, "r+b" if start else "wb") as f:
            f.seek(start)
            for block in r.iter_content(CHUNK):
                written += len(block)
                if written > max_bytes:
                    raise too_big(written, "the body grew to")
                f.write(block)
                part.sha.update(block)
                if part.want_md5:
                    part.md5.update(block)
                if written >= next_checkpoint:
                    part.checkpoint(f, written)
                    next_checkpoint = written + CHECKPOINT
            if total is not None and written != total:
                # requests raises on a short body itself; this guards other transports
                raise requests.exceptions.ChunkedEncodingError(
                    f"cut off at {written} of {total} bytes"
                )
            f.flush()
            os.fsync(f.fileno())
        started["bytes"] = written

    ok = (200, 206, 304) if not_modified else (200, 206)
    for resuming in (True, False):
        r = client.request(
            "GET",
            url,
            params=params,
            headers=headers,
            ok=(*ok, 416) if resuming and part.durable else ok,
            stream_to=stream,
            before=before,
        )
        if r.status_code != 416:
            break
        # nothing after the durable length (killed after the last checkpoint): again
        log.info("%s: %s: the range is not satisfiable; downloading again", client.what, shown)
        part.reset()
    if r.status_code == 304:
        part.reset()
        return None
    with contextlib.suppress(FileNotFoundError):
        part.meta.unlink()
    return Downloaded(
        path=part.path,
        sha256=part.sha.hexdigest(),
        md5=part.md5.hexdigest(),
        bytes=started["bytes"],
        etag=part.etag,
        last_modified=part.last_modified,
        resumed_at=started["at"],
    )


def _unsafe(name: str) -> bool:
    """A zip member name that would lead outside the folder it is unpacked into."""
    return (
        name.startswith("/")
        or "\\" in name
        or "\0" in name
        or re.match(r"^[A-Za-z]:", name) is not None
        or ".." in PurePosixPath(name).parts
    )


def extract_one(
    archive: Path,
    out: Path,
    *,
    what: str,
    label: str,
    suffix: str,
    max_bytes: int,
    setting: str = "max_download_mb",
) -> int:
    """Unpack the one member of zip ``archive`` whose name ends with ``suffix`` to ``out``,
    streamed (:data:`CHUNK` bytes at a time); return its size in bytes.

    ``label`` names the archive in messages. A :class:`~mfa.errors.PullError` for a file
    that is not a zip, a member name leading outside the folder, a member larger than
    ``max_bytes`` (declared or unpacked); :class:`~mfa.errors.SnapshotCheckError` when not
    exactly one member ends with ``suffix``. ``out`` is removed on any failure.
    """

    def refuse(problem: str, fix: str) -> PullError:
        return PullError(f"{what}: {label}: {problem}; {fix}")

    try:
        with zipfile.ZipFile(archive) as z:
            infos = z.infolist()
            bad = next((i.filename for i in infos if _unsafe(i.filename)), None)
            if bad is not None:
                raise refuse(
                    f"the zip holds a member named {bad!r}, which leads outside its folder "
                    "(path traversal)",
                    "refused; check url, or report it to the publisher",
                )
            members = [i for i in infos if i.filename.lower().endswith(suffix) and not i.is_dir()]
            if len(members) != 1:
                raise SnapshotCheckError(
                    f"{what}: {label} holds {len(members)} {suffix} files, not one; check "
                    "filters.format"
                )
            info = members[0]
            fix = f"raise {setting} in [{what}] if that is expected (else a zip bomb?)"
            if info.file_size > max_bytes:
                raise refuse(
                    f"{info.filename} unpacks to {mb(info.file_size)} (declared), more than "
                    f"{setting} = {mb(max_bytes)}",
                    fix,
                )
            n = 0
            with z.open(info) as src, open(out, "wb") as dst:
                while block := src.read(CHUNK):
                    n += len(block)
                    if n > max_bytes:
                        raise refuse(
                            f"{info.filename} unpacks to more than {setting} = {mb(max_bytes)}",
                            fix,
                        )
                    dst.write(block)
                dst.flush()
                os.fsync(dst.fileno())
            return n
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        out.unlink(missing_ok=True)
        raise refuse(f"not a zip file, or a damaged one ({exc})", "try again later") from None
    except (PullError, SnapshotCheckError, NotImplementedError, RuntimeError) as exc:
        out.unlink(missing_ok=True)
        if isinstance(exc, NotImplementedError | RuntimeError):  # a method or encryption
            raise refuse(f"cannot be unpacked ({exc})", "report it to the publisher") from None
        raise

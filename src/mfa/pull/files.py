"""The ``http`` protocol: one file (GeoPackage, GeoParquet, CSV …) by conditional GET.

The request carries ``If-None-Match`` (the previous snapshot's ``ETag``) and
``If-Modified-Since`` (its ``Last-Modified``) as RFC 9110 §13.1 defines them; a ``304 Not
Modified`` answer reuses the previous snapshot and writes nothing. A ``200`` body is
streamed to disk in the source's locked work folder (:mod:`mfa.pull.download`: hashed
while written, bounded by ``max_download_mb``, resumable with ``Range`` after a kill),
its length checked against ``Content-Length``, then moved into the store's part file and
published atomically (:func:`mfa.io.cache.store_snapshot`), unless its sha256 equals the
previous snapshot's (a server without validators): then nothing new is stored either.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mfa.config.remote import RemoteFields, remote_query
from mfa.errors import PullError
from mfa.io.cache import Snapshot, remove_leftovers, store_snapshot
from mfa.pull.client import Client
from mfa.pull.download import discard, download
from mfa.pull.state import locked_folder

__all__ = ["pull_file"]

#: The download's name in the work folder.
STEM = "file"


def pull_file(
    client: Client,
    src: RemoteFields,
    root: Path,
    kind: str,
    name: str,
    day: str,
    previous: Snapshot | None,
    check: Callable[[Path], None] | None = None,
) -> tuple[Snapshot, dict[str, Any]]:
    """Fetch ``src.url`` unless unchanged; return the snapshot to use and what was learnt.

    ``check(path)`` looks at the complete download before it is published (a raster's:
    :func:`mfa.pull.raster.check_raster`) and raises to refuse it: the download is then
    discarded and the previous snapshot stays the newest."""
    prev_q = (previous.query or {}) if previous is not None else {}
    headers = {}
    if previous is not None and prev_q.get("etag"):
        headers["If-None-Match"] = prev_q["etag"]
    if previous is not None and prev_q.get("last_modified"):
        headers["If-Modified-Since"] = prev_q["last_modified"]
    with locked_folder(root, kind, name) as folder:
        remove_leftovers(root, kind, name)  # a killed pull's half-stored snapshot
        got = download(
            client,
            str(src.url),
            folder,
            STEM,
            max_bytes=int(src.max_download_mb * 1e6),
            headers=headers,
            not_modified=bool(headers),
        )
        if got is None:  # 304: only a conditional request (a previous snapshot) gets one
            if previous is None:  # pragma: no cover - no validators were sent
                raise PullError(f"{client.what}: 304 without a conditional request")
            return previous, {}
        query: dict[str, Any] = {
            "source": remote_query(src),
            "etag": got.etag,
            "last_modified": got.last_modified,
            "bytes": got.bytes,
        }

        def write(tmp: Path) -> str:
            os.replace(got.path, tmp)
            return got.sha256

        try:
            if check is not None:
                check(got.path)
            snap = store_snapshot(root, kind, day, name, query, write, unchanged_from=previous)
        finally:
            discard(folder, STEM)
    return snap, {}

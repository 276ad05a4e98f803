"""The ``http`` protocol: one file (GeoPackage, GeoParquet, CSV …) by conditional GET.

The request carries ``If-None-Match`` (the previous snapshot's ``ETag``) and
``If-Modified-Since`` (its ``Last-Modified``) as RFC 9110 §13.1 defines them; a ``304 Not
Modified`` answer reuses the previous snapshot and writes nothing. A ``200`` body is
streamed into the store's part file (:func:`mfa.io.cache.store_snapshot`), its length
checked against ``Content-Length``, and published atomically, unless its sha256 equals the
previous snapshot's (a server without validators): then nothing new is stored either.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import requests

from mfa.config.remote import RemoteFields, remote_query
from mfa.errors import PullError
from mfa.io.cache import Snapshot, store_snapshot
from mfa.pull.client import Client

__all__ = ["pull_file"]


class _NotModified(Exception):
    """The server answered 304: nothing to store."""


def pull_file(
    client: Client,
    src: RemoteFields,
    root: Path,
    kind: str,
    name: str,
    day: str,
    previous: Snapshot | None,
    chunk: int = 1 << 20,
) -> tuple[Snapshot, dict[str, Any]]:
    """Fetch ``src.url`` unless unchanged; return the snapshot to use and what was learnt."""
    prev_q = (previous.query or {}) if previous is not None else {}
    headers = {}
    if previous is not None and prev_q.get("etag"):
        headers["If-None-Match"] = prev_q["etag"]
    if previous is not None and prev_q.get("last_modified"):
        headers["If-Modified-Since"] = prev_q["last_modified"]
    query: dict[str, Any] = {"source": remote_query(src)}

    def write(tmp: Path) -> None:
        def stream(r: requests.Response) -> None:
            expected = r.headers.get("Content-Length")
            written = 0
            with open(tmp, "wb") as f:
                for block in r.iter_content(chunk):
                    f.write(block)
                    written += len(block)
            if expected is not None and written != int(expected):
                # requests raises on a short body itself; this guards other transports
                raise requests.exceptions.ChunkedEncodingError(
                    f"cut off at {written} of {expected} bytes"
                )
            query["etag"] = r.headers.get("ETag")
            query["last_modified"] = r.headers.get("Last-Modified")
            query["bytes"] = written

        r = client.request(
            "GET",
            str(src.url),
            headers=headers,
            ok=(200, 304) if headers else (200,),
            stream_to=stream,
        )
        if r.status_code == 304:
            raise _NotModified

    try:
        snap = store_snapshot(root, kind, day, name, query, write, unchanged_from=previous)
    except _NotModified:
        if previous is None:  # pragma: no cover - no validators were sent
            raise PullError(f"{client.what}: 304 without a conditional request") from None
        return previous, {}
    return snap, {}

"""Pull: fetch remote sources into the dated snapshot store, only when they changed.

A source table that gives ``url`` and ``protocol`` (:mod:`mfa.config.remote`) is a
*pulled* source. :func:`pull_pipeline` fetches each one into the snapshot store of
:mod:`mfa.io.cache` (``<cache>/<role>/<YYYY-MM-DD>/<name>`` with a sha256 sidecar, never
edited) and :func:`resolve_pulled`, called by :func:`mfa.config.load_pipeline`, points the
source's ``path`` (``file`` for footprints) at the newest snapshot, so the readers, the
declared input files (:meth:`mfa.config.Pipeline.input_files`), the run key of
``--if-changed`` and the manifest treat it as the local file it now is.

``name`` is a hash of what identifies the source (url, protocol, collection, filters,
page size; never a key) plus the file suffix. Protocols: ``http`` (one file, conditional
GET: :mod:`mfa.pull.files`); ``oapif``, ``wfs`` and ``datafordeler-graphql`` (pages with
a cursor saved after each, resumable: :mod:`mfa.pull.paging`; GraphQL with ``events_url``
then brought up to date from the register's events: :mod:`mfa.pull.events`);
``datafordeler-files`` (a weekly total and daily deltas by generation number, deletions
from the events: :mod:`mfa.pull.dffiles`); ``wcs`` (a height raster by OGC WCS 2.0.1
GetCoverage over the pipeline's bbox: :mod:`mfa.pull.wcs`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mfa.config.remote import RemoteFields, api_key, remote_query
from mfa.errors import MfaError, PullError, SnapshotCheckError
from mfa.io.cache import Snapshot, find_snapshot, newest_snapshot_path, query_name, store_snapshot

__all__ = [
    "RECHECK_S",
    "PulledSource",
    "pinned_record",
    "pinned_snapshots",
    "pull_pipeline",
    "pull_source",
    "pulled_sources",
    "resolve_pulled",
]

log = logging.getLogger("mfa")

#: A run asks each service once: a pull that ended less than this many seconds ago (the
#: ``--if-changed`` check before a run) is reused by the run's pull step. ``mfa pull``
#: always asks.
RECHECK_S = 600.0

#: Protocols that can be pulled today.
IMPLEMENTED = ("http", "oapif", "wfs", "datafordeler-graphql", "datafordeler-files", "wcs")


@dataclass(frozen=True)
class PulledSource:
    """A pulled source of a pipeline: its role (cache kind), key and snapshot name."""

    role: str  # register | units | footprints | districts | raster (the snapshot kind)
    key: str  # the pipeline table, e.g. sources.footprints, or sources.heights.ndsm
    path_key: str  # the key the snapshot fills: path or file (ndsm, dsm, dtm for rasters)
    source: RemoteFields
    attr: str = ""  # the Sources attribute of the table (default: from role)
    crs: str | None = None  # rasters: the pipeline's CRS, checked before publishing

    @property
    def table(self) -> str:
        """The attribute of :class:`mfa.config.sources.Sources` the snapshot fills."""
        return self.attr or ("register_" if self.role == "register" else self.role)

    @property
    def part(self) -> str:
        """The source's short name: its key without ``sources.`` (``heights.ndsm``)."""
        return self.key.removeprefix("sources.")

    @property
    def name(self) -> str:
        return snapshot_name(self.source)


def snapshot_name(source: RemoteFields) -> str:
    """The snapshot file name of a remote source: query hash + the file's suffix."""
    if source.protocol == "wcs":  # a GetCoverage answer: a GeoTIFF
        return query_name(remote_query(source), ".tif")
    if source.protocol == "http":
        tail = Path(str(source.url).split("?")[0]).name
        parts = tail.split(".")
        suffix = "." + ".".join(parts[-2:] if parts[-1] in ("gz", "zip") else parts[-1:])
        suffix = suffix if len(parts) > 1 else ".bin"
    else:
        suffix = ".csv" if str(source.protocol).startswith("datafordeler-") else ".geojson"
    return query_name(remote_query(source), suffix)


def pulled_sources(p: Any) -> list[PulledSource]:
    """The pulled sources of pipeline ``p`` (a :class:`mfa.config.Pipeline`), in order."""
    src = p.sources
    out = []
    for role, table, path_key in (
        ("register", src.register_, "path"),
        ("units", src.units, "path"),
        ("footprints", src.footprints, "file"),
        ("districts", src.districts, "path"),
    ):
        if table is not None and table.url is not None:
            out.append(PulledSource(role, f"sources.{role}", path_key, table))
    h = src.heights
    for which in ("ndsm", "dsm", "dtm") if h is not None else ():
        if getattr(h, f"{which}_url") is not None:
            key = f"sources.heights.{which}"
            remote = h.remote(which, p.crs)
            out.append(PulledSource("raster", key, which, remote, "heights", p.crs))
    return out


def resolve_pulled(p: Any, as_of: str | None = None) -> Any:
    """``p`` with each pulled source's path set to its newest snapshot (kept None when
    there is none yet: the pull step makes it). No network, no checksum read.

    With ``as_of`` (``YYYY-MM-DD``, a pinned day): the newest snapshot published on or
    before that day (UTC), its sha256 checked; none is a one-line
    :class:`~mfa.errors.InputNotFoundError` naming the source (:func:`pinned_snapshots`).
    """
    updates: dict[str, Any] = {}
    pinned = pinned_snapshots(p, as_of) if as_of is not None else {}
    for ps in pulled_sources(p):
        if as_of is not None:
            path: Path | None = pinned[ps.key].path
        else:
            path = newest_snapshot_path(p.cache_root(), ps.role, ps.name)
        if path is not None:
            table = updates.get(ps.table, getattr(p.sources, ps.table))
            updates[ps.table] = table.model_copy(update={ps.path_key: path})
    if not updates:
        return p
    return p.model_copy(update={"sources": p.sources.model_copy(update=updates)})


def pinned_snapshots(p: Any, as_of: str) -> dict[str, Snapshot]:
    """For each pulled source of ``p`` (by key), the newest snapshot published on or
    before ``as_of`` (``YYYY-MM-DD``; a snapshot's day is its folder's, the UTC day of its
    pull), its content checked against its sidecar. No network. A source without one is a
    one-line :class:`~mfa.errors.InputNotFoundError` that names it and the days there are."""
    from mfa.config.sources import _valid_day
    from mfa.errors import ConfigError, InputNotFoundError
    from mfa.io.cache import snapshot_days, snapshot_on_or_before

    if not _valid_day(as_of):
        raise ConfigError(f"--as-of {as_of!r}: not a day; give YYYY-MM-DD, e.g. 2026-12-01")
    out: dict[str, Snapshot] = {}
    for ps in pulled_sources(p):
        snap = snapshot_on_or_before(p.cache_root(), ps.role, ps.name, as_of)
        if snap is None:
            days = sorted({d[:10] for d in snapshot_days(p.cache_root(), ps.role, ps.name)})
            have = f"its snapshots are of {days[0]} … {days[-1]}" if days else "it has none"
            raise InputNotFoundError(
                f"{ps.key}: no snapshot published on or before {as_of} in "
                f"{p.cache_root() / ps.role} ({have}); pin a later day, or run without "
                "--as-of to pull"
            )
        out[ps.key] = snap
    return out


def pinned_record(ps: PulledSource, snap: Snapshot, as_of: str) -> dict[str, Any]:
    """The manifest record of a source a pinned run reads (no request made)."""
    from mfa.pull.client import redact

    q = snap.query or {}
    return {
        "role": ps.role,
        "source": ps.key,
        "protocol": ps.source.protocol,
        "url": redact(str(ps.source.url), ()),
        "changed": False,
        "requests": 0,
        "rows": q.get("rows"),
        "warning": None,
        "as_of": as_of,
        "snapshot": snap.record(reused=True),
    }


def pull_source(
    ps: PulledSource,
    cache_root: Path,
    day: str | None = None,
    sleep: Any = None,
    reuse_within_s: float = 0.0,
) -> dict[str, Any]:
    """Pull one source: reuse the newest snapshot when unchanged, else publish a new one.

    Returns a record for the run manifest: role, protocol, url, ``changed``, requests made,
    the snapshot (path, day, sha256, bytes) and any warning. A new snapshot's folder is
    ``<day>T<HHMMSSfff>Z`` (``day`` default: today in UTC; the time is now's). With
    ``reuse_within_s``, a pull of the same source that ended that recently is not repeated:
    its record is returned (``requests`` 0, ``reused_check`` true).
    """
    from mfa.pull.client import Client, redact

    src = ps.source
    what = ps.key
    if src.protocol not in IMPLEMENTED:
        raise PullError(
            f"{what}: protocol {src.protocol} is not implemented yet (only "
            f"{', '.join(IMPLEMENTED)}); download the file and give {ps.path_key} instead"
        )
    key = api_key(src)
    if src.api_key_env is not None and key is None:
        raise PullError(
            f"{what}: the environment variable {src.api_key_env} (api_key_env) is not set; "
            "set it to the service's API key"
        )
    now = datetime.now(UTC)
    from mfa.pull.state import last_check, save_check

    recent = last_check(cache_root, ps.role, ps.name, reuse_within_s, now)
    if recent is not None:
        log.info("%s: pulled less than %g s ago, not asked again", what, reuse_within_s)
        return {**recent, "requests": 0, "reused_check": True}
    # a folder per fetch time: a source may change twice in a day, and each change is kept
    datafordeler = str(src.protocol).startswith("datafordeler-")
    day = f"{day or now.date().isoformat()}T{now:%H%M%S}{now.microsecond // 1000:03d}Z"
    try:
        previous = find_snapshot(cache_root, ps.role, ps.name, "latest")
    except MfaError as exc:
        log.warning("%s: %s; pulling anew", what, exc)
        previous = None
    prev_q = (previous.query or {}) if previous is not None else {}
    client = Client(
        what,
        retries=src.retries,
        timeout_s=src.timeout_s,
        secrets=(key,) if key else (),
        # Datafordeler takes the key as the query parameter apiKey; others as a header
        headers={"X-Api-Key": key} if key and not datafordeler else None,
        key_param=("apiKey", key) if key and datafordeler else None,
        **({"sleep": sleep} if sleep is not None else {}),
    )
    try:
        changes = None
        if src.protocol == "datafordeler-graphql" and src.events_url and previous is not None:
            from mfa.pull.events import pull_graphql_changes

            changes = pull_graphql_changes(client, src, cache_root, ps.role, ps.name, day, previous)
        if changes is not None:  # brought up to date from the events since the last pull
            snap, info = changes
        elif src.protocol == "http":
            from mfa.pull.files import pull_file

            check = None
            if ps.role == "raster" and ps.crs is not None:
                from functools import partial

                from mfa.pull.raster import check_raster

                shown = redact(str(src.url), client.secrets)
                check = partial(check_raster, what=what, url=shown, crs=ps.crs)
            snap, info = pull_file(
                client, src, cache_root, ps.role, ps.name, day, previous, check=check
            )
        elif src.protocol == "wcs":
            from mfa.pull.wcs import pull_coverage

            assert ps.crs is not None
            snap, info = pull_coverage(
                client, src, cache_root, ps.role, ps.name, day, previous, what, ps.crs
            )
        elif src.protocol == "datafordeler-files":
            from mfa.pull.dffiles import pull_datafordeler_files

            snap, info = pull_datafordeler_files(
                client, src, cache_root, ps.role, ps.name, day, previous
            )
        elif src.protocol == "oapif" and src.modified_field:
            from mfa.pull.oapif import fingerprint
            from mfa.pull.state import last_record

            fp = fingerprint(client, src)
            seen = last_record(cache_root, ps.role, ps.name)
            if (
                previous is not None
                and seen is not None
                and seen.get("fingerprint") == fp
                and seen["snapshot"]["sha256"] == previous.sha256
            ):
                snap, info = previous, {"rows": prev_q.get("rows")}  # one request: unchanged
            else:
                snap, info = _pull_pages(
                    client, src, cache_root, ps.role, ps.name, day, previous, {"fingerprint": fp}
                )
            info = {**info, "fingerprint": fp}
        else:
            snap, info = _pull_pages(client, src, cache_root, ps.role, ps.name, day, previous)
    finally:
        client.close()
    changed = previous is None or snap.sha256 != previous.sha256
    warning = None
    if changed and info.get("rows") is not None:
        from mfa.pull.snapshot import row_drop

        warning = row_drop(info["rows"], prev_q.get("rows"), src.max_drop)
        if warning:
            log.warning("%s: %s", what, warning)
    log.info(
        "%s: %s (%d requests)", what, "new snapshot" if changed else "unchanged", client.requests
    )
    record = {
        "role": ps.role,
        "source": ps.key,
        "protocol": src.protocol,
        "url": redact(str(src.url), client.secrets),
        "changed": changed,
        "requests": client.requests,
        "rows": info.get("rows", prev_q.get("rows")),
        "warning": warning,
        "snapshot": snap.record(reused=not changed),
        **({"fingerprint": info["fingerprint"]} if "fingerprint" in info else {}),
    }
    save_check(cache_root, ps.role, ps.name, record, datetime.now(UTC))
    return record


def _pull_pages(
    client: Any,
    src: RemoteFields,
    root: Path,
    kind: str,
    name: str,
    day: str,
    previous: Snapshot | None,
    extra: dict[str, Any] | None = None,
) -> tuple[Snapshot, dict[str, Any]]:
    from mfa.io.cache import remove_leftovers
    from mfa.pull.paging import assemble_pages, fetch_all
    from mfa.pull.state import locked_state, remove_state

    if src.protocol == "wfs":
        from mfa.pull.wfs import WFS as paging
    elif src.protocol == "datafordeler-graphql":
        from mfa.pull.graphql import GRAPHQL as paging
    else:
        from mfa.pull.oapif import OAPIF as paging
    first = paging.first(src)
    with locked_state(root, kind, name, first) as state:
        remove_leftovers(root, kind, name)  # a killed pull's half-stored snapshot
        if state.pages:
            log.info("%s: resuming after page %d", client.what, state.pages)
        query: dict[str, Any] = {
            "source": remote_query(src),
            "rows": None,  # filled in by write(), before store_snapshot writes the sidecar
            "pages": None,
            "number_matched": None,
            **(extra or {}),  # e.g. the freshness fingerprint asked before the pages
        }

        def write(tmp: Path) -> None:
            query["rows"] = assemble_pages(state, tmp, what=client.what, source=src, paging=paging)

        try:
            fetch_all(client, state, paging)  # a PullError keeps the pages: resumed next time
            query.update(pages=state.pages, number_matched=state.info.get("number_matched"))
            if src.events_url and state.info.get("registreringstid"):
                # the register's state this snapshot holds: events after it are news
                query["events_cursor"] = state.info["registreringstid"]
            snap = store_snapshot(root, kind, day, name, query, write, unchanged_from=previous)
        except SnapshotCheckError:
            state.clear()  # bad data: the next pull starts afresh rather than resuming it
            raise
        remove_state(root, kind, name)
    return snap, {"rows": query["rows"]}


def pull_pipeline(
    p: Any, day: str | None = None, sleep: Any = None, reuse_within_s: float = 0.0
) -> list[dict[str, Any]]:
    """Pull every pulled source of pipeline ``p``; return their manifest records.

    ``day`` (``YYYY-MM-DD``, default today in UTC) names new snapshots' folder; ``sleep``
    replaces ``time.sleep`` between retries (tests); ``reuse_within_s``: see
    :func:`pull_source` (a run passes :data:`RECHECK_S`).
    """
    root = p.cache_root()
    return [pull_source(ps, root, day, sleep, reuse_within_s) for ps in pulled_sources(p)]

"""Datafordeler file downloads (``datafordeler-files``): a weekly total and daily deltas,
listed with generation numbers, applied to the previous snapshot.

Request shapes ("Fildownload", confluence.sdfi.dk pageId 151999753, version 3.0, Dec 2025;
"Eksempel på oprettelse samt vedligeholdelse af kopiregister for fildownload", 2025):

- the listing, the cheap freshness check (one request):
  ``GET {url}/v2.0/GetAvailableFileDownloads?Register=BBR&Entity=Bygning`` + ``apiKey``,
  answering ``{"paginationMetadata": {…, "totalPages"}, "availableFileDownloads": [{
  "fileName", "register", "entityName", "typeOfDownload": "TotalDownload"|"DeltaDownload",
  "typeOfData": "Current"|"Temporal"|"Bitemporal", "version", "generationNumber",
  "generationTime", "expirationDate", "containedFileFormat": "csv"|"json"|"gpkg"|"gml",
  "outputFileFormat": "zip", "municipalityCode", "md5Hash", "fileSizeInBytes"}, …]}``;
- a file: ``GET {url}/v1.0/GetFile?Filename=<fileName>`` + ``apiKey``: a zip holding one
  file of the entity.

A total is made weekly (kept 7 days), a delta daily with every row changed since the
previous delta; deltas never carry deletions (Datafordeler publishes no deleted data), so
deletions come from the register's events when ``events_url`` is given
(:mod:`mfa.pull.events`). Rules:

- the newest national total of the asked ``type`` (default Current) and ``format``
  (default csv) and the national deltas of the same kind, by generation number;
- unchanged (the previous snapshot's total generation, no delta past its delta
  generation, no event since its cursor): the previous snapshot is reused, nothing written;
- new deltas only, contiguous after the previous one: the previous snapshot + the deltas
  (and the deletions) is the new snapshot; the total is not downloaded again;
- a newer total, or a gap in the deltas (a delta expired before it was pulled): the total,
  then every delta generated after it (contiguous), then the deletions since it.

Memory: no file is held whole. Each listed file is streamed to the source's work folder
(:mod:`mfa.pull.download`: bounded by ``max_download_mb``, md5 and size checked against
the listing, resumable), its one CSV unpacked streamed (bounded, path traversal refused),
and kept there until the snapshot is published, so a pull that failed after the total is
not made to download it again. The register (a total, or the previous snapshot) is read
and written piece by piece with the day's deltas (small) held
(:func:`mfa.pull.changes.write_changed`).

Not checked against the live service (no key, no network here): the CSV inside the zips
(field names as the GraphQL entity's, e.g. ``id_lokalId``, read as any register CSV), how
delta and total generation numbers relate (mfa orders deltas by their own numbers and
relates them to a total by ``generationTime``), the listing's paging parameter, and
whether ``GetFile`` sends an ``ETag`` and honours ``Range`` (without them a killed download
starts again from byte 0).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import pandas as pd

from mfa.config.remote import RemoteFields, remote_query
from mfa.errors import PullError, SnapshotCheckError
from mfa.io.cache import Snapshot, remove_leftovers
from mfa.pull.changes import csv_separator, net_events
from mfa.pull.client import Client
from mfa.pull.download import discard, download, extract_one
from mfa.pull.state import locked_folder

__all__ = ["choose_files", "plan_files", "pull_datafordeler_files"]

log = logging.getLogger("mfa")

LISTING = "v2.0/GetAvailableFileDownloads"
GET_FILE = "v1.0/GetFile"


def _listing(client: Client, src: RemoteFields) -> list[dict[str, Any]]:
    """Every listed file of the source's register and entity (all listing pages)."""
    register = src.filters.get("register")
    base = str(src.url).rstrip("/")
    rows: list[dict[str, Any]] = []
    page = 1
    while True:
        params = {"Register": register, "Entity": src.collection}
        if page > 1:
            params["page"] = page
        r = client.request("GET", f"{base}/{LISTING}", params=params)
        try:
            doc = json.loads(r.content)
        except ValueError:
            raise PullError(
                f"{client.what}: the file listing is not JSON (an error page?); check url"
            ) from None
        listed = doc.get("availableFileDownloads") if isinstance(doc, dict) else doc
        if not isinstance(listed, list):
            raise PullError(f"{client.what}: the file listing has no availableFileDownloads")
        rows += listed
        pages = int(
            ((doc.get("paginationMetadata") or {}) if isinstance(doc, dict) else {}).get(
                "totalPages"
            )
            or 1
        )
        if page >= pages or not listed:
            return rows
        page += 1


def choose_files(
    rows: list[dict[str, Any]], entity: str, type_of_data: str, fmt: str
) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """The newest national total and the national deltas (ascending generation) of the
    entity in the asked type of data and format."""

    def fits(m: dict[str, Any], kind: str) -> bool:
        return (
            str(m.get("typeOfDownload", "")).lower() == kind
            and str(m.get("entityName", "")).lower() == entity.lower()
            and str(m.get("typeOfData", "")).lower() == type_of_data.lower()
            and str(m.get("containedFileFormat", "")).lower() == fmt.lower()
            and m.get("municipalityCode") in (None, "")
        )

    totals = [m for m in rows if fits(m, "totaldownload")]
    deltas = {int(m["generationNumber"]): m for m in rows if fits(m, "deltadownload")}
    total = max(totals, key=lambda m: int(m["generationNumber"])) if totals else None
    return total, [deltas[g] for g in sorted(deltas)]


def _time(m: dict[str, Any]) -> pd.Timestamp:
    return (
        pd.Timestamp(m["generationTime"]).tz_convert("UTC")
        if pd.Timestamp(m["generationTime"]).tzinfo
        else pd.Timestamp(m["generationTime"], tz="UTC")
    )


def _contiguous(deltas: list[dict[str, Any]], after: int | None) -> bool:
    gens = [int(m["generationNumber"]) for m in deltas]
    start = gens[0] if after is None and gens else (after or 0) + 1
    return gens == list(range(start, start + len(gens)))


def plan_files(
    total: dict[str, Any], deltas: list[dict[str, Any]], previous: dict[str, Any] | None
) -> tuple[str, list[dict[str, Any]]]:
    """What to do: ``("unchanged", [])``, ``("deltas", new deltas)`` on the previous
    snapshot, or ``("total", deltas after the total)``."""
    gen = int(total["generationNumber"])
    if previous and previous.get("total_generation") == gen:
        last = previous.get("delta_generation")
        base_time = pd.Timestamp(previous["total_time"])
        newer = [
            m
            for m in deltas
            if (int(m["generationNumber"]) > last if last is not None else _time(m) > base_time)
        ]
        if not newer:
            return "unchanged", []
        if _contiguous(newer, last):
            return "deltas", newer
        log.warning("a delta file expired before it was pulled: starting from the total again")
    after = [m for m in deltas if _time(m) > _time(total)]
    if not _contiguous(after, None):
        raise PullError(
            f"the delta files after total generation {gen} have a gap "
            f"({[int(m['generationNumber']) for m in after]}); pull again after the next total"
        )
    return "total", after


def _stem(meta: dict[str, Any]) -> str:
    """The work-folder name of a listed file (a hash: the listing's name is not trusted)."""
    return hashlib.sha256(str(meta["fileName"]).encode()).hexdigest()[:16]


def _fetch_csv(client: Client, src: RemoteFields, meta: dict[str, Any], folder: Path) -> Path:
    """One listed file (a zip of one CSV), streamed to ``folder``, checked (size, md5
    against the listing) and its CSV unpacked streamed; returns the CSV's path. A file
    unpacked by a killed pull of the same listing is used again, not downloaded."""
    stem = _stem(meta)
    out, done = folder / f"{stem}.csv", folder / f"{stem}.done.json"
    ident = {k: meta.get(k) for k in ("fileName", "md5Hash", "fileSizeInBytes")}
    try:
        if out.is_file() and json.loads(done.read_text()) == ident:
            log.info("%s: %s already unpacked by an earlier pull", client.what, meta["fileName"])
            return out
    except (OSError, ValueError):
        pass
    done.unlink(missing_ok=True)
    limit = int(src.max_download_mb * 1e6)
    base = str(src.url).rstrip("/")
    got = download(
        client,
        f"{base}/{GET_FILE}",
        folder,
        stem,
        params={"Filename": meta["fileName"]},
        max_bytes=limit,
        md5=bool(meta.get("md5Hash")),
    )
    if got is None:  # pragma: no cover - a 304 only answers a conditional request
        raise PullError(f"{client.what}: {meta['fileName']}: 304 without a conditional request")
    size, md5 = meta.get("fileSizeInBytes"), meta.get("md5Hash")
    problem = None
    if size and got.bytes != int(size):
        problem = f"{got.bytes} bytes, the listing says {size} (cut off?); try again later"
    elif md5 and got.md5.lower() != str(md5).lower():
        problem = "md5 differs from the listing's; try again later"
    if problem:
        discard(folder, stem)
        raise PullError(f"{client.what}: {meta['fileName']}: {problem}")
    tmp = folder / f"{stem}.csv.tmp"
    try:
        extract_one(
            got.path,
            tmp,
            what=client.what,
            label=str(meta["fileName"]),
            suffix=".csv",
            max_bytes=limit,
        )
    finally:
        discard(folder, stem)  # the zip: unpacked or refused
    os.replace(tmp, out)
    done.write_text(json.dumps(ident))
    return out


def _read_changes(path: Path, id_field: str, what: str, label: str) -> pd.DataFrame:
    """A delta file (small: the rows changed in a day) as register text."""
    frame = pd.read_csv(
        path,
        dtype=str,
        keep_default_na=False,
        na_values=[],
        sep=csv_separator(path),
        encoding="utf-8-sig",
    )
    if id_field not in frame.columns:
        raise SnapshotCheckError(
            f"{what}: {label} has no {id_field} column; the schema changed? set id_field"
        )
    return frame


def pull_datafordeler_files(
    client: Client,
    src: RemoteFields,
    root: Path,
    kind: str,
    name: str,
    day: str,
    previous: Snapshot | None,
) -> tuple[Snapshot, dict[str, Any]]:
    """Pull the source's register: one listing request when nothing changed."""
    from mfa.pull.events import events_since, store_register

    rows = _listing(client, src)
    type_of_data = str(src.filters.get("type", "Current"))
    fmt = str(src.filters.get("format", "csv"))
    total, deltas = choose_files(rows, str(src.collection), type_of_data, fmt)
    if total is None:
        raise PullError(
            f"{client.what}: no national {type_of_data} {fmt} total download of "
            f"{src.collection} is listed; check collection and filters (register, type, format)"
        )
    prev_q = (previous.query or {}) if previous is not None else None
    action, todo = plan_files(total, deltas, prev_q)
    cursor = (prev_q or {}).get("events_cursor") if action != "total" else None
    cursor = cursor or str(total["generationTime"])
    events = events_since(client, src, cursor) if src.events_url else pd.DataFrame()
    deleted, _, latest = net_events(events) if len(events) else ([], [], None)
    if action == "unchanged" and not deleted and previous is not None:
        return previous, {"rows": prev_q.get("rows") if prev_q else None, "events": len(events)}
    id_field = src.id_field or "id_lokalId"
    if previous is None:
        action = "total"
    last_delta = (
        int(todo[-1]["generationNumber"])
        if todo
        else ((prev_q or {}).get("delta_generation") if action != "total" else None)
    )
    query = {
        "source": remote_query(src),
        "rows": None,  # filled in while the register is written
        "total_generation": int(total["generationNumber"]),
        "total_time": str(total["generationTime"]),
        "delta_generation": last_delta,
        "events_cursor": latest or cursor,
        "from": action,
        "files": [total["fileName"]] * (action == "total") + [m["fileName"] for m in todo],
        "deleted": len(deleted),
    }
    with locked_folder(root, kind, name) as folder:
        remove_leftovers(root, kind, name)  # a killed pull's half-stored snapshot
        wanted = {_stem(m) for m in ([total] if action == "total" else []) + todo}
        for f in folder.glob("*"):  # files of listings gone by: not resumed, removed
            if f.name != ".lock" and f.name.split(".")[0] not in wanted:
                f.unlink()
        base = _fetch_csv(client, src, total, folder) if action == "total" else previous.path
        changes = [
            _read_changes(_fetch_csv(client, src, m, folder), id_field, client.what, m["fileName"])
            for m in todo
        ]
        stored = store_register(
            root,
            kind,
            day,
            name,
            query,
            base,
            changes,
            deleted,
            previous,
            len(events),
            id_field=id_field,
            what=client.what,
        )
        for f in folder.glob("*"):  # published: nothing to resume
            if f.name != ".lock":
                f.unlink()
    return stored

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

Not checked against the live service (no key, no network here): the CSV inside the zips
(field names as the GraphQL entity's, e.g. ``id_lokalId``, read as any register CSV), how
delta and total generation numbers relate (mfa orders deltas by their own numbers and
relates them to a total by ``generationTime``), and the listing's paging parameter.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import zipfile
from pathlib import Path
from typing import Any

import pandas as pd

from mfa.config.remote import RemoteFields, remote_query
from mfa.errors import PullError, SnapshotCheckError
from mfa.io.cache import Snapshot
from mfa.pull.changes import apply_changes, net_events
from mfa.pull.client import Client

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


def _download_table(client: Client, src: RemoteFields, meta: dict[str, Any]) -> pd.DataFrame:
    """One listed file (a zip of one CSV), checked (size, md5), as register text."""
    base = str(src.url).rstrip("/")
    r = client.request("GET", f"{base}/{GET_FILE}", params={"Filename": meta["fileName"]})
    body = r.content
    size = meta.get("fileSizeInBytes")
    if size and len(body) != int(size):
        raise PullError(
            f"{client.what}: {meta['fileName']}: {len(body)} bytes, the listing says {size} "
            "(cut off?); try again later"
        )
    md5 = meta.get("md5Hash")
    if md5 and hashlib.md5(body).hexdigest().lower() != str(md5).lower():
        raise PullError(f"{client.what}: {meta['fileName']}: md5 differs from the listing's")
    try:
        with zipfile.ZipFile(io.BytesIO(body)) as z:
            names = [n for n in z.namelist() if n.lower().endswith(".csv")]
            if len(names) != 1:
                raise SnapshotCheckError(
                    f"{client.what}: {meta['fileName']} holds {len(names)} CSV files, not one; "
                    "check filters.format"
                )
            with z.open(names[0]) as f:
                text = f.read().decode("utf-8-sig")
    except zipfile.BadZipFile:
        raise PullError(f"{client.what}: {meta['fileName']} is not a zip file") from None
    sep = ";" if text.split("\n", 1)[0].count(";") > text.split("\n", 1)[0].count(",") else ","
    return pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, na_values=[], sep=sep)


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
    from mfa.pull.events import events_since, read_register_text, store_register

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
    if action == "total" or previous is None:
        base = _download_table(client, src, total)
        action = "total"
    else:
        base = read_register_text(previous.path)
    changes = [_download_table(client, src, m) for m in todo]
    for frame in (base, *changes):
        if id_field not in frame.columns:
            raise SnapshotCheckError(
                f"{client.what}: a downloaded file has no {id_field} column; the schema "
                "changed? set id_field"
            )
    after = apply_changes(base, changes, deleted, id_field)
    if after[id_field].duplicated().any():
        raise SnapshotCheckError(f"{client.what}: {id_field} repeats in the total download")
    last_delta = (
        int(todo[-1]["generationNumber"])
        if todo
        else ((prev_q or {}).get("delta_generation") if action != "total" else None)
    )
    query = {
        "source": remote_query(src),
        "rows": len(after),
        "total_generation": int(total["generationNumber"]),
        "total_time": str(total["generationTime"]),
        "delta_generation": last_delta,
        "events_cursor": latest or cursor,
        "from": action,
        "files": [total["fileName"]] * (action == "total") + [m["fileName"] for m in todo],
        "deleted": len(deleted),
    }
    return store_register(root, kind, day, name, query, after, previous, len(events))

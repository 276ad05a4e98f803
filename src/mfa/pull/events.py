"""Datafordeler events (``<Register>_Events`` in GraphQL): deletions, and the cheap
freshness check of a register pulled by GraphQL.

Request shape ("Entitetsbaserede hændelser" and "Hændelser på GraphQL", confluence.sdfi.dk,
Datafordeleren 2025): ``POST {events_url}?apiKey=…`` with the query ::

    query($first: Int, $after: String) {
      BBR_Events(first: $first, after: $after,
                 where: { entityname: { eq: "Bygning" },
                          datafordelerOpdateringstid: { gt: "<cursor>" } }) {
        pageInfo { hasNextPage endCursor }
        nodes { eventid entityname eventaction datafordelerOpdateringstid
                fromfailedimport object_id }
      }
    }

The fields and their meaning are documented (``eventaction`` ``i``/``u``/``d``,
``object_id`` the register's id, e.g. ``id_lokalId``); the ``gt`` filter on
``datafordelerOpdateringstid`` and cursor paging of the events entity follow Datafordeler's
GraphQL conventions for other entities and could not be checked against the live service.

A register pulled by GraphQL with ``events_url`` is brought up to date from its previous
snapshot: no event since the last pull → unchanged (one request); otherwise the objects
inserted or updated are fetched by id (``where: { id_lokalId: { in: […] } }``) and the
deleted ones removed (:func:`mfa.pull.changes.write_changed`, the previous snapshot read
piece by piece), giving a new snapshot.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from mfa.config.remote import RemoteFields, remote_query
from mfa.errors import PullError
from mfa.io.cache import Snapshot, remove_leftovers, store_snapshot
from mfa.pull.changes import net_events, write_changed
from mfa.pull.client import Client
from mfa.pull.state import locked_folder

__all__ = ["EVENT_FIELDS", "events_since", "pull_graphql_changes", "register_entity"]

#: The event fields mfa asks for.
EVENT_FIELDS = (
    "eventid",
    "entityname",
    "eventaction",
    "datafordelerOpdateringstid",
    "fromfailedimport",
    "object_id",
)
#: Ids per request when changed objects are fetched by id.
ID_CHUNK = 500


def register_entity(src: RemoteFields) -> tuple[str, str]:
    """(register, entity) of a Datafordeler source: ``BBR_Bygning`` → (BBR, Bygning);
    file downloads: ``filters.register`` and ``collection``."""
    if src.protocol == "datafordeler-files":
        return str(src.filters.get("register", "")), str(src.collection)
    register, _, entity = str(src.collection).partition("_")
    return register, entity


def graphql_pages(
    client: Client, url: str, query: str, variables: dict[str, Any], page_size: int
) -> Iterator[list[dict[str, Any]]]:
    """The nodes of a cursor-paged GraphQL query, page by page."""
    from mfa.pull.graphql import _parse

    after = None
    while True:
        body = {"query": query, "variables": {**variables, "first": page_size, "after": after}}
        r = client.request("POST", url, json=body, headers={"Accept": "application/json"})
        doc = _parse(r.content, r.headers.get("Content-Type", ""), client.what, url)
        yield doc["features"]
        info = doc["pageInfo"]
        if not info.get("hasNextPage") or not info.get("endCursor"):
            return
        after = info["endCursor"]


def events_since(client: Client, src: RemoteFields, cursor: str) -> pd.DataFrame:
    """The events of the source's entity registered after ``cursor`` (an ISO time)."""
    register, entity = register_entity(src)
    where = (
        f"entityname: {{ eq: {json.dumps(entity)} }}, "
        f"datafordelerOpdateringstid: {{ gt: {json.dumps(cursor)} }}"
    )
    query = (
        "query($first: Int, $after: String) { "
        f"{register}_Events(first: $first, after: $after, where: {{ {where} }}) "
        f"{{ pageInfo {{ hasNextPage endCursor }} nodes {{ {' '.join(EVENT_FIELDS)} }} }} }}"
    )
    url = str(src.events_url)
    rows = [n for page in graphql_pages(client, url, query, {}, src.page_size) for n in page]
    missing = [f for f in ("eventid", "eventaction", "object_id") if rows and f not in rows[0]]
    if missing:
        raise PullError(f"{client.what}: {url}: events without {missing}; the schema changed?")
    return pd.DataFrame(rows, columns=list(EVENT_FIELDS)).astype("string")


def _fetch_by_id(client: Client, src: RemoteFields, ids: list[str]) -> pd.DataFrame:
    """The current rows of ``ids`` (within the source's filters), as register text."""
    from mfa.pull.graphql import _fields

    fields = _fields(src)
    id_field = src.id_field or "id_lokalId"
    rows: list[dict[str, Any]] = []
    for start in range(0, len(ids), ID_CHUNK):
        chunk = ids[start : start + ID_CHUNK]
        eq = [f"{k}: {{ eq: {json.dumps(str(v))} }}" for k, v in src.filters.items()]
        where = ", ".join([*eq, f"{id_field}: {{ in: {json.dumps(chunk)} }}"])
        query = (
            "query($first: Int, $after: String, $t: DafDateTime!) { "
            f"{src.collection}(first: $first, after: $after, registreringstid: $t, "
            f"virkningstid: $t, where: {{ {where} }}) {{ pageInfo {{ hasNextPage endCursor }} "
            f"nodes {{ {' '.join(fields)} }} }} }}"
        )
        now = pd.Timestamp.now(tz="UTC").strftime("%Y-%m-%dT%H:%M:%SZ")
        for page in graphql_pages(client, str(src.url), query, {"t": now}, src.page_size):
            rows += page
    frame = pd.DataFrame(rows, columns=fields)
    return frame.astype(object).where(frame.notna(), "").astype(str)


def store_register(
    root: Path,
    kind: str,
    day: str,
    name: str,
    query: dict[str, Any],
    base: Path,
    changes: list[pd.DataFrame],
    deleted: list[str],
    previous: Snapshot | None,
    events: int,
    *,
    id_field: str,
    what: str,
) -> tuple[Snapshot, dict[str, Any]]:
    """Store the register CSV at ``base`` after ``changes`` and ``deleted`` as a new
    snapshot (or the previous one if the bytes are the same), written piece by piece
    (:func:`mfa.pull.changes.write_changed`); ``query["rows"]`` is filled in before the
    sidecar is written. Returns the snapshot and what was learnt."""

    def write(tmp: Path) -> str:
        rows, sha = write_changed(base, tmp, changes, deleted, id_field, what=what)
        query["rows"] = rows
        return sha

    snap = store_snapshot(root, kind, day, name, query, write, unchanged_from=previous)
    return snap, {"rows": query["rows"], "events": events}


def pull_graphql_changes(
    client: Client,
    src: RemoteFields,
    root: Path,
    kind: str,
    name: str,
    day: str,
    previous: Snapshot,
) -> tuple[Snapshot, dict[str, Any]] | None:
    """Bring the previous GraphQL snapshot up to date from the events since its cursor.

    Returns the snapshot to use (the previous one when nothing happened) and what was
    learnt; None when the previous snapshot has no event cursor (a full pull is needed).
    """
    prev_q = previous.query or {}
    cursor = prev_q.get("events_cursor")
    if not cursor:
        return None
    events = events_since(client, src, cursor)
    deleted, changed, latest = net_events(events)
    if latest is None:
        return previous, {"rows": prev_q.get("rows"), "events": 0}
    upserts = _fetch_by_id(client, src, changed)
    id_field = src.id_field or "id_lokalId"
    # an object changed but no longer within the filters (e.g. moved municipality): gone
    outside = sorted(set(changed) - set(upserts[id_field]))
    query = {
        "source": remote_query(src),
        "rows": None,  # filled in while the register is written
        "events_cursor": latest,
        "base": str(previous.path),
        "events": {"read": len(events), "deleted": len(deleted), "changed": len(changed)},
    }
    with locked_folder(root, kind, name):  # one pull of the source stores at a time
        remove_leftovers(root, kind, name)  # a killed pull's half-stored snapshot
        return store_register(
            root,
            kind,
            day,
            name,
            query,
            previous.path,
            [upserts],
            [*deleted, *outside],
            previous,
            len(events),
            id_field=id_field,
            what=client.what,
        )

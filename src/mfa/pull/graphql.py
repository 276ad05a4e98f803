"""Datafordeler GraphQL (e.g. BBR v2 ``BBR_Bygning``), cursor-paged into a register CSV.

Request shape, as Datafordeler documents it ("GraphQL på Datafordeleren", confluence.sdfi.dk,
and the C0200 guide "Udvalgte REST-tjenester omsat til GraphQL-queries", v1.6.1, 2025):
``POST {url}`` (e.g. ``https://graphql.datafordeler.dk/BBR/v2``) with the key as the query
parameter ``apiKey`` (added by the session, never saved) and a JSON body
``{"query": …, "variables": {"first": n, "after": cursor | null, "t": now}}``, the query::

    query($first: Int, $after: String, $t: DafDateTime!) {
      BBR_Bygning(first: $first, after: $after, registreringstid: $t, virkningstid: $t,
                  where: { kommunekode: { eq: "0326" } }) {
        pageInfo { hasNextPage endCursor }
        nodes { id_lokalId status byg021BygningensAnvendelse … }
      }
    }

``where`` holds one ``{ eq: value }`` per entry of ``filters``; ``collection`` is the entity
(``BBR_Bygning``); ``required_fields`` the node fields (default :data:`BBR_FIELDS`, what
:mod:`mfa.io.register` reads). The next page repeats the request with ``after`` =
``endCursor`` while ``hasNextPage``; ``t`` (registration and effect time) is fixed at the
first page, so a resumed pull reads the same state of the register. A ``200`` answer with
``errors`` (GraphQL reports bad queries and refused keys so) ends the pull with the
service's first message. The snapshot is a CSV in the register schema (``byg404Koordinat``
as WKT, ``byg406Koordinatsystem`` the CRS code), columns in field order, rows in page order.
Tested against a loopback stand-in only (tests/pull_standin.py).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests

from mfa.config.remote import RemoteFields
from mfa.errors import PullError, SnapshotCheckError
from mfa.pull.paging import Paging
from mfa.pull.snapshot import RunningIds

__all__ = ["BBR_FIELDS", "GRAPHQL"]

#: The BBR_Bygning fields the register reader uses (mfa.buildings.register).
BBR_FIELDS = (
    "id_lokalId",
    "kommunekode",
    "status",
    "byg021BygningensAnvendelse",
    "byg026Opfoerelsesaar",
    "byg032YdervaeggensMateriale",
    "byg036AsbestholdigtMateriale",
    "byg038SamletBygningsareal",
    "byg041BebyggetAreal",
    "byg054AntalEtager",
    "byg404Koordinat",
    "byg406Koordinatsystem",
)


def _fields(source: RemoteFields) -> list[str]:
    return list(source.required_fields) or list(BBR_FIELDS)


def _query(source: RemoteFields) -> str:
    where = ", ".join(f"{k}: {{ eq: {json.dumps(str(v))} }}" for k, v in source.filters.items())
    where_arg = f", where: {{ {where} }}" if where else ""
    return (
        "query($first: Int, $after: String, $t: DafDateTime!) { "
        f"{source.collection}(first: $first, after: $after, registreringstid: $t, "
        f"virkningstid: $t{where_arg}) {{ pageInfo {{ hasNextPage endCursor }} "
        f"nodes {{ {' '.join(_fields(source))} }} }} }}"
    )


def _first(source: RemoteFields) -> dict[str, Any]:
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    variables = {"first": source.page_size, "after": None, "t": now}
    body = {"query": _query(source), "variables": variables}
    return {"url": str(source.url), "json": body}


def _parse(body: bytes, content_type: str, what: str, url: str) -> dict[str, Any]:
    ctype = content_type.split(";")[0].strip().lower()
    if ctype and "json" not in ctype:
        raise PullError(
            f"{what}: {url}: the service answered {ctype} instead of JSON (an error page?); "
            "check url, or try again later"
        )
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise PullError(
            f"{what}: {url}: the answer is not valid JSON ({len(body)} bytes: cut off?); "
            "try again later"
        ) from None
    errors = doc.get("errors") if isinstance(doc, dict) else None
    if errors:
        first = errors[0].get("message", errors[0]) if isinstance(errors[0], dict) else errors[0]
        raise PullError(
            f"{what}: {url}: the service refused the query ({str(first)[:200]}); check "
            "collection, filters, required_fields and the key in api_key_env"
        )
    data = (doc.get("data") or {}) if isinstance(doc, dict) else {}
    if not isinstance(data, dict) or len(data) != 1:
        raise PullError(f"{what}: {url}: no data in the answer; check collection")
    (block,) = data.values()
    nodes = (block or {}).get("nodes")
    if not isinstance(nodes, list):
        raise PullError(f"{what}: {url}: the answer has no nodes list; check collection")
    return {"features": nodes, "pageInfo": (block or {}).get("pageInfo") or {}}


def _next(doc: dict[str, Any], r: requests.Response, request: dict[str, Any]) -> dict | None:
    info = doc["pageInfo"]
    if not info.get("hasNextPage") or not info.get("endCursor"):
        return None
    body = dict(request["json"])
    body["variables"] = dict(body["variables"], after=info["endCursor"])
    return dict(request, json=body)


def _crs(doc: dict[str, Any], r: requests.Response) -> str | None:
    return None  # each row carries its CRS code (byg406Koordinatsystem)


def _write(
    bodies: Iterable[bytes],
    out: Path,
    *,
    what: str,
    source: RemoteFields,
    number_matched: int | None,
) -> int:
    """Check the nodes (every field present, ids unique) and write them as a CSV.

    Streamed like :func:`mfa.pull.snapshot.assemble`: one page at a time, a count of
    records lacking each field and a 64-bit hash per id; ``bodies`` (re-iterable) is read
    again only to confirm repeated ids. Problems are raised after the pass (fields first,
    then ids); the caller discards ``out``.
    """
    if iter(bodies) is bodies:
        raise TypeError("the GraphQL writer needs pages it can read twice, not an iterator")
    fields = _fields(source)
    id_field = source.id_field or "id_lokalId"
    lacking = dict.fromkeys(fields, 0)
    ids = RunningIds()
    n = 0
    with open(out, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(fields)
        for body in bodies:
            nodes = _parse(body, "", what, "")["features"]
            for name in fields:
                lacking[name] += sum(name not in node for node in nodes)
            ids.add([str(node.get(id_field)) for node in nodes])
            w.writerows(
                [["" if node.get(k) is None else node[k] for k in fields] for node in nodes]
            )
            n += len(nodes)
    for name in fields:
        if lacking[name]:
            raise SnapshotCheckError(
                f"{what}: {lacking[name]} records lack the field '{name}'; the schema "
                "changed? update required_fields"
            )
    candidates = ids.candidates()
    if len(candidates):
        pages = (
            [str(node.get(id_field)) for node in _parse(b, "", what, "")["features"]]
            for b in bodies
        )
        dup = RunningIds.repeated(candidates, pages)
        if len(dup):
            raise SnapshotCheckError(
                f"{what}: {len(dup)} {id_field} values occur more than once (e.g. "
                f"{dup[0]}): pull again, or use a filter with a stable order"
            )
    return n


#: Datafordeler GraphQL paging.
GRAPHQL = Paging(
    first=_first, next=_next, crs=_crs, crs_param="", parse=_parse, write=_write, suffix=".csv"
)

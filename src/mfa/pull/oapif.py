"""OGC API – Features: page by page along ``rel=next``, resumable, into one GeoJSON snapshot.

Request shapes (OGC API – Features – Part 1: Core, OGC 17-069r4, and Part 2: Coordinate
Reference Systems by Reference, OGC 18-058; PDOK's BAG service follows both):

- first page: ``GET {url}/collections/{collection}/items?limit={page_size}&{filters}``
  with ``Accept: application/geo+json`` (``url`` may also be the items address itself);
  filters are query parameters such as ``bbox=minx,miny,maxx,maxy``, ``bbox-crs=…``,
  ``crs=http://www.opengis.net/def/crs/EPSG/0/28992`` or a queryable (``status=…``);
- each page is a GeoJSON FeatureCollection with ``links``; the one with ``rel: next`` is
  the next page's full address (its cursor is opaque: we never build it ourselves);
  ``numberMatched`` (optional) is the total, ``numberReturned`` the page's count;
- the ``Content-Crs`` response header (Part 2) names the CRS of the coordinates.

Why our own paging client (:mod:`mfa.pull.paging`) and not GDAL's OAPIF driver through
pyogrio: the driver follows ``rel=next`` inside one read call, so a pull killed at page k
starts again from page 1 and there is no place to save a cursor; a stand-in server in the
same process also deadlocks a GDAL read (docs/ENVIRONMENT). Paging here is a loop of plain
requests whose cursor is the ``next`` link, saved after each page (:mod:`mfa.pull.state`).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urljoin

import requests

from mfa.config.remote import RemoteFields
from mfa.pull.paging import Paging

__all__ = ["OAPIF", "fingerprint"]


def _first(source: RemoteFields) -> dict[str, Any]:
    """The items address and its query parameters (``limit`` and the filters)."""
    base = str(source.url).rstrip("/")
    items = base if base.endswith("/items") else f"{base}/collections/{source.collection}/items"
    params = {"limit": source.page_size, **{k: str(v) for k, v in source.filters.items()}}
    return {"url": items, "params": params}


def _next(doc: dict[str, Any], r: requests.Response, request: dict[str, Any]) -> dict | None:
    for link in doc.get("links") or []:
        if isinstance(link, dict) and link.get("rel") == "next" and link.get("href"):
            return {"url": urljoin(r.url, str(link["href"]))}
    return None


def _crs(doc: dict[str, Any], r: requests.Response) -> str | None:
    return r.headers.get("Content-Crs")


#: OGC API – Features paging.
OAPIF = Paging(first=_first, next=_next, crs=_crs, crs_param="crs")


def fingerprint(client: Any, source: RemoteFields) -> dict[str, Any]:
    """The cheap freshness check of a collection whose features carry a property that
    every change updates (``modified_field``, e.g. a publication time): one request,
    ``items?limit=2&sortby=-<field>`` with the source's filters, giving ``numberMatched``
    and the newest value of the field. An insert or an edit moves the newest value, a
    deletion the count: while both stay, the collection is taken as unchanged.

    ``sortby`` is the OGC API – Features Part 5 (Schemas/Sorting) parameter; a server that
    ignores it would answer in another order, so the two features must come newest first
    (a :class:`~mfa.errors.PullError` otherwise: remove ``modified_field``).
    """
    from mfa.errors import PullError
    from mfa.pull.snapshot import parse_page

    request = _first(source)
    field = str(source.modified_field)
    params = {**request["params"], "limit": 2, "sortby": f"-{field}"}
    r = client.request(
        "GET", request["url"], params=params, headers={"Accept": "application/geo+json"}
    )
    doc = parse_page(r.content, r.headers.get("Content-Type", ""), client.what, request["url"])
    matched = doc.get("numberMatched")
    values = [(f.get("properties") or {}).get(field) for f in doc["features"]]
    if not isinstance(matched, int) or any(v is None for v in values):
        raise PullError(
            f"{client.what}: the freshness check needs numberMatched and '{field}' on every "
            "feature; the service gives neither: remove modified_field"
        )
    if len(values) == 2 and str(values[0]) < str(values[1]):
        raise PullError(
            f"{client.what}: the service ignores sortby=-{field} (not newest first); remove "
            "modified_field (every pull then fetches all pages)"
        )
    return {"number_matched": matched, "newest": values[0] if values else None, "field": field}

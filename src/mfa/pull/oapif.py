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

Why our own paging client and not GDAL's OAPIF driver through pyogrio: the driver follows
``rel=next`` inside one read call, so a pull killed at page k starts again from page 1 and
there is no place to save a cursor; a stand-in server in the same process also deadlocks a
GDAL read (docs/ENVIRONMENT). Paging here is a loop of plain requests whose cursor is the
``next`` link, saved after each page (:mod:`mfa.pull.state`).

Freshness: the first page's ``ETag`` is kept in the snapshot's sidecar; the next pull asks
for the first page with ``If-None-Match`` and a 304 means unchanged. A service without
ETags is pulled in full, and a result with the same sha256 as the previous snapshot is not
stored again.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

from mfa.config.remote import RemoteFields
from mfa.errors import SnapshotCheckError
from mfa.failpoints import failpoint
from mfa.pull.client import Client
from mfa.pull.snapshot import assemble, parse_page
from mfa.pull.state import PageState

__all__ = ["GEOJSON", "assemble_pages", "fetch_all", "first_request"]

log = logging.getLogger("mfa")

GEOJSON = "application/geo+json, application/json;q=0.9"


def first_request(url: str, collection: str, page_size: int, filters: dict[str, Any]) -> dict:
    """The first page's request: the items address and its query parameters."""
    base = url.rstrip("/")
    items = base if base.endswith("/items") else f"{base}/collections/{collection}/items"
    return {"url": items, "params": {"limit": page_size, **{k: str(v) for k, v in filters.items()}}}


def _next_link(doc: dict[str, Any], page_url: str) -> str | None:
    for link in doc.get("links") or []:
        if isinstance(link, dict) and link.get("rel") == "next" and link.get("href"):
            return urljoin(page_url, str(link["href"]))
    return None


def fetch_all(client: Client, state: PageState, previous_etag: str | None) -> bool:
    """Fetch the remaining pages of ``state``; False when the first page is unchanged.

    Each page is saved with the cursor after it; ``failpoint('pull:page:<k>')`` follows
    each save so tests can kill the pull exactly after page k.
    """
    while state.next is not None:
        request = state.next
        headers = {"Accept": GEOJSON}
        conditional = state.pages == 0 and previous_etag is not None
        if conditional:
            headers["If-None-Match"] = previous_etag
        r = client.request(
            "GET",
            request["url"],
            params=request.get("params"),
            headers=headers,
            ok=(200, 304) if conditional else (200,),
        )
        if r.status_code == 304:
            return False
        doc = parse_page(r.content, r.headers.get("Content-Type", ""), client.what, r.url)
        info: dict[str, Any] = {"crs": r.headers.get("Content-Crs")}
        if state.pages == 0:
            matched = doc.get("numberMatched")
            info.update(
                number_matched=matched if isinstance(matched, int) else None,
                etag=r.headers.get("ETag"),
                crs_first=r.headers.get("Content-Crs"),
            )
        elif info["crs"] != state.info.get("crs_first"):
            raise SnapshotCheckError(
                f"{client.what}: page {state.pages + 1} is in CRS {info['crs']} but page 1 in "
                f"{state.info.get('crs_first')}; pull again"
            )
        nxt = _next_link(doc, r.url)
        k = state.save_page(r.content, None if nxt is None else {"url": nxt}, **info)
        log.info("%s: page %d saved (%d features)", client.what, k, len(doc["features"]))
        failpoint(f"pull:page:{k}")
    return True


def assemble_pages(state: PageState, out: Path, *, what: str, source: RemoteFields) -> int:
    """Check the saved pages and write the snapshot file (see :func:`assemble`)."""
    return assemble(
        state.bodies(),
        out,
        what=what,
        crs=state.info.get("crs_first"),
        requested_crs=(str(source.filters["crs"]) if "crs" in source.filters else None),
        id_field=source.id_field,
        required_fields=list(source.required_fields),
        number_matched=state.info.get("number_matched"),
    )

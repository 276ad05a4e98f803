"""Paged feature pulls, whatever the protocol: fetch page after page into the resume state
(:mod:`mfa.pull.state`: each page written atomically to the pull's work folder as it
arrives), then check and assemble the pages by streaming them from there, one at a time
(:mod:`mfa.pull.snapshot`), so memory does not grow with the number of features.

A protocol is a :class:`Paging`: its first request, how the next request follows from a
page (OGC API: the ``rel=next`` link; WFS: ``startIndex`` + the features returned), and
where a page says its CRS. The loop saves every page with the cursor after it and passes
``failpoint('pull:page:<k>')`` after each save, so tests can kill a pull exactly there.

Freshness: a paged service has no validator for the whole collection (an ``ETag`` of the
first page does not change when a feature on page 5 does), so every pull fetches every
page, and a result with the same sha256 as the newest snapshot is not stored again
(``unchanged``). Cheaper checks where the service offers one: an OGC API property that
every change updates (``modified_field``, :func:`mfa.pull.oapif.fingerprint`), and
Datafordeler's events since the last pull (:mod:`mfa.pull.events`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from mfa.config.remote import RemoteFields
from mfa.errors import SnapshotCheckError
from mfa.executor import report_progress
from mfa.failpoints import failpoint
from mfa.pull.client import Client, redact, without
from mfa.pull.snapshot import assemble, parse_page
from mfa.pull.state import PageState

__all__ = ["GEOJSON", "Paging", "assemble_pages", "fetch_all"]

log = logging.getLogger("mfa")

GEOJSON = "application/geo+json, application/json;q=0.9"


@dataclass(frozen=True)
class Paging:
    """How a protocol pages: ``first(source)`` is the first request (``{"url", "params"}``),
    ``next(doc, response, request)`` the one after a page (None: that was the last),
    ``crs(doc, response)`` the CRS a page declares, ``crs_param`` the filter that asks for
    a CRS."""

    first: Callable[[RemoteFields], dict[str, Any]]
    next: Callable[[dict[str, Any], requests.Response, dict[str, Any]], dict[str, Any] | None]
    crs: Callable[[dict[str, Any], requests.Response], str | None]
    crs_param: str
    #: ``parse(body, content_type, what, url)``: a page as a dict with a ``features`` list
    parse: Callable[[bytes, str, str, str], dict[str, Any]] = parse_page
    #: ``write(bodies, out, what=…, source=…, crs=…, number_matched=…, requested_crs=…)``:
    #: check the pages and write the snapshot, streaming ``bodies`` (re-iterable, read a
    #: second time only to confirm repeated ids); returns its row count
    write: Callable[..., int] | None = None
    suffix: str = ".geojson"


def fetch_all(client: Client, state: PageState, paging: Paging) -> None:
    """Fetch the remaining pages of ``state`` (all of them, or those after a killed pull's
    last saved page)."""
    while state.next is not None:
        request = state.next
        r = client.request(
            "POST" if "json" in request else "GET",
            request["url"],
            params=request.get("params"),
            json=request.get("json"),
            headers={"Accept": GEOJSON},
        )
        shown = redact(r.url, client.secrets)
        doc = paging.parse(r.content, r.headers.get("Content-Type", ""), client.what, shown)
        crs = paging.crs(doc, r)
        info: dict[str, Any] = {}
        if state.pages == 0:
            matched = doc.get("numberMatched")
            t = ((request.get("json") or {}).get("variables") or {}).get("t")
            info.update(
                number_matched=matched if isinstance(matched, int) else None,
                crs_first=crs,
                **({"registreringstid": t} if t else {}),
            )
        elif crs != state.info.get("crs_first"):
            raise SnapshotCheckError(
                f"{client.what}: page {state.pages + 1} is in CRS {crs} but page 1 in "
                f"{state.info.get('crs_first')}; pull again"
            )
        nxt = paging.next(doc, r, request)
        if nxt is not None and client.key_param is not None:  # never save a key
            nxt = dict(nxt, url=without(nxt["url"], client.key_param[0]))
        done = int(state.info.get("features", 0)) + len(doc["features"])
        k = state.save_page(r.content, nxt, features=done, **info)
        total = state.info.get("number_matched")
        log.info(
            "%s: page %d saved (%d features, %d%s so far)",
            client.what,
            k,
            len(doc["features"]),
            done,
            f" of {total}" if total else "",
        )
        # the Prefect task's progress artifact (mfa.executor.PROGRESS), per source
        what = "pull-" + client.what.rsplit(".", 1)[-1].replace("_", "-")
        report_progress(what, done, total if nxt is not None and total else done)
        failpoint(f"pull:page:{k}")


def assemble_pages(
    state: PageState, out: Path, *, what: str, source: RemoteFields, paging: Paging
) -> int:
    """Check the saved pages and write the snapshot file (see :func:`assemble`)."""
    requested = source.filters.get(paging.crs_param)
    if paging.write is not None:
        return paging.write(
            state.bodies(),
            out,
            what=what,
            source=source,
            number_matched=state.info.get("number_matched"),
        )
    return assemble(
        state.bodies(),
        out,
        what=what,
        crs=state.info.get("crs_first"),
        requested_crs=None if requested is None else str(requested),
        id_field=source.id_field,
        required_fields=list(source.required_fields),
        number_matched=state.info.get("number_matched"),
    )

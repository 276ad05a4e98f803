"""WFS 2.0 GetFeature, paged with ``startIndex``/``count`` under a sort key.

Request shape (OGC 09-025r2 = ISO 19142, Web Feature Service 2.0, KVP encoding, §7.6.3
response paging and §7.9.2.4.4 ``SORTBY``): ``GET {url}?service=WFS&version=2.0.0&
request=GetFeature&typeNames={collection}&outputFormat=application/json&count={page_size}
&startIndex={n}&sortBy={sort_by}`` + ``filters`` as further parameters (``srsName``,
``bbox``, …). Without a sort key the server may order each page differently, so paging by
offset could skip or repeat features: ``sort_by`` is required (the pipeline check says so).

The answer is a GeoJSON FeatureCollection (GeoServer, MapServer, deegree); ``numberMatched``
(an integer, or ``unknown``) is the total when given, and the CRS is the body's ``crs``
member when there is one. The next page starts at ``startIndex`` + the features returned;
the pull ends at a short page or when ``numberMatched`` is reached. Tested against a
loopback stand-in only (tests/pull_standin.py).
"""

from __future__ import annotations

from typing import Any

import requests

from mfa.config.remote import RemoteFields
from mfa.pull.paging import Paging

__all__ = ["WFS"]


def _first(source: RemoteFields) -> dict[str, Any]:
    params = {
        "service": "WFS",
        "version": "2.0.0",
        "request": "GetFeature",
        "typeNames": source.collection,
        "outputFormat": "application/json",
        "count": source.page_size,
        "startIndex": 0,
        "sortBy": source.sort_by,
        **{k: str(v) for k, v in source.filters.items()},
    }
    return {"url": str(source.url), "params": params}


def _next(doc: dict[str, Any], r: requests.Response, request: dict[str, Any]) -> dict | None:
    params = dict(request["params"])
    returned = len(doc["features"])
    start = int(params["startIndex"]) + returned
    matched = doc.get("numberMatched")
    if returned < int(params["count"]) or (isinstance(matched, int) and start >= matched):
        return None
    params["startIndex"] = start
    return {"url": request["url"], "params": params}


def _crs(doc: dict[str, Any], r: requests.Response) -> str | None:
    crs = doc.get("crs")
    if isinstance(crs, dict):
        name = (crs.get("properties") or {}).get("name")
        return None if name is None else str(name)
    return None


#: WFS 2.0 paging.
WFS = Paging(first=_first, next=_next, crs=_crs, crs_param="srsName")

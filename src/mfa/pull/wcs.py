"""The ``wcs`` protocol for height rasters: OGC WCS 2.0.1 GetCoverage as a GeoTIFF.

``[sources.heights] ndsm_url`` (``dsm_url``, ``dtm_url``) names the service and
``ndsm_coverage`` … the coverage; the request is the KVP binding (OGC 09-147r3) of
GetCoverage (WCS 2.0.1 Core, OGC 09-110r4) with the CRS extension (OGC 11-053r1)::

    {url}?service=WCS&version=2.0.1&request=GetCoverage&coverageId={id}
        &subset={x}({x0},{x1})&subset={y}({y0},{y1})
        &subsettingCrs=http://www.opengis.net/def/crs/EPSG/0/{epsg}&outputCrs=(the same)
        &format=image/tiff

``x`` and ``y`` are the coverage's axis labels (``wcs_axes``), the subset is the
pipeline's ``bbox`` in its CRS. The answer is pulled exactly as an ``http`` raster
(:func:`mfa.pull.files.pull_file`: conditional GET, streamed and bounded, resumed,
published only when its bytes changed), then checked before it is published
(:func:`check_coverage`): an OWS ExceptionReport (XML) is the service's error, named by
its code and text; anything else that GDAL cannot open is not a raster; the raster must
be in the pipeline's CRS, hold data and cover the bbox (a server clips a subset to its
coverage's extent). Each failure is one line; the last good snapshot stays the newest.

Plain HTTP, not GDAL's WCS driver: the driver asks GetCapabilities and DescribeCoverage
itself, caches them in ``~/.gdal`` and reads through GDAL's own HTTP layer, which mfa
switches off for inputs (:data:`mfa.io.safeopen.GDAL_SAFE_OPTIONS`) and which has no place
for the pull's one retry layer, size bound, resume and conditional requests.
"""

from __future__ import annotations

import re
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from mfa.config.remote import RemoteFields
from mfa.config.sources import number_text
from mfa.errors import PullError, SnapshotCheckError
from mfa.io.cache import Snapshot

__all__ = ["check_coverage", "getcoverage_url", "ows_exception", "pull_coverage"]

#: The bytes of an answer read to tell an OWS ExceptionReport (they are short).
HEAD = 65_536


def _epsg(crs: str) -> int:
    from pyproj import CRS

    code = CRS.from_user_input(crs).to_epsg()
    if code is None:
        raise PullError(f"{crs}: the pipeline's CRS has no EPSG code for the WCS request")
    return int(code)


def getcoverage_url(
    url: str, coverage: str, bbox: tuple[float, ...], crs: str, axes: tuple[str, str]
) -> str:
    """The GetCoverage request (KVP, GET) of ``coverage`` over ``bbox`` in ``crs``."""
    x0, y0, x1, y1 = bbox
    crs_uri = f"http://www.opengis.net/def/crs/EPSG/0/{_epsg(crs)}"
    params = [
        ("service", "WCS"),
        ("version", "2.0.1"),
        ("request", "GetCoverage"),
        ("coverageId", coverage),
        ("subset", f"{axes[0]}({number_text(x0)},{number_text(x1)})"),
        ("subset", f"{axes[1]}({number_text(y0)},{number_text(y1)})"),
        ("subsettingCrs", crs_uri),
        ("outputCrs", crs_uri),
        ("format", "image/tiff"),
    ]
    parts = urlsplit(url)
    query = "&".join(q for q in (parts.query, urlencode(params, safe="(),:/")) if q)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))


def ows_exception(head: bytes) -> str | None:
    """The service's own words when ``head`` (the first bytes of an answer) is an OWS
    ExceptionReport (OWS Common 2.0/1.1, OGC 06-121r9) or a WCS 1.x
    ServiceExceptionReport: ``code (locator): text`` of the first exception; else None."""
    import xml.etree.ElementTree as ET

    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if not text.startswith(b"<") or b"ExceptionReport" not in text[:2000]:
        return None
    try:
        root = ET.fromstring(text)
    except ET.ParseError:  # cut at HEAD bytes: the code is in the start tag
        m = re.search(rb'exceptionCode="([^"]*)"', text)
        return f"{m.group(1).decode('utf-8', 'replace')}" if m else "ExceptionReport"
    for el in root.iter():
        if el.tag.rsplit("}", 1)[-1] in ("Exception", "ServiceException"):
            code = el.get("exceptionCode") or el.get("code") or "exception"
            where = f" ({el.get('locator')})" if el.get("locator") else ""
            words = " ".join(" ".join(t.split()) for t in el.itertext() if t.strip())
            return f"{code}{where}: {words[:300]}" if words else f"{code}{where}"
    return "ExceptionReport"


def check_coverage(
    path: Path, what: str, url: str, crs: str, bbox: tuple[float, float, float, float]
) -> None:
    """Refuse a GetCoverage answer that is not a raster covering ``bbox`` in ``crs``
    (each a one-line :class:`~mfa.errors.SnapshotCheckError`)."""
    import rasterio

    from mfa.pull.raster import check_raster

    with open(path, "rb") as f:
        head = f.read(HEAD)
    said = ows_exception(head)
    if said is not None:
        raise SnapshotCheckError(
            f"{what}: {url}: the WCS answered an exception: {said}; check the coverage id, "
            "bbox, wcs_axes and the CRS against the service's DescribeCoverage"
        )
    check_raster(path, what, url, crs)  # GDAL opens it, its CRS, not empty
    with rasterio.open(path) as src:
        left, bottom, right, top = src.bounds
        px, py = abs(src.res[0]), abs(src.res[1])
    x0, y0, x1, y1 = bbox
    # a server snaps the subset to its pixel grid: one pixel either way is the same area
    if left > x0 + px or bottom > y0 + py or right < x1 - px or top < y1 - py:
        raise SnapshotCheckError(
            f"{what}: {url}: the raster covers {left:g},{bottom:g},{right:g},{top:g}, not "
            f"the bbox {x0:g},{y0:g},{x1:g},{y1:g} (the coverage ends inside it?); fix "
            "sources.heights.bbox or use a coverage that covers the area"
        )


def pull_coverage(
    client: Any,
    src: RemoteFields,
    root: Path,
    kind: str,
    name: str,
    day: str,
    previous: Snapshot | None,
    what: str,
    crs: str,
) -> tuple[Snapshot, dict[str, Any]]:
    """Pull the GetCoverage answer of ``src`` (a wcs raster: ``collection`` the coverage,
    ``filters`` bbox and axes) as an http raster, checked by :func:`check_coverage`."""
    from mfa.pull.client import redact
    from mfa.pull.files import pull_file

    bbox = tuple(float(v) for v in str(src.filters["bbox"]).split(","))
    axes = tuple(str(src.filters.get("axes", "x,y")).split(","))
    assert len(bbox) == 4 and len(axes) == 2 and src.collection
    request = getcoverage_url(str(src.url), src.collection, bbox, crs, axes)  # type: ignore[arg-type]
    shown = redact(request, client.secrets)
    check = partial(check_coverage, what=what, url=shown, crs=crs, bbox=bbox)
    as_file = src.model_copy(update={"url": request, "protocol": "http"})
    snap, info = pull_file(client, as_file, root, kind, name, day, previous, check=check)
    return snap, {**info, "request": shown}

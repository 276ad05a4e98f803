"""Assembling the pages of a feature pull into one snapshot file, and its checks.

The pages (GeoJSON FeatureCollections as the service sent them) become one GeoJSON
FeatureCollection, features in page order, each written as compact JSON, so the same pages
always give the same bytes: a resumed pull ends byte-identical to an uninterrupted one.
When the service declared a CRS other than CRS84 (OGC API ``Content-Crs``), the file
carries it as a GeoJSON ``crs`` member, which GDAL's GeoJSON driver reads.

Checks before publishing (each failure a :class:`~mfa.errors.SnapshotCheckError`):
every page a FeatureCollection with ``numberReturned`` features when it says so; one CRS
over all pages, and the one requested (``filters.crs``) when one was; every feature with
an id (``id_field`` or the feature ``id``), all ids unique; every ``required_fields``
property present on every feature (a renamed field is caught here); the row count equal
to ``numberMatched`` when the service gave one. A drop in rows against the previous
snapshot beyond ``max_drop`` is a warning (:func:`row_drop`), not an error.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from mfa.errors import PullError, SnapshotCheckError

__all__ = ["CRS84", "assemble", "crs_urn", "parse_page", "row_drop"]

#: The default CRS of GeoJSON and OGC API – Features (lon/lat).
CRS84 = "http://www.opengis.net/def/crs/OGC/1.3/CRS84"


def parse_page(body: bytes, content_type: str, what: str, url: str) -> dict[str, Any]:
    """One page as a dict; a :class:`~mfa.errors.PullError` when it is not a GeoJSON page."""
    ctype = content_type.split(";")[0].strip().lower()
    if ctype and "json" not in ctype:
        raise PullError(
            f"{what}: {url}: the service answered {ctype} instead of GeoJSON (an error page?); "
            "check url and collection, or try again later"
        )
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise PullError(
            f"{what}: {url}: the page is not valid JSON ({exc.__class__.__name__} at "
            f"{len(body)} bytes: cut off?); try again later"
        ) from None
    if not isinstance(doc, dict) or doc.get("type") != "FeatureCollection":
        raise PullError(
            f"{what}: {url}: the page is not a GeoJSON FeatureCollection; check url and "
            "collection (an OGC API – Features items endpoint)"
        )
    features = doc.get("features")
    if not isinstance(features, list):
        raise PullError(f"{what}: {url}: the page has no features list; check the service")
    returned = doc.get("numberReturned")
    if isinstance(returned, int) and returned != len(features):
        raise PullError(
            f"{what}: {url}: the page says numberReturned={returned} but holds "
            f"{len(features)} features (cut off?); try again later"
        )
    return doc


def crs_urn(crs: str) -> str:
    """``http://www.opengis.net/def/crs/EPSG/0/28992`` (or ``EPSG:28992``) as an OGC URN."""
    m = re.search(r"EPSG(?:/0/|::?)(\d+)", crs, re.IGNORECASE)
    return f"urn:ogc:def:crs:EPSG::{m.group(1)}" if m else crs


def _same_crs(a: str, b: str) -> bool:
    return crs_urn(a.strip("<> ")) == crs_urn(b.strip("<> "))


def assemble(
    bodies: Iterable[bytes],
    out: Path,
    *,
    what: str,
    crs: str | None,
    requested_crs: str | None,
    id_field: str | None,
    required_fields: list[str],
    number_matched: int | None,
) -> int:
    """Check the pages and write them as one GeoJSON file at ``out``; return the row count.

    ``crs`` is the CRS the service declared (None: CRS84), ``requested_crs`` the one asked
    for (``filters.crs``), ``number_matched`` the server's total when it gave one.
    """
    if requested_crs is not None and (crs is None or not _same_crs(crs, requested_crs)):
        raise SnapshotCheckError(
            f"{what}: asked for CRS {requested_crs} but the service answered in "
            f"{crs or 'CRS84 (no Content-Crs)'}; check filters.crs against the collection's "
            "crs list"
        )
    features = [f for body in bodies for f in json.loads(body)["features"]]
    n = len(features)
    if number_matched is not None and n != number_matched:
        raise SnapshotCheckError(
            f"{what}: {n} features fetched but the service matched {number_matched} (the "
            "data changed during the pull, or pages were lost); pull again"
        )
    if id_field is None:
        ids = [f.get("id") for f in features]
        id_name = "id"
    else:
        ids = [(f.get("properties") or {}).get(id_field) for f in features]
        id_name = id_field
    missing = [i for i, v in enumerate(ids) if v is None]
    if missing:
        raise SnapshotCheckError(
            f"{what}: feature {missing[0]} (of {n}) has no {id_name}; the schema changed? fix "
            "id_field in the pipeline file"
        )
    keys = np.array([json.dumps(v) for v in ids], dtype=object)
    uniq, counts = np.unique(keys, return_counts=True)
    if (counts > 1).any():
        dup = uniq[counts > 1]
        raise SnapshotCheckError(
            f"{what}: {len(dup)} {id_name} values occur more than once (e.g. {dup[0]}): paging "
            "without a stable order, or a wrong id_field; pull again or fix id_field"
        )
    for name in required_fields:
        has = np.fromiter(
            (name in (f.get("properties") or {}) for f in features), dtype=bool, count=n
        )
        if not has.all():
            first = int(np.flatnonzero(~has)[0])
            raise SnapshotCheckError(
                f"{what}: {int((~has).sum())} features lack the required field '{name}' "
                f"(first: {id_name} {ids[first]}); the schema changed? update required_fields "
                "and the reader's column names"
            )
    with open(out, "w", encoding="utf-8") as f:
        f.write('{"type":"FeatureCollection",')
        if crs is not None and not _same_crs(crs, CRS84):
            f.write(
                json.dumps({"crs": {"type": "name", "properties": {"name": crs_urn(crs)}}})[1:-1]
            )
            f.write(",")
        f.write('"features":[')
        f.write(
            ",".join(json.dumps(x, separators=(",", ":"), ensure_ascii=False) for x in features)
        )
        f.write("]}\n")
    return n


def row_drop(rows: int, previous_rows: int | None, max_drop: float) -> str | None:
    """A warning when ``rows`` is more than ``max_drop`` (a share) below ``previous_rows``."""
    if not previous_rows or rows >= previous_rows * (1 - max_drop):
        return None
    return (
        f"{rows} rows, {1 - rows / previous_rows:.0%} fewer than the previous snapshot's "
        f"{previous_rows} (more than max_drop = {max_drop:.0%}): check the service before "
        "trusting this run"
    )

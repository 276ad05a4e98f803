"""Assembling the pages of a feature pull into one snapshot file, and its checks.

The pages (GeoJSON FeatureCollections as the service sent them, saved one file a page in
the pull's work folder, :mod:`mfa.pull.state`) become one GeoJSON FeatureCollection,
features in page order, each written as compact JSON, so the same pages always give the
same bytes: a resumed pull ends byte-identical to an uninterrupted one. The pages are
streamed: one is read, checked and written at a time, the checks keep running counts and
a 64-bit hash per id, so memory does not grow with the number of features.
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
import pandas as pd

from mfa.errors import PullError, SnapshotCheckError

__all__ = ["CRS84", "RunningIds", "assemble", "crs_urn", "parse_page", "row_drop"]

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


class RunningIds:
    """The unique-id check of a streamed snapshot: a 64-bit hash per id (8 bytes a row,
    ``pd.util.hash_array`` of the id's text), added page by page; repeats of a hash are
    confirmed on the ids themselves in a second pass over the pages (:meth:`repeated`),
    so a hash collision is never reported as a repeated id."""

    def __init__(self) -> None:
        self._parts: list[np.ndarray] = []

    def add(self, keys: list[str]) -> None:
        """The ids (as text) of the next page, in order."""
        if keys:
            self._parts.append(pd.util.hash_array(np.array(keys, dtype=object)))

    def candidates(self) -> np.ndarray:
        """The hashes seen more than once (sorted; usually none)."""
        if not self._parts:
            return np.empty(0, dtype=np.uint64)
        uniq, counts = np.unique(np.concatenate(self._parts), return_counts=True)
        return uniq[counts > 1]

    @staticmethod
    def repeated(candidates: np.ndarray, pages: Iterable[list[str]]) -> np.ndarray:
        """The ids (sorted) that occur more than once among ``pages`` (the same ids again,
        page by page), looking only at those whose hash is among ``candidates``."""
        held: list[str] = []
        for keys in pages:
            arr = np.array(keys, dtype=object)
            if len(arr):
                held.extend(arr[np.isin(pd.util.hash_array(arr), candidates)])
        if not held:
            return np.empty(0, dtype=object)
        uniq, counts = np.unique(np.array(held, dtype=object), return_counts=True)
        return uniq[counts > 1]


def _feature_ids(features: list[dict[str, Any]], id_field: str | None) -> list[Any]:
    if id_field is None:
        return [f.get("id") for f in features]
    return [(f.get("properties") or {}).get(id_field) for f in features]


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

    Streamed: one page is held at a time (parsed, checked, its features written), with
    running counts and 8 bytes a feature for the unique-id check, so memory does not grow
    with the features. ``bodies`` is iterated a second time only to confirm repeated ids.
    The checks are reported after the pass, in the order: row count, a missing id,
    repeated ids, missing required fields (``out`` is then discarded by the caller).
    """
    if iter(bodies) is bodies:
        raise TypeError(
            "assemble needs pages it can read twice (a list, SavedPages), not an iterator"
        )
    if requested_crs is not None and (crs is None or not _same_crs(crs, requested_crs)):
        raise SnapshotCheckError(
            f"{what}: asked for CRS {requested_crs} but the service answered in "
            f"{crs or 'CRS84 (no Content-Crs)'}; check filters.crs against the collection's "
            "crs list"
        )
    id_name = "id" if id_field is None else id_field
    n = 0
    first_missing: int | None = None
    ids = RunningIds()
    lacking = dict.fromkeys(required_fields, 0)
    lacking_first: dict[str, Any] = {}
    with open(out, "w", encoding="utf-8") as f:
        f.write('{"type":"FeatureCollection",')
        if crs is not None and not _same_crs(crs, CRS84):
            f.write(
                json.dumps({"crs": {"type": "name", "properties": {"name": crs_urn(crs)}}})[1:-1]
            )
            f.write(",")
        f.write('"features":[')
        for body in bodies:
            features = json.loads(body)["features"]
            if not features:
                continue
            page_ids = _feature_ids(features, id_field)
            if first_missing is None:
                gaps = [i for i, v in enumerate(page_ids) if v is None]
                first_missing = n + gaps[0] if gaps else None
            ids.add([json.dumps(v) for v in page_ids])
            for name in required_fields:
                has = [name in (x.get("properties") or {}) for x in features]
                if not all(has):
                    lacking[name] += has.count(False)
                    lacking_first.setdefault(name, page_ids[has.index(False)])
            f.write("," if n else "")
            f.write(
                ",".join(json.dumps(x, separators=(",", ":"), ensure_ascii=False) for x in features)
            )
            n += len(features)
        f.write("]}\n")
    if number_matched is not None and n != number_matched:
        raise SnapshotCheckError(
            f"{what}: {n} features fetched but the service matched {number_matched} (the "
            "data changed during the pull, or pages were lost); pull again"
        )
    if first_missing is not None:
        raise SnapshotCheckError(
            f"{what}: feature {first_missing} (of {n}) has no {id_name}; the schema changed? "
            "fix id_field in the pipeline file"
        )
    candidates = ids.candidates()
    if len(candidates):
        pages = (
            [json.dumps(v) for v in _feature_ids(json.loads(b)["features"], id_field)]
            for b in bodies
        )
        dup = RunningIds.repeated(candidates, pages)
        if len(dup):
            raise SnapshotCheckError(
                f"{what}: {len(dup)} {id_name} values occur more than once (e.g. {dup[0]}): "
                "paging without a stable order, or a wrong id_field; pull again or fix id_field"
            )
    for name in required_fields:
        if lacking[name]:
            raise SnapshotCheckError(
                f"{what}: {lacking[name]} features lack the required field '{name}' "
                f"(first: {id_name} {lacking_first[name]}); the schema changed? update "
                "required_fields and the reader's column names"
            )
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

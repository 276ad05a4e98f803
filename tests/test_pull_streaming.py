"""The paged snapshot is assembled and checked page by page from the pages on disk:
memory does not grow with the features, and the streamed checks say what the whole-list
checks said (unique ids against a Counter, the row count, renamed fields)."""

from __future__ import annotations

import itertools
import json
import tracemalloc
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mfa.errors import SnapshotCheckError
from mfa.pull.graphql import _write as write_graphql
from mfa.pull.snapshot import RunningIds, assemble
from mfa.pull.state import SavedPages
from tests.pull_helpers import features

__all__ = ["features"]  # fixture, imported for pytest


def _pages(feats: list[dict], cuts: list[int]) -> list[bytes]:
    edges = [0, *sorted(c for c in cuts if c <= len(feats)), len(feats)]
    return [
        json.dumps({"type": "FeatureCollection", "features": feats[a:b]}).encode()
        for a, b in itertools.pairwise(edges)
    ]


def _assemble(pages: object, out: Path, **kw: object) -> int:
    args: dict = dict(
        what="t", crs=None, requested_crs=None, id_field=None, required_fields=[],
        number_matched=None,
    )  # fmt: skip
    return assemble(pages, out, **{**args, **kw})  # type: ignore[arg-type]


@settings(max_examples=60, deadline=None)
@given(
    ids=st.lists(st.one_of(st.integers(0, 30), st.sampled_from(["a", "b", "ü"])), max_size=40),
    cuts=st.lists(st.integers(0, 40), max_size=6),
)
def test_streamed_id_check_equals_a_counter_over_all_pages(
    ids: list, cuts: list[int], tmp_path_factory: pytest.TempPathFactory
) -> None:
    feats = [{"type": "Feature", "id": v, "properties": {}, "geometry": None} for v in ids]
    out = tmp_path_factory.mktemp("ids") / "s.geojson"
    repeated = sorted(k for k, c in Counter(json.dumps(v) for v in ids).items() if c > 1)
    if not repeated:
        assert _assemble(_pages(feats, cuts), out) == len(ids)
        assert json.loads(out.read_text())["features"] == feats
        return
    with pytest.raises(SnapshotCheckError) as info:
        _assemble(_pages(feats, cuts), out)
    assert f"{len(repeated)} id values occur more than once (e.g. {repeated[0]})" in str(info.value)


@settings(max_examples=40, deadline=None)
@given(
    ids=st.lists(st.integers(0, 25), max_size=30),
    lacking=st.sets(st.integers(0, 29)),
    cuts=st.lists(st.integers(0, 30), max_size=5),
)
def test_streamed_graphql_checks_equal_whole_list_checks(
    ids: list[int], lacking: set[int], cuts: list[int], tmp_path_factory: pytest.TempPathFactory
) -> None:
    nodes = [
        {"id_lokalId": str(v), **({} if i in lacking else {"status": "6"})}
        for i, v in enumerate(ids)
    ]
    edges = [0, *sorted(c for c in cuts if c <= len(nodes)), len(nodes)]
    pages = [
        json.dumps({"data": {"BBR_Bygning": {"nodes": nodes[a:b]}}}).encode()
        for a, b in itertools.pairwise(edges)
    ]
    source = SimpleNamespace(required_fields=["id_lokalId", "status"], id_field=None)
    out = tmp_path_factory.mktemp("gql") / "s.csv"
    missing = sum(i in lacking for i in range(len(ids)))
    repeated = sorted(k for k, c in Counter(str(v) for v in ids).items() if c > 1)
    if missing:
        with pytest.raises(SnapshotCheckError, match=f"{missing} records lack the field 'status'"):
            write_graphql(pages, out, what="t", source=source, number_matched=None)
    elif repeated:
        with pytest.raises(SnapshotCheckError) as info:
            write_graphql(pages, out, what="t", source=source, number_matched=None)
        assert f"{len(repeated)} id_lokalId values occur more than once (e.g. {repeated[0]})" in (
            str(info.value)
        )
    else:
        assert write_graphql(pages, out, what="t", source=source, number_matched=None) == len(ids)
        got = pd.read_csv(out, dtype=str, keep_default_na=False)
        assert got["id_lokalId"].tolist() == [str(v) for v in ids]


def test_a_hash_seen_twice_is_confirmed_on_the_ids_before_it_is_an_error() -> None:
    """A 64-bit hash that repeats is only a candidate: ids that differ are not repeats."""
    keys = ["a", "b", "c"]
    hashes = pd.util.hash_array(np.array(keys, dtype=object))
    assert list(RunningIds.repeated(hashes, [keys])) == []  # every hash a "candidate"
    assert list(RunningIds.repeated(hashes, [keys, ["b"]])) == ["b"]


def test_assemble_refuses_pages_it_cannot_read_twice(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="read twice"):
        _assemble(iter([b'{"features": []}']), tmp_path / "s.geojson")


def _peak_of_assembling(feats: list[dict], pages: int, folder: Path) -> tuple[int, int]:
    """Peak traced bytes of assembling ``pages`` copies of ``feats`` (new ids) from disk."""
    folder.mkdir()
    paths = []
    for k in range(pages):
        page = [{**f, "id": f"{f['id']}-{k}"} for f in feats]
        path = folder / f"page-{k + 1:06d}.json"
        path.write_text(json.dumps({"type": "FeatureCollection", "features": page}))
        paths.append(path)
    tracemalloc.start()
    try:
        n = _assemble(SavedPages(tuple(paths)), folder / "s.geojson", number_matched=None)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert n == len(feats) * pages
    return peak, paths[0].stat().st_size


def test_assembly_memory_does_not_grow_with_the_pages(features: list[dict], tmp_path: Path) -> None:
    """The peak is that of one page, whether there are 4 pages or 40 (holding every
    feature, as the assembly did before, needs about 10× a page's bytes per page)."""
    few, page_bytes = _peak_of_assembling(features, 4, tmp_path / "few")
    many, _ = _peak_of_assembling(features, 40, tmp_path / "many")
    assert many < 1.5 * few
    assert many < 40 * page_bytes  # less than the pages' own bytes

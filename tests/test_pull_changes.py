"""A register on disk brought up to date piece by piece (mfa.pull.changes.write_changed):
the same rows as a row-by-row replay whatever the piece size, repeated ids refused."""

from __future__ import annotations

import csv
import hashlib
import io
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mfa.errors import SnapshotCheckError
from mfa.pull.changes import write_changed

VALUES = st.sampled_from(["0", "1", "a,b", 'q"x', "", " s"])
ROWS = st.lists(st.tuples(st.sampled_from("abcdefg"), VALUES), max_size=9)


def _csv(rows: list[tuple[str, str]], sep: str = ",", bom: bool = False) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, delimiter=sep, lineterminator="\n")
    w.writerow(["id", "v"])
    w.writerows(rows)
    return (("\ufeff" if bom else "") + buf.getvalue()).encode()


@settings(max_examples=80, deadline=None)
@given(
    prev_rows=ROWS,
    changes=st.lists(ROWS, max_size=3),
    deleted=st.lists(st.sampled_from("abcdefgh"), max_size=3),
    chunk_rows=st.integers(1, 4),
    dialect=st.sampled_from([(",", False), (";", True)]),
)
def test_write_changed_equals_a_row_by_row_replay_in_any_piece_size(
    tmp_path_factory: pytest.TempPathFactory,
    prev_rows: list[tuple[str, str]],
    changes: list[list[tuple[str, str]]],
    deleted: list[str],
    chunk_rows: int,
    dialect: tuple[str, bool],
) -> None:
    folder = tmp_path_factory.mktemp("chg")
    prev = list(dict(prev_rows).items())  # ids unique
    base = folder / "base.csv"
    base.write_bytes(_csv(prev, *dialect))  # a previous snapshot, or a ;-total with a BOM
    frames = [pd.DataFrame(c, columns=["id", "v"]) for c in changes]
    out = folder / "out.csv"
    rows, sha = write_changed(
        base, out, frames, deleted, "id", what="sources.register", chunk_rows=chunk_rows
    )
    # oracle: replay every change on a dict that keeps insertion order, written by csv
    state = dict(prev)
    for c in changes:
        for i, v in c:
            state[i] = v
    for i in deleted:
        state.pop(i, None)
    expected = _csv(list(state.items()))
    assert out.read_bytes() == expected and rows == len(state)
    assert sha == hashlib.sha256(expected).hexdigest()


@pytest.mark.parametrize("where", ["base", "base+change"])
def test_write_changed_refuses_repeated_ids(tmp_path: Path, where: str) -> None:
    rows = [("a", "1"), ("b", "2"), ("c", "3")] + ([("b", "4")] if where == "base" else [])
    base = tmp_path / "base.csv"
    base.write_bytes(_csv(rows))
    # a change cannot repeat an id of the register (it replaces it): only the base can
    change = [pd.DataFrame([("b", "9")], columns=["id", "v"])]
    if where == "base":
        with pytest.raises(SnapshotCheckError, match="id b occurs more than once") as info:
            write_changed(base, tmp_path / "out.csv", change, [], "id", what="sources.register")
        assert "\n" not in str(info.value) and "sources.register" in str(info.value)
    else:
        rows_out, _ = write_changed(
            base, tmp_path / "out.csv", change, [], "id", what="sources.register"
        )
        assert rows_out == 3


def test_write_changed_without_the_id_column_is_a_schema_error(tmp_path: Path) -> None:
    base = tmp_path / "base.csv"
    base.write_text("ident,v\na,1\n")
    with pytest.raises(SnapshotCheckError, match=r"base\.csv has no id column; the schema"):
        write_changed(base, tmp_path / "out.csv", [], [], "id", what="sources.register")

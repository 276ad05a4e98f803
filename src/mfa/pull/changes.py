"""Changes applied to a register snapshot: changed rows (deltas) and deleted ids (events).

Vectorised over the rows (pandas index operations) of one piece of the register at a time
(:class:`ChangePlan`): a register on disk (a national total is GBs of text) is read and
written piece by piece (:func:`write_changed`), never held whole as pandas strings; only
the changes (a day's deltas, the objects an event named) are. A new snapshot is always a
new file: the previous one is read, never edited (:mod:`mfa.io.cache`).

Datafordeler publishes changes in two ways (checked against its documentation, see
docs/design.md "Pull"): **delta downloads** (one file a day with every row that changed
since the previous delta: inserts and updates, never deletions, since Datafordeler does
not publish deleted data) and **events** (``<Register>_Events`` in GraphQL: per change
``eventid``, ``eventaction`` ``i``/``u``/``d``, ``object_id`` and
``datafordelerOpdateringstid``; "the only way to see data that was deleted").
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from mfa.errors import SnapshotCheckError

__all__ = ["ChangePlan", "apply_changes", "net_events", "write_changed"]

#: Rows of a register read and written at a time by :func:`write_changed`.
CHUNK_ROWS = 50_000


class ChangePlan:
    """The changes to a register, applied to its rows chunk by chunk (see
    :func:`apply_changes` for the rule). The changed rows (deltas, small) are held; the
    register itself passes through :meth:`apply` in pieces, then :meth:`rest` gives the
    rows with new ids."""

    def __init__(
        self,
        columns: Iterable[str],
        changed: Iterable[pd.DataFrame],
        deleted: Iterable[str],
        id_field: str,
    ) -> None:
        parts = [c for c in changed if len(c)]
        self.columns = list(columns)
        for c in parts:
            self.columns += [k for k in c.columns if k not in self.columns]
        self.id_field = id_field
        if parts:
            upd = pd.concat([c.reindex(columns=self.columns) for c in parts], ignore_index=True)
            # ids in the order first given (drop_duplicates keeps the last row's position)
            self.order = pd.Index(pd.concat([c[id_field] for c in parts], ignore_index=True))
            self.order = self.order.unique()
            self.upd = upd.drop_duplicates(id_field, keep="last").reset_index(drop=True)
        else:
            self.order = pd.Index([], dtype=object)
            self.upd = pd.DataFrame(columns=self.columns)
        self.upd_ids = pd.Index(self.upd[id_field].to_numpy(object))
        self.seen = np.zeros(len(self.upd), dtype=bool)  # updated in place somewhere
        self.gone = pd.Index(list(deleted), dtype=object)

    def _finish(self, frame: pd.DataFrame) -> pd.DataFrame:
        keep = ~frame[self.id_field].isin(self.gone).to_numpy()
        return frame.loc[keep].fillna("").astype(str).reset_index(drop=True)

    def apply(self, chunk: pd.DataFrame) -> pd.DataFrame:
        """One piece of the register after the changes (changed rows replaced in place,
        deleted ones removed)."""
        out = chunk.reindex(columns=self.columns)
        if len(self.upd):
            at = self.upd_ids.get_indexer(out[self.id_field].to_numpy(object))
            hit = np.flatnonzero(at >= 0)
            out.iloc[hit] = self.upd.iloc[at[hit]].to_numpy(object)
            self.seen[at[hit]] = True
        return self._finish(out)

    def rest(self) -> pd.DataFrame:
        """The changed rows whose id no register piece had, in the order first given."""
        new = self.upd.iloc[np.flatnonzero(~self.seen)]
        rank = self.order.get_indexer(new[self.id_field].to_numpy(object))
        return self._finish(new.iloc[np.argsort(rank, kind="stable")])


def apply_changes(
    previous: pd.DataFrame,
    changed: Iterable[pd.DataFrame],
    deleted: Iterable[str],
    id_field: str,
) -> pd.DataFrame:
    """The register after ``changed`` (in order; a later row of an id wins) and ``deleted``.

    Rows of ``previous`` keep their order, a changed one in its place; rows with a new id
    follow in the order they were first given; deleted ids are removed (whether they were
    in ``previous`` or came with a change). Columns are ``previous``'s, then any new ones;
    values missing from a change are empty. All values are text, as in the CSV. (A
    register on disk goes through the same :class:`ChangePlan` piece by piece:
    :func:`write_changed`.)
    """
    plan = ChangePlan(previous.columns, changed, deleted, id_field)
    return pd.concat([plan.apply(previous), plan.rest()], ignore_index=True)


def csv_separator(path: Path) -> str:
    """``;`` when the first line of the CSV at ``path`` has more of them than ``,``."""
    with open(path, encoding="utf-8-sig", errors="replace") as f:
        first = f.readline()
    return ";" if first.count(";") > first.count(",") else ","


def _chunks(path: Path, what: str, chunk_rows: int) -> tuple[list[str], Iterator[pd.DataFrame]]:
    """The columns of a register CSV and its rows as text, ``chunk_rows`` at a time."""
    opts = {
        "dtype": str,
        "keep_default_na": False,
        "na_values": [],
        "sep": csv_separator(path),
        "encoding": "utf-8-sig",
    }
    try:
        columns = list(pd.read_csv(path, nrows=0, **opts).columns)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise SnapshotCheckError(f"{what}: {path.name}: not a register CSV ({exc})") from None
    return columns, pd.read_csv(path, chunksize=chunk_rows, **opts)


def write_changed(
    base: Path,
    out: Path,
    changed: Iterable[pd.DataFrame],
    deleted: Iterable[str],
    id_field: str,
    *,
    what: str,
    chunk_rows: int = CHUNK_ROWS,
) -> tuple[int, str]:
    """Write the register CSV at ``base`` after the changes (:func:`apply_changes`) to
    ``out``, ``chunk_rows`` rows at a time; return the row count and the sha256 of ``out``.

    ``base`` may be a previous snapshot or a downloaded total (``,`` or ``;``, a BOM or
    not); ``out`` is a snapshot CSV (header, ``,``, one line a row, ``\\n``, quoted only
    where needed). Memory: one piece of the register and the changes, plus 8 bytes a row
    (a 64-bit hash of each id, to refuse a register whose ids repeat:
    :class:`~mfa.errors.SnapshotCheckError`, also when ``base`` has no ``id_field``).
    """
    columns, chunks = _chunks(base, what, chunk_rows)
    if id_field not in columns:
        raise SnapshotCheckError(
            f"{what}: {base.name} has no {id_field} column; the schema changed? set id_field"
        )
    plan = ChangePlan(columns, changed, deleted, id_field)
    sha = hashlib.sha256()
    hashes: list[np.ndarray] = []
    rows = 0
    with open(out, "wb") as f:

        def put(frame: pd.DataFrame | None) -> None:
            nonlocal rows
            buf = io.StringIO()
            w = csv.writer(buf, lineterminator="\n")
            if frame is None:
                w.writerow(plan.columns)
            else:
                w.writerows(frame.to_numpy(dtype=object).tolist())
                hashes.append(pd.util.hash_array(frame[id_field].to_numpy(object)))
                rows += len(frame)
            data = buf.getvalue().encode("utf-8")
            sha.update(data)
            f.write(data)

        put(None)
        for chunk in chunks:
            put(plan.apply(chunk))
        put(plan.rest())
    ids = np.concatenate(hashes) if hashes else np.zeros(0, np.uint64)
    uniq, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():  # (a 64-bit hash: confirmed on the ids themselves)
        dup = _repeated(out, id_field, set(uniq[counts > 1].tolist()), chunk_rows)
        if dup is not None:
            raise SnapshotCheckError(
                f"{what}: {id_field} {dup} occurs more than once in the register made from "
                f"{base.name} and its changes; pull again after the next total"
            )
    return rows, sha.hexdigest()


def _repeated(path: Path, id_field: str, suspects: set[int], chunk_rows: int) -> str | None:
    """An id of the CSV at ``path`` that occurs twice among those whose hash is a suspect."""
    seen: set[str] = set()
    for chunk in _chunks(path, "", chunk_rows)[1]:
        ids = chunk[id_field].to_numpy(object)
        ids = ids[np.isin(pd.util.hash_array(ids), np.fromiter(suspects, np.uint64))]
        for i in ids.tolist():  # only the few ids whose hash repeats
            if i in seen:
                return str(i)
            seen.add(i)
    return None


def net_events(events: pd.DataFrame) -> tuple[list[str], list[str], str | None]:
    """What a run of events comes to, per object: the last action decides.

    ``events`` has ``eventid``, ``eventaction`` (``i``, ``u`` or ``d``), ``object_id`` and
    ``datafordelerOpdateringstid``; events from a failed import (``fromfailedimport``) are
    duplicates and change nothing here. Returns the ids deleted (last action ``d``), the
    ids inserted or updated (to fetch anew), both sorted, and the latest event time (the
    cursor of the next pull; None without events).
    """
    if events.empty:
        return [], [], None
    e = events.assign(
        _t=pd.to_datetime(events["datafordelerOpdateringstid"], utc=True, format="ISO8601"),
        _id=pd.to_numeric(events["eventid"], errors="coerce"),
    )
    e = e.sort_values(["_t", "_id"], kind="stable")
    last = e.drop_duplicates("object_id", keep="last")
    action = last["eventaction"].astype(str).str.lower().str[0]
    deleted = sorted(last.loc[action == "d", "object_id"].astype(str))
    changed = sorted(last.loc[action.isin(["i", "u"]), "object_id"].astype(str))
    latest = e.iloc[-1]["datafordelerOpdateringstid"]
    return deleted, changed, str(latest)

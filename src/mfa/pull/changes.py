"""Changes applied to a register snapshot: changed rows (deltas) and deleted ids (events).

Pure and vectorised over the rows (pandas index operations). A new snapshot is always a new
file: the previous one is read, never edited (:mod:`mfa.io.cache`).

Datafordeler publishes changes in two ways (checked against its documentation, see
docs/design.md "Pull"): **delta downloads** (one file a day with every row that changed
since the previous delta: inserts and updates, never deletions, since Datafordeler does
not publish deleted data) and **events** (``<Register>_Events`` in GraphQL: per change
``eventid``, ``eventaction`` ``i``/``u``/``d``, ``object_id`` and
``datafordelerOpdateringstid``; "the only way to see data that was deleted").
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

__all__ = ["apply_changes", "net_events"]


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
    values missing from a change are empty. All values are text, as in the CSV.
    """
    parts = [c for c in changed if len(c)]
    columns = list(previous.columns)
    for c in parts:
        columns += [k for k in c.columns if k not in columns]
    prev = previous.reindex(columns=columns)
    if parts:
        upd = pd.concat([c.reindex(columns=columns) for c in parts], ignore_index=True)
        upd = upd.drop_duplicates(id_field, keep="last")
        upd_ids = upd[id_field].to_numpy(object)
        at = pd.Index(prev[id_field]).get_indexer(upd_ids)
        in_place = at >= 0
        prev.iloc[at[in_place]] = upd.iloc[np.flatnonzero(in_place)].to_numpy(object)
        # new ids in the order first given (drop_duplicates kept the last row's position)
        order = pd.Index(pd.concat([c[id_field] for c in parts], ignore_index=True)).unique()
        new = upd.iloc[np.flatnonzero(~in_place)].set_index(id_field, drop=False)
        new = new.loc[[i for i in order if i in new.index]] if len(new) else new
        prev = pd.concat([prev, new.reset_index(drop=True)], ignore_index=True)
    gone = prev[id_field].isin(pd.Index(list(deleted)))
    return prev.loc[~gone.to_numpy()].fillna("").astype(str).reset_index(drop=True)


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

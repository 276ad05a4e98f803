"""Bookkeeping of records that are left out, so none is dropped silently."""

from __future__ import annotations

import pandas as pd

from mfa.schema import empty_dropped


class DropLog:
    """Marks records to leave out, each with a reason, and keeps the survivors' mask.

    ``drop(mask, reason)`` only counts records that are still kept, so every record has
    at most one (the first) reason.
    """

    def __init__(self, ids: pd.Series, stage: str) -> None:
        self.ids = ids.astype("string")
        self.stage = stage
        self.keep = pd.Series(True, index=ids.index)
        self._parts: list[pd.DataFrame] = [empty_dropped()]

    def drop(self, mask: pd.Series, reason: pd.Series | str) -> None:
        mask = mask.fillna(False).astype(bool) & self.keep
        if mask.any():
            idx = self.ids.index[mask]
            why = reason[mask] if isinstance(reason, pd.Series) else reason
            self._parts.append(
                pd.DataFrame(
                    {
                        "record_id": self.ids[mask],
                        "stage": pd.Series(self.stage, index=idx, dtype="string"),
                        "reason": pd.Series(why, index=idx, dtype="string"),
                    }
                )
            )
        self.keep = self.keep & ~mask

    def table(self) -> pd.DataFrame:
        """All dropped records: ``record_id``, ``stage``, ``reason``."""
        return pd.concat(self._parts, ignore_index=True).astype("string")

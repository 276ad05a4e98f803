"""Rules per attribute: what the run report counts per rule, against pandas."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mfa.buildings.provenance import (
    RULE_ATTRIBUTES,
    RULES,
    derive_gfa_rule,
    rule_shares,
    rule_sums,
    set_rule,
    with_rules,
)

SOURCES = ["register", "osm", "raster", "imputed", "missing"]


def _frame(rows) -> pd.DataFrame:
    n = len(rows)
    df = pd.DataFrame(
        {f"{a}_source": [r[0] for r in rows] for a in RULE_ATTRIBUTES}
        | {"mass_t": [r[1] for r in rows]}
    )
    df["gfa_source"] = ["register" if i % 3 == 0 else "imputed" for i in range(n)]
    return with_rules(df)


@settings(max_examples=50, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(SOURCES), st.floats(0, 1e5, allow_nan=False)),
        min_size=1,
        max_size=50,
    ),
    st.integers(1, 4),
)
def test_rule_sums_add_up_over_any_split_and_match_pandas(rows, parts) -> None:
    df = _frame(rows)
    whole = rule_sums(df)
    cut = np.array_split(np.arange(len(df)), parts)
    summed = None
    for idx in cut:
        if len(idx):
            s = rule_sums(df.iloc[idx])
            summed = s if summed is None else summed.add(s, fill_value=0.0)
    pd.testing.assert_series_equal(whole.sort_index(), summed.sort_index(), rtol=1e-12)
    shares = rule_shares(whole)
    for a in RULE_ATTRIBUTES:
        want = df.groupby(f"{a}_rule")["mass_t"].agg(["size", "sum"])
        got = shares[a]
        assert set(got) == set(want.index) and set(got) <= set(RULES)
        for r, g in got.items():
            assert g["buildings"] == want.at[r, "size"]
            assert g["mass_t"] == pytest.approx(want.at[r, "sum"], abs=1e-3)
        assert sum(g["buildings_share"] for g in got.values()) == pytest.approx(1, abs=1e-5)


def test_rules_from_sources_and_the_floor_area_follows_its_floors() -> None:
    df = pd.DataFrame(
        {f"{a}_source": ["register", "osm", "imputed", "missing"] for a in RULE_ATTRIBUTES}
    )
    df["gfa_source"] = ["register", "osm", "imputed", "imputed"]
    df = with_rules(df)
    assert list(df["floors_rule"]) == ["measured", "tags", "default", "missing"]
    set_rule(df, np.array([False, False, True, False]), "floors", "neighbours")
    set_rule(df, np.array([False, False, False, True]), "gfa", "repaired")
    assert list(derive_gfa_rule(df)) == ["measured", "tags", "neighbours", "repaired"]
    with pytest.raises(ValueError, match="unknown rule"):
        set_rule(df, np.ones(4, bool), "floors", "guess")

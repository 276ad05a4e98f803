"""The 2016 → 2020 register snapshots against the stock model (docs/flows-vs-register.md)."""

from __future__ import annotations

import pandas as pd
import pytest

from mfa.buildings.register import normalise_bbr
from mfa.config import RegisterSource
from mfa.dynamics.validation import expected_outflow_m2, observed_changes
from mfa.io.register import read_legacy_register, read_register
from mfa.io.tables import load_lifetimes
from tests.conftest import CONFIG, DATA, ROOT, SAMPLE


def comparison(rules) -> dict:
    legacy = read_legacy_register(DATA / "bbr_legacy_2016_bygning.parquet")
    b16, _ = normalise_bbr(legacy, rules, ["1"])  # old ObjStatus 1 = current record
    reg20 = read_register(RegisterSource(path=SAMPLE / "bbr_bygning_2020.parquet"), "EPSG:25832")
    b20, _ = normalise_bbr(reg20, rules, ["6"])
    status = pd.Series(reg20["status"].to_numpy(), index=reg20["id_lokalId"].str.lower())
    obs = observed_changes(b16, b20, status, first_new_year=2016)
    lifetimes = load_lifetimes(CONFIG / "lifetimes.toml")
    obs["expected_outflow_m2"] = round(expected_outflow_m2(b16, lifetimes, 2016, 2020), 1)
    obs["undated_m2"] = float(b16.loc[b16.construction_year.isna(), "gfa_m2"].sum())
    return obs


def test_snapshot_comparison(rules) -> None:
    c = comparison(rules)
    assert c["before_buildings"] == 2146 and c["removed_buildings"] == 65
    by = c["removed_m2_by_later_status"]
    assert sum(by.values()) == pytest.approx(c["removed_m2"])
    demolished_or_deleted = by.get("10", 0) + by.get("absent", 0)
    per_year = demolished_or_deleted / 4 / c["before_m2"]
    expected = c["expected_outflow_m2"] / 4 / c["before_m2"]
    # the register's removals bound demolition from above; the model (calibrated to
    # 0.2 %/yr nationally) expects less than that bound on this small sample
    assert 0 < expected < per_year


def test_documented_numbers_are_current(rules) -> None:
    c = comparison(rules)
    doc = (ROOT / "docs" / "flows-vs-register.md").read_text()
    by_m2, by_n = c["removed_m2_by_later_status"], c["removed_buildings_by_later_status"]
    for key in ("10", "absent", "6"):
        assert f"| {by_n.get(key, 0)} | {by_m2.get(key, 0.0):,.0f} |" in doc, key
    assert f"{c['expected_outflow_m2']:,.0f} m²" in doc
    assert f"{c['before_m2']:,.0f} m²" in doc
    assert f"{c['new_m2']:,.0f} m²" in doc

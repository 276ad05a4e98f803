"""Every BBR code list entry and every code in the sample data is mapped or excluded."""

from __future__ import annotations

import geopandas as gpd
import pandas as pd
import pytest

from mfa.errors import ConfigError
from mfa.io.tables import load_archetype_rules
from tests.conftest import CONFIG, SAMPLE


def _codes(name: str) -> set[str]:
    return set(pd.read_csv(CONFIG / "codelists" / name, dtype=str)["kode"])


def test_every_bbr_use_code_is_mapped_or_excluded(rules) -> None:
    mapped = set(rules.bbr_use_function.index)
    excluded = set(rules.bbr_use_excluded.index)
    assert not mapped & excluded
    assert _codes("byg021_bygningens_anvendelse.csv") <= mapped | excluded
    sample = gpd.read_parquet(SAMPLE / "bbr_bygning_2020.parquet")
    used = set(sample["byg021BygningensAnvendelse"].dropna())
    assert used <= mapped | excluded, used - mapped - excluded


def test_every_bbr_wall_code_is_listed(rules) -> None:
    table = pd.read_csv(CONFIG / "archetypes" / "bbr_wall_codes.csv", dtype=str)
    assert _codes("byg032_ydervaeggens_materiale.csv") == set(table["code"])
    # codes without a structure are imputed from the function, by design
    assert set(table["code"]) - set(rules.bbr_wall_structure.index) == {"80", "90"}


def test_carports_are_excluded_houses_are_single_family(rules) -> None:
    assert "carport" in rules.bbr_use_excluded["920"]
    assert rules.bbr_use_function["120"] == "RS"
    assert rules.bbr_use_function["140"] == "RM"
    assert rules.bbr_use_function["321"] == "NR"
    assert rules.bbr_wall_structure["1"] == "M"
    assert rules.bbr_wall_structure["6"] == "C"
    assert rules.osm_building_function["apartments"] == "RM"
    assert "osm" not in rules.osm_building_excluded.get("carport", "osm")


def test_a_code_both_mapped_and_excluded_is_rejected(tmp_path) -> None:
    import shutil

    folder = tmp_path / "archetypes"
    shutil.copytree(CONFIG / "archetypes", folder)
    f = folder / "bbr_use_codes.csv"
    lines = f.read_text().splitlines()
    lines = [line + "no reason" if line.startswith("321,") else line for line in lines]
    f.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError, match=r"bbr_use_codes\.csv line \d+: code '321' has both"):
        load_archetype_rules(folder)

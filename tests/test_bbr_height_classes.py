"""Height classes of register buildings from their BBR use code
(config/archetypes/bbr_height_classes.csv): a church, a hall or a silo with a raster
height does not become many storeys."""

from __future__ import annotations

import shutil

import geopandas as gpd
import pandas as pd
import pytest
import shapely

from mfa.buildings.quality import refine_with_heights
from mfa.buildings.register import normalise_bbr
from mfa.config import RegisterSource
from mfa.errors import ConfigError
from mfa.io.register import read_register
from mfa.io.tables import load_archetype_rules
from tests.conftest import CONFIG, DATA


def _register(rules, uses: list[str]) -> gpd.GeoDataFrame:
    """Real Kalundborg records (no floor count) given these use codes and square
    footprints of 400 m², as conflation with footprints gives them."""
    records = read_register(RegisterSource(path=DATA / "bbr_kalundborg_60.csv"), "EPSG:25832")
    records = records[records["status"] == "6"].head(len(uses)).copy()
    records["byg021BygningensAnvendelse"] = uses
    records["byg054AntalEtager"] = float("nan")
    records["byg038SamletBygningsareal"] = 0.0
    records["byg041BebyggetAreal"] = 400.0
    b, dropped = normalise_bbr(records, rules, ["6"])
    assert dropped.empty
    boxes = [shapely.box(i * 100, 0, i * 100 + 20, 20) for i in range(len(b))]
    return b.set_geometry(gpd.GeoSeries(boxes, crs=b.crs))


def test_use_codes_give_storey_heights_and_limits(rules) -> None:
    uses = ["414", "221", "219", "321", "140", "533"]
    b = _register(rules, uses)
    assert b["height_class"].tolist() == [
        "worship", "industrial", "hall", "office", pd.NA, "hall"
    ]  # fmt: skip
    storey = {**rules.storey_height_by_function, "*": rules.storey_height_m}
    raster = pd.Series([25.0, 12.0, 28.0, 16.0, 16.0, 9.0], index=b.index)
    out, repairs = refine_with_heights(b, raster, storey, rules.limits, rules.height_classes)
    o = out.set_index("use_code")
    nr = rules.floors_by_function["NR"]
    # a 25 m church: not 6 storeys; a 28 m silo among the farm buildings: not 9
    for code in ("414", "219"):
        assert o.loc[code, "floors"] == nr and o.loc[code, "floors_rule"] == "repaired"
    assert o.loc["221", "floors"] == 1  # an industrial hall of 12 m (10.67 m storeys)
    assert o.loc["533", "floors"] == 1 and o.loc["533", "floors_rule"] == "height"
    assert o.loc["321", "floors"] == round(16 / 3.9) == 4  # an office keeps its storeys
    assert o.loc["140", "floors"] == round(16 / rules.storey_height_by_function["RM"]) == 5
    assert o.loc["221", "gfa_m2"] == 400.0  # footprint × floors
    why = repairs.set_index("record_id")["reason"]
    assert "worship" in why[o.loc["414", "building_id"]]
    assert "hall" in why[o.loc["219", "building_id"]]


def test_every_code_and_class_of_the_table_is_known(rules) -> None:
    table = pd.read_csv(CONFIG / "archetypes" / "bbr_height_classes.csv", dtype=str)
    assert set(table["height_class"]) <= set(rules.height_classes.index)
    assert set(table["code"]) <= set(rules.bbr_use_function.index)
    assert rules.bbr_height_class.loc["414"] == "worship"


def test_a_wrong_code_or_class_is_a_one_line_config_error(tmp_path) -> None:
    d = tmp_path / "archetypes"
    shutil.copytree(CONFIG / "archetypes", d)
    f = d / "bbr_height_classes.csv"
    text = f.read_text()
    f.write_text(text.replace("414,worship", "4140,worship"))
    with pytest.raises(ConfigError, match=r"line \d+: code '4140' is not a BBR use code") as err:
        load_archetype_rules(d)
    assert "\n" not in str(err.value)
    f.write_text(text.replace("414,worship", "414,chapel"))
    with pytest.raises(ConfigError, match="height_class 'chapel' is not one of"):
        load_archetype_rules(d)

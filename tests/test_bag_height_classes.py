"""Height classes of BAG panden from their main use (config/archetypes/bag_height_classes.csv):
where floors come from a height (a raster over the panden), a sports hall or an
industrial hall is not many storeys, an office keeps its storeys of 3.9 m."""

from __future__ import annotations

import shutil

import geopandas as gpd
import pandas as pd
import pytest
import shapely

from mfa.buildings.bag import normalise_bag
from mfa.buildings.quality import refine_with_heights
from mfa.errors import ConfigError
from mfa.io.tables import load_archetype_rules
from tests.conftest import CONFIG

TABLE = CONFIG / "archetypes" / "bag_height_classes.csv"
IN_USE = "Verblijfsobject in gebruik"


def _href(pid: str) -> list[str]:
    return [f"https://api.pdok.nl/kadaster/bag/ogc/v2/collections/pand/items/uuid-{pid}"]


def _bag(rules):
    """Six panden of 20 × 20 m: five with one unit of a use, one without units whose own
    gebruiksdoel (as PDOK gives it) is sport."""
    uses = ["sportfunctie", "industriefunctie", "kantoorfunctie", "woonfunctie",
            "overige gebruiksfunctie"]  # fmt: skip
    ids = [f"P{i}" for i in range(6)]
    pand = gpd.GeoDataFrame(
        {
            "id": [f"uuid-{p}" for p in ids],
            "identificatie": ids,
            "status": "Pand in gebruik",
            "bouwjaar": 1990,
            "gebruiksdoel": [None] * 5 + ["sportfunctie"],
        },
        geometry=[shapely.box(100.0 * i, 0, 100.0 * i + 20, 20) for i in range(6)],
        crs="EPSG:28992",
    )
    units = pd.DataFrame(
        [(f"V{i}", IN_USE, u, 300.0, _href(f"P{i}")) for i, u in enumerate(uses)],
        columns=["identificatie", "status", "gebruiksdoel", "oppervlakte", "pand.href"],
    )
    b, dropped = normalise_bag(pand, units, rules)
    assert dropped.empty
    return b.set_index("building_id", drop=False)


def test_the_main_use_gives_the_class(rules) -> None:
    b = _bag(rules)
    # oracle: the table itself, read here with pandas
    table = pd.read_csv(TABLE, dtype=str).set_index("code")["height_class"]
    want = b["use_code"].map(table)
    got = [None if pd.isna(v) else v for v in b["height_class"]]
    assert got == [None if pd.isna(v) else v for v in want]
    assert b.loc["P0", "height_class"] == "hall" and b.loc["P5", "height_class"] == "hall"
    assert pd.isna(b.loc["P3", "height_class"]) and pd.isna(b.loc["P4", "height_class"])


def test_floors_from_a_height_follow_the_class(rules) -> None:
    b = _bag(rules)
    storey = {**rules.storey_height_by_function, "*": rules.storey_height_m}
    raster = pd.Series(12.0, index=b.index)  # every pand 12 m high
    out, repairs = refine_with_heights(b, raster, storey, rules.limits, rules.height_classes)
    o = out.set_index("building_id")
    # the pand without units: its floors were imputed, now one (a hall: 8.53 m storeys)
    assert b.loc["P5", "gfa_source"] == "imputed"
    assert o.loc["P5", "floors"] == 1 and o.loc["P5", "floors_rule"] == "height"
    assert o.loc["P5", "gfa_m2"] == pytest.approx(400.0)  # footprint × 1 floor
    # without a class the function's storey height would give 3 floors
    assert round(12.0 / rules.storey_height_by_function["NR"]) == 3
    # register floor areas stay; the floors behind them follow the class of the main use
    for pid in ("P0", "P1", "P2", "P3", "P4"):
        assert o.loc[pid, "gfa_m2"] == pytest.approx(b.loc[pid, "gfa_m2"])
    assert o.loc["P1", "floors"] == 1  # industrial: 10.67 m storeys
    assert o.loc["P2", "floors"] == round(12.0 / 3.9) == 3  # office
    assert repairs.empty or not repairs["record_id"].isin(["P0", "P1", "P2"]).any()


def test_every_code_and_class_of_the_table_is_known(rules) -> None:
    table = pd.read_csv(TABLE, dtype=str)
    assert set(table["height_class"]) <= set(rules.height_classes.index)
    bag = rules.bag
    assert set(table["code"]) <= set(bag.use_function.index) | set(bag.use_excluded.index)
    assert "woonfunctie" not in set(table["code"])  # dwellings: the function's storeys
    assert bag.height_class.loc["sportfunctie"] == "hall"


def test_a_wrong_code_or_class_is_a_one_line_config_error(tmp_path) -> None:
    d = tmp_path / "archetypes"
    shutil.copytree(CONFIG / "archetypes", d)
    f = d / "bag_height_classes.csv"
    text = f.read_text()
    f.write_text(text.replace("sportfunctie,hall", "sportsfunctie,hall"))
    with pytest.raises(ConfigError, match=r"'sportsfunctie' is not a BAG use code") as err:
        load_archetype_rules(d)
    assert "\n" not in str(err.value)
    f.write_text(text.replace("sportfunctie,hall", "sportfunctie,arena"))
    with pytest.raises(ConfigError, match="height_class 'arena' is not one of"):
        load_archetype_rules(d)

"""Floors from heights: storey height per function from config/, and a floor limit per
function so a tower, dome or spire does not become storeys."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mfa.buildings.heights import floors_from_height, storey_heights
from mfa.buildings.quality import Limits, refine_with_heights
from tests.conftest import CONFIG
from tests.test_quality import _buildings, box


def test_config_gives_a_storey_height_per_function_and_an_rs_floor_limit(rules) -> None:
    by_function = rules.storey_height_by_function
    assert set(by_function) == {"RS", "RM", "NR"}
    assert by_function["NR"] > by_function["RS"] >= 2.5
    assert rules.limits.max_floors_from_height["RS"] < rules.limits.max_floors
    text = (CONFIG / "archetypes" / "defaults.toml").read_text()
    assert "CTBUH" in text and "BR18" in text  # the numbers name their sources


def test_floors_follow_the_storey_height_of_the_function(rules) -> None:
    storey = {**rules.storey_height_by_function, "*": rules.storey_height_m}
    b = _buildings(
        [box(i * 20) for i in range(4)],
        function=["NR", "RM", "RS", "RS"],
        archetype_id=["NR-M", "RM-M", "RS-M", "RS-M"],
        height_m=[39.0, 31.0, 9.3, 40.0],
        height_source=["osm"] * 4,
    )
    out, repairs = refine_with_heights(b, None, storey, rules.limits)
    o = out.set_index("building_id")
    # a 39 m office or shop: 10 storeys of 3.9 m (13 with the flat 3 m)
    assert o.loc["b0", "floors"] == round(39.0 / storey["NR"]) == 10
    assert o.loc["b1", "floors"] == 10 and o.loc["b2", "floors"] == 3
    assert o.loc["b0", "gfa_m2"] == 1000.0 and o.loc["b0", "floors_source"] == "osm"
    # 40 m over a house: a tower or spire, not 13 storeys: floors stay imputed, recorded
    assert o.loc["b3", "floors"] == 1 and o.loc["b3", "floors_source"] == "imputed"
    assert o.loc["b3", "gfa_m2"] == 100.0
    rec = repairs[repairs["record_id"] == "b3"]
    assert list(rec["attribute"]) == ["floors"] and "tower, dome or spire" in rec["reason"].iloc[0]
    # the one value of a pipeline ([sources.heights] storey_height_m) applies to all
    flat, _ = refine_with_heights(b, None, 3.0, Limits())
    assert flat.set_index("building_id").loc["b0", "floors"] == 13


def test_osm_tags_give_storey_heights_and_limits(rules) -> None:
    """The issue's department store (13 floors at 3 m a storey) and church; a spire."""
    storey = {**rules.storey_height_by_function, "*": rules.storey_height_m}
    classes = rules.height_classes
    b = _buildings(
        [box(0, 40), box(100, 30), box(200, 4), box(300, 60), box(400, 20)],
        function=["NR", "NR", "NR", "NR", "RS"],
        archetype_id=["NR-M", "NR-M", "NR-M", "NR-M", "RS-M"],
        height_m=[39.0, 30.0, 45.0, 12.0, 9.3],
        height_source=["osm"] * 5,
        height_class=["department_store", "worship", None, "warehouse", None],
        footprint_area_m2=[1600.0, 900.0, 16.0, 3600.0, 400.0],
        gfa_m2=[1600.0, 900.0, 16.0, 3600.0, 400.0],
    )
    out, repairs = refine_with_heights(b, None, storey, rules.limits, classes)
    o = out.set_index("building_id")
    # 39 m of a department store: storeys of 6.34 m (DEER 'Retail - Multistory Large')
    assert o.loc["b0", "floors"] == round(39 / 6.34) == 6
    assert o.loc["b0", "floors_rule"] == "height"
    # a 30 m church: its height is a nave and a tower, not 7 storeys; a 45 m spire on
    # 16 m² (11 × its width): not storeys either; both recorded
    for i in ("b1", "b2"):
        assert o.loc[i, "floors"] == rules.floors_by_function["NR"]
        assert (o.loc[i, "floors_source"], o.loc[i, "floors_rule"]) == ("imputed", "repaired")
    why = repairs.set_index("record_id")["reason"]
    assert "worship" in why["b1"] and "√footprint" in why["b2"]
    # a 12 m warehouse is one hall of 8.53 m, not 4 storeys of 3.1 m
    assert o.loc["b3", "floors"] == 1 and o.loc["b3", "floors_source"] == "osm"
    # a house without a class keeps the function's storey height
    assert o.loc["b4", "floors"] == 3
    assert set(repairs["record_id"]) == {"b1", "b2"}


def test_height_classes_from_tags_first_row_wins(rules) -> None:
    from mfa.buildings.heights import height_classes

    tags = pd.DataFrame(
        {
            "building": ["retail", "church", "yes", "retail", "yes", None],
            "shop": ["department_store", None, None, None, None, None],
            "roof:shape": [None, "dome", None, None, None, None],
            "office": [None, None, "government", None, "no", None],
        }
    )
    cls = height_classes(tags, rules.height_tags)
    assert cls.iloc[:4].tolist() == ["department_store", "dome", "office", "retail"]
    assert cls.iloc[4:].isna().all()  # office=no is no office; no tag, no class
    # every class named in the tag table has its numbers and a source in config/
    assert set(rules.height_tags["height_class"]) <= set(rules.height_classes.index)
    text = (CONFIG / "archetypes" / "height_classes.csv").read_text()
    assert "openstudio-standards" in text and "assumption" in text


@given(
    st.lists(st.floats(0.5, 400.0, allow_nan=False), min_size=1, max_size=30),
    st.lists(st.sampled_from(["RS", "RM", "NR", "XX"]), min_size=30, max_size=30),
)
def test_floors_times_storey_height_is_the_height_to_half_a_storey(heights, functions) -> None:
    table = {"RS": 3.1, "RM": 3.1, "NR": 3.9, "*": 3.0}
    h = pd.Series(heights, dtype="Float64")
    f = pd.Series(functions[: len(heights)], dtype="string")
    storey = storey_heights(f, table)
    assert storey.tolist() == [table.get(x, 3.0) for x in f]
    floors = floors_from_height(h, storey).to_numpy(dtype=float)
    s = storey.to_numpy()
    assert (floors >= 1).all() and (floors == np.round(floors)).all()
    tall = h.to_numpy(dtype=float) >= s / 2
    assert (np.abs(floors * s - h.to_numpy(dtype=float))[tall] <= s[tall] / 2 + 1e-9).all()


def test_bad_storey_table_is_a_one_line_config_error(tmp_path) -> None:
    import shutil

    from mfa.errors import ConfigError
    from mfa.io.tables import load_archetype_rules

    d = tmp_path / "archetypes"
    shutil.copytree(CONFIG / "archetypes", d)
    f = d / "defaults.toml"
    f.write_text(f.read_text().replace("NR = 3.9 }", "XX = 3.9 }"))
    with pytest.raises(ConfigError, match=r"storey_height_by_function: 'XX'") as err:
        load_archetype_rules(d)
    assert "\n" not in str(err.value)

"""The Dutch BAG normaliser (mfa.buildings.bag): pand + verblijfsobject → buildings."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mfa.buildings.bag import normalise_bag, unit_areas
from mfa.schema import check_buildings
from tests.conftest import CONFIG

IN_USE = "Verblijfsobject in gebruik"

#: Catalogus BAG 2018 (BAG 2.0) status values: every one needs a rule in config/.
PAND_STATUSES = {
    "Bouwvergunning verleend",
    "Niet gerealiseerd pand",
    "Bouw gestart",
    "Pand in gebruik (niet ingemeten)",
    "Pand in gebruik",
    "Verbouwing pand",
    "Sloopvergunning verleend",
    "Pand gesloopt",
    "Pand buiten gebruik",
    "Pand ten onrechte opgevoerd",
}
UNIT_STATUSES = {
    "Verblijfsobject gevormd",
    "Niet gerealiseerd verblijfsobject",
    "Verblijfsobject in gebruik (niet ingemeten)",
    "Verblijfsobject in gebruik",
    "Verbouwing verblijfsobject",
    "Verblijfsobject ingetrokken",
    "Verblijfsobject buiten gebruik",
    "Verblijfsobject ten onrechte opgevoerd",
}
#: The eleven uses (gebruiksfuncties) of the Bouwbesluit 2012, art. 1.1.
USES = {
    "woonfunctie",
    "bijeenkomstfunctie",
    "celfunctie",
    "gezondheidszorgfunctie",
    "industriefunctie",
    "kantoorfunctie",
    "logiesfunctie",
    "onderwijsfunctie",
    "sportfunctie",
    "winkelfunctie",
    "overige gebruiksfunctie",
}


def _pand(rows: list[tuple[str, str, int, float]]) -> gpd.GeoDataFrame:
    """(identificatie, status, bouwjaar, side of a square footprint in m) per pand."""
    return gpd.GeoDataFrame(
        {
            "id": [f"uuid-{r[0]}" for r in rows],
            "identificatie": [r[0] for r in rows],
            "status": [r[1] for r in rows],
            "bouwjaar": [r[2] for r in rows],
        },
        geometry=[shapely.box(100.0 * i, 0, 100.0 * i + r[3], r[3]) for i, r in enumerate(rows)],
        crs="EPSG:28992",
    )


def _units(rows: list[tuple[str, str, object, float, object]]) -> pd.DataFrame:
    """(identificatie, status, gebruiksdoel, oppervlakte, pand.href) per unit."""
    return pd.DataFrame(
        rows, columns=["identificatie", "status", "gebruiksdoel", "oppervlakte", "pand.href"]
    )


def _href(pid: str) -> list[str]:
    return [f"https://api.pdok.nl/kadaster/bag/ogc/v2/collections/pand/items/uuid-{pid}"]


def test_the_tables_cover_every_catalogue_status_and_use(rules) -> None:
    bag = rules.bag
    assert set(bag.pand_kept) | set(bag.pand_excluded.index) == PAND_STATUSES
    assert set(bag.unit_kept) | set(bag.unit_excluded.index) == UNIT_STATUSES
    assert set(bag.use_function.index) | set(bag.use_excluded.index) == USES
    assert set(bag.pand_kept) == {
        "Pand in gebruik",
        "Pand in gebruik (niet ingemeten)",
        "Verbouwing pand",
    }
    assert (CONFIG / "intensities" / "regions.csv").read_text().count("NLD,OECD_EU15") == 1


def test_floor_area_is_the_units_usable_area_times_the_gross_factor(rules) -> None:
    pand = _pand(
        [
            ("P1", "Pand in gebruik", 1930, 10.0),  # one dwelling: RS
            ("P2", "Pand in gebruik (niet ingemeten)", 1975, 20.0),  # 2 dwellings + a shop
            ("P3", "Verbouwing pand", 2001, 20.0),  # offices: NR
            ("P4", "Pand in gebruik", 1990, 5.0),  # a shed without units
        ]
    )
    units = _units(
        [
            ("V1", IN_USE, "woonfunctie", 120.0, _href("P1")),
            ("V2", IN_USE, "woonfunctie", 80.0, _href("P2")),
            ("V3", IN_USE, ["woonfunctie"], 70.0, _href("P2")),
            ("V4", IN_USE, "winkelfunctie", 60.0, _href("P2")),
            ("V5", IN_USE, "kantoorfunctie,bijeenkomstfunctie", 500.0, _href("P3")),
            ("V6", IN_USE, "woonfunctie", 40.0, _href("P3")),
        ]
    )
    b, dropped = normalise_bag(pand, units, rules)
    check_buildings(b, "bag", "EPSG:28992")
    assert dropped.empty
    b = b.set_index("building_id")
    k = rules.bag.gross_per_usable
    assert b.loc["P1", "gfa_m2"] == pytest.approx(120.0 * k)
    assert b.loc["P2", "gfa_m2"] == pytest.approx(210.0 * k)
    assert b.loc["P3", "gfa_m2"] == pytest.approx(540.0 * k)
    assert list(b["function"]) == ["RS", "RM", "NR", rules.bag.no_units_function]
    assert list(b["gfa_source"]) == ["register", "register", "register", "imputed"]
    assert list(b["function_source"]) == ["register", "register", "register", "imputed"]
    assert list(b["use_code"].fillna("-")) == [
        "woonfunctie",
        "woonfunctie",
        "bijeenkomstfunctie",  # 250 m² each with kantoorfunctie: ties go alphabetically
        "-",
    ]
    # the shed: footprint (m²) × the function's default floors
    floors = rules.floors_by_function[rules.bag.no_units_function]
    assert b.loc["P4", "gfa_m2"] == pytest.approx(25.0 * floors)
    # floors = floor area / footprint, rounded, at least 1, imputed (BAG has no storeys)
    assert b.loc["P3", "floors"] == max(1, round(540.0 * k / 400.0))
    assert set(b["floors_source"]) == {"imputed"} and set(b["structure_source"]) == {"imputed"}
    assert list(b["construction_year"]) == [1930, 1975, 2001, 1990]
    assert b.loc["P1", "footprint_area_m2"] == pytest.approx(100.0)


def test_status_filter_leaves_out_panden_and_units_with_the_tables_reasons(rules) -> None:
    pand = _pand(
        [
            ("P1", "Pand in gebruik", 1930, 10.0),
            ("P2", "Pand gesloopt", 1900, 10.0),
            ("P3", "Sloopvergunning verleend", 1960, 10.0),
            ("P4", "Pand op Mars", 1960, 10.0),
        ]
    )
    units = _units(
        [
            ("V1", IN_USE, "woonfunctie", 100.0, _href("P1")),
            ("V2", "Verblijfsobject ingetrokken", "woonfunctie", 50.0, _href("P1")),
            ("V3", IN_USE, "woonfunctie", 90.0, _href("P2")),
            ("V4", IN_USE, "woonfunctie", None, _href("P1")),
            ("V5", IN_USE, "woonfunctie", 30.0, _href("P9")),
            ("V6", IN_USE, "schuurfunctie", 30.0, _href("P1")),
            ("V7", IN_USE, "woonfunctie", 30.0, None),
        ]
    )
    b, dropped = normalise_bag(pand, units, rules)
    assert list(b["building_id"]) == ["P1"]
    assert b["gfa_m2"].iloc[0] == pytest.approx(100.0 * rules.bag.gross_per_usable)
    why = dict(zip(dropped["record_id"], dropped["reason"], strict=True))
    assert why["P2"] == "pand status 'Pand gesloopt': demolished"
    assert why["P3"].startswith("pand status 'Sloopvergunning verleend': demolition permit")
    assert "not in config/archetypes/bag_pand_status.csv" in why["P4"]
    assert why["V2"].startswith("verblijfsobject status 'Verblijfsobject ingetrokken'")
    assert why["V3"] == "its pand was left out (see the pand's row)"
    assert why["V4"] == "no floor area (oppervlakte empty or 0)"
    assert why["V5"].startswith("pand uuid-P9 is not in the register")
    assert "'schuurfunctie' is not in config/archetypes/bag_use_codes.csv" in why["V6"]
    assert why["V7"] == "no pand (pand.href empty)"
    assert set(dropped.loc[dropped["record_id"].str.startswith("V"), "stage"]) == {"units"}
    # the pipeline may count the buildings that await demolition too
    b2, _ = normalise_bag(pand, units, rules, ["Pand in gebruik", "Sloopvergunning verleend"])
    assert list(b2["building_id"]) == ["P1", "P3"]


def test_links_by_feature_id_or_identificatie_and_uses_as_list_or_text_agree(rules) -> None:
    pand = _pand([("P1", "Pand in gebruik", 1930, 10.0), ("P2", "Pand in gebruik", 1931, 12.0)])
    by_href = _units(
        [
            ("V1", IN_USE, ["woonfunctie", "winkelfunctie"], 100.0, _href("P1") + _href("P2")),
            ("V2", IN_USE, ["kantoorfunctie"], 60.0, _href("P2")),
        ]
    )
    by_id = _units(
        [
            ("V1", IN_USE, "woonfunctie,winkelfunctie", 100.0, "P1,P2"),
            ("V2", IN_USE, "kantoorfunctie", 60.0, "P2"),
        ]
    ).rename(columns={"pand.href": "pand_identificatie"})
    a, _ = normalise_bag(pand, by_href, rules)
    b, _ = normalise_bag(pand, by_id, rules, link_field="pand_identificatie")
    pd.testing.assert_frame_equal(a.drop(columns="geometry"), b.drop(columns="geometry"))
    # a unit in two panden gives each half its area
    k = rules.bag.gross_per_usable
    assert list(a["gfa_m2"]) == pytest.approx([50.0 * k, 110.0 * k])


STATUSES_P = sorted(PAND_STATUSES)
STATUSES_U = sorted(UNIT_STATUSES)


@st.composite
def registers(draw):
    n_p = draw(st.integers(0, 8))
    pand = _pand(
        [
            (f"P{i}", draw(st.sampled_from(STATUSES_P)), 1900 + i, draw(st.floats(3, 40)))
            for i in range(n_p)
        ]
    )
    if n_p:
        pand.loc[draw(st.lists(st.integers(0, n_p - 1), max_size=2)), "identificatie"] = "P0"
    rows = []
    for j in range(draw(st.integers(0, 14))):
        links = draw(st.lists(st.integers(0, n_p + 1), min_size=0, max_size=3, unique=True))
        uses = draw(st.lists(st.sampled_from([*sorted(USES), "raar"]), min_size=0, max_size=2))
        rows.append(
            (
                draw(st.sampled_from([f"V{j}", "V0"])),
                draw(st.sampled_from(STATUSES_U)),
                uses,
                draw(st.one_of(st.none(), st.floats(-5, 500))),
                [_href(f"P{i}")[0] for i in links],
            )
        )
    return pand, _units(rows)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(registers())
def test_every_record_is_a_building_counted_or_dropped_once_and_area_is_kept(rules, case) -> None:
    pand, units = case
    b, dropped = normalise_bag(pand, units, rules)
    regs = dropped[dropped["stage"] == "register"]
    assert len(b) + len(regs) == len(pand)  # every pand: a building or a row with a reason
    assert regs["reason"].notna().all() and b["building_id"].is_unique
    standing = pand["status"].isin(list(rules.bag.pand_kept))
    first = ~pand["identificatie"].where(standing).duplicated() & standing
    kept = first & pand["identificatie"].isin(b["building_id"])
    assert kept.sum() == len(b)
    areas, unit_drops = unit_areas(units, pand, kept, rules)
    assert len(unit_drops) + int(areas.counted.sum()) == len(units)
    pd.testing.assert_frame_equal(
        unit_drops.reset_index(drop=True),
        dropped[dropped["stage"] == "units"].reset_index(drop=True),
    )
    # oracle: the counted units' area, unit by unit, lands in kept panden and nowhere else
    expected = np.zeros(len(pand))
    for pos in np.flatnonzero(areas.counted.to_numpy()):
        keys = [h.rsplit("/", 1)[-1] for h in units["pand.href"].iloc[pos]]
        targets = [i for i in range(len(pand)) if kept.iloc[i] and pand["id"].iloc[i] in keys]
        assert targets, "a counted unit must lie in a kept pand"
        for i in targets:
            expected[i] += units["oppervlakte"].iloc[pos] / len(targets)
    np.testing.assert_allclose(areas.usable_m2, expected, rtol=1e-12, atol=1e-9)
    with_units = b["gfa_source"] == "register"
    assert b.loc[with_units, "gfa_m2"].sum() == pytest.approx(
        expected.sum() * rules.bag.gross_per_usable, rel=1e-9
    )

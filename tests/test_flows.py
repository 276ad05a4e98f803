"""Register → dynamic model → flows.parquet, per district, year, material and scenario."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import shapely

from mfa.dynamics import inflow_driven, lifetime
from mfa.dynamics.flows import ScenarioLevers, district_flows
from mfa.dynamics.forecast import forecast_stock


def test_conditional_forecast_equals_backcast_and_forward_run() -> None:
    lt = lifetime("lognormal", mean=80.0, std=30.0)
    hist = np.random.default_rng(0).uniform(5, 10, 100)
    ref = inflow_driven(np.concatenate([hist, np.zeros(15)]), lt)
    today = ref.stock_by_cohort[99, :100]
    fc = forecast_stock(today[None], np.arange(1921, 2021), 2020, 2035, lt)
    np.testing.assert_allclose(fc.stock_m2[0], ref.stock[99:], rtol=1e-10)
    np.testing.assert_allclose(fc.outflow_m2[0, 1:], ref.outflow[100:], rtol=1e-9, atol=1e-12)


def test_stock_driven_growth_never_builds_negative() -> None:
    lt = lifetime("lognormal", mean=60.0, std=20.0)
    s0 = np.array([[50.0, 30.0, 20.0], [0.0, 0.0, 10.0]])
    for g in (0.02, -0.05):
        fc = forecast_stock(
            s0, np.array([1950, 1980, 2010]), 2020, 2040, lt, stock_growth_per_year=g
        )
        assert (fc.inflow_m2 >= -1e-12).all()
        target = fc.stock_m2[:, :1] * (1 + g) ** np.arange(21)
        if g > 0:
            np.testing.assert_allclose(fc.stock_m2, target, rtol=1e-9)
        else:
            assert (fc.stock_m2 >= target - 1e-9).all()
        from mfa.dynamics import check_stock_balance

        check_stock_balance(
            fc.stock_m2, fc.inflow_m2, fc.outflow_m2, initial_stock=fc.stock_m2[:, 0]
        )


def test_centuries_old_cohorts_stay_finite_and_overdue_ones_leave() -> None:
    fc = forecast_stock(
        np.array([[100.0, 50.0]]),
        np.array([1100, 2000]),
        2020,
        2030,
        lifetime("normal", mean=60.0, std=10.0),
    )
    assert np.isfinite(fc.stock_m2).all()
    fixed = forecast_stock(
        np.array([[100.0, 50.0]]), np.array([1900, 2000]), 2020, 2025, lifetime("fixed", mean=50.0)
    )
    assert fixed.outflow_m2[0, 1] == pytest.approx(100.0)  # overdue: leaves in year 1
    assert fixed.stock_m2[0, -1] == pytest.approx(50.0)


@pytest.fixture(scope="module")
def dk_run(dk_sample_run: Path) -> Path:
    return dk_sample_run


def test_flows_layer(dk_run: Path) -> None:
    flows = gpd.read_parquet(dk_run / "flows.parquet")
    assert flows.crs.to_epsg() == 25832
    assert set(flows.scenario) == {"baseline", "longer-life", "new-housing", "growth"}
    assert flows.year.min() == 2020 and flows.year.max() == 2035
    schema = pq.read_schema(dk_run / "flows.parquet")
    assert str(schema.field("date").type) == "date32[day]"  # QGIS temporal controller
    key = ["scenario", "district_id", "year", "material"]
    assert not flows.duplicated(key).any()
    assert len(flows) == 4 * 52 * 16 * 9
    # each row carries its district's polygon, stored once per row group (dictionary)
    districts = gpd.read_parquet(dk_run / "districts.parquet").set_index("district_id")
    polygon = districts.geometry.reindex(flows["district_id"]).values
    assert shapely.equals_exact(flows.geometry.values, polygon, 0).all()
    assert (
        pq.read_metadata(dk_run / "flows.parquet")
        .row_group(0)
        .column(schema.get_field_index("geometry"))
        .has_dictionary_page
    )
    for kind in ("stock", "inflow", "outflow"):
        lo, mid, hi = (flows[f"{kind}_t_p{q:02d}"] for q in (5, 50, 95))
        assert ((lo <= mid + 1e-9) & (mid <= hi + 1e-9)).all()
    b = gpd.read_parquet(dk_run / "buildings.parquet")
    start = flows[(flows.year == 2020) & (flows.material == "mass")]
    for _, rows in start.groupby("scenario"):
        assert rows.stock_t.sum() == pytest.approx(b.mass_t.sum(), rel=1e-9)
        assert rows.stock_m2.sum() == pytest.approx(b.gfa_m2.sum(), rel=1e-9)


def test_scenarios_differ_as_they_should(dk_run: Path) -> None:
    flows = gpd.read_parquet(dk_run / "flows.parquet")
    mass = flows[(flows.material == "mass") & (flows.year > 2020)]
    out = mass.groupby("scenario").outflow_t.sum()
    assert out["longer-life"] < out["baseline"]
    built = mass[mass.scenario == "new-housing"].groupby("year").inflow_m2.sum()
    np.testing.assert_allclose(built, 5000.0)
    assert mass[mass.scenario == "baseline"].inflow_m2.sum() == 0
    # stock-driven: 0.5 % growth a year, construction makes up for the outflow too
    grow = flows[(flows.scenario == "growth") & (flows.material == "mass")]
    per_year = grow.groupby("year").stock_m2.sum()
    np.testing.assert_allclose(per_year, per_year.iloc[0] * 1.005 ** np.arange(16), rtol=1e-9)
    assert (grow[grow.year > 2020].inflow_m2 >= 0).all()
    m = json.loads((dk_run / "run.json").read_text())
    rate = m["flows"]["summary"]["baseline"]["demolition_rate_per_year"]
    assert 0.001 < rate < 0.004  # calibrated to Denmark's ~0.2 % of floor area a year
    assert m["checks"]["flows_stock_balance"]["max_rel_error"] < 1e-9


def test_a_subset_of_districts_gets_the_same_bits_as_the_whole_city() -> None:
    """Incremental runs recompute some districts' flows and reuse the others': a district's
    rows computed with any other districts (or alone) must be identical, bit for bit."""
    rng = np.random.default_rng(3)
    n = 600
    buildings = pd.DataFrame(
        {
            "district_id": rng.choice([f"D{i:02d}" for i in range(23)], n),
            "archetype_id": rng.choice(["RS-B", "RM-C", "NR-S", "RS-W"], n),
            "construction_year": rng.integers(1850, 2021, n),
            "gfa_m2": rng.uniform(40, 4000, n).round(1),
        }
    )
    archetypes = ["NR-S", "RM-C", "RS-B", "RS-W"]
    materials = ["concrete", "brick", "steel"]
    draws = rng.uniform(0, 900, (200, len(archetypes), len(materials)))
    central = pd.DataFrame(draws.mean(axis=0), index=archetypes, columns=materials)
    lifetimes = {
        "RS": lifetime("weibull", shape=2.5, scale=90.0),
        "RM": lifetime("normal", mean=80.0, std=25.0),
        "NR": lifetime("lognormal", mean=60.0, std=20.0),
    }
    cohorts = np.sort(buildings["construction_year"].unique())
    total = float(buildings["gfa_m2"].sum())
    for levers in (
        ScenarioLevers("baseline"),
        ScenarioLevers("new", construction_m2_per_year=9000.0),
        ScenarioLevers("growth", stock_growth_per_year=0.01),
    ):
        args = (lifetimes, 2020, 2040, levers, central, draws, archetypes, (5.0, 50.0, 95.0))
        whole = district_flows(buildings, *args)
        for k in (1, 2, 7, 22):
            pick = rng.choice(sorted(buildings["district_id"].unique()), k, replace=False)
            part = district_flows(
                buildings[buildings["district_id"].isin(pick)],
                *args,
                cohorts=cohorts,
                total_gfa_m2=total,
            )
            expected = whole[whole["district_id"].isin(pick)].reset_index(drop=True)
            pd.testing.assert_frame_equal(part, expected, check_exact=True)


def test_percentiles_in_parts_on_threads_are_the_same_bits() -> None:
    """The flows step computes scenarios side by side (each on one thread) or one after
    the other with their percentiles in parts on the run's threads, depending on the
    worker count: both give the same bits."""
    from mfa.executor import executor, ordered_map

    rng = np.random.default_rng(5)
    n = 3_000
    buildings = pd.DataFrame(
        {
            "district_id": rng.choice([f"D{i:03d}" for i in range(130)], n),
            "archetype_id": rng.choice(["RS-B", "RM-C", "NR-S"], n),
            "construction_year": rng.integers(1900, 2021, n),
            "gfa_m2": rng.uniform(40, 4000, n).round(1),
        }
    )
    archetypes = ["NR-S", "RM-C", "RS-B"]
    draws = rng.uniform(0, 900, (300, 3, 2))
    central = pd.DataFrame(draws.mean(axis=0), index=archetypes, columns=["concrete", "brick"])
    lifetimes = {
        "RS": lifetime("weibull", shape=2.5, scale=90.0),
        "RM": lifetime("normal", mean=80.0, std=25.0),
        "NR": lifetime("lognormal", mean=60.0, std=20.0),
    }
    levers = ScenarioLevers("new", construction_m2_per_year=9000.0)
    args = (lifetimes, 2020, 2040, levers, central, draws, archetypes, (5.0, 50.0, 95.0))
    alone = district_flows(buildings, *args)
    assert len(alone) // 3 > 2_048  # rows of groups: more than one part
    with executor("threads", 2) as submit:
        parts = district_flows(
            buildings, *args, map_parts=lambda fn, a: ordered_map(submit, fn, a, 4)
        )
    pd.testing.assert_frame_equal(alone, parts, check_exact=True)


@pytest.mark.parametrize("piece_rows", [1, 10**9])
def test_flows_made_in_pieces_of_any_size_are_the_same_file(
    dk_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, piece_rows: int
) -> None:
    """The flows step cuts the districts into pieces the workers make side by side (the
    shared sample run: 2 pieces of 43 and 9 parishes); one parish per piece and all
    districts in one piece give the same flows file and step summary, byte for byte."""
    import mfa.run.flows
    from mfa.io.files import sha256_file
    from mfa.run import run_pipeline
    from tests.conftest import ROOT

    monkeypatch.setattr(mfa.run.flows, "PIECE_ROWS", piece_rows)
    run = run_pipeline(ROOT / "pipelines" / "dk-sample.toml", tmp_path)
    steps = [json.loads((r / "run.json").read_text())["flows"] for r in (dk_run, run)]
    assert steps[0]["pieces"] == 2 and steps[1]["pieces"] == (52 if piece_rows == 1 else 1)
    assert sha256_file(run / "flows.parquet") == sha256_file(dk_run / "flows.parquet")
    assert steps[1]["summary"] == steps[0]["summary"]


def test_the_publish_check_reads_flows_a_batch_at_a_time(
    dk_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batches of 1,000 rows cut through districts: the check keeps a district's rows
    together and finds what the run found; rows of districts interleaved, or a stock
    changed, fail it."""
    import mfa.run.checks as checks
    from mfa.config.load import load_pipeline
    from mfa.dynamics import StockBalanceError
    from mfa.errors import ValidationError
    from tests.conftest import ROOT

    monkeypatch.setattr(checks, "FLOW_CHECK_BATCH", 1_000)
    p = load_pipeline(ROOT / "pipelines" / "dk-sample.toml")
    meta = json.loads((dk_run / "run.json").read_text())
    totals = {"mass_t": float(gpd.read_parquet(dk_run / "buildings.parquet")["mass_t"].sum())}
    got = checks._check_flows(dk_run / "flows.parquet", p, totals)
    assert got == meta["checks"]["flows_stock_balance"]
    flows = pq.read_table(dk_run / "flows.parquet")
    by_year = tmp_path / "by_year.parquet"
    pq.write_table(flows.sort_by([("year", "ascending")]), by_year)
    with pytest.raises(ValidationError, match="not together"):
        checks._check_flows(by_year, p, totals)
    stock = flows["stock_t"].to_numpy().copy()
    stock[5_000] *= 1.01
    changed = tmp_path / "changed.parquet"
    pq.write_table(
        flows.set_column(flows.schema.get_field_index("stock_t"), "stock_t", [stock]), changed
    )
    with pytest.raises(StockBalanceError):
        checks._check_flows(changed, p, totals)

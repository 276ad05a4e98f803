"""Unknown construction years: one fill for the flows step and ``mfa query --years``, a
stated fallback when no year is known, and the imputed share in run.json and report.md."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mfa.dynamics.flows import YearFill, impute_cohort_years, year_fill
from mfa.errors import InputDataError
from mfa.query import availability
from mfa.run import run_pipeline
from tests.conftest import ROOT, SAMPLE

DYNAMICS = f"""
[dynamics]
lifetimes = "{ROOT}/config/lifetimes.toml"
base_year = 2020
horizon = 2035
{{FALLBACK}}
[[dynamics.scenarios]]
name = "baseline"
[[dynamics.scenarios]]
name = "shorter-life"
lifetime_factor = 0.7
extra_demolition_rate = 0.01
"""


def _register(tmp: Path, keep_year) -> Path:
    """The sample register with construction years set to 0 (BBR: unknown) where
    ``keep_year`` (a function of the row position) is False."""
    b = gpd.read_parquet(SAMPLE / "bbr_bygning_2020.parquet")
    keep = keep_year(np.arange(len(b)))
    b["byg026Opfoerelsesaar"] = b["byg026Opfoerelsesaar"].where(keep, 0)
    path = tmp / "register.parquet"
    b.to_parquet(path)
    return path


def _pipeline(bbr_pipeline, register: Path, fallback: int | None = None) -> Path:
    path = bbr_pipeline(register=register)
    line = "" if fallback is None else f"fallback_construction_year = {fallback}"
    path.write_text(path.read_text() + DYNAMICS.replace("{FALLBACK}", line))
    return path


@pytest.fixture
def gappy_run(bbr_pipeline, tmp_path: Path) -> Path:
    """A run of the sample with two buildings in five without a construction year."""
    register = _register(tmp_path, lambda i: i % 5 >= 2)
    return run_pipeline(_pipeline(bbr_pipeline, register), tmp_path / "out")


def test_query_over_each_district_equals_the_flows_with_missing_years(gappy_run: Path) -> None:
    run = gappy_run
    manifest = json.loads((run / "run.json").read_text())
    b = pd.read_parquet(run / "buildings.parquet")
    unknown = b["construction_year_source"] == "imputed"
    # many buildings lack a year, spread over the districts: the old rule (median of the
    # queried buildings) and the flows' (median of the archetype over the run) differ
    assert unknown.mean() > 0.3 and b[unknown]["district_id"].nunique() > 20
    assert manifest["flows"]["construction_years_imputed"] == int(unknown.sum())
    # the layer stores the filled years: oracle = pandas' median year of the archetype
    # over the layer's buildings with an observed year (rounded half to even, as np.round)
    assert b["construction_year"].notna().all()
    median = b[~unknown].groupby("archetype_id")["construction_year"].median().round()
    want = b.loc[unknown, "archetype_id"].map(median)
    assert want.notna().all()
    assert (b.loc[unknown, "construction_year"] == want.astype("Int64")).all()
    assert (b.loc[unknown, "construction_year_rule"] == "archetype_median").all()
    assert set(b.loc[~unknown, "construction_year_rule"]) == {"measured"}
    fill = YearFill.from_json(manifest["flows"]["year_fill"])
    assert (fill.fill(b["archetype_id"], b["construction_year"]) == b["construction_year"]).all()
    flows = gpd.read_parquet(run / "flows.parquet")
    mass = flows[flows["material"] == "mass"]
    districts = sorted(b["district_id"].dropna().unique())
    for sc in ("baseline", "shorter-life"):
        f = flows[(flows.scenario == sc) & flows.year.between(2021, 2035)]
        expected = f.groupby(["district_id", "material"]).outflow_t.sum()
        for d in districts:
            s = availability(run, districts=[d], years=(2021, 2035), scenario=sc).summary
            got = s.set_index("material")["t"]
            for m in ("mass", "concrete", "brick", "wood", "steel"):
                assert got[m] == pytest.approx(expected[(d, m)], rel=1e-9, abs=1e-9), (sc, d, m)
    assert mass["outflow_t"].sum() > 0
    report = (run / "report.md").read_text()
    assert "construction year imputed for" in report and "## Guessed, not measured" in report
    # the guessed shares by buildings and by tonnes, against pandas over the layer
    layer = pd.read_parquet(run / "buildings.parquet")
    for attr, g in manifest["guessed"].items():
        for kind in ("imputed", "missing"):
            mine = layer[f"{attr}_source"] == kind
            assert g[f"{kind}_buildings"] == pytest.approx(mine.mean(), abs=1e-6)
            share = layer.loc[mine, "mass_t"].sum() / layer["mass_t"].sum()
            assert g[f"{kind}_mass"] == pytest.approx(share, abs=1e-6)
    assert manifest["guessed"]["construction_year"]["imputed_buildings"] > 0.3
    by_rule = manifest["guessed_by_rule"]["construction_year"]
    assert by_rule["archetype_median"]["buildings"] == int(unknown.sum())
    mass = layer.loc[unknown.to_numpy(), "mass_t"].sum()
    assert by_rule["archetype_median"]["mass_t"] == pytest.approx(mass, abs=1e-3)
    assert "**Warning:** construction year imputed" in report
    cov = manifest["coverage"]
    d = pd.read_parquet(run / "districts.parquet")
    outside = d.loc[d["district_id"] == "_unassigned", "mass_t"].sum()
    assert cov["unassigned_mass_t"] == pytest.approx(outside, rel=1e-12)
    assert cov["districts_without_buildings"] == int((d["building_count"] == 0).sum())


def test_no_construction_year_at_all_is_a_clear_error_or_the_stated_fallback(
    bbr_pipeline, tmp_path: Path
) -> None:
    register = _register(tmp_path, lambda i: np.zeros(len(i), dtype=bool))
    with pytest.raises(InputDataError, match="no building has a construction year") as err:
        run_pipeline(_pipeline(bbr_pipeline, register), tmp_path / "a")
    assert "\n" not in str(err.value) and "fallback_construction_year" in str(err.value)
    assert not any((tmp_path / "a").glob("*/latest"))  # nothing published
    run = run_pipeline(_pipeline(bbr_pipeline, register, fallback=1965), tmp_path / "b")
    flows = json.loads((run / "run.json").read_text())["flows"]
    assert flows["year_fill"] == {
        "by_archetype": {},
        "overall": 1965,
        "rule": "fallback_construction_year (no year observed)",
    }
    assert flows["construction_years_imputed_share"] == 1.0
    b = pd.read_parquet(run / "buildings.parquet")
    assert (b["construction_year"] == 1965).all()
    assert (b["construction_year_rule"] == "fallback").all()


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["RS-M", "RS-T", "RM-C", "NR-S"]),
            st.one_of(st.none(), st.integers(1700, 2020)),
            st.integers(1, 6),
        ),
        min_size=1,
        max_size=40,
    )
)
def test_year_fill_is_the_median_of_the_archetype_over_buildings(rows) -> None:
    cohorts = pd.DataFrame(rows, columns=["archetype_id", "construction_year", "building_count"])
    cohorts["construction_year"] = cohorts["construction_year"].astype("Int64")
    if cohorts["construction_year"].isna().all():
        with pytest.raises(InputDataError):
            year_fill(cohorts)
        return
    years, n, fill = impute_cohort_years(cohorts)
    # oracle: one row per building, pandas' median per archetype, else of all
    each = cohorts.loc[cohorts.index.repeat(cohorts["building_count"])]
    each = each[each["construction_year"].notna()].astype({"construction_year": float})
    by_arch = each.groupby("archetype_id")["construction_year"].median().round()
    overall = round(each["construction_year"].median())
    want = [
        int(y) if pd.notna(y) else int(by_arch.get(a, overall))
        for a, y in zip(cohorts["archetype_id"], cohorts["construction_year"], strict=True)
    ]
    assert years.tolist() == want
    assert n == int(cohorts.loc[cohorts["construction_year"].isna(), "building_count"].sum())
    assert YearFill.from_json(json.loads(json.dumps(fill.to_json()))) == fill

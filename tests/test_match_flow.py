"""Reuse matching chained to the nightly run: the Prefect flow of matching alone, a
pipeline's [match] table (validated with the file), and the match after every successful
run, as an ``mfa-match`` subflow of the nightly flow and in the plain runner."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from mfa.config import load_pipeline
from mfa.errors import ConfigError, InputDataError, InputNotFoundError
from tests.conftest import ROOT

DEMAND = Path("tests/data/match_demand_kalundborg.csv")


def _pipeline(tmp: Path, match: str) -> Path:
    """pipelines/dk-sample.toml with absolute paths, no schedule, and ``match`` appended."""
    body = (ROOT / "pipelines" / "dk-sample.toml").read_text().replace('"../', f'"{ROOT}/')
    body = body.split("[schedule]")[0] + body.split('timezone = "Europe/Copenhagen"')[1]
    path = tmp / "dk-match.toml"
    path.write_text(body.replace('name = "dk-sample"', 'name = "dk-match"') + match)
    return path


def test_a_match_table_is_validated_with_the_pipeline(tmp_path: Path) -> None:
    (tmp_path / "sites.csv").write_text(DEMAND.read_text())
    p = load_pipeline(
        _pipeline(
            tmp_path,
            '[match]\ndemand = "sites.csv"\nmax_km = 10\nweights = [1, 0.5]\n'
            'scenario = "longer-life"\n',
        )
    )
    assert p.match.demand == tmp_path / "sites.csv"  # relative to the pipeline file
    assert p.match.weights == (1.0, 0.5) and p.match.max_km == 10
    from mfa.run.match import match_arguments

    args = match_arguments(p, tmp_path / "run")
    assert args["out"] == str(p.output_root() / "dk-match" / "matching")
    assert args["config_dir"] == str(ROOT / "config") and args["scenario"] == "longer-life"
    cases = [
        ('[match]\ndemand = "nowhere.csv"\n', InputNotFoundError, "key 'match.demand'"),
        ('[match]\ndemand = "sites.csv"\nscenario = "x"\n', ConfigError, "not a scenario"),
        ('[match]\ndemand = "sites.csv"\nyears = [2030, 2026]\n', ConfigError, "swap them"),
        ('[match]\ndemand = "sites.csv"\nweights = [0, 0]\n', ConfigError, "both are 0"),
        ('[match]\ndemand = "sites.csv"\nmax_kms = 3\n', ConfigError, "did you mean 'max_km'"),
    ]
    for text, kind, message in cases:
        with pytest.raises(kind, match=message):
            load_pipeline(_pipeline(tmp_path, text))


def test_a_match_without_dynamics_is_an_error(tmp_path: Path) -> None:
    from tests.conftest import BBR_PIPELINE, write_pipeline

    body = (
        BBR_PIPELINE.replace("{REGISTER}", str(ROOT / "geodata/sample/bbr_bygning_2020.parquet"))
        .replace("{SCHEDULER}", "threads")
        .replace("{BATCH_ROWS}", "1000")
    )
    f = write_pipeline(tmp_path, body + f'[match]\ndemand = "{ROOT / DEMAND}"\n')
    with pytest.raises(ConfigError, match=r"add \[dynamics\], matching needs its outflows"):
        load_pipeline(f)


@pytest.mark.prefect
@pytest.mark.slow
def test_match_flow_writes_the_matching(
    prefect_harness, dk_sample_run: Path, tmp_path: Path
) -> None:
    from flows.match import mfa_match

    from mfa.match import match_run

    out = Path(mfa_match(str(dk_sample_run), str(DEMAND), str(tmp_path / "flow")))
    direct = match_run(dk_sample_run, DEMAND)
    record = json.loads((out / "match.json").read_text())
    assert record["objective_kgco2e"] == pytest.approx(direct.allocation.objective_kgco2e)
    assert (out / "matches.parquet").is_file() and (out / "summary.md").is_file()


async def _flow_runs(name: str):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    async with get_client() as client:
        return await client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=[name])))


@pytest.mark.prefect
@pytest.mark.slow
def test_the_nightly_run_matches_after_it_succeeds(prefect_harness, tmp_path: Path) -> None:
    from flows.deployments import deployments_for
    from flows.pipeline import mfa_pipeline

    from mfa.run import run_pipeline

    sites = tmp_path / "sites.csv"
    sites.write_text(DEMAND.read_text())
    pipeline = _pipeline(tmp_path, '[match]\ndemand = "sites.csv"\nweights = [1, 0.5]\n')
    out = tmp_path / "out"
    # the deployment `mfa serve` runs is the nightly flow itself: the match comes with it
    (dep,) = deployments_for([pipeline], out)
    assert dep.flow_name == "mfa-pipeline"

    before = {r.id for r in asyncio.run(_flow_runs("mfa-match"))}
    run_dir = Path(mfa_pipeline(str(pipeline), str(out), force=False))
    matching = out / "dk-match" / "matching"
    record = json.loads((matching / "match.json").read_text())
    run_id = json.loads((run_dir / "run.json").read_text())["run_id"]
    assert record["run"]["run_id"] == run_id and record["run"]["dir"] == str(run_dir)
    assert record["weights"] == {"co2_per_kgco2e": 1.0, "cost_per_dkk": 0.5}
    assert (matching / "project.qgs").is_file()
    # it ran as a subflow of the nightly flow run, and completed
    (sub,) = [r for r in asyncio.run(_flow_runs("mfa-match")) if r.id not in before]
    assert sub.parent_task_run_id is not None and sub.state.is_completed()
    assert sub.parameters["demand"] == str(sites)

    # the plain runner does the same; an unchanged run is matched again (new demand)
    sites.write_text(
        DEMAND.read_text().replace(
            "harbour-park,644500,6151200,brick,120", "harbour-park,644500,6151200,brick,60"
        )
    )
    again = run_pipeline(pipeline, out, force=False)
    assert again.resolve() == run_dir.resolve()  # nothing recomputed
    record = json.loads((matching / "match.json").read_text())
    assert record["run"]["run_id"] == run_id
    assert sum(r["demand_t"] for r in record["totals"]) == pytest.approx(445.0 - 60.0)

    # a matching that fails says so, and leaves the run published
    sites.write_text(
        "demand_id,x,y,material,t,year_from,year_to\na,644500,6151200,gold,5,2026,2030\n"
    )
    with pytest.raises(
        InputDataError, match=r"is published; its \[match\] failed: .*sites.csv row 1"
    ):
        mfa_pipeline(str(pipeline), str(out), force=False)
    assert (out / "dk-match" / "latest" / "run.json").is_file()
    assert json.loads((matching / "match.json").read_text())["run"]["run_id"] == run_id

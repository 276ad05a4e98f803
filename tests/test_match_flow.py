"""The Prefect flow of reuse matching writes what `match_run` writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = [pytest.mark.prefect, pytest.mark.slow]

DEMAND = Path("tests/data/match_demand_kalundborg.csv")


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

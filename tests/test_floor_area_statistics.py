"""The report sets the run's median floor area per function beside a cited national
statistic of the country the data lie in (config/intensities/floor_area_statistics.csv)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mfa.buildings.statistics import floor_area_against_statistics, floor_area_medians
from mfa.errors import ConfigError
from mfa.io.statistics import read_floor_area_statistics
from mfa.report import floor_area_lines

TABLE = Path(__file__).parent.parent / "config" / "intensities" / "floor_area_statistics.csv"


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["RS", "RM", "NR"]),
            st.one_of(st.floats(-10, 1e5), st.just(float("nan"))),
        ),
        max_size=40,
    )
)
def test_medians_per_function_equal_numpy_per_group(rows) -> None:
    fn = pd.Series([r[0] for r in rows], dtype="string")
    gfa = pd.Series([r[1] for r in rows], dtype=float)
    got = floor_area_medians(fn, gfa)
    for f in ("RS", "RM", "NR"):
        mine = np.array([a for g, a in rows if g == f and np.isfinite(a) and a > 0])
        if mine.size == 0:
            assert f not in got.index
        else:
            assert got.loc[f, "buildings"] == mine.size
            assert got.loc[f, "median_gfa_m2"] == pytest.approx(float(np.median(mine)))


def test_the_table_is_cited_and_compared_by_country() -> None:
    stats = read_floor_area_statistics(TABLE)
    fin = stats[stats["iso3"] == "FIN"].iloc[0]
    assert (fin["function"], fin["floor_area_m2"], fin["year"]) == ("RS", 107.8, 2008)
    assert "Statistics Finland" in fin["source"] and fin["url"].startswith("http")
    medians = floor_area_medians(pd.Series(["RS"] * 3 + ["NR"]), pd.Series([90, 100, 130, 5e3]))
    (rec,) = floor_area_against_statistics(medians, stats, "FIN")
    assert rec["run_median_gfa_m2"] == 100.0 and rec["buildings"] == 3
    assert rec["ratio"] == pytest.approx(100 / 107.8, abs=1e-3)
    assert floor_area_against_statistics(medians, stats, "DNK") == []  # none for Denmark
    assert floor_area_against_statistics(medians, stats, None) == []
    (line,) = floor_area_lines({"floor_area_vs_statistics": [rec]})
    assert line.startswith("- floor area: RS median 100 m² over 3 buildings, ×0.93 the mean")
    none = floor_area_against_statistics(medians.drop(index="RS"), stats, "FIN")
    assert none[0]["run_median_gfa_m2"] is None
    assert floor_area_lines({"floor_area_vs_statistics": none})[0].startswith(
        "- floor area: no RS building to set against"
    )


def test_a_bad_statistics_table_is_a_one_line_error(tmp_path: Path) -> None:
    bad = tmp_path / "floor_area_statistics.csv"
    text = TABLE.read_text(encoding="utf-8").replace(",RS,107.8,", ",RS,-1,")
    bad.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=r"line 2: .*floor_area_m2 > 0") as err:
        read_floor_area_statistics(bad)
    assert "\n" not in str(err.value)

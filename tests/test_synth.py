"""Synthetic cities: deterministic, plausible, accepted by mfa run as they are."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely

from mfa.run import run_pipeline
from mfa.synth import synthetic_city, write_synthetic_city
from tests.conftest import CONFIG, SAMPLE


@pytest.fixture(scope="module")
def like() -> pd.DataFrame:
    return pd.read_parquet(SAMPLE / "bbr_bygning_2020.parquet")


def test_same_seed_same_city(like) -> None:
    a, da = synthetic_city(3000, 7, like)
    b, db = synthetic_city(3000, 7, like)
    pd.testing.assert_frame_equal(a, b)
    pd.testing.assert_frame_equal(da, db)
    c, _ = synthetic_city(3000, 8, like)
    assert not a.geometry.equals(c.geometry)


def test_plausible_footprints_and_attributes(like) -> None:
    reg, districts = synthetic_city(20_000, 3, like)
    assert len(reg) == 20_000 and reg.id_lokalId.is_unique
    assert reg.geometry.is_valid.all()
    area = reg.geometry.area
    assert area.between(10 - 1e-6, 26 * 26 + 1e-6).all()
    # footprints never overlap: each sits in its own lattice cell
    assert gpd.sjoin(reg, reg, predicate="overlaps").empty
    # use codes follow the sample: detached houses are the most common standing building
    assert reg.byg021BygningensAnvendelse.value_counts().index[0] == "120"
    assert districts.geometry.union_all().contains(reg.geometry.union_all())


def test_districts_tile_the_city_with_parish_like_outlines(like) -> None:
    """The outlines have real parishes' vertex counts, neighbours share their borders
    exactly (GEOS: the union has no holes and the areas add up), and every footprint lies
    within one district."""
    reg, districts = synthetic_city(20_000, 3, like)
    g = districts.geometry.values
    assert (shapely.get_num_coordinates(g) > 2_000).all() and shapely.is_valid(g).all()
    union = shapely.union_all(g)
    assert union.geom_type == "Polygon" and shapely.get_num_interior_rings(union) == 0
    assert union.area == pytest.approx(shapely.area(g).sum(), rel=1e-12)
    i, _ = shapely.STRtree(g).query(reg.geometry.values, predicate="within")
    assert len(i) == len(reg) and len(np.unique(i)) == len(reg)


def test_mfa_runs_a_synthetic_city(tmp_path: Path) -> None:
    pipeline = write_synthetic_city(
        5000, 11, tmp_path / "city", SAMPLE / "bbr_bygning_2020.parquet", CONFIG
    )
    run = run_pipeline(pipeline)
    m = json.loads((run / "run.json").read_text())
    assert m["row_counts"]["records_read"] == 5000
    assert m["row_counts"]["buildings"] + m["row_counts"]["dropped"] == 5000
    d = gpd.read_parquet(run / "districts.parquet")
    b = gpd.read_parquet(run / "buildings.parquet")
    assert d.mass_t.sum() == pytest.approx(b.mass_t.sum(), rel=1e-9)
    assert b.geometry.geom_type.eq("Polygon").all()
    assert run.is_relative_to(tmp_path / "city" / "outputs")

"""The Dask paths: a real distributed LocalCluster of two worker processes."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import pandas as pd
import pytest

from mfa.hilbert import hilbert_order
from mfa.parallel import dask_compute
from mfa.run import run_pipeline


@pytest.mark.slow
def test_local_cluster_gives_identical_layers(bbr_pipeline, tmp_path: Path) -> None:
    threads = run_pipeline(bbr_pipeline(partitions=1, name="threads.toml"), tmp_path / "t")
    cluster = run_pipeline(
        bbr_pipeline(scheduler="local-cluster", partitions=4, name="cluster.toml"), tmp_path / "c"
    )
    for layer in ("buildings.parquet", "districts.parquet"):
        pd.testing.assert_frame_equal(
            gpd.read_parquet(threads / layer), gpd.read_parquet(cluster / layer)
        )


@pytest.mark.slow
def test_existing_scheduler_address() -> None:
    """An address in the pipeline file connects to an existing Dask scheduler."""
    import dask.bag as db
    from distributed import LocalCluster

    with (
        LocalCluster(
            n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None
        ) as c,
        dask_compute(c.scheduler_address) as compute,
    ):
        assert compute(db.from_sequence(range(10), npartitions=2).sum()) == 45


def test_hilbert_order_is_spatially_coherent_and_deterministic() -> None:
    import numpy as np
    import shapely

    rng = np.random.default_rng(1)
    xy = rng.uniform(0, 1000, (400, 2))
    gdf = gpd.GeoDataFrame(
        {"building_id": [f"b{i:03d}" for i in range(400)]},
        geometry=shapely.points(xy),
        crs="EPSG:25832",
    )
    a = hilbert_order(gdf, "building_id")
    b = hilbert_order(gdf.sample(frac=1, random_state=3), "building_id")
    assert list(a.building_id) == list(b.building_id)
    # consecutive rows are close: mean step far below that of a random order
    steps = np.hypot(*np.diff(np.c_[a.geometry.x, a.geometry.y], axis=0).T)
    rand = np.hypot(*np.diff(xy, axis=0).T)
    assert steps.mean() < rand.mean() / 5


def test_gc_paused_nests_and_restores_the_collector() -> None:
    import gc

    from mfa.parallel import gc_paused, without_cyclic_gc

    assert gc.isenabled()

    @without_cyclic_gc
    def step() -> bool:
        with gc_paused():
            pass
        return gc.isenabled()  # the inner pause must not switch it back on

    assert step() is False and gc.isenabled()
    with pytest.raises(RuntimeError), gc_paused():
        raise RuntimeError("a failing step")
    assert gc.isenabled()
    gc.disable()  # a caller that turned it off keeps it off
    try:
        with gc_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()
    assert step.__name__ == "step"  # run records name the failing step by it

"""The one engine on every executor: threads, a real Dask LocalCluster, an existing
scheduler; and the results do not depend on the batch size or the worker count."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely

from mfa.executor import executor, ordered_map
from mfa.hilbert import hilbert_distance
from mfa.io.files import sha256_file
from mfa.run import run_pipeline
from tests.conftest import SAMPLE

SAMPLE_REGISTER = SAMPLE / "bbr_bygning_2020.parquet"

SORT = {
    "buildings": ["building_id"],
    "districts": ["district_id"],
    "grid": ["cell_id"],
    "quality": ["district_id"],
    "flows": ["scenario", "district_id", "year", "material"],
}


def _layer(run: Path, name: str) -> pd.DataFrame:
    df = gpd.read_parquet(run / f"{name}.parquet").sort_values(SORT[name])
    return pd.DataFrame(df.drop(columns="geometry").reset_index(drop=True)).assign(
        wkb=shapely.to_wkb(df.geometry.values)
    )


def assert_same_layers(a: Path, b: Path, rtol: float = 1e-9) -> None:
    """Ids, counts and text exact; floats to ``rtol``; the same run totals."""
    for name in SORT:
        if not (a / f"{name}.parquet").exists():
            assert not (b / f"{name}.parquet").exists()
            continue
        pd.testing.assert_frame_equal(_layer(a, name), _layer(b, name), rtol=rtol, atol=0)
    ma, mb = (json.loads((r / "run.json").read_text()) for r in (a, b))
    assert ma["row_counts"] == mb["row_counts"]
    assert ma["provenance"] == mb["provenance"]
    for k, v in ma["totals_t"].items():
        assert mb["totals_t"][k] == pytest.approx(v, rel=rtol), k
    for f in ("dropped.csv", "repairs.csv"):  # sorted as published: the same files
        assert (a / f).read_bytes() == (b / f).read_bytes(), f
    assert ma["dropped"] == mb["dropped"] and ma["repairs"] == mb["repairs"]


@pytest.mark.slow
def test_batches_workers_and_a_local_cluster_give_the_same_layers(
    bbr_pipeline, tmp_path: Path
) -> None:
    """dk-sample's register (3,164 records) as one batch on one thread, as 4 batches on 2
    threads (read in the caller: its one row group is larger than a batch), and as 4
    batches on a real 2-process LocalCluster whose workers read their own batches (the
    same records in row groups of 1,000)."""
    register = gpd.read_parquet(SAMPLE_REGISTER)
    groups = tmp_path / "groups.parquet"
    register.to_parquet(groups, row_group_size=1_000)
    one = run_pipeline(bbr_pipeline(workers=1, name="one.toml"), tmp_path / "one")
    many = run_pipeline(bbr_pipeline(batch_rows=1_000, workers=2, name="m.toml"), tmp_path / "m")
    cluster = run_pipeline(
        bbr_pipeline(
            register=groups, scheduler="local-cluster", batch_rows=1_000, workers=2, name="c.toml"
        ),
        tmp_path / "c",
    )
    compute = {
        k: json.loads((r / "run.json").read_text())["compute"]
        for k, r in [("m", many), ("c", cluster)]
    }
    assert compute["m"]["batches"] == compute["c"]["batches"] == 4
    assert compute["m"]["engine"]["buildings"]["batches_read_by_workers"] == 0
    assert compute["c"]["engine"]["buildings"]["batches_read_by_workers"] == 4
    assert_same_layers(one, many)
    # the same batches on another executor: the very same files
    for layer in sorted(f.name for f in many.glob("*.parquet")):
        assert sha256_file(many / layer) == sha256_file(cluster / layer), layer


def _square(x: int) -> int:
    return x * x


def test_an_existing_scheduler_address_runs_the_batches_in_order() -> None:
    from distributed import LocalCluster

    with (
        LocalCluster(
            n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None
        ) as c,
        executor(c.scheduler_address) as submit,
    ):
        got = list(ordered_map(submit, _square, ((i,) for i in range(20)), window=3))
    assert got == [i * i for i in range(20)]


def test_an_unreachable_scheduler_is_a_clear_error() -> None:
    from mfa.errors import ConfigError

    with (
        pytest.raises(ConfigError, match="no Dask scheduler answers"),
        executor("tcp://127.0.0.1:9", connect_timeout_s=2),
    ):
        pass


def test_the_layer_order_of_a_batch_is_spatially_coherent(bbr_pipeline, tmp_path: Path) -> None:
    """Within a batch, buildings follow a Hilbert curve: consecutive rows lie close."""
    run = run_pipeline(bbr_pipeline(name="o.toml"), tmp_path)
    b = gpd.read_parquet(run / "buildings.parquet")
    xy = np.c_[b.geometry.x, b.geometry.y]
    steps = np.hypot(*np.diff(xy, axis=0).T)
    shuffled = np.random.default_rng(1).permutation(len(xy))
    rand = np.hypot(*np.diff(xy[shuffled], axis=0).T)
    assert np.median(steps) < np.median(rand) / 10
    # one batch: the whole layer in order along the curve over the CRS's area of use
    from mfa.buildings.quality import area_of_use_bounds

    d = hilbert_distance(np.c_[xy, xy], np.array(area_of_use_bounds("EPSG:25832")))
    assert (np.diff(d.astype(np.int64)) >= 0).all()


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


@pytest.mark.slow
def test_repeated_ids_and_footprints_are_found_across_batches(bbr_pipeline, tmp_path: Path) -> None:
    """Copies at the end of the register repeat records of the first batches: the copies
    are left out with the same reasons whether the register is one batch or four."""
    from tests.conftest import SAMPLE

    reg = gpd.read_parquet(SAMPLE / "bbr_bygning_2020.parquet")
    standing = reg[(reg["status"] == "6") & reg["byg021BygningensAnvendelse"].isin(["120", "130"])]
    same_place = standing.iloc[[3, 40]].assign(id_lokalId=["copy-a", "copy-b"])
    same_id = standing.iloc[[7]].assign(geometry=standing.iloc[[7]].geometry.translate(5, 5))
    path = tmp_path / "register.parquet"
    pd.concat([reg, same_place, same_id], ignore_index=True).to_parquet(path)
    one = run_pipeline(bbr_pipeline(register=path, name="one.toml"), tmp_path / "one")
    many = run_pipeline(
        bbr_pipeline(register=path, batch_rows=1_000, name="many.toml"), tmp_path / "many"
    )
    assert_same_layers(one, many)
    dropped = pd.read_csv(many / "dropped.csv", dtype=str).set_index("record_id")
    assert dropped.loc[["copy-a", "copy-b"], "reason"].str.startswith("duplicate geometry").all()
    repeated = dropped.loc[[standing.iloc[7]["id_lokalId"]], "reason"]
    assert repeated.str.startswith("duplicate id_lokalId").any()
    built = pd.read_parquet(many / "buildings.parquet", columns=["building_id"])["building_id"]
    assert not built.isin(["copy-a", "copy-b"]).any()
    assert (built == standing.iloc[7]["id_lokalId"]).sum() == 1


#: Threads assigning districts at once, as a run's batches do: the locator is built by
#: one of them and each tests points against its own prepared polygons. In a child
#: process, because the failure it guards against is a crash (GEOS prepared geometries
#: are not thread-safe, libgeos/geos#825: 2 threads preparing 3,000-vertex parishes at
#: once killed a 1 M-building run with SIGSEGV).
_LOCATE_IN_THREADS = """
import threading, numpy as np, shapely
from concurrent.futures import ThreadPoolExecutor
from mfa.core.kernel import _LOCATORS, _locator
rng = np.random.default_rng(0)
box = shapely.box(0, 0, 6000, 6000)
seeds = shapely.MultiPoint(rng.uniform(0, 6000, (36, 2)))
cells = shapely.intersection(shapely.get_parts(shapely.voronoi_polygons(seeds, extend_to=box)), box)
polys = shapely.segmentize(cells, shapely.length(cells) / 3000)  # parish-like outlines
x, y = rng.uniform(-100, 6100, (2, 100_000))
tree = shapely.STRtree(polys)  # the oracle: GEOS on plain geometries, one thread
pt, poly = tree.query(shapely.points(x, y), predicate="intersects")
first = np.full(len(x), len(polys))
np.minimum.at(first, pt, poly)
expected = np.where(first < len(polys), first, -1)
for attempt in range(5):
    _LOCATORS.clear()
    shared = shapely.from_wkb(shapely.to_wkb(polys))
    gate = threading.Barrier(4)
    def run(k):
        gate.wait()
        return _locator(shared).locate(x, y)
    with ThreadPoolExecutor(4) as pool:
        for got in pool.map(run, range(4)):
            assert (got == expected).all(), attempt
print("ok", int((expected >= 0).sum()))
"""


def test_districts_are_located_by_many_threads_at_once_without_a_crash() -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", _LOCATE_IN_THREADS], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    assert done.stdout.startswith("ok ") and int(done.stdout.split()[1]) > 90_000

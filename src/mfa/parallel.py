"""Dask: spatial partitions and the scheduler named in the pipeline file."""

from __future__ import annotations

import functools
import gc
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import dask
import dask_geopandas
import geopandas as gpd
import pandas as pd

__all__ = ["dask_compute", "gc_paused", "map_partitions", "without_cyclic_gc"]


@contextmanager
def dask_compute(scheduler: str, n_workers: int = 2) -> Iterator[Callable[[Any], Any]]:
    """A ``compute(collection)`` function for the scheduler named in the pipeline file.

    ``threads``, ``processes`` and ``synchronous`` are Dask's local schedulers;
    ``local-cluster`` starts a ``distributed.LocalCluster`` of ``n_workers`` processes for
    the run; any other value is the address of an existing Dask scheduler.
    """
    if scheduler in ("threads", "processes", "synchronous"):
        yield lambda coll: dask.compute(coll, scheduler=scheduler)[0]
        return
    from distributed import Client, LocalCluster

    if scheduler == "local-cluster":
        with (
            LocalCluster(
                n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=None
            ) as cluster,
            Client(cluster) as client,
        ):
            yield lambda coll: client.compute(coll).result()
        return
    with Client(scheduler, timeout="30s") as client:
        yield lambda coll: client.compute(coll).result()


def map_partitions(
    gdf: gpd.GeoDataFrame,
    func: Callable[..., pd.DataFrame],
    meta: pd.DataFrame,
    npartitions: int,
    compute: Callable[[Any], Any],
    **kwargs: Any,
) -> pd.DataFrame:
    """Apply a pure per-partition function over contiguous (spatially coherent) chunks.

    ``gdf`` should already be in Hilbert order (:func:`mfa.hilbert.hilbert_order`); chunks keep that
    order, so the result is identical whatever the number of partitions.
    """
    n = max(1, min(npartitions, len(gdf)))
    ddf = dask_geopandas.from_geopandas(gdf, npartitions=n, sort=False)
    result = ddf.map_partitions(func, meta=meta, **kwargs)
    return compute(result)


_gc_lock = threading.Lock()
_gc_depth = 0
_gc_was_enabled = True


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector; collect once when the outermost exits.

    Reference counting still frees every object that is not in a cycle. A step holds
    hundreds of thousands of Python objects (geometries, strings in object arrays), and
    each automatic full collection walks all of them: at 200,000 buildings a forced run
    took 8.3-8.6 s with them and 6.6-7.1 s without (benchmarks/incremental.py).
    """
    global _gc_depth, _gc_was_enabled
    with _gc_lock:
        if _gc_depth == 0:
            _gc_was_enabled = gc.isenabled()
            gc.disable()
        _gc_depth += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_depth -= 1
            outermost = _gc_depth == 0
            if outermost and _gc_was_enabled:
                gc.enable()
        if outermost:
            gc.collect(1)  # the young cycles the step left; the old ones wait as before


F = TypeVar("F", bound=Callable[..., Any])


def without_cyclic_gc(fn: F) -> F:
    """Run ``fn`` inside :func:`gc_paused`."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with gc_paused():
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]

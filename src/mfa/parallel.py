"""Dask: spatial partitions and the scheduler named in the pipeline file."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import dask
import dask_geopandas
import geopandas as gpd
import pandas as pd

__all__ = ["dask_compute", "map_partitions"]


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

    ``gdf`` should already be in Hilbert order (:func:`hilbert_order`); chunks keep that
    order, so the result is identical whatever the number of partitions.
    """
    n = max(1, min(npartitions, len(gdf)))
    ddf = dask_geopandas.from_geopandas(gdf, npartitions=n, sort=False)
    result = ddf.map_partitions(func, meta=meta, **kwargs)
    return compute(result)

"""The qgis step (GeoPackage, styles, project) and the GeoPackage's buildings layer,
which the stocks step starts in a separate process as soon as that layer is complete
(:func:`start_buildings_layer`, :mod:`mfa.io.qgis.background`): the write holds
pyogrio's GIL for seconds, so it overlaps the districts and flows steps only in another
process. The qgis step waits for it and adds the other layers to the same file."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import shapely

from mfa.config import Pipeline
from mfa.executor import start_for_run, take_from_run, worker_count
from mfa.failpoints import failpoint
from mfa.io.geoparquet import read_layer
from mfa.io.qgis import GPKG, PROJECT, LayerGeometry, write_qgis_outputs
from mfa.io.qgis.background import (
    LayerProcess,
    parquet_layer,
    start_layer_process,
    write_parquet_layer,
)
from mfa.parallel import without_cyclic_gc
from mfa.run.context import BUILDINGS, QGIS_LAYERS, _pipeline, _report, log

#: Layers written into the GeoPackage from their row groups, and the columns their style
#: needs (their size grows with the city: buildings, and grid cells with its area).
_STREAMED = {"buildings": ["mass_t"], "grid": ["mass_t_per_ha"]}

#: The columns of the flows layer that its style reads (the rest go to the GeoPackage
#: row group by row group).
_FLOW_STYLE = ["scenario", "material", "year", "outflow_t"]


def _process_key(work: Path) -> str:
    return f"{work}:{GPKG}:buildings"


def start_buildings_layer(work_dir: Path, buildings: int) -> LayerProcess | None:
    """Start writing the GeoPackage's buildings layer from the complete ``buildings``
    layer in a child process (the stocks step, as soon as the layer is in place); None
    when the qgis step is to write it itself: outside a run (a step called on its own),
    with one worker or the synchronous scheduler (the pipeline asked for one core),
    or fewer than ``[compute] geopackage_process_min_buildings`` buildings (cheaper in
    line), or called from another thread than the main one (the process dies with the
    thread that started it: a step run in a passing thread would lose it). The process
    is killed when the run ends, however it ends."""
    work = Path(work_dir)
    p = _pipeline(work)
    c = p.compute
    if (
        threading.current_thread() is not threading.main_thread()
        or c.scheduler == "synchronous"
        or worker_count(c.workers) < 2
        or buildings < max(c.geopackage_process_min_buildings, 1)
    ):
        return None
    return start_for_run(
        _process_key(work),
        lambda: start_layer_process(work / GPKG, "buildings", work / BUILDINGS, p.crs),
        LayerProcess.stop,
    )


def _flows(
    path: Path, districts: pd.DataFrame | None
) -> tuple[pd.DataFrame, LayerGeometry, Iterator[pa.Table]]:
    """The flows layer for the GeoPackage, one row group at a time: the rows its style
    reads (the first row and the first scenario's ``mass`` rows: what
    :func:`mfa.io.qgis.styles._outflow_style` selects from), the view's geometries (each
    row's district polygon, none without districts) and its row groups without
    ``geometry`` and ``bbox`` as Arrow tables (read when written). Never the whole layer
    in memory: a national run has millions of flow rows."""
    source = pq.ParquetFile(path)
    columns = [c for c in source.schema_arrow.names if c not in ("geometry", "bbox")]
    if districts is not None:
        ids = pa.array(districts["district_id"].astype(object).tolist())
        kinds = shapely.get_type_id(np.asarray(districts.geometry.values)).astype(np.int8)
        used = np.zeros(len(ids), dtype=bool)
    types: list[np.ndarray] = []
    style: list[pd.DataFrame] = []
    first: str | None = None  # the scenario of the layer's first row
    for i in range(source.num_row_groups):
        group = source.read_row_group(i, columns=[*_FLOW_STYLE, "district_id"])
        keep = np.zeros(group.num_rows, dtype=bool)
        if first is None and group.num_rows:
            first = group["scenario"][0].as_py()
            keep[0] = True
        if first is not None:
            mass = pc.and_(pc.equal(group["scenario"], first), pc.equal(group["material"], "mass"))
            keep |= mass.fill_null(False).to_numpy(zero_copy_only=False)
            style.append(group.select(_FLOW_STYLE).filter(pa.array(keep)).to_pandas())
        if districts is None:
            types.append(np.full(group.num_rows, -1, dtype=np.int8))
            continue
        at = pc.index_in(group["district_id"].cast(ids.type), value_set=ids)
        index = at.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
        known = index >= 0
        used[np.unique(index[known])] = True
        types.append(np.where(known, kinds[np.where(known, index, 0)], -1).astype(np.int8))
    frame = pd.concat(style, ignore_index=True) if style else pd.DataFrame(columns=_FLOW_STYLE)
    type_ids = np.concatenate(types) if types else np.zeros(0, dtype=np.int8)
    bounds = None
    if districts is not None and used.any():
        b = shapely.total_bounds(np.asarray(districts.geometry.values)[used])
        bounds = (float(b[0]), float(b[1]), float(b[2]), float(b[3]))
    batches = (source.read_row_group(i, columns=columns) for i in range(source.num_row_groups))
    return frame, LayerGeometry(type_ids, bounds), batches


@without_cyclic_gc
def qgis_outputs(work_dir: Path) -> Path:
    """The run's layers for QGIS: ``layers.gpkg``, a ``.qml`` style per layer, ``project.qgs``.

    The GeoPackage holds every GeoParquet layer of the run with its default style; the
    ``.qml`` beside each ``.parquet`` is the same style; the project opens them styled,
    in groups, in the pipeline CRS (see :mod:`mfa.io.qgis`). Written into the work
    folder, so :func:`publish` checks them before the run is published. The buildings
    layer is the one :func:`start_buildings_layer` started (waited for here), else
    written here.
    """
    t0 = time.perf_counter()
    work = Path(work_dir)
    p: Pipeline = _pipeline(work)
    process: LayerProcess | None = take_from_run(_process_key(work))
    layers: dict[str, pd.DataFrame] = {}
    shapes: dict[str, LayerGeometry] = {}
    batches: dict[str, Any] = {}
    for name, f in QGIS_LAYERS.items():
        if not (work / f).exists() or name == "flows":
            continue
        if name in _STREAMED:  # large: into the GeoPackage row group by row group
            layers[name], shapes[name], batches[name] = parquet_layer(work / f, _STREAMED[name])
        else:
            layers[name] = read_layer(work / f)
    flows = work / QGIS_LAYERS["flows"]
    if flows.exists():  # the GeoPackage joins the district polygons in a view
        layers["flows"], shapes["flows"], batches["flows"] = _flows(flows, layers.get("districts"))
        layers = {n: layers[n] for n in QGIS_LAYERS if n in layers}  # the layers' order
    years = (p.dynamics.base_year, p.dynamics.horizon) if p.dynamics is not None else None
    written = None
    engine: dict[str, Any] = {"buildings_layer": "in line"}
    if process is not None:
        t1 = time.perf_counter()
        done = process.wait()
        engine = {
            "buildings_layer": "separate process",
            "waited_s": round(time.perf_counter() - t1, 3),
            "process_cpu_s": done.get("cpu_s"),
            "process_max_rss_mb": done.get("max_rss_mb"),
        }
        written = {"buildings": int(done["rows"])}
        batches.pop("buildings", None)
    elif "buildings" in batches:  # in line: the same write as the process's
        t1 = time.perf_counter()
        written = {
            "buildings": write_parquet_layer(work / GPKG, "buildings", work / BUILDINGS, p.crs)
        }
        engine["seconds"] = round(time.perf_counter() - t1, 3)
        batches.pop("buildings")
    out = write_qgis_outputs(
        work,
        layers,
        p.crs,
        p.name,
        years,
        geometries=shapes,
        batches=batches,
        written=written,
    )
    failpoint("qgis:written")
    seconds = round(time.perf_counter() - t0, 3)
    _report(work, "qgis", {**out, "engine": engine, "seconds": seconds})
    log.info("QGIS project %s, layers in %s (buildings layer: %s)", PROJECT, GPKG, engine)
    return work / PROJECT

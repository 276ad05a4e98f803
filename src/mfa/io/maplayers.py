"""Roads and water under the HTML maps: where a reader is.

A pipeline's ``[map]`` table (or ``mfa query`` / ``mfa match`` ``--roads`` / ``--water``)
names a line file of roads and a polygon file of water, in any CRS. They are opened as
data only (:mod:`mfa.io.safeopen`: the driver their extension allows, checked against
their content), checked before any run (:func:`check_map_layer`: readable, the right
geometry type, a CRS), and read for one map at a time (:func:`read_map_layer`: the
features that meet the map's window, reprojected to the run's CRS, clipped to the
window, 2-D). They change no number of a run; the maps draw them in muted colours under
the data (:mod:`mfa.io.svgmap`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import shapely

from mfa.errors import InputDataError

__all__ = ["MAP_LAYERS", "check_map_layer", "read_map_layer", "with_map_layers"]

#: Layer → (what it is, the geometry types it may hold).
MAP_LAYERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "roads": ("lines", ("LineString", "MultiLineString")),
    "water": ("polygons", ("Polygon", "MultiPolygon")),
}


def _declared_types(geometry_type: str | None) -> set[str]:
    """OGR's layer geometry type without its dimension ("LineString Z" → LineString);
    empty when the layer does not declare one ("Unknown": read the features)."""
    base = (geometry_type or "").replace(" Z", "").replace(" M", "").replace("25D", "").strip()
    return set() if base.startswith("Unknown") or not base else {base}


def _wrong_type(path: Path, kind: str, found: str, where: str, key: str) -> InputDataError:
    what, allowed = MAP_LAYERS[kind]
    return InputDataError(
        f"{path}: {where} holds {found} geometries; {kind} must be {what} "
        f"({' or '.join(allowed)}): give a {kind} file of {what} or fix {key}"
    )


def check_map_layer(path: Path, kind: str, key: str, layer: str | None = None) -> str:
    """The CRS of ``path`` (as pyogrio gives it), or a one-line InputDataError unless it
    is a readable vector file (by content, :func:`mfa.io.safeopen.vector_info`) whose
    layer holds ``kind``'s geometry type (:data:`MAP_LAYERS`) and has a CRS. Reads
    metadata only."""
    from mfa.errors import InputNotFoundError
    from mfa.io.files import path_problem
    from mfa.io.safeopen import vector_info

    path = Path(path)
    problem = path_problem(path)
    if problem is not None:
        kind_of = InputNotFoundError if problem.startswith("does not exist") else InputDataError
        raise kind_of(f"{path}: {problem}; give a {kind} file or fix {key}")
    info = vector_info(path, layer, f"{kind} map layer", key)
    declared = _declared_types(info.get("geometry_type"))
    allowed = MAP_LAYERS[kind][1]
    if declared and not declared <= set(allowed):
        raise _wrong_type(path, kind, ", ".join(sorted(declared)), "the layer", key)
    if not info.get("crs"):
        raise InputDataError(
            f"{path}: has no CRS, so its {kind} cannot be placed on the map; assign the "
            f"one it is in (e.g. ogr2ogr -a_srs EPSG:25832 out.gpkg in) or fix {key}"
        )
    return str(info["crs"])


def read_map_layer(
    path: Path, kind: str, crs: str, bounds: Sequence[float], key: str
) -> np.ndarray:
    """The ``kind`` features of ``path`` in the window ``bounds`` (xmin, ymin, xmax, ymax;
    metres of ``crs``): reprojected to ``crs``, clipped to the window, 2-D, empties left
    out (an array of shapely geometries, possibly empty).

    Raises InputDataError (one line) for a file that cannot be read, has no CRS or holds a
    feature of another geometry type (its position in the file is named).
    """
    from pyproj import CRS, Transformer

    from mfa.io.safeopen import read_vector

    source = CRS.from_user_input(check_map_layer(path, kind, key))
    target = CRS.from_user_input(crs)
    x0, y0, x1, y1 = (float(v) for v in bounds)
    box = (x0, y0, x1, y1)
    if source != target:  # the window in the file's CRS: only the features there are read
        to_file = Transformer.from_crs(target, source, always_xy=True)
        box = to_file.transform_bounds(x0, y0, x1, y1, densify_pts=21)
    frame = read_vector(path, None, f"{kind} map layer", key, bbox=box)
    geoms = frame.geometry.values
    present = ~shapely.is_missing(geoms) & ~shapely.is_empty(geoms)
    allowed = [shapely.GeometryType[t.upper()].value for t in MAP_LAYERS[kind][1]]
    wrong = present & ~np.isin(shapely.get_type_id(geoms), allowed)
    if wrong.any():
        i = int(np.flatnonzero(wrong)[0])
        more = f" (and {int(wrong.sum()) - 1} more)" if wrong.sum() > 1 else ""
        raise _wrong_type(path, kind, geoms[i].geom_type, f"feature {i + 1}{more}", key)
    if source != target:
        frame = frame.set_geometry(frame.geometry.to_crs(target))
    kept = shapely.force_2d(np.asarray(frame.geometry.values[present], dtype=object))
    clipped = shapely.clip_by_rect(kept, x0, y0, x1, y1)
    return clipped[~shapely.is_empty(clipped)]


def with_map_layers(
    context: Any,
    manifest: dict,
    layers: tuple[Path | None, Path | None],
    bounds: Sequence[float],
) -> tuple[Any, list[str]]:
    """``context`` (a :class:`mfa.io.svgmap.MapContext`) with the roads and water in the
    window ``bounds``: the files ``layers`` (roads, water) given on the command line, else
    those of the run's pipeline (``run.json`` ``map_context``), and the warnings to print:
    a pipeline's file gone since the run leaves its layer out."""
    import dataclasses

    recorded = manifest.get("map_context")
    recorded = recorded if isinstance(recorded, dict) else {}
    drawn: dict[str, Any] = {}
    credits, warnings = [], []
    note = ""
    for kind, given in zip(("roads", "water"), layers, strict=True):
        path, key = (given, f"--{kind}") if given is not None else (recorded.get(kind), None)
        if path is None:
            continue
        if key is None:
            key = f"the pipeline's [map] {kind} (run.json map_context), or give --{kind}"
            note = recorded.get("attribution") or ""
            if not Path(path).is_file():
                warnings.append(
                    f"{path}: the pipeline's [map] {kind} file is gone; the map has no "
                    f"{kind} (give --{kind} FILE)"
                )
                continue
        drawn[kind] = read_map_layer(Path(path), kind, manifest["crs"], bounds, key)
        if len(drawn[kind]):
            credits.append(f"{kind}: {Path(path).name}")
    if credits:
        drawn["credits"] = f"Map context ({'; '.join(credits)})" + (f": {note}" if note else "")
    return dataclasses.replace(context, **drawn), warnings

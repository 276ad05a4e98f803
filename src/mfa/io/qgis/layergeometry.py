"""What the styles, the project and the GeoPackage need to know of a layer's
geometries (types and extent), without parsing them where they are WKB."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
import shapely

from mfa.io.qgis.names import Geometry


@dataclass(frozen=True)
class LayerGeometry:
    """What the styles and the project need of a layer's geometries: the
    :func:`shapely.get_type_id` of each row (-1: none) and the extent (x0, y0, x1, y1;
    None without geometries)."""

    type_ids: np.ndarray
    bounds: tuple[float, float, float, float] | None

    @classmethod
    def of(cls, gdf: pd.DataFrame) -> LayerGeometry:
        if "geometry" not in gdf:
            return cls(np.full(len(gdf), -1, dtype=np.int64), None)
        ids = shapely.get_type_id(np.asarray(gdf.geometry.values))
        if (ids < 0).all():
            return cls(ids, None)
        b = gdf.geometry.dropna().total_bounds
        return cls(ids, (float(b[0]), float(b[1]), float(b[2]), float(b[3])))


def _geometries(
    layers: Mapping[str, pd.DataFrame], given: Mapping[str, LayerGeometry] | None
) -> dict[str, LayerGeometry]:
    """Each layer's :class:`LayerGeometry`: ``given``, else from its geometry column."""
    given = given or {}
    return {name: given.get(name) or LayerGeometry.of(df) for name, df in layers.items()}


def _families(g: LayerGeometry) -> list[Geometry]:
    """Every geometry family of a layer, the most frequent first (``none``: no geometry)."""
    ids = g.type_ids
    family = np.select(
        [np.isin(ids, (0, 4)), np.isin(ids, (1, 5)), np.isin(ids, (3, 6))], [0, 1, 2], -1
    )
    family = family[family >= 0]
    if not len(family):
        return ["none"]
    kinds, first, counts = np.unique(family, return_index=True, return_counts=True)
    order = np.lexsort((first, -counts))  # most frequent first, ties as they appear
    names: tuple[Geometry, ...] = ("point", "line", "polygon")
    return [names[int(kinds[i])] for i in order]


def _geometry_of(g: LayerGeometry) -> Geometry:
    """The geometry family most rows have (``none`` for a layer without geometries)."""
    return _families(g)[0]


_WKB_TYPES = {"point": "MultiPoint", "line": "MultiLineString", "polygon": "MultiPolygon"}


def _wkb_type(g: LayerGeometry, family: Geometry) -> str:
    if family == "none":
        return "NoGeometry"
    ids = g.type_ids
    single = {"point": 0, "line": 1, "polygon": 3}[family]
    name = {"point": "Point", "line": "LineString", "polygon": "Polygon"}[family]
    return name if np.isin(ids[ids >= 0], (single,)).all() else _WKB_TYPES[family]


def _declared(shape: LayerGeometry) -> tuple[str, bool]:
    """The geometry type a GeoPackage layer of these geometries declares, and whether
    single parts are stored as multi (as pyogrio does writing all rows at once: one
    family with single and multi parts becomes multi; several families, ``Unknown``)."""
    families = [f for f in _families(shape) if f != "none"]
    if len(families) != 1:
        return ("Unknown" if families else "None"), False
    declared = _wkb_type(shape, families[0])
    single = {"point": 0, "line": 1, "polygon": 3}[families[0]]
    ids = shape.type_ids[shape.type_ids >= 0]
    return declared, bool((ids == single).any() and declared.startswith("Multi"))

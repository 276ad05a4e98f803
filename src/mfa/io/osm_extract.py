"""Every building element of a local OSM extract (.osm, .osm.bz2, .osm.pbf), read with pyosmium.

One row per node, way or relation tagged ``building`` or ``building:part``, so that the
normaliser can account for each of them (kept or dropped with a reason). Besides the tags
and the lon/lat geometry (areas assembled by libosmium; None where no area could be built)
the raw table carries:

- ``problem``: why an element has no footprint, where that is known here: ``cut at extract
  edge`` (a node or member way is missing from the extract), ``way is not closed``,
  ``type=building relation (a grouping; its outline member is the building)``, or
  ``area could not be assembled`` (a broken ring);
- ``outer_of``: for a way, the id of a building (or building:part) multipolygon relation
  that has it as an outer member (the same outline, so it must not be counted twice).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

__all__ = ["CUT_AT_EDGE", "LANDUSE_VALUES", "read_osm_elements", "read_osm_extract"]

#: Drop reason of buildings whose nodes or member ways lie partly outside the extract.
CUT_AT_EDGE = "cut at extract edge"
#: Nodes this close (degrees, about 10 m) to the bounding box of the extract's header count
#: as on its edge: tools such as osmconvert drop the node references outside the box, so a
#: way cut there looks complete but does not close into an area.
EDGE_TOLERANCE_DEG = 1e-4
_KEYS = ("building", "building:part")
#: ``landuse=*`` values whose polygons are read besides the buildings (their function
#: goes to the generic buildings inside them: :mod:`mfa.buildings.osm_defaults`).
LANDUSE_VALUES = ("industrial", "retail", "commercial", "residential", "farmyard")


_EDGE_CANDIDATE = "edge"


def _header_box(path: str) -> tuple[float, float, float, float] | None:
    """The bounding box (lon/lat) the extract's header declares, or None."""
    import osmium

    reader = osmium.io.Reader(path, osmium.osm.NOTHING)
    try:
        box = reader.header().box()
    finally:
        reader.close()
    if not box.valid():
        return None
    return (box.bottom_left.lon, box.bottom_left.lat, box.top_right.lon, box.top_right.lat)


def _touches(nodes, box: tuple[float, float, float, float]) -> bool:
    """Whether a node of a way lies within :data:`EDGE_TOLERANCE_DEG` of the box's edge."""
    xy = np.array([(n.lon, n.lat) for n in nodes if n.location.valid()], dtype=float)
    if not len(xy):
        return False
    d = np.minimum.reduce(
        [xy[:, 0] - box[0], xy[:, 1] - box[1], box[2] - xy[:, 0], box[3] - xy[:, 1]]
    )
    return bool((d <= EDGE_TOLERANCE_DEG).any())


def _wanted(tags: dict[str, str]) -> bool:
    return any(tags.get(k, "no") != "no" for k in _KEYS)


def read_osm_elements(path: Path, keep_tags: tuple[str, ...]) -> gpd.GeoDataFrame:
    """Raw building and building-part elements of an extract (see the module docstring).

    ``keep_tags`` are the tag columns kept (others are not read). Raises what pyosmium
    raises on an unreadable file (``RuntimeError``); the caller turns it into a one-line
    error.
    """
    return read_osm_extract(path, keep_tags, ())[0]


def read_osm_extract(
    path: Path, keep_tags: tuple[str, ...], landuse: tuple[str, ...] = LANDUSE_VALUES
) -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame]:
    """The raw building elements (:func:`read_osm_elements`) and, from the same pass over
    the file, the areas (ways and multipolygons) tagged ``landuse`` = one of ``landuse``:
    columns ``landuse``, ``osm_id``, lon/lat polygons."""
    import osmium

    path = str(path)
    keys = set(keep_tags) | {"type"}
    # pass 1: the relations, with the ways they are made of
    rel_tags: dict[int, dict[str, str]] = {}
    rel_ways: dict[int, list[int]] = {}
    outer_of: dict[int, int] = {}
    for rel in osmium.FileProcessor(path, osmium.osm.RELATION).with_filter(
        osmium.filter.KeyFilter(*_KEYS)
    ):
        tags = dict(rel.tags)
        if not _wanted(tags):
            continue
        rel_tags[rel.id] = {k: v for k, v in tags.items() if k in keys}
        ways = [m.ref for m in rel.members if m.type == "w"]
        rel_ways[rel.id] = ways
        if tags.get("type") == "multipolygon":
            for m in rel.members:
                if m.type == "w" and m.role in ("outer", ""):
                    outer_of[m.ref] = min(outer_of.get(m.ref, rel.id), rel.id)
    members = {w for ways in rel_ways.values() for w in ways}

    box = _header_box(path)
    # pass 2: ways (with node locations) and the areas libosmium assembles
    wkb = osmium.geom.WKBFactory()
    areas: dict[tuple[str, int], bytes] = {}
    landuse_rows: list[tuple[str, int, bytes]] = []
    way_tags: dict[int, dict[str, str]] = {}
    way_problem: dict[int, str | None] = {}
    member_complete: dict[int, bool] = {}
    processor = (
        osmium.FileProcessor(path)
        .with_locations()
        .with_areas()
        .with_filter(osmium.filter.EntityFilter(osmium.osm.WAY | osmium.osm.AREA))
    )
    for obj in processor:
        if obj.is_area():
            tags = dict(obj.tags)
            if tags.get("landuse") in landuse:
                with contextlib.suppress(RuntimeError):
                    landuse_rows.append(
                        (tags["landuse"], obj.orig_id(), wkb.create_multipolygon(obj))
                    )
            if _wanted(tags):
                kind = "way" if obj.from_way() else "relation"
                # an invalid area is reported below as not assembled
                with contextlib.suppress(RuntimeError):
                    areas[(kind, obj.orig_id())] = wkb.create_multipolygon(obj)
            continue
        tags = dict(obj.tags)
        wanted = _wanted(tags)
        if not wanted and obj.id not in members:
            continue
        complete = all(n.location.valid() for n in obj.nodes)
        if obj.id in members:
            member_complete[obj.id] = complete
        if wanted:
            way_tags[obj.id] = {k: v for k, v in tags.items() if k in keys}
            if not complete:
                way_problem[obj.id] = CUT_AT_EDGE
            elif box is not None and _touches(obj.nodes, box):
                way_problem[obj.id] = _EDGE_CANDIDATE
            elif not obj.ends_have_same_id():
                way_problem[obj.id] = "way is not closed"
            else:
                way_problem[obj.id] = None

    # pass 3: building nodes (points: reported, never a footprint)
    node_rows = [
        (n.id, {k: v for k, v in n.tags if k in keys}, wkb.create_point(n))
        for n in osmium.FileProcessor(path, osmium.osm.NODE).with_filter(
            osmium.filter.KeyFilter(*_KEYS)
        )
        if _wanted(dict(n.tags))
    ]

    elements: list[str] = []
    ids: list[int] = []
    tag_rows: list[dict[str, str]] = []
    geoms: list[bytes | None] = []
    problems: list[str | None] = []
    outers: list[int | None] = []
    for nid, tags, g in node_rows:
        elements.append("node")
        ids.append(nid)
        tag_rows.append(tags)
        geoms.append(g)
        problems.append(None)
        outers.append(None)
    for wid, tags in way_tags.items():
        g = areas.get(("way", wid))
        problem = way_problem[wid]
        if problem == _EDGE_CANDIDATE:  # on the edge: cut there unless an area was built
            problem = CUT_AT_EDGE
        if g is None and problem is None:
            problem = "area could not be assembled (broken ring)"
        elements.append("way")
        ids.append(wid)
        tag_rows.append(tags)
        geoms.append(g)
        problems.append(None if g is not None else problem)
        outers.append(outer_of.get(wid))
    for rid, tags in rel_tags.items():
        g = areas.get(("relation", rid))
        problem = None
        if g is None:
            if any(not member_complete.get(w, False) for w in rel_ways[rid]):
                problem = CUT_AT_EDGE
            elif tags.get("type") == "building":
                problem = "type=building relation (a grouping; its outline member is the building)"
            elif tags.get("type") != "multipolygon":
                problem = f"relation of type={tags.get('type', '')!s} has no area"
            else:
                problem = "area could not be assembled (broken ring)"
        elements.append("relation")
        ids.append(rid)
        tag_rows.append(tags)
        geoms.append(g)
        problems.append(problem)
        outers.append(None)
    geometry = shapely.from_wkb(np.array(geoms, dtype=object))
    df = pd.DataFrame(tag_rows, index=pd.RangeIndex(len(ids)))
    df = df.reindex(columns=[t for t in keep_tags if t in df.columns])
    df.insert(0, "element", pd.array(elements, dtype="string"))
    df.insert(1, "osm_id", pd.array(ids, dtype="int64"))
    df["problem"] = pd.array(problems, dtype="string")
    df["outer_of"] = pd.array(outers, dtype="Int64")
    land = gpd.GeoDataFrame(
        {
            "landuse": pd.array([r[0] for r in landuse_rows], dtype="string"),
            "osm_id": pd.array([r[1] for r in landuse_rows], dtype="int64"),
        },
        geometry=shapely.from_wkb(np.array([r[2] for r in landuse_rows], dtype=object)),
        crs="EPSG:4326",
    )
    return gpd.GeoDataFrame(df, geometry=geometry, crs="EPSG:4326"), land

"""A road network from a layer of road centre lines (e.g. GeoDanmark ``Vejmidte``): pure,
geometries in, the arrays of a :class:`~mfa.match.distances.RoadNetwork` out.

Each line (each part of a MultiLineString) is one edge between the nodes at its two ends;
ends closer than ``snap_m`` are one node (single linkage: a chain of ends each within
``snap_m`` of the next is one node), placed at their mean. Lines join only at their ends,
as GeoDanmark's centre lines are split at junctions: a line crossing another without a
shared end (a bridge over a road) is no junction. An edge's length is its line's planar
length in the layer's projected CRS (m; a z coordinate is ignored), so a node that snapped
ends together adds no length for the gap (at most ``snap_m`` per end). Edges go both ways
unless the layer says otherwise (``oneway``: 1 along the line's direction only, −1 against
it, 0 both). Lines whose two ends are one node (loops) and lines of zero length carry
nothing and are left out, as are nodes that then have no edge.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse
import scipy.sparse.csgraph
import shapely
from scipy.spatial import cKDTree

__all__ = ["ONEWAY_VALUES", "network_arrays", "oneway_codes"]

#: Values of a ``oneway`` column (case-insensitive) → 1 along the line, −1 against, 0 both.
ONEWAY_VALUES = {
    "1": 1,
    "yes": 1,
    "true": 1,
    "ft": 1,
    "-1": -1,
    "reverse": -1,
    "tf": -1,
    "0": 0,
    "no": 0,
    "false": 0,
    "": 0,
    "both": 0,
}


def oneway_codes(values: np.ndarray) -> tuple[np.ndarray, int]:
    """A ``oneway`` column as codes (1, −1, 0; missing = 0) and the position of the first
    value not in :data:`ONEWAY_VALUES` (−1 when all are known)."""
    text = pd.Series(values, dtype=object).astype("string").str.strip().str.lower().fillna("")
    text = text.str.replace(r"^(-?[01])\.0+$", r"\1", regex=True)  # 1.0 from a float column
    known = text.isin(list(ONEWAY_VALUES)).to_numpy()
    codes = text.map(ONEWAY_VALUES).fillna(0).to_numpy(dtype=np.int8)
    return codes, int(np.argmin(known)) if not known.all() else -1


def network_arrays(
    lines: np.ndarray, snap_m: float, oneway: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """The directed network of ``lines`` (shapely LineStrings, one per part, projected CRS
    in m): node coordinates ``x``, ``y`` (m), directed edges ``u`` → ``v`` (positions into
    the nodes) and their lengths ``w`` (m). ``oneway`` (int8 per line, 1 / −1 / 0) as in
    the module's description; ``None`` = every line both ways."""
    lines = np.asarray(lines, dtype=object)
    n = len(lines)
    if oneway is None:
        oneway = np.zeros(n, dtype=np.int8)
    ends = np.concatenate(
        [
            shapely.get_coordinates(shapely.get_point(lines, 0)),
            shapely.get_coordinates(shapely.get_point(lines, -1)),
        ]
    )  # 2n × 2: every line's first end, then every line's last end
    pairs = cKDTree(ends).query_pairs(snap_m, output_type="ndarray")
    graph = scipy.sparse.coo_matrix(
        (np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(2 * n, 2 * n)
    )
    _, label = scipy.sparse.csgraph.connected_components(graph, directed=False)
    u, v = label[:n], label[n:]
    length = shapely.length(lines)
    keep = (u != v) & (length > 0)
    u, v, length, oneway = u[keep], v[keep], length[keep], oneway[keep]
    # the nodes in use, renumbered in order of their labels; each at its ends' mean
    used, node = np.unique(np.concatenate([u, v]), return_inverse=True)
    u, v = node[: len(u)], node[len(u) :]
    pos = np.searchsorted(used, label)
    at = np.isin(label, used)
    count = np.bincount(pos[at], minlength=len(used))
    x = np.bincount(pos[at], ends[at, 0], len(used)) / np.maximum(count, 1)
    y = np.bincount(pos[at], ends[at, 1], len(used)) / np.maximum(count, 1)
    fwd, back = oneway != -1, oneway != 1
    return {
        "x": x,
        "y": y,
        "u": np.concatenate([u[fwd], v[back]]).astype(np.int64),
        "v": np.concatenate([v[fwd], u[back]]).astype(np.int64),
        "w": np.concatenate([length[fwd], length[back]]).astype(float),
    }

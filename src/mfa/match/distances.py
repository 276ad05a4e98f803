"""Distances from supply points to demand sites: straight line × detour factor, or road km
on a drive network (shortest paths bounded by the haul limit)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse
import scipy.sparse.csgraph
from scipy.spatial import cKDTree

from mfa.errors import InputDataError

__all__ = ["RoadNetwork", "pairs_within", "road_km"]


def pairs_within(
    sx: np.ndarray, sy: np.ndarray, dx: np.ndarray, dy: np.ndarray, radius_m: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All (supply, demand) pairs closer than ``radius_m`` in a straight line.

    Returns supply positions, demand positions and straight-line distances (m), sorted by
    supply then demand.
    """
    if len(sx) == 0 or len(dx) == 0:
        e = np.zeros(0, dtype=np.int64)
        return e, e, np.zeros(0)
    # supply rows share points (one row per material and year): search each point once
    pts, row_pt = np.unique(np.column_stack([sx, sy]), axis=0, return_inverse=True)
    row_pt = row_pt.ravel()
    m = cKDTree(pts).sparse_distance_matrix(
        cKDTree(np.column_stack([dx, dy])), radius_m, output_type="coo_matrix"
    )
    p_idx, d_idx, dist = m.row.astype(np.int64), m.col.astype(np.int64), m.data
    # sparse_distance_matrix leaves out pairs at distance 0 (a site on a supply point)
    zero = cKDTree(pts).query_ball_point(np.column_stack([dx, dy]), r=0.0)
    zd = np.repeat(np.arange(len(dx)), [len(z) for z in zero])
    zp = np.concatenate([np.asarray(z, dtype=np.int64) for z in zero]) if len(zd) else zd
    p_idx = np.concatenate([p_idx, zp])
    d_idx = np.concatenate([d_idx, zd])
    dist = np.concatenate([dist, np.zeros(len(zd))])
    key = np.unique(p_idx * len(dx) + d_idx, return_index=True)[1]
    p_idx, d_idx, dist = p_idx[key], d_idx[key], dist[key]
    # expand points to the rows at them
    order = np.argsort(row_pt, kind="stable")
    counts = np.bincount(row_pt, minlength=len(pts))
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    n_rows = counts[p_idx]
    pair = np.repeat(np.arange(len(p_idx)), n_rows)
    offset = np.arange(len(pair)) - np.repeat(np.cumsum(n_rows) - n_rows, n_rows)
    si = order[starts[p_idx][pair] + offset]
    di, dist = d_idx[pair], dist[pair]
    o = np.lexsort((di, si))
    return si[o].astype(np.int64), di[o], dist[o]


class RoadNetwork:
    """A directed drive network as a sparse matrix of edge lengths (m) with node points.

    Parameters
    ----------
    node_x, node_y
        Node coordinates in the run's CRS (m).
    u, v, length_m
        Directed edges (positions into the nodes) and their lengths; of parallel edges the
        shortest counts.
    """

    def __init__(
        self,
        node_x: np.ndarray,
        node_y: np.ndarray,
        u: np.ndarray,
        v: np.ndarray,
        length_m: np.ndarray,
    ) -> None:
        self.n = len(node_x)
        self.xy = np.column_stack([node_x, node_y])
        self._tree = cKDTree(self.xy)
        e = pd.DataFrame({"u": u, "v": v, "w": length_m}).groupby(["u", "v"])["w"].min()
        u_, v_ = e.index.get_level_values(0), e.index.get_level_values(1)
        # the reverse graph: one pass from each demand node gives supply → demand distances
        w = np.maximum(e.to_numpy(dtype=float), 1e-9)  # csgraph treats explicit 0 as no edge
        self.reverse = scipy.sparse.csr_matrix((w, (v_, u_)), shape=(self.n, self.n))

    def snap(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Nearest node of each point and the straight-line distance to it (m)."""
        dist, idx = self._tree.query(np.column_stack([x, y]))
        return idx.astype(np.int64), dist


def road_km(
    net: RoadNetwork,
    sx: np.ndarray,
    sy: np.ndarray,
    dx: np.ndarray,
    dy: np.ndarray,
    si: np.ndarray,
    di: np.ndarray,
    cutoff_m: float,
    max_snap_m: float,
    source: str = "demand",
) -> tuple[np.ndarray, np.ndarray]:
    """Road km of the pairs (``si``, ``di``): snap distance of both ends + shortest path.

    One bounded Dijkstra pass (scipy ``csgraph.dijkstra`` with ``limit=cutoff_m``) per
    distinct demand node on the reversed graph, in blocks to bound memory. Returns km
    (NaN where the supply is farther than ``max_snap_m`` from the network, or no road path
    shorter than the cutoff exists) and a mask of the pairs routed on the network.
    A demand site farther than ``max_snap_m`` from the network is an error.
    """
    s_node, s_snap = net.snap(sx, sy)
    d_node, d_snap = net.snap(dx, dy)
    far = d_snap > max_snap_m
    if far.any():
        i = int(far.argmax())
        raise InputDataError(
            f"{source} row {i + 1}: site ({dx[i]:.0f}, {dy[i]:.0f}) is {d_snap[i]:.0f} m from "
            f"the nearest road of the network extract (limit {max_snap_m:.0f} m); use an "
            "extract that covers the sites"
        )
    km = np.full(len(si), np.nan)
    on_net = s_snap[si] <= max_snap_m
    targets, inv = np.unique(d_node[di], return_inverse=True)
    block = max(1, int(2e7 // max(net.n, 1)))
    for start in range(0, len(targets), block):
        rows = targets[start : start + block]
        dist = scipy.sparse.csgraph.dijkstra(
            net.reverse, directed=True, indices=rows, limit=cutoff_m
        )  # len(rows) × nodes, m
        sel = (inv >= start) & (inv < start + len(rows)) & on_net
        road = dist[inv[sel] - start, s_node[si[sel]]]
        km[sel] = (road + s_snap[si[sel]] + d_snap[di[sel]]) / 1000.0
    km[~np.isfinite(km)] = np.nan
    return km, on_net

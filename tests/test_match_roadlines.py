"""Road km on a real Danish road line layer: 13 GeoDanmark centre lines of a 1 km tile of
Kalundborg (geodata/sample). Oracles: networkx shortest paths on a graph built here from
the GeoJSON's coordinates with numpy lengths, and one path measured by hand; bad layers
give one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import networkx as nx
import numpy as np
import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st

from mfa.errors import InputDataError
from mfa.io.match import load_road_network, road_lines_arrays
from mfa.match import match_run
from mfa.match.distances import RoadNetwork, pairs_within, road_km
from mfa.match.roadlines import network_arrays

ROADS = Path("geodata/sample/kalundborg_1km_6173_632_roads.geojson")
WATER = Path("geodata/sample/kalundborg_1km_6173_632_water.geojson")
CRS = "EPSG:25832"


def _coords() -> list[np.ndarray]:
    """Each feature's vertices (x, y; z dropped), read as plain JSON."""
    doc = json.loads(ROADS.read_text())
    return [np.asarray(f["geometry"]["coordinates"])[:, :2] for f in doc["features"]]


def _measured(c: np.ndarray) -> float:
    """A line's length (m): the sum of its segments, by hand."""
    return float(np.hypot(*np.diff(c, axis=0).T).sum())


def _oracle() -> nx.Graph:
    """Nodes = the exact end coordinates (GeoDanmark lines share their junction vertices),
    edges = lines, weight = measured length."""
    g = nx.Graph()
    for c in _coords():
        a, b = tuple(c[0]), tuple(c[-1])
        w = _measured(c)
        if not g.has_edge(a, b) or g[a][b]["w"] > w:
            g.add_edge(a, b, w=w)
    return g


def _net(path: Path = ROADS, snap: float = 1.0) -> RoadNetwork:
    a = road_lines_arrays(path, CRS, snap)
    return RoadNetwork(a["x"], a["y"], a["u"], a["v"], a["w"])


def _km(net: RoadNetwork, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Road km from every point of ``a`` to every point of ``b`` (within 10 km)."""
    si, di, _ = pairs_within(a[:, 0], a[:, 1], b[:, 0], b[:, 1], 10_000.0)
    km, on = road_km(net, a[:, 0], a[:, 1], b[:, 0], b[:, 1], si, di, 10_000.0, 500.0)
    assert on.all()
    out = np.full((len(a), len(b)), np.nan)
    out[si, di] = km
    return out


def test_the_sample_is_the_real_tile() -> None:
    g = gpd.read_file(ROADS)
    assert len(g) == 13 and set(g.geom_type) == {"LineString"} and g.crs.to_epsg() == 25832
    assert (gpd.read_file(WATER).geom_type == "Polygon").all()


def test_road_km_equals_networkx_on_the_real_lines() -> None:
    net = _net()
    g = _oracle()
    nodes = np.array(sorted(g.nodes))
    assert net.n == len(nodes) == 13
    assert sorted(map(tuple, np.round(net.xy, 6))) == sorted(map(tuple, np.round(nodes, 6)))
    km = _km(net, nodes, nodes)
    routed = 0
    for i, a in enumerate(map(tuple, nodes)):
        for j, b in enumerate(map(tuple, nodes)):
            try:
                want = nx.shortest_path_length(g, a, b, weight="w") / 1000.0
            except nx.NetworkXNoPath:
                assert np.isnan(km[i, j])
                continue
            assert km[i, j] == pytest.approx(want, rel=1e-9, abs=1e-9), (a, b)
            routed += i != j
    assert routed == 13 * 12  # the tile's lines are one connected piece


def test_a_path_measured_by_hand() -> None:
    # west end → east end of the tile's main road: features 1, 3, 12 and 11 (1-based)
    c = _coords()
    by_hand = sum(_measured(c[k]) for k in (0, 2, 11, 10))
    assert by_hand == pytest.approx(295.18, abs=0.01)
    west, east = np.array([[632027.9, 6173241.92]]), np.array([[632306.47, 6173162.08]])
    assert _km(_net(), west, east)[0, 0] == pytest.approx(by_hand / 1000.0, rel=1e-12)
    # a site 30 m off the road, beside the east end: + its straight snap
    site = east + np.array([[0.0, 30.0]])
    assert _km(_net(), west, site)[0, 0] == pytest.approx((by_hand + 30.0) / 1000.0, rel=1e-12)


def test_oneway_lines_route_one_way_only(tmp_path: Path) -> None:
    g = gpd.read_file(ROADS)
    g["oneway"] = ["no"] * 13
    g.loc[11, "oneway"] = "yes"  # east → west only (its digitised direction)
    f = tmp_path / "oneway.geojson"
    g.to_file(f, driver="GeoJSON")
    west, east = np.array([[632027.9, 6173241.92]]), np.array([[632306.47, 6173162.08]])
    net = _net(f)
    assert np.isnan(_km(net, west, east)[0, 0])  # no other way east
    back = sum(_measured(_coords()[k]) for k in (0, 2, 11, 10)) / 1000.0
    assert _km(net, east, west)[0, 0] == pytest.approx(back, rel=1e-12)
    g.loc[11, "oneway"] = "sometimes"
    g.to_file(f, driver="GeoJSON")
    with pytest.raises(InputDataError, match=r"oneway.geojson \(--network\) feature 12: oneway"):
        _net(f)


def test_line_ends_join_within_the_snapping_tolerance(tmp_path: Path) -> None:
    g = gpd.read_file(ROADS)
    # move the first end of feature 3 (a junction with features 12 and 13) 0.6 m east
    c = shapely.get_coordinates(g.geometry.iloc[2], include_z=True)
    c[0, 0] += 0.6
    g.loc[2, "geometry"] = shapely.linestrings(c)
    f = tmp_path / "moved.gpkg"
    g.to_file(f, driver="GPKG")
    west, east = np.array([[632027.9, 6173241.92]]), np.array([[632306.47, 6173162.08]])
    joined = _km(_net(f, snap=1.0), west, east)[0, 0]
    by_hand = sum(_measured(_coords()[k]) for k in (0, 11, 10)) + _measured(c[:, :2])
    assert joined == pytest.approx(by_hand / 1000.0, rel=1e-12)
    assert np.isnan(_km(_net(f, snap=0.5), west, east)[0, 0])  # apart: no path


def test_multilinestrings_give_the_same_network(tmp_path: Path) -> None:
    g = gpd.read_file(ROADS)
    multi = gpd.GeoDataFrame(
        geometry=[shapely.multilinestrings(g.geometry.iloc[:7]), *g.geometry.iloc[7:]], crs=g.crs
    )
    f = tmp_path / "multi.parquet"
    multi.to_parquet(f)
    one, two = road_lines_arrays(ROADS, CRS, 1.0), road_lines_arrays(f, CRS, 1.0)
    for k in one:
        np.testing.assert_allclose(np.sort(one[k]), np.sort(two[k]))


def test_load_caches_and_reprojects(tmp_path: Path) -> None:
    net = load_road_network(ROADS, CRS, tmp_path, 1.0)
    again = load_road_network(ROADS, CRS, tmp_path, 1.0)
    assert [p.name.endswith("-EPSG25832-snap1.npz") for p in tmp_path.glob("*.npz")] == [True]
    np.testing.assert_array_equal(net.xy, again.xy)
    # the same lines in UTM 33N are reprojected to the run's CRS
    f = tmp_path / "utm33.geojson"
    gpd.read_file(ROADS).to_crs("EPSG:25833").to_file(f, driver="GeoJSON")
    np.testing.assert_allclose(np.sort(_net(f).xy, axis=0), np.sort(net.xy, axis=0), atol=1e-6)


@pytest.mark.parametrize(
    ("name", "make", "message"),
    [
        (
            "points.geojson",
            lambda p: gpd.read_file(WATER).boundary.centroid.to_frame("geometry").to_file(p),
            r"points.geojson \(--network\): holds no LineString or MultiLineString features; "
            "give a layer of road centre lines",
        ),
        (
            "nocrs.parquet",
            lambda p: gpd.read_file(ROADS).set_crs(None, allow_override=True).to_parquet(p),
            r"nocrs.parquet \(--network\): no CRS; set the layer's projected CRS "
            r"\(the run's is EPSG:25832\)",
        ),
        (
            "lonlat.geojson",
            lambda p: gpd.read_file(ROADS).to_crs("EPSG:4326").to_file(p),
            r"lonlat.geojson \(--network\): CRS EPSG:4326 is in degrees; reproject",
        ),
        (
            "two.gpkg",
            lambda p: (
                gpd.read_file(ROADS).to_file(p, layer="roads"),
                gpd.read_file(WATER).to_file(p, layer="water"),
            ),
            r"two.gpkg \(--network\): holds 2 layers \['roads', 'water'\]; keep only the road",
        ),
        (
            "null.geojson",
            lambda p: gpd.GeoDataFrame(
                geometry=[gpd.read_file(ROADS).geometry.iloc[0], None], crs=CRS
            ).to_file(p),
            r"null.geojson \(--network\) feature 2: empty geometry; remove the feature",
        ),
        (
            "mixed.geojson",
            lambda p: gpd.GeoDataFrame(
                geometry=[gpd.read_file(ROADS).geometry.iloc[0], shapely.Point(632100, 6173200)],
                crs=CRS,
            ).to_file(p),
            r"mixed.geojson \(--network\) feature 2: a Point, not a line; keep only road lines",
        ),
    ],
    ids=["no-lines", "no-crs", "lonlat", "two-layers", "null", "a-point"],
)
def test_bad_line_layers_give_one_line_errors(
    tmp_path: Path, name: str, make, message: str
) -> None:
    f = tmp_path / name
    make(f)
    with pytest.raises(InputDataError, match=message) as exc:
        load_road_network(f, CRS, None, 1.0)
    assert "\n" not in str(exc.value)


def test_match_routes_on_the_kalundborg_roads(dk_sample_run: Path, tmp_path: Path) -> None:
    # a demolition plan at the west end of the tile's main road, a site at its east end
    plan = tmp_path / "plan.csv"
    plan.write_text(
        "supply_id,x,y,material,t,year_from,year_to,grade\n"
        "harbour-shed,632027.9,6173241.92,brick,40,2030,2031,3\n"
    )
    sites = tmp_path / "sites.csv"
    sites.write_text(
        "demand_id,x,y,material,t,year_from,year_to\n"
        "tile-east,632306.47,6173192.08,brick,25,2030,2032\n"
    )
    r = match_run(
        dk_sample_run,
        sites,
        supply_files=(plan,),
        network=ROADS,
        cache_dir=tmp_path / "cache",
        out=tmp_path / "m",
    )
    m = r.allocation.matches
    row = m[m["supply_id"] == "harbour-shed"].iloc[0]
    by_hand = sum(_measured(_coords()[k]) for k in (0, 2, 11, 10)) + 30.0  # + the site's snap
    assert row["distance_kind"] == "road" and row["t"] == pytest.approx(25.0)
    assert row["km"] == pytest.approx(by_hand / 1000.0, rel=1e-12)
    assert r.manifest["parameters"]["line_snap_m"] == 1.0
    assert str(ROADS) in r.manifest["inputs"]
    assert "road km on geodata/sample/kalundborg_1km_6173_632_roads.geojson" in r.summary


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 5), st.integers(0, 5), st.integers(0, 5), st.integers(0, 5)),
        min_size=1,
        max_size=25,
    ),
    st.integers(0, 2**32 - 1),
)
def test_random_line_layers_route_as_networkx(segments, seed) -> None:
    # segments between the points of a 6 × 6 lattice (100 m apart), each a two-vertex line
    # bent through a random middle vertex: ends meet exactly, lengths are the bent ones
    rng = np.random.default_rng(seed)
    lines, g = [], nx.Graph()
    for x0, y0, x1, y1 in segments:
        a, b = (
            (600_000 + 100.0 * x0, 6_100_000 + 100.0 * y0),
            (600_000 + 100.0 * x1, 6_100_000 + 100.0 * y1),
        )
        mid = ((a[0] + b[0]) / 2 + rng.uniform(-30, 30), (a[1] + b[1]) / 2 + rng.uniform(-30, 30))
        c = np.array([a, mid, b])
        w = _measured(c)
        if a == b or w == 0:
            continue  # a loop carries nothing
        lines.append(shapely.linestrings(c))
        if not g.has_edge(a, b) or g[a][b]["w"] > w:
            g.add_edge(a, b, w=w)
    if not lines:
        return
    arr = network_arrays(np.array(lines, dtype=object), 1.0)
    net = RoadNetwork(arr["x"], arr["y"], arr["u"], arr["v"], arr["w"])
    nodes = np.array(sorted(g.nodes))
    assert net.n == len(nodes)
    km = _km(net, nodes, nodes)
    for i, a in enumerate(map(tuple, nodes)):
        lengths = nx.single_source_dijkstra_path_length(g, a, weight="w")
        for j, b in enumerate(map(tuple, nodes)):
            if b in lengths:
                assert km[i, j] == pytest.approx(lengths[b] / 1000.0, rel=1e-9, abs=1e-9)
            else:
                assert np.isnan(km[i, j])
    np.testing.assert_array_equal(np.isnan(km), np.isnan(km.T))  # both ways
    np.testing.assert_allclose(km, km.T, rtol=1e-12, atol=1e-12)

"""Files of reuse matching: its config table, demand and supply files, the road network
(an OSM extract or a road line layer, cached), and the outputs written atomically into a
folder the user names."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tomllib
import uuid
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import shapely
from pydantic import ValidationError

from mfa.errors import ConfigError, InputDataError, InputNotFoundError, PublishError
from mfa.io.matchqgis import write_match_qgis
from mfa.match.distances import RoadNetwork
from mfa.match.params import MatchParams

__all__ = [
    "load_match_params",
    "load_road_network",
    "read_sites",
    "road_lines_arrays",
    "write_match_outputs",
]

#: ``highway=*`` values a lorry may drive on (osmnx's "drive" network without its service
#: sub-filters; tracks and paths excluded).
DRIVE = frozenset(
    {
        "motorway",
        "motorway_link",
        "trunk",
        "trunk_link",
        "primary",
        "primary_link",
        "secondary",
        "secondary_link",
        "tertiary",
        "tertiary_link",
        "unclassified",
        "residential",
        "living_street",
        "service",
        "road",
    }
)
_NUMERIC = (
    "t",
    "year_from",
    "year_to",
    "min_grade",
    "max_km",
    "grade",
    "capacity_t",
    "handling_kgco2e_per_t",
    "holding_kgco2e_per_t_year",
    "handling_dkk_per_t",
    "holding_dkk_per_t_year",
)


def load_match_params(path: Path, materials: list[str], **overrides: object) -> MatchParams:
    """``config/match.toml`` as :class:`MatchParams`; every material needs an avoided value
    (kg CO2e per t); prices (DKK per t) default to 0 where a material has none.
    ``overrides`` (None = keep) replace settings, e.g. ``max_km`` or ``co2_weight``."""
    if not path.is_file():
        raise InputNotFoundError(f"{path}: file not found; restore it from the repository")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    avoided = {m: float(v["value"]) for m, v in raw.get("avoided_kgco2e_per_t", {}).items()}
    missing = [m for m in materials if m not in avoided]
    if missing:
        raise ConfigError(f"{path}: [avoided_kgco2e_per_t.{missing[0]}] is missing; add it")
    d = raw.get("distance", {})
    cost, objective = raw.get("cost", {}), raw.get("objective", {})
    prices = {}
    for table in ("virgin_dkk_per_t", "end_of_life_dkk_per_t"):
        prices[table] = {m: float(v["value"]) for m, v in raw.get(table, {}).items()}
        unknown = sorted(set(prices[table]) - set(materials))
        if unknown:
            raise ConfigError(f"{path}: [{table}.{unknown[0]}] is not a material; remove it")
    values = {
        "kgco2e_per_tkm": raw.get("transport", {}).get("kgco2e_per_tkm"),
        "detour_factor": d.get("detour_factor"),
        "max_km": d.get("max_km_default"),
        "sensitivity_km": tuple(d.get("sensitivity_km", ())),
        "max_snap_m": d.get("max_snap_m"),
        "line_snap_m": d.get("line_snap_m"),
        "run_grade": raw.get("supply", {}).get("run_grade"),
        "level": raw.get("supply", {}).get("level", "p50"),
        "avoided_kgco2e_per_t": avoided,
        "co2_weight": objective.get("co2_weight", 1.0),
        "cost_weight": objective.get("cost_weight", 0.0),
        "dkk_per_tkm": cost.get("dkk_per_tkm", 0.0),
        "hub_handling_dkk_per_t": cost.get("hub_handling_dkk_per_t", 0.0),
        "hub_holding_dkk_per_t_year": cost.get("hub_holding_dkk_per_t_year", 0.0),
        **prices,
    }
    values.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return MatchParams(**values)
    except ValidationError as exc:
        e = exc.errors()[0]
        where = ".".join(str(x) for x in e["loc"]) or "[objective]"
        msg = str(e["msg"]).removeprefix("Value error, ")
        raise ConfigError(f"{path} (or its override): {where}: {msg}; fix the value") from None


def read_sites(
    path: Path,
    crs: str,
    id_col: str,
    required: tuple[str, ...] = ("material", "t", "year_from", "year_to"),
) -> pd.DataFrame:
    """A demand or supply file as a table with ``x``, ``y`` in the run's CRS (m).

    CSV with ``x``/``y`` columns (run CRS) or a ``geometry`` column of WKT points; or any
    vector file geopandas reads (GeoJSON, GeoPackage, GeoParquet) with its CRS set.
    Polygons count by their representative point.
    """
    if not path.is_file():
        raise InputNotFoundError(f"{path}: file not found; check the path")
    name = str(path)
    if path.suffix.lower() in (".csv", ".txt"):
        try:
            df = pd.read_csv(path, dtype={id_col: "string", "material": "string"})
        except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
            raise InputDataError(f"{path}: not a readable CSV table ({exc}); fix it") from exc
        if {"x", "y"} <= set(df.columns):
            xy = [pd.to_numeric(df[c], errors="coerce") for c in ("x", "y")]
            bad = xy[0].isna() | xy[1].isna()
            if bad.any():
                i = int(bad.to_numpy().argmax())
                raise InputDataError(f"{name} row {i + 1} (line {i + 2}): x or y is not a number")
            df["x"], df["y"] = xy
        elif "geometry" in df.columns:
            try:
                geom = shapely.from_wkt(df["geometry"].astype(str).to_numpy())
            except shapely.errors.GEOSException as exc:
                raise InputDataError(f"{name}: geometry is not WKT ({exc}); fix that row") from exc
            df = _xy_from(gpd.GeoDataFrame(df, geometry=geom, crs=crs), name)
        else:
            raise InputDataError(f"{name}: no x/y or geometry column; add x and y (run CRS, m)")
    else:
        try:
            g = gpd.read_file(path) if path.suffix.lower() != ".parquet" else gpd.read_parquet(path)
        except Exception as exc:
            raise InputDataError(f"{path}: not a readable vector file ({exc})") from exc
        if g.crs is None:
            raise InputDataError(f"{name}: no CRS; set it (the run's is {crs})")
        df = _xy_from(g.to_crs(crs), name)
    missing = [c for c in (id_col, *required) if c not in df.columns]
    if missing:
        raise InputDataError(f"{name}: column(s) {missing} missing; add them")
    for col in _NUMERIC:
        if col in df.columns:
            num = pd.to_numeric(df[col], errors="coerce")
            bad = num.isna() & df[col].notna()
            if bad.any():
                i = int(bad.to_numpy().argmax())
                raise InputDataError(
                    f"{name} row {i + 1} (line {i + 2}): {col} {df[col].iloc[i]!r} is not a number"
                )
            df[col] = num
    if "material" in df.columns:
        df["material"] = df["material"].astype("string").str.strip()
    return df


def _xy_from(g: gpd.GeoDataFrame, name: str) -> pd.DataFrame:
    empty = g.geometry.isna() | g.geometry.is_empty
    if empty.any():
        i = int(empty.to_numpy().argmax())
        raise InputDataError(f"{name} row {i + 1}: empty geometry; give the site a point")
    pts = shapely.point_on_surface(g.geometry.values)
    df = pd.DataFrame(g.drop(columns=g.geometry.name))
    df["x"], df["y"] = shapely.get_x(pts), shapely.get_y(pts)
    return df


#: Extensions of road line layers (the others, ``.osm``/``.osm.bz2``, are OSM XML).
LINE_SUFFIXES = (".geojson", ".json", ".gpkg", ".fgb", ".shp", ".parquet", ".geoparquet")


def load_road_network(
    extract: Path, crs: str, cache_dir: Path | None = None, line_snap_m: float = 1.0
) -> RoadNetwork:
    """The road network of ``extract`` in the run's CRS: an OSM XML extract (``.osm``,
    ``.osm.bz2``; :func:`_osm_arrays`) or a layer of road centre lines (GeoJSON,
    GeoPackage, FlatGeobuf, Shapefile, GeoParquet; :func:`road_lines_arrays`, ends within
    ``line_snap_m`` joined).

    The network's arrays are cached under ``cache_dir`` (``network-<sha256 of the
    file>-<CRS>.npz``; for a line layer ``…-snap<m>.npz``).
    """
    if not extract.is_file():
        raise InputNotFoundError(f"{extract}: network extract not found; check --network")
    lines = extract.suffix.lower() in LINE_SUFFIXES
    digest = hashlib.sha256(extract.read_bytes()).hexdigest()[:16]
    tag = crs.replace(":", "") + (f"-snap{line_snap_m:g}" if lines else "")
    cached = cache_dir / f"network-{digest}-{tag}.npz" if cache_dir else None
    if cached is not None and cached.is_file():
        with np.load(cached) as z:
            return RoadNetwork(z["x"], z["y"], z["u"], z["v"], z["w"])
    arrays = road_lines_arrays(extract, crs, line_snap_m) if lines else _osm_arrays(extract, crs)
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_name(f".{cached.stem}.{uuid.uuid4().hex[:6]}.npz")
        np.savez(tmp, **arrays)
        os.replace(tmp, cached)
    return RoadNetwork(arrays["x"], arrays["y"], arrays["u"], arrays["v"], arrays["w"])


def road_lines_arrays(path: Path, crs: str, snap_m: float) -> dict[str, np.ndarray]:
    """The network arrays of a road line layer (:mod:`mfa.match.roadlines`): its
    LineStrings and the parts of its MultiLineStrings, in a projected CRS (reprojected to
    the run's), with a ``oneway`` column if it has one. One-line errors name the file and
    the feature: no CRS, a geographic CRS, no lines, a feature that is no line or empty, a
    ``oneway`` value not understood, several layers in one file."""
    from mfa.io.safeopen import read_vector
    from mfa.match.roadlines import ONEWAY_VALUES, network_arrays, oneway_codes

    name = f"{path} (--network)"
    if path.suffix.lower() in (".parquet", ".geoparquet"):
        try:
            g = gpd.read_parquet(path)
        except Exception as exc:  # pyarrow / geopandas: not GeoParquet
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise InputDataError(f"{name}: not a readable GeoParquet file ({reason})") from exc
    else:
        if path.suffix.lower() == ".gpkg":
            layers = [str(r[0]) for r in pyogrio.list_layers(path) if r[1] is not None]
            if len(layers) > 1:
                raise InputDataError(
                    f"{name}: holds {len(layers)} layers {layers}; keep only the road lines"
                )
        g = read_vector(path, None, "road line layer", "--network")
    if g.crs is None:
        raise InputDataError(
            f"{name}: no CRS; set the layer's projected CRS (the run's is {crs}), e.g. "
            "with ogr2ogr -a_srs"
        )
    if not g.crs.is_projected:
        raise InputDataError(
            f"{name}: CRS {g.crs.to_string()} is in degrees; reproject the road lines to a "
            f"projected CRS in metres (the run's is {crs})"
        )
    kind = g.geom_type.to_numpy(dtype=object)
    empty = (g.geometry.isna() | g.geometry.is_empty).to_numpy()
    if empty.any():
        i = int(empty.argmax())
        raise InputDataError(f"{name} feature {i + 1}: empty geometry; remove the feature")
    if len(g) == 0 or not np.isin(kind, ["LineString", "MultiLineString"]).any():
        raise InputDataError(
            f"{name}: holds no LineString or MultiLineString features; give a layer of road "
            "centre lines (e.g. GeoDanmark Vejmidte)"
        )
    other = ~np.isin(kind, ["LineString", "MultiLineString"])
    if other.any():
        i = int(other.argmax())
        raise InputDataError(
            f"{name} feature {i + 1}: a {kind[i]}, not a line; keep only road lines"
        )
    oneway = None
    if "oneway" in g.columns:
        oneway, bad = oneway_codes(g["oneway"].to_numpy(dtype=object))
        if bad >= 0:
            raise InputDataError(
                f"{name} feature {bad + 1}: oneway {g['oneway'].iloc[bad]!r} is not one of "
                f"{sorted(ONEWAY_VALUES)}; fix the value"
            )
    g = g.to_crs(crs)
    parts, index = shapely.get_parts(g.geometry.to_numpy(), return_index=True)
    return network_arrays(parts, snap_m, None if oneway is None else oneway[index])


def _osm_arrays(extract: Path, crs: str) -> dict[str, np.ndarray]:
    """The drive network of an OSM XML extract in the run's CRS.

    Only edges with a ``highway`` in :data:`DRIVE` count (``graph_from_xml`` keeps every
    way, buildings too); nodes without such an edge are left out, so points snap to roads.
    Built with osmnx (``graph_from_xml``, simplified, projected).
    """
    import osmnx as ox

    try:
        g = ox.graph_from_xml(extract, simplify=True, retain_all=True)
    except Exception as exc:  # osmnx raises many kinds on bad XML
        raise InputDataError(f"{extract}: not a readable OSM XML extract ({exc})") from exc
    g = ox.project_graph(g, to_crs=crs)
    drive = [
        (u, v, float(d["length"])) for u, v, d in g.edges(data=True) if _drivable(d.get("highway"))
    ]
    if not drive:
        raise InputDataError(f"{extract}: the extract holds no roads; use one with highways")
    nodes = sorted({n for u, v, _ in drive for n in (u, v)})
    pos = {n: i for i, n in enumerate(nodes)}
    return {
        "x": np.array([g.nodes[n]["x"] for n in nodes], dtype=float),
        "y": np.array([g.nodes[n]["y"] for n in nodes], dtype=float),
        "u": np.array([pos[e[0]] for e in drive], dtype=np.int64),
        "v": np.array([pos[e[1]] for e in drive], dtype=np.int64),
        "w": np.array([e[2] for e in drive], dtype=float),
    }


def _drivable(highway: object) -> bool:
    values = highway if isinstance(highway, list) else [highway]
    return any(str(v) in DRIVE for v in values)


def write_match_outputs(
    out: Path,
    run_dir: Path,
    layers: dict[str, gpd.GeoDataFrame | pd.DataFrame],
    tables: dict[str, pd.DataFrame],
    manifest: dict,
    summary_md: str,
    title: str = "Reuse matching",
) -> Path:
    """Write the outputs into ``out`` atomically: into a sibling work folder, then renamed.

    The layers go to ``<name>.parquet`` and, with their styles and a QGIS project
    (``project.qgs``, :mod:`mfa.io.matchqgis`), to ``matching.gpkg``.

    ``out`` must not lie inside a run folder; an existing ``out`` is replaced only if mfa
    match wrote it (it holds ``match.json``), anything else is left alone.
    """
    out = Path(out)
    resolved = out.resolve()
    run_real = run_dir.resolve()
    if resolved == run_real or run_real in resolved.parents:
        raise PublishError(f"{out}: inside the run folder {run_dir}; name a folder outside it")
    if (resolved / "run.json").exists() or resolved.name == "latest":
        raise PublishError(f"{out}: looks like a run folder; name a new folder for the matching")
    ours = (out / "match.json").is_file()
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not ours)):
        raise PublishError(
            f"{out}: exists and was not written by mfa match; name a new or empty folder"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    work = out.parent / f".{out.name}.work-{uuid.uuid4().hex[:8]}"
    work.mkdir()
    try:
        first = True
        for name, layer in layers.items():
            if isinstance(layer, gpd.GeoDataFrame):
                layer.to_parquet(work / f"{name}.parquet", write_covering_bbox=True)
                # GeoPackage 1.3 too: the QGIS of Debian/Ubuntu cannot read GeoParquet
                pyogrio.write_dataframe(
                    layer,
                    work / "matching.gpkg",
                    layer=name,
                    driver="GPKG",
                    geometry_type="LineString" if name == "matches" else "Point",
                    dataset_options={"VERSION": "1.3"} if first else None,
                    use_arrow=True,  # dates as DATE fields (QGIS's temporal controller)
                )
                first = False
            else:
                layer.to_parquet(work / f"{name}.parquet", index=False)
        geo = {k: v for k, v in layers.items() if isinstance(v, gpd.GeoDataFrame)}
        if geo:
            write_match_qgis(work, geo, title)
        for name, table in tables.items():
            table.to_csv(work / f"{name}.csv", index=False)
        (work / "summary.md").write_text(summary_md, encoding="utf-8")
        (work / "match.json").write_text(json.dumps(manifest, indent=2, default=str) + "\n")
        old = None
        if out.exists():
            old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(out, old)
        os.replace(work, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return out

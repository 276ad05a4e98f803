"""``mfa query`` and ``mfa match``: answers from a published run."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from mfa.cli import _fail, _fail_write, _outside_published_runs, app, err, out
from mfa.errors import MfaError

_FORMATS = ("table", "csv", "geojson", "parquet")


def _parse_pair(text: str, option: str) -> tuple[float, float]:
    from mfa.errors import InputDataError

    try:
        a, b = (float(v) for v in text.split(","))
    except ValueError:
        example = "11.09,55.67" if option == "--around-lonlat" else "643000,6170000"
        raise InputDataError(
            f"{option} {text!r}: give two numbers separated by a comma, like {example}"
        ) from None
    return a, b


def _parse_years(text: str | None) -> tuple[int, int] | None:
    from mfa.errors import InputDataError

    if not text:
        return None
    first, _, last = text.partition("-")
    try:
        return int(first), int(last or first)
    except ValueError:
        raise InputDataError(
            f"--years {text!r}: give FIRST-LAST like 2026-2035 (or one year)"
        ) from None


_WKT_FILES = (".wkt", ".txt")


def _wkt(text: str, where: str) -> Any:
    """The shape in WKT text (the run's CRS), or a one-line error."""
    import shapely

    from mfa.errors import InputDataError

    try:
        return shapely.from_wkt(text.strip())
    except shapely.errors.GEOSException as exc:
        reason = str(exc).splitlines()[0]
        what = "not WKT" if where.lower().endswith(_WKT_FILES) else "neither a file nor WKT"
        raise InputDataError(
            f"{where}: {what} ({reason}); give a .wkt, .geojson or .gpkg file, or WKT like "
            "'POLYGON ((x y, ...))' in the run's CRS"
        ) from None


def _within(within: str, crs: str) -> tuple[Any, str]:
    """The area of ``--within`` (a .wkt/.txt file, a vector file, or WKT text) in the run's
    CRS, and the hint for an area that misses the run."""
    import shapely

    from mfa.errors import InputDataError
    from mfa.io.files import MAX_WHOLE_FILE_MB, check_whole_size, path_problem
    from mfa.io.safeopen import VECTOR_DRIVERS, check_text_file, read_vector

    path = Path(within)
    wkt_hint = (
        f"WKT is read as metres in {crs}; for lon/lat save the area as GeoJSON (WGS 84) "
        "or a GeoPackage with its CRS"
    )
    suffix = path.suffix.lower()
    if not (os.path.lexists(path) or suffix in (*_WKT_FILES, *VECTOR_DRIVERS)):
        return _wkt(within, f"--within {within!r}"), wkt_hint
    problem = path_problem(path)
    if problem:
        raise InputDataError(f"--within {path}: {problem}")
    check_whole_size(path, MAX_WHOLE_FILE_MB, "mfa query's limit", "--within area")
    if suffix in _WKT_FILES:
        check_text_file(path, "WKT area", "--within")
        try:
            text = path.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            raise InputDataError(f"{path}: unreadable ({exc}); save it as UTF-8 text") from None
        return _wkt(text, str(path)), wkt_hint
    shapes = read_vector(path, None, "area file", "--within")
    if len(shapes) == 0:
        raise InputDataError(f"{path}: holds no feature; draw the area in it")
    given = shapes.crs
    if given is not None:
        shapes = shapes.to_crs(crs)
    hint = (
        f"the file's CRS is {given.to_string()}: check that its coordinates are in it"
        if given is not None
        else f"the file has no CRS, so its coordinates are read as metres in {crs}: "
        "save it with its CRS"
    )
    return shapely.union_all(shapes.geometry.values), hint


def _query_area(
    manifest: dict,
    around: str | None,
    around_lonlat: str | None,
    radius: float | None,
    within: str | None,
    district: list[str] | None,
) -> tuple[Any, str]:
    """The area a query asks about (None for --district) and the hint for one that misses
    the run: what the user may have mixed up (lon/lat as metres, swapped lon/lat)."""
    from mfa.errors import InputDataError
    from mfa.query import area_around

    crs = manifest["crs"]
    given = [
        o
        for o, v in (
            ("--around", around),
            ("--around-lonlat", around_lonlat),
            ("--within", within),
            ("--district", district),
        )
        if v
    ]
    if not given:
        raise InputDataError(
            "give an area (--around X,Y, --around-lonlat LON,LAT or --within FILE) or --district ID"
        )
    if len(given) > 1:
        raise InputDataError(f"give one of {' and '.join(given)}, not both")
    if radius is not None and not (around or around_lonlat):
        raise InputDataError("--radius goes with --around or --around-lonlat")
    metres = 1000.0 if radius is None else radius
    if around_lonlat:
        from pyproj import CRS, Transformer

        lon, lat = _parse_pair(around_lonlat, "--around-lonlat")
        if not (abs(lon) <= 180 and abs(lat) <= 90):
            raise InputDataError(
                f"--around-lonlat {around_lonlat}: longitude must lie within ±180° and "
                f"latitude within ±90° (LON,LAT in degrees, longitude first)"
            )
        x, y = Transformer.from_crs("EPSG:4326", CRS(crs), always_xy=True).transform(lon, lat)
        hint = "check the point: --around-lonlat takes LON,LAT in degrees (WGS 84)"
        if abs(lon) <= 90:
            hint += f"; if you swapped them: --around-lonlat {lat:g},{lon:g}"
        return area_around(x, y, metres), hint
    if around:
        x, y = _parse_pair(around, "--around")
        if abs(x) <= 180 and abs(y) <= 90:
            hint = (
                f"--around takes metres in {crs}; {x:g},{y:g} look like degrees: did you mean "
                f"--around-lonlat {x:g},{y:g}?"
            )
        else:
            hint = f"--around takes metres in {crs}; for lon/lat use --around-lonlat LON,LAT"
        return area_around(x, y, metres), hint
    if within:
        return _within(within, crs)
    return None, ""


#: The map options of `mfa query` and `mfa match`.
MapOption = Annotated[
    Path | None, typer.Option("--map", help="also write a self-contained HTML map")
]
RoadsOption = Annotated[
    Path | None,
    typer.Option("--roads", help="road lines drawn on the map (default: the pipeline's map table)"),
]
WaterOption = Annotated[
    Path | None,
    typer.Option("--water", help="water areas drawn on the map (default: the pipeline's)"),
]


@app.command()
def query(
    run: Annotated[Path, typer.Argument(help="a run folder, e.g. outputs/dk-sample/latest")],
    within: Annotated[
        str | None, typer.Option("--within", help="polygon: a GeoJSON/GPKG file or WKT (run CRS)")
    ] = None,
    around: Annotated[
        str | None, typer.Option("--around", help="X,Y in the run's CRS (metres)")
    ] = None,
    around_lonlat: Annotated[
        str | None, typer.Option("--around-lonlat", help="LON,LAT in degrees (WGS 84)")
    ] = None,
    radius: Annotated[
        float | None, typer.Option("--radius", help="metres, with --around (default 1000)")
    ] = None,
    district: Annotated[
        list[str] | None, typer.Option("--district", help="district id (repeatable)")
    ] = None,
    material: Annotated[
        list[str] | None, typer.Option("--material", help="material (repeatable); default all")
    ] = None,
    years: Annotated[
        str | None, typer.Option("--years", help="expected outflow in FIRST-LAST, e.g. 2026-2035")
    ] = None,
    scenario: Annotated[str, typer.Option("--scenario")] = "baseline",
    fmt: Annotated[str, typer.Option("--format", help="table | csv | geojson | parquet")] = "table",
    output: Annotated[Path | None, typer.Option("--output", "-o")] = None,
    map_file: MapOption = None,
    roads: RoadsOption = None,
    water: WaterOption = None,
) -> None:
    """How much of each material stands (or comes free in --years) in an area."""
    from mfa.errors import InputDataError
    from mfa.query import availability, run_manifest

    try:
        if fmt not in _FORMATS:
            raise InputDataError(f"--format {fmt!r}: use one of {', '.join(_FORMATS)}")
        if fmt in ("geojson", "parquet") and output is None:
            raise InputDataError(f"--format {fmt} needs --output FILE")
        manifest = run_manifest(run)
        area, hint = _query_area(manifest, around, around_lonlat, radius, within, district)
        span = _parse_years(years)
        for target, option in ((output, "--output"), (map_file, "--map")):
            if target is not None:
                _outside_published_runs(target, option)
        _check_map_options(roads, water)
        result = availability(run, area, district, material, span, scenario, area_hint=hint)
    except MfaError as exc:
        _fail(exc)
    for warning in result.warnings:
        err.print(Text("warning:", style="bold yellow"), Text(warning), highlight=False)
    try:
        _write_answer(result, fmt, output)
    except MfaError as exc:
        _fail(exc)
    except Exception as exc:  # noqa: BLE001 - a full or read-only disk is one line
        _fail_write(exc, output or Path("."), "--output")
    if map_file is None:
        return
    try:
        _write_query_map(
            map_file,
            result,
            run,
            manifest,
            area,
            district,
            material,
            span,
            scenario,
            (roads, water),
        )
    except MfaError as exc:
        _fail(exc)
    except Exception as exc:  # noqa: BLE001
        _fail_write(exc, map_file, "--map")


def _write_answer(result: Any, fmt: str, output: Path | None) -> None:
    """The summary as a table or CSV, or the buildings as GeoJSON / GeoParquet."""
    if fmt == "table":
        table = Table(title=result.description, title_justify="left")
        for col in result.summary.columns:
            table.add_column(col, justify="left" if col == "material" else "right")
        for row in result.summary.itertuples(index=False):
            table.add_row(row[0], *(f"{v:,.1f}" for v in row[1:]))
        out.print(table)
        return
    text = result.summary.rename(columns={"t": "t_central"}).to_csv(index=False)
    if fmt == "csv" and output is None:
        sys.stdout.write(text)
    elif output is not None:
        from mfa.io.files import replaced_atomically

        with replaced_atomically(output) as tmp:  # complete or not there: never half-written
            if fmt == "csv":
                tmp.write_text(text)
            elif fmt == "geojson":
                result.buildings.to_crs("EPSG:4326").to_file(tmp, driver="GeoJSON")
            else:
                result.buildings.to_parquet(tmp, write_covering_bbox=True)
        if fmt != "csv":
            out.print(f"{len(result.buildings):,} buildings written to {output}")


def _write_query_map(
    map_file: Path,
    result: Any,
    run: Path,
    manifest: dict,
    area: Any,
    district: list[str] | None,
    material: list[str] | None,
    years: tuple[int, int] | None,
    scenario: str,
    layers: tuple[Path | None, Path | None] = (None, None),
) -> None:
    """The offline HTML map of a query's answer, over the run's districts and buildings
    (and roads and water: ``layers``, else the pipeline's)."""
    import shapely

    from mfa.io.htmlmap import map_quantity, query_frame, write_query_map
    from mfa.io.svgmap import run_context
    from mfa.query import run_layer

    column = f"{material[0]}_t" if material and len(material) == 1 else None
    shown = result.buildings.copy()
    if column is None:
        column = "mass_t"
        cols = [c for c in shown.columns if c.endswith("_t")]
        shown[column] = shown[cols].sum(axis=1)
    if area is None and district:  # the districts asked about are the area
        d = run_layer(run, manifest, "districts.parquet", filters=[("district_id", "in", district)])
        area = shapely.union_all(d.geometry.dropna().values)
    frame = query_frame(area, shown)
    context = _with_map_layers(
        run_context(run, manifest, frame.bounds, shown["building_id"]), manifest, layers, frame
    )
    stock_year = (manifest.get("flows") or {}).get("base_year")
    write_query_map(
        map_file,
        area=area,
        buildings=shown,
        summary=result.summary,
        title=result.description,
        value_column=column,
        quantity=map_quantity(years, scenario, stock_year),
        crs=manifest["crs"],
        context=context,
        attribution=f"mfa {manifest['pipeline']} run {manifest['run_id']}: data sources, "
        "licences and attribution are listed in the run's run.json",
    )
    out.print(f"map written to {map_file}")


@app.command()
def match(
    run: Annotated[Path, typer.Argument(help="a run folder, e.g. outputs/dk-sample/latest")],
    demand: Annotated[
        Path, typer.Option("--demand", help="sites: CSV (x,y in the run CRS) or a vector file")
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="new folder to write")],
    supply: Annotated[
        list[Path] | None, typer.Option("--supply", help="extra supply file (repeatable)")
    ] = None,
    years: Annotated[
        str | None, typer.Option("--years", help="run supply in FIRST-LAST (default: demand's)")
    ] = None,
    max_km: Annotated[
        float | None, typer.Option("--max-km", help="haul limit, km (default config/match.toml)")
    ] = None,
    network: Annotated[
        Path | None,
        typer.Option(
            "--network",
            help="road network for road km: OSM XML extract, or road lines (.geojson, "
            ".gpkg, .parquet) in a projected CRS",
        ),
    ] = None,
    hubs: Annotated[
        Path | None, typer.Option("--hubs", help="hubs file (storage/processing sites)")
    ] = None,
    unit: Annotated[str, typer.Option("--unit", help="building | grid | district")] = "grid",
    cell_size: Annotated[float, typer.Option("--cell-size", help="grid cell, m")] = 250.0,
    scenario: Annotated[str, typer.Option("--scenario")] = "baseline",
    solver: Annotated[str, typer.Option("--solver", help="ortools | networkx | highs")] = "ortools",
    weights: Annotated[
        str | None,
        typer.Option(
            "--weights",
            help="CO2,COST: minimise CO2 × kg CO2e + COST × DKK (default config: 1,0)",
        ),
    ] = None,
    map_file: MapOption = None,
    roads: RoadsOption = None,
    water: WaterOption = None,
) -> None:
    """Allocate what comes free to the --demand sites by road distance and net CO2 (and,
    with --weights, net cost)."""
    from mfa.match import match_run

    try:
        span = _parse_years(years)
        if map_file is not None:
            _outside_published_runs(map_file, "--map")
        _check_map_options(roads, water)
        pair = None
        if weights:
            try:
                w_co2, w_cost = (float(v) for v in weights.split(","))
                pair = (w_co2, w_cost)
            except ValueError:
                raise typer.BadParameter("--weights looks like 1,0.5 (CO2, cost)") from None
        result = match_run(
            run,
            demand,
            tuple(supply or ()),
            span,
            max_km,
            network,
            unit,
            cell_size,
            scenario,
            solver,
            out=output,
            cache_dir=Path("geodata/cache"),
            hubs=hubs,
            weights=pair,
        )
    except MfaError as exc:
        _fail(exc)
    except Exception as exc:  # noqa: BLE001 - a full or read-only disk is one line
        _fail_write(exc, output, "-o", only_disk=True)
    out.print(result.summary, highlight=False)
    out.print(f"written to {result.out} in {result.manifest['seconds']:.1f} s")
    if map_file is not None:
        try:
            _write_match_map(map_file, run, result, demand.name, (roads, water))
        except MfaError as exc:
            _fail(exc)
        except Exception as exc:  # noqa: BLE001
            _fail_write(exc, map_file, "--map")


def _write_match_map(
    map_file: Path,
    run: Path,
    result: Any,
    demand_name: str,
    layers: tuple[Path | None, Path | None] = (None, None),
) -> None:
    """The offline HTML map of a matching, over the run's districts (and roads and water:
    ``layers``, else the pipeline's)."""
    from mfa.io.matchmap import match_frame, write_match_map
    from mfa.io.svgmap import MapContext, run_context
    from mfa.match.outputs import totals_by_material
    from mfa.query import run_manifest

    a, info = result.allocation, result.manifest
    manifest = run_manifest(run)
    frame = match_frame(a.matches, a.coverage, result.hubs)
    context = run_context(run, manifest, frame.bounds)
    context = MapContext(context.districts, None)  # the supply is drawn as lines
    context = _with_map_layers(context, manifest, layers, frame)
    write_match_map(
        map_file,
        matches=a.matches,
        coverage=a.coverage,
        totals=totals_by_material(a),
        title=f"Reuse matching: {demand_name} against {manifest['pipeline']}",
        attribution=f"mfa {manifest['pipeline']} run {manifest['run_id']}: data sources, "
        "licences and attribution are listed in the run's run.json",
        years=tuple(info["years"]),
        scenario=info["scenario"],
        crs=manifest["crs"],
        context=context,
        hubs=result.hubs,
    )
    out.print(f"map written to {map_file}")


def _check_map_options(roads: Path | None, water: Path | None) -> None:
    """``--roads`` / ``--water``: readable lines / polygons with a CRS, before any work."""
    from mfa.io.maplayers import check_map_layer

    for kind, path in (("roads", roads), ("water", water)):
        if path is not None:
            check_map_layer(path, kind, f"--{kind}")


def _with_map_layers(
    context: Any, manifest: dict, layers: tuple[Path | None, Path | None], frame: Any
) -> Any:
    """``context`` with the roads and water of :func:`mfa.io.maplayers.with_map_layers`;
    its warnings printed."""
    from mfa.io.maplayers import with_map_layers

    context, warnings = with_map_layers(context, manifest, layers, frame.bounds)
    for warning in warnings:
        err.print(
            Text("warning:", style="bold yellow"), Text(warning), highlight=False, soft_wrap=True
        )
    return context

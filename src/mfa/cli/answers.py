"""``mfa query`` and ``mfa match``: answers from a published run."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from mfa.cli import _fail, _outside_published_runs, app, out
from mfa.errors import MfaError


def _parse_pair(text: str, what: str) -> tuple[float, float]:
    try:
        a, b = (float(v) for v in text.split(","))
    except ValueError:
        raise typer.BadParameter(f"{what} must be two numbers like 643000,6170000") from None
    return a, b


def _wkt_file(path: Path) -> Any:
    """The polygon in a WKT text file (the run's CRS), or a one-line error."""
    import shapely

    from mfa.errors import InputDataError

    try:
        return shapely.from_wkt(path.read_text(encoding="utf-8-sig").strip())
    except (shapely.errors.GEOSException, UnicodeDecodeError) as exc:
        reason = str(exc).splitlines()[0]
        raise InputDataError(
            f"{path}: not WKT ({reason}); write e.g. POLYGON ((x y, ...))"
        ) from None


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
    radius: Annotated[float, typer.Option("--radius", help="metres, with --around")] = 1000.0,
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
    map_file: Annotated[
        Path | None, typer.Option("--map", help="also write a self-contained HTML map")
    ] = None,
) -> None:
    """How much of each material stands (or comes free in --years) in an area."""
    import shapely
    from pyproj import CRS, Transformer

    from mfa.query import area_around, availability

    try:
        from mfa.query import run_manifest

        manifest = run_manifest(run)
        crs = manifest.get("crs")
        area = None
        if around or around_lonlat:
            if around_lonlat:
                lon, lat = _parse_pair(around_lonlat, "--around-lonlat")
                x, y = Transformer.from_crs("EPSG:4326", CRS(crs), always_xy=True).transform(
                    lon, lat
                )
            else:
                x, y = _parse_pair(around, "--around")  # type: ignore[arg-type]
            area = area_around(x, y, radius)
        elif within:
            if Path(within).is_file() and Path(within).suffix.lower() in (".wkt", ".txt"):
                area = _wkt_file(Path(within))
            elif Path(within).is_file():
                from mfa.io.safeopen import read_vector

                shapes = read_vector(Path(within), None, "area file", "--within")
                if shapes.crs is not None and crs:
                    shapes = shapes.to_crs(crs)
                area = shapely.union_all(shapes.geometry.values)
            else:
                try:
                    area = shapely.from_wkt(within)
                except shapely.errors.GEOSException as exc:
                    raise typer.BadParameter(
                        f"--within is neither a file nor WKT ({exc})"
                    ) from None
        span = None
        if years:
            try:
                first, _, last = years.partition("-")
                span = (int(first), int(last or first))
            except ValueError:
                raise typer.BadParameter("--years looks like 2026-2035") from None
        for target, option in ((output, "--output"), (map_file, "--map")):
            if target is not None:
                _outside_published_runs(target, option)
        result = availability(run, area, district, material, span, scenario)
    except MfaError as exc:
        _fail(exc)
    if fmt == "table":
        table = Table(title=result.description, title_justify="left")
        for col in result.summary.columns:
            table.add_column(col, justify="left" if col == "material" else "right")
        for row in result.summary.itertuples(index=False):
            table.add_row(row[0], *(f"{v:,.1f}" for v in row[1:]))
        out.print(table)
    elif fmt == "csv":
        text = result.summary.rename(columns={"t": "t_central"}).to_csv(index=False)
        if output:
            output.write_text(text)
        else:
            sys.stdout.write(text)
    elif fmt in ("geojson", "parquet"):
        if output is None:
            _fail(typer.BadParameter(f"--format {fmt} needs --output FILE"))
        if fmt == "geojson":
            result.buildings.to_crs("EPSG:4326").to_file(output, driver="GeoJSON")
        else:
            result.buildings.to_parquet(output, write_covering_bbox=True)
        out.print(f"{len(result.buildings):,} buildings written to {output}")
    else:
        _fail(typer.BadParameter("--format is table, csv, geojson or parquet"))
    if map_file is not None:
        from mfa.io.htmlmap import write_query_map

        column = f"{material[0]}_t" if material and len(material) == 1 else None
        shown = result.buildings.copy()
        if column is None:
            column = "mass_t"
            cols = [c for c in shown.columns if c.endswith("_t")]
            shown[column] = shown[cols].sum(axis=1)
        write_query_map(
            map_file,
            area=area,
            buildings=shown,
            summary=result.summary,
            title=result.description,
            value_column=column,
            attribution=f"mfa {manifest.get('pipeline', '')} run {manifest.get('run_id', '')}: "
            "data sources, licences and attribution are listed in the run's run.json",
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
        Path | None, typer.Option("--network", help="OSM XML extract for road km")
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
    map_file: Annotated[
        Path | None, typer.Option("--map", help="also write a self-contained HTML map")
    ] = None,
) -> None:
    """Allocate what comes free to the --demand sites by road distance and net CO2 (and,
    with --weights, net cost)."""
    from mfa.match import match_run

    try:
        span = None
        if years:
            try:
                first, _, last = years.partition("-")
                span = (int(first), int(last or first))
            except ValueError:
                raise typer.BadParameter("--years looks like 2026-2035") from None
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
    out.print(result.summary, highlight=False)
    out.print(f"written to {result.out} in {result.manifest['seconds']:.1f} s")
    if map_file is not None:
        from mfa.io.matchmap import write_match_map
        from mfa.match.outputs import totals_by_material

        a = result.allocation
        run_info = result.manifest["run"]
        write_match_map(
            map_file,
            matches=a.matches,
            coverage=a.coverage,
            totals=totals_by_material(a),
            title=f"Reuse matching: {demand.name} against {run_info['pipeline']}",
            attribution=f"mfa {run_info['pipeline']} run {run_info['run_id']}: data sources, "
            "licences and attribution are listed in the run's run.json",
        )
        out.print(f"map written to {map_file}")

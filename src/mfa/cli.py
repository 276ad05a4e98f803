"""The ``mfa`` command line."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from mfa.errors import MfaError

app = typer.Typer(
    name="mfa",
    help="Urban material stocks and flows from building registers and footprints.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True)
out = Console()


def prefect_defaults(home: Path | None = None) -> None:
    """Environment defaults that make Prefect's ephemeral local API work on small machines.

    A project-local ``PREFECT_HOME`` keeps run history out of the user's home; creating the
    SQLite database takes ~25 s on 2 cores, more than Prefect's default start-up limit.
    Values already set in the environment win.
    """
    os.environ.setdefault("PREFECT_HOME", str((home or Path.cwd()) / ".prefect"))
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "mfa")


def _fail(exc: BaseException | str) -> None:
    # the message may quote input text ('[/b]'): never read as Rich markup
    err.print(Text("error:", style="bold red"), Text(str(exc)), highlight=False, soft_wrap=True)
    raise typer.Exit(code=2)


def _summary(run_dir: Path, seconds: float, unchanged: bool = False) -> None:
    manifest = json.loads((run_dir / "run.json").read_text())
    rc = manifest["row_counts"]
    table = Table(title=f"{manifest['pipeline']}: stock", title_justify="left")
    band = (manifest.get("uncertainty") or {}).get("totals_t", {})
    q = [f"p{round(x):02d}" for x in (manifest.get("uncertainty") or {}).get("percentiles", [])]
    table.add_column("material")
    table.add_column("t", justify="right")
    for x in q:
        table.add_column(f"{x} t", justify="right")
    for key, value in manifest["totals_t"].items():
        name = key.removesuffix("_t")
        extra = [f"{band.get(f'{name}_t_{x}', float('nan')):,.0f}" for x in q]
        table.add_row(name, f"{value:,.0f}", *extra)
    out.print(table)
    quality = Table(title="data quality (share of buildings)", title_justify="left")
    for col in ("attribute", "observed", "imputed", "missing"):
        quality.add_column(col, justify="left" if col == "attribute" else "right")
    for attr, shares in manifest.get("quality", {}).items():
        if attr == "match":
            continue
        quality.add_row(attr, *(f"{shares[k]:.0%}" for k in ("observed", "imputed", "missing")))
    out.print(quality)
    _print_guesses(out, manifest)
    matches = manifest.get("matches")
    if matches:
        out.print(
            f"conflation: {matches['register_match_rate']:.0%} of register buildings matched "
            f"({matches['matched_by_id']:,} by id, {matches['matched_by_point']:,} by point, "
            f"{matches['register_only']:,} without footprint); "
            f"{matches['footprint_match_rate']:.0%} of footprints matched"
        )
    flows = (manifest.get("flows") or {}).get("summary")
    if flows:
        horizon = manifest["flows"]["base_year"] + 10
        out.print(f"expected demolition outflow {manifest['flows']['base_year'] + 1}–{horizon}:")
        for name, s in flows.items():
            t = s["outflow_t_next_10_years"]
            rate = s["demolition_rate_per_year"]
            out.print(
                f"  {name:<14} {t.get('mass', 0):>10,.0f} t "
                f"(concrete {t.get('concrete', 0):,.0f} t, brick {t.get('brick', 0):,.0f} t, "
                f"wood {t.get('wood', 0):,.0f} t), {rate:.2%} of floor area a year",
                highlight=False,
            )
    reasons = manifest["dropped"]["counts_by_reason"][:5]
    if reasons:
        out.print("left out, most frequent reasons:")
        for r in reasons:
            out.print(f"  {r['count']:>6,}  {r['reason']}", highlight=False)
    out.print(
        f"{rc['buildings']:,} buildings, {rc['districts']:,} districts, "
        f"{rc['dropped']:,} records left out (reasons in dropped.csv), "
        f"{manifest['total_gfa_m2']:,.0f} m² floor area"
    )
    latest = run_dir.parent / "latest"
    if unchanged:
        out.print(f"nothing published: {latest} is still {run_dir} (checked in {seconds:.1f} s)")
    else:
        out.print(f"published {run_dir}  (latest → {latest}) in {seconds:.1f} s")


@contextmanager
def _progress_bar() -> Iterator[None]:
    """A progress bar per engine step on stderr while a plain run computes."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress

    from mfa.executor import PROGRESS

    bars: dict[str, Any] = {}
    with Progress(
        "[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(), console=err
    ) as bar:

        def show(what: str, done: int, total: int) -> None:
            if what not in bars:
                bars[what] = bar.add_task(what, total=total)
            bar.update(bars[what], completed=done, total=total)

        token = PROGRESS.set(show)
        try:
            yield
        finally:
            PROGRESS.reset(token)


def _os_error(exc: OSError) -> str:
    """An OSError outside mfa's own checks as one line: what, where, and what is safe."""
    where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
    what = exc.strerror or (str(exc).splitlines() or [type(exc).__name__])[0]
    return (
        f"{where}{what} ({type(exc).__name__}); nothing was published and the previous "
        "'latest' is unchanged: free space, fix the output folder (--output-dir) or the "
        "compute.scheduler, then run again"
    )


def _outside_published_runs(target: Path, option: str) -> None:
    """Refuse to write ``target`` inside a published run folder (one holding the
    ``run.json`` of the run it is named after): published runs are never changed."""
    from mfa.errors import InputDataError

    for folder in Path(os.path.abspath(target)).parents:
        manifest = folder / "run.json"
        if not manifest.is_file():
            continue
        try:
            run_id = json.loads(manifest.read_text()).get("run_id")
        except (OSError, ValueError, AttributeError):
            continue
        if run_id == folder.resolve().name:
            raise InputDataError(
                f"{target}: inside the published run {folder}; mfa never writes into a "
                f"published run: choose another {option}"
            )


def _interrupted(pipeline: Path, output_dir: Path | None) -> None:
    """Ctrl-C (or SIGTERM): one line saying what 'latest' is now, exit code 130."""
    err.print(
        Text(
            f"interrupted: {pipeline} was not finished; 'latest' is a complete earlier run "
            "(or this one, if it was already switched)"
        ),
        highlight=False,
        soft_wrap=True,
    )
    raise typer.Exit(code=130)


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (a service manager, `kill`) ends a run like Ctrl-C: clean-up and atexit
    handlers run (Prefect stops its temporary server) instead of dying mid-way."""
    import signal

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@app.command()
def run(
    pipeline: Annotated[Path, typer.Argument(help="pipeline file, e.g. pipelines/dk-sample.toml")],
    output_dir: Annotated[
        Path | None, typer.Option("--output-dir", "-o", help="output root (default: outputs/)")
    ] = None,
    no_prefect: Annotated[
        bool, typer.Option("--no-prefect", help="run the steps without Prefect")
    ] = False,
    force: Annotated[
        bool,
        typer.Option(
            "--force/--if-changed",
            help="recompute even if nothing changed (default), or only if an input, the "
            "config or the code changed since the latest run",
        ),
    ] = True,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Run a pipeline and publish its layers under OUTPUT_DIR/<name>/latest/."""
    logging.basicConfig(
        level=logging.INFO if verbose or no_prefect else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )

    t0 = time.perf_counter()
    if output_dir is not None:
        try:
            _outside_published_runs(output_dir / "x", "--output-dir")
        except MfaError as exc:
            _fail(exc)
    with _sigterm_as_interrupt():
        run_dir = _run(pipeline, output_dir, no_prefect, force, t0)
    if run_dir is not None:
        _summary(run_dir, time.perf_counter() - t0)


def _run(
    pipeline: Path, output_dir: Path | None, no_prefect: bool, force: bool, t0: float
) -> Path | None:
    """The run behind ``mfa run``: the published folder, or None when nothing changed."""
    from mfa.config import load_pipeline

    try:
        load_pipeline(pipeline)  # fail fast, before any engine starts
        if not force:
            from mfa.incremental import unchanged_run

            previous = unchanged_run(pipeline, output_dir)
            if previous is not None:
                out.print(f"unchanged since run {previous.name}: nothing recomputed")
                _summary(previous, time.perf_counter() - t0, unchanged=True)
                return None
        if no_prefect:
            from mfa.run import run_pipeline

            with _progress_bar():
                run_dir = run_pipeline(pipeline, output_dir, force=force)
        else:
            prefect_defaults()
            from flows.pipeline import mfa_pipeline

            state = mfa_pipeline(
                str(pipeline.resolve()),
                None if output_dir is None else str(output_dir.resolve()),
                force,
                return_state=True,
            )
            run_dir = Path(state.result(raise_on_failure=True))
    except MfaError as exc:
        _fail(exc)
    except OSError as exc:  # full disk, read-only or unusable output root, lost scheduler
        _fail(_os_error(exc))
    except KeyboardInterrupt:
        _interrupted(pipeline, output_dir)
    return run_dir


@app.command()
def validate(
    pipeline: Annotated[list[Path], typer.Argument(help="pipeline files to check")],
) -> None:
    """Check pipeline files (keys, types, paths, CRS) without reading any data."""
    from mfa.config import load_pipeline

    for p in pipeline:
        try:
            load_pipeline(p)
        except MfaError as exc:
            _fail(exc)
        out.print(f"{p}: ok")


@app.command()
def serve(
    pipeline: Annotated[list[Path], typer.Argument(help="pipeline files to schedule")],
    output_dir: Annotated[
        Path | None, typer.Option("--output-dir", "-o", help="output root (default: outputs/)")
    ] = None,
) -> None:
    """Serve the pipelines as Prefect deployments on their cron schedules (runs until stopped).

    Point PREFECT_API_URL at a Prefect server (e.g. `prefect server start --host 127.0.0.1`)
    to see and trigger the runs in its UI.
    """
    from mfa.config import load_pipeline

    try:
        for p in pipeline:
            load_pipeline(p)
    except MfaError as exc:
        _fail(exc)
    prefect_defaults()
    from flows.deployments import deployments_for
    from prefect import serve as prefect_serve

    prefect_serve(*deployments_for([p.resolve() for p in pipeline], output_dir))


@app.command()
def synth(
    buildings: Annotated[int, typer.Option("--buildings", "-n", help="number of buildings")],
    output: Annotated[Path, typer.Option("--output", "-o", help="folder to write")],
    seed: Annotated[int, typer.Option("--seed")] = 1,
    like: Annotated[
        Path, typer.Option("--like", help="register whose distributions to copy")
    ] = Path("geodata/sample/bbr_bygning_2020.parquet"),
    config: Annotated[Path, typer.Option("--config", help="the config/ folder")] = Path("config"),
) -> None:
    """Write a synthetic city (register with footprints, districts) and its pipeline.toml."""
    from mfa.synth import write_synthetic_city

    if not like.is_file():
        _fail(FileNotFoundError(f"{like}: --like register not found; run from the repository root"))
    if not (config / "archetypes").is_dir():
        _fail(FileNotFoundError(f"{config}: not a config folder; pass --config"))
    t0 = time.perf_counter()
    pipeline = write_synthetic_city(buildings, seed, output, like, config)
    seconds = time.perf_counter() - t0
    out.print(f"{buildings:,} buildings written in {seconds:.1f} s; run: mfa run {pipeline}")


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
def pull(
    pipeline: Annotated[Path, typer.Argument(help="pipeline file with url/protocol sources")],
    output_dir: Annotated[
        Path | None, typer.Option("--output-dir", "-o", help="output root (its run lock)")
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Pull the pipeline's remote sources into the snapshot store, only what changed."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from mfa.config import load_pipeline
    from mfa.pull import pull_pipeline, pulled_sources
    from mfa.run import run_lock

    try:
        p = load_pipeline(pipeline)
        if not pulled_sources(p):
            out.print(f"{pipeline}: no source gives url and protocol: nothing to pull")
            return
        with run_lock(pipeline, output_dir):  # not while a run of it reads the snapshots
            records = pull_pipeline(p)
    except MfaError as exc:
        _fail(exc)
    table = Table(title=f"{p.name}: pulled", title_justify="left")
    for col in ("source", "protocol", "changed", "requests", "rows", "snapshot"):
        table.add_column(col)
    for r in records:
        rows = "" if r["rows"] is None else f"{r['rows']:,}"
        changed = "new" if r["changed"] else "unchanged"
        snap = r["snapshot"]["path"]
        table.add_row(r["role"], r["protocol"], changed, str(r["requests"]), rows, snap)
    out.print(table)
    for r in records:
        if r["warning"]:
            err.print(f"[yellow]warning:[/] {r['role']}: {r['warning']}", highlight=False)


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
    solver: Annotated[str, typer.Option("--solver", help="ortools | networkx")] = "ortools",
    map_file: Annotated[
        Path | None, typer.Option("--map", help="also write a self-contained HTML map")
    ] = None,
) -> None:
    """Allocate what comes free to the --demand sites by road distance and net CO2."""
    from mfa.match import match_run

    try:
        span = None
        if years:
            try:
                first, _, last = years.partition("-")
                span = (int(first), int(last or first))
            except ValueError:
                raise typer.BadParameter("--years looks like 2026-2035") from None
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


def _print_guesses(console: Console, manifest: dict) -> None:
    """What the run guessed by tonnes, and its warnings (as in report.md)."""
    from mfa.report import guess_lines

    guessed = manifest.get("guessed") or {}
    if guessed:
        console.print(
            "imputed share of the tonnes: "
            + ", ".join(f"{a} {g['imputed_mass']:.0%}" for a, g in guessed.items()),
            highlight=False,
        )
    for line in guess_lines(manifest):
        console.print(line.removeprefix("- ").replace("**", "").replace("`", ""), highlight=False)


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())

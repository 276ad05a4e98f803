"""``mfa run``, ``validate``, ``serve`` and ``synth``: running pipelines and what a run prints."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from mfa.cli import (
    _fail,
    _fail_write,
    _os_error,
    _outside_published_runs,
    app,
    err,
    out,
    prefect_defaults,
)
from mfa.cli.prefect_server import temporary_server
from mfa.errors import MfaError


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
    as_of: Annotated[
        str | None,
        typer.Option(
            "--as-of",
            metavar="YYYY-MM-DD",
            help="re-run that day: every pulled source reads the newest snapshot published "
            "on or before it, without network",
        ),
    ] = None,
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
        run_dir = _run(pipeline, output_dir, no_prefect, force, t0, as_of)
        if run_dir is None:
            return
        try:  # the run is published: a signal now only stops the summary
            _summary(run_dir, time.perf_counter() - t0)
        except KeyboardInterrupt:
            err.print(
                Text(f"interrupted: {run_dir} is published; its summary was not printed"),
                highlight=False,
                soft_wrap=True,
            )
            raise typer.Exit(code=130) from None


def _run(
    pipeline: Path,
    output_dir: Path | None,
    no_prefect: bool,
    force: bool,
    t0: float,
    as_of: str | None = None,
) -> Path | None:
    """The run behind ``mfa run``: the published folder, or None when nothing changed."""
    from mfa.config import load_pipeline

    try:
        load_pipeline(pipeline, as_of)  # fail fast, before any engine starts
        if not force:
            from mfa.incremental import unchanged_run

            previous = unchanged_run(pipeline, output_dir, as_of)
            if previous is not None:
                out.print(f"unchanged since run {previous.name}: nothing recomputed")
                _summary(previous, time.perf_counter() - t0, unchanged=True)
                return None
        if no_prefect:
            from mfa.run import run_pipeline

            with _progress_bar():
                run_dir = run_pipeline(pipeline, output_dir, force=force, as_of=as_of)
        else:
            prefect_defaults()
            with temporary_server() as server:  # starts while Prefect is imported
                _one_line_errors_in_prefect_logs()
                from flows.pipeline import mfa_pipeline

                if server is not None:
                    server.wait_ready(_startup_timeout())
                state = mfa_pipeline(
                    str(pipeline.resolve()),
                    None if output_dir is None else str(output_dir.resolve()),
                    force,
                    as_of,
                    return_state=True,
                )
                run_dir = Path(state.result(raise_on_failure=True))
    except MfaError as exc:
        _fail(exc)
    except OSError as exc:  # full disk, read-only or unusable output root, lost scheduler
        _fail(_os_error(exc, output_dir))
    except KeyboardInterrupt:
        _interrupted(pipeline, output_dir)
    except RuntimeError as exc:
        if "ephemeral Prefect API" not in str(exc):
            raise
        _fail(
            f"{str(exc).rstrip('.')} within PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="
            f"{os.environ.get('PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS')} s; nothing "
            "was run and 'latest' is unchanged: run again, raise that timeout on a busy "
            "machine, point PREFECT_API_URL at a running server, or use --no-prefect"
        )
    return run_dir


class _OneLineErrors(logging.Filter):
    """Keeps the message of a Prefect task or flow run's failure but drops its traceback
    when the error is one mfa reports as one line itself (its own errors, a full,
    over-quota or read-only disk): the CLI prints that line, as without Prefect."""

    def filter(self, record: logging.LogRecord) -> bool:
        from mfa.io.storage import storage_errno

        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None and (isinstance(exc, MfaError) or storage_errno(exc) is not None):
            record.exc_info = None
            record.exc_text = None
        return True


def _one_line_errors_in_prefect_logs() -> None:
    """Install :class:`_OneLineErrors` on the loggers of Prefect's run engines."""
    for name in ("prefect.task_runs", "prefect.flow_runs"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _OneLineErrors) for f in logger.filters):
            logger.addFilter(_OneLineErrors())


def _startup_timeout() -> float:
    """Seconds to wait for the temporary Prefect server (Prefect's own setting)."""
    return float(os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS") or 120)


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


def _crash_orphans(deployments: list[str], when: str) -> None:
    """Mark Crashed the runs of ``deployments`` left Running or Pending with no live
    process (:func:`flows.orphans.crash_orphans`), a line each; an API that does not
    answer is a warning, never a traceback."""
    from flows.orphans import crash_orphans

    try:
        lines = crash_orphans(deployments, when)
    except Exception as exc:  # noqa: BLE001 - serving matters more than the clean-up
        reason = (str(exc).splitlines() or [type(exc).__name__])[0]
        err.print(
            Text("warning:", style="bold yellow"),
            Text(f"mfa serve ({when}): could not look for runs left without a process ({reason})"),
            highlight=False,
            soft_wrap=True,
        )
        return
    for line in lines:
        err.print(Text(f"mfa serve ({when}): {line}"), highlight=False, soft_wrap=True)


class _CancelledAtExit(logging.Filter):
    """Drops the event loop's reports of tasks cancelled while ``mfa serve`` stops."""

    def filter(self, record: logging.LogRecord) -> bool:
        import asyncio

        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, asyncio.CancelledError)


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
        prefect_defaults()
    except MfaError as exc:
        _fail(exc)
    import warnings

    # Prefect's runner calls its async stop() from its SIGTERM handler without awaiting it
    # (it pauses the deployments all the same): a warning a user can do nothing about
    warnings.filterwarnings("ignore", "coroutine 'Runner.astop' was never awaited")
    # and exits from that handler, cancelling its control channel's open connections: the
    # event loop then logs each cancelled connection as an error with a traceback
    logging.getLogger("asyncio").addFilter(_CancelledAtExit())
    with _sigterm_as_interrupt():  # until Prefect's runner takes SIGTERM over
        try:
            with temporary_server() as server:  # starts while Prefect is imported
                from flows.deployments import deployments_for
                from prefect import serve as prefect_serve

                served = deployments_for([p.resolve() for p in pipeline], output_dir)
                if server is not None:
                    server.wait_ready(_startup_timeout())
                names = [d.name for d in served]
                _crash_orphans(names, "start")
                try:
                    prefect_serve(*served)
                finally:  # SIGTERM (the runner's sys.exit), Ctrl-C, or an error
                    _crash_orphans(names, "exit")
        except RuntimeError as exc:
            if "ephemeral Prefect API" not in str(exc):
                raise
            _fail(
                f"{str(exc).rstrip('.')} within PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"
                f"={_startup_timeout():g} s; nothing was served: run again, raise that timeout "
                "on a busy machine, or point PREFECT_API_URL at a running server"
            )
        except KeyboardInterrupt:
            # before the runner started (the temporary API still starting): leaving the
            # temporary_server block stopped that server
            err.print(
                "mfa serve stopped before it served anything; nothing was run", highlight=False
            )


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
    try:
        pipeline = write_synthetic_city(buildings, seed, output, like, config)
    except MfaError as exc:  # a folder mfa synth did not write
        _fail(exc)
    except Exception as exc:  # noqa: BLE001 - a full or read-only disk is one line
        _fail_write(
            exc,
            output / "x",
            "--output",
            only_disk=True,
            outcome=f"nothing was written: {output} is as it was",
        )
    seconds = time.perf_counter() - t0
    out.print(f"{buildings:,} buildings written in {seconds:.1f} s; run: mfa run {pipeline}")

"""``mfa pull``: remote sources into the snapshot store."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from mfa.cli import _fail, app, err, out
from mfa.errors import MfaError


@app.command()
def pull(
    pipeline: Annotated[Path, typer.Argument(help="pipeline file with url/protocol sources")],
    output_dir: Annotated[
        Path | None, typer.Option("--output-dir", "-o", help="output root (its run lock)")
    ] = None,
    as_of: Annotated[
        str | None,
        typer.Option(
            "--as-of",
            metavar="YYYY-MM-DD",
            help="pull nothing: show the snapshots a run --as-of that day would read",
        ),
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Pull the pipeline's remote sources into the snapshot store, only what changed."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from mfa.config import load_pipeline
    from mfa.pull import pinned_record, pinned_snapshots, pull_pipeline, pulled_sources
    from mfa.run import run_lock

    try:
        p = load_pipeline(pipeline)
        if not pulled_sources(p):
            out.print(f"{pipeline}: no source gives url and protocol: nothing to pull")
            return
        if as_of is not None:  # no network: what a pinned run would read
            snaps = pinned_snapshots(p, as_of)
            records = [pinned_record(ps, snaps[ps.key], as_of) for ps in pulled_sources(p)]
        else:
            with run_lock(pipeline, output_dir):  # not while a run reads the snapshots
                records = pull_pipeline(p)
    except MfaError as exc:
        _fail(exc)
    except Exception as exc:
        from mfa.io.storage import storage_error

        disk = storage_error(
            exc,
            p.cache_root(),
            outcome="no new snapshot was published and runs read the newest earlier one",
            option="[cache] dir in the pipeline",
        )
        if disk is None:
            raise
        _fail(disk)
    title = f"{p.name}: as of {as_of}" if as_of else f"{p.name}: pulled"
    table = Table(title=title, title_justify="left")
    for col in ("source", "protocol", "changed", "requests", "rows", "snapshot", "sha256"):
        table.add_column(col)
    for r in records:
        rows = "" if r["rows"] is None else f"{r['rows']:,}"
        changed = "new" if r["changed"] else "unchanged"
        snap = r["snapshot"]["path"]
        sha = r["snapshot"]["sha256"][:16]
        table.add_row(r["source"], r["protocol"], changed, str(r["requests"]), rows, snap, sha)
    out.print(table)
    for r in records:
        if r["warning"]:
            err.print(f"[yellow]warning:[/] {r['source']}: {r['warning']}", highlight=False)

"""The ``mfa`` command line: the Typer app, shared helpers and the entry point.

The commands live beside this module, one module per group: :mod:`mfa.cli.runs` (run,
validate, serve, synth), :mod:`mfa.cli.answers` (query, match), :mod:`mfa.cli.fetch`
(pull); importing them registers them on :data:`app`.
"""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path

import typer
from rich.console import Console
from rich.text import Text

__all__ = ["app", "err", "main", "out", "prefect_defaults", "state_dir"]

app = typer.Typer(
    name="mfa",
    help="Urban material stocks and flows from building registers and footprints.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True)
out = Console()


def state_dir() -> Path:
    """mfa's per-user state folder: ``$XDG_STATE_HOME/mfa``, else ``~/.local/state/mfa``
    (the XDG Base Directory specification's place for state that outlives a run)."""
    base = os.environ.get("XDG_STATE_HOME", "")
    root = Path(base) if os.path.isabs(base) else Path.home() / ".local" / "state"
    return root / "mfa"


def prefect_defaults(home: Path | None = None) -> None:
    """Environment defaults that make Prefect's ephemeral local API work on small machines.

    ``PREFECT_HOME`` (Prefect's database and logs, ~7 MB) goes to ``home``, by default the
    per-user :func:`state_dir` (``prefect/`` in it), never into the caller's folder;
    creating the SQLite database takes ~25 s on 2 cores, more than Prefect's default
    start-up limit. Values already set in the environment win.
    """
    if "PREFECT_HOME" not in os.environ:
        chosen = home or state_dir() / "prefect"
        os.environ["PREFECT_HOME"] = str(chosen)
    _prefect_home_writable(Path(os.environ["PREFECT_HOME"]))
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "mfa")


#: Bytes a new Prefect database takes (Prefect 3's SQLite after its migrations: ~7 MB,
#: measured); for an existing one the file system must have a free block at all (what a
#: run adds to it is not known in advance; a disk that fills during the run is reported
#: by the run, as one line).
PREFECT_DB_BYTES = 8_000_000


def _prefect_home_writable(home: Path) -> None:
    """Refuse, as one line, a ``PREFECT_HOME`` on a full or read-only file system when
    mfa starts Prefect's temporary server there (no ``PREFECT_API_URL``): the server
    would fail its start-up again and again, printing tracebacks, for the whole start-up
    timeout (120 s) and then report only a timeout."""
    from mfa.io.storage import short_of_space, storage_error, storage_message

    if os.environ.get("PREFECT_API_URL"):
        return
    what = dict(
        outcome="nothing was run and 'latest' is unchanged",
        option="PREFECT_HOME (or run with --no-prefect)",
        needed=f"a new Prefect database takes {PREFECT_DB_BYTES / 1e6:.0f} MB",
    )
    try:
        home.mkdir(parents=True, exist_ok=True)  # Prefect's SQLite needs the folder
    except OSError as exc:
        raise storage_error(exc, home, **what) or exc from None
    db = home / "prefect.db"
    fresh = not db.is_file() or db.stat().st_size == 0
    code = short_of_space(home, PREFECT_DB_BYTES if fresh else 1)
    if code is not None:
        raise storage_message(code, home, **what)


def _fail(exc: BaseException | str) -> None:
    # the message may quote input text ('[/b]'): never read as Rich markup
    err.print(Text("error:", style="bold red"), Text(str(exc)), highlight=False, soft_wrap=True)
    raise typer.Exit(code=2)


def _os_error(exc: OSError, folder: Path | None = None) -> str:
    """An OSError outside mfa's own checks as one line: what, where, and what is safe
    (a full, over-quota or read-only file system as :func:`mfa.io.storage.storage_error`
    words it, naming the file or else ``folder``)."""
    from mfa.io.storage import storage_error

    named = getattr(exc, "filename", None)
    disk = storage_error(
        exc,
        Path(named or folder or os.getcwd()),
        outcome="nothing was published and the previous 'latest' is unchanged",
        option="--output-dir",
    )
    if disk is not None:
        return str(disk)
    where = f"{named}: " if named else ""
    what = exc.strerror or (str(exc).splitlines() or [type(exc).__name__])[0]
    return (
        f"{where}{what} ({type(exc).__name__}); nothing was published and the previous "
        "'latest' is unchanged: free space, fix the output folder (--output-dir) or the "
        "compute.scheduler, then run again"
    )


def _fail_write(
    exc: Exception,
    target: Path,
    option: str,
    *,
    only_disk: bool = False,
    outcome: str | None = None,
) -> None:
    """Fail with one line for a write of ``target`` (an answer, a map, a matching folder)
    that did not happen: a full, over-quota or read-only file system as
    :func:`mfa.io.storage.storage_error` words it, else (unless ``only_disk``) any other
    ``OSError`` with the OS's reason. Anything else is raised on: it is a bug to see."""
    from mfa.io.storage import storage_error

    disk = storage_error(
        exc,
        Path(os.path.abspath(target)).parent,
        outcome=outcome or f"{target} was not written (nothing half-written is left there)",
        option=option,
    )
    if disk is not None:
        _fail(disk)
    if isinstance(exc, OSError) and not only_disk:
        _fail(
            f"{exc.filename or target}: cannot be written ({exc.strerror or exc}); "
            f"choose another {option}"
        )
    raise exc


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


def main() -> None:  # pragma: no cover - console entry point
    app()


# the commands register themselves on ``app`` when imported (after the helpers they use
# are defined), in the order ``mfa --help`` lists them
for _module in ("runs", "answers", "fetch"):
    importlib.import_module(f"mfa.cli.{_module}")

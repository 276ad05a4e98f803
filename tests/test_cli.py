"""The `mfa` command as a user runs it (subprocesses, real files)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

MFA = [sys.executable, "-m", "mfa.cli"]


def _run(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    e = {**os.environ, "COLUMNS": "200", **env}
    return subprocess.run(MFA + args, cwd=cwd, capture_output=True, text=True, env=e, timeout=600)


def test_run_without_prefect(sample_copy: Path) -> None:
    r = _run(["run", "pipelines/dk-sample.toml", "--no-prefect"], sample_copy)
    assert r.returncode == 0, r.stderr
    latest = sample_copy / "outputs" / "dk-sample" / "latest"
    assert (latest / "buildings.parquet").exists()
    assert "2,144 buildings" in r.stdout
    assert "brick" in r.stdout
    assert "(reasons in dropped.csv)" in r.stdout and "published " in r.stdout
    run = latest.resolve()
    again = _run(["run", "pipelines/dk-sample.toml", "--if-changed"], sample_copy)
    assert again.returncode == 0, again.stderr
    said = " ".join(again.stdout.split())  # rich wraps long paths
    assert f"unchanged since run {run.name}: nothing recomputed" in said
    assert f"nothing published: {latest} is still {run}" in said
    assert " published " not in said and latest.resolve() == run


def test_typo_in_pipeline_is_a_one_line_error(sample_copy: Path) -> None:
    p = sample_copy / "pipelines" / "dk-sample.toml"
    p.write_text(p.read_text().replace("id_column", "id_colum"))
    r = _run(["run", str(p), "--no-prefect"], sample_copy)
    assert r.returncode == 2
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, r.stderr
    assert "dk-sample.toml" in lines[0] and "sources.districts.id_colum" in lines[0]
    assert "did you mean 'id_column'" in lines[0]
    assert not (sample_copy / "outputs").exists()


def test_missing_register_file(sample_copy: Path) -> None:
    (sample_copy / "geodata" / "sample" / "bbr_bygning_2020.parquet").unlink()
    r = _run(["validate", "pipelines/dk-sample.toml"], sample_copy)
    assert r.returncode == 2
    assert "sources.register.path" in r.stderr and "does not exist" in r.stderr


def test_validate_ok(sample_copy: Path) -> None:
    r = _run(["validate", "pipelines/dk-sample.toml", "pipelines/osm-sample.toml"], sample_copy)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count(": ok") == 2


@pytest.mark.slow
@pytest.mark.prefect
def test_run_through_prefect_by_default(sample_copy: Path) -> None:
    """`mfa run` starts Prefect's ephemeral API itself: no server to start by hand; its
    state goes to the per-user state folder, not into the folder the command runs in."""
    state = sample_copy / "home-state"
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_HOME"}
    r = subprocess.run(
        [*MFA, "run", "pipelines/osm-sample.toml"],
        cwd=sample_copy,
        capture_output=True,
        text=True,
        env={**env, "COLUMNS": "200", "XDG_STATE_HOME": str(state)},
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    latest = sample_copy / "outputs" / "osm-sample" / "latest"
    manifest = json.loads((latest / "run.json").read_text())
    assert manifest["runner"] == "prefect"
    assert (state / "mfa" / "prefect").is_dir() and not (sample_copy / ".prefect").exists()


@pytest.mark.slow
@pytest.mark.prefect
def test_prefect_api_that_does_not_start_is_one_line(sample_copy: Path) -> None:
    """Prefect's temporary API not up within its start-up limit (a busy machine): one
    line with the fixes, exit 2, nothing published, not a traceback."""
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_HOME", "PREFECT_API_URL")}
    env |= {
        "XDG_STATE_HOME": str(sample_copy / "home-state"),
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "1",
    }
    r = subprocess.run(
        [*MFA, "run", "pipelines/osm-sample.toml"],
        cwd=sample_copy,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-3000:]
    line = next(x for x in r.stderr.splitlines() if x.startswith("error:"))
    assert "within PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS=1 s" in line
    assert "--no-prefect" in line and not (sample_copy / "outputs" / "osm-sample").exists()

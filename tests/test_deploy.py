"""Scheduled deployments: validated offline, and run for real through a local Prefect server."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import ROOT


def test_deployments_carry_the_pipeline_schedule() -> None:
    from flows.deployments import deployments_for

    (dep,) = deployments_for([ROOT / "pipelines" / "dk-sample.toml"])
    assert dep.name == "dk-sample"
    (sched,) = dep.schedules
    assert sched.schedule.cron == "0 2 * * *"
    assert sched.schedule.timezone == "Europe/Copenhagen"
    assert dep.parameters["force"] is False
    (manual,) = deployments_for([ROOT / "pipelines" / "osm-sample.toml"])
    assert not manual.schedules


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(url: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(1)
    raise TimeoutError(url)


@pytest.mark.slow
@pytest.mark.prefect
def test_served_deployment_runs_through_a_local_server(tmp_path: Path) -> None:
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "PREFECT_API_URL": api,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    }
    bin_dir = Path(sys.executable).parent
    server = subprocess.Popen(
        [str(bin_dir / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    served = None
    try:
        _wait(f"{api}/health", 120)
        out = tmp_path / "out"
        served_log = (tmp_path / "serve.err").open("w")
        served = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mfa.cli",
                "serve",
                str(ROOT / "pipelines" / "osm-sample.toml"),
                "-o",
                str(out),
            ],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=served_log,
        )
        trigger = (
            "import time\n"
            "from prefect.deployments import run_deployment\n"
            "from prefect.exceptions import ObjectNotFound\n"
            "for _ in range(120):\n"
            "    try:\n"
            "        r = run_deployment('mfa-pipeline/osm-sample', timeout=300)\n"
            "        break\n"
            "    except ObjectNotFound:\n"
            "        time.sleep(1)\n"
            "print(r.state.type.value)\n"
        )
        done = subprocess.run(
            [sys.executable, "-c", trigger], env=env, capture_output=True, text=True, timeout=600
        )
        assert done.stdout.strip().endswith("COMPLETED"), done.stderr[-2000:]
        latest = out / "osm-sample" / "latest"
        assert json.loads((latest / "run.json").read_text())["runner"] == "prefect"
        assert (latest / "buildings.parquet").exists()
        # a service manager stops it: SIGTERM, exit 0 within seconds, no traceback
        t0 = time.monotonic()
        served.terminate()
        assert served.wait(timeout=60) == 0 and time.monotonic() - t0 < 30
        log = (tmp_path / "serve.err").read_text()
        assert "SIGTERM received" in log and "Traceback" not in log, log[-3000:]
        assert "never awaited" not in log
    finally:
        for proc in (served, server):
            if proc is not None:
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()


@pytest.mark.slow
@pytest.mark.prefect
def test_serve_stopped_while_starting_leaves_no_server(tmp_path: Path) -> None:
    """Without a server, `mfa serve` starts Prefect's temporary one; SIGTERM while it
    starts ends mfa cleanly (exit 0, one line) and stops that server too."""
    import psutil

    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env["PREFECT_HOME"] = str(tmp_path / "prefect")
    served = subprocess.Popen(
        [sys.executable, "-m", "mfa.cli", "serve", str(ROOT / "pipelines" / "dk-sample.toml")],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    me = psutil.Process(served.pid)
    deadline = time.monotonic() + 120
    while not me.children(recursive=True) and time.monotonic() < deadline:
        time.sleep(0.5)  # Prefect's temporary server is a child process
    children = me.children(recursive=True)
    assert children, "no temporary server was started"
    time.sleep(2)
    served.terminate()
    _, errors = served.communicate(timeout=120)
    assert served.returncode == 0 and "Traceback" not in errors, errors[-3000:]
    _, alive = psutil.wait_procs(children, timeout=30)
    for proc in alive:  # the test's own processes: never left behind
        proc.kill()
    assert not alive, "Prefect's temporary server outlived mfa serve"


def test_tasks_cancelled_while_serve_stops_are_not_reported(caplog) -> None:
    """Prefect's runner exits from its SIGTERM handler; the event loop then reports each
    control-channel connection it cancels as an error with a traceback (seen in CI when a
    connection was open). ``mfa serve`` drops exactly those reports."""
    import asyncio
    import logging

    from mfa.cli.runs import _CancelledAtExit

    loop = asyncio.new_event_loop()
    log = logging.getLogger("asyncio")
    quiet = _CancelledAtExit()
    log.addFilter(quiet)
    try:
        with caplog.at_level(logging.ERROR, logger="asyncio"):
            loop.default_exception_handler(
                {"message": "Exception in callback", "exception": asyncio.CancelledError()}
            )
            loop.default_exception_handler(
                {"message": "Exception in callback", "exception": ValueError("real")}
            )
    finally:
        log.removeFilter(quiet)
        loop.close()
    assert [r.exc_info[0] for r in caplog.records] == [ValueError]

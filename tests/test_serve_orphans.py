"""A killed `mfa serve` leaves no run Running for ever (issue 19): the next `mfa serve`
marks Crashed the runs of its deployments whose process is gone, leaves a run whose
process lives, and marks that one when it is gone at a clean exit. Real processes: a
Prefect server, `mfa serve` killed with SIGKILL, flow runs held at a failpoint with
SIGSTOP; states read from the server's REST API (not through mfa's code)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.test_deploy import _free_port, _wait


def _get(url: str) -> dict | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return json.loads(r.read())
    except OSError:
        return None


def _post(url: str, body: dict) -> dict:
    """POST, retried while the server says it is busy (a loaded machine: Prefect's server
    answers 503 when its database is locked; Prefect's own client retries these too)."""
    for attempt in range(10):
        req = urllib.request.Request(
            url, json.dumps(body).encode(), {"Content-Type": "application/json"}, method="POST"
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as exc:
            if exc.code not in (429, 502, 503) or attempt == 9:
                raise
        time.sleep(1.0 + attempt)
    raise AssertionError("unreachable")


def _until(what, seconds: float, message: str, alive: subprocess.Popen | None = None):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if alive is not None and alive.poll() is not None:
            raise AssertionError(f"{message}: mfa serve exited with {alive.returncode}")
        value = what()
        if value:
            return value
        time.sleep(0.3)
    raise TimeoutError(message)


def _stopped(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() == psutil.STATUS_STOPPED
    except psutil.NoSuchProcess:
        return False


def _serve(env: dict, tmp: Path, tag: str) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mfa.cli",
            "serve",
            str(ROOT / "pipelines" / "osm-sample.toml"),
            str(ROOT / "pipelines" / "dk-sample.toml"),
            "-o",
            str(tmp / "out"),
        ],
        env=env,
        cwd=tmp,
        stdout=(tmp / f"{tag}.out").open("w"),
        stderr=(tmp / f"{tag}.err").open("w"),
    )


@pytest.mark.slow
@pytest.mark.prefect
def test_runs_of_a_killed_serve_are_marked_crashed(tmp_path: Path) -> None:
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "PREFECT_API_URL": api,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    server = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "prefect"),
            "server",
            "start",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    procs: list[subprocess.Popen] = [server]
    flow_pids: list[int] = []
    try:
        _wait(f"{api}/health", 180)
        # serve A: each run stops itself (SIGSTOP) once its buildings are computed
        held = {**env, "MFA_FAILPOINT": "buildings:computed", "MFA_FAILPOINT_ACTION": "stop"}
        a = _serve(held, tmp_path, "a")
        procs.append(a)
        runs = {}
        for name in ("osm-sample", "dk-sample"):
            dep = _until(
                lambda n=name: _get(f"{api}/deployments/name/mfa-pipeline/{n}"),
                180,
                f"deployment {name} never registered",
                a,
            )
            runs[name] = _post(f"{api}/deployments/{dep['id']}/create_flow_run", {})["id"]

        def held_pid(run_id: str) -> int | None:
            r = _get(f"{api}/flow_runs/{run_id}") or {}
            if r.get("state_type") != "RUNNING" or not r.get("infrastructure_pid"):
                return None
            pid = int(r["infrastructure_pid"].rpartition(":")[2])
            return pid if _stopped(pid) else None

        pids = {n: _until(lambda r=r: held_pid(r), 300, f"{n} never held") for n, r in runs.items()}
        flow_pids += pids.values()
        # the OOM killer takes serve and the osm run's process; the dk run's lives on
        os.kill(a.pid, signal.SIGKILL)
        a.wait(timeout=30)
        os.kill(pids["osm-sample"], signal.SIGKILL)
        for name, run_id in runs.items():
            assert _get(f"{api}/flow_runs/{run_id}")["state_type"] == "RUNNING", name

        b = _serve(env, tmp_path, "b")
        procs.append(b)
        _until(
            lambda: "being served" in (tmp_path / "b.out").read_text(),
            180,
            "serve B never served",
            b,
        )
        osm = _get(f"{api}/flow_runs/{runs['osm-sample']}")
        assert osm["state_type"] == "CRASHED" and osm["state"]["name"] == "Crashed"
        assert "no live process" in osm["state"]["message"]
        assert f"process {pids['osm-sample']} has ended" in osm["state"]["message"]
        dk = _get(f"{api}/flow_runs/{runs['dk-sample']}")
        assert dk["state_type"] == "RUNNING"  # its process lives: not ours to end
        err = (tmp_path / "b.err").read_text()
        assert (
            "of osm-sample was Running with no live process" in err and "dk-sample was" not in err
        )

        # the dk run's process ends too; serve B stops cleanly and marks it
        os.kill(pids["dk-sample"], signal.SIGKILL)
        b.terminate()
        assert b.wait(timeout=60) == 0
        dk = _get(f"{api}/flow_runs/{runs['dk-sample']}")
        assert dk["state_type"] == "CRASHED" and "mfa serve (exit" in dk["state"]["message"]
        err = (tmp_path / "b.err").read_text()
        assert "Traceback" not in err, err[-3000:]
        assert "mfa serve (exit): flow run" in err
    finally:
        for pid in flow_pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()

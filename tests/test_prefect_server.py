"""Prefect's temporary server dies with the mfa process that started it (issue 19): a
SIGKILLed ``mfa run`` (stopped in the middle of its buildings step, then killed) or ``mfa
serve`` (killed while serving) leaves no server process behind. Real processes, a real
server, a real kill; no mocks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from mfa.cli.prefect_server import temporary_server
from tests.conftest import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.prefect]

PIPELINE = ROOT / "pipelines" / "dk-sample.toml"
MFA = [sys.executable, "-m", "mfa.cli"]


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict[str, str]:
    """A Prefect home of the module's own (its database made by the first test)."""
    home = tmp_path_factory.mktemp("prefect-home")
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}:{ROOT}", "PREFECT_HOME": str(home)}
    env.pop("PREFECT_API_URL", None)
    return env


def _servers(pid: int) -> list[psutil.Process]:
    """The Prefect API servers (uvicorn) among the descendants of ``pid``."""
    return [
        p
        for p in psutil.Process(pid).children(recursive=True)
        if "prefect.server.api.server:create_app" in " ".join(p.cmdline())
    ]


def _killed(proc: subprocess.Popen, servers: list[psutil.Process]) -> None:
    """SIGKILL ``proc`` (no handler, no atexit runs); its servers must end by themselves."""
    assert servers, "no temporary Prefect server was started"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    _, alive = psutil.wait_procs(servers, timeout=15)
    for p in alive:  # do not leave them to the next test
        p.kill()
    assert not alive, f"Prefect's temporary server {[p.pid for p in alive]} outlived mfa"


@pytest.fixture
def popen() -> Iterator[list[subprocess.Popen]]:
    started: list[subprocess.Popen] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _stopped(pid: int) -> bool:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in "Tt"


def test_a_killed_run_leaves_no_server(env, tmp_path: Path, popen) -> None:
    """``mfa run`` through Prefect, stopped at the ``buildings:computed`` failpoint (its
    flow and the server running), then SIGKILLed: the server ends too; nothing was
    published."""
    out = tmp_path / "out"
    run_env = {**env, "MFA_FAILPOINT": "buildings:computed", "MFA_FAILPOINT_ACTION": "stop"}
    proc = subprocess.Popen(
        [*MFA, "run", str(PIPELINE), "-o", str(out)],
        cwd=ROOT,
        env=run_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    popen.append(proc)
    deadline = time.monotonic() + 300
    while not _stopped(proc.pid):
        assert proc.poll() is None, "mfa run ended before its failpoint"
        assert time.monotonic() < deadline, "mfa run never reached buildings:computed"
        time.sleep(0.1)
    _killed(proc, _servers(proc.pid))
    assert not (out / "dk-sample" / "latest").exists()


def test_a_killed_serve_leaves_no_server(env, popen) -> None:
    """``mfa serve`` SIGKILLed once it serves: the server ends too. Also prints how long
    it took from launch to serving (the number in docs/design.md)."""
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [*MFA, "serve", str(PIPELINE)],
        cwd=ROOT,
        env={**env, "COLUMNS": "200"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    popen.append(proc)
    assert proc.stdout is not None
    for line in proc.stdout:
        if "being served" in line:
            break
        assert time.monotonic() - t0 < 300, "mfa serve never started serving"
    else:
        pytest.fail(f"mfa serve ended (exit {proc.wait()}) before it served")
    print(f"mfa serve: serving {time.monotonic() - t0:.1f} s after launch")
    _killed(proc, _servers(proc.pid))


def test_a_run_ends_soon_after_publishing_and_takes_its_server(env, tmp_path: Path) -> None:
    """``mfa run`` through Prefect exits within seconds of publishing (the server lives
    until Prefect's exit handlers have sent their last logs; stopped before them, each
    waited out its retries, ~70 s) and leaves no server."""
    proc = subprocess.Popen(
        [*MFA, "run", str(PIPELINE), "-o", str(tmp_path / "out")],
        cwd=ROOT,
        env={**env, "COLUMNS": "300"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    servers: list[psutil.Process] = []
    published = None
    for line in proc.stdout:
        servers = servers or _servers(proc.pid)
        if line.startswith("published "):
            published = time.monotonic()
    assert proc.wait(timeout=300) == 0, proc.stderr.read()[-3000:] if proc.stderr else ""
    assert published is not None and time.monotonic() - published < 15
    assert servers, "no temporary Prefect server was started"
    _, alive = psutil.wait_procs(servers, timeout=5)
    assert not alive


def test_a_running_server_is_used_as_it_is(monkeypatch) -> None:
    """With ``PREFECT_API_URL`` set nothing is started and the variable stays."""
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:4200/api")
    before = psutil.Process().children()
    with temporary_server() as server:
        assert server is None and psutil.Process().children() == before
    assert os.environ["PREFECT_API_URL"] == "http://127.0.0.1:4200/api"


#: A parent that starts the temporary server with a tie of its choice (argv[1]), prints
#: the server's pid once it answers, and waits to be killed.
PARENT = """
import sys, time
from mfa.cli.prefect_server import TemporaryServer
server = TemporaryServer(tie=sys.argv[1])
server.wait_ready(300)
print(server.process.pid, flush=True)
time.sleep(3600)
"""


@pytest.mark.parametrize(
    ("tie", "flag", "within_s"), [("pipe", "--pipe", 5), ("poll", "--parent", 8)]
)
def test_the_portable_tie_ends_the_server_with_a_killed_parent(
    env, popen, tie: str, flag: str, within_s: float
) -> None:
    """Where prctl is missing (macOS, BSD: a pipe; Windows: polling the parent's pid) the
    server runs under mfa.parent_tie. Forced here on Linux, where prctl would tie it
    otherwise: the parent SIGKILLed once the server answers, the server ends by itself."""
    from mfa.cli.prefect_server import default_tie

    assert default_tie() == "prctl"  # Linux keeps its own tie unless forced
    proc = subprocess.Popen(
        [sys.executable, "-c", PARENT, tie], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True
    )
    popen.append(proc)
    assert proc.stdout is not None
    line = proc.stdout.readline()  # the server answers (or the parent failed: "")
    assert line.strip().isdigit(), f"the parent ended with {proc.wait()} before its server served"
    server = psutil.Process(int(line))
    cmd = server.cmdline()
    assert cmd[1:5] == ["-m", "mfa.parent_tie", flag, cmd[4]] and "uvicorn" in cmd
    assert server.ppid() == proc.pid and server.is_running()
    t0 = time.monotonic()
    _killed(proc, [server])
    assert time.monotonic() - t0 < within_s

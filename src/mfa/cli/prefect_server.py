"""Prefect's temporary API server for one ``mfa run`` or ``mfa serve``, started by mfa.

Prefect 3 starts its own temporary server (``SubprocessASGIServer``: ``python -m uvicorn
... prefect.server.api.server:create_app``) on the first API call when no
``PREFECT_API_URL`` is set, and stops it from an ``atexit`` handler: a killed ``mfa``
(SIGKILL, the OOM killer) never runs that handler and the server runs on, one more per
killed nightly run. mfa starts the same server itself instead, before importing Prefect,
and points ``PREFECT_API_URL`` at it:

- the server dies with mfa: Linux's ``PR_SET_PDEATHSIG`` (set in the child before it
  executes uvicorn) sends it SIGKILL when the mfa process ends, however it ends; where
  that call is missing (not Linux) the server is only stopped on a normal exit;
- it starts while mfa imports Prefect, the flows and the geo stack (two processes on two
  cores), instead of after: `mfa serve` is serving seconds sooner (docs/design.md).

With ``PREFECT_API_URL`` set (a running server) nothing is started.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

__all__ = ["TemporaryServer", "temporary_server"]

#: uvicorn's exit code when the port is taken (Prefect retries on another port).
PORT_TAKEN = 3
#: Prefect's own range for its temporary server's port.
PORTS = range(8000, 9000)


def _die_with_parent(parent: int) -> None:
    """In the server's process, before it executes uvicorn: SIGKILL when ``parent`` dies
    (``prctl(PR_SET_PDEATHSIG)``; Linux only, else nothing)."""
    import ctypes

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return
    pr_set_pdeathsig = 1  # <linux/prctl.h>
    prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before the call: nobody to serve
        os._exit(1)


def _free_port() -> int:
    for _ in range(20):
        port = random.choice(PORTS)
        with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port for the ephemeral Prefect API server in 8000-8999")


class TemporaryServer:
    """A running Prefect API server process on 127.0.0.1 (see the module)."""

    def __init__(self) -> None:
        spec = importlib.util.find_spec("prefect")  # where it is, without importing it
        if spec is None or not spec.submodule_search_locations:
            raise RuntimeError("prefect is not installed: run with --no-prefect")
        self.app_dir = str(Path(next(iter(spec.submodule_search_locations))).parent)
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.start()

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def start(self) -> None:
        self.port = _free_port()
        parent = os.getpid()
        env = {
            **os.environ,
            "PREFECT_UI_ENABLED": "0",  # as Prefect starts it
            "PREFECT__SERVER_EPHEMERAL": "1",
            "PREFECT__SERVER_FINAL": "1",
        }
        env.pop("PREFECT_API_URL", None)
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "--app-dir",
                self.app_dir,
                "--factory",
                "prefect.server.api.server:create_app",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--log-level",
                "error",
                "--lifespan",
                "on",
            ],
            env=env,
            stdin=subprocess.DEVNULL,
            preexec_fn=lambda: _die_with_parent(parent),  # before Prefect: no threads yet
        )

    def wait_ready(self, timeout_s: float) -> None:
        """Return when the server answers its health check; a RuntimeError naming the
        "ephemeral Prefect API server" (as Prefect's own) after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.process is not None
            code = self.process.poll()
            if code == PORT_TAKEN:  # another process took the port meanwhile
                self.start()
                continue
            if code is not None:
                raise RuntimeError(
                    f"the ephemeral Prefect API server exited with code {code} while starting"
                )
            try:
                with urllib.request.urlopen(f"{self.api_url}/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        raise RuntimeError("Timed out while attempting to connect to ephemeral Prefect API server")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 5 s (as Prefect stops its own)."""
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None


@contextlib.contextmanager
def temporary_server() -> Iterator[TemporaryServer | None]:
    """A :class:`TemporaryServer` with ``PREFECT_API_URL`` pointing at it until the block
    ends (then stopped, the variable restored); None when ``PREFECT_API_URL`` is set.

    Enter it before Prefect is imported: Prefect reads its settings at import. The server
    is stopped at exit (``atexit``, registered before Prefect registers its own exit
    handlers, so it runs after them: Prefect sends its last logs and events to the
    server as the process exits, after a failed run too; stopped earlier, each of those
    waits out its retries, ~70 s)."""
    if os.environ.get("PREFECT_API_URL"):
        yield None
        return
    server = TemporaryServer()
    atexit.register(server.stop)
    os.environ["PREFECT_API_URL"] = server.api_url
    try:
        yield server
    finally:
        os.environ.pop("PREFECT_API_URL", None)

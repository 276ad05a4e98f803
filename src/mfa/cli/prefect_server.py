"""Prefect's temporary API server for one ``mfa run`` or ``mfa serve``, started by mfa.

Prefect 3 starts its own temporary server (``SubprocessASGIServer``: ``python -m uvicorn
... prefect.server.api.server:create_app``) on the first API call when no
``PREFECT_API_URL`` is set, and stops it from an ``atexit`` handler: a killed ``mfa``
(SIGKILL, the OOM killer) never runs that handler and the server runs on, one more per
killed nightly run. mfa starts the same server itself instead, before importing Prefect,
and points ``PREFECT_API_URL`` at it:

- the server dies with mfa, however mfa ends (SIGKILL and the OOM killer included): on
  Linux, ``PR_SET_PDEATHSIG`` (set in the child before it executes uvicorn) sends it
  SIGKILL; elsewhere (:data:`TIES`) it runs under :mod:`mfa.parent_tie`, which ends it
  when a pipe whose write end only mfa holds reaches end-of-file (POSIX) or when mfa's
  pid is gone (polled each second: Windows);
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
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from mfa.parallel import die_with_parent as _die_with_parent
from mfa.parallel import libc_prctl as _prctl

__all__ = ["TIES", "TemporaryServer", "default_tie", "temporary_server"]

#: uvicorn's exit code when the port is taken (Prefect retries on another port).
PORT_TAKEN = 3
#: Prefect's own range for its temporary server's port.
PORTS = range(8000, 9000)


#: How the server is tied to mfa: ``prctl`` (Linux's PR_SET_PDEATHSIG), ``pipe`` (it ends
#: at end-of-file of a pipe inherited from mfa: POSIX), ``poll`` (it polls mfa's pid).
TIES = ("prctl", "pipe", "poll")


def default_tie() -> str:
    """The tie of this platform: ``prctl`` on Linux, else ``pipe`` on POSIX, else
    ``poll``."""
    if _prctl() is not None:
        return "prctl"
    return "pipe" if os.name == "posix" else "poll"


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

    def __init__(self, tie: str | None = None) -> None:
        """Start the server, tied to this process by ``tie`` (one of :data:`TIES`;
        default :func:`default_tie`)."""
        self.tie = tie or default_tie()
        if self.tie not in TIES:
            raise ValueError(f"tie {self.tie!r}: use one of {', '.join(TIES)}")
        self._tie_fd: int | None = None  # the write end of the pipe, held while it runs
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
        uvicorn = [
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
        ]
        self._close_tie()
        if self.tie == "prctl":
            self.process = subprocess.Popen(
                [sys.executable, "-m", *uvicorn],
                env=env,
                stdin=subprocess.DEVNULL,
                preexec_fn=lambda: _die_with_parent(parent),  # before Prefect: no threads yet
            )
        elif self.tie == "pipe":
            read_end, self._tie_fd = os.pipe()  # both not inheritable; the child gets one
            try:
                self.process = subprocess.Popen(
                    [sys.executable, "-m", "mfa.parent_tie", "--pipe", str(read_end), *uvicorn],
                    env=env,
                    stdin=subprocess.DEVNULL,
                    pass_fds=(read_end,),
                )
            finally:
                os.close(read_end)  # only the child reads; mfa holds the write end
        else:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "mfa.parent_tie", "--parent", str(parent), *uvicorn],
                env=env,
                stdin=subprocess.DEVNULL,
            )

    def _close_tie(self) -> None:
        if self._tie_fd is not None:
            os.close(self._tie_fd)
            self._tie_fd = None

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
        self._close_tie()


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

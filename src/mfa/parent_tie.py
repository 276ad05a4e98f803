"""Run a Python module as ``__main__`` in a process that ends when its parent ends.

    python -m mfa.parent_tie --pipe FD MODULE [ARG ...]
    python -m mfa.parent_tie --parent PID MODULE [ARG ...]

The portable tie of Prefect's temporary server to the mfa process that started it
(:mod:`mfa.cli.prefect_server`), where Linux's ``PR_SET_PDEATHSIG`` is not available
(macOS, the BSDs, Windows). A thread watches the parent while ``MODULE`` runs (as
``python -m MODULE ARG ...`` would run it) and ends the process at once (``os._exit``)
when the parent is gone, however it ended (SIGKILL and the OOM killer included):

- ``--pipe FD`` (POSIX): ``FD`` is the read end of a pipe whose write end only the parent
  holds and never writes to; the kernel closes that end when the parent ends, and the
  read returns end-of-file. Immediate, no polling. (A process the parent *forks* holds
  the write end too, so the server then lives until that one ends as well; mfa's own
  children are started with ``subprocess``, which does not pass it on.)
- ``--parent PID`` (anywhere): every :data:`POLL_S` seconds, whether the parent lives
  (POSIX: ``os.getppid()`` is no longer ``PID``; elsewhere ``PID`` is gone or is another
  process, by its start time).

Only the standard library and psutil (for ``--parent`` off POSIX) are imported before
``MODULE``: mfa's own package is not.
"""

from __future__ import annotations

import os
import runpy
import sys
import threading
import time

__all__ = ["POLL_S", "main"]

#: How often ``--parent`` looks at the parent, s.
POLL_S = 1.0


def _watch_pipe(fd: int) -> None:
    while True:
        try:
            data = os.read(fd, 1)
        except InterruptedError:
            continue
        except OSError:
            break
        if not data:  # end of file: the parent's end is closed, the parent is gone
            break
    os._exit(0)


def _watch_parent(pid: int) -> None:
    if os.name == "posix":
        gone = lambda: os.getppid() != pid  # noqa: E731 - reparented when the parent ends
    else:
        import psutil

        try:
            born = psutil.Process(pid).create_time()
        except psutil.Error:
            os._exit(0)

        def gone() -> bool:
            try:
                return psutil.Process(pid).create_time() != born
            except psutil.Error:
                return True

    while not gone():
        time.sleep(POLL_S)
    os._exit(0)


def main(argv: list[str]) -> None:
    """Start the watcher thread of ``argv[:2]`` and run the module ``argv[2]`` with the
    arguments after it."""
    if len(argv) < 3 or argv[0] not in ("--pipe", "--parent") or not argv[1].isdigit():
        sys.exit("usage: python -m mfa.parent_tie (--pipe FD | --parent PID) MODULE [ARG ...]")
    mode, number, module, *args = argv
    if mode == "--parent" and os.name == "posix" and os.getppid() != int(number):
        os._exit(0)  # the parent ended before this process looked
    target = _watch_pipe if mode == "--pipe" else _watch_parent
    threading.Thread(target=target, args=(int(number),), name="parent-tie", daemon=True).start()
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main(sys.argv[1:])

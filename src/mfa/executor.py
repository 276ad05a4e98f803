"""One executor for every per-batch step: local threads or a Dask ``distributed`` cluster.

:func:`ordered_map` runs a module-level function over a stream of argument tuples and
yields the results in input order, with at most ``window`` tasks in flight, so memory
depends on the batch size and the number of workers, not on the input's length; and the
caller adds up results in the same order whatever the scheduler or worker count.

Schedulers (``[compute] scheduler``): ``threads`` (default; numpy, shapely and Arrow
release the GIL), ``synchronous`` (one thread, for debugging), ``processes`` or
``local-cluster`` (a ``distributed.LocalCluster`` of ``workers`` processes for this run),
or the address of an existing Dask scheduler (``tcp://host:8786``; its workers need mfa
installed and the run's folder at the same path).
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from contextvars import ContextVar
from typing import Any, TypeVar

from mfa.errors import ConfigError

__all__ = [
    "PROGRESS",
    "executor",
    "ordered_map",
    "report_progress",
    "run_scope",
    "start_for_run",
    "take_from_run",
    "worker_count",
]

#: Where the engine reports its progress: ``fn(what, done, total)`` (batches), set by the
#: caller for the duration of a step (the Prefect task: a progress artifact; the CLI: a
#: bar). None: nobody listens.
PROGRESS: ContextVar[Callable[[str, int, int], None] | None] = ContextVar(
    "mfa_progress", default=None
)


def report_progress(what: str, done: int, total: int) -> None:
    """Tell the listener set in :data:`PROGRESS` (if any) how far ``what`` is."""
    listener = PROGRESS.get()
    if listener is not None:
        listener(what, done, total)


Submit = Callable[..., Future]
T = TypeVar("T")


def worker_count(workers: int | None) -> int:
    """The number of workers: as configured, else the machine's cores."""
    return workers or os.cpu_count() or 1


#: The executors kept open for a whole run (see :func:`run_scope`), by (scheduler,
#: workers); None outside a run scope.
_SCOPE: ContextVar[dict[tuple[str, int], Submit] | None] = ContextVar("mfa_scope", default=None)
_SCOPE_STACK: ContextVar[ExitStack | None] = ContextVar("mfa_scope_stack", default=None)
#: What a step started for a later step of the same run (the GeoPackage's buildings
#: layer, written by a child process), by key; None outside a run scope.
_KEPT: ContextVar[dict[str, Any] | None] = ContextVar("mfa_kept", default=None)


@contextmanager
def run_scope() -> Iterator[None]:
    """Keep every executor a step opens until the end of the run: both engine passes
    (and any later step) use one Dask cluster or client instead of starting one per
    step (a ``LocalCluster`` costs seconds to start and its workers import mfa anew).
    Outside a scope, :func:`executor` opens and closes its own.

    Within the scope BLAS (numpy's matrix products: the Monte Carlo draws of every group)
    runs one thread per caller: the executor's workers are the parallelism. OpenBLAS's
    own threads on top of them wait by spinning; on 2 cores with other work running, a
    1 M-building run took 138 s and 71 CPU-s with them, 62 s and 48 CPU-s without.
    (Dask's worker processes set ``OPENBLAS_NUM_THREADS=1`` themselves.)"""
    from threadpoolctl import threadpool_limits

    with ExitStack() as stack:
        stack.enter_context(threadpool_limits(limits=1, user_api="blas"))
        scope, held, kept = _SCOPE.set({}), _SCOPE_STACK.set(stack), _KEPT.set({})
        try:
            yield
        finally:
            _SCOPE.reset(scope)
            _SCOPE_STACK.reset(held)
            _KEPT.reset(kept)


def start_for_run(key: str, start: Callable[[], T], stop: Callable[[T], None]) -> T | None:
    """Start work for a later step of the run (``start()``) and keep it under ``key``
    until :func:`take_from_run` takes it; ``stop(work)`` runs when the run scope ends,
    however it ends (a failed run leaves nothing running; ``stop`` must be harmless on
    finished work). Outside a :func:`run_scope` (a step called on its own) nothing is
    started and None returned: the later step then does the work itself."""
    kept, stack = _KEPT.get(), _SCOPE_STACK.get()
    if kept is None or stack is None:
        return None
    work = start()
    stack.callback(stop, work)
    kept[key] = work
    return work


def take_from_run(key: str) -> Any | None:
    """What :func:`start_for_run` kept under ``key`` in this run scope (removed from it),
    else None."""
    kept = _KEPT.get()
    return None if kept is None else kept.pop(key, None)


@contextmanager
def executor(
    scheduler: str, workers: int | None = None, connect_timeout_s: float = 30.0
) -> Iterator[Submit]:
    """``submit(fn, *args) -> future`` on the scheduler named in the pipeline file
    (an existing scheduler must answer within ``connect_timeout_s``); inside a
    :func:`run_scope`, the run's open one."""
    n = worker_count(workers)
    scope, stack = _SCOPE.get(), _SCOPE_STACK.get()
    if scope is None or stack is None:
        with _open(scheduler, n, connect_timeout_s) as submit:
            yield submit
        return
    key = (scheduler, n)
    if key not in scope:
        scope[key] = stack.enter_context(_open(scheduler, n, connect_timeout_s))
    yield scope[key]


@contextmanager
def _open(scheduler: str, n: int, connect_timeout_s: float) -> Iterator[Submit]:
    if scheduler in ("threads", "synchronous"):
        with ThreadPoolExecutor(max_workers=1 if scheduler == "synchronous" else n) as ex:
            yield ex.submit
        return
    from distributed import Client, LocalCluster

    if scheduler in ("processes", "local-cluster"):
        with (
            LocalCluster(
                n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None
            ) as cluster,
            Client(cluster) as client,
        ):
            yield lambda fn, *a: client.submit(fn, *a, pure=False)
        return
    try:
        client = Client(scheduler, timeout=f"{connect_timeout_s}s")
    except OSError as exc:
        raise ConfigError(
            f"compute.scheduler = {scheduler!r}: no Dask scheduler answers there ({exc}); "
            "start it (dask scheduler) or use scheduler = 'threads'"
        ) from None
    with client:
        yield lambda fn, *a: client.submit(fn, *a, pure=False)


def ordered_map(
    submit: Submit, fn: Callable[..., Any], args: Iterable[tuple[Any, ...]], window: int
) -> Iterator[Any]:
    """``fn(*a)`` for each ``a`` of ``args``, yielded in input order, ``window`` in flight.

    ``args`` is consumed lazily (a reader can produce the batches as they are needed).
    An exception of a task is raised when its turn comes; tasks still in flight are
    cancelled where the executor can.
    """
    pending: deque[Future] = deque()
    it = iter(args)
    exhausted = False
    try:
        while True:
            while not exhausted and len(pending) < max(1, window):
                try:
                    a = next(it)
                except StopIteration:
                    exhausted = True
                    break
                pending.append(submit(fn, *a))
            if not pending:
                return
            yield pending.popleft().result()
    finally:
        for f in pending:
            f.cancel()

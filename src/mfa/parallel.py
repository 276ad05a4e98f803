"""Pausing Python's cyclic garbage collector around the steps (see :func:`gc_paused`)."""

from __future__ import annotations

import functools
import gc
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

__all__ = ["gc_paused", "without_cyclic_gc"]


_gc_lock = threading.Lock()
_gc_depth = 0
_gc_was_enabled = True


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector; collect once when the outermost exits.

    Reference counting still frees every object that is not in a cycle. A step holds
    hundreds of thousands of Python objects (geometries, strings in object arrays), and
    each automatic full collection walks all of them: at 200,000 buildings a forced run
    took 8.3-8.6 s with them and 6.6-7.1 s without (benchmarks/incremental.py).
    """
    global _gc_depth, _gc_was_enabled
    with _gc_lock:
        if _gc_depth == 0:
            _gc_was_enabled = gc.isenabled()
            gc.disable()
        _gc_depth += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_depth -= 1
            outermost = _gc_depth == 0
            if outermost and _gc_was_enabled:
                gc.enable()
        if outermost:
            gc.collect(1)  # the young cycles the step left; the old ones wait as before


F = TypeVar("F", bound=Callable[..., Any])


def without_cyclic_gc(fn: F) -> F:
    """Run ``fn`` inside :func:`gc_paused`."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with gc_paused():
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]

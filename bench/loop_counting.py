"""Run a server whose event loop counts the work it is given (``bench/loop_work.py``'s child).

``python -m bench.loop_counting -m MODULE ARGS...`` or ``python -m bench.loop_counting
SCRIPT ARGS...`` runs the module or script as ``python`` would, with uvicorn's event loop
(uvloop, or asyncio's under ``BARE_STACK=h11``) replaced by a subclass that counts, by
callback or coroutine name: ``call_soon``, timers (``call_later``/``call_at``), tasks and
futures created; and the garbage collector's runs per generation, with their time (not
loop work, but per-request work that a sampling profile charges to whichever frame
allocated, the loop's and uvicorn's included). On SIGUSR1 it writes the counts so far to
the JSON file named by ``LOOP_COUNTS`` (atomically: written beside it, then renamed), with
a ``dumps`` serial.

Only calls that reach the loop through Python are counted: uvloop's own C code calling
its transports' protocols, or its C-level ``call_soon``, are not (strace counts their
system calls). The counts are exact; the CPU figures of a counting process are not (each
call costs a Python frame more): never bench a process started this way.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import runpy
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

COUNTS: Counter[str] = Counter()
_gc_started = 0.0


def _gc_timer(phase: str, info: dict[str, int]) -> None:
    """Count the garbage collector's runs per generation and their time (us)."""
    global _gc_started
    if phase == "start":
        _gc_started = time.perf_counter()
        return
    generation = info["generation"]
    COUNTS[f"gc generation {generation} collections"] += 1
    COUNTS[f"gc generation {generation} us"] += round((time.perf_counter() - _gc_started) * 1e6)


def _name(callback: Any) -> str:
    """A stable name for a callback: the function's qualified name, else its type's."""
    function = getattr(callback, "__func__", callback)
    name = getattr(function, "__qualname__", None) or type(callback).__qualname__
    module = getattr(function, "__module__", "") or ""
    return f"{module.rsplit('.', 1)[-1]}.{name}" if module else name


def counting(loop_type: type[asyncio.AbstractEventLoop]) -> type[asyncio.AbstractEventLoop]:
    """A subclass of ``loop_type`` whose Python-level scheduling calls are counted."""

    class CountingLoop(loop_type):  # type: ignore[valid-type,misc]
        _in_call_later = False

        def call_soon(self, callback: Any, *args: Any, context: Any = None) -> Any:
            COUNTS[f"call_soon {_name(callback)}"] += 1
            return super().call_soon(callback, *args, context=context)

        def call_later(self, delay: float, callback: Any, *args: Any, context: Any = None) -> Any:
            COUNTS[f"timer {_name(callback)}"] += 1
            # asyncio's call_later calls call_at: one timer, counted once.
            self._in_call_later = True
            try:
                return super().call_later(delay, callback, *args, context=context)
            finally:
                self._in_call_later = False

        def call_at(self, when: float, callback: Any, *args: Any, context: Any = None) -> Any:
            if not self._in_call_later:
                COUNTS[f"timer {_name(callback)}"] += 1
            return super().call_at(when, callback, *args, context=context)

        def create_task(self, coro: Any, **kwargs: Any) -> Any:
            COUNTS[f"task {getattr(coro, '__qualname__', type(coro).__qualname__)}"] += 1
            return super().create_task(coro, **kwargs)

        def create_future(self) -> Any:
            COUNTS["future (loop.create_future)"] += 1
            return super().create_future()

    return CountingLoop


def _counting_factory(
    original: Callable[..., Callable[[], asyncio.AbstractEventLoop] | None],
) -> Callable[..., Callable[[], asyncio.AbstractEventLoop]]:
    def get_loop_factory(config: Any) -> Callable[[], asyncio.AbstractEventLoop]:
        factory = original(config) or asyncio.new_event_loop
        probe = factory()  # only to learn the loop's type
        probe.close()
        return counting(type(probe))

    return get_loop_factory


def _dump(_signum: int, _frame: FrameType | None) -> None:
    target = Path(os.environ["LOOP_COUNTS"])
    _dump.serial += 1  # type: ignore[attr-defined]
    scratch = target.with_suffix(".tmp")
    scratch.write_text(json.dumps({"dumps": _dump.serial, "counts": COUNTS}))  # type: ignore[attr-defined]
    scratch.replace(target)


_dump.serial = 0  # type: ignore[attr-defined]


def main() -> None:
    """Patch uvicorn's loop factory, then run the module or script of ``sys.argv[1:]``."""
    from uvicorn.config import Config

    Config.get_loop_factory = _counting_factory(Config.get_loop_factory)  # type: ignore[method-assign]
    signal.signal(signal.SIGUSR1, _dump)
    gc.callbacks.append(_gc_timer)
    args = sys.argv[1:]
    if args[0] == "-m":
        sys.argv = [args[1], *args[2:]]
        runpy.run_module(args[1], run_name="__main__", alter_sys=True)
    else:
        sys.argv = args
        runpy.run_path(args[0], run_name="__main__")


if __name__ == "__main__":
    main()
